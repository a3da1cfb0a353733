//! The nemesis: injects one fault at a time, chosen by the seeded RNG, holds it,
//! and heals it. At most one node is down or frozen at any moment, so every shard
//! keeps a live majority between faults and the promises are all testable.
//!
//! Kinds:
//! - `kill`: SIGKILL a node, later restart it on its data directory;
//! - `stop`: SIGSTOP a node, later SIGCONT it;
//! - `actor`: kill a shard replica, the Membership actor or the Transport of a
//!   node through the admin protocol (its supervisor brings it back);
//! - `partition`: cut links with the nodes' fault hook: one node isolated both
//!   ways, one node's outgoing traffic lost (one-way), or a ring/bridge where every
//!   node reaches only its neighbours (each sees a majority, no two the same);
//! - `transfer`: a storm of leadership transfers;
//! - `membership` (4 or more nodes): drain a node, kill and remove it, and join a
//!   fresh node in its place.

use crate::cluster::Cluster;
use anyhow::{anyhow, bail};
use mimori::admin::protocol::{ActorTarget, NodeAction};
use mimori_actors::ids::{NodeId, ShardId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Kill,
    Stop,
    Actor,
    Partition,
    Transfer,
    Membership,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::Actor,
        FaultKind::Partition,
        FaultKind::Transfer,
        FaultKind::Membership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Actor => "actor",
            FaultKind::Partition => "partition",
            FaultKind::Transfer => "transfer",
            FaultKind::Membership => "membership",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown fault {name:?}; expected one of kill, stop, actor, partition, transfer, membership"
                )
            })
    }
}

/// One injected fault, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    pub kind: FaultKind,
    pub detail: String,
    pub at_ms: u64,
    pub held_ms: u64,
}

/// How long faults last and how far apart they are.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    pub quiet_ms: (u64, u64),
    pub hold_ms: (u64, u64),
}

impl Pacing {
    pub const DEFAULT: Pacing = Pacing {
        quiet_ms: (500, 2_000),
        hold_ms: (1_500, 5_000),
    };
}

/// What is currently broken, so `heal` can undo it.
#[derive(Default)]
pub struct Damage {
    killed: Option<u64>,
    paused: Option<u64>,
    /// Nodes with fault rules set.
    partitioned: BTreeSet<u64>,
}

/// Injects one fault of `kind`, holds it for `hold`, and heals it.
pub async fn inject(
    cluster: &mut Cluster,
    kind: FaultKind,
    rng: &mut StdRng,
    hold: Duration,
    damage: &mut Damage,
) -> anyhow::Result<String> {
    let members = cluster.serving_ids();
    let victim = *members
        .choose(rng)
        .ok_or_else(|| anyhow!("no serving node"))?;
    match kind {
        FaultKind::Kill => {
            cluster.kill(victim)?;
            damage.killed = Some(victim);
            tokio::time::sleep(hold).await;
            heal(cluster, damage).await?;
            Ok(format!("SIGKILL node {victim}, restarted"))
        }
        FaultKind::Stop => {
            cluster.pause(victim)?;
            damage.paused = Some(victim);
            tokio::time::sleep(hold).await;
            heal(cluster, damage).await?;
            Ok(format!("SIGSTOP node {victim}, SIGCONT"))
        }
        FaultKind::Actor => {
            let target = match rng.gen_range(0..3) {
                0 => ActorTarget::Membership,
                1 => ActorTarget::Transport,
                _ => {
                    let mut admin = cluster.admin(victim).await?;
                    let shards: Vec<ShardId> = admin
                        .shard_checksums()
                        .await
                        .map_err(|error| anyhow!("{error}"))?
                        .into_iter()
                        .map(|checksum| checksum.shard)
                        .collect();
                    let shard = *shards
                        .choose(rng)
                        .ok_or_else(|| anyhow!("node {victim} hosts no replica"))?;
                    ActorTarget::ShardReplica { shard }
                }
            };
            let mut admin = cluster.admin(victim).await?;
            admin
                .kill_actor(target)
                .await
                .map_err(|error| anyhow!("kill {target:?} on node {victim}: {error}"))?;
            tokio::time::sleep(hold.min(Duration::from_secs(1))).await;
            Ok(format!("killed {target:?} on node {victim}"))
        }
        FaultKind::Partition => {
            let (shape, cuts) = partition_shape(&members, victim, rng);
            for (node, (drop_to, drop_from)) in &cuts {
                damage.partitioned.insert(*node);
                cluster.cut_links(*node, drop_to, drop_from).await?;
            }
            tokio::time::sleep(hold).await;
            heal(cluster, damage).await?;
            Ok(shape)
        }
        FaultKind::Transfer => {
            let transfers = transfer_storm(cluster, rng, hold).await?;
            Ok(format!("{transfers} leadership transfers"))
        }
        FaultKind::Membership => replace_node(cluster, rng).await,
    }
}

/// Per node, the peers it drops traffic to and the peers it drops traffic from.
type Cuts = BTreeMap<u64, (BTreeSet<u64>, BTreeSet<u64>)>;

