//! A node's kernel: boots the supervision tree over one data directory, joins or
//! bootstraps the cluster, and hands out the [`Router`].
//!
//! Start order: bind the gossip socket and start the cluster listener and Transport
//! (so a port in use fails before any data is touched, and a joining node can talk
//! to the cluster), settle the node's identity (existing, bootstrapped, or obtained
//! by joining), open the WAL and state machine, then start the LogWriter, the shard
//! replicas and the Ticker, and finally the checkpointer.

pub mod checkpoint;
pub mod cluster_state;
pub mod identity;
pub mod inbox;
pub mod index_builder;
pub mod join;
pub mod metadata_follower;
pub mod rebalancer;
pub mod registry;
pub mod supervisor;

use crate::faults::NetworkFaults;
use crate::ids::{NodeId, ShardId};
use crate::kv::{Limits, NodeAddresses};
use crate::log_writer::writer::WalWriter;
use crate::membership::actor::{GossipTiming, MembershipArgs};
use crate::membership::identity::MemberIdentity;
use crate::membership::keeper::MembershipKeeper;
use crate::membership::packet::PacketKey;
use crate::membership::seed_probe::ProbeReply;
use crate::membership::status::MembershipStatus;
use crate::metadata::{ClusterMetadata, NodeRecord, NodeState, REPLICATION_FACTOR_DEFAULT};
use crate::metrics::NodeMetrics;
use crate::router::{Router, RouterContext};
use crate::shard::ReplicaOptions;
use crate::storage::state_machine::StateMachineDb;
use crate::storage::wal::{Wal, WalOptions};
use crate::storage::wal_record::RecoveredLogs;
use crate::transport::TransportStatus;
use checkpoint::CheckpointPolicy;
use cluster_state::ClusterState;
use identity::NodeIdentity;
use ractor::{Actor, ActorRef};
use registry::{ShardRegistry, TransportSlot};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use supervisor::{KernelArgs, NodeSupervisor, NodeSupervisorArgs, NodeSupervisorMsg};
use tokio::sync::watch;

/// Most shards a cluster may have.
pub const SHARD_COUNT_MAX: u32 = 4_096;
/// The cluster secret used when none is configured (fine on a laptop, not in
/// production: anyone who can reach the cluster port could join).
pub const CLUSTER_SECRET_DEFAULT: &str = "mimori-development-secret";

/// Everything the kernel needs to start; the edges build it from config.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Shards of a new cluster; ignored (the stored value wins) when the data
    /// directory is already bootstrapped, or when joining.
    pub shard_count: u32,
    /// Replicas per shard of a new cluster.
    pub replication_factor: u32,
    pub addresses: NodeAddresses,
    /// Gossip addresses of existing nodes, for a node that has not joined yet.
    pub join: Vec<String>,
    /// How long a join may take before the node gives up.
    pub join_timeout_ms: u64,
    /// The secret peers' cluster connections must present.
    pub cluster_secret: String,
    pub limits: Limits,
    /// How long a request may wait for its shard before it fails.
    pub request_timeout_ms: u32,
    /// A WAL segment is closed and a new one started past this size.
    pub wal_segment_bytes: u64,
    /// Under load, the WAL thread waits up to this long (microseconds) before a
    /// batch so that more writes share its sync; zero never waits.
    pub wal_gather_us: u64,
    /// sled's page cache.
    pub sled_cache_bytes: u64,
    /// A checkpoint runs when a shard applied this many entries since the last one.
    pub compact_after_entries: u64,
    /// A checkpoint runs at least this often when anything was written.
    pub checkpoint_interval_ms: u64,
    /// Raft tick.
    pub tick_interval_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomized up to twice).
    pub election_ticks: u64,
    /// Gossip failure detection.
    pub gossip: GossipTiming,
    /// Pacing of the rebalancer (on the metadata group's leader).
    pub rebalance: rebalancer::RebalanceOptions,
    /// Whether the admin protocol may kill actors and cut links (tests and the
    /// chaos runner); off in production.
    pub fault_injection: bool,
}

