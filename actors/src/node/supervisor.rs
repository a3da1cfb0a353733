//! `NodeSupervisor`: the root of a node's supervision tree.
//!
//! It starts in two phases. At spawn it runs the cluster listener (ractor_cluster's
//! `NodeServer`) and the Transport, which a joining node needs before it has any
//! data. `StartKernel` then starts the LogWriter, a replica for every shard placed
//! here (or with a log in the WAL) and the Ticker, and from then on follows the
//! cluster metadata: a shard newly placed here gets a replica, and every running
//! replica learns its shard's new replica set.
//!
//! It restarts whatever dies: a shard replica (recovering its log from the WAL and
//! its state from sled), the Transport, the Ticker. Restarts of a replica are
//! bounded: one that keeps dying is restarted with a growing delay (up to
//! `RESTART_DELAY_MAX_MS`), so a broken disk cannot turn into a busy loop.

use super::cluster_state::ClusterState;
use super::registry::{ShardRegistry, TransportSlot};
use crate::faults::NetworkFaults;
use crate::ids::{GroupId, NodeId, ShardId};
use crate::log_writer::writer::WalWriter;
use crate::log_writer::{job_queue, LogWriterActor, LogWriterHandle, LogWriterMsg};
use crate::metadata::ClusterMetadata;
use crate::shard::{
    Bootstrap, ReplicaOptions, ShardReplicaActor, ShardReplicaArgs, ShardReplicaMsg,
};
use crate::storage::raft_log::GroupLog;
use crate::ticker::{TickerActor, TickerArgs, TickerMsg};
use crate::transport::wire::PEER_FRAME_BYTES_MAX;
use crate::transport::{Inbox, TransportActor, TransportArgs, TransportMsg, TransportStatus};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::{NodeServer, NodeServerMessage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESTART_DELAY_MIN_MS: u64 = 20;
const RESTART_DELAY_MAX_MS: u64 = 2_000;
/// A replica that ran this long before dying starts over at the minimum delay.
const RESTART_HEALTHY_AFTER: Duration = Duration::from_secs(10);

pub enum NodeSupervisorMsg {
    /// Start the kernel's actors (phase two); answered once they run.
    StartKernel(
        Box<KernelArgs>,
        tokio::sync::oneshot::Sender<Result<(), String>>,
    ),
    /// Start (again) the replica of `shard`.
    StartShard(ShardId),
    /// The cluster metadata changed.
    MetadataChanged,
    /// Stop every child without restarting any.
    Stop(tokio::sync::oneshot::Sender<()>),
}

impl ractor::Message for NodeSupervisorMsg {}

/// What phase one needs: the cluster listener and the Transport.
pub struct NodeSupervisorArgs {
    pub node_id: NodeId,
    pub cluster: Arc<ClusterState>,
    /// Where the cluster listener binds.
    pub cluster_listen: SocketAddr,
    /// The cookie peers must present.
    pub cluster_secret: String,
    pub transport: TransportSlot,
    pub transport_status: Arc<TransportStatus>,
    pub faults: Arc<NetworkFaults>,
}

/// What phase two needs.
pub struct KernelArgs {
    pub registry: Arc<ShardRegistry>,
    pub writer: WalWriter,
    /// Logs recovered at start, handed to the first incarnation of each replica.
    pub logs: HashMap<GroupId, GroupLog>,
    pub replica_options: ReplicaOptions,
    pub tick_interval_ms: u64,
    /// The WAL thread's longest wait before a batch under load.
    pub wal_gather: Duration,
    pub inbox: Arc<dyn Inbox>,
}

struct RestartHistory {
    started_at: Instant,
    delay_ms: u64,
}

/// The kernel's actors, once phase two ran.
struct Kernel {
    registry: Arc<ShardRegistry>,
    log_writer: ActorRef<LogWriterMsg>,
    /// Queue of the writer thread, cloned into every replica; dropped at stop.
    log_writer_handle: Option<LogWriterHandle>,
    ticker: Option<ActorRef<TickerMsg>>,
    tick_interval_ms: u64,
    replica_options: ReplicaOptions,
    logs: HashMap<GroupId, GroupLog>,
    inbox: Arc<dyn Inbox>,
}

pub struct NodeSupervisorState {
    node_id: NodeId,
    cluster: Arc<ClusterState>,
    cluster_listen: SocketAddr,
    cluster_secret: String,
    node_server: Option<ActorRef<NodeServerMessage>>,
    transport: TransportSlot,
    transport_status: Arc<TransportStatus>,
    faults: Arc<NetworkFaults>,
    kernel: Option<Kernel>,
    shard_of_actor: HashMap<ActorId, ShardId>,
    history: HashMap<ShardId, RestartHistory>,
    metadata_watch: Option<tokio::task::JoinHandle<()>>,
    stopping: bool,
}

pub struct NodeSupervisor;

impl Actor for NodeSupervisor {
    type Msg = NodeSupervisorMsg;
    type State = NodeSupervisorState;
    type Arguments = NodeSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = NodeSupervisorState {
            node_id: args.node_id,
            cluster: args.cluster,
            cluster_listen: args.cluster_listen,
            cluster_secret: args.cluster_secret,
            node_server: None,
            transport: args.transport,
            transport_status: args.transport_status,
            faults: args.faults,
            kernel: None,
            shard_of_actor: HashMap::new(),
            history: HashMap::new(),
            metadata_watch: None,
            stopping: false,
        };
        start_node_server(&myself, &mut state).await?;
        start_transport(&myself, &mut state).await?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(watch) = state.metadata_watch.take() {
            watch.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeSupervisorMsg::StartKernel(args, reply) => {
                let result = start_kernel(&myself, state, *args).await;
                let _ = reply.send(result.map_err(|error| error.to_string()));
            }
            NodeSupervisorMsg::StartShard(shard) => {
                let released = state
                    .kernel
                    .as_ref()
                    .and_then(|kernel| kernel.registry.slot(shard))
                    .is_none_or(|slot| !slot.is_hosted() || slot.actor().is_some());
                if state.stopping || released {
                    return Ok(());
                }
                if let Err(error) = start_shard(&myself, state, shard).await {
                    tracing::error!(shard = shard.0, %error, "shard replica failed to start; retrying");
                    schedule_restart(&myself, state, shard);
                }
            }
            NodeSupervisorMsg::MetadataChanged => {
                if !state.stopping {
                    follow_metadata(&myself, state).await;
                }
            }
            NodeSupervisorMsg::Stop(reply) => {
                state.stopping = true;
                stop_children(state).await;
                let _ = reply.send(());
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match &event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let id = cell.get_id();
        if let Some(shard) = state.shard_of_actor.remove(&id) {
            if let Some(slot) = state
                .kernel
                .as_ref()
                .and_then(|kernel| kernel.registry.slot(shard))
            {
                if slot.actor().is_some_and(|actor| actor.get_id() == id) {
                    slot.set_actor(None);
                    slot.gauges.set_local_reads(false);
                }
            }
            if state.stopping {
                return Ok(());
            }
            tracing::warn!(shard = shard.0, %reason, "shard replica died; restarting it from disk");
            if let Some(kernel) = &state.kernel {
                kernel.registry.count_restart();
            }
            schedule_restart(&myself, state, shard);
        } else if state.stopping {
            return Ok(());
        } else if state
            .transport
            .get()
            .is_some_and(|transport| transport.get_id() == id)
        {
            tracing::warn!(%reason, "transport died; restarting it");
            state.transport.set(None);
            start_transport(&myself, state).await?;
        } else if state
            .node_server
            .as_ref()
            .is_some_and(|server| server.get_id() == id)
        {
            tracing::error!(%reason, "cluster listener died; restarting it and the transport");
            state.node_server = None;
            start_node_server(&myself, state).await?;
            if let Some(transport) = state.transport.get() {
                transport.stop(Some("cluster listener restarted".into()));
            }
        } else if let Some(kernel) = state.kernel.as_mut() {
            if id == kernel.log_writer.get_id() {
                // Without its LogWriter the node can make nothing durable.
                tracing::error!(%reason, "LogWriter died; the node stops serving writes");
                kernel.registry.set_log_writer(None);
            } else if kernel
                .ticker
                .as_ref()
                .is_some_and(|ticker| ticker.get_id() == id)
            {
                kernel.ticker = None;
                tracing::warn!(%reason, "ticker died; restarting it");
                start_ticker(&myself, state).await?;
            }
        }
        Ok(())
    }
}

async fn start_node_server(
    myself: &ActorRef<NodeSupervisorMsg>,
    state: &mut NodeSupervisorState,
) -> Result<(), ActorProcessingErr> {
    let listen = state.cluster_listen;
    let server = NodeServer::new(
        listen.port(),
        state.cluster_secret.clone(),
        format!("mimori-{}", state.node_id.0),
        listen.ip().to_string(),
        None,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip())
    .with_max_inbound_frame_size(PEER_FRAME_BYTES_MAX);
    let (node_server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
    state.node_server = Some(node_server);
    Ok(())
}

async fn start_transport(
    myself: &ActorRef<NodeSupervisorMsg>,
    state: &mut NodeSupervisorState,
) -> Result<(), ActorProcessingErr> {
    let node_server = state
        .node_server
        .clone()
        .ok_or("the cluster listener is not running")?;
    let (transport, _) = Actor::spawn_linked(
        None,
        TransportActor,
        TransportArgs {
            node_id: state.node_id,
            cluster: Arc::clone(&state.cluster),
            node_server,
            status: Arc::clone(&state.transport_status),
            faults: Arc::clone(&state.faults),
        },
        myself.get_cell(),
    )
    .await?;
    if let Some(kernel) = &state.kernel {
        transport.send_message(TransportMsg::Attach(Arc::clone(&kernel.inbox)))?;
    }
    state.transport.set(Some(transport));
    Ok(())
}

async fn start_kernel(
    myself: &ActorRef<NodeSupervisorMsg>,
    state: &mut NodeSupervisorState,
    args: KernelArgs,
) -> Result<(), ActorProcessingErr> {
    let (handle, log_writer_args) = job_queue(
        args.writer,
        args.registry.wal_failed.clone(),
        args.wal_gather,
    );
    let (log_writer, _) =
        Actor::spawn_linked(None, LogWriterActor, log_writer_args, myself.get_cell()).await?;
    args.registry.set_log_writer(Some(log_writer.clone()));
    let metadata = state.cluster.metadata();
    for slot in args.registry.all_slots() {
        let placement = metadata
            .as_ref()
            .and_then(|metadata| metadata.shard(slot.shard));
        let placed = placement.is_some_and(|placement| placement.replicas.contains(&state.node_id));
        let released = placement.is_some_and(|placement| placement.released(state.node_id));
        let has_log = args.logs.contains_key(&GroupId::shard(slot.shard));
        slot.set_hosted(placed || (has_log && !released));
    }
    if let Some(transport) = state.transport.get() {
        transport.send_message(TransportMsg::Attach(Arc::clone(&args.inbox)))?;
    }
    state.kernel = Some(Kernel {
        registry: args.registry,
        log_writer,
        log_writer_handle: Some(handle),
        ticker: None,
        tick_interval_ms: args.tick_interval_ms,
        replica_options: args.replica_options,
        logs: args.logs,
        inbox: args.inbox,
    });
    let hosted: Vec<ShardId> = state
        .kernel
        .as_ref()
        .map(|kernel| {
            kernel
                .registry
                .all_slots()
                .iter()
                .filter(|slot| slot.is_hosted())
                .map(|slot| slot.shard)
                .collect()
        })
        .unwrap_or_default();
    for shard in hosted {
        start_shard(myself, state, shard).await?;
    }
    start_ticker(myself, state).await?;
    let mut changes = state.cluster.subscribe();
    let supervisor = myself.clone();
    state.metadata_watch = Some(tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            if supervisor
                .send_message(NodeSupervisorMsg::MetadataChanged)
                .is_err()
            {
                return;
            }
        }
    }));
    Ok(())
}

