//! The shard replica actor: a thin shell around [`ShardReplica`]. It recovers the
//! group's log in `pre_start` (from the LogWriter, which replays the WAL after every
//! earlier write is durable), feeds messages to the replica and performs its effects.
//!
//! Batching: any input schedules one `Drive` message to itself instead of handling a
//! Ready at once, so every proposal already queued in the mailbox joins the same
//! Ready, the same WAL write and the same state-machine batch.

use super::gauges::ShardGauges;
use super::replica::{Effect, ProposalReply, ReadReply, ReplicaOptions, ShardReplica};
use crate::command::Command;
use crate::ids::{GroupId, NodeId, ShardId};
use crate::log_writer::{LogWriterHandle, WalJob};
use crate::storage::raft_log::GroupLog;
use crate::storage::state_machine::ShardStore;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use tokio::sync::oneshot;

pub enum ShardReplicaMsg {
    /// Propose a write; answered with its revision after apply.
    Propose {
        command: Command,
        reply: ProposalReply,
    },
    /// Wait until a linearizable read may be served from the local state machine.
    ReadIndex { reply: ReadReply },
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
    pub store: ShardStore,
    pub gauges: Arc<ShardGauges>,
    /// The recovered log at node start; `None` on a restart, when the log is
    /// replayed from the WAL.
    pub log: Option<GroupLog>,
    pub log_writer: LogWriterHandle,
    pub options: ReplicaOptions,
}

pub struct ShardReplicaState {
    replica: ShardReplica,
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
        let replica = ShardReplica::new(
            args.shard,
            args.node_id,
            log,
            args.store,
            args.gauges,
            args.options,
            rand::random(),
        )?;
        tracing::debug!(
            shard = args.shard.0,
            applied_index = replica.applied_index(),
            "shard replica started"
        );
        myself.send_message(ShardReplicaMsg::Drive)?;
        Ok(ShardReplicaState {
            replica,
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
                // TODO(#3): hand messages to the Transport. A single-voter group
                // produces none.
                tracing::trace!(
                    count = messages.len(),
                    "dropping raft messages: no transport yet"
                );
            }
        }
    }
    Ok(())
}
