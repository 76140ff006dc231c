//! Where each shard's leader should be, and moving it there (design.md §3: leaders spread
//! over the nodes, so each node's cores lead some shards).
//!
//! The rule: shard 0's leader is the *anchor*. It is wherever an election (or an operator's
//! `MoveLeader`) put it and is never moved automatically. Shard `i` prefers the voter `i`
//! places after the anchor in the voters sorted by id: with voters `[a, b, c]` and the anchor
//! `b`, shard 1 prefers `c`, shard 2 `a`, shard 3 `b`. So leaders spread as evenly as the
//! shard count allows, and moving shard 0's leader (etcd's `MoveLeader`, which names "the"
//! leader) moves the whole arrangement with it.
//!
//! Every node keeps its own [`Anchor`]: shard 0's replica on that node writes what it knows
//! of its leader and term; the node's other shards read it. The rule is applied only by a
//! shard's current leader, from its housekeeping ([`transfer_target`]), and only when moving
//! costs little: the preferred node is a voter, answered a heartbeat within an election
//! timeout and has nearly all of the log (so openraft's transfer, which makes the target
//! campaign at once, elects it in one round trip), the membership is not changing, this node
//! has led the shard for a while and has not tried a transfer lately. Nodes that briefly
//! disagree about the anchor cannot make leadership bounce faster than that pace.
//!
//! Invariants: the anchor is only advice (a stale value moves a leader somewhere suboptimal,
//! never breaks safety: a transfer is an ordinary Raft election); no lock is taken (two
//! atomics written by one thread).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::types::{NodeId, ShardId, ShardRaft};

/// Shard 0's leader and term as one node's replica of shard 0 last saw them (0: unknown).
/// Shared by the node's shards and its gRPC edge (the term goes in response headers).
#[derive(Debug, Default)]
pub struct Anchor {
    leader: AtomicU64,
    term: AtomicU64,
    /// The leader as etcd's "has leader" counts one ([`LiveLeader`]): its node id, 0 for none.
    live_leader: AtomicU64,
    /// Whether that live leader is this node's replica.
    leads: std::sync::atomic::AtomicBool,
    /// Whether shard 0's membership does not name this node a voter (a learner, or a member
    /// that has not received the membership naming it yet).
    learner: std::sync::atomic::AtomicBool,
    /// Set once shard 0 learned that this member was removed from the cluster.
    removed: std::sync::atomic::AtomicBool,
}

impl Anchor {
    pub fn leader(&self) -> Option<NodeId> {
        match self.leader.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// The Raft term of shard 0's group (etcd's `raft_term` in every response header).
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    /// Whether this member learned it was removed from the cluster (the server then stops,
    /// as etcd's does).
    pub fn removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    /// Whether shard 0's replica here has a live leader (etcd's `etcd_server_has_leader`, and
    /// what its `/health`, Status and require-leader requests check).
    pub fn has_leader(&self) -> bool {
        self.live_leader.load(Ordering::Relaxed) != 0
    }

    /// Whether shard 0's replica here is that live leader (etcd's `etcd_server_is_leader`).
    pub fn is_leader(&self) -> bool {
        self.has_leader() && self.leads.load(Ordering::Relaxed)
    }

    /// Whether this member is a learner, as shard 0's latest membership here says (or not yet
    /// a member it knows of: it then serves as a learner does).
    pub fn is_learner(&self) -> bool {
        self.learner.load(Ordering::Relaxed)
    }

    pub(crate) fn set_learner(&self, learner: bool) {
        self.learner.store(learner, Ordering::Relaxed);
    }

    /// The node id of the live leader, if there is one.
    pub fn live_leader(&self) -> Option<NodeId> {
        match self.live_leader.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub(crate) fn set_live(&self, live: Option<(NodeId, LiveLeader)>) {
        let (id, leads) = match live {
            None => (0, false),
            Some((id, kind)) => (id, kind == LiveLeader::Itself),
        };
        self.leads.store(leads, Ordering::Relaxed);
        self.live_leader.store(id, Ordering::Relaxed);
    }

    pub(crate) fn set(&self, leader: Option<NodeId>, term: u64) {
        self.leader.store(leader.unwrap_or(0), Ordering::Relaxed);
        self.term.store(term, Ordering::Relaxed);
    }
}

/// Whose leadership a replica counts as live (`Core::live_leader` in shard.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveLeader {
    /// This replica leads, and a quorum answered it lately.
    Itself,
    /// Another replica leads, and its appends arrive.
    Other,
}

/// The voter shard `shard` prefers as its leader, given the voters and the anchor (see the
/// module comment); `None` when the anchor is not a voter.
pub fn preferred_leader(voters: &[NodeId], anchor: NodeId, shard: ShardId) -> Option<NodeId> {
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let at = sorted.iter().position(|&v| v == anchor)?;
    Some(sorted[(at + shard.0 as usize) % sorted.len()])
}

/// Why a `MoveLeader` did not move the leadership (etcd's errors, same texts).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader hands leadership on.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// The target is not a voting member.
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    /// The target did not become the leader before the deadline.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TookTooLong,
    #[error("shard stopped")]
    Stopped,
}

