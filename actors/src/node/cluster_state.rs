//! `ClusterState`: this node's copy of the cluster metadata, persisted as
//! `cluster.json` in the data directory and watched by whoever reacts to changes (the
//! supervisor starts replicas for newly placed shards and tells running ones their
//! new replica sets; the Transport spreads newer copies to peers).
//!
//! Invariants: the copy only moves forward (a copy with a lower or equal revision is
//! ignored, one that fails validation is refused), and it is durable before anyone
//! is told about it. Joins are decided here when this node is the cluster's
//! authority (TODO(#4): the metadata Raft group replaces the authority).

use crate::ids::NodeId;
use crate::metadata::{ClusterMetadata, NodeRecord};
use crate::storage::json_file;
use crate::transport::wire::PeerResponse;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const CLUSTER_FILE: &str = "cluster.json";

/// The node's copy of the metadata; `None` while a joining node has none yet.
pub struct ClusterState {
    node_id: NodeId,
    data_dir: PathBuf,
    current: watch::Sender<Option<Arc<ClusterMetadata>>>,
    /// Serializes changes (persist, then publish) against each other.
    change: Mutex<()>,
}

impl ClusterState {
    /// Loads the persisted copy, if any.
    pub fn open(node_id: NodeId, data_dir: &Path) -> Result<ClusterState, String> {
        let metadata = json_file::read::<ClusterMetadata>(data_dir, CLUSTER_FILE)?;
        if let Some(metadata) = &metadata {
            metadata
                .validate()
                .map_err(|error| format!("{}: {error}", data_dir.join(CLUSTER_FILE).display()))?;
        }
        let (current, _) = watch::channel(metadata.map(Arc::new));
        Ok(ClusterState {
            node_id,
            data_dir: data_dir.to_path_buf(),
            current,
            change: Mutex::new(()),
        })
    }

    /// The current copy.
    pub fn metadata(&self) -> Option<Arc<ClusterMetadata>> {
        self.current.borrow().clone()
    }

