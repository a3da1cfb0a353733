//! `ClusterState`: this node's copy of the cluster metadata, persisted as
//! `cluster.json` in the data directory and watched by whoever reacts to changes (the
//! supervisor starts replicas for newly placed shards and tells running ones their
//! new replica sets; the Transport spreads newer copies to peers).
//!
//! Invariants: the copy only moves forward (a copy with a lower or equal revision is
//! ignored, one that fails validation is refused), and it is durable before anyone
//! is told about it. Changes are decided by the metadata group's leader
//! (`router::metadata`); this is only where a node keeps what it was told.

use crate::metadata::ClusterMetadata;
use crate::storage::json_file;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const CLUSTER_FILE: &str = "cluster.json";

/// The node's copy of the metadata; `None` while a joining node has none yet.
pub struct ClusterState {
    data_dir: PathBuf,
    current: watch::Sender<Option<Arc<ClusterMetadata>>>,
    /// Serializes changes (persist, then publish) against each other.
    change: Mutex<()>,
}

impl ClusterState {
    /// Loads the persisted copy, if any.
    pub fn open(data_dir: &Path) -> Result<ClusterState, String> {
        let mut metadata = json_file::read::<ClusterMetadata>(data_dir, CLUSTER_FILE)?;
        if let Some(metadata) = &mut metadata {
            metadata.upgrade();
            metadata
                .validate()
                .map_err(|error| format!("{}: {error}", data_dir.join(CLUSTER_FILE).display()))?;
        }
        let (current, _) = watch::channel(metadata.map(Arc::new));
        Ok(ClusterState {
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

    fn install_locked(&self, mut metadata: ClusterMetadata) -> Result<bool, String> {
        metadata.upgrade();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::kv::NodeAddresses;
    use crate::metadata::{NodeRecord, NodeState};

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

    /// Proves copies are installed durably (a reopened state has them), older or
    /// equal revisions and other clusters' copies are ignored or refused, and a copy
    /// from before the metadata group gets the bootstrap node as its placement.
    #[test]
    fn newer_copies_replace_older_ones_durably() {
        let dir = tempfile::tempdir().unwrap();
        let state = ClusterState::open(dir.path()).unwrap();
        let bootstrap = ClusterMetadata::bootstrap("c".into(), 4, 3, record(1));
        assert!(state.install(bootstrap.clone()).unwrap());
        assert!(!state.install(bootstrap.clone()).unwrap(), "same revision");
        let mut joined = bootstrap.clone();
        joined.register(record(2)).unwrap();
        assert!(state.install(joined.clone()).unwrap());
        let reopened = ClusterState::open(dir.path()).unwrap();
        assert_eq!(reopened.revision(), 2);
        assert!(
            !reopened.install(bootstrap.clone()).unwrap(),
            "older copy ignored"
        );
        let mut foreign = joined.clone();
        foreign.cluster_id = "other".into();
        foreign.revision = 9;
        assert!(reopened.install(foreign).is_err());

        let mut old_format = joined;
        old_format.revision = 3;
        old_format.metadata_placement = Default::default();
        assert!(reopened.install(old_format).unwrap());
        let upgraded = reopened.metadata().unwrap();
        assert_eq!(upgraded.metadata_placement.replicas, vec![NodeId(1)]);
        assert_eq!(upgraded.metadata_placement.epoch, 1);
    }
}
