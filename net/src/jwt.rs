//! JWT auth tokens (`--auth-token jwt,sign-method=...,pub-key=...,priv-key=...,ttl=...`), as
//! etcd 3.4.23 builds them (checked against it).
//!
//! A token is `base64url(header).base64url(claims).base64url(signature)` with the header
//! `{"alg":"RS256","typ":"JWT"}` and the claims `{"exp":1795820991,"revision":7,"username":
//! "alice"}`: `exp` in Unix seconds (`ttl` after the token was signed), `revision` the auth
//! revision at which the password was checked. The JSON is written field by field in the
//! order etcd writes it (Go's encoder sorts a map's keys), so a token reads like etcd's.
//!
//! Nothing about a token is kept anywhere: every member that holds the key verifies every
//! member's tokens. Verifying checks, as etcd's jwt-go does: the header's `alg` is the
//! configured method, the signature, `exp` (valid through that second), `iat` and `nbf` when
//! present, and that `username` is a string and `revision` a number (etcd's server panics on
//! a validly signed token without them; here it is an invalid token). Comparing the token's
//! revision with the member's auth revision is the edge's part (`auth.rs`).
//!
//! Options (etcd's `auth/options.go`): `sign-method` is required and must be a name jwt-go
//! knows; `pub-key` and `priv-key` are PEM files (RSA: PKCS#1 or PKCS#8 private keys; EC:
//! SEC1 or PKCS#8 private keys; public keys as SubjectPublicKeyInfo or a certificate); for
//! `HS*` the private key file's bytes are the secret; `ttl` is a Go duration, 5m when absent
//! or empty. With both keys, tokens are verified with the private key's public half, and the
//! public key only has to parse and to pass etcd's (loose) match check. With only a public key
//! the member verifies but cannot sign: Authenticate there fails as etcd's does. Unknown
//! options are logged and ignored.
//!
//! Not built, refused at start-up with a message saying so (etcd 3.4 accepts them): ES512
//! (P-521: the signing library, ring, signs on P-256 and P-384 only), RSA keys shorter than
//! 2048 bits (ring refuses them), and an EC private key on another curve than its method's
//! (etcd starts, then fails every Authenticate).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use pkcs8::der::Encode as _;
use pkcs8::ObjectIdentifier;
use ring::signature::KeyPair as _;
use serde::Serialize;
use serde_json::Value;

/// etcd's default token lifetime, when `ttl` is absent or empty.
pub const DEFAULT_TTL_MS: i64 = 5 * 60 * 1000;

/// etcd's error for a malformed `--auth-token` value (`auth.ErrInvalidAuthOpts`).
pub const INVALID_AUTH_OPTIONS: &str = "auth: invalid auth options";

/// Authenticate on a member that has only the public key (etcd's `auth.ErrVerifyOnly`).
pub const VERIFY_ONLY: &str = "auth: token signing attempted with verify-only key";

const OPT_SIGN_METHOD: &str = "sign-method";
const OPT_PUBLIC_KEY: &str = "pub-key";
const OPT_PRIVATE_KEY: &str = "priv-key";
const OPT_TTL: &str = "ttl";
const KNOWN_OPTIONS: [&str; 4] = [OPT_SIGN_METHOD, OPT_PUBLIC_KEY, OPT_PRIVATE_KEY, OPT_TTL];

