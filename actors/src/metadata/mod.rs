//! Cluster metadata: which cluster this is, its fixed shard count and replication
//! factor, the node registry and the placement table (shard → replicas, epoch).
//!
//! The metadata is the state of the **metadata group**: one more Raft group, the
//! shard numbered `shard_count` (after the data shards), placed on up to three
//! nodes (five once the cluster has five), whose only key holds this structure.
//! Its leader decides joins, node states and placement (the rebalancer,
//! `node::rebalancer`, with the decisions of [`placement`] over the consistent-hash
//! [`ring`]) by compare-and-set writes of that key (`router::metadata`). Every node
//! keeps a copy (`node::cluster_state`), persisted in its data directory, and
//! routers follow the copy's placement table; the copies spread by revision: a copy
//! with a higher `revision` replaces a lower one.
//!
//! The format is rmp-serde (on the wire) and JSON (on disk) with named fields and a
//! version marker.

pub mod placement;
pub mod ring;

use crate::docs::collection::{CollectionDefinition, COLLECTIONS_MAX};
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
    /// The latest epoch the shard's group configuration was seen to match: when it
    /// equals `epoch`, no move is in progress, and a node that still runs a replica
    /// of the shard but is no longer placed may release it.
    #[serde(default)]
    pub settled_epoch: u64,
}

impl ShardPlacement {
    /// Whether `node` was moved off the shard and the move completed.
    pub fn released(&self, node: NodeId) -> bool {
        !self.replicas.contains(&node) && self.settled_epoch >= self.epoch
    }
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
    /// The node that bootstrapped the cluster (the metadata group's first member).
    pub authority: NodeId,
    /// Registered nodes, in the order they joined.
    pub nodes: Vec<NodeRecord>,
    /// One entry per shard, indexed by shard id.
    pub placement: Vec<ShardPlacement>,
    /// Where the metadata group's replicas live (the group of shard id
    /// `shard_count`). Empty in copies written before the group existed: read as
    /// the bootstrap node alone (`upgrade`).
    #[serde(default)]
    pub metadata_placement: ShardPlacement,
    /// Declared collections and their indexed fields, by name. Absent in copies
    /// written before collections existed.
    #[serde(default)]
    pub collections: Vec<CollectionDefinition>,
}

/// Replicas of the metadata group: three, or five once the cluster has five
/// active nodes (never more than there are).
pub fn metadata_replicas(active_nodes: usize) -> usize {
    if active_nodes >= 5 {
        5
    } else {
        active_nodes.min(3)
    }
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
    #[error("node {0} is not a member of this cluster")]
    UnknownNode(NodeId),
    #[error("node {node} is {state}: {reason}")]
    Refused {
        node: NodeId,
        state: String,
        reason: String,
    },
}

/// What an operator asks of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAction {
    /// Move every replica off the node; it stays a member and keeps serving.
    Drain,
    /// The node is gone for good: never place anything on it again.
    Remove,
}

impl ClusterMetadata {
    /// The metadata of a cluster that `node` has just created.
    pub fn bootstrap(
        cluster_id: String,
        shard_count: u32,
        replication_factor: u32,
        node: NodeRecord,
    ) -> ClusterMetadata {
        let node_id = node.id;
        let mut metadata = ClusterMetadata {
            format_version: METADATA_FORMAT_VERSION,
            revision: 1,
            cluster_id,
            shard_count,
            replication_factor: replication_factor.max(1),
            authority: node.id,
            nodes: vec![node],
            placement: vec![ShardPlacement::default(); shard_count as usize],
            metadata_placement: ShardPlacement::default(),
            collections: Vec::new(),
        };
        placement::bootstrap(&mut metadata, node_id);
        metadata
    }

    /// The shard id of the metadata group.
    pub fn metadata_shard(&self) -> ShardId {
        ShardId(self.shard_count)
    }

