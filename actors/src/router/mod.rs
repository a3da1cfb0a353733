//! The `Router`: the only handle the edges (gateway, admin server) hold on the kernel.
//!
//! It maps a key to its shard (`fnv1a64(namespace byte ++ key) mod shard_count`)
//! and sends the request to whichever replica can serve it:
//! - a write goes to the shard's leader: the local replica when it leads, else the
//!   leader's node through the Transport (`forward`). A `NotLeader` answer names the
//!   leader to try next; hints are followed a bounded number of times per request.
//! - a linearizable read goes to the local replica when this node hosts one (the
//!   leader answers ReadIndex itself; a follower asks its leader and then reads its
//!   own state machine), else to the leader's node. `Stale` reads serve a local
//!   replica as it is, or any replica's node.
//!
//! While a shard has no leader or its replica restarts, requests retry with a
//! growing delay, bounded by the request timeout; after that the caller gets
//! `Unavailable` (HTTP 503 with `Retry-After`) or `Timeout`, never a hang. A write
//! is retried only when it certainly did not happen (refused with `NotLeader`, or
//! never sent because the leader's node is unreachable); a write whose fate is
//! unknown (a timeout, a replica that died holding it, a leader deposed while it
//! was pending) is reported as such, never retried, because running it twice could
//! be observed.
//!
//! Limits are validated here, before anything is queued.

mod cluster_ops;
pub mod docs;
mod faults;
mod forward;
mod local;
pub mod metadata;
mod metrics;
mod views;

pub use metrics::ShardFigures;

use crate::command::Command;
use crate::faults::NetworkFaults;
use crate::ids::{NodeId, Revision, ShardId};
use crate::kv::{
    Condition, Consistency, KvError, Limits, Namespace, NodeAddresses, ScanItem, ScanPage,
    Versioned,
};
use crate::membership::actor::MembershipMsg;
use crate::node::cluster_state::ClusterState;
use crate::node::registry::{ActorCellSlot, ShardRegistry, ShardSlot};
use crate::transport::TransportStatus;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First retry delay while a shard has no usable replica or leader.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(5);
/// Longest retry delay.
const RETRY_DELAY_MAX: Duration = Duration::from_millis(200);
/// Leader hints followed at once (without backing off) per request.
const HINTS_FOLLOWED_MAX: u32 = 3;

