//! A throwaway public key infrastructure for tests of servers that serve TLS, laid out as a
//! kubeadm control plane's `/etc/kubernetes/pki/etcd`: one CA, a server certificate for the
//! client port, a peer certificate for member-to-member traffic, and a client certificate
//! (common name `root`) for etcdctl and the gRPC clients. Every certificate is valid for
//! 127.0.0.1 and localhost. A second, unrelated CA ([`Pki::stranger`]) signs certificates a
//! server must refuse.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files of one CA and the certificates it signed.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server: CertFiles,
    pub peer: CertFiles,
    pub client: CertFiles,
}

struct Authority {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Authority {
    fn new(name: &str) -> Result<Authority> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Authority { key, cert })
    }

    fn issue(&self, dir: &Path, name: &str, common_name: &str) -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem())
            .with_context(|| format!("writing {}", files.cert.display()))?;
        std::fs::write(&files.key, key.serialize_pem())
            .with_context(|| format!("writing {}", files.key.display()))?;
        Ok(files)
    }
}

impl Pki {
    /// A new CA (common name `name`) with its server, peer and client certificates.
    pub fn new(name: &str) -> Result<Pki> {
        let dir = tempfile::Builder::new()
            .prefix("conformance-pki-")
            .tempdir()
            .context("creating the PKI dir")?;
        let ca = Authority::new(name)?;
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca.cert.pem()).context("writing the CA")?;
        Ok(Pki {
            server: ca.issue(dir.path(), "server", "server")?,
            peer: ca.issue(dir.path(), "peer", "peer")?,
            client: ca.issue(dir.path(), "client", "root")?,
            ca: ca_path,
            dir,
        })
    }

    /// Another CA's client certificate (common name `mallory`), for what must be refused.
    pub fn stranger(&self) -> Result<CertFiles> {
        let other = Authority::new("stranger ca")?;
        other.issue(self.dir.path(), "stranger", "mallory")
    }

    /// The flags of a kubeadm member's TLS: client URLs served over TLS with client
    /// certificates required, peers the same.
    pub fn server_args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        vec![
            "--cert-file".into(),
            p(&self.server.cert),
            "--key-file".into(),
            p(&self.server.key),
            "--client-cert-auth=true".into(),
            "--trusted-ca-file".into(),
            p(&self.ca),
            "--peer-cert-file".into(),
            p(&self.peer.cert),
            "--peer-key-file".into(),
            p(&self.peer.key),
            "--peer-client-cert-auth=true".into(),
            "--peer-trusted-ca-file".into(),
            p(&self.ca),
        ]
    }

    /// etcdctl's flags for the client certificate `cert` (the CA to trust, then the identity).
    pub fn etcdctl_args(&self, cert: &CertFiles) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.ca.display().to_string(),
            "--cert".into(),
            cert.cert.display().to_string(),
            "--key".into(),
            cert.key.display().to_string(),
        ]
    }
}
