//! The auth edge: who sent a request (its token), and whether etcd 3.4 would let that user
//! run it, checked against this node's read-only copy of the auth state
//! (`ballast_consensus::auth::NodeAuth`, behind an `ArcSwap`: no lock on the data path).
//!
//! Tokens (`--auth-token`): `simple` (the default) are registered by every member as it
//! applies the authentication (`ballast_consensus::auth`) and name a user; `jwt` tokens are
//! signed and carry the user and the auth revision at which the password was checked
//! (`jwt.rs`), so any member with the key verifies them alone. A JWT older than the member's
//! auth revision fails every key check with `etcdserver: revision of auth store is old`, as
//! etcd's `isOpPermitted` fails it (root included; the admin checks do not look at it): any
//! auth change makes clients authenticate again. A Range or a read-only Txn is refused too
//! when the JWT's revision is newer than the member's (etcd's `doSerialize` compares for
//! equality): a token from a member that applied an auth change this one has not. A simple
//! token has no revision of its own (etcd gives it the member's current one), so it is never
//! old.
//!
//! What is checked where, as etcd 3.4.23 does it (`etcdserver/apply_auth.go`,
//! `v3_server.go`, `api/v3rpc/{watch,maintenance}.go`):
//! - Range: READ on `[key, range_end)`; Put: WRITE on the key, READ too with `prev_kv`, and
//!   WRITE on every key already attached to its lease; DeleteRange: WRITE on the range, READ
//!   too with `prev_kv`; Txn: READ on every compare's range and every op of both branches
//!   as above. Ballast also checks the ops of nested txns, which etcd 3.4 skips (a hole later
//!   etcd releases closed): a nested txn can no longer reach keys the user may not.
//! - LeaseRevoke: WRITE on every key attached to the lease. LeaseGrant, Compact, Alarm,
//!   Status, MoveLeader, keep-alives and the Cluster service: no check, as in etcd 3.4.
//! - Defragment, Snapshot, Hash, HashKV: the root role (`admin`).
//! - Watch create: READ on its range, where a watch from a key (`range_end` `"\0"`) is
//!   checked as the single key, as etcd 3.4 checks it.
//! - Auth changes: the root role, checked where shard 0 applies them (`auth.rs` in
//!   consensus); UserList/RoleList the root role, UserGet/RoleGet also the user itself or a
//!   holder of the role.
//!
//! A request without a token while auth is enabled fails `etcdserver: user name is empty`;
//! a token that is malformed, unknown or lapsed fails `etcdserver: invalid auth token`
//! (also while auth is disabled, as etcd's token check runs first). etcd checks writes
//! where it applies them and compares the caller's auth revision; Ballast checks at the edge
//! against the node's copy, so a change applied between the check and the write is not
//! seen by that write (the same window etcd's serializable reads have).

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use ballast_consensus::auth::PermType;
use ballast_consensus::{AuthError, AuthState, NodeAuth, Request, Response};
use ballast_engine::{RequestOp, TxnRequest};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::jwt::{JwtTokens, TokenConfigError};
use crate::router::Router;
use crate::status;

/// Who sent a request: the user its token names (`None`: no token).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub user: Option<String>,
    /// The auth revision a JWT carries (`None`: a simple token or none, never old).
    pub auth_revision: Option<u64>,
}

impl Caller {
    /// The user name an auth log entry carries (empty: none).
    pub fn name(&self) -> String {
        self.user.clone().unwrap_or_default()
    }
}

/// Which tokens Authenticate hands out and requests carry (`--auth-token`).
#[derive(Clone, Debug, Default)]
pub enum Tokens {
    #[default]
    Simple,
    Jwt(Arc<JwtTokens>),
}

/// The auth settings and the node's auth state, shared by every service.
#[derive(Clone, Debug)]
pub struct AuthEdge {
    pub node: Arc<NodeAuth>,
    pub tokens: Tokens,
    /// `--bcrypt-cost` (etcd: 4 to 31; outside that, 10 with a warning).
    pub bcrypt_cost: u32,
    /// How long a token whose entry this node has not applied yet is waited for.
    pub token_wait: Duration,
}

