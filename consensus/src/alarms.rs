//! etcd's alarm table: which member raised which alarm (NOSPACE when its backend reached the
//! storage quota, CORRUPT, or any type a client activates through `Maintenance.Alarm`).
//!
//! Shard 0 holds the cluster's table (design.md §4). A change is a [`LogCommand::Alarm`]
//! entry in shard 0's log, so every replica applies the same changes in the same order and
//! every member sees the same table. The table is saved with each checkpoint of shard 0 (the
//! checkpoint facts, `durable.rs`) and carried by its snapshots (`snapshot.rs`).
//!
//! [`NodeAlarms`] is the table as this node's replica of shard 0 has applied it, shared by
//! the node's shards and its gRPC edge: the edge refuses writes while a NOSPACE alarm is
//! active (etcd's "capped" applier), reports the alarms in `Status.errors` and `/health`, and
//! raises NOSPACE for its own member when the backend would pass the quota.
//!
//! Activating and deactivating are idempotent set operations ("alarm `a` of member `m` is on
//! / off"). So a snapshot may carry a table a little newer than the snapshot's log id: the
//! entries replayed after it set each alarm they touch to what it was when they ran, and an
//! alarm no later entry touches had the same state at the snapshot's log id and at the table's.
//!
//! Invariants: the table is a set of `(alarm, member_id)` pairs, listed in that order;
//! activating a present pair or deactivating an absent one changes nothing.
//!
//! [`LogCommand::Alarm`]: crate::codec::LogCommand::Alarm

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::BufMut;

use crate::types::NodeId;

/// An alarm type, as etcd's `AlarmType` enum numbers them (any number is kept, as etcd keeps
/// a value its enum does not name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmType(pub i32);

impl AlarmType {
    /// In a request: every type (`Get`), or none named.
    pub const NONE: AlarmType = AlarmType(0);
    /// The member's backend reached the storage quota: writes that add data are refused.
    pub const NOSPACE: AlarmType = AlarmType(1);
    /// The member's data was found corrupt: every write is refused.
    pub const CORRUPT: AlarmType = AlarmType(2);
}

impl fmt::Display for AlarmType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AlarmType::NONE => f.write_str("NONE"),
            AlarmType::NOSPACE => f.write_str("NOSPACE"),
            AlarmType::CORRUPT => f.write_str("CORRUPT"),
            AlarmType(other) => write!(f, "{other}"),
        }
    }
}

/// One alarm of one member (etcd's `AlarmMember`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmMember {
    pub alarm: AlarmType,
    pub member_id: NodeId,
}

/// What a `Maintenance.Alarm` request asks (etcd's `AlarmRequest.AlarmAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmAction {
    /// List the alarms of the type named (every alarm for [`AlarmType::NONE`]); read-only.
    Get,
    Activate,
    Deactivate,
}

/// The alarms in force: a set of `(alarm, member)` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmTable {
    set: BTreeSet<AlarmMember>,
}

impl AlarmTable {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether any member has an alarm of type `alarm`.
    pub fn has(&self, alarm: AlarmType) -> bool {
        self.set.iter().any(|m| m.alarm == alarm)
    }

    /// The alarms of type `alarm`, or every alarm for [`AlarmType::NONE`].
    pub fn get(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        self.set
            .iter()
            .filter(|m| alarm == AlarmType::NONE || m.alarm == alarm)
            .copied()
            .collect()
    }

    /// Turns `m` on; answers the alarm, which is now in force (etcd answers it also when it
    /// was already).
    pub fn activate(&mut self, m: AlarmMember) -> AlarmMember {
        self.set.insert(m);
        m
    }

    /// Turns `m` off; answers it when it was on.
    pub fn deactivate(&mut self, m: AlarmMember) -> Option<AlarmMember> {
        self.set.remove(&m).then_some(m)
    }

