//! Shard-aware routing: the client's copy of the cluster's placement table, from
//! `GET /v1/cluster`, and the choice of the node a request goes to.
//!
//! A key's shard is computed exactly as the servers do
//! ([`mimori_actors::router::shard_for`]); the request goes to the gateway of the
//! shard's leader, which serves it without forwarding. Any gateway would serve it
//! (they forward), so a stale table costs a hop, never correctness. The table is
//! refreshed when it is older than its time to live, when a node it points at
//! cannot be reached, and when a request answers 503 (a leader moved or a shard
//! lost its quorum), but at most once per `refresh_min_interval`.

use mimori_actors::kv::{ClusterInfo, Namespace};
use mimori_actors::router::shard_for;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The placement table as the client uses it.
#[derive(Clone, Debug)]
pub struct Placement {
    pub shard_count: u32,
    /// Per shard, the leader's gateway (`host:port`), when known.
    pub leaders: Vec<Option<String>>,
    /// Per shard, its placement epoch, to notice moves.
    pub epochs: Vec<u64>,
    /// When this table was read.
    pub fetched_at: Instant,
}

impl Placement {
    /// The table in a cluster view.
    pub fn from_cluster(info: &ClusterInfo, now: Instant) -> Placement {
        let http: BTreeMap<u64, &str> = info
            .nodes
            .iter()
            .filter(|node| node.state == "active" || node.state == "draining")
            .map(|node| (node.id.0, node.http.as_str()))
            .collect();
        let mut leaders = vec![None; info.shard_count as usize];
        let mut epochs = vec![0; info.shard_count as usize];
        for shard in &info.shards {
            let Some(slot) = leaders.get_mut(shard.id.0 as usize) else {
                continue;
            };
            *slot = shard
                .leader
                .and_then(|leader| http.get(&leader.0))
                .map(|address| address.to_string());
            epochs[shard.id.0 as usize] = shard.epoch;
        }
        Placement {
            shard_count: info.shard_count,
            leaders,
            epochs,
            fetched_at: now,
        }
    }

    /// The gateway of the leader of `key`'s shard, when known.
    pub fn leader_of(&self, namespace: Namespace, key: &[u8]) -> Option<&str> {
        if self.shard_count == 0 {
            return None;
        }
        let shard = shard_for(namespace, key, self.shard_count);
        self.leaders.get(shard.0 as usize)?.as_deref()
    }

    /// Whether the table is older than `ttl`.
    pub fn is_expired(&self, ttl: Duration, now: Instant) -> bool {
        now.duration_since(self.fetched_at) >= ttl
    }

    /// Whether `other` moved any shard (a higher epoch somewhere).
    pub fn moved_since(&self, other: &Placement) -> bool {
        self.epochs
            .iter()
            .zip(&other.epochs)
            .any(|(mine, theirs)| theirs > mine)
    }

    /// Forgets every leader at `address` (it could not be reached).
    pub fn forget(&mut self, address: &str) {
        for leader in &mut self.leaders {
            if leader.as_deref() == Some(address) {
                *leader = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimori_actors::ids::{NodeId, ShardId};
    use mimori_actors::kv::{NodeInfo, ShardInfo};

    fn node(id: u64, http: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            state: "active".into(),
            http: http.into(),
            admin: String::new(),
            cluster: String::new(),
            gossip: String::new(),
            replicas: 0,
            leaders: 0,
            reachable: true,
            gossip_state: "alive".into(),
            incarnation: 1,
            uptime_seconds: None,
        }
    }

    fn shard(id: u32, leader: Option<u64>, epoch: u64) -> ShardInfo {
        ShardInfo {
            id: ShardId(id),
            replicas: vec![NodeId(1), NodeId(2)],
            leader: leader.map(NodeId),
            epoch,
            applied_index: 0,
            compacted_index: 0,
            voters: Vec::new(),
            learners: Vec::new(),
            lag_entries: None,
        }
    }

    /// Proves a key is routed to its shard's leader's gateway, computed like the
    /// servers do, and that forgetting a node and epoch moves are seen.
    #[test]
    fn routes_keys_to_their_leaders() {
        let info = ClusterInfo {
            cluster_id: "c".into(),
            shard_count: 2,
            replication_factor: 2,
            nodes: vec![node(1, "127.0.0.1:7070"), node(2, "127.0.0.1:7080")],
            shards: vec![shard(0, Some(1), 3), shard(1, Some(2), 4)],
            metadata_group: None,
        };
        let now = Instant::now();
        let mut placement = Placement::from_cluster(&info, now);
        for key in [&b"a"[..], b"b", b"c", b"users/1"] {
            let shard = shard_for(Namespace::Kv, key, 2);
            let expected = if shard.0 == 0 {
                "127.0.0.1:7070"
            } else {
                "127.0.0.1:7080"
            };
            assert_eq!(placement.leader_of(Namespace::Kv, key), Some(expected));
        }
        let moved = Placement::from_cluster(
            &ClusterInfo {
                shards: vec![shard(0, Some(2), 4), shard(1, Some(2), 4)],
                ..info.clone()
            },
            now,
        );
        assert!(placement.moved_since(&moved));
        assert!(!moved.moved_since(&placement));
        placement.forget("127.0.0.1:7080");
        assert_eq!(placement.leaders[1], None);
        assert!(placement.is_expired(Duration::ZERO, now));
    }
}
