//! Requests about the cluster rather than a shard's data: what this node's leaders
//! report of their groups (read by the rebalancer and the cluster views), and
//! operators' actions on nodes (drain, remove), which the metadata group's leader
//! decides (`metadata`).

use super::metadata::MetadataChange;
use super::Router;
use crate::ids::{NodeId, ShardId};
use crate::kv::KvError;
use crate::membership::status::GossipState;
use crate::metadata::NodeAction;
use crate::transport::wire::{LeaderState, PeerRequest, PeerResponse};
use crate::transport::CallError;
use std::collections::BTreeMap;
use std::time::Instant;

impl Router {
    /// Every shard group this node leads, with its configuration and lag.
    pub fn leader_states(&self) -> Vec<LeaderState> {
        let me = self.node_id();
        self.context()
            .registry
            .all_slots()
            .iter()
            .filter(|slot| slot.actor().is_some() && slot.gauges.leader() == Some(me.0))
            .map(|slot| {
                let (voters, learners) = slot.gauges.membership();
                LeaderState {
                    shard: slot.shard,
                    term: slot.gauges.term(),
                    voters: voters.into_iter().map(NodeId).collect(),
                    learners: learners.into_iter().map(NodeId).collect(),
                    lag_entries: slot.gauges.replication_lag(),
                }
            })
            .collect()
    }

    /// What `node`'s leaders report (this node's own when `node` is this one).
    pub async fn leader_states_of(
        &self,
        node: NodeId,
        deadline: Instant,
    ) -> Result<Vec<LeaderState>, KvError> {
        if node == self.node_id() {
            return Ok(self.leader_states());
        }
        match self.call(node, PeerRequest::LeaderStates, deadline).await {
            Ok(PeerResponse::LeaderStates(states)) => Ok(states),
            Ok(PeerResponse::Failed(error)) => Err(error),
            Ok(other) => Err(KvError::Storage(format!(
                "unexpected answer from node {node}: {other:?}"
            ))),
            Err(CallError::Closed) => Err(KvError::ShuttingDown),
            Err(_) => Err(KvError::Unavailable {
                shard: crate::ids::ShardId(0),
                reason: format!("node {node} did not answer"),
                retry_after_ms: 1_000,
            }),
        }
    }

    /// Per shard, the report of the leader with the highest term among `nodes`
    /// (asked at once; a node that does not answer by `deadline` is left out).
    pub async fn leader_reports(
        &self,
        nodes: &[NodeId],
        deadline: Instant,
    ) -> BTreeMap<ShardId, (NodeId, LeaderState)> {
        let mut asks = tokio::task::JoinSet::new();
        for node in nodes {
            let router = self.clone();
            let node = *node;
            asks.spawn(async move { (node, router.leader_states_of(node, deadline).await) });
        }
        let mut reports: BTreeMap<ShardId, (NodeId, LeaderState)> = BTreeMap::new();
        while let Some(answer) = asks.join_next().await {
            let Ok((node, Ok(states))) = answer else {
                continue;
            };
            for state in states {
                let newer = reports
                    .get(&state.shard)
                    .is_none_or(|(_, known)| state.term > known.term);
                if newer {
                    reports.insert(state.shard, (node, state));
                }
            }
        }
        reports
    }

    /// Whether gossip counts `node` alive (or suspect) as this node sees it.
    pub fn gossip_alive(&self, node: NodeId) -> bool {
        node == self.node_id()
            || self
                .context()
                .membership
                .member(node)
                .is_some_and(|member| member.state != GossipState::Down)
    }

    /// Applies an operator's action to `node` through the metadata group's
    /// leader.
    pub async fn node_action(&self, node: NodeId, action: NodeAction) -> Result<(), KvError> {
        self.change_metadata(MetadataChange::NodeAction { node, action })
            .await
            .map(|_| ())
    }
}
