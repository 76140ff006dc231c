//! `--auth-token` parsing (etcd 3.4.23's answers, checked against it with the same kinds of
//! keys) and JWT minting and verifying. Keys: `testdata/README.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::*;
use crate::auth::{split_auth_token, tokens_from_flag, AuthEdge, Caller, Tokens};

/// 2030-01-01T00:00:00.250Z, in Unix ms.
const NOW_MS: i64 = 1_893_456_000_250;

const KEYS: &[(&str, &[u8])] = &[
    ("rsa.pem", include_bytes!("testdata/rsa.pem")),
    ("rsa.pkcs1.pem", include_bytes!("testdata/rsa.pkcs1.pem")),
    ("rsa.pub.pem", include_bytes!("testdata/rsa.pub.pem")),
    ("other.pub.pem", include_bytes!("testdata/other.pub.pem")),
    ("e3.pub.pem", include_bytes!("testdata/e3.pub.pem")),
    ("rsa1024.pem", include_bytes!("testdata/rsa1024.pem")),
    ("p256.sec1.pem", include_bytes!("testdata/p256.sec1.pem")),
    ("p256.pem", include_bytes!("testdata/p256.pem")),
    ("p256.pub.pem", include_bytes!("testdata/p256.pub.pem")),
    ("p384.sec1.pem", include_bytes!("testdata/p384.sec1.pem")),
    ("p384.pub.pem", include_bytes!("testdata/p384.pub.pem")),
    ("p521.sec1.pem", include_bytes!("testdata/p521.sec1.pem")),
    ("hmac.key", b"a shared secret\n"),
    ("empty.pem", b""),
];

/// The test keys written to a temporary directory (the options name files).
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("a temp dir");
        for (name, bytes) in KEYS {
            std::fs::write(dir.path().join(name), bytes).expect("writing a key");
        }
        Keys { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `--auth-token jwt,...` with `{name}` replaced by the key file's path.
    fn flag(&self, template: &str) -> String {
        let mut out = template.to_owned();
        for (name, _) in KEYS {
            out = out.replace(&format!("{{{name}}}"), &self.path(name).to_string_lossy());
        }
        out
    }

    fn jwt(&self, template: &str) -> Result<JwtTokens, TokenConfigError> {
        match tokens_from_flag(&self.flag(template))? {
            Tokens::Jwt(j) => Ok(Arc::try_unwrap(j).expect("one owner")),
            Tokens::Simple => panic!("{template}: simple tokens"),
        }
    }
}

fn err(r: Result<JwtTokens, TokenConfigError>) -> String {
    r.expect_err("refused").to_string()
}

#[test]
fn the_flag_splits_as_etcd_splits_it() {
    let (kind, options) = split_auth_token("simple").unwrap();
    assert_eq!((kind, options.len()), ("simple", 0));
    let (kind, options) = split_auth_token("jwt,sign-method=RS256,priv-key=/k,ttl=").unwrap();
    assert_eq!(kind, "jwt");
    assert_eq!(
        options,
        BTreeMap::from([("sign-method", "RS256"), ("priv-key", "/k"), ("ttl", "")])
    );
    // etcd 3.4.23: "auth: invalid auth options" for each of these (the server does not start).
    for bad in [
        "jwt,x",
        "jwt,a=b=c",
        "jwt,sign-method=RS256,",
        "jwt,sign-method=RS256,sign-method=RS256",
        "simple,x",
        "bogus",
        "",
    ] {
        let e = tokens_from_flag(bad).expect_err(bad).to_string();
        assert!(e.starts_with(INVALID_AUTH_OPTIONS), "{bad:?}: {e}");
    }
    // Options of a simple token are split, then ignored.
    assert!(matches!(
        tokens_from_flag("simple,foo=bar"),
        Ok(Tokens::Simple)
    ));
}

