//! Choosing where a request runs and getting it there: the local replica or the
//! leader's node through the Transport, following `NotLeader` hints and backing off
//! while a shard has no leader. See the module documentation of `router` for what
//! is retried and what is not.

use super::local::Here;
use super::{Router, HINTS_FOLLOWED_MAX, RETRY_DELAY_MIN};
use crate::command::Command;
use crate::ids::{NodeId, Revision, ShardId};
use crate::kv::{Consistency, KvError, Namespace, ScanItem, Versioned};
use crate::node::registry::ShardSlot;
use crate::transport::wire::{PeerRequest, PeerResponse};
use crate::transport::{CallError, TransportMsg};
use std::time::Instant;
use tokio::sync::oneshot;

/// Where the next attempt of a request that needs the leader goes.
enum Target {
    Local,
    Remote(NodeId),
    /// Nowhere yet; back off with this error.
    Wait(KvError),
}

impl Router {
    /// Whether requests for the shard run on the local replica: there is one and
    /// the shard is placed here. A replica being moved off serves only while it
    /// still leads; otherwise requests go to the leader, so none is left in flight
    /// on a replica about to be released.
    pub(super) fn serves_locally(&self, slot: &ShardSlot) -> bool {
        if !slot.is_hosted() {
            return false;
        }
        // The leader check first: it needs no copy of the metadata.
        let me = self.node_id();
        slot.gauges.leader() == Some(me.0)
            || self
                .context()
                .cluster
                .metadata()
                .is_some_and(|metadata| metadata.hosts(me, slot.shard))
    }

    /// Where the shard's leader is, as best known, with `preferred` (a hint just
    /// received) taking precedence. With `follower_proposes`, a local follower that
    /// knows its leader counts as local: it proposes, and raft-rs forwards the entry
    /// inside the group's own messages (cheaper than forwarding the request).
    fn leader_target(
        &self,
        slot: &ShardSlot,
        preferred: Option<NodeId>,
        follower_proposes: bool,
    ) -> Target {
        let me = self.node_id();
        let serves = self.serves_locally(slot);
        let local = serves && slot.actor().is_some();
        match preferred {
            Some(node) if node == me && local => return Target::Local,
            Some(node) if node != me => return Target::Remote(node),
            _ => {}
        }
        if serves {
            if !local {
                return Target::Wait(
                    self.unavailable(slot.shard, "the shard replica is restarting"),
                );
            }
            return match slot.gauges.leader().map(NodeId) {
                Some(leader) if leader == me || follower_proposes => Target::Local,
                Some(leader) => Target::Remote(leader),
                None => {
                    Target::Wait(self.unavailable(slot.shard, "the shard is electing a leader"))
                }
            };
        }
        if let Some(leader) = slot.known_leader() {
            return Target::Remote(leader);
        }
        let placed = self
            .context()
            .cluster
            .metadata()
            .and_then(|metadata| {
                metadata
                    .shard(slot.shard)
                    .map(|placement| placement.replicas.clone())
            })
            .unwrap_or_default();
        match slot.next_replica(&placed) {
            Some(node) if node != me => Target::Remote(node),
            _ => Target::Wait(self.unavailable(slot.shard, "no replica of the shard is placed")),
        }
    }

    /// Runs `request` where the shard's leader is. `idempotent` requests (reads) are
    /// retried after a timeout while the deadline allows; writes never are.
    pub(super) async fn ask_leader(
        &self,
        slot: &ShardSlot,
        request: PeerRequest,
        deadline: Instant,
        idempotent: bool,
    ) -> Result<PeerResponse, KvError> {
        let mut delay = RETRY_DELAY_MIN;
        let mut preferred = None;
        let mut hints_followed = 0;
        let follower_proposes = matches!(request, PeerRequest::Propose { .. });
        loop {
            let hint = |hint: Option<NodeId>, hints_followed: &mut u32| {
                let follow = hint.filter(|_| *hints_followed < HINTS_FOLLOWED_MAX);
                if follow.is_some() {
                    *hints_followed += 1;
                }
                follow
            };
            let error = match self.leader_target(slot, preferred.take(), follower_proposes) {
                Target::Local => match self.execute_here(slot, &request, deadline).await {
                    Here::Done(response) => return into_result(response),
                    Here::NotHere(leader) => {
                        preferred = hint(leader, &mut hints_followed);
                        if preferred.is_some() {
                            continue;
                        }
                        self.unavailable(slot.shard, "the shard is electing a leader")
                    }
                },
                Target::Remote(node) => match self.call(node, request.clone(), deadline).await {
                    Ok(PeerResponse::Failed(KvError::NotLeader { hint: leader, .. })) => {
                        let leader = leader.filter(|leader| *leader != node);
                        if !slot.is_hosted() {
                            slot.set_leader_hint(leader);
                        }
                        preferred = hint(leader, &mut hints_followed);
                        if preferred.is_some() {
                            continue;
                        }
                        self.unavailable(slot.shard, "the shard is electing a leader")
                    }
                    Ok(response) => {
                        if !slot.is_hosted() && !matches!(response, PeerResponse::Failed(_)) {
                            slot.set_leader_hint(Some(node));
                        }
                        return into_result(response);
                    }
                    Err(CallError::Unreachable(node)) => {
                        slot.forget_leader_hint(node);
                        self.unavailable(slot.shard, &format!("node {node} is unreachable"))
                    }
                    Err(CallError::Timeout(node) | CallError::ConnectionLost(node))
                        if idempotent =>
                    {
                        slot.forget_leader_hint(node);
                        self.timeout()
                    }
                    Err(CallError::Timeout(_)) => return Err(self.timeout()),
                    Err(CallError::ConnectionLost(node)) => {
                        slot.forget_leader_hint(node);
                        return Err(KvError::Unavailable {
                            shard: slot.shard,
                            reason: format!("node {node} went away while the request was in flight; a write may or may not have been applied"),
                            retry_after_ms: 500,
                        });
                    }
                    Err(CallError::Closed) => return Err(KvError::ShuttingDown),
                },
                Target::Wait(error) => error,
            };
            delay = self.back_off(delay, deadline, error).await?;
        }
    }

