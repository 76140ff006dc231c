//! etcd's auth store: users, roles, key permissions, the enabled flag and the auth revision,
//! and the node's simple tokens.
//!
//! Shard 0 holds the cluster's auth state, as it holds the alarm table (`alarms.rs`). Every
//! change, and every `Authenticate`, is a [`LogCommand::Auth`] entry in shard 0's log: every
//! replica applies the same changes in the same order, so every member has the same users and
//! roles and the same revision. The state is saved with each checkpoint of shard 0 (the
//! checkpoint facts, `durable.rs`) and carried by its snapshots (`snapshot.rs`).
//!
//! [`AuthState::apply`] is etcd 3.4's `authStore` applier: the same rules, the same errors
//! (checked against etcd 3.4.23), the revision raised by one for each change that changes
//! something. Passwords arrive already hashed (bcrypt, hashed once at the member that took
//! the request), so a log entry never carries a password and every replica stores the same
//! hash. The caller's user name travels in the entry too, so the admin check is made where
//! the change is applied, as etcd's applier makes it.
//!
//! A simple token (`--auth-token simple`) is `<16 letters>.<log index>`: the member that
//! checked the password picks the letters, the entry's index completes it, and every member
//! that applies the entry registers the token ([`NodeAuth`]), so a token taken at one member
//! is valid at every member once that member has applied the entry. Tokens are node-local
//! and not saved (as etcd's): each member expires them `--auth-token-ttl` after their last
//! use; a restart forgets them and clients authenticate again.
//! With `--auth-token jwt` the entry is still proposed and applied, but registers no token
//! (`NodeAuth::set_simple_tokens`): the member that took the request signs a JWT instead
//! (`ballast-net`), and the edge may wait for this member's auth revision to reach a JWT's
//! (`NodeAuth::wait_auth_revision`).
//!
//! Replays: each state carries the log index of the last auth entry applied to it; an entry
//! at or below it is skipped, so a snapshot whose table is newer than its log id (the
//! sender's last checkpoint) replays nothing twice.
//!
//! Invariants: users' roles are sorted and unique; a role's permissions are sorted by key
//! (stable, as etcd inserts them); the revision never decreases.
//!
//! [`LogCommand::Auth`]: crate::codec::LogCommand::Auth

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{BufMut, Bytes};

use crate::codec::{put_bool, put_bytes, put_len, DecodeError, Reader};

/// The user whose root role makes every operation permitted, and the role.
pub const ROOT: &str = "root";

/// etcd's `authpb.Permission.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PermType(pub i32);

impl PermType {
    pub const READ: PermType = PermType(0);
    pub const WRITE: PermType = PermType(1);
    pub const READWRITE: PermType = PermType(2);

    fn grants(self, wanted: PermType) -> bool {
        self == PermType::READWRITE || self == wanted
    }
}

/// A permission of a role: `key` alone (empty `range_end`), `[key, range_end)`, or every key
/// from `key` (`range_end` `"\0"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub perm_type: PermType,
    pub key: Bytes,
    pub range_end: Bytes,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    pub permissions: Vec<Permission>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// The bcrypt hash (empty for a user added without a password).
    pub password_hash: Bytes,
    /// Sorted, unique.
    pub roles: Vec<String>,
    /// Added with `options.no_password`: never authenticates with a password.
    pub no_password: bool,
}

impl User {
    pub fn has_root_role(&self) -> bool {
        self.roles
            .binary_search_by(|r| r.as_str().cmp(ROOT))
            .is_ok()
    }
}

/// One auth change or authentication, as shard 0's log carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthCommand {
    Enable,
    Disable,
    UserAdd {
        name: String,
        password_hash: Bytes,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: Bytes,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        name: String,
        permission: Permission,
    },
    RoleRevokePermission {
        name: String,
        key: Bytes,
        range_end: Bytes,
    },
    /// The password was checked by the member that took the request; applying it assigns
    /// the token `<prefix>.<index>`.
    Authenticate {
        name: String,
        token_prefix: String,
    },
}