    /// The revision of the current copy (0 when there is none).
    pub fn revision(&self) -> u64 {
        self.current
            .borrow()
            .as_ref()
            .map_or(0, |metadata| metadata.revision)
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ClusterMetadata>>> {
        self.current.subscribe()
    }

    /// Adopts `metadata` if it is newer than the current copy (and of the same
    /// cluster); returns whether it did.
    pub fn install(&self, metadata: ClusterMetadata) -> Result<bool, String> {
        let _change = self
            .change
            .lock()
            .map_err(|_| "cluster state lock poisoned")?;
        self.install_locked(metadata)
    }

    fn install_locked(&self, metadata: ClusterMetadata) -> Result<bool, String> {
        metadata.validate().map_err(|error| error.to_string())?;
        if let Some(current) = self.current.borrow().as_ref() {
            if current.cluster_id != metadata.cluster_id {
                return Err(format!(
                    "metadata of cluster {} offered to a node of cluster {}",
                    metadata.cluster_id, current.cluster_id
                ));
            }
            if metadata.revision <= current.revision {
                return Ok(false);
            }
        }
        json_file::write(&self.data_dir, CLUSTER_FILE, &metadata)?;
        tracing::info!(
            revision = metadata.revision,
            nodes = metadata.nodes.len(),
            "cluster metadata updated"
        );
        self.current.send_replace(Some(Arc::new(metadata)));
        Ok(true)
    }

    /// Changes the current copy in place, atomically with respect to every other
    /// change: `change` edits a copy and says whether it changed anything; a
    /// changed copy gets the next revision and is made durable before anyone sees
    /// it. Returns the copy now current.
    pub fn modify<E: From<String>>(
        &self,
        change: impl FnOnce(&mut ClusterMetadata) -> Result<bool, E>,
    ) -> Result<Arc<ClusterMetadata>, E> {
        let _change = self
            .change
            .lock()
            .map_err(|_| E::from("cluster state lock poisoned".to_string()))?;
        let current = self
            .metadata()
            .ok_or_else(|| E::from("this node has not joined a cluster yet".to_string()))?;
        let mut next = (*current).clone();
        if !change(&mut next)? {
            return Ok(current);
        }
        next.revision = current.revision + 1;
        self.install_locked(next)?;
        self.metadata()
            .ok_or_else(|| E::from("the cluster metadata vanished".to_string()))
    }

    /// Whether this node decides membership and placement.
    pub fn is_authority(&self) -> bool {
        self.metadata()
            .is_some_and(|metadata| metadata.authority == self.node_id)
    }

    /// Handles a join request: registers the node when this node is the authority,
    /// or points the requester at the authority.
    pub fn join(&self, node: NodeRecord) -> PeerResponse {
        let Some(current) = self.metadata() else {
            return PeerResponse::Failed(crate::kv::KvError::Unavailable {
                shard: crate::ids::ShardId(0),
                reason: "this node has not joined a cluster yet".into(),
                retry_after_ms: 1_000,
            });
        };
        if current.authority != self.node_id {
            let cluster = current
                .node(current.authority)
                .map(|authority| authority.addresses.cluster.clone())
                .unwrap_or_default();
            return PeerResponse::JoinRedirect {
                authority: current.authority,
                cluster,
            };
        }
        let joining = node.id;
        let mut registered = false;
        let outcome = self.modify(|metadata| {
            registered = metadata
                .register(node)
                .map_err(|error| JoinFailure::Refused(error.to_string()))?;
            Ok::<_, JoinFailure>(registered)
        });
        match outcome {
            Ok(metadata) => {
                if registered {
                    tracing::info!(node = joining.0, "node joined the cluster");
                }
                PeerResponse::Joined(Box::new((*metadata).clone()))
            }
            Err(JoinFailure::Refused(reason)) => {
                PeerResponse::Failed(crate::kv::KvError::InvalidInput(reason))
            }
            Err(JoinFailure::Storage(error)) => {
                PeerResponse::Failed(crate::kv::KvError::Storage(error))
            }
        }
    }
}

/// Why a join could not be registered.
enum JoinFailure {
    Refused(String),
    Storage(String),
}

impl From<String> for JoinFailure {
    fn from(error: String) -> Self {
        JoinFailure::Storage(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::NodeAddresses;
    use crate::metadata::NodeState;

    fn record(id: u64) -> NodeRecord {
        NodeRecord {
            id: NodeId(id),
            addresses: NodeAddresses {
                cluster: format!("127.0.0.1:{}", 9000 + id),
                ..Default::default()
            },
            state: NodeState::Active,
            incarnation: id * 10,
        }
    }

    /// Proves the authority registers joins durably (a reopened state has them),
    /// older copies are ignored, and a non-authority redirects.
    #[test]
    fn authority_registers_and_others_redirect() {
        let dir = tempfile::tempdir().unwrap();
        let state = ClusterState::open(NodeId(1), dir.path()).unwrap();
        let bootstrap = ClusterMetadata::bootstrap("c".into(), 4, 3, record(1));
        assert!(state.install(bootstrap.clone()).unwrap());
        assert!(!state.install(bootstrap.clone()).unwrap(), "same revision");
        let PeerResponse::Joined(joined) = state.join(record(2)) else {
            panic!("authority registers");
        };
        assert_eq!(joined.revision, 2);
        let reopened = ClusterState::open(NodeId(1), dir.path()).unwrap();
        assert_eq!(reopened.revision(), 2);
        assert!(!reopened.install(bootstrap).unwrap(), "older copy ignored");

        let other_dir = tempfile::tempdir().unwrap();
        let other = ClusterState::open(NodeId(2), other_dir.path()).unwrap();
        other.install((*joined).clone()).unwrap();
        assert_eq!(
            other.join(record(3)),
            PeerResponse::JoinRedirect {
                authority: NodeId(1),
                cluster: "127.0.0.1:9001".into()
            }
        );
    }
}