#[test]
fn options_are_refused_with_etcds_errors() {
    let k = Keys::new();
    let invalid = |t: &str| {
        let e = err(k.jwt(t));
        assert!(e.starts_with(INVALID_AUTH_OPTIONS), "{t}: {e}");
    };
    invalid("jwt");
    invalid("jwt,pub-key={rsa.pub.pem},priv-key={rsa.pem}");
    invalid("jwt,priv-key={rsa.pem},sign-method=rs256");
    invalid("jwt,priv-key={rsa.pem},sign-method=XX256");
    invalid("jwt,priv-key={rsa.pem},sign-method=RS256,ttl=abc");
    invalid("jwt,priv-key={rsa.pem},sign-method=RS256,ttl=5");
    invalid("jwt,pub-key={rsa.pub.pem},priv-key=/nonexistent/k,sign-method=RS256");
    let exact = |t: &str, want: &str| assert_eq!(err(k.jwt(t)), want, "{t}");
    exact("jwt,sign-method=RS256", "auth: missing key data");
    exact(
        "jwt,pub-key={hmac.key},sign-method=HS256",
        "auth: missing key data",
    );
    exact(
        "jwt,priv-key={empty.pem},sign-method=RS256",
        "auth: missing key data",
    );
    exact(
        "jwt,pub-key={e3.pub.pem},priv-key={rsa.pem},sign-method=RS256",
        "auth: public and private keys don't match",
    );
    exact(
        "jwt,pub-key={p384.pub.pem},priv-key={p256.sec1.pem},sign-method=ES256",
        "auth: public and private keys don't match",
    );
    exact(
        "jwt,priv-key={rsa.pem},sign-method=none",
        "unsupported signing method: *jwt.signingMethodNone",
    );
    exact(
        "jwt,priv-key={rsa.pem},sign-method=EdDSA",
        "unsupported signing method: *jwt.SigningMethodEd25519",
    );
    let starts = |t: &str, want: &str| {
        let e = err(k.jwt(t));
        assert!(e.starts_with(want), "{t}: {e}");
    };
    starts(
        "jwt,pub-key={p256.pub.pem},priv-key={rsa.pem},sign-method=RS256",
        "key is not a valid RSA public key",
    );
    starts(
        "jwt,priv-key={rsa.pub.pem},sign-method=RS256",
        "key is not a valid RSA private key",
    );
    starts(
        "jwt,priv-key={p256.sec1.pem},sign-method=RS256",
        "key is not a valid RSA private key",
    );
    starts(
        "jwt,priv-key={rsa.pem},sign-method=ES256",
        "key is not a valid ECDSA private key",
    );
    starts(
        "jwt,pub-key={rsa.pub.pem},sign-method=ES256",
        "key is not a valid ECDSA public key",
    );
    starts(
        "jwt,priv-key={hmac.key},sign-method=RS256",
        "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key",
    );
    // What etcd accepts and Ballast does not build.
    starts(
        "jwt,priv-key={p521.sec1.pem},sign-method=ES512",
        "sign-method ES512 is not built in Ballast",
    );
    starts(
        "jwt,priv-key={p384.sec1.pem},sign-method=ES256",
        "sign-method ES256 is not built in Ballast (with a P-384 private key",
    );
    let e = err(k.jwt("jwt,priv-key={rsa1024.pem},sign-method=RS256"));
    assert!(e.contains("shorter than 2048 bits"), "{e}");
}

#[test]
fn options_etcd_accepts() {
    let k = Keys::new();
    for t in [
        "jwt,pub-key={rsa.pub.pem},priv-key={rsa.pem},sign-method=RS256",
        "jwt,priv-key={rsa.pkcs1.pem},sign-method=RS384",
        "jwt,priv-key={rsa.pem},sign-method=PS512,ttl=1h30m",
        // etcd's match check is loose: another key with the same exponent passes.
        "jwt,pub-key={other.pub.pem},priv-key={rsa.pem},sign-method=RS256",
        "jwt,pub-key={p256.pub.pem},priv-key={p256.sec1.pem},sign-method=ES256",
        "jwt,priv-key={p256.pem},sign-method=ES256,unknown=ignored",
        "jwt,priv-key={p384.sec1.pem},sign-method=ES384",
        "jwt,priv-key={hmac.key},sign-method=HS512",
        "jwt,priv-key={rsa.pem},sign-method=RS256,ttl=0",
        "jwt,priv-key={rsa.pem},sign-method=RS256,ttl=-5s",
    ] {
        let j = k.jwt(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert!(j.can_sign(), "{t}");
    }
    let verify_only = k
        .jwt("jwt,pub-key={rsa.pub.pem},sign-method=RS256")
        .unwrap();
    assert!(!verify_only.can_sign());
    assert_eq!(verify_only.ttl_ms, DEFAULT_TTL_MS);
    assert_eq!(
        k.jwt("jwt,priv-key={rsa.pem},sign-method=RS256,ttl=1h30m")
            .unwrap()
            .ttl_ms,
        5_400_000
    );
    assert_eq!(
        k.jwt("jwt,priv-key={rsa.pem},sign-method=RS256,ttl=-5s")
            .unwrap()
            .ttl_ms,
        -5000
    );
}

fn parts(token: &str) -> (String, String) {
    let mut it = token.split('.');
    let mut part = || {
        String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(it.next().expect("a part"))
                .expect("base64"),
        )
        .expect("utf-8")
    };
    (part(), part())
}