// jwt-go's key errors, whose text etcd prints when it refuses to start.
const NOT_PEM: &str = "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key";
const NOT_RSA_PUBLIC: &str = "key is not a valid RSA public key";
const NOT_RSA_PRIVATE: &str = "key is not a valid RSA private key";
const NOT_EC_PUBLIC: &str = "key is not a valid ECDSA public key";
const NOT_EC_PRIVATE: &str = "key is not a valid ECDSA private key";

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Why `--auth-token` is refused; where etcd has a message, the text starts with it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenConfigError {
    /// etcd: `auth: invalid auth options` (a malformed option, a duplicate, an unknown token
    /// type or sign method, a bad `ttl`, an unreadable key file).
    #[error("auth: invalid auth options ({why})")]
    InvalidOptions { why: String },
    #[error("auth: missing key data")]
    MissingKey,
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    /// A method jwt-go knows but etcd cannot use (`none`, `EdDSA`); the Go type etcd names.
    #[error("unsupported signing method: {go_type}")]
    Unsupported { go_type: &'static str },
    #[error("sign-method {method} is not built in Ballast ({why})")]
    NotBuilt { method: String, why: String },
    /// A key file that does not hold a usable key of the method's kind.
    #[error("{what} ({option} {path})")]
    BadKey {
        what: String,
        option: &'static str,
        path: String,
    },
}

impl TokenConfigError {
    pub fn invalid(why: impl Into<String>) -> TokenConfigError {
        TokenConfigError::InvalidOptions { why: why.into() }
    }
}

/// Why a token could not be signed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    #[error("{VERIFY_ONLY}")]
    VerifyOnly,
    #[error("signing the token: {0}")]
    Sign(String),
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub username: String,
    pub revision: u64,
}

/// The header and claims, in the order etcd writes them.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
}

#[derive(Serialize)]
struct WrittenClaims<'a> {
    exp: i64,
    revision: u64,
    username: &'a str,
}

/// The member's JWT settings: its keys, method and token lifetime.
pub struct JwtTokens {
    method: Algorithm,
    /// `None`: only a public key was given (verify-only member).
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    validation: Validation,
    ttl_ms: i64,
    /// Tokens already verified (by their whole text, signature included), at most
    /// [`VERIFIED_MAX`]: verifying costs about 75 us (RS256) to 130 us (ES256) here.
    verified: RwLock<HashMap<String, Verified>>,
}

/// Bound on the verified tokens remembered; when reached they are all forgotten (and verified
/// again on their next use). A client holds one token per `ttl`.
pub const VERIFIED_MAX: usize = 1024;

/// A verified token's claims and `exp` second (`None`: it never expires).
#[derive(Debug)]
struct Verified {
    claims: Claims,
    exp: Option<i64>,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("method", &self.method)
            .field("can_sign", &self.signing.is_some())
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

/// The kind of key a method needs, and the EC curve for ES*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec(Curve),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn signing(self) -> &'static ring::signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P384 => &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
        }
    }
}

/// A `sign-method` value as jwt-go reads it (case matters).
fn sign_method(name: &str) -> Result<(Algorithm, Family), TokenConfigError> {
    use Algorithm as A;
    Ok(match name {
        "HS256" => (A::HS256, Family::Hmac),
        "HS384" => (A::HS384, Family::Hmac),
        "HS512" => (A::HS512, Family::Hmac),
        "RS256" => (A::RS256, Family::Rsa),
        "RS384" => (A::RS384, Family::Rsa),
        "RS512" => (A::RS512, Family::Rsa),
        "PS256" => (A::PS256, Family::Rsa),
        "PS384" => (A::PS384, Family::Rsa),
        "PS512" => (A::PS512, Family::Rsa),
        "ES256" => (A::ES256, Family::Ec(Curve::P256)),
        "ES384" => (A::ES384, Family::Ec(Curve::P384)),
        "ES512" => {
            return Err(TokenConfigError::NotBuilt {
                method: name.to_owned(),
                why: "P-521 keys: ring signs and verifies on P-256 and P-384 only".to_owned(),
            })
        }
        "none" => {
            return Err(TokenConfigError::Unsupported {
                go_type: "*jwt.signingMethodNone",
            })
        }
        "EdDSA" => {
            return Err(TokenConfigError::Unsupported {
                go_type: "*jwt.SigningMethodEd25519",
            })
        }
        other => {
            return Err(TokenConfigError::invalid(format!(
                "auth: invalid auth signature method {other:?}"
            )))
        }
    })
}

