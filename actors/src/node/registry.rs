//! The node's table of shards: for each shard its current state-machine tree, its
//! gauges, whether this node hosts a replica of it, the running replica actor
//! (replaced when the supervisor restarts it), and, for shards led elsewhere, the
//! last leader learned from a hint. Plus the node's LogWriter and Transport.
//! Shared by the supervisor (writes), the router, the ticker, the checkpointer and
//! the Transport's inbox.

use crate::ids::{NodeId, ShardId};
use crate::log_writer::LogWriterMsg;
use crate::metrics::NodeMetrics;
use crate::shard::{ShardGauges, ShardReplicaMsg};
use crate::storage::state_machine::{ShardStore, StateMachineDb};
use crate::transport::TransportMsg;
use ractor::ActorRef;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A shared, replaceable reference to a running actor (`None` while it is
/// (re)starting).
pub struct ActorCellSlot<T: ractor::Message> {
    actor: RwLock<Option<ActorRef<T>>>,
}

impl<T: ractor::Message> Default for ActorCellSlot<T> {
    fn default() -> Self {
        ActorCellSlot {
            actor: RwLock::new(None),
        }
    }
}

impl<T: ractor::Message> ActorCellSlot<T> {
    pub fn get(&self) -> Option<ActorRef<T>> {
        self.actor.read().ok().and_then(|actor| actor.clone())
    }

    pub fn set(&self, actor: Option<ActorRef<T>>) {
        if let Ok(mut slot) = self.actor.write() {
            *slot = actor;
        }
    }
}

/// The node's Transport, shared before the rest of the kernel exists.
pub type TransportSlot = Arc<ActorCellSlot<TransportMsg>>;

/// One shard, as this node sees it.
pub struct ShardSlot {
    pub shard: ShardId,
    /// The current generation of the shard's tree (replaced by snapshot installs).
    store: RwLock<ShardStore>,
    pub gauges: Arc<ShardGauges>,
    actor: ActorCellSlot<ShardReplicaMsg>,
    /// Whether this node runs a replica of the shard.
    hosted: AtomicBool,
    /// For a shard led elsewhere: the leader last named by a hint (0: none).
    leader_hint: AtomicU64,
    /// Which placed replica to try next when no leader is known.
    next_replica: AtomicU32,
}

impl ShardSlot {
    /// The running replica actor, if any.
    pub fn actor(&self) -> Option<ActorRef<ShardReplicaMsg>> {
        self.actor.get()
    }

    pub(crate) fn set_actor(&self, actor: Option<ActorRef<ShardReplicaMsg>>) {
        self.actor.set(actor);
    }

    /// The shard's current tree.
    pub fn store(&self) -> ShardStore {
        match self.store.read() {
            Ok(store) => store.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_store(&self, store: ShardStore) {
        match self.store.write() {
            Ok(mut current) => *current = store,
            Err(poisoned) => *poisoned.into_inner() = store,
        }
    }

    /// Whether this node runs a replica of the shard.
    pub fn is_hosted(&self) -> bool {
        self.hosted.load(Ordering::Acquire)
    }

    pub(crate) fn set_hosted(&self, hosted: bool) {
        self.hosted.store(hosted, Ordering::Release);
    }

    /// The leader as best known here: the local replica's view when it has one,
    /// else the last hint.
    pub fn known_leader(&self) -> Option<NodeId> {
        if self.is_hosted() && self.actor().is_some() {
            if let Some(leader) = self.gauges.leader() {
                return Some(NodeId(leader));
            }
        }
        match self.leader_hint.load(Ordering::Relaxed) {
            0 => None,
            leader => Some(NodeId(leader)),
        }
    }

    /// Remembers a leader named by another node (or forgets it).
    pub fn set_leader_hint(&self, leader: Option<NodeId>) {
        self.leader_hint
            .store(leader.map_or(0, |leader| leader.0), Ordering::Relaxed);
    }

    /// Forgets the hint when it names `node`.
    pub fn forget_leader_hint(&self, node: NodeId) {
        let _ = self
            .leader_hint
            .compare_exchange(node.0, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The next of `replicas` to try, round robin.
    pub fn next_replica(&self, replicas: &[NodeId]) -> Option<NodeId> {
        if replicas.is_empty() {
            return None;
        }
        let index = self.next_replica.fetch_add(1, Ordering::Relaxed) as usize;
        replicas.get(index % replicas.len()).copied()
    }
}

/// Every shard, indexed by shard id, and after them the metadata group (the
/// shard numbered `shard_count`).
pub struct ShardRegistry {
    slots: Vec<ShardSlot>,
    pub db: StateMachineDb,
    log_writer: ActorCellSlot<LogWriterMsg>,
    transport: TransportSlot,
    /// Replica restarts by the supervisor since the node started.
    restarts_total: AtomicU64,
    /// Checkpoints completed since the node started.
    checkpoints_total: AtomicU64,
    /// Snapshot streams completed to lagging replicas since the node started.
    snapshots_sent_total: AtomicU64,
    /// Snapshots installed by local replicas since the node started.
    snapshots_installed_total: AtomicU64,
    /// Histograms and byte counts recorded as things happen (for `/metrics`).
    pub metrics: Arc<NodeMetrics>,
    /// Set by the WAL writer after a failed write or sync: nothing can be made
    /// durable any more, so the node does not serve.
    pub wal_failed: Arc<AtomicBool>,
}

impl ShardRegistry {
    pub fn new(
        db: StateMachineDb,
        stores: Vec<ShardStore>,
        transport: TransportSlot,
        metrics: Arc<NodeMetrics>,
    ) -> ShardRegistry {
        let slots = stores
            .into_iter()
            .enumerate()
            .map(|(index, store)| ShardSlot {
                shard: ShardId(index as u32),
                store: RwLock::new(store),
                gauges: Arc::new(ShardGauges::default()),
                actor: ActorCellSlot::default(),
                hosted: AtomicBool::new(false),
                leader_hint: AtomicU64::new(0),
                next_replica: AtomicU32::new(index as u32),
            })
            .collect();
        ShardRegistry {
            slots,
            db,
            log_writer: ActorCellSlot::default(),
            transport,
            restarts_total: AtomicU64::new(0),
            checkpoints_total: AtomicU64::new(0),
            snapshots_sent_total: AtomicU64::new(0),
            snapshots_installed_total: AtomicU64::new(0),
            metrics,
            wal_failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Data shards (the metadata group not counted).
    pub fn shard_count(&self) -> u32 {
        self.slots.len().saturating_sub(1) as u32
    }

    /// A data shard's slot, or the metadata group's for its id.
    pub fn slot(&self, shard: ShardId) -> Option<&ShardSlot> {
        self.slots.get(shard.0 as usize)
    }

    /// The data shards' slots.
    pub fn slots(&self) -> &[ShardSlot] {
        &self.slots[..self.shard_count() as usize]
    }

    /// Every group's slot: the data shards', then the metadata group's.
    pub fn all_slots(&self) -> &[ShardSlot] {
        &self.slots
    }

    /// The metadata group's slot.
    pub fn metadata_slot(&self) -> Option<&ShardSlot> {
        self.slots.last()
    }

    pub fn log_writer(&self) -> Option<ActorRef<LogWriterMsg>> {
        self.log_writer.get()
    }

    pub(crate) fn set_log_writer(&self, writer: Option<ActorRef<LogWriterMsg>>) {
        self.log_writer.set(writer);
    }

    /// The node's Transport, while it runs.
    pub fn transport(&self) -> Option<ActorRef<TransportMsg>> {
        self.transport.get()
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

    pub fn snapshots_sent_total(&self) -> u64 {
        self.snapshots_sent_total.load(Ordering::Relaxed)
    }

    pub(crate) fn count_snapshot_sent(&self) {
        self.snapshots_sent_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshots_installed_total(&self) -> u64 {
        self.snapshots_installed_total.load(Ordering::Relaxed)
    }

    pub(crate) fn count_snapshot_installed(&self) {
        self.snapshots_installed_total
            .fetch_add(1, Ordering::Relaxed);
    }
}
