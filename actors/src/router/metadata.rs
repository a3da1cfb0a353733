//! Changes to the cluster metadata. The metadata is the value of one key in the
//! metadata group (`metadata` module docs); a change is a compare-and-set write of
//! that key on the group's leader, so two changes can never overwrite each other
//! and a change is durable on a majority of the group before anyone acts on it.
//!
//! On the leader, `change_metadata_here` reads the key, applies the change to a
//! copy, gives it the next revision and proposes it with the key's revision as the
//! condition (or "absent" for the very first write, whose base is the node's own
//! bootstrap copy); a lost race is retried from a fresh read. Elsewhere,
//! `change_metadata` sends the change to the leader (`PeerRequest::MetadataChange`)
//! through the same leader-finding as any request. Whoever wrote a new copy
//! installs it in its `ClusterState`, from where it spreads to every node by
//! revision; the group's other replicas also install what they apply
//! (`node::metadata_follower`).

use super::Router;
use crate::command::Command;
use crate::docs::collection::CollectionDefinition;
use crate::ids::NodeId;
use crate::kv::{Condition, KvError, Namespace};
use crate::metadata::{ClusterMetadata, NodeAction, NodeRecord};
use crate::node::registry::ShardSlot;
use crate::transport::wire::{PeerRequest, PeerResponse};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The one key of the metadata group.
pub const METADATA_KEY: &[u8] = b"cluster-metadata";
/// How often a change is retried after losing a race with another change.
const CONFLICT_RETRIES_MAX: usize = 8;

/// A change another node asks the metadata group's leader to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataChange {
    /// A node joins.
    Register(NodeRecord),
    /// An operator drains or removes a node.
    NodeAction { node: NodeId, action: NodeAction },
    /// Declares a collection or replaces its index list.
    DefineCollection(CollectionDefinition),
    /// Forgets a collection's definition.
    DropCollection { name: String },
}

/// Decodes the stored metadata.
pub fn decode_metadata(bytes: &[u8]) -> Result<ClusterMetadata, KvError> {
    let metadata: ClusterMetadata = rmp_serde::from_slice(bytes)
        .map_err(|error| KvError::Corrupted(format!("stored cluster metadata: {error}")))?;
    metadata
        .validate()
        .map_err(|error| KvError::Corrupted(format!("stored cluster metadata: {error}")))?;
    Ok(metadata)
}

impl Router {
    /// The metadata group's slot.
    fn metadata_slot(&self) -> Result<&ShardSlot, KvError> {
        self.context()
            .registry
            .metadata_slot()
            .ok_or_else(|| KvError::Storage("no metadata group on this node".into()))
    }

    /// Whether this node's replica of the metadata group leads it (so this node
    /// decides joins, node states and placement).
    pub fn leads_metadata(&self) -> bool {
        self.metadata_slot().is_ok_and(|slot| {
            slot.actor().is_some() && slot.gauges.leader() == Some(self.node_id().0)
        })
    }

    /// Makes `change` at the metadata group's leader, wherever it is; returns the
    /// metadata after it.
    pub async fn change_metadata(
        &self,
        change: MetadataChange,
    ) -> Result<Arc<ClusterMetadata>, KvError> {
        if self.leads_metadata() {
            return self.apply_metadata_change(change).await;
        }
        let slot = self.metadata_slot()?;
        let deadline = Instant::now() + self.context().request_timeout;
        let request = PeerRequest::MetadataChange { change };
        match self.ask_leader(slot, request, deadline, false).await? {
            PeerResponse::Metadata(metadata) => {
                let metadata = *metadata;
                // Adopt it at once, so this node acts on what it just changed.
                let _ = self.context().cluster.install(metadata.clone());
                Ok(Arc::new(metadata))
            }
            other => Err(KvError::Storage(format!(
                "unexpected answer to a metadata change: {other:?}"
            ))),
        }
    }

