//! TLS for the client listeners, the peer listeners and the connections a member dials to its
//! peers: etcd's security flags (`--cert-file`, `--key-file`, `--client-cert-auth`,
//! `--trusted-ca-file`, `--client-crl-file`, `--auto-tls`, their `--peer-*` twins,
//! `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname`, `--cipher-suites`,
//! `--tls-min-version`, `--tls-max-version`, `--self-signed-cert-validity`) turned into rustls
//! configurations on the ring provider.
//!
//! Rules, as etcd applies them:
//! - A listener serves TLS exactly when its URL is `https://`. An `https://` URL without a
//!   certificate (or `--auto-tls`) stops start-up; certificates given for `http://` URLs only
//!   are ignored with a warning.
//! - `--client-cert-auth` (`--peer-client-cert-auth`) requires every connection to present a
//!   certificate that the trusted CA signed (and that the CRL, if given, does not revoke);
//!   without it no certificate is asked for.
//! - A member dials `https://` peer URLs with its peer certificate as the client certificate and
//!   verifies the peer's against `--peer-trusted-ca-file`; with `--peer-auto-tls` (self-signed
//!   certificates, nothing to verify them against) it encrypts without verifying, as etcd does.
//! - `--auto-tls` certificates are made once and kept under `<data-dir>/fixtures/client` (and
//!   `.../peer`), valid for the listen URLs' hosts for `--self-signed-cert-validity` years.
//! - A certificate and key are re-read when their files change, at the next handshake
//!   ([`ReloadingCert`]), so a renewed certificate (`kubeadm certs renew`) takes effect without a
//!   restart, as with etcd; a file caught half-written keeps the previous pair. The trusted CA
//!   is read once, at start-up (as etcd does).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use ballast_tuning::config::{Config, TlsConfig};

use crate::flags::Flags;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections accepted and still in their handshake, per listener, at most; more wait in the
/// kernel's backlog.
const HANDSHAKES_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// etcd's message for an `https://` client URL without a certificate.
    #[error(
        "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
    )]
    NoClientCert { url: String },
    /// etcd's message for an `https://` peer or metrics URL without a certificate.
    #[error("cannot listen on TLS for {addr}: KeyFile and CertFile are not presented")]
    NoListenerCert { addr: String },
    #[error("{flag} is set but {needs} is not: {why}")]
    Incomplete {
        flag: &'static str,
        needs: &'static str,
        why: &'static str,
    },
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: no {what} in the file")]
    Empty { what: &'static str, path: PathBuf },
    #[error("{what}: {source}")]
    Rustls { what: String, source: rustls::Error },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("unexpected TLS cipher suite {0:?}")]
    CipherSuite(String),
    #[error("none of the cipher suites {0:?} is supported (Ballast's TLS offers AEAD suites with ECDHE only)")]
    NoCipherSuite(String),
    #[error("unexpected TLS version {0:?} (must be one of: TLS1.0, TLS1.1, TLS1.2, TLS1.3)")]
    Version(String),
    #[error("--tls-max-version {0} is below TLS1.2, the oldest version Ballast serves")]
    MaxVersionTooOld(String),
    #[error("--tls-min-version {min} is above --tls-max-version {max}")]
    VersionRange { min: String, max: String },
    #[error("making a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The certificate files of one side (client or peer), as the flags name them.
#[derive(Clone, Debug, Default)]
pub struct Files {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    pub client_cert_auth: bool,
    pub auto: bool,
}

impl Files {
    /// The `*-transport-security` block the configuration resolved (flags, `ETCD_*` variables
    /// and the config file), with the CRL from the flags.
    fn from_block(block: &TlsConfig, crl: Option<&PathBuf>) -> Files {
        Files {
            cert: block.cert_file.as_ref().map(PathBuf::from),
            key: block.key_file.as_ref().map(PathBuf::from),
            trusted_ca: block.trusted_ca_file.as_ref().map(PathBuf::from),
            crl: crl.cloned(),
            client_cert_auth: block.client_cert_auth,
            auto: block.auto_tls,
        }
    }