/// Starts replicas for shards newly placed here, tells running ones their new
/// replica sets, and stops those moved off this node once the move completed (the
/// shard's group no longer counts this node).
async fn follow_metadata(myself: &ActorRef<NodeSupervisorMsg>, state: &mut NodeSupervisorState) {
    let Some(metadata) = state.cluster.metadata() else {
        return;
    };
    let Some(kernel) = &state.kernel else { return };
    let registry = Arc::clone(&kernel.registry);
    for slot in registry.all_slots() {
        let Some(placement) = metadata.shard(slot.shard) else {
            continue;
        };
        if let Some(actor) = slot.actor() {
            if placement.released(state.node_id) {
                tracing::info!(
                    shard = slot.shard.0,
                    "shard moved off this node; stopping its replica"
                );
                state.shard_of_actor.remove(&actor.get_id());
                // Unhosted first: from now on the Router sends the shard's requests
                // to its leader instead of finding no replica here.
                slot.set_hosted(false);
                slot.set_actor(None);
                slot.gauges.set_local_reads(false);
                actor.stop(Some("moved off this node".into()));
                continue;
            }
            let _ = actor.send_message(ShardReplicaMsg::PlacementChanged(
                placement.replicas.clone(),
            ));
        } else if !slot.is_hosted() && placement.replicas.contains(&state.node_id) {
            slot.set_hosted(true);
            if let Err(error) = start_shard(myself, state, slot.shard).await {
                tracing::error!(shard = slot.shard.0, %error, "shard replica failed to start; retrying");
                schedule_restart(myself, state, slot.shard);
            }
        }
    }
}