/// A transfer is tried only when the target's log is at most this many entries behind.
pub const CAUGHT_UP_ENTRIES: u64 = 16;

/// What the pace of automatic transfers depends on.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub election_timeout: Duration,
    /// When this node last became the shard's leader.
    pub leader_since: Instant,
    /// When this node last asked for a transfer of this shard.
    pub last_transfer: Option<Instant>,
    /// This leader is making a membership change on the shard: a transfer would refuse the
    /// change's next step (adding a voter is two: learner, then voter), and the metrics show
    /// no joint config between the steps.
    pub changing_membership: bool,
}

impl Pace {
    /// A new leader settles for this long before handing leadership on.
    fn settle(&self) -> Duration {
        2 * self.election_timeout
    }

    /// At most one automatic transfer per shard this often.
    fn between_transfers(&self) -> Duration {
        5 * self.election_timeout
    }
}

/// The node this shard's leader should hand leadership to now, if any (see the module
/// comment for the conditions). `m` is this replica's metrics; `anchor` shard 0's leader.
pub fn transfer_target(
    m: &openraft::RaftMetrics<ShardRaft>,
    shard: ShardId,
    anchor: Option<NodeId>,
    pace: Pace,
    now: Instant,
) -> Option<NodeId> {
    if shard.0 == 0 || !m.state.is_leader() {
        return None;
    }
    if now.saturating_duration_since(pace.leader_since) < pace.settle() {
        return None;
    }
    if pace
        .last_transfer
        .is_some_and(|at| now.saturating_duration_since(at) < pace.between_transfers())
    {
        return None;
    }
    let membership = m.membership_config.membership();
    if pace.changing_membership || membership.get_joint_config().len() > 1 {
        return None;
    }
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let target = preferred_leader(&voters, anchor?, shard)?;
    if target == m.id {
        return None;
    }
    let last = m.last_log_index?;
    let matched = m
        .replication
        .as_ref()?
        .get(&target)?
        .as_ref()
        .map(|id| id.index)?;
    if matched + CAUGHT_UP_ENTRIES < last {
        return None;
    }
    let acked = m.heartbeat.as_ref()?.get(&target)?.as_ref()?;
    if now.saturating_duration_since(**acked) > pace.election_timeout {
        return None;
    }
    Some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_prefer_the_voters_after_the_anchor_in_turn() {
        let voters = [30, 10, 20];
        let pick = |anchor, shard| preferred_leader(&voters, anchor, ShardId(shard));
        assert_eq!(pick(20, 0), Some(20));
        assert_eq!(pick(20, 1), Some(30));
        assert_eq!(pick(20, 2), Some(10));
        assert_eq!(pick(20, 3), Some(20));
        assert_eq!(pick(30, 1), Some(10));
        // Two shards over three voters: never both on the anchor.
        for anchor in voters {
            assert_ne!(pick(anchor, 1), Some(anchor));
        }
        assert_eq!(
            pick(99, 1),
            None,
            "an anchor that is not a voter places nothing"
        );
        assert_eq!(preferred_leader(&[7], 7, ShardId(5)), Some(7));
    }

    /// Leader 1 of shard 1 over voters 1, 2, 3 with anchor 1: shard 1 prefers 2.
    fn leader_metrics(now: Instant) -> openraft::RaftMetrics<ShardRaft> {
        use std::collections::{BTreeMap, BTreeSet};
        let mut m = openraft::RaftMetrics::<ShardRaft>::new_initial(1);
        m.state = openraft::ServerState::Leader;
        m.last_log_index = Some(100);
        let nodes: BTreeMap<NodeId, openraft::impls::BasicNode> = (1..=3)
            .map(|id| (id, openraft::impls::BasicNode::new(format!("n{id}"))))
            .collect();
        let membership =
            openraft::Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).expect("valid");
        m.membership_config = std::sync::Arc::new(openraft::StoredMembership::new(
            Some(crate::log_store::log_id(1, 0)),
            membership,
        ));
        m.replication = Some(
            [(2, Some(crate::log_store::log_id(1, 95))), (3, None)]
                .into_iter()
                .collect(),
        );
        m.heartbeat = Some(
            [(2, Some(now.into())), (3, Some(now.into()))]
                .into_iter()
                .collect(),
        );
        m
    }

    #[test]
    fn a_settled_leader_hands_a_shard_to_a_live_caught_up_preferred_voter() {
        let now = Instant::now() + Duration::from_secs(100);
        let e = Duration::from_secs(1);
        let settled = Pace {
            election_timeout: e,
            leader_since: now - 3 * e,
            last_transfer: None,
            changing_membership: false,
        };
        let m = leader_metrics(now);
        let target = |m: &openraft::RaftMetrics<ShardRaft>, shard, anchor, pace| {
            transfer_target(m, ShardId(shard), anchor, pace, now)
        };
        assert_eq!(target(&m, 1, Some(1), settled), Some(2));
        // Shard 0 is the anchor itself; shard 3 already sits where it belongs (on 1).
        assert_eq!(target(&m, 0, Some(1), settled), None);
        assert_eq!(target(&m, 3, Some(1), settled), None);
        assert_eq!(target(&m, 1, None, settled), None, "no anchor known");
        // Shard 2 prefers 3, which has none of the log.
        assert_eq!(target(&m, 2, Some(1), settled), None);
        let fresh = Pace {
            leader_since: now - e,
            ..settled
        };
        assert_eq!(
            target(&m, 1, Some(1), fresh),
            None,
            "a new leader settles first"
        );
        let tried = Pace {
            last_transfer: Some(now - 2 * e),
            ..settled
        };
        assert_eq!(
            target(&m, 1, Some(1), tried),
            None,
            "one try per five timeouts"
        );
        let changing = Pace {
            changing_membership: true,
            ..settled
        };
        assert_eq!(
            target(&m, 1, Some(1), changing),
            None,
            "not while this leader changes the membership"
        );
        let mut behind = leader_metrics(now);
        behind.last_log_index = Some(95 + CAUGHT_UP_ENTRIES + 1);
        assert_eq!(target(&behind, 1, Some(1), settled), None, "target lags");
        let mut silent = leader_metrics(now);
        silent.heartbeat = Some([(2, Some((now - 2 * e).into()))].into_iter().collect());
        assert_eq!(target(&silent, 1, Some(1), settled), None, "target silent");
        let mut follower = leader_metrics(now);
        follower.state = openraft::ServerState::Follower;
        assert_eq!(target(&follower, 1, Some(1), settled), None);
    }

    #[test]
    fn the_anchor_keeps_what_shard_zero_last_saw() {
        let anchor = Anchor::default();
        assert_eq!((anchor.leader(), anchor.term()), (None, 0));
        anchor.set(Some(42), 3);
        assert_eq!((anchor.leader(), anchor.term()), (Some(42), 3));
        anchor.set(None, 4);
        assert_eq!((anchor.leader(), anchor.term()), (None, 4));
    }
}
