//! The `Router`: the only handle the edges (gateway, admin server) hold on the kernel.
//!
//! It maps a key to its shard (`hash(key) mod shard_count`), finds the shard's local
//! replica actor and sends it the request, retrying a bounded number of times while a
//! replica restarts or elects a leader. It validates limits before anything is queued.

use crate::ids::{NodeId, Revision, ShardId};
use crate::kv::{
    ClusterInfo, Condition, Consistency, Health, KvError, Limits, Namespace, NodeStatus, ScanPage,
    Versioned,
};
use bytes::Bytes;
use std::sync::Arc;

/// A cheap, cloneable handle on the node's kernel.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    node_id: NodeId,
    limits: Limits,
}

impl Router {
    /// The id of the node this router belongs to.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The size limits every edge must apply.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Writes `value` under `key` if `condition` holds; returns the new revision.
    pub async fn put(
        &self,
        _namespace: Namespace,
        _key: &[u8],
        _value: Bytes,
        _condition: Condition,
    ) -> Result<Revision, KvError> {
        Err(KvError::ShuttingDown)
    }

    /// Deletes `key` if `condition` holds; returns the revision of the delete, or
    /// `NotFound` when the key does not exist.
    pub async fn delete(
        &self,
        _namespace: Namespace,
        _key: &[u8],
        _condition: Condition,
    ) -> Result<Revision, KvError> {
        Err(KvError::ShuttingDown)
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(
        &self,
        _namespace: Namespace,
        _key: &[u8],
        _consistency: Consistency,
    ) -> Result<Option<Versioned>, KvError> {
        Err(KvError::ShuttingDown)
    }

    /// Lists keys starting with `prefix`, in key order, strictly after `after` when
    /// given, at most `limit` of them.
    pub async fn scan(
        &self,
        _namespace: Namespace,
        _prefix: &[u8],
        _after: Option<&[u8]>,
        _limit: u32,
        _consistency: Consistency,
    ) -> Result<ScanPage, KvError> {
        Err(KvError::ShuttingDown)
    }

    /// The cluster as this node sees it.
    pub async fn cluster_info(&self) -> ClusterInfo {
        unimplemented!()
    }

    /// This node's counters.
    pub async fn status(&self) -> NodeStatus {
        unimplemented!()
    }

    /// Whether this node serves.
    pub async fn health(&self) -> Health {
        unimplemented!()
    }

    /// Fault injection: kills the local replica actor of `shard`; its supervisor
    /// restarts it from disk.
    pub fn kill_shard_replica(&self, _shard: ShardId) -> Result<(), KvError> {
        Err(KvError::ShuttingDown)
    }
}