    /// What applying a change answers: the alarm changed, as etcd's `AlarmResponse.alarms`
    /// lists it (an activated alarm always, a deactivated one only if it was on).
    pub fn apply(&mut self, action: AlarmAction, m: AlarmMember) -> Vec<AlarmMember> {
        match action {
            AlarmAction::Get => self.get(m.alarm),
            AlarmAction::Activate => {
                let first_of_type = !self.has(m.alarm);
                let on = self.activate(m);
                if first_of_type {
                    tracing::warn!(
                        member_id = format_args!("{:x}", m.member_id),
                        alarm = %m.alarm,
                        "alarm raised"
                    );
                }
                vec![on]
            }
            AlarmAction::Deactivate => {
                let off = self.deactivate(m);
                if off.is_some() && !self.has(m.alarm) {
                    tracing::info!(
                        member_id = format_args!("{:x}", m.member_id),
                        alarm = %m.alarm,
                        "alarm disarmed"
                    );
                }
                off.into_iter().collect()
            }
        }
    }

    /// `n:u32 (member_id:u64 alarm:i32)[n]`, little-endian, in the table's order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = u32::try_from(self.set.len()).expect("far fewer alarms than 2^32");
        out.put_u32_le(n);
        for m in &self.set {
            out.put_u64_le(m.member_id);
            out.put_i32_le(m.alarm.0);
        }
    }

    /// Decodes [`AlarmTable::encode`]'s bytes from the start of `b`; answers the table and the
    /// bytes it took, or `None` when `b` is short.
    pub fn decode(b: &[u8]) -> Option<(AlarmTable, usize)> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let len = n.checked_mul(ALARM_BYTES)?.checked_add(4)?;
        let body = b.get(4..len)?;
        let set = body
            .chunks_exact(ALARM_BYTES)
            .map(|c| AlarmMember {
                member_id: u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                alarm: AlarmType(i32::from_le_bytes(c[8..].try_into().expect("4 bytes"))),
            })
            .collect();
        Some((AlarmTable { set }, len))
    }
}

/// Bytes of one encoded alarm.
const ALARM_BYTES: usize = 12;

/// The cluster's alarms as this node's replica of shard 0 has applied them (module comment).
/// Written by shard 0's thread; read by any thread. The two flags let the write path check
/// for NOSPACE and CORRUPT without taking the lock.
#[derive(Debug, Default)]
pub struct NodeAlarms {
    table: Mutex<AlarmTable>,
    nospace: AtomicBool,
    corrupt: AtomicBool,
}