    /// Sends `request` to `node` through the Transport and waits for the answer.
    pub(super) async fn call(
        &self,
        node: NodeId,
        request: PeerRequest,
        deadline: Instant,
    ) -> Result<PeerResponse, CallError> {
        let transport = self
            .context()
            .registry
            .transport()
            .ok_or(CallError::Unreachable(node))?;
        let (reply, answer) = oneshot::channel();
        let timeout = deadline.saturating_duration_since(Instant::now());
        transport
            .send_message(TransportMsg::Call {
                to: node,
                request,
                timeout,
                wait_for_connection: false,
                reply,
            })
            .map_err(|_| CallError::Unreachable(node))?;
        answer.await.unwrap_or(Err(CallError::Closed))
    }

    /// Proposes `command` on the shard's leader.
    pub(super) async fn propose(
        &self,
        slot: &ShardSlot,
        command: Command,
        deadline: Instant,
    ) -> Result<Revision, KvError> {
        let request = PeerRequest::Propose {
            shard: slot.shard,
            command,
        };
        match self.ask_leader(slot, request, deadline, false).await? {
            PeerResponse::Written(revision) => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Reads one key: from the local replica when there is one, else from the
    /// leader's node (or, for a stale read, any replica's).
    pub(super) async fn get_in(
        &self,
        slot: &ShardSlot,
        namespace: Namespace,
        key: &[u8],
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<Option<Versioned>, KvError> {
        if self.serves_locally(slot) {
            if consistency == Consistency::Linearizable {
                self.read_index_local(slot, deadline).await?;
            }
            return Ok(slot.store().get(namespace, key)?);
        }
        let request = PeerRequest::Get {
            shard: slot.shard,
            namespace,
            key: key.to_vec(),
            consistency,
        };
        match self.ask_leader(slot, request, deadline, true).await? {
            PeerResponse::Value(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    /// One shard's part of a scan.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn scan_shard(
        &self,
        shard: ShardId,
        namespace: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<Vec<ScanItem>, KvError> {
        let slot = self.slot(shard)?;
        if self.serves_locally(slot) {
            if consistency == Consistency::Linearizable {
                self.read_index_local(slot, deadline).await?;
            }
            return Ok(slot
                .store()
                .scan(namespace, prefix, after, limit as usize)?);
        }
        let request = PeerRequest::Scan {
            shard,
            namespace,
            consistency,
            prefix: prefix.to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit,
        };
        match self.ask_leader(slot, request, deadline, true).await? {
            PeerResponse::ScanItems(items) => Ok(items),
            other => Err(unexpected(other)),
        }
    }

    /// Moves the shard's leadership to `to` through its current leader.
    pub(super) async fn transfer_in(
        &self,
        slot: &ShardSlot,
        to: NodeId,
        deadline: Instant,
    ) -> Result<(), KvError> {
        let request = PeerRequest::TransferLeader {
            shard: slot.shard,
            to,
        };
        match self.ask_leader(slot, request, deadline, false).await? {
            PeerResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// A peer's answer as a result: `Failed` becomes the error it carries.
fn into_result(response: PeerResponse) -> Result<PeerResponse, KvError> {
    match response {
        PeerResponse::Failed(error) => Err(error),
        other => Ok(other),
    }
}

fn unexpected(response: PeerResponse) -> KvError {
    KvError::Storage(format!("unexpected answer from a peer: {response:?}"))
}