    /// Fills what copies from before the metadata group lack: its placement is the
    /// bootstrap node alone, as if the group had been created with the cluster.
    pub fn upgrade(&mut self) {
        if self.metadata_placement.replicas.is_empty() {
            self.metadata_placement = ShardPlacement {
                replicas: vec![self.authority],
                epoch: 1,
                settled_epoch: 1,
            };
        }
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
        let placements = self
            .placement
            .iter()
            .chain(std::iter::once(&self.metadata_placement));
        for (shard, placement) in placements.enumerate() {
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

    /// The placement of one shard (the metadata group's for its shard id).
    pub fn shard(&self, shard: ShardId) -> Option<&ShardPlacement> {
        if shard == self.metadata_shard() {
            return Some(&self.metadata_placement);
        }
        self.placement.get(shard.0 as usize)
    }

    /// The placement of one shard, to change it.
    pub fn shard_mut(&mut self, shard: ShardId) -> Option<&mut ShardPlacement> {
        if shard == self.metadata_shard() {
            return Some(&mut self.metadata_placement);
        }
        self.placement.get_mut(shard.0 as usize)
    }

    /// Whether `node` is placed as a replica of `shard`.
    pub fn hosts(&self, node: NodeId, shard: ShardId) -> bool {
        self.shard(shard)
            .is_some_and(|placement| placement.replicas.contains(&node))
    }

    /// Applies an operator's action to `node`; `alive` is whether gossip counts it
    /// alive. Returns `false` when the node is already in the asked-for state.
    pub fn apply_action(
        &mut self,
        node: NodeId,
        action: NodeAction,
        alive: bool,
    ) -> Result<bool, MetadataError> {
        let record = self.node(node).ok_or(MetadataError::UnknownNode(node))?;
        let state = record.state;
        let refused = |reason: String| MetadataError::Refused {
            node,
            state: state.as_str().to_string(),
            reason,
        };
        let next = match (action, state) {
            (NodeAction::Drain, NodeState::Draining) | (NodeAction::Remove, NodeState::Removed) => {
                return Ok(false)
            }
            (_, NodeState::Removed) => return Err(refused("it was removed for good".into())),
            (NodeAction::Drain, NodeState::Active | NodeState::Joining) => {
                let active = placement::candidates(self).len();
                if active <= self.replication_factor as usize {
                    return Err(refused(format!(
                        "draining it would leave {} active nodes for replication factor {}; add a node first",
                        active - 1,
                        self.replication_factor
                    )));
                }
                NodeState::Draining
            }
            (NodeAction::Drain, NodeState::Dead) => {
                return Err(refused("it is dead; its replicas are already being moved, remove it once it is gone for good".into()))
            }
            (NodeAction::Remove, _) if alive => {
                return Err(refused("it is alive; drain it, stop it, then remove it".into()))
            }
            (NodeAction::Remove, _) => NodeState::Removed,
        };
        self.set_state(node, next);
        Ok(true)
    }

    /// Sets a node's state and bumps the revision (no-op for unknown nodes).
    pub fn set_state(&mut self, node: NodeId, state: NodeState) {
        if let Some(record) = self.nodes.iter_mut().find(|record| record.id == node) {
            if record.state != state {
                record.state = state;
                self.revision += 1;
            }
        }
    }

    /// Declares `definition` (replacing the index list of a collection of the same
    /// name); says whether anything changed.
    pub fn define_collection(
        &mut self,
        definition: &CollectionDefinition,
    ) -> Result<bool, crate::kv::KvError> {
        let count = self.collections.len();
        match self
            .collections
            .iter_mut()
            .find(|known| known.name == definition.name)
        {
            Some(known) if known == definition => Ok(false),
            Some(known) => {
                *known = definition.clone();
                Ok(true)
            }
            None if count >= COLLECTIONS_MAX => Err(crate::kv::KvError::InvalidInput(format!(
                "the cluster has {COLLECTIONS_MAX} collections, the most it may have"
            ))),
            None => {
                self.collections.push(definition.clone());
                Ok(true)
            }
        }
    }

    /// Registers a joining node as active (the rebalancer then places replicas on
    /// it). Returns `false` when this exact join was already registered (a retry).
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

    /// Proves a new cluster places every shard on its first node, joins register
    /// nodes and bump the revision (placement is the rebalancer's), a retried join
    /// is accepted, a reused id refused, and that validation catches placements on
    /// unknown nodes.
    #[test]
    fn joins_register_nodes_and_refuse_reused_ids() {
        let mut metadata = ClusterMetadata::bootstrap("c".into(), 4, 3, record(1, 11));
        assert_eq!(metadata.placement[0].replicas, vec![NodeId(1)]);
        assert_eq!(metadata.placement[0].epoch, 1);
        assert!(!metadata.placement[0].released(NodeId(1)));
        assert!(metadata.register(record(2, 22)).unwrap());
        assert!(metadata.register(record(3, 33)).unwrap());
        assert!(metadata.register(record(4, 44)).unwrap());
        assert_eq!(metadata.revision, 4);
        assert_eq!(metadata.nodes.len(), 4);
        assert_eq!(metadata.placement[0].replicas, vec![NodeId(1)]);
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
        // Operator actions: drain needs enough active nodes left, remove a node
        // that is gone, never the authority.
        assert_eq!(
            metadata.apply_action(NodeId(4), NodeAction::Drain, true),
            Ok(true)
        );
        assert_eq!(
            metadata.apply_action(NodeId(4), NodeAction::Drain, true),
            Ok(false)
        );
        assert!(matches!(
            metadata.apply_action(NodeId(3), NodeAction::Drain, true),
            Err(MetadataError::Refused { .. })
        ));
        assert!(metadata
            .apply_action(NodeId(4), NodeAction::Remove, true)
            .is_err());
        assert_eq!(
            metadata.apply_action(NodeId(4), NodeAction::Remove, false),
            Ok(true)
        );
        assert!(metadata
            .apply_action(NodeId(4), NodeAction::Drain, false)
            .is_err());
        assert_eq!(
            metadata.apply_action(NodeId(9), NodeAction::Drain, true),
            Err(MetadataError::UnknownNode(NodeId(9)))
        );
        assert_eq!(metadata.revision, 6);
        let encoded = rmp_serde::to_vec_named(&metadata).unwrap();
        let decoded: ClusterMetadata = rmp_serde::from_slice(&encoded).unwrap();
        assert_eq!(decoded, metadata);
    }
}