/// The shard a key belongs to. Stable forever: it decides where data lives.
pub fn shard_for(namespace: Namespace, key: &[u8], shard_count: u32) -> ShardId {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let namespace_byte: u8 = match namespace {
        Namespace::Kv => 1,
        Namespace::Doc => 2,
        // Collection records exist on every shard; their commands are sent to each
        // shard explicitly, never routed by key.
        Namespace::Collection => 4,
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
    pub cluster: Arc<ClusterState>,
    pub transport_status: Arc<TransportStatus>,
    pub membership: Arc<crate::membership::status::MembershipStatus>,
    /// The running Membership actor (for fault injection).
    pub membership_actor: Arc<ActorCellSlot<MembershipMsg>>,
    /// The fault hook the Transport and Membership obey.
    pub faults: Arc<NetworkFaults>,
    /// Whether fault injection requests are served.
    pub fault_injection: bool,
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

    fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
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

    fn deadline(&self) -> Instant {
        Instant::now() + self.context().request_timeout
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if self.is_closed() {
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

    fn slot(&self, shard: ShardId) -> Result<&ShardSlot, KvError> {
        self.context()
            .registry
            .slot(shard)
            .ok_or_else(|| KvError::InvalidInput(format!("there is no shard {shard}")))
    }

    fn slot_of(&self, namespace: Namespace, key: &[u8]) -> Result<&ShardSlot, KvError> {
        self.slot(shard_for(namespace, key, self.shard_count()))
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
        let slot = self.slot_of(namespace, key)?;
        let command = Command::Put {
            namespace,
            key: key.to_vec(),
            value,
            condition,
        };
        self.propose(slot, command, self.deadline()).await
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
        let slot = self.slot_of(namespace, key)?;
        let command = Command::Delete {
            namespace,
            key: key.to_vec(),
            condition,
        };
        self.propose(slot, command, self.deadline()).await
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(
        &self,
        namespace: Namespace,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Versioned>, KvError> {
        self.check_key(key)?;
        let slot = self.slot_of(namespace, key)?;
        self.get_in(slot, namespace, key, consistency, self.deadline())
            .await
    }

    /// Lists keys starting with `prefix`, in key order, strictly after `after` when
    /// given, at most `limit` of them (1..=`limits().scan_limit_max`). Every shard is
    /// asked at once.
    pub async fn scan(
        &self,
        namespace: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<ScanPage, KvError> {
        if self.is_closed() {
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
        let deadline = self.deadline();
        // One more than the page from each shard tells whether anything follows.
        let per_shard = limit + 1;
        let mut tasks = tokio::task::JoinSet::new();
        for shard in 0..self.shard_count() {
            let router = self.clone();
            let prefix = prefix.to_vec();
            let after = after.map(<[u8]>::to_vec);
            tasks.spawn(async move {
                router
                    .scan_shard(
                        ShardId(shard),
                        namespace,
                        &prefix,
                        after.as_deref(),
                        per_shard,
                        consistency,
                        deadline,
                    )
                    .await
            });
        }
        let mut items: Vec<ScanItem> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let shard_items =
                joined.map_err(|error| KvError::Storage(format!("scan task: {error}")))??;
            items.extend(shard_items);
        }
        items.sort_unstable_by(|left, right| left.key.cmp(&right.key));
        let mut next = None;
        if items.len() > limit as usize {
            items.truncate(limit as usize);
            next = items.last().map(|item| item.key.clone());
        }
        Ok(ScanPage { items, next })
    }

    /// Moves the leadership of `shard` to node `to`; returns once `to` leads.
    pub async fn transfer_leader(&self, shard: ShardId, to: NodeId) -> Result<(), KvError> {
        if self.is_closed() {
            return Err(KvError::ShuttingDown);
        }
        let slot = self.slot(shard)?;
        let placed = self
            .context()
            .cluster
            .metadata()
            .is_some_and(|metadata| metadata.hosts(to, shard));
        if !placed {
            return Err(KvError::InvalidInput(format!(
                "node {to} holds no replica of shard {shard}"
            )));
        }
        self.transfer_in(slot, to, self.deadline()).await
    }

    /// Sleeps before a retry, or gives `error` back when the deadline would pass.
    async fn back_off(
        &self,
        delay: Duration,
        deadline: Instant,
        error: KvError,
    ) -> Result<Duration, KvError> {
        if self.is_closed() {
            return Err(KvError::ShuttingDown);
        }
        if Instant::now() + delay >= deadline {
            return Err(error);
        }
        tokio::time::sleep(delay).await;
        Ok((delay * 2).min(RETRY_DELAY_MAX))
    }

    fn unavailable(&self, shard: ShardId, reason: &str) -> KvError {
        KvError::Unavailable {
            shard,
            reason: reason.to_string(),
            retry_after_ms: 1_000,
        }
    }

    fn timeout(&self) -> KvError {
        KvError::Timeout {
            timeout_ms: self.context().request_timeout.as_millis() as u32,
        }
    }

    /// Fault injection: kills the local replica actor of `shard`; its supervisor
    /// restarts it from disk.
    pub fn kill_shard_replica(&self, shard: ShardId) -> Result<(), KvError> {
        let slot = self.slot(shard)?;
        if !slot.is_hosted() {
            return Err(KvError::InvalidInput(format!(
                "this node holds no replica of shard {shard}"
            )));
        }
        match slot.actor() {
            Some(actor) => {
                actor.kill();
                Ok(())
            }
            None => Err(self.unavailable(shard, "the shard replica is already restarting")),
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
