//! `NodeSupervisor`: the root of a node's supervision tree. It starts the LogWriter,
//! the shard replicas and the Ticker, and restarts a shard replica that was killed or
//! panicked; the new replica recovers its log from the WAL and its state from sled.
//!
//! Restarts are bounded: a replica that keeps dying is restarted with a growing delay
//! (up to `RESTART_DELAY_MAX_MS`), so a broken disk cannot turn into a busy loop.

use super::registry::ShardRegistry;
use crate::ids::{GroupId, NodeId, ShardId};
use crate::log_writer::writer::WalWriter;
use crate::log_writer::{job_queue, LogWriterActor, LogWriterHandle, LogWriterMsg};
use crate::shard::{ReplicaOptions, ShardReplicaActor, ShardReplicaArgs};
use crate::storage::raft_log::GroupLog;
use crate::ticker::{TickerActor, TickerArgs, TickerMsg};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESTART_DELAY_MIN_MS: u64 = 20;
const RESTART_DELAY_MAX_MS: u64 = 2_000;
/// A replica that ran this long before dying starts over at the minimum delay.
const RESTART_HEALTHY_AFTER: Duration = Duration::from_secs(10);

pub enum NodeSupervisorMsg {
    /// Start (again) the replica of `shard`.
    StartShard(ShardId),
    /// Stop every child without restarting any.
    Stop(tokio::sync::oneshot::Sender<()>),
}

impl ractor::Message for NodeSupervisorMsg {}

pub struct NodeSupervisorArgs {
    pub node_id: NodeId,
    pub registry: Arc<ShardRegistry>,
    pub writer: WalWriter,
    /// Logs recovered at start, handed to the first incarnation of each replica.
    pub logs: HashMap<GroupId, GroupLog>,
    pub replica_options: ReplicaOptions,
    pub tick_interval_ms: u64,
}

struct RestartHistory {
    started_at: Instant,
    delay_ms: u64,
}

pub struct NodeSupervisorState {
    node_id: NodeId,
    registry: Arc<ShardRegistry>,
    log_writer: ActorRef<LogWriterMsg>,
    /// Queue of the writer thread, cloned into every replica; dropped at stop.
    log_writer_handle: Option<LogWriterHandle>,
    ticker: Option<ActorRef<TickerMsg>>,
    tick_interval_ms: u64,
    replica_options: ReplicaOptions,
    logs: HashMap<GroupId, GroupLog>,
    shard_of_actor: HashMap<ActorId, ShardId>,
    history: HashMap<ShardId, RestartHistory>,
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
        let (handle, log_writer_args) = job_queue(args.writer, args.registry.wal_failed.clone());
        let (log_writer, _) =
            Actor::spawn_linked(None, LogWriterActor, log_writer_args, myself.get_cell()).await?;
        args.registry.set_log_writer(Some(log_writer.clone()));
        let mut state = NodeSupervisorState {
            node_id: args.node_id,
            registry: args.registry,
            log_writer,
            log_writer_handle: Some(handle),
            ticker: None,
            tick_interval_ms: args.tick_interval_ms,
            replica_options: args.replica_options,
            logs: args.logs,
            shard_of_actor: HashMap::new(),
            history: HashMap::new(),
            stopping: false,
        };
        for shard in 0..state.registry.shard_count() {
            start_shard(&myself, &mut state, ShardId(shard)).await?;
        }
        start_ticker(&myself, &mut state).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeSupervisorMsg::StartShard(shard) => {
                if state.stopping {
                    return Ok(());
                }
                if let Err(error) = start_shard(&myself, state, shard).await {
                    tracing::error!(shard = shard.0, %error, "shard replica failed to start; retrying");
                    schedule_restart(&myself, state, shard);
                }
            }
            NodeSupervisorMsg::Stop(reply) => {
                state.stopping = true;
                if let Some(ticker) = state.ticker.take() {
                    ticker.stop(None);
                }
                for slot in state.registry.slots() {
                    if let Some(actor) = slot.actor() {
                        actor.stop(None);
                    }
                    slot.set_actor(None);
                }
                let (flushed, done) = tokio::sync::oneshot::channel();
                if state
                    .log_writer
                    .send_message(LogWriterMsg::Flush { reply: flushed })
                    .is_ok()
                {
                    let _ = done.await;
                }
                state.log_writer_handle = None;
                state.log_writer.stop(None);
                state.registry.set_log_writer(None);
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
            if let Some(slot) = state.registry.slot(shard) {
                if slot.actor().is_some_and(|actor| actor.get_id() == id) {
                    slot.set_actor(None);
                    slot.gauges.set_local_reads(false);
                }
            }
            if state.stopping {
                return Ok(());
            }
            tracing::warn!(shard = shard.0, %reason, "shard replica died; restarting it from disk");
            state.registry.count_restart();
            schedule_restart(&myself, state, shard);
        } else if id == state.log_writer.get_id() {
            if !state.stopping {
                // Without its LogWriter the node can make nothing durable.
                tracing::error!(%reason, "LogWriter died; the node stops serving writes");
                state.registry.set_log_writer(None);
            }
        } else if state
            .ticker
            .as_ref()
            .is_some_and(|ticker| ticker.get_id() == id)
        {
            state.ticker = None;
            if !state.stopping {
                tracing::warn!(%reason, "ticker died; restarting it");
                start_ticker(&myself, state).await?;
            }
        }
        Ok(())
    }
}

async fn start_shard(
    myself: &ActorRef<NodeSupervisorMsg>,
    state: &mut NodeSupervisorState,
    shard: ShardId,
) -> Result<(), ActorProcessingErr> {
    let Some(slot) = state.registry.slot(shard) else {
        return Err(format!("no shard {shard} on this node").into());
    };
    let Some(log_writer) = state.log_writer_handle.clone() else {
        return Err("the node is stopping".into());
    };
    let args = ShardReplicaArgs {
        shard,
        node_id: state.node_id,
        store: slot.store.clone(),
        gauges: slot.gauges.clone(),
        log: state.logs.remove(&GroupId::shard(shard)),
        log_writer,
        options: state.replica_options,
    };
    let (actor, _) = Actor::spawn_linked(None, ShardReplicaActor, args, myself.get_cell()).await?;
    state.shard_of_actor.insert(actor.get_id(), shard);
    slot.set_actor(Some(actor));
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
    let (ticker, _) = Actor::spawn_linked(
        None,
        TickerActor,
        TickerArgs {
            registry: state.registry.clone(),
            tick_interval_ms: state.tick_interval_ms,
        },
        myself.get_cell(),
    )
    .await?;
    state.ticker = Some(ticker);
    Ok(())
}