/// How a replica with a blank log starts: a new cluster's first node creates the
/// group; everyone else waits to be added by its leader.
fn bootstrap_of(metadata: Option<&ClusterMetadata>, node: NodeId, shard: ShardId) -> Bootstrap {
    match metadata.and_then(|metadata| metadata.shard(shard)) {
        // Only the placement a cluster starts with (epoch 1): a later single-node
        // placement is the end of a move, and the group exists elsewhere.
        Some(placement) if placement.replicas == [node] && placement.epoch == 1 => {
            Bootstrap::Voters(vec![node])
        }
        _ => Bootstrap::Join,
    }
}

async fn start_shard(
    myself: &ActorRef<NodeSupervisorMsg>,
    state: &mut NodeSupervisorState,
    shard: ShardId,
) -> Result<(), ActorProcessingErr> {
    let metadata = state.cluster.metadata();
    let Some(kernel) = state.kernel.as_mut() else {
        return Err("the kernel is not running".into());
    };
    if kernel.registry.slot(shard).is_none() {
        return Err(format!("no shard {shard} on this node").into());
    }
    let Some(log_writer) = kernel.log_writer_handle.clone() else {
        return Err("the node is stopping".into());
    };
    let placement = metadata
        .as_ref()
        .and_then(|metadata| metadata.shard(shard))
        .map(|placement| placement.replicas.clone())
        .unwrap_or_default();
    let args = ShardReplicaArgs {
        shard,
        node_id: state.node_id,
        registry: Arc::clone(&kernel.registry),
        log: kernel.logs.remove(&GroupId::shard(shard)),
        log_writer,
        options: kernel.replica_options,
        bootstrap: bootstrap_of(metadata.as_deref(), state.node_id, shard),
        placement,
    };
    let (actor, _) = Actor::spawn_linked(None, ShardReplicaActor, args, myself.get_cell()).await?;
    state.shard_of_actor.insert(actor.get_id(), shard);
    if let Some(slot) = kernel.registry.slot(shard) {
        slot.set_actor(Some(actor));
    }
    state
        .history
        .entry(shard)
        .and_modify(|history| history.started_at = Instant::now())
        .or_insert(RestartHistory {
            started_at: Instant::now(),
            delay_ms: RESTART_DELAY_MIN_MS,
        });
    Ok(())
}