impl NodeAlarms {
    /// Whether any member has a NOSPACE alarm.
    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Acquire)
    }

    /// Whether any member has a CORRUPT alarm.
    pub fn corrupt(&self) -> bool {
        self.corrupt.load(Ordering::Acquire)
    }

    /// Whether `m` is in force.
    pub fn contains(&self, m: AlarmMember) -> bool {
        self.lock().set.contains(&m)
    }

    /// Every alarm in force, in the table's order.
    pub fn list(&self) -> Vec<AlarmMember> {
        self.lock().get(AlarmType::NONE)
    }

    /// A copy of the table.
    pub fn table(&self) -> AlarmTable {
        self.lock().clone()
    }

    /// Replaces the table (opening a checkpoint, installing a snapshot).
    pub fn replace(&self, table: AlarmTable) {
        let mut t = self.lock();
        *t = table;
        self.publish(&t);
    }

    /// Applies a change (see [`AlarmTable::apply`]).
    pub fn apply(&self, action: AlarmAction, m: AlarmMember) -> Vec<AlarmMember> {
        let mut t = self.lock();
        let answer = t.apply(action, m);
        self.publish(&t);
        answer
    }

    fn publish(&self, t: &AlarmTable) {
        self.nospace
            .store(t.has(AlarmType::NOSPACE), Ordering::Release);
        self.corrupt
            .store(t.has(AlarmType::CORRUPT), Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AlarmTable> {
        // A panic while holding the lock leaves a valid set (every change is one insert or
        // remove), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(member_id: u64, alarm: AlarmType) -> AlarmMember {
        AlarmMember { alarm, member_id }
    }

    #[test]
    fn activate_and_deactivate_answer_as_etcd() {
        let mut t = AlarmTable::default();
        assert_eq!(
            t.apply(AlarmAction::Activate, m(7, AlarmType::NOSPACE)),
            vec![m(7, AlarmType::NOSPACE)]
        );
        // Again: still answered, nothing changes.
        assert_eq!(
            t.apply(AlarmAction::Activate, m(7, AlarmType::NOSPACE)),
            vec![m(7, AlarmType::NOSPACE)]
        );
        t.apply(AlarmAction::Activate, m(3, AlarmType::CORRUPT));
        t.apply(AlarmAction::Activate, m(3, AlarmType::NOSPACE));
        assert_eq!(t.get(AlarmType::NONE).len(), 3);
        assert_eq!(
            t.get(AlarmType::NOSPACE),
            vec![m(3, AlarmType::NOSPACE), m(7, AlarmType::NOSPACE)]
        );
        // Deactivating an alarm that is not on answers nothing.
        assert!(t
            .apply(AlarmAction::Deactivate, m(9, AlarmType::NOSPACE))
            .is_empty());
        assert!(t
            .apply(AlarmAction::Deactivate, m(7, AlarmType::CORRUPT))
            .is_empty());
        assert_eq!(
            t.apply(AlarmAction::Deactivate, m(7, AlarmType::NOSPACE)),
            vec![m(7, AlarmType::NOSPACE)]
        );
        assert!(t.has(AlarmType::NOSPACE));
        t.apply(AlarmAction::Deactivate, m(3, AlarmType::NOSPACE));
        assert!(!t.has(AlarmType::NOSPACE));
        assert!(t.has(AlarmType::CORRUPT));
        // Get lists by type and changes nothing.
        assert_eq!(
            t.apply(AlarmAction::Get, m(0, AlarmType::NONE)),
            vec![m(3, AlarmType::CORRUPT)]
        );
        assert!(t
            .apply(AlarmAction::Get, m(0, AlarmType::NOSPACE))
            .is_empty());
    }

    #[test]
    fn table_round_trips_and_short_bytes_are_refused() {
        let mut t = AlarmTable::default();
        assert_eq!(AlarmTable::decode(&[0, 0, 0, 0]), Some((t.clone(), 4)));
        t.activate(m(u64::MAX, AlarmType::NOSPACE));
        t.activate(m(1, AlarmType(-5)));
        t.activate(m(2, AlarmType::CORRUPT));
        let mut bytes = Vec::new();
        t.encode(&mut bytes);
        assert_eq!(bytes.len(), 4 + 3 * ALARM_BYTES);
        bytes.extend_from_slice(b"rest");
        assert_eq!(AlarmTable::decode(&bytes), Some((t.clone(), 40)));
        for cut in 0..40 {
            assert_eq!(AlarmTable::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        // A count far past the bytes is refused without allocating for it.
        assert_eq!(AlarmTable::decode(&[0xff, 0xff, 0xff, 0xff, 1, 2]), None);
    }

    #[test]
    fn node_view_flags_follow_the_table() {
        let node = NodeAlarms::default();
        assert!(!node.nospace() && !node.corrupt());
        node.apply(AlarmAction::Activate, m(1, AlarmType::NOSPACE));
        assert!(node.nospace() && !node.corrupt());
        assert!(node.contains(m(1, AlarmType::NOSPACE)));
        let mut t = AlarmTable::default();
        t.activate(m(2, AlarmType::CORRUPT));
        node.replace(t.clone());
        assert!(!node.nospace() && node.corrupt());
        assert_eq!(node.table(), t);
        node.apply(AlarmAction::Deactivate, m(2, AlarmType::CORRUPT));
        assert!(node.list().is_empty() && !node.corrupt());
    }
}
