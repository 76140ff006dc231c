//! TLS for the load generator, both ends of it. [`Pki`] is a throwaway certificate set laid out
//! as kubeadm lays out `/etc/kubernetes/pki/etcd`: one CA, a server certificate for the client
//! URLs, a peer certificate for member-to-member traffic and a client certificate for the load
//! generator, every one valid for 127.0.0.1 and localhost; [`Pki::server_args`] are the flags
//! kubeadm gives etcd (client and peer URLs over TLS, client certificates required on both),
//! which Ballast takes too. [`ClientTls`] is the load generator's side: the CA it trusts and
//! the certificate it presents, read from PEM files (a [`Pki`]'s, or etcdctl's
//! `--cacert/--cert/--key`).
//!
//! Invariants: a `Pki`'s files live in its own temporary directory and are removed when it is
//! dropped, so a `Pki` must outlive every server started with its flags; a `ClientTls` holds
//! the PEM bytes themselves (read once, when it is made), so it never depends on the files
//! afterwards. Nothing here checks a certificate: the TLS libraries do.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The names every certificate of a [`Pki`] is valid for.
const SUBJECT_ALT_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA and the server, peer and client certificates it signed, as files in a temporary
/// directory.
#[derive(Debug)]
pub struct Pki {
    pub ca: PathBuf,
    pub server: CertFiles,
    pub peer: CertFiles,
    pub client: CertFiles,
    _dir: tempfile::TempDir,
}

/// What a certificate is for: its extended key usages.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// Serves the client URLs.
    Server,
    /// Serves the peer URLs and dials other members with the same certificate.
    Peer,
    /// The load generator's identity.
    Client,
}

impl Role {
    fn usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Role::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

/// The CA's key and certificate, kept only while the others are signed.
struct Authority {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Authority {
    fn generate(common_name: &str) -> Result<Authority> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("signing the CA")?;
        Ok(Authority { key, cert })
    }