    pub fn client(config: &Config, flags: &Flags) -> Files {
        Files::from_block(
            &config.client_transport_security,
            flags.client_crl_file.as_ref(),
        )
    }

    pub fn peer(config: &Config, flags: &Flags) -> Files {
        Files::from_block(
            &config.peer_transport_security,
            flags.peer_crl_file.as_ref(),
        )
    }

    fn has_cert(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// What both sides share: the provider (cipher suites) and protocol versions.
#[derive(Clone, Debug)]
pub struct Protocol {
    provider: Arc<CryptoProvider>,
    versions: Vec<&'static SupportedProtocolVersion>,
}

impl Protocol {
    /// From the resolved `cipher-suites` (flag, variable or config file) and the version flags.
    pub fn from_config(config: &Config, flags: &Flags) -> Result<Protocol, TlsError> {
        let suites = config.cipher_suites.join(",");
        Protocol::new(
            Some(suites.as_str()),
            flags.tls_min_version.as_deref(),
            flags.tls_max_version.as_deref(),
        )
    }

    /// `cipher_suites`: Go's names, comma-separated; they choose among TLS 1.2's suites (Go
    /// does not let TLS 1.3's be chosen, and neither does etcd). Names Go knows but rustls does
    /// not offer (CBC and RSA key exchange) are skipped with a warning.
    pub fn new(
        cipher_suites: Option<&str>,
        min_version: Option<&str>,
        max_version: Option<&str>,
    ) -> Result<Protocol, TlsError> {
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(list) = cipher_suites.filter(|l| !l.trim().is_empty()) {
            let mut wanted = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match suite_by_go_name(&provider, name) {
                    Some(suite) => wanted.push(suite),
                    None if GO_ONLY_SUITES.contains(&name) => {
                        tracing::warn!(
                            suite = name,
                            "cipher suite not offered by Ballast's TLS; skipped"
                        );
                    }
                    None => return Err(TlsError::CipherSuite(name.to_owned())),
                }
            }
            if wanted.is_empty() {
                return Err(TlsError::NoCipherSuite(list.to_owned()));
            }
            provider
                .cipher_suites
                .retain(|s| s.version() == &rustls::version::TLS13 || wanted.contains(&s.suite()));
        }
        let min = parse_version(min_version)?.unwrap_or(12);
        let max = parse_version(max_version)?.unwrap_or(13);
        if max < 12 {
            return Err(TlsError::MaxVersionTooOld(
                max_version.unwrap_or_default().to_owned(),
            ));
        }
        if min > max {
            return Err(TlsError::VersionRange {
                min: min_version.unwrap_or_default().to_owned(),
                max: max_version.unwrap_or_default().to_owned(),
            });
        }
        if min < 12 {
            tracing::warn!(
                min = min_version.unwrap_or_default(),
                "TLS versions below 1.2 are not served; the minimum is TLS1.2"
            );
        }
        let mut versions = Vec::new();
        if min <= 12 && max >= 12 {
            versions.push(&rustls::version::TLS12);
        }
        if max >= 13 {
            versions.push(&rustls::version::TLS13);
        }
        Ok(Protocol {
            provider: Arc::new(provider),
            versions,
        })
    }

    /// The protocol versions offered, as etcd names them.
    pub fn version_names(&self) -> Vec<&'static str> {
        self.versions
            .iter()
            .map(|v| {
                if v.version == rustls::ProtocolVersion::TLSv1_3 {
                    "TLS1.3"
                } else {
                    "TLS1.2"
                }
            })
            .collect()
    }

