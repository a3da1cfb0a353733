//! Requests run on this node's replicas: proposals and leadership transfers on a
//! local leader, ReadIndex on a local leader or follower, and the execution of
//! requests other nodes forwarded here (which never travel further: a node that
//! cannot serve one answers `NotLeader` with what it knows of the leader).

use super::metadata::MetadataChange;
use super::{Router, RETRY_DELAY_MIN};
use crate::command::Command;
use crate::ids::{NodeId, Revision};
use crate::kv::{Consistency, KvError};
use crate::node::registry::ShardSlot;
use crate::shard::ShardReplicaMsg;
use crate::transport::wire::{PeerRequest, PeerResponse};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The outcome of trying a request on this node.
pub(super) enum Here {
    /// It ran (or may have run): this is the answer.
    Done(PeerResponse),
    /// It certainly did not run: this node's replica does not lead the shard (the
    /// leader it knows of, if any).
    NotHere(Option<NodeId>),
}

impl Router {
    /// Runs a request that needs the leader on the local replica, once.
    pub(super) async fn execute_here(
        &self,
        slot: &ShardSlot,
        request: &PeerRequest,
        deadline: Instant,
    ) -> Here {
        match request {
            PeerRequest::Propose { command, .. } => {
                match self.propose_local(slot, command, deadline).await {
                    Ok(Ok(revision)) => Here::Done(PeerResponse::Written(revision)),
                    Ok(Err(error)) => Here::Done(PeerResponse::Failed(error)),
                    Err(leader) => Here::NotHere(leader),
                }
            }
            PeerRequest::TransferLeader { to, .. } => {
                match self.transfer_local(slot, *to, deadline).await {
                    Ok(Ok(())) => Here::Done(PeerResponse::Done),
                    Ok(Err(error)) => Here::Done(PeerResponse::Failed(error)),
                    Err(leader) => Here::NotHere(leader),
                }
            }
            PeerRequest::Get {
                namespace,
                key,
                consistency,
                ..
            } => {
                if *consistency == Consistency::Linearizable {
                    if let Err(error) = self.read_index_local(slot, deadline).await {
                        return Here::Done(PeerResponse::Failed(error));
                    }
                }
                match slot.store().get(*namespace, key) {
                    Ok(value) => Here::Done(PeerResponse::Value(value)),
                    Err(error) => Here::Done(PeerResponse::Failed(error.into())),
                }
            }
            PeerRequest::Scan {
                namespace,
                consistency,
                prefix,
                after,
                limit,
                ..
            } => {
                if *consistency == Consistency::Linearizable {
                    if let Err(error) = self.read_index_local(slot, deadline).await {
                        return Here::Done(PeerResponse::Failed(error));
                    }
                }
                let limit = (*limit).min(self.limits().scan_limit_max + 1) as usize;
                match slot
                    .store()
                    .scan(*namespace, prefix, after.as_deref(), limit)
                {
                    Ok(items) => Here::Done(PeerResponse::ScanItems(items)),
                    Err(error) => Here::Done(PeerResponse::Failed(error.into())),
                }
            }
            PeerRequest::Query {
                collection,
                query,
                consistency,
                ..
            } => {
                if *consistency == Consistency::Linearizable {
                    if let Err(error) = self.read_index_local(slot, deadline).await {
                        return Here::Done(PeerResponse::Failed(error));
                    }
                }
                match self.query_store(slot, collection, query).await {
                    Ok(page) => Here::Done(PeerResponse::QueryPage(Box::new(page))),
                    Err(error) => Here::Done(PeerResponse::Failed(error)),
                }
            }
            PeerRequest::MetadataChange { change } => {
                if !self.leads_metadata() {
                    return Here::NotHere(slot.known_leader());
                }
                match self.apply_metadata_change(change.clone()).await {
                    Ok(metadata) => {
                        Here::Done(PeerResponse::Metadata(Box::new((*metadata).clone())))
                    }
                    Err(KvError::NotLeader { hint, .. }) => Here::NotHere(hint),
                    Err(error) => Here::Done(PeerResponse::Failed(error)),
                }
            }
            PeerRequest::Join { .. } | PeerRequest::LeaderStates => Here::Done(
                PeerResponse::Failed(KvError::InvalidInput("not a request about a shard".into())),
            ),
        }
    }

