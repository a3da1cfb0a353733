//! The node's table of local shard replicas: for each shard its state-machine tree,
//! its gauges and the current actor (replaced when the supervisor restarts it).
//! Shared by the supervisor (writes), the router, the ticker and the checkpointer.

use crate::ids::ShardId;
use crate::log_writer::LogWriterMsg;
use crate::shard::{ShardGauges, ShardReplicaMsg};
use crate::storage::state_machine::{ShardStore, StateMachineDb};
use ractor::ActorRef;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One local shard replica.
pub struct ShardSlot {
    pub shard: ShardId,
    pub store: ShardStore,
    pub gauges: Arc<ShardGauges>,
    /// `None` while the replica is being (re)started.
    actor: RwLock<Option<ActorRef<ShardReplicaMsg>>>,
}

impl ShardSlot {
    /// The running replica actor, if any.
    pub fn actor(&self) -> Option<ActorRef<ShardReplicaMsg>> {
        self.actor.read().ok().and_then(|actor| actor.clone())
    }

    pub(crate) fn set_actor(&self, actor: Option<ActorRef<ShardReplicaMsg>>) {
        if let Ok(mut slot) = self.actor.write() {
            *slot = actor;
        }
    }
}

/// Every local shard replica, indexed by shard id.
pub struct ShardRegistry {
    slots: Vec<ShardSlot>,
    pub db: StateMachineDb,
    log_writer: RwLock<Option<ActorRef<LogWriterMsg>>>,
    /// Replica restarts by the supervisor since the node started.
    restarts_total: AtomicU64,
    /// Checkpoints completed since the node started.
    checkpoints_total: AtomicU64,
    /// Set by the WAL writer after a failed write or sync: nothing can be made
    /// durable any more, so the node does not serve.
    pub wal_failed: Arc<AtomicBool>,
}

impl ShardRegistry {
    pub fn new(db: StateMachineDb, stores: Vec<ShardStore>) -> ShardRegistry {
        let slots = stores
            .into_iter()
            .enumerate()
            .map(|(index, store)| ShardSlot {
                shard: ShardId(index as u32),
                store,
                gauges: Arc::new(ShardGauges::default()),
                actor: RwLock::new(None),
            })
            .collect();
        ShardRegistry {
            slots,
            db,
            log_writer: RwLock::new(None),
            restarts_total: AtomicU64::new(0),
            checkpoints_total: AtomicU64::new(0),
            wal_failed: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn slot(&self, shard: ShardId) -> Option<&ShardSlot> {
        self.slots.get(shard.0 as usize)
    }

    pub fn slots(&self) -> &[ShardSlot] {
        &self.slots
    }

    pub fn log_writer(&self) -> Option<ActorRef<LogWriterMsg>> {
        self.log_writer
            .read()
            .ok()
            .and_then(|writer| writer.clone())
    }

    pub(crate) fn set_log_writer(&self, writer: Option<ActorRef<LogWriterMsg>>) {
        if let Ok(mut slot) = self.log_writer.write() {
            *slot = writer;
        }
    }

    pub fn restarts_total(&self) -> u64 {
        self.restarts_total.load(Ordering::Relaxed)
    }

    pub(crate) fn count_restart(&self) {
        self.restarts_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the WAL failed (see `wal_failed`).
    pub fn wal_failed(&self) -> bool {
        self.wal_failed.load(Ordering::Acquire)
    }

    pub fn checkpoints_total(&self) -> u64 {
        self.checkpoints_total.load(Ordering::Relaxed)
    }

    pub(crate) fn count_checkpoint(&self) {
        self.checkpoints_total.fetch_add(1, Ordering::Relaxed);
    }
}