/// etcd's auth errors (`rpctypes`), each with its gRPC code and message in `net`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
}

const ERRORS: [AuthError; 16] = [
    AuthError::RootUserNotExist,
    AuthError::RootRoleNotExist,
    AuthError::UserAlreadyExist,
    AuthError::UserEmpty,
    AuthError::UserNotFound,
    AuthError::RoleAlreadyExist,
    AuthError::RoleNotFound,
    AuthError::RoleEmpty,
    AuthError::AuthFailed,
    AuthError::PermissionDenied,
    AuthError::RoleNotGranted,
    AuthError::PermissionNotGranted,
    AuthError::AuthNotEnabled,
    AuthError::InvalidAuthToken,
    AuthError::InvalidAuthMgmt,
    AuthError::AuthOldRevision,
];

impl AuthError {
    /// The error's number on the wire (its place in [`ERRORS`]).
    pub fn code(self) -> u8 {
        ERRORS.iter().position(|e| *e == self).expect("listed") as u8
    }

    pub fn from_code(code: u8) -> Option<AuthError> {
        ERRORS.get(code as usize).copied()
    }
}

/// What applying an auth entry answers.
pub type AuthOutcome = Result<AuthAnswer, AuthError>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthAnswer {
    Done,
    /// `Authenticate`: the token assigned.
    Token(String),
}

/// The cluster's auth state (module comment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthState {
    pub enabled: bool,
    /// etcd's auth revision: 1 in a new store, raised by every change.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// Log index (1-based) of the last auth entry applied (0: none).
    pub last_index: u64,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            last_index: 0,
        }
    }
}

/// Which commands need the root role when auth is enabled (etcd's `needAdminPermission`).
fn needs_admin(cmd: &AuthCommand) -> bool {
    !matches!(cmd, AuthCommand::Authenticate { .. })
}

