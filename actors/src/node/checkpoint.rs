//! The checkpointer: makes the state machine durable and lets the shard replicas
//! compact their logs, which in turn lets the LogWriter delete WAL segments.
//!
//! Order matters and is the whole point: (1) read every replica's applied index,
//! (2) flush sled and `sync_all` its files, (3) only then tell each replica it may
//! compact up to the index read in (1). A compaction point therefore never runs ahead
//! of durable state-machine data, so WAL replay can always resume from the
//! compaction point (applying is idempotent, so what sled kept beyond it is simply
//! confirmed).

use super::registry::ShardRegistry;
use crate::shard::ShardReplicaMsg;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the checkpointer looks at the replicas' progress.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// When a checkpoint runs.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Some replica applied this many entries since its last compaction.
    pub compact_after_entries: u64,
    /// Or this much time passed and anything was applied.
    pub interval: Duration,
}

/// Runs until `shutdown` changes.
pub async fn run_checkpointer(
    registry: Arc<ShardRegistry>,
    policy: CheckpointPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let behind = |slot: &super::registry::ShardSlot| {
            slot.gauges
                .applied_index()
                .saturating_sub(slot.gauges.compacted_index())
        };
        let most_behind = registry.all_slots().iter().map(behind).max().unwrap_or(0);
        let due = most_behind >= policy.compact_after_entries
            || (most_behind > 0 && last.elapsed() >= policy.interval);
        if !due {
            continue;
        }
        last = Instant::now();
        if let Err(error) = checkpoint(&registry).await {
            tracing::error!(%error, "checkpoint failed; WAL segments are kept");
        }
    }
}

/// One checkpoint: durable state machine, then compaction of every replica.
pub async fn checkpoint(registry: &Arc<ShardRegistry>) -> Result<(), String> {
    let targets: Vec<u64> = registry
        .all_slots()
        .iter()
        .map(|slot| slot.gauges.applied_index())
        .collect();
    let db = registry.db.clone();
    tokio::task::spawn_blocking(move || db.make_durable())
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    for (slot, index) in registry.all_slots().iter().zip(targets) {
        if index > slot.gauges.compacted_index() {
            if let Some(actor) = slot.actor() {
                let _ = actor.send_message(ShardReplicaMsg::Compact { index });
            }
        }
    }
    registry.count_checkpoint();
    Ok(())
}
