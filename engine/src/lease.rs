//! The lease table: granted TTL, expiry deadline and attached keys of every lease, as etcd's
//! lessor keeps them. The `Store` owns it because puts, deletes and revokes attach and detach
//! keys in the same step as the key change.
//!
//! Time is injected: every deadline is a monotonic instant in milliseconds supplied by the
//! caller. A lease is expired when `now_ms >= expiry_ms` (etcd: remaining time `<= 0`).
//!
//! Invariants: `by_expiry` holds exactly one `(expiry_ms, id)` per lease; a key is attached to
//! at most one lease, and it is attached to lease L exactly when its current version's `lease`
//! field is L.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::types::LeaseId;

/// etcd's `MaxLeaseTTL`: 9,000,000,000 seconds (about 285 years).
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;
/// etcd's minimum TTL with its default flags: ceil(1.5 × 1 s election timeout) = 2 s.
pub const DEFAULT_MIN_LEASE_TTL_SECS: i64 = 2;

/// The answer to `LeaseTimeToLive`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    pub id: LeaseId,
    /// Whole seconds left, truncated toward zero as etcd does (negative once expired but not
    /// yet revoked).
    pub ttl_remaining_secs: i64,
    pub granted_ttl: i64,
    /// Attached keys in ascending order (empty unless asked for).
    pub keys: Vec<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) ttl_secs: i64,
    pub(crate) expiry_ms: u64,
    pub(crate) keys: BTreeSet<Bytes>,
}

#[derive(Clone, Debug)]
pub(crate) struct Lessor {
    leases: BTreeMap<LeaseId, Lease>,
    by_expiry: BTreeSet<(u64, LeaseId)>,
    min_ttl_secs: i64,
    /// Counter behind generated ids: deterministic, so replicas applying the same grants pick
    /// the same ids.
    id_seq: u64,
    /// Leases granted or removed since the journal was last taken (`None`: not kept), for
    /// checkpoints. Deadlines are not journaled: they are leader-local.
    journal: Option<BTreeSet<LeaseId>>,
    /// `(lease, key)` attachments made or undone since the journal was last taken.
    attach_journal: BTreeSet<(LeaseId, Bytes)>,
}

fn deadline(now_ms: u64, ttl_secs: i64) -> u64 {
    now_ms.saturating_add((ttl_secs.max(0) as u64).saturating_mul(1000))
}

/// splitmix64: spreads a counter over the id space.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Default for Lessor {
    fn default() -> Lessor {
        Lessor {
            leases: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            min_ttl_secs: DEFAULT_MIN_LEASE_TTL_SECS,
            id_seq: 0,
            journal: None,
            attach_journal: BTreeSet::new(),
        }
    }
}

impl Lessor {
    pub(crate) fn set_min_ttl(&mut self, secs: i64) {
        self.min_ttl_secs = secs;
    }

    pub(crate) fn min_ttl(&self) -> i64 {
        self.min_ttl_secs
    }