#[test]
fn minted_tokens_read_like_etcds_and_verify() {
    let k = Keys::new();
    let alice = Claims {
        username: "alice".into(),
        revision: 7,
    };
    for (t, alg) in [
        ("jwt,priv-key={rsa.pem},sign-method=RS256", "RS256"),
        ("jwt,priv-key={rsa.pkcs1.pem},sign-method=RS512", "RS512"),
        ("jwt,priv-key={rsa.pem},sign-method=PS256", "PS256"),
        ("jwt,priv-key={p256.sec1.pem},sign-method=ES256", "ES256"),
        ("jwt,priv-key={p256.pem},sign-method=ES256", "ES256"),
        ("jwt,priv-key={p384.sec1.pem},sign-method=ES384", "ES384"),
        ("jwt,priv-key={hmac.key},sign-method=HS256", "HS256"),
    ] {
        let j = k.jwt(t).unwrap();
        let token = j.mint("alice", 7, NOW_MS).unwrap();
        let (header, claims) = parts(&token);
        assert_eq!(header, format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), "{t}");
        // 5 minutes after NOW_MS, in whole seconds.
        assert_eq!(
            claims, r#"{"exp":1893456300,"revision":7,"username":"alice"}"#,
            "{t}"
        );
        assert_eq!(j.verify(&token, NOW_MS), Some(alice.clone()), "{t}");
    }
}

#[test]
fn tokens_expire_after_their_ttl() {
    let k = Keys::new();
    let j = k
        .jwt("jwt,priv-key={p256.sec1.pem},sign-method=ES256,ttl=1s")
        .unwrap();
    let token = j.mint("alice", 3, NOW_MS).unwrap();
    // exp = 1893456001: valid through that second, as jwt-go's `now <= exp`.
    assert!(j.verify(&token, NOW_MS + 1749).is_some());
    assert_eq!(j.verify(&token, NOW_MS + 1750), None);
    let born_expired = k
        .jwt("jwt,priv-key={p256.sec1.pem},sign-method=ES256,ttl=-5s")
        .unwrap();
    let token = born_expired.mint("alice", 3, NOW_MS).unwrap();
    assert_eq!(born_expired.verify(&token, NOW_MS), None);
}

#[test]
fn every_member_with_the_key_verifies_and_no_other() {
    let k = Keys::new();
    let signer = k
        .jwt("jwt,pub-key={rsa.pub.pem},priv-key={rsa.pem},sign-method=RS256")
        .unwrap();
    let token = signer.mint("bob", 12, NOW_MS).unwrap();
    let verify_only = k
        .jwt("jwt,pub-key={rsa.pub.pem},sign-method=RS256")
        .unwrap();
    assert_eq!(
        verify_only.verify(&token, NOW_MS + 1000),
        Some(Claims {
            username: "bob".into(),
            revision: 12
        })
    );
    assert_eq!(
        verify_only.mint("bob", 12, NOW_MS),
        Err(MintError::VerifyOnly)
    );
    assert_eq!(MintError::VerifyOnly.to_string(), VERIFY_ONLY);
    // Another key, another method on the same key, another family.
    for t in [
        "jwt,pub-key={other.pub.pem},sign-method=RS256",
        "jwt,pub-key={rsa.pub.pem},sign-method=RS384",
        "jwt,pub-key={rsa.pub.pem},sign-method=PS256",
        "jwt,priv-key={hmac.key},sign-method=HS256",
        "jwt,pub-key={p256.pub.pem},sign-method=ES256",
    ] {
        assert_eq!(k.jwt(t).unwrap().verify(&token, NOW_MS), None, "{t}");
    }
    // An EC token verifies on a member holding only the public key.
    let ec = k
        .jwt("jwt,priv-key={p256.sec1.pem},sign-method=ES256")
        .unwrap();
    let ec_token = ec.mint("carol", 1, NOW_MS).unwrap();
    let ec_public = k
        .jwt("jwt,pub-key={p256.pub.pem},sign-method=ES256")
        .unwrap();
    assert_eq!(
        ec_public.verify(&ec_token, NOW_MS).map(|c| c.username),
        Some("carol".to_owned())
    );
}

