//! The auth edge: who sent a request (its simple token), and whether etcd 3.4 would let that
//! user run it, checked against this node's read-only copy of the auth state
//! (`ballast_consensus::auth::NodeAuth`, behind an `ArcSwap`: no lock on the data path).
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

use ballast_consensus::auth::PermType;
use ballast_consensus::{AuthState, NodeAuth, Request, Response};
use ballast_engine::{RequestOp, TxnRequest};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::router::Router;
use crate::status;

/// Who sent a request: the user its token names (`None`: no token).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub user: Option<String>,
}

impl Caller {
    /// The user name an auth log entry carries (empty: none).
    pub fn name(&self) -> String {
        self.user.clone().unwrap_or_default()
    }
}

/// The auth settings and the node's auth state, shared by every service.
#[derive(Clone, Debug)]
pub struct AuthEdge {
    pub node: Arc<NodeAuth>,
    /// `--bcrypt-cost` (etcd: 4 to 31; outside that, 10 with a warning).
    pub bcrypt_cost: u32,
    /// How long a token whose entry this node has not applied yet is waited for.
    pub token_wait: Duration,
}

impl Default for AuthEdge {
    fn default() -> Self {
        AuthEdge {
            node: Arc::default(),
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

/// The auth edge from `--auth-token`, `--bcrypt-cost` and `--auth-token-ttl`. Only
/// `simple` tokens are built: `jwt` (and any other type) stops the server with an error
/// rather than hand out tokens of another kind than the one configured.
pub fn edge_from_settings(
    auth_token: &str,
    flags: &crate::flags::Flags,
) -> anyhow::Result<AuthEdge> {
    let kind = auth_token.split(',').next().unwrap_or_default();
    match kind {
        "simple" => {}
        "jwt" => anyhow::bail!(
            "--auth-token jwt is not built in Ballast: only simple tokens are (--auth-token simple, etcd 3.4's default)"
        ),
        other => anyhow::bail!(
            "--auth-token {other:?}: unknown token type (etcd accepts simple and jwt; Ballast builds simple)"
        ),
    }
    let node = Arc::new(NodeAuth::default());
    let ttl = if flags.auth_token_ttl == 0 {
        // etcd's simple tokens fall back to 300 s for a TTL of 0.
        300
    } else {
        flags.auth_token_ttl
    };
    node.set_token_ttl(Duration::from_secs(ttl));
    Ok(AuthEdge {
        node,
        bcrypt_cost: bcrypt_cost(flags.bcrypt_cost),
        token_wait: Duration::from_secs(5),
    })
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
        let user = self
            .node
            .token_user_of(token, self.token_wait)
            .await
            .map_err(status::auth)?;
        Ok(Caller { user })
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
        let caller = match self
            .node
            .token_user_of(token_of(md).as_deref(), self.token_wait)
            .await
        {
            Ok(user) => Caller { user },
            Err(e) => return Err(status::auth_unconverted(e)),
        };
        self.view()
            .check_admin(caller.user.as_deref().unwrap_or(""))
            .map_err(status::auth_unconverted)
    }

    /// READ on `[key, range_end)` (watch create, Range).
    pub fn check_read(&self, caller: &Caller, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        self.view()
            .check(caller.user.as_deref(), key, range_end, PermType::READ)
            .map_err(status::auth)
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
        let user = caller.user.as_deref();
        if let Some(key) = own_key {
            view.check(user, key, b"", PermType::READ)
                .and_then(|()| view.check(user, key, b"", PermType::WRITE))
                .map_err(status::auth)?;
        }
        if let Some((prefix, end)) = prefix {
            view.check(user, prefix, end, PermType::READ)
                .map_err(status::auth)?;
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
        let view = self.view();
        if !view.enabled {
            return Ok(());
        }
        let user = caller.user.as_deref();
        let check = |key: &[u8], end: &[u8], t: PermType| {
            view.check(user, key, end, t).map_err(status::auth)
        };
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
        // The user's root role makes every key permitted: no lease lookup.
        let root = user.is_some_and(|u| view.users.get(u).is_some_and(|u| u.has_root_role()));
        if root {
            return Ok(());
        }
        for id in leases {
            for key in lease_keys(router, id).await? {
                check(&key, b"", PermType::WRITE)?;
            }
        }
        Ok(())
    }
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