impl AuthState {
    /// etcd's `IsAdminPermitted` for the user `by` (empty: no user).
    pub fn check_admin(&self, by: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if by.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        match self.users.get(by) {
            None => Err(AuthError::UserNotFound),
            Some(u) if u.has_root_role() => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// Applies the entry at log index `index` from user `by`. An entry at or below the last
    /// one applied changes nothing (module comment) and answers `Done`.
    pub fn apply(&mut self, by: &str, cmd: &AuthCommand, index: u64) -> AuthOutcome {
        if index != 0 && index <= self.last_index {
            return Ok(AuthAnswer::Done);
        }
        if index != 0 {
            self.last_index = index;
        }
        if needs_admin(cmd) {
            self.check_admin(by)?;
        }
        let answer = self.apply_checked(cmd, index)?;
        Ok(answer)
    }

    fn bump(&mut self) -> AuthOutcome {
        self.revision += 1;
        Ok(AuthAnswer::Done)
    }

    fn apply_checked(&mut self, cmd: &AuthCommand, index: u64) -> AuthOutcome {
        match cmd {
            AuthCommand::Enable => {
                if self.enabled {
                    return Ok(AuthAnswer::Done);
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.has_root_role() {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                tracing::info!("enabled authentication");
                Ok(AuthAnswer::Done)
            }
            AuthCommand::Disable => {
                if !self.enabled {
                    return Ok(AuthAnswer::Done);
                }
                self.enabled = false;
                tracing::info!("disabled authentication");
                self.bump()
            }
            AuthCommand::UserAdd {
                name,
                password_hash,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(
                    name.clone(),
                    User {
                        password_hash: password_hash.clone(),
                        roles: Vec::new(),
                        no_password: *no_password,
                    },
                );
                self.bump()
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
                self.bump()
            }
            AuthCommand::UserChangePassword {
                name,
                password_hash,
            } => {
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                user.password_hash = password_hash.clone();
                self.bump()
            }
            AuthCommand::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(user).expect("checked above");
                match u.roles.binary_search(role) {
                    // etcd answers success and changes nothing.
                    Ok(_) => Ok(AuthAnswer::Done),
                    Err(at) => {
                        u.roles.insert(at, role.clone());
                        self.bump()
                    }
                }
            }
            AuthCommand::UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                let at = u
                    .roles
                    .binary_search(role)
                    .map_err(|_| AuthError::RoleNotGranted)?;
                u.roles.remove(at);
                self.bump()
            }
            AuthCommand::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
                self.bump()
            }
            AuthCommand::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                for u in self.users.values_mut() {
                    if let Ok(at) = u.roles.binary_search(name) {
                        u.roles.remove(at);
                    }
                }
                self.bump()
            }
            AuthCommand::RoleGrantPermission { name, permission } => {
                let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                // As etcd: the first permission whose key is not below the new one's is
                // updated in place when key and range end both match; otherwise the new one
                // is added and the list sorted again by key.
                let at = role.permissions.partition_point(|p| p.key < permission.key);
                match role.permissions.get_mut(at) {
                    Some(p) if p.key == permission.key && p.range_end == permission.range_end => {
                        p.perm_type = permission.perm_type;
                    }
                    _ => {
                        role.permissions.push(permission.clone());
                        role.permissions.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                self.bump()
            }
            AuthCommand::RoleRevokePermission {
                name,
                key,
                range_end,
            } => {
                let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                let before = role.permissions.len();
                role.permissions
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if role.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                self.bump()
            }
            AuthCommand::Authenticate { name, token_prefix } => {
                if !self.enabled {
                    return Err(AuthError::AuthNotEnabled);
                }
                match self.users.get(name) {
                    Some(u) if !u.no_password => {
                        Ok(AuthAnswer::Token(format!("{token_prefix}.{index}")))
                    }
                    _ => Err(AuthError::AuthFailed),
                }
            }
        }
    }

    /// `enabled:bool revision:u64 last_index:u64 n:u32 user[n] n:u32 role[n]`, LE;
    /// `user = name:bytes hash:bytes no_password:bool n:u32 role_name:bytes[n]`,
    /// `role = name:bytes n:u32 (type:i32 key:bytes range_end:bytes)[n]`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bool(out, self.enabled);
        out.put_u64_le(self.revision);
        out.put_u64_le(self.last_index);
        put_len(out, self.users.len());
        for (name, u) in &self.users {
            put_bytes(out, name.as_bytes());
            put_bytes(out, &u.password_hash);
            put_bool(out, u.no_password);
            put_len(out, u.roles.len());
            for r in &u.roles {
                put_bytes(out, r.as_bytes());
            }
        }
        put_len(out, self.roles.len());
        for (name, r) in &self.roles {
            put_bytes(out, name.as_bytes());
            put_len(out, r.permissions.len());
            for p in &r.permissions {
                out.put_i32_le(p.perm_type.0);
                put_bytes(out, &p.key);
                put_bytes(out, &p.range_end);
            }
        }
    }

    /// Decodes [`AuthState::encode`]'s bytes from the reader.
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<AuthState, DecodeError> {
        let enabled = r.bool()?;
        let revision = u64::from_le_bytes(r.array()?);
        let last_index = u64::from_le_bytes(r.array()?);
        let mut users = BTreeMap::new();
        for _ in 0..r.count()? {
            let name = string(r)?;
            let password_hash = r.bytes()?;
            let no_password = r.bool()?;
            let mut roles = Vec::new();
            for _ in 0..r.count()? {
                roles.push(string(r)?);
            }
            users.insert(
                name,
                User {
                    password_hash,
                    roles,
                    no_password,
                },
            );
        }
        let mut roles = BTreeMap::new();
        for _ in 0..r.count()? {
            let name = string(r)?;
            let mut permissions = Vec::new();
            for _ in 0..r.count()? {
                permissions.push(Permission {
                    perm_type: PermType(i32::from_le_bytes(r.array()?)),
                    key: r.bytes()?,
                    range_end: r.bytes()?,
                });
            }
            roles.insert(name, Role { permissions });
        }
        Ok(AuthState {
            enabled,
            revision,
            users,
            roles,
            last_index,
        })
    }

    /// Decodes a state from the start of `b`; answers it and the bytes it took.
    pub fn decode(b: &[u8]) -> Option<(AuthState, usize)> {
        let buf = Bytes::copy_from_slice(b);
        let mut r = Reader { buf: &buf, at: 0 };
        let state = AuthState::decode_from(&mut r).ok()?;
        Some((state, r.at))
    }

    /// Whether `user` may access `[key, range_end)` (etcd's reading of `range_end`) for
    /// `wanted` (READ or WRITE): etcd's `isOpPermitted`.
    pub fn check(
        &self,
        user: Option<&str>,
        key: &[u8],
        range_end: &[u8],
        wanted: PermType,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let name = match user {
            Some(n) if !n.is_empty() => n,
            _ => return Err(AuthError::UserEmpty),
        };
        let u = self.users.get(name).ok_or(AuthError::PermissionDenied)?;
        if u.has_root_role() {
            return Ok(());
        }
        let granted: Vec<&Permission> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.permissions.iter())
            .filter(|p| p.perm_type.grants(wanted))
            .collect();
        if permits(&granted, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.binary_search_by(|r| r.as_str().cmp(role)).is_ok())
    }
}