/// A Go duration with an optional sign (`ttl=-1s` is accepted by etcd: tokens born expired).
fn signed_duration_ms(text: &str) -> Result<i64, String> {
    let (negative, magnitude) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let d = crate::flags::parse_go_duration(magnitude)?;
    let ms = i64::try_from(d.as_millis()).map_err(|_| format!("duration {text:?} too large"))?;
    Ok(if negative { -ms } else { ms })
}

fn read_key_file(option: &'static str, path: &str) -> Result<Vec<u8>, TokenConfigError> {
    std::fs::read(path).map_err(|e| TokenConfigError::invalid(format!("{option} {path}: {e}")))
}

/// The first PEM block of a key file (Go's `pem.Decode`).
fn pem_block(option: &'static str, path: &str, bytes: &[u8]) -> Result<Vec<u8>, TokenConfigError> {
    pem::parse(bytes)
        .map(pem::Pem::into_contents)
        .map_err(|e| bad_key(NOT_PEM, option, path, e))
}

fn bad_key(
    what: &str,
    option: &'static str,
    path: &str,
    why: impl std::fmt::Display,
) -> TokenConfigError {
    TokenConfigError::BadKey {
        what: format!("{what}: {why}"),
        option,
        path: path.to_owned(),
    }
}

/// A public key as jwt-go reads one: SubjectPublicKeyInfo, else a certificate's.
enum PublicKey {
    /// Big-endian modulus and exponent without leading zeros, and the PKCS#1 DER.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        pkcs1: Vec<u8>,
    },
    /// The curve (`None`: one ring does not sign on) and the uncompressed point.
    Ec {
        curve: Option<ObjectIdentifier>,
        point: Vec<u8>,
    },
    Other,
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[first..].to_vec()
}

fn parse_public_key(der: &[u8]) -> Result<PublicKey, String> {
    use x509_parser::prelude::FromDer as _;
    let spki_of =
        |spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>| -> Result<PublicKey, String> {
            match spki.parsed().map_err(|e| e.to_string())? {
                x509_parser::public_key::PublicKey::RSA(rsa) => Ok(PublicKey::Rsa {
                    n: strip_zeros(rsa.modulus),
                    e: strip_zeros(rsa.exponent),
                    pkcs1: spki.subject_public_key.data.to_vec(),
                }),
                x509_parser::public_key::PublicKey::EC(point) => {
                    let curve = spki
                        .algorithm
                        .parameters
                        .as_ref()
                        .and_then(|p| p.as_oid().ok())
                        .and_then(|oid| ObjectIdentifier::from_bytes(oid.as_bytes()).ok());
                    Ok(PublicKey::Ec {
                        curve,
                        point: point.data().to_vec(),
                    })
                }
                _ => Ok(PublicKey::Other),
            }
        };
    match x509_parser::x509::SubjectPublicKeyInfo::from_der(der) {
        Ok((_, spki)) => spki_of(&spki),
        Err(spki_err) => match x509_parser::certificate::X509Certificate::from_der(der) {
            Ok((_, cert)) => spki_of(cert.public_key()),
            Err(_) => Err(format!(
                "neither a public key nor a certificate: {spki_err}"
            )),
        },
    }
}

/// An RSA private key: PKCS#1, else PKCS#8 (jwt-go's order). Answers ring's key pair and the
/// PKCS#1 DER the signer takes.
fn parse_rsa_private(der: &[u8]) -> Result<(ring::signature::RsaKeyPair, Vec<u8>), String> {
    if let Ok(pair) = ring::signature::RsaKeyPair::from_der(der) {
        return Ok((pair, der.to_vec()));
    }
    let info = pkcs8::PrivateKeyInfo::try_from(der)
        .map_err(|e| format!("neither PKCS#1 nor PKCS#8: {e}"))?;
    if info.algorithm.oid != OID_RSA_ENCRYPTION {
        return Err(format!("a PKCS#8 key of type {}", info.algorithm.oid));
    }
    let pair = ring::signature::RsaKeyPair::from_der(info.private_key)
        .map_err(|e| format!("rejected: {e}"))?;
    Ok((pair, info.private_key.to_vec()))
}