    /// A server configuration with `files`' certificate, asking for client certificates when
    /// `files.client_cert_auth`.
    fn server(&self, files: &Files, what: &str) -> Result<rustls::ServerConfig, TlsError> {
        let identity = Arc::new(ReloadingCert::new(files, &self.provider)?);
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|source| TlsError::Rustls {
                what: format!("{what}: protocol versions"),
                source,
            })?;
        let builder = if files.client_cert_auth {
            let Some(ca) = &files.trusted_ca else {
                return Err(TlsError::Incomplete {
                    flag: if what == "peer" {
                        "--peer-client-cert-auth"
                    } else {
                        "--client-cert-auth"
                    },
                    needs: if what == "peer" {
                        "--peer-trusted-ca-file"
                    } else {
                        "--trusted-ca-file"
                    },
                    why: "client certificates are verified against that CA",
                });
            };
            let roots = load_roots(ca)?;
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                self.provider.clone(),
            );
            if let Some(crl) = &files.crl {
                verifier = verifier.with_crls(load_crls(crl)?);
            }
            builder.with_client_cert_verifier(verifier.build()?)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(identity);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl Files {
    fn cert_path(&self) -> &Path {
        self.cert.as_deref().unwrap_or(Path::new(""))
    }

    /// The certificate and key files, which come as a pair.
    fn identity(&self) -> Result<(&Path, &Path), TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok((cert, key)),
            _ => Err(TlsError::Incomplete {
                flag: "a certificate",
                needs: "its key",
                why: "both --cert-file and --key-file (or the --peer-* pair) are needed",
            }),
        }
    }
}

/// Go's names of TLS 1.2 suites rustls does not offer: accepted, skipped.
const GO_ONLY_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The TLS 1.2 suite Go calls `name` (its older ChaCha20 names lack the `_SHA256`).
fn suite_by_go_name(provider: &CryptoProvider, name: &str) -> Option<rustls::CipherSuite> {
    let canonical = match name {
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        other => other,
    };
    provider
        .cipher_suites
        .iter()
        .map(|s| s.suite())
        .find(|s| format!("{s:?}") == canonical)
}

/// `TLS1.x` as its minor version number plus 10 (`TLS1.2` -> 12).
fn parse_version(v: Option<&str>) -> Result<Option<u8>, TlsError> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some("TLS1.0") => Ok(Some(10)),
        Some("TLS1.1") => Ok(Some(11)),
        Some("TLS1.2") => Ok(Some(12)),
        Some("TLS1.3") => Ok(Some(13)),
        Some(other) => Err(TlsError::Version(other.to_owned())),
    }
}

fn load_identity(
    files: &Files,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert, key) = files.identity()?;
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            what: "certificate",
            path: cert.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "certificate",
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Read {
        what: "private key",
        path: key.to_owned(),
        source,
    })?;
    Ok((certs, key))
}

/// What identifies a file's content cheaply: its modification time and length.
type Stamp = Option<(std::time::SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A side's certificate and key, re-read at a handshake when either file changed since the
/// last read. The first read must succeed (start-up fails otherwise); a later one that fails
/// (a file being rewritten, a key not matching its certificate) keeps the previous pair and
/// logs why.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: std::sync::Mutex<((Stamp, Stamp), Arc<rustls::sign::CertifiedKey>)>,
}

impl ReloadingCert {
    fn new(files: &Files, provider: &Arc<CryptoProvider>) -> Result<ReloadingCert, TlsError> {
        let (cert, key) = files.identity()?;
        let stamps = (stamp(cert), stamp(key));
        let loaded = load_certified(files, provider)?;
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider: provider.clone(),
            current: std::sync::Mutex::new((stamps, loaded)),
        })
    }

    /// The pair to present now.
    pub fn get(&self) -> Arc<rustls::sign::CertifiedKey> {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != stamps {
            let files = Files {
                cert: Some(self.cert.clone()),
                key: Some(self.key.clone()),
                ..Files::default()
            };
            match load_certified(&files, &self.provider) {
                Ok(loaded) => {
                    tracing::info!(cert = %self.cert.display(), "reloaded a changed certificate");
                    *current = (stamps, loaded);
                }
                Err(err) => {
                    // Retried at the next handshake only if the files change again.
                    current.0 = stamps;
                    tracing::warn!(
                        cert = %self.cert.display(),
                        %err,
                        "a changed certificate could not be read; keeping the previous one"
                    );
                }
            }
        }
        current.1.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `files`' certificate chain and key, checked to belong together.
fn load_certified(
    files: &Files,
    provider: &CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let (certs, key) = load_identity(files)?;
    rustls::sign::CertifiedKey::from_der(certs, key, provider)
        .map(Arc::new)
        .map_err(|source| TlsError::Rustls {
            what: format!("certificate {}", files.cert_path().display()),
            source,
        })
}

fn load_roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            what: "trusted CA",
            path: ca.to_owned(),
            source,
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: format!("trusted CA {}", ca.display()),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty {
            what: "CA certificate",
            path: ca.to_owned(),
        });
    }
    Ok(roots)
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            what: "certificate revocation list",
            path: path.to_owned(),
            source,
        })
}

