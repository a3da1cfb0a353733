//! The next configuration change a shard group's leader should propose to move its
//! members towards the placement table's replica set. Pure: the leader calls
//! [`next_change`] with what it knows and proposes at most the one change returned,
//! so the group moves one step at a time (add learner → catch up → promote, and
//! only then remove what is no longer placed here).
//!
//! Invariants: a node is promoted only once it is recently active and within
//! [`PROMOTE_LAG_ENTRIES_MAX`] of the leader's last index, so promotion never makes
//! the quorum wait for a replica still copying a snapshot; a voter is removed only
//! when every placed node is already a voter, and the leader never removes itself:
//! a leader that is no longer placed first hands leadership to a caught-up placed
//! voter, which then removes it.

use crate::ids::NodeId;

/// A learner this close to the leader's last index counts as caught up.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 64;

/// What the leader knows of one member's replication progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberProgress {
    pub matched: u64,
    pub recent_active: bool,
}

/// One configuration step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddLearner(NodeId),
    Promote(NodeId),
    Remove(NodeId),
    /// The leader is not placed: move leadership to this placed voter.
    TransferLeader(NodeId),
}

/// The group as its leader sees it.
#[derive(Clone, Debug)]
pub struct GroupView<'a> {
    pub leader: NodeId,
    pub voters: &'a [u64],
    pub learners: &'a [u64],
    /// The placement table's replicas for this shard (empty: no opinion).
    pub placed: &'a [NodeId],
    pub last_index: u64,
}

/// The one change to propose next, if any.
pub fn next_change(
    view: &GroupView<'_>,
    progress: impl Fn(NodeId) -> Option<MemberProgress>,
) -> Option<MembershipChange> {
    if view.placed.is_empty() {
        return None;
    }
    let is_voter = |node: NodeId| view.voters.contains(&node.0);
    let is_learner = |node: NodeId| view.learners.contains(&node.0);
    let mut placed = view.placed.to_vec();
    placed.sort_unstable();
    if let Some(missing) = placed
        .iter()
        .find(|node| !is_voter(**node) && !is_learner(**node))
    {
        return Some(MembershipChange::AddLearner(*missing));
    }
    let caught_up = |node: NodeId| {
        progress(node).is_some_and(|progress| {
            progress.recent_active && progress.matched + PROMOTE_LAG_ENTRIES_MAX >= view.last_index
        })
    };
    if let Some(ready) = placed
        .iter()
        .find(|node| is_learner(**node) && caught_up(**node))
    {
        return Some(MembershipChange::Promote(*ready));
    }
    let mut learners: Vec<u64> = view.learners.to_vec();
    learners.sort_unstable();
    if let Some(stray) = learners.iter().find(|id| !placed.contains(&NodeId(**id))) {
        return Some(MembershipChange::Remove(NodeId(*stray)));
    }
    if placed.iter().all(|node| is_voter(*node)) {
        let mut voters: Vec<u64> = view.voters.to_vec();
        voters.sort_unstable();
        if let Some(stray) = voters
            .iter()
            .find(|id| !placed.contains(&NodeId(**id)) && NodeId(**id) != view.leader)
        {
            return Some(MembershipChange::Remove(NodeId(*stray)));
        }
        if !placed.contains(&view.leader) {
            let successor = placed
                .iter()
                .filter_map(|node| {
                    let progress = progress(*node)?;
                    let ready = progress.recent_active
                        && progress.matched + PROMOTE_LAG_ENTRIES_MAX >= view.last_index;
                    ready.then_some((progress.matched, std::cmp::Reverse(*node)))
                })
                .max()
                .map(|(_, std::cmp::Reverse(node))| node);
            return successor.map(MembershipChange::TransferLeader);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(voters: &'a [u64], learners: &'a [u64], placed: &'a [NodeId]) -> GroupView<'a> {
        GroupView {
            leader: NodeId(1),
            voters,
            learners,
            placed,
            last_index: 1_000,
        }
    }

    fn caught_up(_: NodeId) -> Option<MemberProgress> {
        Some(MemberProgress {
            matched: 990,
            recent_active: true,
        })
    }

    fn behind(_: NodeId) -> Option<MemberProgress> {
        Some(MemberProgress {
            matched: 10,
            recent_active: true,
        })
    }

    /// Proves the sequence from one voter to three: learners first, in id order, then
    /// promotions only of caught-up learners.
    #[test]
    fn grows_one_step_at_a_time() {
        let placed = [NodeId(1), NodeId(3), NodeId(2)];
        assert_eq!(
            next_change(&view(&[1], &[], &placed), caught_up),
            Some(MembershipChange::AddLearner(NodeId(2)))
        );
        assert_eq!(
            next_change(&view(&[1], &[2], &placed), caught_up),
            Some(MembershipChange::AddLearner(NodeId(3)))
        );
        assert_eq!(next_change(&view(&[1], &[2, 3], &placed), behind), None);
        assert_eq!(
            next_change(&view(&[1], &[2, 3], &placed), caught_up),
            Some(MembershipChange::Promote(NodeId(2)))
        );
        assert_eq!(
            next_change(&view(&[1, 2, 3], &[], &placed), caught_up),
            None
        );
    }

    /// Proves an inactive learner is not promoted, strays are removed only once every
    /// placed node votes, and the leader never removes itself.
    #[test]
    fn removes_strays_safely() {
        let inactive = |_: NodeId| {
            Some(MemberProgress {
                matched: 1_000,
                recent_active: false,
            })
        };
        let placed = [NodeId(2), NodeId(3), NodeId(4)];
        assert_eq!(next_change(&view(&[2, 3], &[4], &placed), inactive), None);
        assert_eq!(
            next_change(&view(&[1, 2, 3], &[4, 9], &placed), behind),
            Some(MembershipChange::Remove(NodeId(9)))
        );
        assert_eq!(next_change(&view(&[1, 2, 3], &[4], &placed), behind), None);
        assert_eq!(
            next_change(&view(&[1, 2, 3, 4, 5], &[], &placed), behind),
            Some(MembershipChange::Remove(NodeId(5))),
            "node 1 leads and stays"
        );
        assert_eq!(next_change(&view(&[1], &[], &[]), caught_up), None);
    }

    /// Proves a leader that is no longer placed hands leadership to the most
    /// caught-up placed voter (lowest id among equals), only once every placed node
    /// votes and never to a replica that is behind or inactive.
    #[test]
    fn an_unplaced_leader_hands_over() {
        let placed = [NodeId(2), NodeId(3), NodeId(4)];
        assert_eq!(
            next_change(&view(&[1, 2, 3, 4], &[], &placed), caught_up),
            Some(MembershipChange::TransferLeader(NodeId(2)))
        );
        let ahead = |node: NodeId| {
            Some(MemberProgress {
                matched: if node == NodeId(4) { 1_000 } else { 990 },
                recent_active: true,
            })
        };
        assert_eq!(
            next_change(&view(&[1, 2, 3, 4], &[], &placed), ahead),
            Some(MembershipChange::TransferLeader(NodeId(4)))
        );
        assert_eq!(
            next_change(&view(&[1, 2, 3, 4], &[], &placed), behind),
            None
        );
        assert_eq!(
            next_change(&view(&[1, 2, 3], &[4], &placed), caught_up),
            Some(MembershipChange::Promote(NodeId(4))),
            "promotion comes first"
        );
    }
}
