//! The rebalancer: runs on every node, acts only where the metadata group leads.
//! Every round it
//!
//! 1. marks nodes `dead` that gossip has seen down for at least `dead_after`, and
//!    `active` again those dead ones gossip sees alive (a restarted node);
//! 2. asks every live node which shard groups it leads and with which
//!    configuration, so it knows which shards are *settled* (configuration equals
//!    placement, no learners);
//! 3. lets the placement planner (`metadata::placement`) take the next step of
//!    up to `moves_max` shards towards the ring's proposal, and records which
//!    shards settled;
//!
//! and writes the result as one new metadata revision when anything changed. The
//! shard leaders carry the steps out (`shard::membership`); the nodes a shard moved
//! off release their replicas once it settled (`supervisor`).

use super::cluster_state::ClusterState;
use crate::ids::{NodeId, ShardId};
use crate::kv::KvError;
use crate::membership::status::{GossipState, MembershipStatus};
use crate::metadata::placement::{self, PlanContext};
use crate::metadata::NodeState;
use crate::router::Router;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How the rebalancer paces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebalanceOptions {
    /// Time between rounds.
    pub interval: Duration,
    /// How long gossip must see a node down before its replicas are re-created
    /// elsewhere.
    pub dead_after: Duration,
    /// Most shards with a move in progress at once.
    pub moves_max: usize,
}

impl Default for RebalanceOptions {
    fn default() -> Self {
        RebalanceOptions {
            interval: Duration::from_millis(250),
            dead_after: Duration::from_secs(60),
            moves_max: 16,
        }
    }
}

/// Runs rounds until `stop` changes.
pub async fn run(
    router: Router,
    cluster: Arc<ClusterState>,
    membership: Arc<MembershipStatus>,
    options: RebalanceOptions,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(options.interval) => {}
            _ = stop.changed() => return,
        }
        if !router.leads_metadata() {
            continue;
        }
        if let Err(error) = round(&router, &cluster, &membership, &options).await {
            tracing::warn!(%error, "rebalancing round failed");
        }
    }
}

/// One round; see the module documentation.
async fn round(
    router: &Router,
    cluster: &ClusterState,
    membership: &MembershipStatus,
    options: &RebalanceOptions,
) -> Result<(), KvError> {
    let Some(metadata) = cluster.metadata() else {
        return Ok(());
    };
    let me = router.node_id();
    let members = membership.members();
    let now = Instant::now();
    let live = |node: NodeId| router.gossip_alive(node);
    let dead = |node: NodeId| {
        node != me
            && members.get(&node).is_some_and(|member| {
                member.state == GossipState::Down
                    && now.duration_since(member.since) >= options.dead_after
            })
    };
    let asked: Vec<NodeId> = metadata
        .nodes
        .iter()
        .filter(|node| node.state != NodeState::Removed && live(node.id))
        .map(|node| node.id)
        .collect();
    let groups = router
        .leader_reports(&asked, Instant::now() + Duration::from_secs(2))
        .await;
    // The report settles a shard when its leader's voters are exactly the nodes
    // placed in the copy being changed (the stored one, read by the change).
    let settled_in = |metadata: &crate::metadata::ClusterMetadata, shard: ShardId| {
        let (Some((_, report)), Some(placement)) = (groups.get(&shard), metadata.shard(shard))
        else {
            return false;
        };
        let placed: BTreeSet<NodeId> = placement.replicas.iter().copied().collect();
        report.learners.is_empty()
            && report.voters.iter().copied().collect::<BTreeSet<_>>() == placed
    };
    router
        .change_metadata_here(|next| {
            let before = next.clone();
            for node in before.nodes.iter() {
                match node.state {
                    NodeState::Active | NodeState::Draining | NodeState::Joining
                        if dead(node.id) =>
                    {
                        tracing::warn!(
                            node = node.id.0,
                            after_ms = options.dead_after.as_millis() as u64,
                            "node down too long; declared dead, its replicas move elsewhere"
                        );
                        next.set_state(node.id, NodeState::Dead);
                    }
                    NodeState::Dead if live(node.id) => {
                        tracing::info!(node = node.id.0, "dead node is back; active again");
                        next.set_state(node.id, NodeState::Active);
                    }
                    _ => {}
                }
            }
            let settled = |shard: ShardId| settled_in(&before, shard);
            let context = PlanContext {
                live: &live,
                settled: &settled,
                moves_max: options.moves_max,
            };
            let moved = placement::plan(next, &context);
            if !moved.is_empty() {
                tracing::info!(
                    shards = ?moved.iter().map(|shard| shard.0).collect::<Vec<_>>(),
                    "placement steps taken"
                );
            }
            Ok(next.nodes != before.nodes
                || next.placement != before.placement
                || next.metadata_placement != before.metadata_placement)
        })
        .await
        .map(|_| ())
}
