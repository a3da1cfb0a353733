//! What `/metrics` reads from the kernel at scrape time: per-shard figures of the
//! replicas hosted here, the recorded histograms and the state machine's size on
//! disk. Node-wide counters come from [`Router::status`](super::Router::status).

use super::Router;
use crate::kv::KvError;
use crate::metrics::NodeMetrics;
use crate::shard::gauges::ShardCounters;
use std::sync::Arc;

/// One hosted shard replica, as `/metrics` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFigures {
    pub shard: u32,
    /// This node leads the shard.
    pub leading: bool,
    pub term: u64,
    pub applied_index: u64,
    pub commit_index: u64,
    /// Entries in the log not yet compacted away.
    pub log_entries: u64,
    /// On the leader: entries the furthest-behind member lacks; 0 elsewhere.
    pub replication_lag_entries: u64,
    pub proposals_total: u64,
    pub entries_committed_total: u64,
    pub log_entries_appended_total: u64,
    pub log_bytes_appended_total: u64,
    pub leader_changes_total: u64,
}

impl Router {
    /// Every data shard hosted here, lowest id first.
    pub fn shard_figures(&self) -> Vec<ShardFigures> {
        let me = self.context().node_id.0;
        self.context()
            .registry
            .slots()
            .iter()
            .filter(|slot| slot.is_hosted())
            .map(|slot| {
                let gauges = &slot.gauges;
                let counters = &gauges.counters;
                let leading = gauges.leader() == Some(me) && slot.actor().is_some();
                ShardFigures {
                    shard: slot.shard.0,
                    leading,
                    term: gauges.term(),
                    applied_index: gauges.applied_index(),
                    commit_index: gauges.commit_index(),
                    log_entries: gauges
                        .commit_index()
                        .saturating_sub(gauges.compacted_index()),
                    replication_lag_entries: if leading { gauges.replication_lag() } else { 0 },
                    proposals_total: ShardCounters::get(&counters.proposals_total),
                    entries_committed_total: ShardCounters::get(&counters.entries_committed_total),
                    log_entries_appended_total: ShardCounters::get(
                        &counters.log_entries_appended_total,
                    ),
                    log_bytes_appended_total: ShardCounters::get(
                        &counters.log_bytes_appended_total,
                    ),
                    leader_changes_total: ShardCounters::get(&counters.leader_changes_total),
                }
            })
            .collect()
    }

    /// The histograms and byte counters the kernel records.
    pub fn recorded_metrics(&self) -> Arc<NodeMetrics> {
        Arc::clone(&self.context().registry.metrics)
    }

    /// Bytes the state machine (sled) takes on disk.
    pub async fn state_machine_bytes(&self) -> Result<u64, KvError> {
        let db = self.context().registry.db.clone();
        tokio::task::spawn_blocking(move || db.size_on_disk())
            .await
            .map_err(|error| KvError::Storage(error.to_string()))?
            .map_err(KvError::from)
    }
}
