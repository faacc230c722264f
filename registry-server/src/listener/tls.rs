//! The server's TLS configuration, reloaded without a restart.
//!
//! Certificates are renewed (ACME, cert-manager) far more often than a registry should restart,
//! so the certificate, key and client-CA files are read again on `SIGHUP` and whenever their
//! contents change (checked every few seconds: a Kubernetes secret is swapped by a symlink, which
//! no single-file watch sees). A new handshake uses the new files; open connections keep theirs.
//! Files that do not load (half-written, mismatched key) leave the running configuration in place
//! and are reported.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Which calls need a client certificate when a client CA is configured.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Commands only: lookups and audit reads stay open to anyone.
    Writes,
    /// Every connection (the handshake fails without a certificate).
    All,
}

/// The files TLS is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates must chain to; `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
    /// Which calls need one.
    pub client_auth: ClientAuth,
}

/// TLS could not be set up from the files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The running TLS configuration.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, [u8; 32])>,
}

impl Tls {
    /// Loads the files; an error here stops the start.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let contents = Contents::read(&files)?;
        let config = build(&files, &contents)?;
        Ok(Arc::new(Self { files, current: RwLock::new((Arc::new(config), contents.digest())) }))
    }

    /// An acceptor with the configuration of this moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        TlsAcceptor::from(current.0.clone())
    }

    /// An acceptor for the web face: the same certificate, key and client authentication,
    /// offering HTTP/1.1 besides HTTP/2 (browsers and simple HTTP clients speak it).
    pub fn web_acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut config = (*current.0).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    /// Reads the files again; `Ok(true)` when their contents changed and were taken.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let contents = Contents::read(&self.files)?;
        let digest = contents.digest();
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == digest {
            return Ok(false);
        }
        let config = build(&self.files, &contents)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(config), digest);
        Ok(true)
    }

    /// Reloads on `SIGHUP` and when the files change (checked every `every`), until `stop`.
    pub fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut hangup = hangup_signal();
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let by_signal = tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => false,
                    _ = next_hangup(&mut hangup) => true,
                };
                match self.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded")
                    }
                    Ok(false) if by_signal => tracing::info!("SIGHUP: the TLS files are unchanged"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "the TLS files did not load; serving with the previous ones")
                    }
                }
            }
        });
    }
}

/// Without TLS there is nothing to reload, but `SIGHUP` (a `systemctl reload`) must not stop the
/// server, as it would by default: it is taken and logged until `stop`.
pub fn ignore_hangups(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut hangup = hangup_signal();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = next_hangup(&mut hangup) => tracing::info!("SIGHUP: no TLS files to reload"),
            }
        }
    });
}

#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

#[cfg(unix)]
async fn next_hangup(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<()>) {
    std::future::pending().await
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File { path: path.to_path_buf(), why: e.to_string() })
}

/// The files' contents, read once: hashed to see whether they changed and built from the same
/// bytes, so a file replaced in between cannot mix into one configuration.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            client_ca: files.client_ca.as_deref().map(read).transpose()?,
        })
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in
            [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()].into_iter().flatten()
        {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::File { path: path.to_path_buf(), why };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    Ok(certs)
}

fn build(files: &TlsFiles, contents: &Contents) -> Result<ServerConfig, TlsError> {
    // ring, as everywhere else in the registry: aws-lc-rs (rustls' post-quantum default) needs a
    // C toolchain and CMake to build, which a fresh machine with only Rust does not have.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&contents.cert, &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| TlsError::File {
        path: files.key.clone(),
        why: format!("no PEM private key: {e}"),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(pem, path)? {
                roots.add(ca).map_err(|e| TlsError::File {
                    path: path.clone(),
                    why: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = match files.client_auth {
                ClientAuth::Writes => verifier.allow_unauthenticated(),
                ClientAuth::All => verifier,
            };
            builder.with_client_cert_verifier(
                verifier.build().map_err(|e| TlsError::Config(e.to_string()))?,
            )
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
    // gRPC is HTTP/2 only; clients (tonic among them) insist on negotiating it.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