/// Makes (or finds, from an earlier start) a self-signed certificate in `dir` for `hosts`, and
/// points `files` at it, as `--auto-tls` does.
fn auto_certificate(
    files: &mut Files,
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
) -> Result<(), TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !(cert.is_file() && key.is_file()) {
        let key_pair = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "ballast");
        params.not_before = std::time::SystemTime::now().into();
        params.not_after = params.not_before
            + Duration::from_secs(u64::from(validity_years.max(1)) * 365 * 24 * 3600);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let made = params.self_signed(&key_pair)?;
        let write = |path: &Path, text: String| {
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(path, text))
                .map_err(|source| TlsError::Write {
                    path: path.to_owned(),
                    source,
                })
        };
        write(&key, key_pair.serialize_pem())?;
        write(&cert, made.pem())?;
        tracing::info!(dir = %dir.display(), hosts = ?hosts, "made a self-signed certificate (--auto-tls)");
    }
    files.cert = Some(cert);
    files.key = Some(key);
    Ok(())
}

/// The hosts of `urls` (`scheme://host:port`), for a self-signed certificate's names.
fn url_hosts(urls: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = urls
        .iter()
        .filter_map(|u| u.split_once("://").map(|(_, rest)| rest))
        .map(|rest| {
            let hostport = rest.trim_end_matches('/');
            let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The `host:port` of a listen URL, as etcd's listener errors name it.
fn url_addr(url: &str) -> &str {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/')
}

fn is_https(url: &str) -> bool {
    url.trim().starts_with("https://")
}

/// TLS for the client listeners.
#[derive(Clone)]
pub struct ClientTls {
    pub acceptor: TlsAcceptor,
    /// A client's certificate must be valid for this host name
    /// (`--client-cert-allowed-hostname`).
    pub allowed_hostname: Option<String>,
}

/// TLS for the client listeners and the `https://` metrics URLs, which use the client
/// certificate as etcd's do: `None` when none of those URLs is `https://`.
pub fn client_tls(
    config: &Config,
    flags: &Flags,
    protocol: &Protocol,
    data_dir: &Path,
) -> Result<Option<ClientTls>, TlsError> {
    let listen_urls = &config.listen_client_urls;
    let metrics_urls = &config.listen_metrics_urls;
    let mut files = Files::client(config, flags);
    let https_client = listen_urls.iter().find(|u| is_https(u));
    let https_metrics = metrics_urls.iter().find(|u| is_https(u));
    if https_client.is_none() && https_metrics.is_none() {
        if files.has_cert() {
            tracing::warn!(
                "the client URLs are all http://, while a client key and certificate are given: \
                 the key and certificate are ignored"
            );
        }
        return Ok(None);
    }
    if !files.has_cert() {
        if !files.auto {
            // etcd checks the client URLs first, each with its own message.
            return Err(match (https_client, https_metrics) {
                (Some(url), _) => TlsError::NoClientCert { url: url.clone() },
                (None, Some(url)) => TlsError::NoListenerCert {
                    addr: url_addr(url).to_owned(),
                },
                (None, None) => unreachable!("returned above"),
            });
        }
        let validity = flags.self_signed_cert_validity;
        let mut hosts = url_hosts(listen_urls);
        hosts.extend(url_hosts(metrics_urls));
        hosts.sort();
        hosts.dedup();
        auto_certificate(
            &mut files,
            &data_dir.join("fixtures").join("client"),
            &hosts,
            validity,
        )?;
    }
    let config = protocol.server(&files, "client")?;
    tracing::info!(
        cert = %files.cert_path().display(),
        trusted_ca = %files.trusted_ca.as_deref().unwrap_or(Path::new("")).display(),
        client_cert_auth = files.client_cert_auth,
        crl = %files.crl.as_deref().unwrap_or(Path::new("")).display(),
        versions = ?protocol.version_names(),
        "client TLS"
    );
    Ok(Some(ClientTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        allowed_hostname: flags
            .client_cert_allowed_hostname
            .clone()
            .filter(|h| !h.is_empty()),
    }))
}

/// TLS between members: how this member accepts peer connections and how it dials `https://`
/// peers.
#[derive(Clone, Default)]
pub struct PeerTls {
    /// For `https://` peer listeners (`None`: every peer listener is `http://`).
    pub acceptor: Option<TlsAcceptor>,
    /// For dialing `https://` peer URLs (`None`: no peer certificate; such URLs are refused).
    pub connector: Option<TlsConnector>,
    /// A connecting peer's certificate must carry this common name (`--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// ... or be valid for this host name (`--peer-cert-allowed-hostname`).
    pub allowed_hostname: Option<String>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("accepts", &self.acceptor.is_some())
            .field("dials", &self.connector.is_some())
            .field("allowed_cn", &self.allowed_cn)
            .field("allowed_hostname", &self.allowed_hostname)
            .finish()
    }
}

impl PeerTls {
    pub fn from_config(
        config: &Config,
        flags: &Flags,
        protocol: &Protocol,
        data_dir: &Path,
    ) -> Result<PeerTls, TlsError> {
        let listen_urls = &config.listen_peer_urls;
        let advertise_urls = &config.initial_advertise_peer_urls;
        let mut files = Files::peer(config, flags);
        let https_listen = listen_urls.iter().find(|u| is_https(u));
        if !files.has_cert() && files.auto {
            let mut urls = listen_urls.to_vec();
            urls.extend_from_slice(advertise_urls);
            auto_certificate(
                &mut files,
                &data_dir.join("fixtures").join("peer"),
                &url_hosts(&urls),
                flags.self_signed_cert_validity,
            )?;
        }
        if !files.has_cert() {
            if let Some(url) = https_listen {
                return Err(TlsError::NoListenerCert {
                    addr: url_addr(url).to_owned(),
                });
            }
            return Ok(PeerTls::default());
        }
        if https_listen.is_none() && !advertise_urls.iter().any(|u| is_https(u)) {
            tracing::warn!(
                "the peer URLs are all http://, while a peer key and certificate are given: the \
                 key and certificate are used only to dial https:// peers"
            );
        }
        let acceptor = match https_listen {
            Some(_) => Some(TlsAcceptor::from(Arc::new(
                protocol.server(&files, "peer")?,
            ))),
            None => None,
        };
        let identity = Arc::new(ReloadingCert::new(&files, &protocol.provider)?);
        let builder = rustls::ClientConfig::builder_with_provider(protocol.provider.clone())
            .with_protocol_versions(&protocol.versions)
            .map_err(|source| TlsError::Rustls {
                what: "peer client: protocol versions".to_owned(),
                source,
            })?;
        let builder = match (&files.trusted_ca, files.auto) {
            (Some(ca), _) => builder.with_root_certificates(load_roots(ca)?),
            (None, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(protocol.provider.clone()))),
            (None, false) => {
                return Err(TlsError::Incomplete {
                    flag: "--peer-cert-file",
                    needs: "--peer-trusted-ca-file",
                    why: "https:// peers' certificates are verified against that CA (or use \
                          --peer-auto-tls)",
                })
            }
        };
        let config = builder.with_client_cert_resolver(identity);
        tracing::info!(
            cert = %files.cert_path().display(),
            trusted_ca = %files.trusted_ca.as_deref().unwrap_or(Path::new("")).display(),
            client_cert_auth = files.client_cert_auth,
            auto = files.auto,
            allowed_cn = flags.peer_cert_allowed_cn.as_deref().unwrap_or(""),
            "peer TLS"
        );
        Ok(PeerTls {
            acceptor,
            connector: Some(TlsConnector::from(Arc::new(config))),
            allowed_cn: flags.peer_cert_allowed_cn.clone().filter(|c| !c.is_empty()),
            allowed_hostname: flags
                .peer_cert_allowed_hostname
                .clone()
                .filter(|h| !h.is_empty()),
        })
    }

    /// Checks a connecting peer's certificate against `--peer-cert-allowed-cn` and
    /// `--peer-cert-allowed-hostname` (either passing is enough when both are set).
    pub fn check_peer(&self, certs: Option<&[CertificateDer<'_>]>) -> Result<(), String> {
        if self.allowed_cn.is_none() && self.allowed_hostname.is_none() {
            return Ok(());
        }
        let leaf = certs
            .and_then(|c| c.first())
            .ok_or_else(|| "the peer presented no certificate".to_owned())?;
        let names = CertNames::parse(leaf)?;
        if let Some(cn) = &self.allowed_cn {
            if names.common_names.iter().any(|n| n == cn) {
                return Ok(());
            }
        }
        if let Some(host) = &self.allowed_hostname {
            if names.valid_for(host) {
                return Ok(());
            }
        }
        Err(match (&self.allowed_cn, &self.allowed_hostname) {
            (Some(cn), None) => format!(
                "CommonName authentication failed: the certificate's CN is {:?}, allowed {cn:?}",
                names.common_names
            ),
            (None, Some(host)) => {
                format!("the certificate is not valid for the allowed hostname {host:?}")
            }
            _ => {
                "the certificate matches neither the allowed CN nor the allowed hostname".to_owned()
            }
        })
    }
}

/// The names a certificate carries.
#[derive(Debug, Default)]
pub struct CertNames {
    pub common_names: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
}

impl CertNames {
    pub fn parse(cert: &CertificateDer<'_>) -> Result<CertNames, String> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("an unreadable certificate: {e}"))?;
        let mut names = CertNames {
            common_names: parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
                .collect(),
            ..CertNames::default()
        };
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        names.dns.push(d.to_ascii_lowercase())
                    }
                    x509_parser::extensions::GeneralName::IPAddress(raw) => match raw.len() {
                        4 => names.ips.push(
                            <[u8; 4]>::try_from(*raw)
                                .map(Into::into)
                                .map_err(|_| "a bad IP address in the certificate".to_owned())?,
                        ),
                        16 => names.ips.push(
                            <[u8; 16]>::try_from(*raw)
                                .map(Into::into)
                                .map_err(|_| "a bad IP address in the certificate".to_owned())?,
                        ),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(names)
    }

    /// Whether the certificate names `host` (an IP address, or a DNS name, `*.` matching one
    /// label).
    pub fn valid_for(&self, host: &str) -> bool {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return self.ips.contains(&ip);
        }
        let host = host.to_ascii_lowercase();
        self.dns.iter().any(|name| match name.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *name == host,
        })
    }
}

