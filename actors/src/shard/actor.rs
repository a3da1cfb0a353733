//! The shard replica actor: a thin shell around [`ShardReplica`]. It recovers the
//! group's log in `pre_start` (from the LogWriter, which replays the WAL after every
//! earlier write is durable), feeds messages to the replica and performs its effects:
//! WAL writes through the LogWriter, messages and snapshot chunks through the
//! Transport, and snapshot streams as tasks of their own.
//!
//! Batching: any input schedules one `Drive` message to itself instead of handling a
//! Ready at once, so every proposal already queued in the mailbox joins the same
//! Ready, the same WAL write and the same state-machine batch.

use super::replica::{
    Bootstrap, Effect, ProposalReply, ReadReply, ReplicaOptions, ReplicaParts, ShardReplica,
    SnapshotAck, SnapshotChunk, TransferReply,
};
use crate::command::Command;
use crate::ids::{GroupId, NodeId, ShardId};
use crate::log_writer::{LogWriterHandle, WalJob};
use crate::node::registry::ShardRegistry;
use crate::storage::raft_log::GroupLog;
use crate::storage::snapshot::{SnapshotPair, SnapshotSource};
use crate::transport::wire::SNAPSHOT_CHUNK_BYTES_MAX;
use crate::transport::TransportMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use raft::eraftpb::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Bytes of stored pairs per snapshot chunk (well below the chunk limit, so a chunk
/// and its frame overhead always fit).
const SNAPSHOT_CHUNK_BYTES: usize = SNAPSHOT_CHUNK_BYTES_MAX / 4;
/// A snapshot stream whose receiver does not acknowledge a chunk within this long is
/// abandoned and reported failed (raft-rs then tries again later).
const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(10);

pub enum ShardReplicaMsg {
    /// Propose a write; answered with its revision after apply.
    Propose {
        command: Command,
        reply: ProposalReply,
    },
    /// Wait until a linearizable read may be served from the local state machine.
    ReadIndex { reply: ReadReply },
    /// Raft messages from other replicas of the group, in order.
    Step(Vec<Message>),
    /// A chunk of a snapshot stream from `from`.
    SnapshotChunk { from: NodeId, chunk: SnapshotChunk },
    /// A snapshot stream to `to` ended.
    SnapshotSent { to: NodeId, delivered: bool },
    /// The placement table's replicas for the shard changed.
    PlacementChanged(Vec<NodeId>),
    /// Move leadership to `to`.
    TransferLeader { to: NodeId, reply: TransferReply },
    /// Raft clock.
    Tick,
    /// The LogWriter made the Ready numbered `ready_number` durable.
    Persisted { ready_number: u64 },
    /// The LogWriter could not make a write durable; the replica must stop.
    PersistFailed { reason: String },
    /// Compact the in-memory log up to `index` (the state machine is durable there).
    Compact { index: u64 },
    /// Handle whatever raft-rs has ready (sent by the actor to itself).
    Drive,
}

impl ractor::Message for ShardReplicaMsg {}

pub struct ShardReplicaArgs {
    pub shard: ShardId,
    pub node_id: NodeId,
    pub registry: Arc<ShardRegistry>,
    /// The recovered log at node start; `None` on a restart, when the log is
    /// replayed from the WAL.
    pub log: Option<GroupLog>,
    pub log_writer: LogWriterHandle,
    pub options: ReplicaOptions,
    pub bootstrap: Bootstrap,
    pub placement: Vec<NodeId>,
}

pub struct ShardReplicaState {
    replica: ShardReplica,
    registry: Arc<ShardRegistry>,
    log_writer: LogWriterHandle,
    /// A `Drive` is queued in the mailbox.
    drive_scheduled: bool,
}

pub struct ShardReplicaActor;

impl Actor for ShardReplicaActor {
    type Msg = ShardReplicaMsg;
    type State = ShardReplicaState;
    type Arguments = ShardReplicaArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let log = match args.log {
            Some(log) => log,
            None => {
                let (reply, replayed) = oneshot::channel();
                args.log_writer.send(WalJob::Replay {
                    group: GroupId::shard(args.shard),
                    reply,
                })?;
                replayed.await??
            }
        };
        let slot = args
            .registry
            .slot(args.shard)
            .ok_or_else(|| format!("no slot for shard {}", args.shard))?;
        let replica = ShardReplica::new(ReplicaParts {
            shard: args.shard,
            node_id: args.node_id,
            log,
            store: slot.store(),
            gauges: slot.gauges.clone(),
            options: args.options,
            instance: rand::random(),
            bootstrap: args.bootstrap,
            placement: args.placement,
        })?;
        tracing::debug!(
            shard = args.shard.0,
            applied_index = replica.applied_index(),
            "shard replica started"
        );
        myself.send_message(ShardReplicaMsg::Drive)?;
        Ok(ShardReplicaState {
            replica,
            registry: args.registry,
            log_writer: args.log_writer,
            drive_scheduled: true,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let mut effects = Vec::new();
        let mut wants_drive = true;
        match message {
            ShardReplicaMsg::Propose { command, reply } => state.replica.propose(&command, reply),
            ShardReplicaMsg::ReadIndex { reply } => state.replica.read(reply),
            ShardReplicaMsg::Step(messages) => {
                for message in messages {
                    state.replica.step(message);
                }
                // A frame's messages for this group arrive together, so there is
                // little to batch with: handle the Ready now, saving a mailbox round.
                effects = state.replica.drive()?;
                wants_drive = state.replica.has_ready();
            }
            ShardReplicaMsg::SnapshotChunk { from, chunk } => {
                let bytes = pairs_bytes(&chunk.pairs);
                state
                    .registry
                    .metrics
                    .snapshot_received_bytes_total
                    .inc_by(bytes);
                effects = state.replica.receive_snapshot_chunk(from, chunk)?;
            }
            ShardReplicaMsg::SnapshotSent { to, delivered } => {
                state.replica.on_snapshot_sent(to, delivered);
            }
            ShardReplicaMsg::PlacementChanged(replicas) => state.replica.set_placement(replicas),
            ShardReplicaMsg::TransferLeader { to, reply } => {
                state.replica.transfer_leader(to, reply);
            }
            ShardReplicaMsg::Tick => state.replica.tick(),
            ShardReplicaMsg::Persisted { ready_number } => {
                // Whatever became committable is handled now: there is nothing to
                // batch with, and a Drive message would cost a mailbox round.
                effects = state.replica.on_persisted(ready_number);
                effects.extend(state.replica.drive()?);
                wants_drive = state.replica.has_ready();
            }
            ShardReplicaMsg::PersistFailed { reason } => {
                return Err(format!(
                    "shard {}: WAL write failed: {reason}",
                    state.replica.shard()
                )
                .into());
            }
            ShardReplicaMsg::Compact { index } => effects = state.replica.compact(index)?,
            ShardReplicaMsg::Drive => {
                state.drive_scheduled = false;
                effects = state.replica.drive()?;
                wants_drive = state.replica.has_ready();
            }
        }
        perform(&myself, state, effects)?;
        if wants_drive && !state.drive_scheduled {
            state.drive_scheduled = true;
            myself.send_message(ShardReplicaMsg::Drive)?;
        }
        Ok(())
    }
}

fn perform(
    myself: &ActorRef<ShardReplicaMsg>,
    state: &mut ShardReplicaState,
    effects: Vec<Effect>,
) -> Result<(), ActorProcessingErr> {
    let shard = state.replica.shard();
    let group = GroupId::shard(shard);
    for effect in effects {
        match effect {
            Effect::Persist {
                write,
                ready_number,
            } => {
                let replica = myself.clone();
                let on_durable = Box::new(move |result: Result<(), String>| {
                    let message = match (result, ready_number) {
                        (Ok(()), Some(ready_number)) => ShardReplicaMsg::Persisted { ready_number },
                        (Ok(()), None) => return,
                        (Err(reason), _) => ShardReplicaMsg::PersistFailed { reason },
                    };
                    // A replica that died meanwhile recovers from disk; nothing to tell.
                    let _ = replica.send_message(message);
                });
                state.log_writer.send(WalJob::Write { write, on_durable })?;
            }
            Effect::Send(messages) => {
                // Without a transport (a single node, or one stopping) the messages
                // are lost, which Raft tolerates.
                if let Some(transport) = state.registry.transport() {
                    let _ = transport.send_message(TransportMsg::SendRaft { group, messages });
                }
            }
            Effect::StreamSnapshot {
                to,
                stream,
                message,
                source,
            } => {
                let replica = myself.clone();
                let registry = Arc::clone(&state.registry);
                tokio::spawn(async move {
                    let outcome =
                        stream_snapshot(&registry, group, to, stream, *message, source).await;
                    match &outcome {
                        Ok(()) => registry.count_snapshot_sent(),
                        Err(reason) => {
                            tracing::warn!(shard = shard.0, to = to.0, %reason, "snapshot stream failed");
                        }
                    }
                    let _ = replica.send_message(ShardReplicaMsg::SnapshotSent {
                        to,
                        delivered: outcome.is_ok(),
                    });
                });
            }
            Effect::AckSnapshotChunk { to, ack } => {
                if let Some(transport) = state.registry.transport() {
                    let _ =
                        transport.send_message(TransportMsg::SendSnapshotAck { to, group, ack });
                }
            }
            Effect::StoreReplaced(store) => {
                state.registry.count_snapshot_installed();
                if let Some(slot) = state.registry.slot(shard) {
                    slot.set_store(store);
                }
            }
            Effect::ReleaseReads(waiters) => {
                for waiter in waiters {
                    let _ = waiter.send(Ok(()));
                }
            }
        }
    }
    Ok(())
}

/// Streams a shard's tree to `to` in chunks, each acknowledged before the next is
/// sent; the last carries `message`, the `MsgSnapshot` raft-rs made.
async fn stream_snapshot(
    registry: &ShardRegistry,
    group: GroupId,
    to: NodeId,
    stream: u64,
    message: Message,
    mut source: SnapshotSource,
) -> Result<(), String> {
    let transport = registry.transport().ok_or("no transport")?;
    let (acks_sender, mut acks) = mpsc::channel::<SnapshotAck>(4);
    transport
        .send_message(TransportMsg::WatchSnapshotStream {
            stream,
            acks: acks_sender,
        })
        .map_err(|_| "the transport is gone")?;
    let outcome = async {
        let mut sequence = 0u32;
        loop {
            let (pairs, finished, returned) = tokio::task::spawn_blocking(move || {
                let pairs = source.next_chunk(SNAPSHOT_CHUNK_BYTES);
                let finished = source.is_finished();
                (pairs, finished, source)
            })
            .await
            .map_err(|error| error.to_string())?;
            source = returned;
            let pairs = pairs.map_err(|error| error.to_string())?;
            let last = pairs.is_none() || finished;
            let bytes = pairs.as_deref().map_or(0, pairs_bytes);
            let chunk = SnapshotChunk {
                stream,
                sequence,
                pairs: pairs.unwrap_or_default(),
                done: last.then(|| message.clone()),
            };
            transport
                .send_message(TransportMsg::SendSnapshotChunk { to, group, chunk })
                .map_err(|_| "the transport is gone")?;
            let ack = tokio::time::timeout(SNAPSHOT_ACK_TIMEOUT, acks.recv())
                .await
                .map_err(|_| format!("chunk {sequence} not acknowledged in time"))?
                .ok_or("the transport forgot the stream")?;
            if !ack.accepted || ack.sequence != sequence {
                return Err(format!("chunk {sequence} refused by the receiver"));
            }
            registry.metrics.snapshot_sent_bytes_total.inc_by(bytes);
            if last {
                return Ok(());
            }
            sequence += 1;
        }
    }
    .await;
    let _ = transport.send_message(TransportMsg::ForgetSnapshotStream { stream });
    outcome
}

/// Key and value bytes of a snapshot chunk's pairs.
fn pairs_bytes(pairs: &[SnapshotPair]) -> u64 {
    pairs
        .iter()
        .map(|(key, value)| (key.len() + value.len()) as u64)
        .sum()
}
