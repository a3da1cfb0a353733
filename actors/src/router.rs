//! The `Router`: the only handle the edges (gateway, admin server) hold on the kernel.
//!
//! It maps a key to its shard (`fnv1a64(namespace byte ++ key) mod shard_count`),
//! finds the shard's local replica actor and sends it the request. While a replica is
//! restarting or electing a leader it retries with a growing delay, bounded by the
//! request timeout; after that the caller gets `Unavailable` or `Timeout`, never a
//! hang. A write whose replica died after receiving it is *not* retried: it may still
//! be applied, so the caller is told the outcome is unknown.
//!
//! Limits are validated here, before anything is queued.

use crate::command::Command;
use crate::ids::{NodeId, Revision, ShardId};
use crate::kv::{
    ClusterInfo, Condition, Consistency, Health, KvError, Limits, Namespace, NodeAddresses,
    NodeInfo, NodeStatus, ScanItem, ScanPage, ShardInfo, Versioned, WalStats,
};
use crate::log_writer::LogWriterMsg;
use crate::node::registry::{ShardRegistry, ShardSlot};
use crate::shard::ShardReplicaMsg;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// First retry delay while a shard has no usable replica or leader.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(5);
/// Longest retry delay.
const RETRY_DELAY_MAX: Duration = Duration::from_millis(200);
/// Placement epoch of a single-node cluster's shards (placement arrives with #4).
const SINGLE_NODE_EPOCH: u64 = 1;

/// The shard a key belongs to. Stable forever: it decides where data lives.
pub fn shard_for(namespace: Namespace, key: &[u8], shard_count: u32) -> ShardId {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let namespace_byte: u8 = match namespace {
        Namespace::Kv => 1,
        Namespace::Doc => 2,
    };
    let mut hash = OFFSET_BASIS;
    for byte in std::iter::once(&namespace_byte).chain(key) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    ShardId((hash % u64::from(shard_count.max(1))) as u32)
}

/// What the node gives the router at start.
pub struct RouterContext {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub addresses: NodeAddresses,
    pub limits: Limits,
    pub request_timeout: Duration,
    pub registry: Arc<ShardRegistry>,
    pub started_at: Instant,
}

/// A cheap, cloneable handle on the node's kernel.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    context: RouterContext,
    /// Set by shutdown: new requests are refused.
    closed: AtomicBool,
}

impl Router {
    pub(crate) fn new(context: RouterContext) -> Router {
        Router {
            inner: Arc::new(RouterInner {
                context,
                closed: AtomicBool::new(false),
            }),
        }
    }

    fn context(&self) -> &RouterContext {
        &self.inner.context
    }

