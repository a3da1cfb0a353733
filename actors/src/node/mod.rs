//! A node's kernel: boots the supervision tree (LogWriter, Ticker, shard replicas)
//! over one data directory and hands out the [`Router`].

pub mod checkpoint;
pub mod identity;
pub mod registry;
pub mod supervisor;

use crate::ids::{NodeId, ShardId};
use crate::kv::{Limits, NodeAddresses};
use crate::log_writer::writer::WalWriter;
use crate::router::{Router, RouterContext};
use crate::shard::ReplicaOptions;
use crate::storage::state_machine::StateMachineDb;
use crate::storage::wal::{Wal, WalOptions};
use crate::storage::wal_record::RecoveredLogs;
use checkpoint::CheckpointPolicy;
use ractor::{Actor, ActorRef};
use registry::ShardRegistry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use supervisor::{NodeSupervisor, NodeSupervisorArgs, NodeSupervisorMsg};
use tokio::sync::watch;

/// Most shards a cluster may have.
pub const SHARD_COUNT_MAX: u32 = 4_096;

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
            compact_after_entries: 5_000,
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
    supervisor: ActorRef<NodeSupervisorMsg>,
    supervisor_task: tokio::task::JoinHandle<()>,
    registry: Arc<ShardRegistry>,
    checkpointer: tokio::task::JoinHandle<()>,
    stop_checkpointer: watch::Sender<bool>,
}

impl Node {
    /// Opens (or bootstraps) the data directory, recovers the WAL and state machine
    /// and starts every actor.
    pub async fn start(options: NodeOptions) -> Result<Node, NodeError> {
        if options.node_id.0 == 0 {
            return Err(NodeError::InvalidOptions("node id 0 is reserved".into()));
        }
        if options.shard_count == 0 || options.shard_count > SHARD_COUNT_MAX {
            return Err(NodeError::InvalidOptions(format!(
                "shard count must be 1..={SHARD_COUNT_MAX}, not {}",
                options.shard_count
            )));
        }
        let started_at = Instant::now();
        let storage = |error: String| NodeError::Storage(error);
        let data_dir = options.data_dir.clone();
        let wal_dir = data_dir.join("wal");
        let state_dir = data_dir.join("state");
        for dir in [&data_dir, &wal_dir, &state_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|error| storage(format!("{}: {error}", dir.display())))?;
        }
        let identity = identity::load_or_create(&data_dir, options.node_id, options.shard_count)
            .map_err(NodeError::InvalidOptions)?;
        let shard_count = identity.shard_count;

        let sled_cache_bytes = options.sled_cache_bytes;
        let segment_bytes_max = options.wal_segment_bytes;
        let (db, writer, recovered) = tokio::task::spawn_blocking(move || {
            let db = StateMachineDb::open(&state_dir, sled_cache_bytes)
                .map_err(|error| format!("state machine: {error}"))?;
            let (wal, recovery) = Wal::open(&wal_dir, WalOptions { segment_bytes_max })
                .map_err(|error| error.to_string())?;
            let mut recovered = RecoveredLogs::default();
            let mut failure = None;
            wal.replay(&mut |position, payload| {
                if let Err(error) = recovered.apply(position, payload, None) {
                    failure.get_or_insert(error.to_string());
                }
                Ok(())
            })
            .map_err(|error| error.to_string())?;
            if let Some(failure) = failure {
                return Err(failure);
            }
            recovered.finish()?;
            tracing::info!(?recovery, groups = recovered.logs.len(), "WAL recovered");
            let writer = WalWriter::new(wal, segment_bytes_max, &recovered);
            Ok::<_, String>((db, writer, recovered))
        })
        .await
        .map_err(|error| NodeError::Storage(error.to_string()))?
        .map_err(storage)?;

        let stores = (0..shard_count)
            .map(|shard| db.shard(ShardId(shard)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| storage(error.to_string()))?;
        let registry = Arc::new(ShardRegistry::new(db, stores));
        let (supervisor, supervisor_task) = Actor::spawn(
            None,
            NodeSupervisor,
            NodeSupervisorArgs {
                node_id: options.node_id,
                registry: registry.clone(),
                writer,
                logs: recovered.logs,
                replica_options: ReplicaOptions::default(),
                tick_interval_ms: options.tick_interval_ms,
            },
        )
        .await
        .map_err(|error| NodeError::Actor(error.to_string()))?;

        let (stop_checkpointer, stopped) = watch::channel(false);
        let checkpointer = tokio::spawn(checkpoint::run_checkpointer(
            registry.clone(),
            CheckpointPolicy {
                compact_after_entries: options.compact_after_entries,
                interval: Duration::from_millis(options.checkpoint_interval_ms),
            },
            stopped,
        ));
        let router = Router::new(RouterContext {
            node_id: options.node_id,
            cluster_id: identity.cluster_id,
            addresses: options.addresses.clone(),
            limits: options.limits,
            request_timeout: Duration::from_millis(u64::from(options.request_timeout_ms)),
            registry: registry.clone(),
            started_at,
        });
        Ok(Node {
            router,
            supervisor,
            supervisor_task,
            registry,
            checkpointer,
            stop_checkpointer,
        })
    }

    /// The handle edges use to reach the kernel.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Waits until every local shard has a leader, or `timeout` passes.
    pub async fn wait_until_serving(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.router.health().await.serving {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops accepting requests, drains in-flight work, makes the state machine
    /// durable and closes the WAL.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.router.close();
        let _ = self.stop_checkpointer.send(true);
        let _ = self.checkpointer.await;
        // A last checkpoint makes the next start replay almost nothing.
        let checkpointed = checkpoint::checkpoint(&self.registry).await;
        let (stopped, done) = tokio::sync::oneshot::channel();
        if self
            .supervisor
            .send_message(NodeSupervisorMsg::Stop(stopped))
            .is_ok()
        {
            let _ = done.await;
        }
        let _ = self.supervisor_task.await;
        let db = self.registry.db.clone();
        tokio::task::spawn_blocking(move || db.make_durable())
            .await
            .map_err(|error| NodeError::Storage(error.to_string()))?
            .map_err(|error| NodeError::Storage(error.to_string()))?;
        checkpointed.map_err(NodeError::Storage)
    }
}