impl NodeOptions {
    /// Options for a node with everything else at its default.
    pub fn new(node_id: NodeId, data_dir: PathBuf) -> NodeOptions {
        NodeOptions {
            node_id,
            data_dir,
            shard_count: 64,
            replication_factor: REPLICATION_FACTOR_DEFAULT,
            // Port 0: any free port, which suits a single node in a test; a node
            // others join must be given real addresses.
            addresses: NodeAddresses {
                http: String::new(),
                admin: String::new(),
                cluster: "127.0.0.1:0".into(),
                gossip: "127.0.0.1:0".into(),
            },
            join: Vec::new(),
            join_timeout_ms: 60_000,
            cluster_secret: CLUSTER_SECRET_DEFAULT.into(),
            limits: Limits::default(),
            request_timeout_ms: 5_000,
            wal_segment_bytes: 64 * 1024 * 1024,
            wal_gather_us: 0,
            sled_cache_bytes: 128 * 1024 * 1024,
            compact_after_entries: 5_000,
            checkpoint_interval_ms: 30_000,
            tick_interval_ms: 100,
            election_ticks: 10,
            gossip: GossipTiming::default(),
            rebalance: rebalancer::RebalanceOptions::default(),
            fault_injection: false,
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
    #[error("cannot listen on {address} ({purpose}): {reason}")]
    Bind {
        address: String,
        purpose: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Join(#[from] join::JoinError),
}

/// A running kernel.
pub struct Node {
    router: Router,
    supervisor: ActorRef<NodeSupervisorMsg>,
    supervisor_task: tokio::task::JoinHandle<()>,
    registry: Arc<ShardRegistry>,
    checkpointer: tokio::task::JoinHandle<()>,
    stop_checkpointer: watch::Sender<bool>,
    membership: MembershipKeeper,
    rebalancer: tokio::task::JoinHandle<()>,
    index_builder: tokio::task::JoinHandle<()>,
    metadata_follower: tokio::task::JoinHandle<()>,
}

fn address(text: &str, purpose: &'static str) -> Result<SocketAddr, NodeError> {
    text.parse().map_err(|_| NodeError::Bind {
        address: text.to_string(),
        purpose,
        reason: "not an IP address and port".into(),
    })
}

impl Node {
    /// Opens (or bootstraps, or joins a cluster with) the data directory, recovers
    /// the WAL and state machine and starts every actor.
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
        options
            .gossip
            .validate()
            .map_err(NodeError::InvalidOptions)?;
        let started_at = Instant::now();
        let storage = |error: String| NodeError::Storage(error);
        let data_dir = options.data_dir.clone();
        let wal_dir = data_dir.join("wal");
        let state_dir = data_dir.join("state");
        for dir in [&data_dir, &wal_dir, &state_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|error| storage(format!("{}: {error}", dir.display())))?;
        }
        let identity =
            identity::load(&data_dir, options.node_id).map_err(NodeError::InvalidOptions)?;
        let cluster = Arc::new(ClusterState::open(&data_dir).map_err(storage)?);

        let gossip_address = address(&options.addresses.gossip, "gossip")?;
        let gossip = tokio::net::UdpSocket::bind(gossip_address)
            .await
            .map_err(|error| NodeError::Bind {
                address: gossip_address.to_string(),
                purpose: "gossip",
                reason: error.to_string(),
            })?;
        let cluster_listen = address(&options.addresses.cluster, "cluster")?;
        // ractor_cluster reports a port in use only as a failed actor start.
        std::net::TcpListener::bind(cluster_listen).map_err(|error| NodeError::Bind {
            address: cluster_listen.to_string(),
            purpose: "cluster",
            reason: error.to_string(),
        })?;
        let transport = TransportSlot::default();
        let transport_status = Arc::new(TransportStatus::default());
        let faults = Arc::new(NetworkFaults::default());
        let (supervisor, supervisor_task) = Actor::spawn(
            None,
            NodeSupervisor,
            NodeSupervisorArgs {
                node_id: options.node_id,
                cluster: Arc::clone(&cluster),
                cluster_listen,
                cluster_secret: options.cluster_secret.clone(),
                transport: Arc::clone(&transport),
                transport_status: Arc::clone(&transport_status),
                faults: Arc::clone(&faults),
            },
        )
        .await
        .map_err(|error| NodeError::Actor(error.to_string()))?;

        let settled = settle_identity(&options, identity, &cluster, &transport).await;
        let identity = match settled {
            Ok(identity) => identity,
            Err(error) => {
                supervisor.stop(None);
                let _ = supervisor_task.await;
                return Err(error);
            }
        };
        let shard_count = identity.shard_count;
        let membership_status = Arc::new(MembershipStatus::default());
        let spawned = MembershipKeeper::start(MembershipArgs {
            identity: MemberIdentity {
                node: options.node_id,
                addresses: options.addresses.clone(),
                incarnation: crate::membership::life_incarnation(),
            },
            socket: Arc::new(gossip),
            key: PacketKey::new(Some(&options.cluster_secret)),
            timing: options.gossip,
            probe_reply: ProbeReply {
                node_id: options.node_id,
                cluster: options.addresses.cluster.clone(),
            },
            cluster: Arc::clone(&cluster),
            transport: Arc::clone(&transport),
            status: Arc::clone(&membership_status),
            faults: Arc::clone(&faults),
        })
        .await;
        let membership = match spawned {
            Ok(keeper) => keeper,
            Err(error) => {
                supervisor.stop(None);
                let _ = supervisor_task.await;
                return Err(NodeError::Actor(error));
            }
        };

        let sled_cache_bytes = options.sled_cache_bytes;
        let segment_bytes_max = options.wal_segment_bytes;
        let metrics = Arc::new(NodeMetrics::new());
        let writer_metrics = Arc::clone(&metrics);
        let (db, writer, recovered) = tokio::task::spawn_blocking(move || {
            let db = StateMachineDb::open(&state_dir, sled_cache_bytes)
                .map_err(|error| format!("state machine: {error}"))?;
            let wal_options = WalOptions {
                segment_bytes_max,
                ..WalOptions::default()
            };
            let (wal, recovery) =
                Wal::open(&wal_dir, wal_options).map_err(|error| error.to_string())?;
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
            let writer = WalWriter::new(wal, segment_bytes_max, &recovered, writer_metrics);
            Ok::<_, String>((db, writer, recovered))
        })
        .await
        .map_err(|error| NodeError::Storage(error.to_string()))?
        .map_err(storage)?;

        // One store per data shard, and one more for the metadata group.
        let stores = (0..=shard_count)
            .map(|shard| db.shard(ShardId(shard)).map(|(store, _)| store))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| storage(error.to_string()))?;
        let registry = Arc::new(ShardRegistry::new(
            db,
            stores,
            Arc::clone(&transport),
            metrics,
        ));
        let router = Router::new(RouterContext {
            node_id: options.node_id,
            cluster_id: identity.cluster_id.clone(),
            addresses: options.addresses.clone(),
            limits: options.limits,
            request_timeout: Duration::from_millis(u64::from(options.request_timeout_ms)),
            registry: registry.clone(),
            cluster: Arc::clone(&cluster),
            transport_status,
            membership: Arc::clone(&membership_status),
            membership_actor: membership.slot(),
            faults,
            fault_injection: options.fault_injection,
            started_at,
        });
        let replica_options = ReplicaOptions {
            election_ticks: options.election_ticks.max(2),
            heartbeat_ticks: 1,
            log_retain_entries_max: options.compact_after_entries,
            randomized_elections: true,
        };
        let (started, outcome) = tokio::sync::oneshot::channel();
        supervisor
            .send_message(NodeSupervisorMsg::StartKernel(
                Box::new(KernelArgs {
                    registry: registry.clone(),
                    writer,
                    logs: recovered.logs,
                    replica_options,
                    tick_interval_ms: options.tick_interval_ms,
                    wal_gather: Duration::from_micros(options.wal_gather_us),
                    inbox: Arc::new(inbox::NodeInbox {
                        registry: registry.clone(),
                        router: router.clone(),
                    }),
                }),
                started,
            ))
            .map_err(|error| NodeError::Actor(error.to_string()))?;
        outcome
            .await
            .map_err(|_| NodeError::Actor("the supervisor stopped while starting".into()))?
            .map_err(NodeError::Actor)?;

        let (stop_checkpointer, stopped) = watch::channel(false);
        let checkpointer = tokio::spawn(checkpoint::run_checkpointer(
            registry.clone(),
            CheckpointPolicy {
                compact_after_entries: options.compact_after_entries,
                interval: Duration::from_millis(options.checkpoint_interval_ms),
            },
            stopped,
        ));
        let rebalancer = tokio::spawn(rebalancer::run(
            router.clone(),
            Arc::clone(&cluster),
            membership_status,
            options.rebalance,
            stop_checkpointer.subscribe(),
        ));
        let index_builder = tokio::spawn(index_builder::run(
            router.clone(),
            registry.clone(),
            Arc::clone(&cluster),
            stop_checkpointer.subscribe(),
        ));
        let metadata_follower = tokio::spawn(metadata_follower::run(
            registry.clone(),
            Arc::clone(&cluster),
            stop_checkpointer.subscribe(),
        ));
        Ok(Node {
            router,
            supervisor,
            supervisor_task,
            registry,
            checkpointer,
            stop_checkpointer,
            membership,
            rebalancer,
            index_builder,
            metadata_follower,
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
        // The edges have drained their requests: leave now, so peers see this node
        // down at once rather than after the suspicion timeout.
        self.membership.leave_and_stop().await;
        self.router.close();
        let _ = self.stop_checkpointer.send(true);
        let _ = self.checkpointer.await;
        let _ = self.rebalancer.await;
        let _ = self.index_builder.await;
        let _ = self.metadata_follower.await;
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

/// The node's identity: the existing one, or a new cluster's, or one obtained by
/// joining. The cluster metadata is in place when this returns.
async fn settle_identity(
    options: &NodeOptions,
    identity: Option<NodeIdentity>,
    cluster: &ClusterState,
    transport: &TransportSlot,
) -> Result<NodeIdentity, NodeError> {
    let data_dir = &options.data_dir;
    let record = |incarnation: u64| NodeRecord {
        id: options.node_id,
        addresses: options.addresses.clone(),
        state: NodeState::Active,
        incarnation,
    };
    if let Some(identity) = identity {
        if cluster.metadata().is_none() {
            // A data directory of a single node from before clusters existed.
            let metadata = ClusterMetadata::bootstrap(
                identity.cluster_id.clone(),
                identity.shard_count,
                options.replication_factor,
                record(identity.incarnation),
            );
            cluster.install(metadata).map_err(NodeError::Storage)?;
        }
        return Ok(identity);
    }
    if options.join.is_empty() {
        let incarnation = rand::random();
        let identity = identity::new_identity(
            format!("{:032x}", rand::random::<u128>()),
            options.node_id,
            options.shard_count,
            incarnation,
        );
        let metadata = ClusterMetadata::bootstrap(
            identity.cluster_id.clone(),
            identity.shard_count,
            options.replication_factor,
            record(incarnation),
        );
        cluster.install(metadata).map_err(NodeError::Storage)?;
        identity::create(data_dir, &identity).map_err(NodeError::Storage)?;
        tracing::info!(cluster_id = %identity.cluster_id, "bootstrapped a new cluster");
        return Ok(identity);
    }
    let incarnation =
        identity::joining_incarnation(data_dir, options.node_id).map_err(NodeError::Storage)?;
    let transport = transport
        .get()
        .ok_or_else(|| NodeError::Actor("the transport is not running".into()))?;
    let metadata = join::join(
        &transport,
        &options.join,
        record(incarnation),
        Duration::from_millis(options.join_timeout_ms),
    )
    .await?;
    let identity = identity::new_identity(
        metadata.cluster_id.clone(),
        options.node_id,
        metadata.shard_count,
        incarnation,
    );
    cluster.install(metadata).map_err(NodeError::Storage)?;
    identity::create(data_dir, &identity).map_err(NodeError::Storage)?;
    tracing::info!(cluster_id = %identity.cluster_id, "joined the cluster");
    Ok(identity)
}
