//! A node's kernel: boots the supervision tree (LogWriter, Ticker, shard replicas)
//! over one data directory and hands out the [`Router`].

use crate::ids::NodeId;
use crate::kv::{Limits, NodeAddresses};
use crate::router::Router;
use std::path::PathBuf;

/// Everything the kernel needs to start; the edges build it from config.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Shards of a new cluster; ignored (the stored value wins) when the data
    /// directory is already bootstrapped.
    pub shard_count: u32,
    pub addresses: NodeAddresses,
    pub limits: Limits,
    /// How long a request may wait for its shard before it fails.
    pub request_timeout_ms: u32,
    /// A WAL segment is closed and a new one started past this size.
    pub wal_segment_bytes: u64,
    /// sled's page cache.
    pub sled_cache_bytes: u64,
    /// A checkpoint runs when a shard applied this many entries since the last one.
    pub compact_after_entries: u64,
    /// A checkpoint runs at least this often when anything was written.
    pub checkpoint_interval_ms: u64,
    /// Raft tick.
    pub tick_interval_ms: u64,
}

impl NodeOptions {
    /// Options for a node with everything else at its default.
    pub fn new(node_id: NodeId, data_dir: PathBuf) -> NodeOptions {
        NodeOptions {
            node_id,
            data_dir,
            shard_count: 64,
            addresses: NodeAddresses::default(),
            limits: Limits::default(),
            request_timeout_ms: 5_000,
            wal_segment_bytes: 64 * 1024 * 1024,
            sled_cache_bytes: 128 * 1024 * 1024,
            compact_after_entries: 10_000,
            checkpoint_interval_ms: 30_000,
            tick_interval_ms: 100,
        }
    }
}

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("actor system: {0}")]
    Actor(String),
    #[error("invalid options: {0}")]
    InvalidOptions(String),
}

/// A running kernel.
pub struct Node {
    router: Router,
}

impl Node {
    /// Opens (or bootstraps) the data directory, recovers the WAL and state machine
    /// and starts every actor.
    pub async fn start(_options: NodeOptions) -> Result<Node, NodeError> {
        Err(NodeError::Actor("not yet built".into()))
    }

    /// The handle edges use to reach the kernel.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Stops accepting requests, drains in-flight work, makes the state machine
    /// durable and closes the WAL.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        Ok(())
    }
}
