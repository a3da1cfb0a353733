//! Joining a cluster: a node started with `--join` and no identity asks a seed (by
//! its gossip address) where its cluster listener is, connects, and asks to join.
//! The seed has the metadata group's leader register the node and answers with the
//! cluster metadata, which the node then adopts. Retries with backoff until the
//! deadline; a refusal (a node id already in use) is final.

use crate::ids::NodeId;
use crate::kv::KvError;
use crate::membership::seed_probe;
use crate::metadata::{ClusterMetadata, NodeRecord};
use crate::transport::wire::{PeerRequest, PeerResponse};
use crate::transport::{CallError, TransportMsg};
use ractor::ActorRef;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long one probe of a seed may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one join request may wait for its answer (including the connection).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster refused the node; retrying will not help.
    #[error("the cluster refused to let node {node} join: {reason}")]
    Refused { node: NodeId, reason: String },
    /// No seed answered in time.
    #[error("could not join through {seeds} within {timeout:?}: {last}")]
    Unreachable {
        seeds: String,
        timeout: Duration,
        last: String,
    },
}

/// Joins through `seeds` (gossip addresses) within `timeout`.
pub async fn join(
    transport: &ActorRef<TransportMsg>,
    seeds: &[String],
    node: NodeRecord,
    timeout: Duration,
) -> Result<ClusterMetadata, JoinError> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(200);
    let mut last = String::from("no seed given");
    loop {
        for seed in seeds {
            match join_through(transport, seed, &node).await {
                Ok(metadata) => return Ok(metadata),
                Err(Attempt::Refused(reason)) => {
                    return Err(JoinError::Refused {
                        node: node.id,
                        reason,
                    })
                }
                Err(Attempt::Failed(reason)) => {
                    tracing::info!(%seed, %reason, "join attempt failed; retrying");
                    last = reason;
                }
            }
        }
        if Instant::now() + delay >= deadline {
            return Err(JoinError::Unreachable {
                seeds: seeds.join(","),
                timeout,
                last,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

enum Attempt {
    Refused(String),
    Failed(String),
}

async fn join_through(
    transport: &ActorRef<TransportMsg>,
    seed: &str,
    node: &NodeRecord,
) -> Result<ClusterMetadata, Attempt> {
    let found = seed_probe::probe(seed, PROBE_TIMEOUT)
        .await
        .map_err(Attempt::Failed)?;
    let (target, address) = (found.node_id, found.cluster);
    if target == node.id {
        return Err(Attempt::Refused(format!(
            "the seed {seed} is this node itself ({target})"
        )));
    }
    let _ = transport.send_message(TransportMsg::AddPeer {
        node: target,
        address: address.clone(),
    });
    let (reply, answer) = oneshot::channel();
    transport
        .send_message(TransportMsg::Call {
            to: target,
            request: PeerRequest::Join { node: node.clone() },
            timeout: REQUEST_TIMEOUT,
            wait_for_connection: true,
            reply,
        })
        .map_err(|_| Attempt::Failed("the transport is gone".into()))?;
    let response = answer
        .await
        .map_err(|_| Attempt::Failed("the transport is gone".into()))?;
    match response {
        Ok(PeerResponse::Joined(metadata)) => Ok(*metadata),
        Ok(PeerResponse::Failed(KvError::InvalidInput(reason))) => Err(Attempt::Refused(reason)),
        Ok(PeerResponse::Failed(error)) => Err(Attempt::Failed(error.to_string())),
        Ok(other) => Err(Attempt::Failed(format!("unexpected answer {other:?}"))),
        Err(
            CallError::Timeout(peer)
            | CallError::Unreachable(peer)
            | CallError::ConnectionLost(peer),
        ) => Err(Attempt::Failed(format!(
            "node {peer} at {address} did not answer"
        ))),
        Err(CallError::Closed) => Err(Attempt::Failed("the transport stopped".into())),
    }
}
