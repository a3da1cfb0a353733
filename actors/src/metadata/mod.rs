//! Cluster metadata: which cluster this is, its fixed shard count and replication
//! factor, the node registry and the placement table (shard → replicas, epoch).
//!
//! Every node keeps a copy (`node::cluster_state`), persisted in its data directory,
//! and routers follow the copy's placement table. Changes are decided in one place
//! and spread by revision: a copy with a higher `revision` replaces a lower one.
//! Until the metadata Raft group exists (TODO(#4)), the node that bootstrapped the
//! cluster (`authority`) decides joins and computes placement with the static policy
//! of [`placement`] (every shard on the first `replication_factor` nodes to join);
//! the structures here are what that group will replicate.
//!
//! The format is rmp-serde (on the wire) and JSON (on disk) with named fields and a
//! version marker.

pub mod placement;
pub mod ring;

use crate::ids::{NodeId, ShardId};
use crate::kv::NodeAddresses;
use serde::{Deserialize, Serialize};

/// Version of [`ClusterMetadata`] as encoded.
pub const METADATA_FORMAT_VERSION: u32 = 1;
/// Most nodes a cluster may register.
pub const NODES_MAX: usize = 1_024;
/// Default replication factor of a new cluster.
pub const REPLICATION_FACTOR_DEFAULT: u32 = 3;

/// Where a node is in its life in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Joining,
    Active,
    Draining,
    Dead,
    Removed,
}

impl NodeState {
    /// The name shown in cluster views.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Dead => "dead",
            NodeState::Removed => "removed",
        }
    }
}

/// One registered node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub addresses: NodeAddresses,
    pub state: NodeState,
    /// Chosen by the node when it first asked to join; a repeated join with the same
    /// incarnation is a retry, any other is refused (node ids are never reused).
    pub incarnation: u64,
}

/// Where one shard's replicas live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlacement {
    pub replicas: Vec<NodeId>,
    /// Grows by one each time `replicas` changes.
    pub epoch: u64,
}

/// The whole cluster description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub format_version: u32,
    /// Grows by one with every change; the higher revision wins.
    pub revision: u64,
    pub cluster_id: String,
    pub shard_count: u32,
    pub replication_factor: u32,
    /// The node that decides joins (the bootstrap node).
    pub authority: NodeId,
    /// Registered nodes, in the order they joined.
    pub nodes: Vec<NodeRecord>,
    /// One entry per shard, indexed by shard id.
    pub placement: Vec<ShardPlacement>,
}

/// Why a change to the metadata was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetadataError {
    #[error("node id {0} is already a member of this cluster; node ids are never reused, start the new node with another --node-id")]
    NodeIdTaken(NodeId),
    #[error("node id 0 is reserved")]
    ReservedNodeId,
    #[error("the cluster has {0} nodes, the most it may have")]
    TooManyNodes(usize),
    #[error("metadata is malformed: {0}")]
    Malformed(String),
}

impl ClusterMetadata {
    /// The metadata of a cluster that `node` has just created.
    pub fn bootstrap(
        cluster_id: String,
        shard_count: u32,
        replication_factor: u32,
        node: NodeRecord,
    ) -> ClusterMetadata {
        let mut metadata = ClusterMetadata {
            format_version: METADATA_FORMAT_VERSION,
            revision: 1,
            cluster_id,
            shard_count,
            replication_factor: replication_factor.max(1),
            authority: node.id,
            nodes: vec![node],
            placement: vec![ShardPlacement::default(); shard_count as usize],
        };
        placement::apply_static(&mut metadata);
        metadata
    }