fn string(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let offset = r.at;
    let b = r.bytes()?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Tag {
        what: "utf-8 name",
        tag: 0,
        offset,
    })
}

/// A bound of an interval as etcd's `BytesAffineComparable` orders it: the empty byte string
/// is above every other (so an empty end means "no end").
fn affine_cmp(a: &[u8], b: &[u8]) -> CmpOrdering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => CmpOrdering::Equal,
        (true, false) => CmpOrdering::Greater,
        (false, true) => CmpOrdering::Less,
        (false, false) => a.cmp(b),
    }
}

/// A permission's interval `[begin, end)`: a single key `k` is `[k, k\0)`, a range end
/// `"\0"` is no end.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        (key.to_vec(), end)
    } else if range_end == [0] {
        (key.to_vec(), Vec::new())
    } else {
        (key.to_vec(), range_end.to_vec())
    }
}

fn intersects(a: &(Vec<u8>, Vec<u8>), b: &(Vec<u8>, Vec<u8>)) -> bool {
    affine_cmp(&a.0, &b.1) == CmpOrdering::Less && affine_cmp(&b.0, &a.1) == CmpOrdering::Less
}

/// etcd 3.4's range permission check over the granted permissions: a single key (empty
/// `range_end`) is permitted when any permission's interval holds it; a range when the
/// permissions that meet it, joined, cover it without a gap.
///
/// Worked example: grants `[a, c)` and `[c, e)` permit the range `[b, d)` (joined they cover
/// `[a, e)`), grants `[a, b)` and `[c, e)` do not (the gap `[b, c)`), and the grant "from
/// `a`" (`range_end` `"\0"`) permits `[x, "\0")`, every key from `x`.
pub fn permits(granted: &[&Permission], key: &[u8], range_end: &[u8]) -> bool {
    let want = interval(key, range_end);
    if range_end.is_empty() {
        return granted
            .iter()
            .any(|p| intersects(&interval(&p.key, &p.range_end), &want));
    }
    let mut meeting: Vec<(Vec<u8>, Vec<u8>)> = granted
        .iter()
        .map(|p| interval(&p.key, &p.range_end))
        .filter(|ivl| intersects(ivl, &want))
        .collect();
    meeting.sort_by(|a, b| affine_cmp(&a.0, &b.0));
    let Some(first) = meeting.first() else {
        return false;
    };
    let min_begin = first.0.clone();
    let mut max_end = first.1.clone();
    for ivl in &meeting[1..] {
        if affine_cmp(&max_end, &ivl.0) == CmpOrdering::Less {
            return false;
        }
        if affine_cmp(&ivl.1, &max_end) == CmpOrdering::Greater {
            max_end = ivl.1.clone();
        }
    }
    affine_cmp(&max_end, &want.1) != CmpOrdering::Less
        && affine_cmp(&min_begin, &want.0) != CmpOrdering::Greater
}