/// Accepts any server certificate (still checking the handshake's signatures): for
/// `--peer-auto-tls`, whose self-signed certificates nothing can vouch for.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server name to verify when dialing `host` (an IP address or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("peer host {host:?}: {e}"))
}

/// Accepts TCP connections on `listener` and completes their TLS handshakes concurrently
/// (each bounded by [`HANDSHAKE_TIMEOUT`]); yields the connections whose handshake succeeded.
/// A failed handshake (or a client certificate not valid for `--client-cert-allowed-hostname`)
/// is logged, as etcd logs a rejected connection, and dropped. Accepting stops when the
/// returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: ClientTls,
) -> tokio_stream::wrappers::ReceiverStream<
    std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKES_MAX);
    tokio::spawn(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (stream, from) = match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "accepting a client connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let tls = tls.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        if let Some(host) = &tls.allowed_hostname {
                            let names = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(CertNames::parse);
                            if !matches!(&names, Some(Ok(n)) if n.valid_for(host)) {
                                tracing::info!(
                                    %from,
                                    allowed_hostname = %host,
                                    "rejected connection (client certificate not valid for the allowed hostname)"
                                );
                                return;
                            }
                        }
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::info!(%from, %err, "rejected connection (TLS handshake)")
                    }
                    Err(_) => tracing::info!(
                        %from,
                        after = ?HANDSHAKE_TIMEOUT,
                        "rejected connection (TLS handshake did not finish)"
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
pub(crate) mod tests;
