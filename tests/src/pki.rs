//! Throwaway certificate authorities for the TLS tests and the abuse benchmark: a CA, server
//! certificates for `localhost` and 127.0.0.1, and client certificates, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate authority that lives as long as a test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub cert: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    /// The certificate (leaf only).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let cert = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert, issuer.pem()).expect("CA file");
        Self { issuer, cert }
    }

    /// A server certificate for `localhost` and 127.0.0.1, written as `dir/<name>.pem` and
    /// `dir/<name>.key`.
    pub fn server(&self, dir: &Path, name: &str) -> Issued {
        self.issue(
            dir,
            name,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate for `who`, written as `dir/<name>.pem` and `dir/<name>.key`.
    pub fn client(&self, dir: &Path, name: &str) -> Issued {
        self.issue(dir, name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        dir: &Path,
        name: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let issued =
            Issued { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&issued.cert, cert.pem()).expect("certificate file");
        std::fs::write(&issued.key, key.serialize_pem()).expect("key file");
        issued
    }
}
