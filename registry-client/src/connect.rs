//! How the client reaches a registry. `http://` is plaintext; `https://` is always TLS, checked
//! against the system's roots or the CA given, never a silent fall back to plaintext. A client
//! certificate (mTLS) is presented when both its files are given; TLS options with an `http://`
//! URL are an error, not ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{ClientError, Result};

/// TLS settings for an `https://` server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates (PEM) the server's certificate must chain to, instead of the system's
    /// roots.
    pub ca_cert: Option<PathBuf>,
    /// A client certificate chain (PEM) to present, for registries that require mTLS.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl TlsOptions {
    fn is_empty(&self) -> bool {
        self == &TlsOptions::default()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ClientError::Input(format!("{what} {}: {e}", path.display())))
}

/// The endpoint for `url`, with TLS when the URL is `https://`.
pub fn endpoint(url: &str, tls: &TlsOptions) -> Result<Endpoint> {
    let bad = |why: String| ClientError::Input(format!("server URL {url:?}: {why}"));
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(10));
    let scheme = endpoint.uri().scheme_str().unwrap_or_default().to_ascii_lowercase();
    match scheme.as_str() {
        "http" if tls.is_empty() => Ok(endpoint),
        "http" => Err(bad(
            "TLS options (--ca-cert, --client-cert, --client-key) need an https:// URL".into(),
        )),
        "https" => {
            let mut config = match &tls.ca_cert {
                Some(ca) => ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            match (&tls.client_cert, &tls.client_key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(
                        read(cert, "client certificate")?,
                        read(key, "client key")?,
                    ));
                }
                (None, None) => {}
                _ => return Err(bad("--client-cert and --client-key go together".into())),
            }
            endpoint.tls_config(config).map_err(|e| bad(format!("TLS: {e}")))
        }
        other => Err(bad(format!("the scheme must be http or https, not {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_with_a_plaintext_url_are_refused_not_ignored() {
        let tls = TlsOptions { ca_cert: Some("ca.pem".into()), ..Default::default() };
        let err = endpoint("http://127.0.0.1:1", &tls).unwrap_err().to_string();
        assert!(err.contains("https://"), "{err}");
        assert!(endpoint("http://127.0.0.1:1", &TlsOptions::default()).is_ok());
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_schemes_are_checked() {
        let tls = TlsOptions { client_cert: Some("c.pem".into()), ..Default::default() };
        let err = endpoint("https://127.0.0.1:1", &tls).unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        let err = endpoint("ftp://127.0.0.1:1", &TlsOptions::default()).unwrap_err().to_string();
        assert!(err.contains("http or https"), "{err}");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let tls = TlsOptions { ca_cert: Some("/no/such/ca.pem".into()), ..Default::default() };
        let err = endpoint("https://127.0.0.1:1", &tls).unwrap_err().to_string();
        assert!(err.contains("/no/such/ca.pem"), "{err}");
    }
}