    pub(crate) fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub(crate) fn exists(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// A fresh positive id, never 0 and not in use.
    fn generate_id(&mut self) -> LeaseId {
        loop {
            self.id_seq += 1;
            let id = (mix(self.id_seq) & (i64::MAX as u64)) as LeaseId;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn grant(
        &mut self,
        id: LeaseId,
        ttl_secs: i64,
        now_ms: u64,
    ) -> Result<(LeaseId, i64)> {
        if ttl_secs > MAX_LEASE_TTL_SECS {
            return Err(Error::LeaseTtlTooLarge { ttl: ttl_secs });
        }
        let id = if id == 0 { self.generate_id() } else { id };
        if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists { lease_id: id });
        }
        let ttl_secs = ttl_secs.max(self.min_ttl_secs);
        let expiry_ms = deadline(now_ms, ttl_secs);
        self.leases.insert(
            id,
            Lease {
                ttl_secs,
                expiry_ms,
                keys: BTreeSet::new(),
            },
        );
        self.by_expiry.insert((expiry_ms, id));
        if let Some(j) = &mut self.journal {
            j.insert(id);
        }
        Ok((id, ttl_secs))
    }

    /// Puts back a lease read from a checkpoint, with a fresh deadline (`now + ttl`, as etcd
    /// renews every lease when a member starts) and no keys yet.
    pub(crate) fn restore(&mut self, id: LeaseId, ttl_secs: i64, now_ms: u64) {
        let expiry_ms = deadline(now_ms, ttl_secs);
        let old = self.leases.insert(
            id,
            Lease {
                ttl_secs,
                expiry_ms,
                keys: BTreeSet::new(),
            },
        );
        assert!(old.is_none(), "lease {id} restored twice");
        self.by_expiry.insert((expiry_ms, id));
    }

    pub(crate) fn id_seq(&self) -> u64 {
        self.id_seq
    }

    pub(crate) fn set_id_seq(&mut self, seq: u64) {
        self.id_seq = seq;
    }

    pub(crate) fn keep_journal(&mut self) {
        self.journal.get_or_insert_with(BTreeSet::new);
    }

    /// Leases granted or removed, and attachments changed, since the last call.
    pub(crate) fn take_journal(&mut self) -> (BTreeSet<LeaseId>, BTreeSet<(LeaseId, Bytes)>) {
        match &mut self.journal {
            Some(j) => (std::mem::take(j), std::mem::take(&mut self.attach_journal)),
            None => (BTreeSet::new(), BTreeSet::new()),
        }
    }

    pub(crate) fn journal_len(&self) -> usize {
        self.journal.as_ref().map_or(0, BTreeSet::len) + self.attach_journal.len()
    }

    /// Journals every lease and attachment (the whole table is to be written).
    pub(crate) fn journal_everything(&mut self) {
        let j = self.journal.get_or_insert_with(BTreeSet::new);
        for (id, lease) in &self.leases {
            j.insert(*id);
            for k in &lease.keys {
                self.attach_journal.insert((*id, k.clone()));
            }
        }
    }

    fn note_attachment(&mut self, id: LeaseId, key: &Bytes) {
        if self.journal.is_some() {
            self.attach_journal.insert((id, key.clone()));
        }
    }

    /// Removes the lease and returns it (its keys are the caller's to delete).
    pub(crate) fn remove(&mut self, id: LeaseId) -> Result<Lease> {
        let lease = self
            .leases
            .remove(&id)
            .ok_or(Error::LeaseNotFound { lease_id: id })?;
        self.by_expiry.remove(&(lease.expiry_ms, id));
        if let Some(j) = &mut self.journal {
            j.insert(id);
        }
        Ok(lease)
    }

    /// Extends the lease to `now + ttl`. An expired lease is not renewed: etcd's renew waits
    /// for the pending revoke of an expired lease and then answers "lease not found".
    pub(crate) fn keep_alive(&mut self, id: LeaseId, now_ms: u64) -> Result<i64> {
        let lease = self
            .leases
            .get_mut(&id)
            .ok_or(Error::LeaseNotFound { lease_id: id })?;
        if now_ms >= lease.expiry_ms {
            return Err(Error::LeaseNotFound { lease_id: id });
        }
        self.by_expiry.remove(&(lease.expiry_ms, id));
        lease.expiry_ms = deadline(now_ms, lease.ttl_secs);
        self.by_expiry.insert((lease.expiry_ms, id));
        Ok(lease.ttl_secs)
    }

    /// Gives every lease a full TTL plus `extend_ms` from `now_ms` (etcd's lessor `Promote`,
    /// run when this node becomes leader so leases do not expire during the handover).
    pub(crate) fn refresh_all(&mut self, now_ms: u64, extend_ms: u64) {
        self.by_expiry.clear();
        for (id, lease) in self.leases.iter_mut() {
            lease.expiry_ms = deadline(now_ms, lease.ttl_secs).saturating_add(extend_ms);
            self.by_expiry.insert((lease.expiry_ms, *id));
        }
    }

    pub(crate) fn time_to_live(
        &self,
        id: LeaseId,
        with_keys: bool,
        now_ms: u64,
    ) -> Result<LeaseTimeToLive> {
        let lease = self
            .leases
            .get(&id)
            .ok_or(Error::LeaseNotFound { lease_id: id })?;
        let remaining_ms = lease.expiry_ms as i128 - now_ms as i128;
        Ok(LeaseTimeToLive {
            id,
            // i128 division truncates toward zero, like Go's int64(d.Seconds()).
            ttl_remaining_secs: (remaining_ms / 1000) as i64,
            granted_ttl: lease.ttl_secs,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    pub(crate) fn ids(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    /// Leases whose deadline has passed, soonest deadline first.
    pub(crate) fn expired(&self, now_ms: u64) -> Vec<LeaseId> {
        self.by_expiry
            .range(..=(now_ms, LeaseId::MAX))
            .map(|(_, id)| *id)
            .collect()
    }

    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    /// Attaches `key`; returns whether it was newly attached. No-op on an unknown lease.
    pub(crate) fn attach(&mut self, id: LeaseId, key: &Bytes) -> bool {
        let attached = self
            .leases
            .get_mut(&id)
            .is_some_and(|l| l.keys.insert(key.clone()));
        if attached {
            self.note_attachment(id, key);
        }
        attached
    }

    /// Detaches `key`; returns whether it was attached.
    pub(crate) fn detach(&mut self, id: LeaseId, key: &Bytes) -> bool {
        let detached = self.leases.get_mut(&id).is_some_and(|l| l.keys.remove(key));
        if detached {
            self.note_attachment(id, key);
        }
        detached
    }

    /// `(id, granted ttl)` of every lease in id order, for hashing.
    pub(crate) fn table(&self) -> impl Iterator<Item = (LeaseId, i64)> + '_ {
        self.leases.iter().map(|(id, l)| (*id, l.ttl_secs))
    }
}