/// An EC private key: SEC1, else PKCS#8 (jwt-go's order). Answers its curve and the key as
/// PKCS#8, the form the signer takes.
fn parse_ec_private(der: &[u8]) -> Result<(ObjectIdentifier, Vec<u8>), String> {
    if let Ok(key) = sec1::EcPrivateKey::try_from(der) {
        let curve = key
            .parameters
            .and_then(|p| p.named_curve())
            .ok_or("a SEC1 key without a named curve")?;
        let algorithm = pkcs8::AlgorithmIdentifierRef {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some((&curve).into()),
        };
        let wrapped = pkcs8::PrivateKeyInfo::new(algorithm, der)
            .to_der()
            .map_err(|e| e.to_string())?;
        return Ok((curve, wrapped));
    }
    let info = pkcs8::PrivateKeyInfo::try_from(der)
        .map_err(|e| format!("neither SEC1 nor PKCS#8: {e}"))?;
    if info.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(format!("a PKCS#8 key of type {}", info.algorithm.oid));
    }
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|e| format!("no named curve: {e}"))?;
    Ok((curve, der.to_vec()))
}

fn curve_name(oid: &ObjectIdentifier) -> String {
    match *oid {
        OID_P256 => "P-256".to_owned(),
        OID_P384 => "P-384".to_owned(),
        OID_P521 => "P-521".to_owned(),
        other => other.to_string(),
    }
}

impl JwtTokens {
    /// The settings from `--auth-token jwt,...`'s options (module comment); errors as etcd's.
    pub fn from_options(options: &BTreeMap<&str, &str>) -> Result<JwtTokens, TokenConfigError> {
        let get = |name: &str| options.get(name).copied().unwrap_or_default();
        let ttl_ms = match get(OPT_TTL) {
            "" => DEFAULT_TTL_MS,
            text => signed_duration_ms(text)
                .map_err(|e| TokenConfigError::invalid(format!("ttl: {e}")))?,
        };
        let public = match get(OPT_PUBLIC_KEY) {
            "" => None,
            path => Some((path, read_key_file(OPT_PUBLIC_KEY, path)?)),
        };
        let private = match get(OPT_PRIVATE_KEY) {
            "" => None,
            path => Some((path, read_key_file(OPT_PRIVATE_KEY, path)?)),
        };
        let (method, family) = sign_method(get(OPT_SIGN_METHOD))?;
        let unknown: Vec<&str> = options
            .keys()
            .copied()
            .filter(|k| !KNOWN_OPTIONS.contains(k))
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(keys = ?unknown, "unknown JWT options");
        }
        // An empty file is no key, as etcd reads it.
        let public = public.filter(|(_, b)| !b.is_empty());
        let private = private.filter(|(_, b)| !b.is_empty());
        let (signing, verifying) = match family {
            Family::Hmac => {
                let (_, secret) = private.ok_or(TokenConfigError::MissingKey)?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            Family::Rsa => rsa_keys(public, private)?,
            Family::Ec(curve) => ec_keys(get(OPT_SIGN_METHOD), curve, public, private)?,
        };
        let mut validation = Validation::new(method);
        // Times are checked by `verify` against the caller's clock, as jwt-go checks them.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.required_spec_claims = HashSet::new();
        Ok(JwtTokens {
            method,
            signing,
            verifying,
            validation,
            ttl_ms,
            verified: RwLock::default(),
        })
    }

    /// Whether this member can sign tokens (it has the private key).
    pub fn can_sign(&self) -> bool {
        self.signing.is_some()
    }

