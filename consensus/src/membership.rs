//! Membership changes of a shard's Raft group, as etcd's Cluster API asks for them (member
//! add — as a voter or a learner —, remove, update of peer URLs, promotion of a learner), made
//! by the group's leader with openraft's membership changes; and the errors etcd answers with.
//!
//! Invariants:
//! - A change is checked against the leader's current membership first (unknown member, id or
//!   peer URL taken, promoting a voter, promoting a learner that lags) and refused with etcd's
//!   error without touching the log.
//! - Adding a voter first adds it as a learner, then makes it a voter: openraft only promotes
//!   known nodes. A voter added before it runs still leaves a quorum of the others (3 of 4).
//!   When the second step is refused after the first committed, what is left is
//!   [`MembershipChange::Vote`], which the caller takes to the next leader: the change as asked
//!   would be refused there, its member being known already.
//! - The answer is the membership once the change is committed.
//! - A change openraft refuses because the latest membership is not committed yet, as far as
//!   the leader knows, is asked again after a pause until its deadline: the refusal changed
//!   nothing, and the state passes (a new leader learns that its predecessor's last change
//!   committed only once its own first entry commits; another change may be running).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::impls::BasicNode;
use openraft::raft::ClientWriteResponse;
use openraft::ChangeMembers;

use crate::shard::{RaftMember, ShardError};
use crate::types::{NodeId, Raft, ShardRaft};

/// Learners a cluster may have at once (etcd's `--max-learners` default).
pub const LEARNERS_MAX: usize = 1;

/// A learner may be promoted once its log holds at least this share of the leader's (etcd's
/// readiness rule for promotion).
const PROMOTE_READY_SHARE: f64 = 0.9;

/// A change to the members of a shard's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new member reached at `addr` (its peer URL); a learner replicates without voting.
    Add {
        id: NodeId,
        addr: String,
        learner: bool,
    },
    Remove {
        id: NodeId,
    },
    /// New peer URL for a member.
    Update {
        id: NodeId,
        addr: String,
    },
    /// A learner becomes a voter.
    Promote {
        id: NodeId,
    },
    /// The second step of adding a voter: a member added as a learner by the first step starts
    /// voting, with no readiness check (it was asked for as a voter). Made only by replicas,
    /// for an `Add` refused between its steps; a member that votes already is left as it is.
    Vote {
        id: NodeId,
    },
}

/// A change that was not made, or not entirely: why, and what is left of it (the change
/// itself, or [`MembershipChange::Vote`] once a voter's first step is in).
#[derive(Debug)]
pub struct Unmade {
    pub error: ShardError,
    pub rest: MembershipChange,
}

/// Why a membership change was refused (etcd's errors, same texts).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("etcdserver: member not found")]
    NotFound,
    #[error("etcdserver: member ID already exist")]
    IdExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// openraft refused the change (e.g. another change is in progress).
    #[error("etcdserver: re-configuration failed: {0}")]
    Refused(String),
}

/// The members of `raft`'s group as its latest membership names them.
pub fn members(raft: &Raft) -> Vec<RaftMember> {
    members_of(&raft.metrics().borrow_watched())
}

