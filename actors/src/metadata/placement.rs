//! Placement decisions, pure: which nodes should hold each shard (the ring's
//! proposal over the nodes that may hold data) and the next step of the placement
//! table towards it (DESIGN §6).
//!
//! The table moves one replica of a shard at a time: a step either adds one node
//! (placed, the shard's leader adds it as a learner, it catches up, it is promoted)
//! or swaps one node for another (the new one is added first; the leader removes
//! the old one only once every placed node votes, and hands leadership over first if
//! it is the one leaving, `shard::membership`), or drops one node when the shard has
//! more replicas than the target. A shard takes its next step only once its group's
//! configuration matches its placement (it is *settled*), and at most `moves_max`
//! shards are unsettled at once. The metadata group (shard id `shard_count`) is
//! placed the same way, first, on three nodes (five once there are five).
//!
//! Invariants: a step never places a node that is not live; a step never leaves a
//! shard whose placed nodes are not a live majority; nodes that are draining, dead
//! or removed are never added; and a node that is merely suspected or briefly down
//! (not yet dead) stays where it is: only the `dead` state, decided after
//! `dead_after`, moves data away from a silent node.

use super::ring::{Ring, VIRTUAL_NODES_DEFAULT};
use super::{metadata_replicas, ClusterMetadata, NodeState, ShardPlacement};
use crate::ids::{NodeId, ShardId};
use std::collections::BTreeMap;

/// What the planner needs to know beyond the metadata.
pub struct PlanContext<'a> {
    /// Whether gossip counts the node as alive (or suspect): it can take a replica
    /// and counts towards a live majority.
    pub live: &'a dyn Fn(NodeId) -> bool,
    /// Whether the shard's group configuration equals its placement (no move of it
    /// is in progress).
    pub settled: &'a dyn Fn(ShardId) -> bool,
    /// Most shards with a move in progress at once.
    pub moves_max: usize,
}

/// The placement of a new cluster: every shard on the bootstrap node, epoch 1.
pub fn bootstrap(metadata: &mut ClusterMetadata, node: NodeId) {
    let first = ShardPlacement {
        replicas: vec![node],
        epoch: 1,
        settled_epoch: 1,
    };
    for placement in &mut metadata.placement {
        *placement = first.clone();
    }
    metadata.metadata_placement = first;
}

/// The nodes new replicas may go to: active ones.
pub fn candidates(metadata: &ClusterMetadata) -> Vec<NodeId> {
    metadata
        .nodes
        .iter()
        .filter(|node| node.state == NodeState::Active)
        .map(|node| node.id)
        .collect()
}

/// The ring's proposal: for every data shard, `min(replication factor,
/// candidates)` distinct active nodes, no node holding more than its share rounded
/// up; for the metadata group, [`metadata_replicas`] of them by pure consistent
/// hashing.
pub fn target(metadata: &ClusterMetadata) -> BTreeMap<ShardId, Vec<NodeId>> {
    let nodes = candidates(metadata);
    let count = (metadata.replication_factor as usize).min(nodes.len());
    let metadata_count = metadata_replicas(nodes.len());
    let ring = Ring::with_nodes(VIRTUAL_NODES_DEFAULT, nodes);
    let mut target = ring.propose(metadata.shard_count, count);
    let shard = metadata.metadata_shard();
    target.insert(shard, ring.replicas(shard, metadata_count));
    target
}

/// One shard's next placement towards `target`, if it should change and may now.
pub fn next_step(
    metadata: &ClusterMetadata,
    current: &[NodeId],
    target: &[NodeId],
    live: &dyn Fn(NodeId) -> bool,
) -> Option<Vec<NodeId>> {
    let missing: Vec<NodeId> = target
        .iter()
        .copied()
        .filter(|node| !current.contains(node))
        .collect();
    let extra: Vec<NodeId> = current
        .iter()
        .copied()
        .filter(|node| !target.contains(node))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut next = current.to_vec();
    if let Some(add) = missing.iter().copied().find(|node| live(*node)) {
        next.push(add);
    }
    if next.len() > target.len() {
        // Leave first what cannot serve: dead or silent nodes, then removed,
        // draining, then the rest, by id.
        let rank = |node: NodeId| {
            let state = metadata.node(node).map(|record| record.state);
            let state_rank = match state {
                Some(NodeState::Dead) | None => 0,
                Some(NodeState::Removed) => 1,
                Some(NodeState::Draining) => 2,
                Some(NodeState::Joining | NodeState::Active) => 3,
            };
            (live(node), state_rank, node)
        };
        let leaving = extra.iter().copied().min_by_key(|node| rank(*node))?;
        next.retain(|node| *node != leaving);
    }
    if next == current {
        return None;
    }
    let live_count = next.iter().filter(|node| live(**node)).count();
    if live_count < next.len() / 2 + 1 {
        return None;
    }
    Some(next)
}