    /// Executes a request another node forwarded here; never forwards it again.
    pub async fn execute_forwarded(&self, request: PeerRequest, timeout: Duration) -> PeerResponse {
        let deadline = Instant::now() + timeout.min(self.context().request_timeout);
        let shard = match &request {
            PeerRequest::Propose { shard, .. }
            | PeerRequest::Get { shard, .. }
            | PeerRequest::Scan { shard, .. }
            | PeerRequest::Query { shard, .. }
            | PeerRequest::TransferLeader { shard, .. } => *shard,
            PeerRequest::Join { node } => {
                let node = node.clone();
                return match self.change_metadata(MetadataChange::Register(node)).await {
                    Ok(metadata) => PeerResponse::Joined(Box::new((*metadata).clone())),
                    Err(error) => PeerResponse::Failed(error),
                };
            }
            PeerRequest::LeaderStates => return PeerResponse::LeaderStates(self.leader_states()),
            PeerRequest::MetadataChange { .. } => match self.context().registry.metadata_slot() {
                Some(slot) => slot.shard,
                None => return PeerResponse::Failed(KvError::Storage("no metadata group".into())),
            },
        };
        if self.is_closed() {
            return PeerResponse::Failed(KvError::NotLeader { shard, hint: None });
        }
        let slot = match self.slot(shard) {
            Ok(slot) => slot,
            Err(error) => return PeerResponse::Failed(error),
        };
        let not_here = |leader: Option<NodeId>| {
            PeerResponse::Failed(KvError::NotLeader {
                shard,
                hint: leader.filter(|leader| *leader != self.node_id()),
            })
        };
        if !self.serves_locally(slot) {
            return not_here(slot.known_leader());
        }
        // Reads are served by any replica (a follower asks its leader); writes only
        // by the leader, so a request is never forwarded twice.
        let reads = matches!(
            request,
            PeerRequest::Get { .. } | PeerRequest::Scan { .. } | PeerRequest::Query { .. }
        );
        let leads = slot.gauges.leader() == Some(self.node_id().0);
        if !reads && !leads {
            return not_here(slot.known_leader());
        }
        match self.execute_here(slot, &request, deadline).await {
            Here::Done(response) => response,
            Here::NotHere(leader) => not_here(leader),
        }
    }

    /// Proposes on the local replica once; `NotLeader` when it certainly did not
    /// run here.
    pub(super) async fn propose_here(
        &self,
        slot: &ShardSlot,
        command: &Command,
        deadline: Instant,
    ) -> Result<Revision, KvError> {
        match self.propose_local(slot, command, deadline).await {
            Ok(result) => result,
            Err(hint) => Err(KvError::NotLeader {
                shard: slot.shard,
                hint,
            }),
        }
    }

    /// Proposes on the local replica once. `Err` means it certainly did not run
    /// here (with the leader the replica knows of).
    async fn propose_local(
        &self,
        slot: &ShardSlot,
        command: &Command,
        deadline: Instant,
    ) -> Result<Result<Revision, KvError>, Option<NodeId>> {
        let Some(actor) = slot.actor() else {
            return Err(None);
        };
        let (reply, outcome) = oneshot::channel();
        let message = ShardReplicaMsg::Propose {
            command: command.clone(),
            reply,
        };
        if actor.send_message(message).is_err() {
            return Err(None);
        }
        match tokio::time::timeout_at(deadline.into(), outcome).await {
            Err(_) => Ok(Err(self.timeout())),
            // The replica died holding the proposal: it may still be applied after
            // recovery. Not retried.
            Ok(Err(_)) => Ok(Err(KvError::Unavailable {
                shard: slot.shard,
                reason: "the shard replica restarted while the write was in flight; it may or may not have been applied".into(),
                retry_after_ms: 100,
            })),
            Ok(Ok(Err(KvError::NotLeader { hint, .. }))) => Err(hint),
            Ok(Ok(result)) => Ok(result),
        }
    }

    /// Asks the local replica (which leads) to hand leadership to `to`.
    async fn transfer_local(
        &self,
        slot: &ShardSlot,
        to: NodeId,
        deadline: Instant,
    ) -> Result<Result<(), KvError>, Option<NodeId>> {
        let Some(actor) = slot.actor() else {
            return Err(None);
        };
        let (reply, outcome) = oneshot::channel();
        if actor
            .send_message(ShardReplicaMsg::TransferLeader { to, reply })
            .is_err()
        {
            return Err(None);
        }
        match tokio::time::timeout_at(deadline.into(), outcome).await {
            Err(_) => Ok(Err(self.timeout())),
            Ok(Err(_)) => Err(None),
            Ok(Ok(Err(KvError::NotLeader { hint, .. }))) => Err(hint),
            Ok(Ok(result)) => Ok(result),
        }
    }

    /// Waits until the local replica may serve a linearizable read: at once for a
    /// sole voter that leads, else after a ReadIndex round (through the leader when
    /// the replica follows). Retries while the replica restarts or has no leader.
    pub(super) async fn read_index_local(
        &self,
        slot: &ShardSlot,
        deadline: Instant,
    ) -> Result<(), KvError> {
        if slot.gauges.local_reads_allowed() {
            return Ok(());
        }
        let mut delay = RETRY_DELAY_MIN;
        loop {
            let error = match slot.actor() {
                None => self.unavailable(slot.shard, "the shard replica is restarting"),
                Some(actor) => {
                    let (reply, waiter) = oneshot::channel();
                    if actor
                        .send_message(ShardReplicaMsg::ReadIndex { reply })
                        .is_err()
                    {
                        self.unavailable(slot.shard, "the shard replica is restarting")
                    } else {
                        match tokio::time::timeout_at(deadline.into(), waiter).await {
                            Err(_) => return Err(self.timeout()),
                            Ok(Ok(Ok(()))) => return Ok(()),
                            Ok(Ok(Err(KvError::NotLeader { .. }))) | Ok(Err(_)) => {
                                self.unavailable(slot.shard, "the shard has no leader yet")
                            }
                            Ok(Ok(Err(error))) => return Err(error),
                        }
                    }
                }
            };
            delay = self.back_off(delay, deadline, error).await?;
        }
    }
}