/// The members a replica's metrics name (its latest membership).
pub fn members_of(m: &openraft::RaftMetrics<ShardRaft>) -> Vec<RaftMember> {
    let membership = m.membership_config.membership();
    let voters: HashSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| RaftMember {
            id: *id,
            addr: node.addr.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

/// Checks `change` against the current members; `Ok(false)` when it changes nothing (an
/// update to the URL a member has), `Ok(true)` when it must be made.
fn check(
    change: &MembershipChange,
    current: &[RaftMember],
    lag: impl Fn(NodeId) -> bool,
) -> Result<bool, MembershipError> {
    let find = |id: NodeId| current.iter().find(|m| m.id == id);
    let url_taken_by_other =
        |id: NodeId, addr: &str| current.iter().any(|m| m.id != id && m.addr == addr);
    match change {
        MembershipChange::Add { id, addr, learner } => {
            if url_taken_by_other(*id, addr) {
                return Err(MembershipError::PeerUrlExists);
            }
            match find(*id) {
                // Ids follow from peer URLs: the same member added again (a retry after a
                // partial failure is told apart by the router, which knows the shard).
                Some(m) if m.addr == *addr => Err(MembershipError::PeerUrlExists),
                Some(_) => Err(MembershipError::IdExists),
                None if *learner
                    && current.iter().filter(|m| m.is_learner).count() >= LEARNERS_MAX =>
                {
                    Err(MembershipError::TooManyLearners)
                }
                None => Ok(true),
            }
        }
        MembershipChange::Remove { id } => {
            find(*id).ok_or(MembershipError::NotFound)?;
            Ok(true)
        }
        MembershipChange::Update { id, addr } => {
            let m = find(*id).ok_or(MembershipError::NotFound)?;
            if url_taken_by_other(*id, addr) {
                return Err(MembershipError::PeerUrlExists);
            }
            Ok(m.addr != *addr)
        }
        MembershipChange::Promote { id } => {
            let m = find(*id).ok_or(MembershipError::NotFound)?;
            if !m.is_learner {
                return Err(MembershipError::NotLearner);
            }
            if lag(*id) {
                return Err(MembershipError::LearnerNotReady);
            }
            Ok(true)
        }
        MembershipChange::Vote { id } => Ok(find(*id).ok_or(MembershipError::NotFound)?.is_learner),
    }
}

fn refused(err: RaftError<ShardRaft, ClientWriteError<ShardRaft>>) -> ShardError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ShardError::NotLeader {
            leader_id: f.leader_id,
        },
        // Appended, then lost to another leader's log: it may still commit.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => ShardError::Timeout,
        RaftError::APIError(e) => ShardError::Membership(MembershipError::Refused(e.to_string())),
        RaftError::Fatal(_) => ShardError::Stopped,
    }
}

/// The pause before a change refused while another is in progress is asked again.
const IN_PROGRESS_PAUSE: Duration = Duration::from_millis(10);

type ChangeResult =
    Result<ClientWriteResponse<ShardRaft>, RaftError<ShardRaft, ClientWriteError<ShardRaft>>>;

/// Runs one openraft membership call, again after [`IN_PROGRESS_PAUSE`] while it is refused
/// because the latest membership is not committed yet, until `deadline` (then the refusal).
async fn when_committed<F, Fut>(deadline: Instant, mut call: F) -> ChangeResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ChangeResult>,
{
    loop {
        match call().await {
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if Instant::now() + IN_PROGRESS_PAUSE < deadline => {
                glommio::timer::sleep(IN_PROGRESS_PAUSE).await;
            }
            result => return result,
        }
    }
}

