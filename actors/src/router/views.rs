//! Read-only views of the node and the cluster as this node sees them: the cluster
//! (nodes and, per shard, replicas, leader and epoch), this node's counters, its
//! health, and its replicas' content checksums.

use super::Router;
use crate::ids::NodeId;
use crate::kv::{
    ClusterInfo, Health, KvError, NodeInfo, NodeStatus, ShardChecksum, ShardInfo, TransportStats,
    WalStats, LEADERLESS_LISTED_MAX,
};
use crate::log_writer::LogWriterMsg;
use crate::node::registry::ShardSlot;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

impl Router {
    /// The leader of a shard as this node knows it: its running replica's view,
    /// else the last hint.
    fn leader_of(&self, slot: &ShardSlot) -> Option<NodeId> {
        slot.known_leader()
    }

    /// The cluster as this node sees it, with each shard's replication lag (and
    /// its leader, when this node knows none) as the live nodes' leaders report
    /// them within a second.
    pub async fn cluster_info(&self) -> ClusterInfo {
        let context = self.context();
        let me = context.node_id;
        let metadata = context.cluster.metadata();
        let live: Vec<NodeId> = metadata
            .as_ref()
            .map(|metadata| {
                metadata
                    .nodes
                    .iter()
                    .map(|node| node.id)
                    .filter(|node| self.gossip_alive(*node))
                    .collect()
            })
            .unwrap_or_default();
        let reports = self
            .leader_reports(&live, std::time::Instant::now() + Duration::from_secs(1))
            .await;
        let shard_info = |slot: &ShardSlot| {
            let placement = metadata
                .as_ref()
                .and_then(|metadata| metadata.shard(slot.shard).cloned())
                .unwrap_or_default();
            let (voters, learners) = if slot.is_hosted() {
                slot.gauges.membership()
            } else {
                (Vec::new(), Vec::new())
            };
            let report = reports.get(&slot.shard);
            ShardInfo {
                id: slot.shard,
                replicas: placement.replicas,
                leader: self.leader_of(slot).or(report.map(|(leader, _)| *leader)),
                lag_entries: report.map(|(_, state)| state.lag_entries),
                epoch: placement.epoch,
                applied_index: slot.gauges.applied_index(),
                compacted_index: slot.gauges.compacted_index(),
                voters: voters.into_iter().map(NodeId).collect(),
                learners: learners.into_iter().map(NodeId).collect(),
            }
        };
        let shards: Vec<ShardInfo> = context.registry.slots().iter().map(shard_info).collect();
        let metadata_group = context.registry.metadata_slot().map(shard_info);
        let status = &context.transport_status;
        let members = context.membership.members();
        let own_incarnation = context.membership.incarnation();
        let nodes = metadata
            .as_ref()
            .map(|metadata| {
                metadata
                    .nodes
                    .iter()
                    .map(|node| NodeInfo {
                        id: node.id,
                        state: node.state.as_str().to_string(),
                        http: node.addresses.http.clone(),
                        admin: node.addresses.admin.clone(),
                        cluster: node.addresses.cluster.clone(),
                        gossip: node.addresses.gossip.clone(),
                        replicas: shards
                            .iter()
                            .filter(|shard| shard.replicas.contains(&node.id))
                            .count() as u32,
                        leaders: shards
                            .iter()
                            .filter(|shard| shard.leader == Some(node.id))
                            .count() as u32,
                        reachable: node.id == me || status.is_reachable(node.id),
                        gossip_state: match members.get(&node.id) {
                            _ if node.id == me => "alive".to_string(),
                            Some(member) => member.state.as_str().to_string(),
                            None => "unknown".to_string(),
                        },
                        incarnation: match members.get(&node.id) {
                            _ if node.id == me => own_incarnation,
                            Some(member) => member.identity.incarnation,
                            None => 0,
                        },
                        uptime_seconds: if node.id == me {
                            Some(context.started_at.elapsed().as_secs())
                        } else {
                            members
                                .get(&node.id)
                                .filter(|member| {
                                    member.state != crate::membership::status::GossipState::Down
                                })
                                .map(|member| uptime_from_incarnation(member.identity.incarnation))
                        },
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClusterInfo {
            cluster_id: context.cluster_id.clone(),
            shard_count: context.registry.shard_count(),
            replication_factor: metadata
                .as_ref()
                .map_or(1, |metadata| metadata.replication_factor),
            nodes,
            shards,
            metadata_group,
        }
    }

    /// This node's counters.
    pub async fn status(&self) -> NodeStatus {
        let context = self.context();
        let registry = &context.registry;
        let mut wal = WalStats::default();
        if let Some(writer) = registry.log_writer() {
            let (reply, stats) = oneshot::channel();
            if writer.send_message(LogWriterMsg::Stats { reply }).is_ok() {
                if let Ok(Ok(stats)) = tokio::time::timeout(Duration::from_secs(2), stats).await {
                    wal = stats;
                }
            }
        }
        wal.checkpoints_total = registry.checkpoints_total();
        let slots = registry.slots();
        let status = &context.transport_status;
        let peers = status.peers();
        NodeStatus {
            node_id: context.node_id,
            cluster_id: context.cluster_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: context.started_at.elapsed().as_secs(),
            shard_count: registry.shard_count(),
            shards_hosted: slots.iter().filter(|slot| slot.is_hosted()).count() as u32,
            shards_serving: slots.iter().filter(|slot| slot.actor().is_some()).count() as u32,
            shards_leading: slots
                .iter()
                .filter(|slot| {
                    slot.actor().is_some() && slot.gauges.leader() == Some(context.node_id.0)
                })
                .count() as u32,
            shard_restarts_total: registry.restarts_total(),
            snapshots_sent_total: registry.snapshots_sent_total(),
            snapshots_installed_total: registry.snapshots_installed_total(),
            wal,
            transport: TransportStats {
                peers: peers.len() as u32,
                peers_reachable: peers.values().filter(|peer| peer.reachable).count() as u32,
                frames_sent_total: status.frames_sent_total.load(Ordering::Relaxed),
                frames_received_total: status.frames_received_total.load(Ordering::Relaxed),
                frames_rejected_total: status.frames_rejected_total.load(Ordering::Relaxed),
                items_dropped_total: status.items_dropped_total.load(Ordering::Relaxed),
                calls_total: status.calls_total.load(Ordering::Relaxed),
            },
            gossip: context.membership.stats(),
        }
    }

    /// Whether this node serves: a LogWriter runs and its WAL has not failed, and
    /// every shard hosted here has a running replica that knows its leader.
    pub async fn health(&self) -> Health {
        let context = self.context();
        let registry = &context.registry;
        let hosted: Vec<&ShardSlot> = registry
            .slots()
            .iter()
            .filter(|slot| slot.is_hosted())
            .collect();
        let leaderless: Vec<u32> = hosted
            .iter()
            .filter(|slot| slot.actor().is_none() || slot.gauges.leader().is_none())
            .map(|slot| slot.shard.0)
            .collect();
        let without_leader = leaderless.len() as u32;
        Health {
            serving: without_leader == 0
                && registry.log_writer().is_some()
                && !registry.wal_failed()
                && !self.is_closed(),
            node_id: context.node_id,
            shards_total: registry.shard_count(),
            shards_hosted: hosted.len() as u32,
            shards_without_leader: without_leader,
            leaderless_shards: leaderless.into_iter().take(LEADERLESS_LISTED_MAX).collect(),
        }
    }

    /// A content checksum of every replica hosted here, with its applied index. Two
    /// replicas of a shard hold the same data when both agree.
    pub async fn shard_checksums(&self) -> Result<Vec<ShardChecksum>, KvError> {
        let mut checksums = Vec::new();
        for slot in self.context().registry.slots() {
            if !slot.is_hosted() {
                continue;
            }
            let store = slot.store();
            let applied_index = slot.gauges.applied_index();
            let checksum = tokio::task::spawn_blocking(move || store.checksum())
                .await
                .map_err(|error| KvError::Storage(error.to_string()))??;
            checksums.push(ShardChecksum {
                shard: slot.shard,
                applied_index,
                checksum,
                leader: self.leader_of(slot),
            });
        }
        Ok(checksums)
    }
}

/// Seconds since a node started, from its gossip incarnation (its start time in
/// Unix milliseconds, plus one per rejoin).
fn uptime_from_incarnation(incarnation: u64) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    now_ms.saturating_sub(incarnation) / 1_000
}