impl AuthCommand {
    /// `tag:u8 body` (module `codec`: the body of log tag 9 after the caller's name).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AuthCommand::Enable => out.put_u8(0),
            AuthCommand::Disable => out.put_u8(1),
            AuthCommand::UserAdd {
                name,
                password_hash,
                no_password,
            } => {
                out.put_u8(2);
                put_bytes(out, name.as_bytes());
                put_bytes(out, password_hash);
                put_bool(out, *no_password);
            }
            AuthCommand::UserDelete { name } => {
                out.put_u8(3);
                put_bytes(out, name.as_bytes());
            }
            AuthCommand::UserChangePassword {
                name,
                password_hash,
            } => {
                out.put_u8(4);
                put_bytes(out, name.as_bytes());
                put_bytes(out, password_hash);
            }
            AuthCommand::UserGrantRole { user, role } => {
                out.put_u8(5);
                put_bytes(out, user.as_bytes());
                put_bytes(out, role.as_bytes());
            }
            AuthCommand::UserRevokeRole { name, role } => {
                out.put_u8(6);
                put_bytes(out, name.as_bytes());
                put_bytes(out, role.as_bytes());
            }
            AuthCommand::RoleAdd { name } => {
                out.put_u8(7);
                put_bytes(out, name.as_bytes());
            }
            AuthCommand::RoleDelete { name } => {
                out.put_u8(8);
                put_bytes(out, name.as_bytes());
            }
            AuthCommand::RoleGrantPermission { name, permission } => {
                out.put_u8(9);
                put_bytes(out, name.as_bytes());
                out.put_i32_le(permission.perm_type.0);
                put_bytes(out, &permission.key);
                put_bytes(out, &permission.range_end);
            }
            AuthCommand::RoleRevokePermission {
                name,
                key,
                range_end,
            } => {
                out.put_u8(10);
                put_bytes(out, name.as_bytes());
                put_bytes(out, key);
                put_bytes(out, range_end);
            }
            AuthCommand::Authenticate { name, token_prefix } => {
                out.put_u8(11);
                put_bytes(out, name.as_bytes());
                put_bytes(out, token_prefix.as_bytes());
            }
        }
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<AuthCommand, DecodeError> {
        Ok(match r.tag("auth command", 11)? {
            0 => AuthCommand::Enable,
            1 => AuthCommand::Disable,
            2 => AuthCommand::UserAdd {
                name: string(r)?,
                password_hash: r.bytes()?,
                no_password: r.bool()?,
            },
            3 => AuthCommand::UserDelete { name: string(r)? },
            4 => AuthCommand::UserChangePassword {
                name: string(r)?,
                password_hash: r.bytes()?,
            },
            5 => AuthCommand::UserGrantRole {
                user: string(r)?,
                role: string(r)?,
            },
            6 => AuthCommand::UserRevokeRole {
                name: string(r)?,
                role: string(r)?,
            },
            7 => AuthCommand::RoleAdd { name: string(r)? },
            8 => AuthCommand::RoleDelete { name: string(r)? },
            9 => AuthCommand::RoleGrantPermission {
                name: string(r)?,
                permission: Permission {
                    perm_type: PermType(i32::from_le_bytes(r.array()?)),
                    key: r.bytes()?,
                    range_end: r.bytes()?,
                },
            },
            10 => AuthCommand::RoleRevokePermission {
                name: string(r)?,
                key: r.bytes()?,
                range_end: r.bytes()?,
            },
            _ => AuthCommand::Authenticate {
                name: string(r)?,
                token_prefix: string(r)?,
            },
        })
    }
}

/// `by:bytes command` (log tag 9 and wire request 18).
pub(crate) fn put_auth(out: &mut Vec<u8>, by: &str, cmd: &AuthCommand) {
    put_bytes(out, by.as_bytes());
    cmd.encode(out);
}