    /// A token for `username` at auth revision `revision`, signed at `now_ms` (Unix ms).
    pub fn mint(&self, username: &str, revision: u64, now_ms: i64) -> Result<String, MintError> {
        let key = self.signing.as_ref().ok_or(MintError::VerifyOnly)?;
        let header = Header {
            alg: algorithm_name(self.method),
            typ: "JWT",
        };
        let claims = WrittenClaims {
            exp: now_ms.saturating_add(self.ttl_ms).div_euclid(1000),
            revision,
            username,
        };
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("a plain struct")),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("a plain struct"))
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, self.method)
            .map_err(|e| MintError::Sign(e.to_string()))?;
        Ok(format!("{message}.{signature}"))
    }

    /// What `token` says, if it is valid at `now_ms` (Unix ms): signed with this member's key
    /// and method, not expired, not issued in the future (module comment). A token verified
    /// once is remembered with its claims and `exp` (see [`VERIFIED_MAX`]), so its signature
    /// is not checked again on every request.
    pub fn verify(&self, token: &str, now_ms: i64) -> Option<Claims> {
        let now = now_ms.div_euclid(1000);
        if let Some(hit) = self.read_verified().get(token) {
            // Only `exp` can turn a verified token invalid later (`iat` and `nbf` were
            // already in the past).
            return match hit.exp {
                Some(exp) if now > exp => None,
                _ => Some(hit.claims.clone()),
            };
        }
        let (claims, exp) = self.verify_uncached(token, now)?;
        let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(
            token.to_owned(),
            Verified {
                claims: claims.clone(),
                exp,
            },
        );
        Some(claims)
    }

    fn read_verified(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Verified>> {
        // Entries are inserted whole; a poisoned lock still holds valid ones.
        self.verified.read().unwrap_or_else(|p| p.into_inner())
    }

    /// [`JwtTokens::verify`] without the memory: the claims and the `exp` second (if any).
    fn verify_uncached(&self, token: &str, now: i64) -> Option<(Claims, Option<i64>)> {
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &self.verifying,
            &self.validation,
        )
        .ok()?;
        let claims = data.claims;
        // jwt-go reads a time claim only when it is a number; 0 counts as absent.
        let time = |name: &str| match claims.get(name) {
            Some(Value::Number(n)) => n.as_f64().map(|f| f as i64).filter(|&t| t != 0),
            _ => None,
        };
        if time("exp").is_some_and(|exp| now > exp)
            || time("iat").is_some_and(|iat| now < iat)
            || time("nbf").is_some_and(|nbf| now < nbf)
        {
            return None;
        }
        let username = claims.get("username")?.as_str()?.to_owned();
        let revision = claims.get("revision")?.as_f64()? as u64;
        Some((Claims { username, revision }, time("exp")))
    }
}

fn algorithm_name(a: Algorithm) -> &'static str {
    use Algorithm as A;
    match a {
        A::HS256 => "HS256",
        A::HS384 => "HS384",
        A::HS512 => "HS512",
        A::RS256 => "RS256",
        A::RS384 => "RS384",
        A::RS512 => "RS512",
        A::PS256 => "PS256",
        A::PS384 => "PS384",
        A::PS512 => "PS512",
        A::ES256 => "ES256",
        A::ES384 => "ES384",
        A::EdDSA => "EdDSA",
    }
}

type KeyFile<'a> = Option<(&'a str, Vec<u8>)>;

