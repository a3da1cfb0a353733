//! The static placement policy used until the consistent-hash ring and the
//! rebalancer exist (TODO(#4)): every shard is placed on the first
//! `replication_factor` active nodes in join order. The bootstrap node therefore
//! holds every shard, and the second and third nodes to join are added to every
//! shard; later nodes hold none and serve through forwarding.
//!
//! The policy only writes the placement table; shard leaders move their groups to
//! it (`shard::membership`).

use super::{ClusterMetadata, NodeState};
use crate::ids::NodeId;

/// Recomputes every shard's replicas; a shard's epoch grows when they change.
pub fn apply_static(metadata: &mut ClusterMetadata) {
    let replicas: Vec<NodeId> = metadata
        .nodes
        .iter()
        .filter(|node| node.state == NodeState::Active)
        .map(|node| node.id)
        .take(metadata.replication_factor as usize)
        .collect();
    for placement in &mut metadata.placement {
        if placement.replicas != replicas {
            placement.replicas = replicas.clone();
            placement.epoch += 1;
        }
    }
}