pub(crate) fn read_auth(r: &mut Reader<'_>) -> Result<(String, AuthCommand), DecodeError> {
    let by = string(r)?;
    Ok((by, AuthCommand::decode_from(r)?))
}

/// `0 option_token | 1 error:u8` (wire response 17).
pub(crate) fn put_outcome(out: &mut Vec<u8>, outcome: &AuthOutcome) {
    match outcome {
        Ok(AuthAnswer::Done) => {
            out.put_u8(0);
            out.put_u8(0);
        }
        Ok(AuthAnswer::Token(t)) => {
            out.put_u8(0);
            out.put_u8(1);
            put_bytes(out, t.as_bytes());
        }
        Err(e) => {
            out.put_u8(1);
            out.put_u8(e.code());
        }
    }
}

pub(crate) fn read_outcome(r: &mut Reader<'_>) -> Result<AuthOutcome, DecodeError> {
    Ok(match r.tag("auth outcome", 1)? {
        0 => match r.tag("auth answer", 1)? {
            0 => Ok(AuthAnswer::Done),
            _ => Ok(AuthAnswer::Token(string(r)?)),
        },
        _ => {
            let offset = r.at;
            let code = r.u8()?;
            Err(AuthError::from_code(code).ok_or(DecodeError::Tag {
                what: "auth error",
                tag: code,
                offset,
            })?)
        }
    })
}

/// A registered simple token: its user and when it lapses (ms since the node's epoch).
#[derive(Debug)]
struct Token {
    user: String,
    expires_ms: AtomicU64,
}

type TokenMap = HashMap<String, Arc<Token>>;

/// The auth state as this node's replica of shard 0 has applied it, and the node's simple
/// tokens (module comment). Written by shard 0's thread; read by any thread without a lock:
/// the state and the token map are behind [`ArcSwap`]s, replaced whole on each change (auth
/// changes and authentications are rare next to the requests that read them).
#[derive(Debug)]
pub struct NodeAuth {
    /// The authoritative copy, changed under the lock by shard 0's applies.
    state: Mutex<AuthState>,
    view: ArcSwap<AuthState>,
    tokens: ArcSwap<TokenMap>,
    /// Serializes writers of `tokens`.
    tokens_write: Mutex<()>,
    /// Log index of the last auth entry applied here (waits for a token's entry).
    applied: tokio::sync::watch::Sender<u64>,
    epoch: Instant,
    ttl_ms: AtomicU64,
    /// Whether applying an authentication registers its simple token (false when the
    /// member hands out JWTs instead, which need no table).
    simple_tokens: AtomicBool,
}

impl Default for NodeAuth {
    fn default() -> Self {
        NodeAuth {
            state: Mutex::default(),
            view: ArcSwap::from_pointee(AuthState::default()),
            tokens: ArcSwap::from_pointee(TokenMap::new()),
            tokens_write: Mutex::new(()),
            applied: tokio::sync::watch::channel(0).0,
            epoch: Instant::now(),
            ttl_ms: AtomicU64::new(300_000),
            simple_tokens: AtomicBool::new(true),
        }
    }
}

impl NodeAuth {
    /// Sets the simple tokens' time to live (`--auth-token-ttl`).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(ttl.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether applied authentications register simple tokens (`--auth-token simple`).
    pub fn set_simple_tokens(&self, on: bool) {
        self.simple_tokens.store(on, Ordering::Relaxed);
    }

    /// The state as last applied here (no lock).
    pub fn view(&self) -> Arc<AuthState> {
        self.view.load_full()
    }

    pub fn enabled(&self) -> bool {
        self.view.load().enabled
    }

    /// A copy of the authoritative state (checkpoints).
    pub fn state(&self) -> AuthState {
        self.lock().clone()
    }

    /// Replaces the state (opening a checkpoint, installing a snapshot); tokens stay only
    /// while auth stays enabled.
    pub fn replace(&self, state: AuthState) {
        let mut s = self.lock();
        *s = state;
        if !s.enabled {
            self.drop_tokens(|_| true);
        }
        self.view.store(Arc::new(s.clone()));
        let last = s.last_index;
        self.applied.send_modify(|a| *a = (*a).max(last));
    }