impl Default for AuthEdge {
    fn default() -> Self {
        AuthEdge {
            node: Arc::default(),
            tokens: Tokens::Simple,
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            token_wait: Duration::from_secs(5),
        }
    }
}

/// Go's `bcrypt.DefaultCost`, etcd's default.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// etcd's `--bcrypt-cost`: a value outside bcrypt's 4..=31 falls back to 10, with a warning.
pub fn bcrypt_cost(flag: u32) -> u32 {
    if (4..=31).contains(&flag) {
        flag
    } else {
        tracing::warn!(
            given = flag,
            default = DEFAULT_BCRYPT_COST,
            "use default bcrypt cost instead of the invalid given cost"
        );
        DEFAULT_BCRYPT_COST
    }
}

/// `--auth-token`'s value as etcd splits it: the token type before the first comma, then
/// `name=value` options; an option without exactly one `=`, or named twice, is refused (for
/// `simple` too, which then ignores its options).
pub fn split_auth_token(value: &str) -> Result<(&str, BTreeMap<&str, &str>), TokenConfigError> {
    let mut parts = value.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut options = BTreeMap::new();
    for part in parts {
        let mut pair = part.split('=');
        let (Some(name), Some(option), None) = (pair.next(), pair.next(), pair.next()) else {
            return Err(TokenConfigError::invalid(format!(
                "{part:?} is not one name=value option"
            )));
        };
        if options.insert(name, option).is_some() {
            return Err(TokenConfigError::invalid(format!(
                "option {name:?} given twice"
            )));
        }
    }
    Ok((kind, options))
}

/// The tokens `--auth-token` configures (errors as etcd's, which refuses to start on them).
pub fn tokens_from_flag(value: &str) -> Result<Tokens, TokenConfigError> {
    let (kind, options) = split_auth_token(value)?;
    match kind {
        "simple" => Ok(Tokens::Simple),
        "jwt" => Ok(Tokens::Jwt(Arc::new(JwtTokens::from_options(&options)?))),
        // etcd 3.4 starts with an empty type, on tokens that never authenticate anyone.
        "" => Err(TokenConfigError::invalid(
            "an empty token type: Ballast builds simple and jwt",
        )),
        other => Err(TokenConfigError::invalid(format!(
            "unknown token type {other:?}: etcd 3.4 knows simple and jwt"
        ))),
    }
}

/// The auth edge from `--auth-token`, `--bcrypt-cost` and `--auth-token-ttl` (the simple
/// tokens' time to live; a JWT's is its `ttl` option).
pub fn edge_from_settings(
    auth_token: &str,
    flags: &crate::flags::Flags,
) -> anyhow::Result<AuthEdge> {
    let tokens = tokens_from_flag(auth_token)
        .map_err(|e| anyhow::anyhow!("--auth-token {auth_token:?}: {e}"))?;
    let node = Arc::new(NodeAuth::default());
    let ttl = if flags.auth_token_ttl == 0 {
        // etcd's simple tokens fall back to 300 s for a TTL of 0.
        300
    } else {
        flags.auth_token_ttl
    };
    node.set_token_ttl(Duration::from_secs(ttl));
    // With JWTs, applying an authentication registers no simple token.
    node.set_simple_tokens(matches!(tokens, Tokens::Simple));
    Ok(AuthEdge {
        node,
        tokens,
        bcrypt_cost: bcrypt_cost(flags.bcrypt_cost),
        token_wait: Duration::from_secs(5),
    })
}

/// Now, in Unix milliseconds (a JWT's clock).
pub fn unix_now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A JWT caller whose token is older than the auth state (module comment).
fn is_stale(view: &AuthState, caller: &Caller) -> bool {
    view.enabled && caller.auth_revision.is_some_and(|r| r < view.revision)
}