/// `header.claims.signature` with the claims replaced.
fn with_claims(token: &str, claims: &str) -> String {
    let mut it = token.split('.');
    let header = it.next().unwrap();
    let _ = it.next();
    let signature = it.next().unwrap();
    format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.as_bytes())
    )
}

/// A token signed with HMAC `secret` over `header` and `claims` as given.
fn hmac_token(secret: &[u8], alg: jsonwebtoken::Algorithm, header: &str, claims: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).unwrap();
    format!("{message}.{signature}")
}

#[test]
fn tampered_garbled_and_confused_tokens_are_invalid() {
    let k = Keys::new();
    let j = k.jwt("jwt,priv-key={rsa.pem},sign-method=RS256").unwrap();
    let token = j.mint("alice", 7, NOW_MS).unwrap();
    let tampered = with_claims(
        &token,
        r#"{"exp":1893456300,"revision":7,"username":"root"}"#,
    );
    assert_eq!(j.verify(&tampered, NOW_MS), None);
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(j.verify(&String::from_utf8(flipped).unwrap(), NOW_MS), None);
    for garbled in [
        "",
        "malformed",
        "abcdefghijklmnop.1",
        "a.b.c",
        "..",
        &token[1..],
    ] {
        assert_eq!(j.verify(garbled, NOW_MS), None, "{garbled:?}");
    }
    // HS256 keyed with the public key's PEM bytes (the classic confusion) is refused.
    let confused = hmac_token(
        include_bytes!("testdata/rsa.pub.pem"),
        jsonwebtoken::Algorithm::HS256,
        r#"{"alg":"HS256","typ":"JWT"}"#,
        r#"{"exp":1893456300,"revision":7,"username":"root"}"#,
    );
    assert_eq!(j.verify(&confused, NOW_MS), None);
}