fn schedule_restart(
    myself: &ActorRef<NodeSupervisorMsg>,
    state: &mut NodeSupervisorState,
    shard: ShardId,
) {
    let history = state.history.entry(shard).or_insert(RestartHistory {
        started_at: Instant::now(),
        delay_ms: RESTART_DELAY_MIN_MS,
    });
    let delay_ms = if history.started_at.elapsed() >= RESTART_HEALTHY_AFTER {
        RESTART_DELAY_MIN_MS
    } else {
        history.delay_ms
    };
    history.delay_ms = (delay_ms * 2).min(RESTART_DELAY_MAX_MS);
    myself.send_after(Duration::from_millis(delay_ms), move || {
        NodeSupervisorMsg::StartShard(shard)
    });
}

async fn start_ticker(
    myself: &ActorRef<NodeSupervisorMsg>,
    state: &mut NodeSupervisorState,
) -> Result<(), ActorProcessingErr> {
    let Some(kernel) = state.kernel.as_mut() else {
        return Ok(());
    };
    let (ticker, _) = Actor::spawn_linked(
        None,
        TickerActor,
        TickerArgs {
            registry: kernel.registry.clone(),
            tick_interval_ms: kernel.tick_interval_ms,
        },
        myself.get_cell(),
    )
    .await?;
    kernel.ticker = Some(ticker);
    Ok(())
}

/// Stops the replicas, drains the WAL, then the LogWriter, Transport and listener.
async fn stop_children(state: &mut NodeSupervisorState) {
    if let Some(watch) = state.metadata_watch.take() {
        watch.abort();
    }
    if let Some(kernel) = state.kernel.as_mut() {
        if let Some(ticker) = kernel.ticker.take() {
            ticker.stop(None);
        }
        for slot in kernel.registry.all_slots() {
            if let Some(actor) = slot.actor() {
                actor.stop(None);
            }
            slot.set_actor(None);
        }
        let (flushed, done) = tokio::sync::oneshot::channel();
        if kernel
            .log_writer
            .send_message(LogWriterMsg::Flush { reply: flushed })
            .is_ok()
        {
            let _ = done.await;
        }
        kernel.log_writer_handle = None;
        kernel.log_writer.stop(None);
        kernel.registry.set_log_writer(None);
    }
    if let Some(transport) = state.transport.get() {
        transport.stop(None);
    }
    state.transport.set(None);
    if let Some(server) = state.node_server.take() {
        server.stop(None);
    }
}