/// Steps for as many shards as the bound allows, in shard order; returns the
/// shards moved. Settled shards also get their `settled_epoch` brought up to date
/// (replicas no longer placed may then be released by their nodes).
///
/// The metadata group goes first: its fault tolerance guards every other change.
pub fn plan(metadata: &mut ClusterMetadata, context: &PlanContext<'_>) -> Vec<ShardId> {
    let target = target(metadata);
    let metadata_shard = metadata.metadata_shard();
    let order: Vec<ShardId> = std::iter::once(metadata_shard)
        .chain((0..metadata.shard_count).map(ShardId))
        .collect();
    let mut unsettled = 0usize;
    for shard in &order {
        let settled = (context.settled)(*shard);
        if let Some(placement) = metadata.shard_mut(*shard) {
            if settled {
                placement.settled_epoch = placement.epoch;
            } else {
                unsettled += 1;
            }
        }
    }
    let mut moved = Vec::new();
    for shard in order {
        if unsettled >= context.moves_max {
            break;
        }
        if !(context.settled)(shard) {
            continue;
        }
        let (Some(wanted), Some(placement)) = (target.get(&shard), metadata.shard(shard)) else {
            continue;
        };
        let current = placement.replicas.clone();
        if let Some(next) = next_step(metadata, &current, wanted, context.live) {
            if let Some(placement) = metadata.shard_mut(shard) {
                placement.replicas = next;
                placement.epoch += 1;
            }
            unsettled += 1;
            moved.push(shard);
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::super::NodeRecord;
    use super::*;
    use crate::kv::NodeAddresses;
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    fn cluster(nodes: u64, shards: u32) -> ClusterMetadata {
        let record = |id: u64| NodeRecord {
            id: NodeId(id),
            addresses: NodeAddresses::default(),
            state: NodeState::Active,
            incarnation: id,
        };
        let mut metadata = ClusterMetadata::bootstrap("c".into(), shards, 3, record(1));
        for id in 2..=nodes {
            metadata.register(record(id)).unwrap();
        }
        metadata
    }

    /// Runs the planner until nothing moves, every step settling at once (as if
    /// every group followed its placement instantly); returns the rounds taken.
    fn settle(
        metadata: &mut ClusterMetadata,
        live: &dyn Fn(NodeId) -> bool,
        moves_max: usize,
    ) -> usize {
        let settled = |_: ShardId| true;
        for round in 0..10_000 {
            let context = PlanContext {
                live,
                settled: &settled,
                moves_max,
            };
            let moved = plan(metadata, &context);
            assert!(moved.len() <= moves_max);
            if moved.is_empty() {
                return round;
            }
        }
        panic!("the placement did not converge");
    }

    fn load(metadata: &ClusterMetadata) -> BTreeMap<NodeId, usize> {
        let mut load = BTreeMap::new();
        for placement in &metadata.placement {
            for node in &placement.replicas {
                *load.entry(*node).or_default() += 1;
            }
        }
        load
    }

    /// Proves growth from one node to five: shards reach three replicas, then spread
    /// so that no node holds more than its share rounded up, and every placement
    /// step changed one replica.
    #[test]
    fn joins_spread_replicas_one_step_at_a_time() {
        let mut metadata = cluster(3, 16);
        let live = |_: NodeId| true;
        settle(&mut metadata, &live, 4);
        for placement in &metadata.placement {
            let mut replicas = placement.replicas.clone();
            replicas.sort();
            assert_eq!(replicas, vec![NodeId(1), NodeId(2), NodeId(3)]);
            assert_eq!(placement.settled_epoch, placement.epoch);
        }
        for id in 4..=5 {
            metadata
                .register(NodeRecord {
                    id: NodeId(id),
                    addresses: NodeAddresses::default(),
                    state: NodeState::Active,
                    incarnation: id,
                })
                .unwrap();
        }
        let before = metadata.clone();
        settle(&mut metadata, &live, 4);
        let bound = (3 * 16usize).div_ceil(5);
        assert_eq!(
            metadata.metadata_placement.replicas.len(),
            5,
            "the metadata group grows to five"
        );
        let load = load(&metadata);
        assert_eq!(load.len(), 5, "every node holds replicas: {load:?}");
        assert!(load.values().all(|count| *count <= bound), "{load:?}");
        for (old, new) in before.placement.iter().zip(&metadata.placement) {
            assert_eq!(new.replicas.len(), 3);
            // Each epoch step swapped one node, so epochs grew by the nodes changed.
            let old_set: BTreeSet<_> = old.replicas.iter().collect();
            let changed = new
                .replicas
                .iter()
                .filter(|node| !old_set.contains(node))
                .count();
            assert_eq!(new.epoch - old.epoch, changed as u64);
        }
    }

    /// Proves a draining node ends with no replica, that a dead node's replicas
    /// move to live nodes, and that the bound on unsettled shards holds.
    #[test]
    fn drained_and_dead_nodes_are_emptied() {
        let mut metadata = cluster(5, 16);
        let live = |_: NodeId| true;
        settle(&mut metadata, &live, 3);
        metadata.nodes[1].state = NodeState::Draining;
        settle(&mut metadata, &live, 3);
        assert_eq!(load(&metadata).get(&NodeId(2)), None);
        assert!(!metadata.metadata_placement.replicas.contains(&NodeId(2)));
        assert_eq!(
            metadata.metadata_placement.replicas.len(),
            3,
            "four active nodes: three"
        );
        metadata.nodes[2].state = NodeState::Dead;
        let live = |node: NodeId| node != NodeId(3);
        settle(&mut metadata, &live, 3);
        let load = load(&metadata);
        assert_eq!(load.get(&NodeId(3)), None);
        assert!(metadata.placement.iter().all(|p| p.replicas.len() == 3));
        assert!(load.values().all(|count| *count <= 16));
    }

    /// Proves nothing is moved on suspicion alone (an active node that is not live
    /// keeps its replicas), no step places a node that is not live, and a step that
    /// would leave no live majority is not taken.
    #[test]
    fn silent_nodes_are_not_moved_and_majorities_stay_live() {
        let mut metadata = cluster(3, 8);
        let live = |_: NodeId| true;
        settle(&mut metadata, &live, 8);
        let before = metadata.clone();
        let silent = |node: NodeId| node != NodeId(2);
        settle(&mut metadata, &silent, 8);
        assert_eq!(metadata.placement, before.placement, "no move on suspicion");

        // Two of three replicas dead: replacing one would leave {live, dead, new}
        // only if the new node is live; with no live node to add nothing moves.
        metadata.nodes[1].state = NodeState::Dead;
        metadata.nodes[2].state = NodeState::Dead;
        let only_one = |node: NodeId| node == NodeId(1);
        settle(&mut metadata, &only_one, 8);
        assert_eq!(metadata.placement, before.placement);
    }

    proptest! {
        /// Proves, for random clusters and random liveness, that every step keeps
        /// distinct replicas, adds only live active nodes, changes at most one
        /// node in and one out, and keeps a live majority.
        #[test]
        fn every_step_is_safe(
            nodes in 1u64..8,
            shards in 1u32..24,
            dead in proptest::collection::btree_set(1u64..8, 0..3),
            draining in proptest::collection::btree_set(1u64..8, 0..2),
        ) {
            let mut metadata = cluster(nodes, shards);
            let all = |_: NodeId| true;
            settle(&mut metadata, &all, 4);
            for record in &mut metadata.nodes {
                if dead.contains(&record.id.0) {
                    record.state = NodeState::Dead;
                } else if draining.contains(&record.id.0) {
                    record.state = NodeState::Draining;
                }
            }
            let live = |node: NodeId| !dead.contains(&node.0);
            let steps = RefCell::new(0);
            for _ in 0..200 {
                let before = metadata.clone();
                let settled = |_: ShardId| true;
                let moved = plan(&mut metadata, &PlanContext { live: &live, settled: &settled, moves_max: 5 });
                if moved.is_empty() {
                    break;
                }
                *steps.borrow_mut() += 1;
                for shard in moved {
                    let old = &before.shard(shard).unwrap().replicas;
                    let new = &metadata.shard(shard).unwrap().replicas;
                    let distinct: BTreeSet<_> = new.iter().collect();
                    prop_assert_eq!(distinct.len(), new.len());
                    let added: Vec<_> = new.iter().filter(|n| !old.contains(n)).collect();
                    let removed: Vec<_> = old.iter().filter(|n| !new.contains(n)).collect();
                    prop_assert!(added.len() <= 1 && removed.len() <= 1);
                    for node in added {
                        prop_assert!(live(*node));
                        prop_assert_eq!(metadata.node(*node).map(|r| r.state), Some(NodeState::Active));
                    }
                    let live_count = new.iter().filter(|n| live(**n)).count();
                    prop_assert!(live_count > new.len() / 2);
                }
            }
        }
    }
}
