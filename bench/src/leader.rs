//! Finds a cluster's leader the way etcd's own benchmark tool does for `--target-leader`: ask
//! the members' `Maintenance.Status` who leads, and pick the member whose own id (the response
//! header's `member_id`) is that leader. For Ballast, Status's `leader` is shard 0's leader,
//! which is where every key outside `/registry/` lives (all of `put`'s keys).
//!
//! Invariants: a leader is reported only when every member answered, all name the same
//! non-zero leader, and exactly one of them has that id; anything else is a typed reason to
//! wait (an election under way, a member still starting) or to give up. No I/O happens in
//! [`leader_index`]; [`statuses`] does the asking, each call bounded by a timeout.

use std::time::Duration;

use ballast_proto::etcdserverpb::StatusRequest;

use crate::conn::{Endpoints, Pool};

/// One member's answer to Status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The answering member's id (`header.member_id`).
    pub member_id: u64,
    /// The leader it knows of (`leader`; 0 when it knows none).
    pub leader: u64,
}

/// Why no leader could be picked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderError {
    #[error("no members to ask")]
    NoMembers,
    #[error("member {member} did not answer Status")]
    Unanswered { member: usize },
    #[error("member {member} knows no leader")]
    NoLeader { member: usize },
    #[error(
        "members disagree on the leader: member 0 says {first:#x}, member {member} {other:#x}"
    )]
    Disagree {
        first: u64,
        member: usize,
        other: u64,
    },
    #[error("the leader {leader:#x} is not among the members asked")]
    NotAmong { leader: u64 },
    #[error("two members answer with the id {id:#x}")]
    DuplicateId { id: u64 },
}

/// The index (into `statuses`, the members in order) of the member that leads.
pub fn leader_index(statuses: &[Option<MemberStatus>]) -> Result<usize, LeaderError> {
    let mut answered = Vec::with_capacity(statuses.len());
    for (member, s) in statuses.iter().enumerate() {
        let s = s.ok_or(LeaderError::Unanswered { member })?;
        if s.leader == 0 {
            return Err(LeaderError::NoLeader { member });
        }
        answered.push(s);
    }
    let first = answered.first().ok_or(LeaderError::NoMembers)?.leader;
    for (member, s) in answered.iter().enumerate() {
        if s.leader != first {
            return Err(LeaderError::Disagree {
                first,
                member,
                other: s.leader,
            });
        }
        if answered[..member]
            .iter()
            .any(|o| o.member_id == s.member_id)
        {
            return Err(LeaderError::DuplicateId { id: s.member_id });
        }
    }
    answered
        .iter()
        .position(|s| s.member_id == first)
        .ok_or(LeaderError::NotAmong { leader: first })
}

/// Asks each endpoint's Status (one connection each, over TLS where the URL is `https://`,
/// `timeout` per call); `None` where it did not answer in time or answered with an error.
pub async fn statuses(endpoints: &Endpoints, timeout: Duration) -> Vec<Option<MemberStatus>> {
    let mut out = Vec::with_capacity(endpoints.urls.len());
    for i in 0..endpoints.urls.len() {
        out.push(status(&endpoints.one(i), timeout).await);
    }
    out
}

async fn status(endpoint: &Endpoints, timeout: Duration) -> Option<MemberStatus> {
    let ask = async {
        let pool = Pool::connect_to(endpoint, 1).await.ok()?;
        let reply = pool
            .maintenance(0)
            .status(StatusRequest {})
            .await
            .ok()?
            .into_inner();
        Some(MemberStatus {
            member_id: reply.header?.member_id,
            leader: reply.leader,
        })
    };
    tokio::time::timeout(timeout, ask).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(member_id: u64, leader: u64) -> Option<MemberStatus> {
        Some(MemberStatus { member_id, leader })
    }

    #[test]
    fn picks_the_member_whose_id_all_name() {
        assert_eq!(leader_index(&[s(10, 20), s(20, 20), s(30, 20)]), Ok(1));
        assert_eq!(
            leader_index(&[s(7, 7)]),
            Ok(0),
            "a single node leads itself"
        );
    }

    #[test]
    fn waits_out_an_election_and_a_member_still_starting() {
        assert_eq!(
            leader_index(&[s(10, 20), None, s(30, 20)]),
            Err(LeaderError::Unanswered { member: 1 })
        );
        assert_eq!(
            leader_index(&[s(10, 20), s(20, 20), s(30, 0)]),
            Err(LeaderError::NoLeader { member: 2 })
        );
        assert_eq!(
            leader_index(&[s(10, 20), s(20, 30), s(30, 30)]),
            Err(LeaderError::Disagree {
                first: 20,
                member: 1,
                other: 30
            }),
            "a member that has not heard of the new term yet"
        );
    }

    #[test]
    fn refuses_a_leader_outside_the_endpoints_and_duplicate_ids() {
        assert_eq!(
            leader_index(&[s(10, 99), s(20, 99)]),
            Err(LeaderError::NotAmong { leader: 99 }),
            "the user listed only followers"
        );
        assert_eq!(
            leader_index(&[s(10, 10), s(10, 10)]),
            Err(LeaderError::DuplicateId { id: 10 }),
            "the same member listed twice"
        );
        assert_eq!(leader_index(&[]), Err(LeaderError::NoMembers));
    }
}