    /// Applies an auth entry (see [`AuthState::apply`]) and its effect on the tokens.
    pub fn apply(&self, by: &str, cmd: &AuthCommand, index: u64) -> AuthOutcome {
        let mut s = self.lock();
        let before = s.revision;
        let outcome = s.apply(by, cmd, index);
        match (&outcome, cmd) {
            (Ok(AuthAnswer::Token(token)), AuthCommand::Authenticate { name, .. })
                if self.simple_tokens.load(Ordering::Relaxed) =>
            {
                self.add_token(token, name);
            }
            (Ok(_), AuthCommand::Disable) => self.drop_tokens(|_| true),
            (Ok(_), AuthCommand::UserDelete { name })
            | (Ok(_), AuthCommand::UserChangePassword { name, .. }) => {
                self.drop_tokens(|user| user == name)
            }
            _ => {}
        }
        if s.revision != before || matches!(cmd, AuthCommand::Enable) {
            self.view.store(Arc::new(s.clone()));
        }
        drop(s);
        self.applied.send_modify(|a| *a = (*a).max(index));
        outcome
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn add_token(&self, token: &str, user: &str) {
        let _w = self.tokens_write.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now_ms();
        let mut map: TokenMap = (**self.tokens.load())
            .iter()
            .filter(|(_, t)| t.expires_ms.load(Ordering::Relaxed) > now)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        map.insert(
            token.to_owned(),
            Arc::new(Token {
                user: user.to_owned(),
                expires_ms: AtomicU64::new(now + self.ttl_ms.load(Ordering::Relaxed)),
            }),
        );
        self.tokens.store(Arc::new(map));
    }

    fn drop_tokens(&self, which: impl Fn(&str) -> bool) {
        let _w = self.tokens_write.lock().unwrap_or_else(|p| p.into_inner());
        let map: TokenMap = (**self.tokens.load())
            .iter()
            .filter(|(_, t)| !which(&t.user))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.tokens.store(Arc::new(map));
    }

    /// The user of a simple token, refreshing its time to live, as etcd's `info`: `None`
    /// for a token not in the form `<prefix>.<index>`, unknown or lapsed. A token whose
    /// entry this node has not applied yet is waited for, up to `wait`.
    pub async fn token_user(&self, token: &str, wait: Duration) -> Option<String> {
        let (_, index) = token.split_once('.').filter(|(_, i)| !i.contains('.'))?;
        let index: u64 = index.parse().ok()?;
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(wait, applied.wait_for(|a| *a >= index)).await;
        if !matches!(reached, Ok(Ok(_))) {
            return None;
        }
        let map = self.tokens.load();
        let t = map.get(token)?;
        let now = self.now_ms();
        if t.expires_ms.load(Ordering::Relaxed) <= now {
            return None;
        }
        t.expires_ms
            .store(now + self.ttl_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        Some(t.user.clone())
    }

    /// Waits, up to `wait`, until the auth state applied here reaches `revision` (a JWT from
    /// a member ahead of this one); answers whether it did.
    pub async fn wait_auth_revision(&self, revision: u64, wait: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(
            wait,
            applied.wait_for(|_| self.view.load().revision >= revision),
        )
        .await;
        matches!(reached, Ok(Ok(_)))
    }

    /// The user of a request's token (`None`: no token), or `InvalidAuthToken`.
    pub async fn token_user_of(
        &self,
        token: Option<&str>,
        wait: Duration,
    ) -> Result<Option<String>, AuthError> {
        match token {
            None => Ok(None),
            Some(t) => self
                .token_user(t, wait)
                .await
                .map(Some)
                .ok_or(AuthError::InvalidAuthToken),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // Every change is made on a copy-free struct in one call that either completes or
        // panics before publishing; a poisoned lock still holds a valid state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
