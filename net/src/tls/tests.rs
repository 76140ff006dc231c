//! TLS settings from etcd's flags (their refusals and etcd's messages), self-signed
//! certificates, certificate names, and real handshakes on 127.0.0.1: a client with the right
//! certificate gets through, one without a certificate or with another CA's does not.

use std::io::Write as _;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt as _;

use super::*;

/// A CA and certificates it signs, written as PEM files into a temp dir.
pub(crate) struct Pki {
    pub dir: tempfile::TempDir,
    ca_key: KeyPair,
    ca: rcgen::Certificate,
}

/// The PEM files of one certificate.
#[derive(Clone, Debug)]
pub(crate) struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca_key, ca }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `hosts` with common name `cn`, good for servers and clients.
    pub fn issue(&self, cn: &str, hosts: &[&str]) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{cn}.pem")),
            key: self.dir.path().join(format!("{cn}-key.pem")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// The command line `args` make, as the server parses it.
fn parse(args: &[&str]) -> Result<crate::flags::CommandLine, String> {
    let mut all = vec!["ballast".to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    crate::flags::parse(all).map_err(|e| e.to_string())
}

/// Client TLS as the server would set it up from `args`.
fn client_tls_of(args: &[&str], data_dir: &Path) -> Result<Option<ClientTls>, TlsError> {
    let cl = parse(args).unwrap();
    let protocol = Protocol::from_config(&cl.config, &cl.flags)?;
    client_tls(&cl.config, &cl.flags, &protocol, data_dir)
}

#[test]
fn protocol_versions_and_cipher_suites_follow_the_flags() {
    let all = Protocol::new(None, None, None).unwrap();
    assert_eq!(all.version_names(), ["TLS1.2", "TLS1.3"]);
    let only13 = Protocol::new(None, Some("TLS1.3"), None).unwrap();
    assert_eq!(only13.version_names(), ["TLS1.3"]);
    let only12 = Protocol::new(None, Some("TLS1.0"), Some("TLS1.2")).unwrap();
    assert_eq!(only12.version_names(), ["TLS1.2"]);

    let err = Protocol::new(None, Some("SSL3"), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected TLS version \"SSL3\" (must be one of: TLS1.0, TLS1.1, TLS1.2, TLS1.3)"
    );
    assert!(matches!(
        Protocol::new(None, None, Some("TLS1.1")),
        Err(TlsError::MaxVersionTooOld(_))
    ));
    assert!(matches!(
        Protocol::new(None, Some("TLS1.3"), Some("TLS1.2")),
        Err(TlsError::VersionRange { .. })
    ));

    let err = Protocol::new(Some("TLS_NOT_A_SUITE"), None, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected TLS cipher suite \"TLS_NOT_A_SUITE\""
    );
    assert!(matches!(
        Protocol::new(Some("TLS_RSA_WITH_AES_128_CBC_SHA"), None, None),
        Err(TlsError::NoCipherSuite(_))
    ));
    // One TLS 1.2 suite chosen (a CBC one beside it skipped, Go's old ChaCha name accepted):
    // TLS 1.3's suites stay.
    let chosen = Protocol::new(
        Some(
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_128_CBC_SHA,\
             TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        ),
        None,
        None,
    )
    .unwrap();
    let mut tls12: Vec<String> = chosen
        .provider
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    tls12.sort();
    assert_eq!(
        tls12,
        [
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ]
    );
    let tls13 = chosen
        .provider
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .count();
    assert_eq!(
        tls13,
        rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .count()
    );
}

#[test]
fn https_urls_need_a_certificate_and_http_urls_ignore_one() {
    let data = tempfile::tempdir().unwrap();
    // etcd's messages, whether the configuration or the TLS set-up finds it first.
    let err = parse(&[
        "--listen-client-urls",
        "http://127.0.0.1:2379,https://127.0.0.1:2479",
    ])
    .err()
    .unwrap();
    assert!(
        err.contains(
            "TLS key/cert (--cert-file, --key-file) must be provided for client url \
             https://127.0.0.1:2479 with HTTPS scheme"
        ),
        "{err}"
    );
    let mut config = parse(&[]).unwrap();
    config.config.listen_client_urls = vec!["https://127.0.0.1:2479".to_owned()];
    config.config.listen_peer_urls = vec!["https://127.0.0.1:2380/".to_owned()];
    let protocol = Protocol::new(None, None, None).unwrap();
    let err = client_tls(&config.config, &config.flags, &protocol, data.path())
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "TLS key/cert (--cert-file, --key-file) must be provided for client url \
         https://127.0.0.1:2479 with HTTPS scheme"
    );
    let err =
        PeerTls::from_config(&config.config, &config.flags, &protocol, data.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
    );
    let err = parse(&HTTPS_PEER).err().unwrap();
    assert!(
        err.contains(
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
        ),
        "{err}"
    );

    let pki = Pki::new("ca");
    let server = pki.issue("server", &["127.0.0.1"]);
    let (cert, key) = (server.cert.to_str().unwrap(), server.key.to_str().unwrap());
    let plain = client_tls_of(&["--cert-file", cert, "--key-file", key], data.path()).unwrap();
    assert!(plain.is_none());
    // Client certificates are verified against a CA, so asking for them needs one.
    let https = ["--listen-client-urls", "https://127.0.0.1:2379"];
    let err = client_tls_of(
        &[
            &https[..],
            &["--cert-file", cert, "--key-file", key, "--client-cert-auth"],
        ]
        .concat(),
        data.path(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("--trusted-ca-file"), "{err}");
    // A key file holding no key is named.
    let mut empty = tempfile::NamedTempFile::new().unwrap();
    writeln!(empty, "not a key").unwrap();
    let bad_key = empty.path().to_str().unwrap();
    let err = client_tls_of(
        &[&https[..], &["--cert-file", cert, "--key-file", bad_key]].concat(),
        data.path(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains(bad_key), "{err}");
}

#[test]
fn auto_tls_makes_a_certificate_once_for_the_listen_hosts() {
    let data = tempfile::tempdir().unwrap();
    let args = [
        "--auto-tls",
        "--listen-client-urls",
        "https://127.0.0.1:2379,https://localhost:22379",
    ];
    let made = client_tls_of(&args, data.path()).unwrap();
    assert!(made.is_some());
    let cert_path = data.path().join("fixtures/client/cert.pem");
    let first = std::fs::read(&cert_path).unwrap();
    let der = CertificateDer::from_pem_file(&cert_path).unwrap();
    let names = CertNames::parse(&der).unwrap();
    assert!(names.valid_for("127.0.0.1"), "{names:?}");
    assert!(names.valid_for("localhost"), "{names:?}");
    assert!(!names.valid_for("10.0.0.1"), "{names:?}");
    // A restart keeps the certificate clients may have pinned.
    client_tls_of(&args, data.path()).unwrap();
    assert_eq!(std::fs::read(&cert_path).unwrap(), first);
}

/// An `https://` metrics URL is served with the client certificate, as etcd's is, even when
/// every client URL is `http://`; without a certificate it is refused with etcd's message.
#[test]
fn https_metrics_urls_use_the_client_certificate() {
    let data = tempfile::tempdir().unwrap();
    let metrics = ["--listen-metrics-urls", "https://localhost:2381"];
    let refusal = "cannot listen on TLS for localhost:2381: KeyFile and CertFile are not presented";
    let err = parse(&metrics).err().unwrap();
    assert!(err.contains(refusal), "{err}");
    // The same refusal from the TLS setup itself (a config that skipped the parse check).
    let mut cl = parse(&[]).unwrap();
    cl.config.listen_metrics_urls = vec!["https://localhost:2381/".to_owned()];
    let protocol = Protocol::new(None, None, None).unwrap();
    let err = client_tls(&cl.config, &cl.flags, &protocol, data.path())
        .err()
        .unwrap();
    assert_eq!(err.to_string(), refusal);

    let pki = Pki::new("ca");
    let server = pki.issue("server", &["localhost"]);
    let (cert, key) = (server.cert.to_str().unwrap(), server.key.to_str().unwrap());
    let given = [&metrics[..], &["--cert-file", cert, "--key-file", key]].concat();
    assert!(client_tls_of(&given, data.path()).unwrap().is_some());

    // --auto-tls: the self-signed certificate names the metrics host too.
    let auto = [&metrics[..], &["--auto-tls"]].concat();
    assert!(client_tls_of(&auto, data.path()).unwrap().is_some());
    let der = CertificateDer::from_pem_file(data.path().join("fixtures/client/cert.pem")).unwrap();
    let names = CertNames::parse(&der).unwrap();
    assert!(names.valid_for("localhost"), "{names:?}");
    assert!(
        names.valid_for("127.0.0.1"),
        "the client URL's host: {names:?}"
    );
}

#[test]
fn certificate_names_match_hosts_and_common_names() {
    let pki = Pki::new("ca");
    let issued = pki.issue("member-1", &["node1.example", "*.pods.example", "10.0.0.7"]);
    let der = CertificateDer::from_pem_file(&issued.cert).unwrap();
    let names = CertNames::parse(&der).unwrap();
    assert_eq!(names.common_names, ["member-1"]);
    assert!(names.valid_for("NODE1.example"));
    assert!(names.valid_for("a.pods.example"));
    assert!(!names.valid_for("a.b.pods.example"));
    assert!(!names.valid_for("pods.example"));
    assert!(names.valid_for("10.0.0.7"));
    assert!(!names.valid_for("10.0.0.8"));

    let mut tls = PeerTls {
        allowed_cn: Some("member-1".to_owned()),
        ..PeerTls::default()
    };
    assert_eq!(tls.check_peer(Some(std::slice::from_ref(&der))), Ok(()));
    assert!(tls.check_peer(None).is_err());
    tls.allowed_cn = Some("member-2".to_owned());
    let err = tls
        .check_peer(Some(std::slice::from_ref(&der)))
        .unwrap_err();
    assert!(err.contains("CommonName authentication failed"), "{err}");
    tls.allowed_hostname = Some("node1.example".to_owned());
    assert_eq!(tls.check_peer(Some(std::slice::from_ref(&der))), Ok(()));
}

/// A rustls client for 127.0.0.1 trusting `ca`, presenting `identity` if given.
fn connector(ca: &Path, identity: Option<&Issued>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(load_roots(ca).unwrap());
    let config = match identity {
        Some(id) => {
            let files = Files {
                cert: Some(id.cert.clone()),
                key: Some(id.key.clone()),
                ..Files::default()
            };
            let (certs, key) = load_identity(&files).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// A listener on 127.0.0.1 accepting through `tls` that echoes one byte per connection.
async fn echo_server(tls: ClientTls) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut accepted = incoming(listener, tls);
    let echo = tokio::spawn(async move {
        while let Some(Ok(mut stream)) = accepted.next().await {
            let mut byte = [0u8; 1];
            if stream.read_exact(&mut byte).await.is_ok() {
                let _ = stream.write_all(&byte).await;
                let _ = stream.flush().await;
            }
        }
    });
    (addr, echo)
}

/// The flags of a single member whose peer URL is `https://127.0.0.1:2380`.
pub(crate) const HTTPS_PEER: [&str; 6] = [
    "--listen-peer-urls",
    "https://127.0.0.1:2380",
    "--initial-advertise-peer-urls",
    "https://127.0.0.1:2380",
    "--initial-cluster",
    "default=https://127.0.0.1:2380",
];

/// Connects to `addr` and tries one round trip over TLS: the server side echoes a byte.
async fn round_trip(addr: std::net::SocketAddr, connector: &TlsConnector) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(server_name("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    // TLS 1.3 finishes the client's handshake before the server has checked its certificate:
    // a refusal shows on the first read.
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut byte))
        .await
        .map_err(|_| "no echo".to_owned())?
        .map_err(|e| e.to_string())?;
    (byte == *b"x")
        .then_some(())
        .ok_or_else(|| "a wrong echo".to_owned())
}

#[tokio::test]
async fn client_cert_auth_lets_in_only_certificates_the_ca_signed() {
    let pki = Pki::new("cluster ca");
    let server = pki.issue("server", &["127.0.0.1", "localhost"]);
    let client = pki.issue("root", &["127.0.0.1"]);
    let stranger_ca = Pki::new("another ca");
    let stranger = stranger_ca.issue("mallory", &["127.0.0.1"]);
    let data = tempfile::tempdir().unwrap();
    let tls = client_tls_of(
        &[
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--cert-file",
            server.cert.to_str().unwrap(),
            "--key-file",
            server.key.to_str().unwrap(),
            "--trusted-ca-file",
            pki.ca_file().to_str().unwrap(),
            "--client-cert-auth",
        ],
        data.path(),
    )
    .unwrap()
    .unwrap();
    let (addr, echo) = echo_server(tls).await;

    round_trip(addr, &connector(&pki.ca_file(), Some(&client)))
        .await
        .unwrap();
    let no_cert = round_trip(addr, &connector(&pki.ca_file(), None)).await;
    assert!(no_cert.is_err(), "a client without a certificate got in");
    let foreign = round_trip(addr, &connector(&pki.ca_file(), Some(&stranger))).await;
    assert!(foreign.is_err(), "another CA's certificate got in");
    // The client must trust the server's CA too.
    let untrusting = round_trip(addr, &connector(&stranger_ca.ca_file(), Some(&client))).await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    round_trip(addr, &connector(&pki.ca_file(), Some(&client)))
        .await
        .unwrap();
    echo.abort();
}

/// The common name of the certificate the server at `addr` presents.
async fn served_cn(addr: std::net::SocketAddr, connector: &TlsConnector) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(server_name("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    CertNames::parse(&certs[0]).unwrap().common_names.join(",")
}

#[tokio::test]
async fn a_renewed_certificate_is_served_at_the_next_handshake() {
    let pki = Pki::new("cluster ca");
    let first = pki.issue("server-1", &["127.0.0.1"]);
    let renewed = pki.issue("server-2", &["127.0.0.1"]);
    let data = tempfile::tempdir().unwrap();
    let (cert, key) = (
        data.path().join("server.crt"),
        data.path().join("server.key"),
    );
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let tls = client_tls_of(
        &[
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--cert-file",
            cert.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ],
        data.path(),
    )
    .unwrap()
    .unwrap();
    let (addr, echo) = echo_server(tls).await;
    let client = connector(&pki.ca_file(), None);
    assert_eq!(served_cn(addr, &client).await, "server-1");
    // `kubeadm certs renew` rewrites both files in place.
    std::fs::copy(&renewed.cert, &cert).unwrap();
    std::fs::copy(&renewed.key, &key).unwrap();
    assert_eq!(served_cn(addr, &client).await, "server-2");
    // A certificate caught half-written (or a key of another certificate) keeps the last good
    // pair.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    assert_eq!(served_cn(addr, &client).await, "server-2");
    std::fs::copy(&first.cert, &cert).unwrap();
    assert_eq!(served_cn(addr, &client).await, "server-2");
    std::fs::copy(&first.key, &key).unwrap();
    assert_eq!(served_cn(addr, &client).await, "server-1");
    echo.abort();
}