/// etcd's key check (`isOpPermitted`): a stale JWT first, then the permission.
fn check_key(
    view: &AuthState,
    caller: &Caller,
    key: &[u8],
    range_end: &[u8],
    perm: PermType,
) -> Result<(), Status> {
    if is_stale(view, caller) {
        return Err(status::auth(AuthError::AuthOldRevision));
    }
    view.check(caller.user.as_deref(), key, range_end, perm)
        .map_err(status::auth)
}

/// The token a request carries: gRPC metadata `token` (etcd's clients), else `authorization`
/// (the gateway's header, as etcd's gateway passes it on).
pub fn token_of(md: &MetadataMap) -> Option<String> {
    md.get("token")
        .or_else(|| md.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl AuthEdge {
    pub fn view(&self) -> Arc<AuthState> {
        self.node.view()
    }

    /// The caller a request's metadata names (module comment).
    pub async fn caller(&self, md: &MetadataMap) -> Result<Caller, Status> {
        self.caller_of_token(token_of(md).as_deref()).await
    }

    pub async fn caller_of_token(&self, token: Option<&str>) -> Result<Caller, Status> {
        self.identify(token).await.map_err(status::auth)
    }

    /// Who `token` names: a simple token is looked up in the node's table, a JWT verified.
    async fn identify(&self, token: Option<&str>) -> Result<Caller, AuthError> {
        match (&self.tokens, token) {
            (_, None) => Ok(Caller::default()),
            (Tokens::Simple, Some(t)) => {
                let user = self.node.token_user_of(Some(t), self.token_wait).await?;
                Ok(Caller {
                    user,
                    auth_revision: None,
                })
            }
            (Tokens::Jwt(jwt), Some(t)) => match jwt.verify(t, unix_now_ms()) {
                Some(claims) => Ok(Caller {
                    user: Some(claims.username),
                    auth_revision: Some(claims.revision),
                }),
                None => {
                    tracing::debug!("invalid JWT");
                    Err(AuthError::InvalidAuthToken)
                }
            },
        }
    }

    /// etcd's `IsAdminPermitted` for the caller.
    pub fn check_admin(&self, caller: &Caller) -> Result<(), Status> {
        self.view()
            .check_admin(caller.user.as_deref().unwrap_or(""))
            .map_err(status::auth)
    }

    /// etcd 3.4's maintenance server's admin check (Defragment, Snapshot, Hash, HashKV):
    /// its errors reach the client unconverted, with code Unknown.
    pub async fn check_maintenance_admin(&self, md: &MetadataMap) -> Result<(), Status> {
        let caller = self
            .identify(token_of(md).as_deref())
            .await
            .map_err(status::auth_unconverted)?;
        self.view()
            .check_admin(caller.user.as_deref().unwrap_or(""))
            .map_err(status::auth_unconverted)
    }

    /// READ on `[key, range_end)` (watch create, Range).
    pub fn check_read(&self, caller: &Caller, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        check_key(&self.view(), caller, key, range_end, PermType::READ)
    }

    /// What a Lock or Election call touches, checked before it starts (etcd runs them
    /// through its client library with the caller's token, so each of its KV requests is
    /// checked): READ on the participants' prefix `[prefix, prefix_end)` when given, WRITE
    /// (and READ: the txns compare it) on the caller's own key when given.
    pub fn check_concurrency(
        &self,
        caller: &Caller,
        prefix: Option<(&[u8], &[u8])>,
        own_key: Option<&[u8]>,
    ) -> Result<(), Status> {
        let view = self.view();
        if let Some(key) = own_key {
            check_key(&view, caller, key, b"", PermType::READ)?;
            check_key(&view, caller, key, b"", PermType::WRITE)?;
        }
        if let Some((prefix, end)) = prefix {
            check_key(&view, caller, prefix, end, PermType::READ)?;
        }
        Ok(())
    }

    /// The checks a KV or lease request needs (module comment); looks up the keys of a
    /// lease through `router` only when a non-root user names one while auth is enabled.
    pub async fn check_request(
        &self,
        router: &Router,
        caller: &Caller,
        request: &Request,
    ) -> Result<(), Status> {
        // etcd serves a Range or a read-only Txn where it took it (`doSerialize`): after the
        // permission check it also refuses a JWT whose revision is not the member's, newer
        // ones too, and whether auth is enabled or not. A token from a member that applied an
        // auth change this one has not yet: etcd's linearizable read first waits until this
        // member applied what was committed; so does this, bounded.
        let serialized = match request {
            Request::Range(_) => true,
            Request::Txn(t) => is_read_only(t),
            _ => false,
        };
        if let Some(r) = caller
            .auth_revision
            .filter(|&r| serialized && r > self.view().revision)
        {
            self.node.wait_auth_revision(r, self.token_wait).await;
        }
        let view = self.view();
        let serialized_check = || match caller.auth_revision {
            Some(r) if serialized && r != view.revision => {
                Err(status::auth(AuthError::AuthOldRevision))
            }
            _ => Ok(()),
        };
        if !view.enabled {
            return serialized_check();
        }
        let user = caller.user.as_deref();
        let check = |key: &[u8], end: &[u8], t: PermType| check_key(&view, caller, key, end, t);
        let mut leases = Vec::new();
        match request {
            Request::Range(r) => check(&r.key, &r.range_end, PermType::READ)?,
            Request::Put(p) => {
                check(&p.key, b"", PermType::WRITE)?;
                if p.lease != 0 {
                    leases.push(p.lease);
                }
                if p.prev_kv {
                    check(&p.key, b"", PermType::READ)?;
                }
            }
            Request::DeleteRange(d) => {
                check(&d.key, &d.range_end, PermType::WRITE)?;
                if d.prev_kv {
                    check(&d.key, &d.range_end, PermType::READ)?;
                }
            }
            Request::Txn(t) => check_txn(&check, t)?,
            Request::LeaseRevoke { id } => leases.push(*id),
            _ => {}
        }
        // The user's root role makes every key permitted: no lease lookup, unless its JWT is
        // stale, which etcd refuses for a lease with keys, root or not.
        let root = user.is_some_and(|u| view.users.get(u).is_some_and(|u| u.has_root_role()));
        if root && !is_stale(&view, caller) {
            return serialized_check();
        }
        for id in leases {
            for key in lease_keys(router, id).await? {
                check(&key, b"", PermType::WRITE)?;
            }
        }
        serialized_check()
    }
}

/// etcd's `isTxnReadonly`: every op of both branches is a Range.
fn is_read_only(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| matches!(op, RequestOp::Range(_)))
}

/// One permission check: READ or WRITE on `[key, range_end)`.
type Check<'a> = &'a dyn Fn(&[u8], &[u8], PermType) -> Result<(), Status>;

fn check_txn(check: Check<'_>, t: &TxnRequest) -> Result<(), Status> {
    for c in &t.compare {
        check(&c.key, &c.range_end, PermType::READ)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => check(&r.key, &r.range_end, PermType::READ)?,
            RequestOp::Put(p) => check(&p.key, b"", PermType::WRITE)?,
            RequestOp::DeleteRange(d) => {
                if d.prev_kv {
                    check(&d.key, &d.range_end, PermType::READ)?;
                }
                check(&d.key, &d.range_end, PermType::WRITE)?;
            }
            RequestOp::Txn(inner) => check_txn(check, inner)?,
        }
    }
    Ok(())
}

/// The keys attached to lease `id` (none when it does not exist).
async fn lease_keys(router: &Router, id: i64) -> Result<Vec<bytes::Bytes>, Status> {
    match router
        .call(Request::LeaseTimeToLive { id, keys: true })
        .await
    {
        Ok(reply) => match reply.response {
            Response::LeaseTimeToLive(t) => Ok(t.keys),
            _ => Err(status::unexpected_reply("LeaseTimeToLive")),
        },
        Err(e) if e.is_lease_not_found() => Ok(Vec::new()),
        Err(e) => Err(crate::context::route_error(e)),
    }
}

/// Whether `user` holds the role `role` (RoleGet by a non-root user).
pub fn has_role(view: &AuthState, user: Option<&str>, role: &str) -> bool {
    user.is_some_and(|u| view.has_role(u, role))
}