    /// Checks what a peer sent before it replaces anything.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let malformed = |reason: String| Err(MetadataError::Malformed(reason));
        if self.format_version != METADATA_FORMAT_VERSION {
            return malformed(format!("format version {}", self.format_version));
        }
        if self.placement.len() != self.shard_count as usize {
            return malformed(format!(
                "{} placements for {} shards",
                self.placement.len(),
                self.shard_count
            ));
        }
        if self.nodes.len() > NODES_MAX {
            return Err(MetadataError::TooManyNodes(self.nodes.len()));
        }
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|node| node.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.nodes.len() || ids.first() == Some(&NodeId(0)) {
            return malformed("duplicate or reserved node ids".into());
        }
        for (shard, placement) in self.placement.iter().enumerate() {
            if placement
                .replicas
                .iter()
                .any(|replica| ids.binary_search(replica).is_err())
            {
                return malformed(format!("shard {shard} is placed on an unknown node"));
            }
        }
        Ok(())
    }

    /// The registered node with this id.
    pub fn node(&self, id: NodeId) -> Option<&NodeRecord> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The placement of one shard.
    pub fn shard(&self, shard: ShardId) -> Option<&ShardPlacement> {
        self.placement.get(shard.0 as usize)
    }

    /// Whether `node` is placed as a replica of `shard`.
    pub fn hosts(&self, node: NodeId, shard: ShardId) -> bool {
        self.shard(shard)
            .is_some_and(|placement| placement.replicas.contains(&node))
    }

    /// Registers a joining node as active and recomputes placement. Returns `false`
    /// when this exact join was already registered (a retry).
    pub fn register(&mut self, node: NodeRecord) -> Result<bool, MetadataError> {
        if node.id == NodeId(0) {
            return Err(MetadataError::ReservedNodeId);
        }
        if let Some(existing) = self.node(node.id) {
            if existing.incarnation == node.incarnation {
                return Ok(false);
            }
            return Err(MetadataError::NodeIdTaken(node.id));
        }
        if self.nodes.len() >= NODES_MAX {
            return Err(MetadataError::TooManyNodes(self.nodes.len()));
        }
        self.nodes.push(NodeRecord {
            state: NodeState::Active,
            ..node
        });
        placement::apply_static(self);
        self.revision += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, incarnation: u64) -> NodeRecord {
        NodeRecord {
            id: NodeId(id),
            addresses: NodeAddresses {
                http: format!("127.0.0.1:{}", 7000 + id),
                admin: String::new(),
                cluster: format!("127.0.0.1:{}", 8000 + id),
                gossip: String::new(),
            },
            state: NodeState::Active,
            incarnation,
        }
    }

    /// Proves joins grow the placement to three replicas, bump revision and epochs,
    /// accept a retried join, refuse a reused id, and that validation catches
    /// placements on unknown nodes.
    #[test]
    fn joins_grow_placement_and_refuse_reused_ids() {
        let mut metadata = ClusterMetadata::bootstrap("c".into(), 4, 3, record(1, 11));
        assert_eq!(metadata.placement[0].replicas, vec![NodeId(1)]);
        assert_eq!(metadata.placement[0].epoch, 1);
        assert!(metadata.register(record(2, 22)).unwrap());
        assert!(metadata.register(record(3, 33)).unwrap());
        assert!(metadata.register(record(4, 44)).unwrap());
        assert_eq!(metadata.revision, 4);
        for placement in &metadata.placement {
            assert_eq!(placement.replicas, vec![NodeId(1), NodeId(2), NodeId(3)]);
            assert_eq!(placement.epoch, 3, "epochs bump only on change");
        }
        assert!(!metadata.register(record(2, 22)).unwrap(), "retry");
        assert_eq!(
            metadata.register(record(2, 99)),
            Err(MetadataError::NodeIdTaken(NodeId(2)))
        );
        assert_eq!(metadata.revision, 4);
        metadata.validate().unwrap();
        let mut bad = metadata.clone();
        bad.placement[1].replicas.push(NodeId(9));
        assert!(bad.validate().is_err());
        let encoded = rmp_serde::to_vec_named(&metadata).unwrap();
        let decoded: ClusterMetadata = rmp_serde::from_slice(&encoded).unwrap();
        assert_eq!(decoded, metadata);
    }
}