    /// Makes a change another node sent (or this one asked for) on the local
    /// leader.
    pub(super) async fn apply_metadata_change(
        &self,
        change: MetadataChange,
    ) -> Result<Arc<ClusterMetadata>, KvError> {
        match change {
            MetadataChange::Register(node) => {
                let joining = node.id;
                let metadata = self
                    .change_metadata_here(|metadata| {
                        metadata
                            .register(node.clone())
                            .map_err(|error| KvError::InvalidInput(error.to_string()))
                    })
                    .await?;
                tracing::info!(node = joining.0, "node registered in the cluster");
                Ok(metadata)
            }
            MetadataChange::NodeAction { node, action } => {
                let alive = self.gossip_alive(node);
                let metadata = self
                    .change_metadata_here(|metadata| {
                        metadata
                            .apply_action(node, action, alive)
                            .map_err(|error| KvError::InvalidInput(error.to_string()))
                    })
                    .await?;
                tracing::info!(node = node.0, ?action, "node action applied");
                Ok(metadata)
            }
            MetadataChange::DefineCollection(definition) => {
                let name = definition.name.clone();
                let metadata = self
                    .change_metadata_here(|metadata| metadata.define_collection(&definition))
                    .await?;
                tracing::info!(collection = %name, "collection defined");
                Ok(metadata)
            }
            MetadataChange::DropCollection { name } => {
                let metadata = self
                    .change_metadata_here(|metadata| {
                        let before = metadata.collections.len();
                        metadata.collections.retain(|known| known.name != name);
                        Ok(metadata.collections.len() != before)
                    })
                    .await?;
                tracing::info!(collection = %name, "collection dropped");
                Ok(metadata)
            }
        }
    }

    /// Applies `change` to the stored metadata by compare-and-set on the local
    /// leader of the metadata group. `change` edits a copy and says whether it
    /// changed anything; it may run more than once (after a lost race).
    pub async fn change_metadata_here(
        &self,
        mut change: impl FnMut(&mut ClusterMetadata) -> Result<bool, KvError>,
    ) -> Result<Arc<ClusterMetadata>, KvError> {
        let slot = self.metadata_slot()?;
        let cluster = &self.context().cluster;
        let deadline = Instant::now() + self.context().request_timeout;
        for _ in 0..CONFLICT_RETRIES_MAX {
            if !self.leads_metadata() {
                return Err(KvError::NotLeader {
                    shard: slot.shard,
                    hint: slot.known_leader(),
                });
            }
            let stored = slot.store().get(Namespace::Kv, METADATA_KEY)?;
            let (base, condition) = match stored {
                Some(stored) => (
                    decode_metadata(&stored.value)?,
                    Condition::RevisionIs(stored.revision),
                ),
                None => {
                    let local = cluster.metadata().ok_or_else(|| {
                        KvError::Storage("this node has no cluster metadata".into())
                    })?;
                    ((*local).clone(), Condition::Absent)
                }
            };
            let mut next = base.clone();
            if !change(&mut next)? {
                return Ok(Arc::new(base));
            }
            next.revision = base.revision.max(cluster.revision()) + 1;
            let value = rmp_serde::to_vec_named(&next)
                .map_err(|error| KvError::Storage(format!("encoding cluster metadata: {error}")))?;
            let command = Command::Put {
                namespace: Namespace::Kv,
                key: METADATA_KEY.to_vec(),
                value: Bytes::from(value),
                condition,
            };
            match self.propose_here(slot, &command, deadline).await {
                Ok(_) => {
                    cluster.install(next.clone())?;
                    return Ok(Arc::new(next));
                }
                Err(KvError::ConditionFailed { .. }) => {
                    // Another change won; it is being applied here. Read again.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => return Err(error),
            }
        }
        Err(KvError::Unavailable {
            shard: slot.shard,
            reason: "the cluster metadata kept changing; try again".into(),
            retry_after_ms: 100,
        })
    }
}