/// RSA keys (etcd's `rsaKey`): the private key signs, its public half verifies; a public key
/// alone verifies. etcd calls the pair mismatched only when both modulus and exponent differ.
fn rsa_keys(
    public: KeyFile<'_>,
    private: KeyFile<'_>,
) -> Result<(Option<EncodingKey>, DecodingKey), TokenConfigError> {
    let public = match public {
        None => None,
        Some((path, bytes)) => {
            let der = pem_block(OPT_PUBLIC_KEY, path, &bytes)?;
            match parse_public_key(&der)
                .map_err(|e| bad_key(NOT_RSA_PUBLIC, OPT_PUBLIC_KEY, path, e))?
            {
                PublicKey::Rsa { n, e, pkcs1 } => Some((n, e, pkcs1)),
                _ => {
                    return Err(bad_key(
                        NOT_RSA_PUBLIC,
                        OPT_PUBLIC_KEY,
                        path,
                        "not an RSA key",
                    ))
                }
            }
        }
    };
    let Some((path, bytes)) = private else {
        let (_, _, pkcs1) = public.ok_or(TokenConfigError::MissingKey)?;
        return Ok((None, DecodingKey::from_rsa_der(&pkcs1)));
    };
    let der = pem_block(OPT_PRIVATE_KEY, path, &bytes)?;
    let (pair, pkcs1_private) = parse_rsa_private(&der).map_err(|e| {
        let e = if e.contains("TooSmall") {
            "shorter than 2048 bits, which Ballast (ring) does not build".to_owned()
        } else {
            e
        };
        bad_key(NOT_RSA_PRIVATE, OPT_PRIVATE_KEY, path, e)
    })?;
    let own: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
    if let Some((n, e, _)) = &public {
        if *n != strip_zeros(&own.n) && *e != strip_zeros(&own.e) {
            return Err(TokenConfigError::KeyMismatch);
        }
    }
    Ok((
        Some(EncodingKey::from_rsa_der(&pkcs1_private)),
        DecodingKey::from_rsa_der(pair.public().as_ref()),
    ))
}

/// EC keys (etcd's `ecKey`), as [`rsa_keys`]; etcd calls the pair mismatched only when the
/// curves differ (and the points).
fn ec_keys(
    method: &str,
    curve: Curve,
    public: KeyFile<'_>,
    private: KeyFile<'_>,
) -> Result<(Option<EncodingKey>, DecodingKey), TokenConfigError> {
    let public = match public {
        None => None,
        Some((path, bytes)) => {
            let der = pem_block(OPT_PUBLIC_KEY, path, &bytes)?;
            match parse_public_key(&der)
                .map_err(|e| bad_key(NOT_EC_PUBLIC, OPT_PUBLIC_KEY, path, e))?
            {
                PublicKey::Ec { curve, point } => Some((curve, point)),
                _ => {
                    return Err(bad_key(
                        NOT_EC_PUBLIC,
                        OPT_PUBLIC_KEY,
                        path,
                        "not an EC key",
                    ))
                }
            }
        }
    };
    let Some((path, bytes)) = private else {
        let (_, point) = public.ok_or(TokenConfigError::MissingKey)?;
        return Ok((None, DecodingKey::from_ec_der(&point)));
    };
    let der = pem_block(OPT_PRIVATE_KEY, path, &bytes)?;
    let (key_curve, pkcs8) =
        parse_ec_private(&der).map_err(|e| bad_key(NOT_EC_PRIVATE, OPT_PRIVATE_KEY, path, e))?;
    if key_curve != curve.oid() {
        return Err(TokenConfigError::NotBuilt {
            method: method.to_owned(),
            why: format!(
                "with a {} private key: the method signs on {} (etcd 3.4 starts, then fails every Authenticate)",
                curve_name(&key_curve),
                curve_name(&curve.oid())
            ),
        });
    }
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(curve.signing(), &pkcs8, &rng)
        .map_err(|e| bad_key(NOT_EC_PRIVATE, OPT_PRIVATE_KEY, path, e))?;
    let own_point = pair.public_key().as_ref().to_vec();
    if let Some((public_curve, point)) = &public {
        if *public_curve != Some(key_curve) && *point != own_point {
            return Err(TokenConfigError::KeyMismatch);
        }
    }
    Ok((
        Some(EncodingKey::from_ec_der(&pkcs8)),
        DecodingKey::from_ec_der(&own_point),
    ))
}

#[cfg(test)]
mod tests;