    /// Refuses every later request with `ShuttingDown`.
    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
    }

    /// The id of the node this router belongs to.
    pub fn node_id(&self) -> NodeId {
        self.context().node_id
    }

    /// The size limits every edge must apply.
    pub fn limits(&self) -> Limits {
        self.context().limits
    }

    /// The shard count fixed at bootstrap.
    pub fn shard_count(&self) -> u32 {
        self.context().registry.shard_count()
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(KvError::ShuttingDown);
        }
        let limit = self.limits().key_bytes_max;
        if key.is_empty() {
            return Err(KvError::InvalidInput("the key is empty".into()));
        }
        if key.len() as u64 > u64::from(limit) {
            return Err(KvError::KeyTooLarge {
                actual: key.len() as u64,
                limit,
            });
        }
        Ok(())
    }

    fn slot(&self, namespace: Namespace, key: &[u8]) -> Result<&ShardSlot, KvError> {
        let registry = &self.context().registry;
        let shard = shard_for(namespace, key, registry.shard_count());
        registry
            .slot(shard)
            .ok_or_else(|| KvError::Storage(format!("shard {shard} is not hosted here")))
    }

    /// Writes `value` under `key` if `condition` holds; returns the new revision.
    pub async fn put(
        &self,
        namespace: Namespace,
        key: &[u8],
        value: Bytes,
        condition: Condition,
    ) -> Result<Revision, KvError> {
        self.check_key(key)?;
        let limit = self.limits().value_bytes_max;
        if value.len() as u64 > u64::from(limit) {
            return Err(KvError::ValueTooLarge {
                actual: value.len() as u64,
                limit,
            });
        }
        let slot = self.slot(namespace, key)?;
        let command = Command::Put {
            namespace,
            key: key.to_vec(),
            value,
            condition,
        };
        self.propose(slot, command).await
    }

    /// Deletes `key` if `condition` holds; returns the revision of the delete, or
    /// `NotFound` when the key does not exist.
    pub async fn delete(
        &self,
        namespace: Namespace,
        key: &[u8],
        condition: Condition,
    ) -> Result<Revision, KvError> {
        self.check_key(key)?;
        let slot = self.slot(namespace, key)?;
        let command = Command::Delete {
            namespace,
            key: key.to_vec(),
            condition,
        };
        self.propose(slot, command).await
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(
        &self,
        namespace: Namespace,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Versioned>, KvError> {
        self.check_key(key)?;
        let slot = self.slot(namespace, key)?;
        if consistency == Consistency::Linearizable && !slot.gauges.local_reads_allowed() {
            let deadline = Instant::now() + self.context().request_timeout;
            let waiter = self.request_read(slot, deadline).await?;
            self.await_read(slot, waiter, deadline).await?;
        }
        Ok(slot.store.get(namespace, key)?)
    }

    /// Lists keys starting with `prefix`, in key order, strictly after `after` when
    /// given, at most `limit` of them (1..=`limits().scan_limit_max`).
    pub async fn scan(
        &self,
        namespace: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<ScanPage, KvError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(KvError::ShuttingDown);
        }
        let limit_max = self.limits().scan_limit_max;
        if limit == 0 || limit > limit_max {
            return Err(KvError::InvalidInput(format!(
                "limit must be 1..={limit_max}, not {limit}"
            )));
        }
        let key_limit = u64::from(self.limits().key_bytes_max);
        if prefix.len() as u64 > key_limit
            || after.is_some_and(|after| after.len() as u64 > key_limit)
        {
            return Err(KvError::KeyTooLarge {
                actual: prefix.len().max(after.map_or(0, <[u8]>::len)) as u64,
                limit: self.limits().key_bytes_max,
            });
        }
        let slots = self.context().registry.slots();
        let all_local = slots.iter().all(|slot| slot.gauges.local_reads_allowed());
        if consistency == Consistency::Linearizable && !all_local {
            // Ask every shard at once, then wait for each: one round, not 64.
            let deadline = Instant::now() + self.context().request_timeout;
            let mut waiters = Vec::with_capacity(slots.len());
            for slot in slots {
                waiters.push(self.request_read(slot, deadline).await?);
            }
            for (slot, waiter) in slots.iter().zip(waiters) {
                self.await_read(slot, waiter, deadline).await?;
            }
        }
        // One more than the page from each shard tells whether anything follows.
        let per_shard = limit as usize + 1;
        let mut items: Vec<ScanItem> = Vec::new();
        for slot in slots {
            items.extend(slot.store.scan(namespace, prefix, after, per_shard)?);
        }
        items.sort_unstable_by(|left, right| left.key.cmp(&right.key));
        let mut next = None;
        if items.len() > limit as usize {
            items.truncate(limit as usize);
            next = items.last().map(|item| item.key.clone());
        }
        Ok(ScanPage { items, next })
    }

    async fn propose(&self, slot: &ShardSlot, command: Command) -> Result<Revision, KvError> {
        let deadline = Instant::now() + self.context().request_timeout;
        let mut delay = RETRY_DELAY_MIN;
        loop {
            let last_error = match slot.actor() {
                None => self.unavailable(slot, "the shard replica is restarting"),
                Some(actor) => {
                    let (reply, outcome) = oneshot::channel();
                    let message = ShardReplicaMsg::Propose {
                        command: command.clone(),
                        reply,
                    };
                    if actor.send_message(message).is_err() {
                        self.unavailable(slot, "the shard replica is restarting")
                    } else {
                        match tokio::time::timeout_at(deadline.into(), outcome).await {
                            Err(_) => return Err(self.timeout()),
                            Ok(Err(_)) => {
                                // The replica died holding the proposal: it may
                                // still be applied after recovery. Do not retry.
                                return Err(KvError::Unavailable {
                                    shard: slot.shard,
                                    reason: "the shard replica restarted while the write was in flight; it may or may not have been applied".into(),
                                    retry_after_ms: 100,
                                });
                            }
                            Ok(Ok(Err(KvError::NotLeader { hint: None, .. }))) => {
                                self.unavailable(slot, "the shard is electing a leader")
                            }
                            Ok(Ok(result)) => return result,
                        }
                    }
                }
            };
            delay = self.back_off(delay, deadline, last_error).await?;
        }
    }

    /// Sends a ReadIndex request, retrying while the replica restarts.
    async fn request_read(
        &self,
        slot: &ShardSlot,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<(), KvError>>, KvError> {
        let mut delay = RETRY_DELAY_MIN;
        loop {
            if let Some(actor) = slot.actor() {
                let (reply, waiter) = oneshot::channel();
                if actor
                    .send_message(ShardReplicaMsg::ReadIndex { reply })
                    .is_ok()
                {
                    return Ok(waiter);
                }
            }
            let error = self.unavailable(slot, "the shard replica is restarting");
            delay = self.back_off(delay, deadline, error).await?;
        }
    }

    /// Waits for a ReadIndex answer; retries (reads are safe to retry) on failure.
    async fn await_read(
        &self,
        slot: &ShardSlot,
        mut waiter: oneshot::Receiver<Result<(), KvError>>,
        deadline: Instant,
    ) -> Result<(), KvError> {
        let mut delay = RETRY_DELAY_MIN;
        loop {
            let error = match tokio::time::timeout_at(deadline.into(), &mut waiter).await {
                Err(_) => return Err(self.timeout()),
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(KvError::NotLeader { hint: None, .. }))) | Ok(Err(_)) => {
                    self.unavailable(slot, "the shard has no leader yet")
                }
                Ok(Ok(Err(error))) => return Err(error),
            };
            delay = self.back_off(delay, deadline, error).await?;
            waiter = self.request_read(slot, deadline).await?;
        }
    }

    /// Sleeps before a retry, or gives `error` back when the deadline would pass.
    async fn back_off(
        &self,
        delay: Duration,
        deadline: Instant,
        error: KvError,
    ) -> Result<Duration, KvError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(KvError::ShuttingDown);
        }
        if Instant::now() + delay >= deadline {
            return Err(error);
        }
        tokio::time::sleep(delay).await;
        Ok((delay * 2).min(RETRY_DELAY_MAX))
    }

    fn unavailable(&self, slot: &ShardSlot, reason: &str) -> KvError {
        KvError::Unavailable {
            shard: slot.shard,
            reason: reason.to_string(),
            retry_after_ms: 1_000,
        }
    }

    fn timeout(&self) -> KvError {
        KvError::Timeout {
            timeout_ms: self.context().request_timeout.as_millis() as u32,
        }
    }

    fn leader_of(&self, slot: &ShardSlot) -> Option<NodeId> {
        slot.actor()?;
        slot.gauges.leader().map(NodeId)
    }

    /// The cluster as this node sees it.
    pub async fn cluster_info(&self) -> ClusterInfo {
        let context = self.context();
        let node_id = context.node_id;
        let shards: Vec<ShardInfo> = context
            .registry
            .slots()
            .iter()
            .map(|slot| ShardInfo {
                id: slot.shard,
                replicas: vec![node_id],
                leader: self.leader_of(slot),
                epoch: SINGLE_NODE_EPOCH,
                applied_index: slot.gauges.applied_index(),
            })
            .collect();
        let leaders = shards
            .iter()
            .filter(|shard| shard.leader == Some(node_id))
            .count() as u32;
        let addresses = &context.addresses;
        ClusterInfo {
            cluster_id: context.cluster_id.clone(),
            shard_count: context.registry.shard_count(),
            replication_factor: 1,
            nodes: vec![NodeInfo {
                id: node_id,
                state: "active".into(),
                http: addresses.http.clone(),
                admin: addresses.admin.clone(),
                cluster: addresses.cluster.clone(),
                gossip: addresses.gossip.clone(),
                replicas: shards.len() as u32,
                leaders,
            }],
            shards,
        }
    }

    /// This node's counters.
    pub async fn status(&self) -> NodeStatus {
        let context = self.context();
        let registry = &context.registry;
        let mut wal = WalStats::default();
        if let Some(writer) = registry.log_writer() {
            let (reply, stats) = oneshot::channel();
            if writer.send_message(LogWriterMsg::Stats { reply }).is_ok() {
                if let Ok(Ok(stats)) = tokio::time::timeout(Duration::from_secs(2), stats).await {
                    wal = stats;
                }
            }
        }
        wal.checkpoints_total = registry.checkpoints_total();
        let slots = registry.slots();
        NodeStatus {
            node_id: context.node_id,
            cluster_id: context.cluster_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: context.started_at.elapsed().as_secs(),
            shard_count: registry.shard_count(),
            shards_serving: slots.iter().filter(|slot| slot.actor().is_some()).count() as u32,
            shards_leading: slots
                .iter()
                .filter(|slot| self.leader_of(slot) == Some(context.node_id))
                .count() as u32,
            shard_restarts_total: registry.restarts_total(),
            wal,
        }
    }

    /// Whether this node serves: a LogWriter runs and its WAL has not failed, and
    /// every local shard has a running replica that knows its leader.
    pub async fn health(&self) -> Health {
        let context = self.context();
        let registry = &context.registry;
        let without_leader = registry
            .slots()
            .iter()
            .filter(|slot| self.leader_of(slot).is_none())
            .count() as u32;
        Health {
            serving: without_leader == 0
                && registry.log_writer().is_some()
                && !registry.wal_failed()
                && !self.inner.closed.load(Ordering::Relaxed),
            node_id: context.node_id,
            shards_total: registry.shard_count(),
            shards_without_leader: without_leader,
        }
    }

    /// Fault injection: kills the local replica actor of `shard`; its supervisor
    /// restarts it from disk.
    pub fn kill_shard_replica(&self, shard: ShardId) -> Result<(), KvError> {
        let slot = self
            .context()
            .registry
            .slot(shard)
            .ok_or_else(|| KvError::InvalidInput(format!("no shard {shard} on this node")))?;
        match slot.actor() {
            Some(actor) => {
                actor.kill();
                Ok(())
            }
            None => Err(self.unavailable(slot, "the shard replica is already restarting")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the key → shard function: changing it would move every stored key.
    #[test]
    fn shard_function_is_stable() {
        // FNV-1a 64 of 0x01 ++ "user:1", computed independently.
        assert_eq!(shard_for(Namespace::Kv, b"user:1", 64), ShardId(58));
        assert_eq!(
            shard_for(Namespace::Kv, b"user:1", 1 << 20),
            ShardId(362_298)
        );
        let spread: std::collections::HashSet<u32> = (0..1_000)
            .map(|index| shard_for(Namespace::Kv, format!("key-{index}").as_bytes(), 64).0)
            .collect();
        assert_eq!(spread.len(), 64, "1,000 keys should touch all 64 shards");
        assert_ne!(
            shard_for(Namespace::Kv, b"a", 1 << 20),
            shard_for(Namespace::Doc, b"a", 1 << 20)
        );
    }
}