#[test]
fn claims_are_read_as_jwt_go_reads_them() {
    let k = Keys::new();
    let j = k.jwt("jwt,priv-key={hmac.key},sign-method=HS256").unwrap();
    let now_s = NOW_MS / 1000;
    let token = |claims: &str| {
        hmac_token(
            b"a shared secret\n",
            jsonwebtoken::Algorithm::HS256,
            r#"{"alg":"HS256","typ":"JWT"}"#,
            claims,
        )
    };
    let read = |claims: &str| j.verify(&token(claims), NOW_MS);
    let u = |rev| {
        Some(Claims {
            username: "u".into(),
            revision: rev,
        })
    };
    // No exp, or exp 0, never expires; iat and nbf must not be in the future.
    assert_eq!(read(r#"{"revision":2,"username":"u"}"#), u(2));
    assert_eq!(read(r#"{"exp":0,"revision":2,"username":"u"}"#), u(2));
    assert_eq!(
        read(&format!(r#"{{"exp":{now_s},"revision":2,"username":"u"}}"#)),
        u(2)
    );
    assert_eq!(
        read(&format!(
            r#"{{"exp":{},"revision":2,"username":"u"}}"#,
            now_s - 1
        )),
        None
    );
    assert_eq!(
        read(&format!(
            r#"{{"iat":{},"revision":2,"username":"u"}}"#,
            now_s + 1
        )),
        None
    );
    assert_eq!(
        read(&format!(
            r#"{{"nbf":{},"revision":2,"username":"u"}}"#,
            now_s + 1
        )),
        None
    );
    assert_eq!(
        read(&format!(
            r#"{{"nbf":{now_s},"revision":2.0,"username":"u"}}"#
        )),
        u(2)
    );
    // Without a user name or a numeric revision (etcd's server panics on these).
    assert_eq!(read(r#"{"revision":2}"#), None);
    assert_eq!(read(r#"{"revision":"2","username":"u"}"#), None);
    assert_eq!(read(r#"{"revision":2,"username":3}"#), None);
    // The header's algorithm must be the configured one, even with the right secret.
    let hs384 = hmac_token(
        b"a shared secret\n",
        jsonwebtoken::Algorithm::HS384,
        r#"{"alg":"HS384","typ":"JWT"}"#,
        r#"{"revision":2,"username":"u"}"#,
    );
    assert_eq!(j.verify(&hs384, NOW_MS), None);
}

const ROOT_NAME: &str = ballast_consensus::auth::ROOT;

/// An edge whose node holds `alice` (READ on `k`) and `root`, auth enabled at revision 5.
fn edge_at_revision_5(enabled: bool) -> AuthEdge {
    use ballast_consensus::auth::{PermType, Permission, Role, User, ROOT};
    use ballast_consensus::AuthState;
    let edge = AuthEdge::default();
    let mut state = AuthState {
        enabled,
        revision: 5,
        ..AuthState::default()
    };
    state.roles.insert(
        "r".into(),
        Role {
            permissions: vec![Permission {
                perm_type: PermType::READ,
                key: bytes::Bytes::from_static(b"k"),
                range_end: bytes::Bytes::new(),
            }],
        },
    );
    state.roles.insert(ROOT.into(), Role::default());
    for (name, role) in [("alice", "r"), (ROOT, ROOT)] {
        state.users.insert(
            name.into(),
            User {
                roles: vec![role.into()],
                ..User::default()
            },
        );
    }
    edge.node.replace(state);
    edge
}

#[test]
fn a_token_older_than_the_auth_state_fails_key_checks() {
    let edge = edge_at_revision_5(true);
    let caller = |user: &str, rev: Option<u64>| Caller {
        user: Some(user.into()),
        auth_revision: rev,
    };
    let outcome = |c: &Caller, key: &[u8]| match edge.check_read(c, key, b"") {
        Ok(()) => "ok".to_owned(),
        Err(s) => format!("{:?} {}", s.code(), s.message()),
    };
    let old = "InvalidArgument etcdserver: revision of auth store is old";
    assert_eq!(outcome(&caller("alice", Some(4)), b"k"), old);
    // Before the permission itself, and for root too, as etcd's isOpPermitted.
    assert_eq!(outcome(&caller("alice", Some(4)), b"x"), old);
    assert_eq!(outcome(&caller(ROOT_NAME, Some(4)), b"x"), old);
    assert_eq!(outcome(&caller("alice", Some(5)), b"k"), "ok");
    assert_eq!(outcome(&caller("alice", Some(6)), b"k"), "ok");
    assert_eq!(
        outcome(&caller("alice", Some(5)), b"x"),
        "PermissionDenied etcdserver: permission denied"
    );
    // A simple token has no revision of its own.
    assert_eq!(outcome(&caller("alice", None), b"k"), "ok");
    assert_eq!(
        edge.check_concurrency(&caller("alice", Some(4)), None, Some(b"k"))
            .map_err(|s| s.message().to_owned()),
        Err("etcdserver: revision of auth store is old".to_owned())
    );
    // The admin check does not look at it; nor does anything while auth is off.
    assert!(edge.check_admin(&caller(ROOT_NAME, Some(1))).is_ok());
    let off = edge_at_revision_5(false);
    assert!(off.check_read(&caller("alice", Some(1)), b"x", b"").is_ok());
}

#[test]
fn an_unreadable_key_path_names_the_option() {
    let e = err(JwtTokens::from_options(&BTreeMap::from([
        ("sign-method", "RS256"),
        ("priv-key", "/nonexistent/key.pem"),
    ])));
    assert!(e.contains("priv-key /nonexistent/key.pem"), "{e}");
}

#[test]
fn a_remembered_token_still_expires_and_the_memory_is_bounded() {
    let k = Keys::new();
    let j = k
        .jwt("jwt,priv-key={hmac.key},sign-method=HS256,ttl=1s")
        .unwrap();
    let token = j.mint("alice", 3, NOW_MS).unwrap();
    assert!(j.verify(&token, NOW_MS).is_some());
    // Remembered now; past its exp (1893456001) it is refused all the same.
    assert!(j.verify(&token, NOW_MS + 1749).is_some());
    assert_eq!(j.verify(&token, NOW_MS + 1750), None);
    // A tampered copy is another text: verified on its own, and refused.
    let tampered = with_claims(
        &token,
        r#"{"exp":1893456001,"revision":3,"username":"root"}"#,
    );
    assert_eq!(j.verify(&tampered, NOW_MS), None);
    for i in 0..VERIFIED_MAX + 10 {
        let t = j.mint(&format!("u{i}"), 3, NOW_MS).unwrap();
        assert_eq!(
            j.verify(&t, NOW_MS).map(|c| c.username),
            Some(format!("u{i}"))
        );
        assert!(j.read_verified().len() <= VERIFIED_MAX);
    }
    assert!(j.verify(&token, NOW_MS).is_some());
}