    /// Signs a new key's certificate for `role` and writes both to `<file>.crt` / `<file>.key`
    /// in `dir`.
    fn issue(&self, dir: &Path, file: &str, common_name: &str, role: Role) -> Result<CertFiles> {
        let key = KeyPair::generate().with_context(|| format!("generating the {file} key"))?;
        let mut params = CertificateParams::new(SUBJECT_ALT_NAMES.map(str::to_owned).to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = role.usages();
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .with_context(|| format!("signing the {file} certificate"))?;
        let files = CertFiles {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
        };
        write(&files.cert, cert.pem().as_bytes())?;
        write(&files.key, key.serialize_pem().as_bytes())?;
        Ok(files)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl Pki {
    /// A fresh CA with its server, peer and client certificates, in a new temporary directory.
    pub fn generate() -> Result<Pki> {
        let dir = tempfile::Builder::new()
            .prefix("ballast-bench-pki-")
            .tempdir()
            .context("creating the certificates' directory")?;
        let authority = Authority::generate("ballast-bench etcd-ca")?;
        let ca = dir.path().join("ca.crt");
        write(&ca, authority.cert.pem().as_bytes())?;
        Ok(Pki {
            ca,
            server: authority.issue(dir.path(), "server", "ballast-bench-server", Role::Server)?,
            peer: authority.issue(dir.path(), "peer", "ballast-bench-peer", Role::Peer)?,
            client: authority.issue(dir.path(), "client", "ballast-bench", Role::Client)?,
            _dir: dir,
        })
    }

    /// kubeadm's TLS flags for an etcd member, the same for Ballast: the client URLs serve the
    /// server certificate and require a client certificate signed by the CA; the peer URLs the
    /// same with the peer certificate.
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

    /// The load generator's side: trusts this CA, presents the client certificate.
    pub fn client_tls(&self) -> Result<ClientTls> {
        ClientTls::from_files(&self.ca, Some(&self.client))
    }
}

/// The TLS a client dials with: the CA it trusts and, when the server asks for one, the
/// certificate it presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Reads the CA and, if given, the client certificate and key.
    pub fn from_files(ca: &Path, identity: Option<&CertFiles>) -> Result<ClientTls> {
        let identity = match identity {
            Some(files) => Some((read(&files.cert)?, read(&files.key)?)),
            None => None,
        };
        Ok(ClientTls {
            ca_pem: read(ca)?,
            identity,
        })
    }

    /// From etcdctl's `--cacert`, `--cert` and `--key`: `None` when none is given; `--cert` and
    /// `--key` go together, and either needs `--cacert` (no system roots are loaded).
    pub fn from_flags(
        cacert: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<ClientTls>> {
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(CertFiles {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            }),
            (None, None) => None,
            (Some(_), None) => bail!("--cert needs --key"),
            (None, Some(_)) => bail!("--key needs --cert"),
        };
        match (cacert, identity) {
            (Some(ca), identity) => Ok(Some(ClientTls::from_files(ca, identity.as_ref())?)),
            (None, None) => Ok(None),
            (None, Some(_)) => {
                bail!("--cert/--key need --cacert (the CA that signed the server's certificate)")
            }
        }
    }

    /// True when a client certificate is presented.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// tonic's client configuration. The server name checked is the endpoint URL's host
    /// (127.0.0.1 for the servers `ballast-bench` starts).
    pub fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(String::as_str)
    }

    #[test]
    fn a_pki_writes_pem_files_and_kubeadms_flags_name_them() {
        let pki = Pki::generate().unwrap();
        let ca = std::fs::read_to_string(&pki.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        for files in [&pki.server, &pki.peer, &pki.client] {
            let cert = std::fs::read_to_string(&files.cert).unwrap();
            let key = std::fs::read_to_string(&files.key).unwrap();
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
            assert_ne!(cert, ca, "signed by the CA, not the CA itself");
        }
        let args = pki.server_args();
        let s = |p: &Path| p.display().to_string();
        assert_eq!(
            value_after(&args, "--cert-file"),
            Some(&*s(&pki.server.cert))
        );
        assert_eq!(value_after(&args, "--key-file"), Some(&*s(&pki.server.key)));
        assert_eq!(value_after(&args, "--trusted-ca-file"), Some(&*s(&pki.ca)));
        assert_eq!(
            value_after(&args, "--peer-cert-file"),
            Some(&*s(&pki.peer.cert))
        );
        assert_eq!(
            value_after(&args, "--peer-key-file"),
            Some(&*s(&pki.peer.key))
        );
        assert_eq!(
            value_after(&args, "--peer-trusted-ca-file"),
            Some(&*s(&pki.ca))
        );
        assert!(args.iter().any(|a| a == "--client-cert-auth=true"));
        assert!(args.iter().any(|a| a == "--peer-client-cert-auth=true"));

        let client = pki.client_tls().unwrap();
        assert!(client.has_identity());
        let dir = pki._dir.path().to_path_buf();
        drop(pki);
        assert!(!dir.exists(), "the files go with the Pki");
        let _ = client.config();
    }

    #[test]
    fn etcdctls_flags_go_together() {
        let pki = Pki::generate().unwrap();
        let (ca, cert, key) = (
            Some(pki.ca.as_path()),
            Some(pki.client.cert.as_path()),
            Some(pki.client.key.as_path()),
        );
        assert_eq!(ClientTls::from_flags(None, None, None).unwrap(), None);
        let full = ClientTls::from_flags(ca, cert, key).unwrap().unwrap();
        assert_eq!(full, pki.client_tls().unwrap());
        let ca_only = ClientTls::from_flags(ca, None, None).unwrap().unwrap();
        assert!(
            !ca_only.has_identity(),
            "server TLS without a client certificate"
        );
        assert!(ClientTls::from_flags(ca, cert, None).is_err());
        assert!(ClientTls::from_flags(ca, None, key).is_err());
        assert!(ClientTls::from_flags(None, cert, key).is_err());
        let missing = Path::new("/nonexistent/ca.crt");
        assert!(ClientTls::from_flags(Some(missing), None, None).is_err());
    }
}