/// Makes `change` at the leader `raft` and returns the members once it is committed; a change
/// refused while another is in progress is asked again until `deadline`. A refused change
/// comes back with what is left of it.
pub async fn change(
    raft: &Raft,
    change: MembershipChange,
    deadline: Instant,
) -> Result<Vec<RaftMember>, Unmade> {
    let current = members(raft);
    let lag = |id: NodeId| {
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        let last = m.last_log_index.unwrap_or(0) as f64;
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0.0, |log_id| log_id.index as f64);
        matched < last * PROMOTE_READY_SHARE
    };
    let unmade = |rest: &MembershipChange| {
        let rest = rest.clone();
        move |error| Unmade { error, rest }
    };
    match check(&change, &current, lag) {
        Ok(true) => {}
        Ok(false) => return Ok(current),
        Err(e) => return Err(unmade(&change)(ShardError::Membership(e))),
    }
    let voter = |id: NodeId| {
        move || raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
    };
    match change {
        MembershipChange::Add {
            id,
            ref addr,
            learner,
        } => {
            let node = BasicNode { addr: addr.clone() };
            when_committed(deadline, || raft.add_learner(id, node.clone(), false))
                .await
                .map_err(|e| unmade(&change)(refused(e)))?;
            let lone = current.iter().filter(|m| !m.is_learner).count() == 1;
            if !learner && lone {
                // etcd commits an addition with the quorum of the membership before it: a lone
                // voter's own, so its MemberAdd answers at once and the new member is started
                // afterwards (kubeadm's order). openraft's joint change needs the new voter's
                // acknowledgement as well, which only comes once it runs: answer when the
                // change is in the log (the membership names the new voter), and let it
                // complete meanwhile. Until the new member runs, writes wait, as etcd's do
                // without a quorum.
                let adding = raft.clone();
                glommio::spawn_local(async move {
                    let added = adding
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await;
                    if let Err(e) = added {
                        tracing::warn!(member = %format_args!("{id:x}"), error = %e,
                            "making an added member a voter");
                    }
                })
                .detach();
                let named = raft
                    .wait(Some(deadline.saturating_duration_since(Instant::now())))
                    .metrics(
                        move |m| members_of(m).iter().any(|m| m.id == id && !m.is_learner),
                        "the membership names the added voter",
                    )
                    .await;
                if named.is_err() {
                    return Err(unmade(&MembershipChange::Vote { id })(ShardError::Timeout));
                }
            } else if !learner {
                when_committed(deadline, voter(id))
                    .await
                    .map_err(|e| unmade(&MembershipChange::Vote { id })(refused(e)))?;
            }
        }
        MembershipChange::Remove { id } => {
            let is_learner = current.iter().any(|m| m.id == id && m.is_learner);
            let ids = BTreeSet::from([id]);
            let members = if is_learner {
                ChangeMembers::RemoveNodes(ids)
            } else {
                ChangeMembers::RemoveVoters(ids)
            };
            when_committed(deadline, || raft.change_membership(members.clone(), false))
                .await
                .map_err(|e| unmade(&change)(refused(e)))?;
        }
        MembershipChange::Update { id, ref addr } => {
            let nodes = BTreeMap::from([(id, BasicNode { addr: addr.clone() })]);
            when_committed(deadline, || {
                raft.change_membership(ChangeMembers::SetNodes(nodes.clone()), true)
            })
            .await
            .map_err(|e| unmade(&change)(refused(e)))?;
        }
        MembershipChange::Promote { id } | MembershipChange::Vote { id } => {
            when_committed(deadline, voter(id))
                .await
                .map_err(|e| unmade(&change)(refused(e)))?;
        }
    }
    Ok(members(raft))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, addr: &str, is_learner: bool) -> RaftMember {
        RaftMember {
            id,
            addr: addr.to_owned(),
            is_learner,
        }
    }

    #[test]
    fn changes_are_checked_as_etcd_checks_them() {
        let current = vec![
            member(1, "http://a:1", false),
            member(2, "http://b:1", false),
            member(3, "http://c:1", true),
        ];
        let in_sync = |_| false;
        let add = |id, addr: &str, learner| MembershipChange::Add {
            id,
            addr: addr.to_owned(),
            learner,
        };
        assert_eq!(
            check(&add(4, "http://d:1", false), &current, in_sync),
            Ok(true)
        );
        // One learner (3) already: etcd allows one at a time.
        assert_eq!(
            check(&add(4, "http://d:1", true), &current, in_sync),
            Err(MembershipError::TooManyLearners)
        );
        assert_eq!(
            check(&add(4, "http://a:1", false), &current, in_sync),
            Err(MembershipError::PeerUrlExists)
        );
        assert_eq!(
            check(&add(2, "http://x:1", false), &current, in_sync),
            Err(MembershipError::IdExists)
        );
        // The same member again: its URL exists (as etcd answers).
        assert_eq!(
            check(&add(3, "http://c:1", true), &current, in_sync),
            Err(MembershipError::PeerUrlExists)
        );
        assert_eq!(
            check(&MembershipChange::Remove { id: 9 }, &current, in_sync),
            Err(MembershipError::NotFound)
        );
        assert_eq!(
            check(&MembershipChange::Remove { id: 3 }, &current, in_sync),
            Ok(true)
        );
        let update = |id, addr: &str| MembershipChange::Update {
            id,
            addr: addr.to_owned(),
        };
        assert_eq!(
            check(&update(1, "http://b:1"), &current, in_sync),
            Err(MembershipError::PeerUrlExists)
        );
        assert_eq!(
            check(&update(1, "http://a:1"), &current, in_sync),
            Ok(false)
        );
        assert_eq!(check(&update(1, "http://a:2"), &current, in_sync), Ok(true));
        assert_eq!(
            check(&MembershipChange::Promote { id: 1 }, &current, in_sync),
            Err(MembershipError::NotLearner)
        );
        assert_eq!(
            check(&MembershipChange::Promote { id: 3 }, &current, |_| true),
            Err(MembershipError::LearnerNotReady)
        );
        assert_eq!(
            check(&MembershipChange::Promote { id: 3 }, &current, in_sync),
            Ok(true)
        );
        assert_eq!(
            check(&MembershipChange::Promote { id: 7 }, &current, in_sync),
            Err(MembershipError::NotFound)
        );
        // A voter's second step: a lagging learner votes (it was asked for as a voter), a
        // voter is left as it is, an unknown member is not made up.
        let vote = |id| MembershipChange::Vote { id };
        assert_eq!(check(&vote(3), &current, |_| true), Ok(true));
        assert_eq!(check(&vote(1), &current, in_sync), Ok(false));
        assert_eq!(
            check(&vote(7), &current, in_sync),
            Err(MembershipError::NotFound)
        );
    }
}
