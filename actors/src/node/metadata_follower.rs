//! The metadata follower: on a node with a replica of the metadata group, installs
//! every copy of the cluster metadata the replica applies, so the group's members
//! adopt a change as soon as it is committed and applied there (a leader installs
//! its own writes at once; other nodes also get copies from peers by revision).
//! After a restart it is also what brings `cluster.json` up to the group's state.

use super::cluster_state::ClusterState;
use super::registry::ShardRegistry;
use crate::kv::Namespace;
use crate::router::metadata::{decode_metadata, METADATA_KEY};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the local replica's applied index is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Runs until `stop` changes.
pub async fn run(
    registry: Arc<ShardRegistry>,
    cluster: Arc<ClusterState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        let Some(slot) = registry.metadata_slot() else {
            return;
        };
        let applied = slot.gauges.applied_index();
        if !slot.is_hosted() || applied == seen {
            continue;
        }
        seen = applied;
        let stored = match slot.store().get(Namespace::Kv, METADATA_KEY) {
            Ok(Some(stored)) => stored,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot read the metadata group's state");
                continue;
            }
        };
        match decode_metadata(&stored.value) {
            Ok(metadata) => {
                if let Err(error) = cluster.install(metadata) {
                    tracing::warn!(%error, "metadata group's copy refused");
                }
            }
            Err(error) => tracing::error!(%error, "metadata group holds unreadable metadata"),
        }
    }
}