/// The cuts of one partition, and a description.
fn partition_shape(members: &[u64], victim: u64, rng: &mut StdRng) -> (String, Cuts) {
    let others: BTreeSet<u64> = members.iter().copied().filter(|&n| n != victim).collect();
    let mut cuts = Cuts::new();
    match rng.gen_range(0..3) {
        0 => {
            cuts.insert(victim, (others.clone(), others.clone()));
            for &other in &others {
                let victim_only: BTreeSet<u64> = [victim].into();
                cuts.insert(other, (victim_only.clone(), victim_only));
            }
            (format!("node {victim} isolated"), cuts)
        }
        1 => {
            cuts.insert(victim, (others, BTreeSet::new()));
            (
                format!("node {victim}'s outgoing traffic lost (one-way)"),
                cuts,
            )
        }
        _ => {
            // A ring in a random order: each node reaches only its two neighbours.
            // With three nodes that is everyone, so one link is cut instead (the
            // third node bridges the two ends).
            let mut ring: Vec<u64> = members.to_vec();
            ring.shuffle(rng);
            let count = ring.len();
            for (index, &node) in ring.iter().enumerate() {
                let mut cut = BTreeSet::new();
                for (other_index, &other) in ring.iter().enumerate() {
                    let distance = index.abs_diff(other_index);
                    let distance = distance.min(count - distance);
                    if distance > 1 {
                        cut.insert(other);
                    }
                }
                if !cut.is_empty() {
                    cuts.insert(node, (cut.clone(), cut));
                }
            }
            if cuts.is_empty() && count >= 2 {
                let (a, b) = (ring[0], ring[1]);
                cuts.insert(a, ([b].into(), [b].into()));
                cuts.insert(b, ([a].into(), [a].into()));
                let bridge = ring
                    .get(2)
                    .map_or(String::new(), |c| format!(", {c} bridges"));
                return (format!("link {a}-{b} cut{bridge}"), cuts);
            }
            (
                format!("ring {ring:?}: each node reaches only its neighbours"),
                cuts,
            )
        }
    }
}

/// Undoes whatever `damage` records: wakes the frozen node, restarts the killed one
/// and clears every fault rule.
pub async fn heal(cluster: &mut Cluster, damage: &mut Damage) -> anyhow::Result<()> {
    if let Some(node) = damage.paused.take() {
        cluster.resume(node)?;
    }
    if let Some(node) = damage.killed.take() {
        cluster.restart(node).await?;
    }
    let partitioned = std::mem::take(&mut damage.partitioned);
    for node in partitioned {
        cluster.heal_links(node).await?;
    }
    Ok(())
}

/// Moves leaderships around for `duration`; returns how many transfers succeeded.
async fn transfer_storm(
    cluster: &Cluster,
    rng: &mut StdRng,
    duration: Duration,
) -> anyhow::Result<u32> {
    let members = cluster.serving_ids();
    let asked = *members.first().ok_or_else(|| anyhow!("no serving node"))?;
    let mut admin = cluster.admin(asked).await?;
    let deadline = Instant::now() + duration;
    let mut transfers = 0;
    while Instant::now() < deadline {
        let info = admin
            .cluster_info()
            .await
            .map_err(|error| anyhow!("{error}"))?;
        let Some(shard) = info.shards.choose(rng) else {
            bail!("the cluster has no shards");
        };
        let candidates: Vec<NodeId> = shard
            .replicas
            .iter()
            .copied()
            .filter(|node| Some(*node) != shard.leader && members.contains(&node.0))
            .collect();
        if let Some(to) = candidates.choose(rng) {
            if admin.transfer_leader(shard.id, *to).await.is_ok() {
                transfers += 1;
            }
        }
    }
    Ok(transfers)
}

/// Drains a node, kills and removes it, and joins a fresh node in its place.
async fn replace_node(cluster: &mut Cluster, rng: &mut StdRng) -> anyhow::Result<String> {
    let members = cluster.serving_ids();
    if members.len() < 4 {
        bail!("replacing a node needs 4 or more nodes");
    }
    let victim = *members.choose(rng).ok_or_else(|| anyhow!("no node"))?;
    let asked = *members
        .iter()
        .find(|&&node| node != victim)
        .ok_or_else(|| anyhow!("no other node"))?;
    let mut admin = cluster.admin(asked).await?;
    admin
        .node_action(NodeId(victim), NodeAction::Drain)
        .await
        .map_err(|error| anyhow!("drain node {victim}: {error}"))?;
    let drained = wait_for(Duration::from_secs(90), || async {
        let mut admin = cluster.admin(asked).await.ok()?;
        let info = admin.cluster_info().await.ok()?;
        let holds = info
            .shards
            .iter()
            .chain(info.metadata_group.iter())
            .any(|shard| shard.replicas.contains(&NodeId(victim)));
        let hosting = info
            .nodes
            .iter()
            .find(|node| node.id == NodeId(victim))
            .map_or(0, |node| node.replicas);
        (!holds && hosting == 0).then_some(())
    })
    .await;
    if drained.is_none() {
        bail!("node {victim} still holds replicas 90 s after the drain");
    }
    cluster.kill(victim)?;
    cluster.nodes[(victim - 1) as usize].retired = true;
    let removed = wait_for(Duration::from_secs(30), || async {
        let mut admin = cluster.admin(asked).await.ok()?;
        admin
            .node_action(NodeId(victim), NodeAction::Remove)
            .await
            .ok()
    })
    .await;
    if removed.is_none() {
        bail!("node {victim} could not be removed within 30 s of its kill");
    }
    let joined = cluster.add_node().await?;
    Ok(format!(
        "node {victim} drained, killed and removed; node {joined} joined"
    ))
}

/// Polls `probe` every 200 ms until it yields something or `timeout` passes.
async fn wait_for<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
