//! Black-box tests of membership: SWIM gossip between real `mimorid` processes on
//! 127.0.0.1, with failure detection sped up through the gossip settings.
//!
//! Each test is one story told with `--- phase` lines; each starts by saying what
//! it proves.

mod common;

use common::cluster::{
    admin, assert_all_readable, client, cluster_view, get, put, tail, write_all, Acknowledged,
    Cluster, WriteLoad, TEST_SHARDS,
};
use common::ClusterPlace;
use mimori_actors::membership::actor::GossipTiming;
use mimori_actors::membership::packet::PacketKey;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROBE_INTERVAL_MS: u64 = 500;
const PROBE_TIMEOUT_MS: u64 = 200;
const SUSPECT_TIMEOUT_MS: u64 = 1_500;

/// The gossip settings every node of these tests runs with.
fn fast_gossip() -> [(&'static str, String); 3] {
    [
        (
            "MIMORI_GOSSIP_PROBE_INTERVAL_MS",
            PROBE_INTERVAL_MS.to_string(),
        ),
        (
            "MIMORI_GOSSIP_PROBE_TIMEOUT_MS",
            PROBE_TIMEOUT_MS.to_string(),
        ),
        (
            "MIMORI_GOSSIP_SUSPECT_TIMEOUT_MS",
            SUSPECT_TIMEOUT_MS.to_string(),
        ),
    ]
}

/// Fast gossip, and nodes declared dead after 5 s down.
fn fast_gossip_and_death() -> Vec<(&'static str, String)> {
    let mut variables = fast_gossip().to_vec();
    variables.push(("MIMORI_DEAD_AFTER_MS", "5000".to_string()));
    variables
}

/// Environment variables as the harness takes them.
fn pairs<'a>(variables: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    variables
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

fn timing() -> GossipTiming {
    GossipTiming {
        probe_interval: Duration::from_millis(PROBE_INTERVAL_MS),
        probe_timeout: Duration::from_millis(PROBE_TIMEOUT_MS),
        suspect_timeout: Duration::from_millis(SUSPECT_TIMEOUT_MS),
    }
}

fn phase(text: &str) {
    eprintln!("--- {text}");
}

/// What `asked` reports of `about`: (gossip state, incarnation).
fn gossip_view(cluster: &Cluster, asked: u64, about: u64) -> Option<(String, u64)> {
    let view = cluster_view(cluster.node(asked))?;
    let node = view["nodes"]
        .as_array()?
        .iter()
        .find(|node| node["id"].as_u64() == Some(about))?
        .clone();
    Some((
        node["gossip_state"].as_str()?.to_string(),
        node["incarnation"].as_u64()?,
    ))
}

/// Polls until `asked` reports `about` in `state`; returns the time it took and
/// the incarnation seen, or panics with the logs after `timeout`.
fn wait_for_state(
    cluster: &Cluster,
    asked: u64,
    about: u64,
    state: &str,
    timeout: Duration,
) -> (Duration, u64) {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        last = gossip_view(cluster, asked, about);
        if let Some((seen, incarnation)) = &last {
            if seen == state {
                return (started.elapsed(), *incarnation);
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "node {asked} did not report node {about} {state} within {timeout:?} (last {last:?})\n{}",
        tail(&cluster.node(asked).log(), 30)
    );
}

async fn gossip_stats(node: &common::NodeProcess) -> mimori_actors::kv::GossipStats {
    let mut admin = admin(node).await;
    admin.status().await.expect("status").gossip
}

/// Proves the gossip layer end to end: every node sees the others alive; packets
/// that fail the HMAC (garbage, or sealed with another cluster's secret) are
/// dropped and counted, one count each; a SIGSTOPped node is reported down within
/// the detection bound of the settings (printed), rejoins after SIGCONT with a
/// higher incarnation, and then serves writes again; a node stopped gracefully
/// leaves, so it is reported down well before a suspicion could time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_gossip_detects_stopped_nodes_and_rejects_forged_packets() {
    let _place = ClusterPlace::take(3);
    let variables = fast_gossip();
    let environment = pairs(&variables);
    let mut cluster = Cluster::start(3, &environment);
    let settle = Duration::from_secs(30);

    phase("every node sees the others alive");
    for asked in 1..=3 {
        for about in (1..=3).filter(|about| *about != asked) {
            wait_for_state(&cluster, asked, about, "alive", settle);
        }
    }

    phase("forged packets are rejected and counted");
    let before = gossip_stats(cluster.node(1)).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    let target = cluster.node(1).gossip;
    let mut garbage = vec![1u8; 120];
    garbage[40] = 7;
    socket.send_to(&garbage, target).expect("send garbage");
    let foreign = PacketKey::new(Some("another cluster's secret"))
        .seal(b"a payload foca would otherwise read")
        .expect("seal");
    socket
        .send_to(&foreign, target)
        .expect("send a foreign packet");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = gossip_stats(cluster.node(1)).await;
    while after.packets_rejected_total < before.packets_rejected_total + 2
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = gossip_stats(cluster.node(1)).await;
    }
    eprintln!(
        "rejected packets: {} before, {} after",
        before.packets_rejected_total, after.packets_rejected_total
    );
    assert_eq!(
        after.packets_rejected_total,
        before.packets_rejected_total + 2
    );
    assert_eq!(after.packets_invalid_total, before.packets_invalid_total);
    assert_eq!(after.members_alive, 2, "forged packets changed nothing");

    phase("SIGSTOP node 3: reported down within the detection bound");
    let (_, incarnation_before) = gossip_view(&cluster, 1, 3).expect("view");
    let bound = timing().detection_bound(3);
    cluster.node(3).pause();
    let (detected, _) = wait_for_state(&cluster, 1, 3, "down", Duration::from_secs(30));
    eprintln!(
        "stopped node reported down after {} ms (bound {} ms)",
        detected.as_millis(),
        bound.as_millis()
    );
    // The bound plus what the test's own polling and a loaded machine add.
    assert!(
        detected <= bound + Duration::from_millis(1_000),
        "detected after {detected:?}, bound {bound:?}"
    );

    phase("the cluster keeps serving through nodes 1 and 2");
    let http = client();
    let base1 = cluster.node(1).url("");
    put(&http, &base1, "while-3-is-stopped", "v1")
        .await
        .expect("write with node 3 stopped");

    phase("SIGCONT node 3: it rejoins with a higher incarnation and serves");
    cluster.node(3).resume();
    let (rejoined, incarnation_after) =
        wait_for_state(&cluster, 1, 3, "alive", Duration::from_secs(30));
    eprintln!(
        "resumed node seen alive again after {} ms, incarnation {incarnation_before} -> {incarnation_after}",
        rejoined.as_millis()
    );
    assert!(incarnation_after > incarnation_before);
    let base3 = cluster.node(3).url("");
    let mut written = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while written.is_none() && Instant::now() < deadline {
        written = put(&http, &base3, "after-3-resumed", "v2").await.ok();
    }
    assert!(written.is_some(), "node 3 serves writes again");
    assert_eq!(
        get(&http, &base3, "while-3-is-stopped", false)
            .await
            .expect("read")
            .map(|(value, _)| value),
        Some("v1".to_string())
    );

    phase("a gracefully stopped node leaves: down before any suspicion could end");
    cluster.node(2).signal("TERM");
    let (left, _) = wait_for_state(&cluster, 1, 2, "down", Duration::from_secs(30));
    assert_eq!(
        cluster.node_mut(2).terminate(),
        Some(0),
        "node 2 stops cleanly"
    );
    eprintln!(
        "stopped node reported down {} ms after SIGTERM",
        left.as_millis()
    );
    assert!(
        left < Duration::from_millis(SUSPECT_TIMEOUT_MS),
        "a leave took {left:?}, as long as a suspicion"
    );
}

/// Replicas placed on each node, as node `asked` sees the placement (empty when
/// it does not answer).
fn replicas_per_node(cluster: &Cluster, asked: u64) -> BTreeMap<u64, u64> {
    let Some(view) = cluster_view(cluster.node(asked)) else {
        return BTreeMap::new();
    };
    view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            (
                node["id"].as_u64().unwrap_or(0),
                node["replicas"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The registry state of `about` as node `asked` sees it.
fn registry_state(cluster: &Cluster, asked: u64, about: u64) -> Option<String> {
    let view = cluster_view(cluster.node(asked))?;
    view["nodes"]
        .as_array()?
        .iter()
        .find(|node| node["id"].as_u64() == Some(about))
        .and_then(|node| node["state"].as_str().map(str::to_string))
}

/// Polls `done` (which says why not yet) every 200 ms for up to `timeout`;
/// returns how long it took, or panics with the last reason and node 1's log.
fn wait_until(
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> Option<String>,
) -> Duration {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        match done() {
            None => return started.elapsed(),
            Some(reason) => last = reason,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{what} did not happen within {timeout:?}: {last}\n{}",
        tail(&cluster.node(1).log(), 40)
    );
}

/// Readers that keep reading random keys of `expected` linearizably through
/// random gateways until stopped; counts reads and wrong or failed answers.
struct ReadLoad {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl ReadLoad {
    fn start(bases: Vec<String>, expected: &Acknowledged, readers: usize) -> ReadLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let keys: Arc<Vec<(String, (String, u64))>> =
            Arc::new(expected.clone().into_iter().collect());
        let bases = Arc::new(bases);
        let tasks = (0..readers)
            .map(|_| {
                let (stop, reads, keys, bases) =
                    (stop.clone(), reads.clone(), keys.clone(), bases.clone());
                tokio::spawn(async move {
                    let http = client();
                    let mut problems = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let (pick, base) = {
                            let mut rng = rand::thread_rng();
                            (rng.gen_range(0..keys.len()), rng.gen_range(0..bases.len()))
                        };
                        let (key, (value, revision)) = &keys[pick];
                        match get(&http, &bases[base], key, false).await {
                            Ok(Some((read, read_revision)))
                                if &read == value && read_revision == *revision => {}
                            other => problems.push(format!(
                                "{key} through {}: expected revision {revision}, got {other:?}",
                                bases[base]
                            )),
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    problems
                })
            })
            .collect();
        ReadLoad { stop, reads, tasks }
    }

    /// Stops the readers; asserts every read returned the acknowledged value.
    async fn stop_and_check(self, during: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let mut problems = Vec::new();
        for task in self.tasks {
            problems.extend(task.await.expect("reader task"));
        }
        let reads = self.reads.load(Ordering::Relaxed);
        eprintln!(
            "{reads} linearizable reads {during}, {} wrong or failed",
            problems.len()
        );
        assert!(reads > 0, "no read ran {during}");
        assert!(
            problems.is_empty(),
            "reads failed {during}: {:?}",
            &problems[..problems.len().min(5)]
        );
    }
}

/// Proves placement follows membership: with 10,000 keys in a three-node cluster
/// and writes going on, two joining nodes get replicas within 60 s (every node
/// holds some, none more than `ceil(3 × shards / 5) + 2`, every shard back to
/// three voters), while every key stays readable; then a drained node ends with no
/// replica (and releases its local replicas) while it keeps serving, and no
/// acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t61_joins_spread_replicas_and_a_drain_empties_a_node() {
    let _place = ClusterPlace::take(5);
    let environment = [("MIMORI_REBALANCE_MOVES_MAX", "4")];
    phase("start three nodes and write 10,000 keys");
    let mut cluster = Cluster::start(3, &environment);
    let base1 = cluster.node(1).url("");
    let keys = write_all(&base1, "before-join/", 10_000, 32).await;
    let writes = WriteLoad::start(
        vec![cluster.node(2).url(""), cluster.node(3).url("")],
        "during-join/",
        8,
    );

    phase("join nodes 4 and 5 while writing and reading");
    let reads = ReadLoad::start(
        (1..=3).map(|node| cluster.node(node).url("")).collect(),
        &keys,
        4,
    );
    cluster.join_node(&environment);
    cluster.join_node(&environment);
    let bound = (3 * u64::from(TEST_SHARDS)).div_ceil(5) + 2;
    let spread = wait_until(
        &cluster,
        "spreading replicas to 5 nodes",
        Duration::from_secs(60),
        || {
            let load = replicas_per_node(&cluster, 1);
            if load.len() != 5 || load.values().any(|count| *count == 0 || *count > bound) {
                return Some(format!("replicas per node {load:?} (bound {bound})"));
            }
            cluster.unsettled(3)
        },
    );
    reads.stop_and_check("while nodes 4 and 5 joined").await;
    let load = replicas_per_node(&cluster, 1);
    eprintln!(
        "replicas spread to 5 nodes in {} ms: {load:?} (bound {bound})",
        spread.as_millis()
    );
    assert_all_readable(&cluster.node(5).url(""), &keys, 16).await;

    phase("drain node 2");
    let mut admin = admin(cluster.node(3)).await;
    admin
        .node_action(
            mimori_actors::ids::NodeId(2),
            mimori_actors::metadata::NodeAction::Drain,
        )
        .await
        .expect("drain accepted");
    let drained = wait_until(&cluster, "draining node 2", Duration::from_secs(60), || {
        let load = replicas_per_node(&cluster, 1);
        if load.get(&2) != Some(&0) {
            return Some(format!("replicas per node {load:?}"));
        }
        if registry_state(&cluster, 4, 2).as_deref() != Some("draining") {
            return Some("node 4 does not see node 2 draining".into());
        }
        cluster.unsettled(3)
    });
    eprintln!(
        "node 2 drained in {} ms: {:?}",
        drained.as_millis(),
        replicas_per_node(&cluster, 1)
    );
    let released = wait_until(
        &cluster,
        "node 2 releasing its replicas",
        Duration::from_secs(30),
        || {
            let Some(body) = common::http_get(cluster.node(2).http, "/v1/status") else {
                return Some("node 2 does not answer /v1/status".into());
            };
            let status: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match status["shards_hosted"].as_u64() {
                Some(0) => None,
                hosted => Some(format!("node 2 still hosts {hosted:?} replicas")),
            }
        },
    );
    eprintln!(
        "node 2 released its replicas {} ms later",
        released.as_millis()
    );

    phase("no acknowledged write is lost; the drained node still serves");
    let (acknowledged, failed) = writes.stop().await;
    eprintln!(
        "{} writes acknowledged during the join and the drain, {failed} failed or unknown",
        acknowledged.len()
    );
    assert!(!acknowledged.is_empty());
    assert_all_readable(&cluster.node(4).url(""), &acknowledged, 16).await;
    assert_all_readable(&cluster.node(2).url(""), &keys, 16).await;
}

/// Proves a dead node's replicas are re-created: in a five-node cluster with
/// `dead_after` = 5 s and writes going on, a SIGKILLed node is declared dead, every
/// shard is back to three replicas on live nodes, and all data (the keys written
/// before, and every write acknowledged during) is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t62_a_dead_nodes_replicas_are_recreated_elsewhere() {
    let _place = ClusterPlace::take(5);
    let variables = fast_gossip_and_death();
    let environment = pairs(&variables);
    phase("start five nodes and write 2,000 keys");
    let mut cluster = Cluster::start(5, &environment);
    // Five nodes start with the first three holding everything; let the spreading
    // finish so the keys below are written to a calm cluster.
    let share = (3 * u64::from(TEST_SHARDS)).div_ceil(5);
    wait_until(
        &cluster,
        "spreading replicas to 5 nodes",
        Duration::from_secs(60),
        || {
            let load = replicas_per_node(&cluster, 1);
            if load.len() != 5 || load.values().any(|count| *count == 0 || *count > share) {
                return Some(format!("replicas per node {load:?} (share {share})"));
            }
            cluster.unsettled(3)
        },
    );
    let keys = write_all(&cluster.node(1).url(""), "before-death/", 2_000, 16).await;
    let victim = 4;
    let held = replicas_per_node(&cluster, 1)
        .get(&victim)
        .copied()
        .unwrap_or(0);
    assert!(held > 0, "node {victim} holds replicas to lose");
    let writes = WriteLoad::start(
        vec![cluster.node(1).url(""), cluster.node(2).url("")],
        "during-death/",
        8,
    );

    phase(&format!(
        "SIGKILL node {victim}, which holds {held} replicas"
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node_mut(victim).kill();
    let recovered = wait_until(
        &cluster,
        "re-creating the dead node's replicas",
        Duration::from_secs(60),
        || {
            if registry_state(&cluster, 1, victim).as_deref() != Some("dead") {
                return Some(format!("node {victim} not dead yet"));
            }
            let load = replicas_per_node(&cluster, 1);
            if load.get(&victim) != Some(&0) {
                return Some(format!("replicas per node {load:?}"));
            }
            cluster.unsettled(3)
        },
    );
    eprintln!(
        "node {victim}'s replicas re-created {} ms after the kill: {:?}",
        recovered.as_millis(),
        replicas_per_node(&cluster, 1)
    );

    phase("all data is readable");
    let (acknowledged, failed) = writes.stop().await;
    eprintln!(
        "{} writes acknowledged around the death, {failed} failed or unknown",
        acknowledged.len()
    );
    assert!(!acknowledged.is_empty());
    assert_all_readable(&cluster.node(5).url(""), &acknowledged, 16).await;
    assert_all_readable(&cluster.node(3).url(""), &keys, 16).await;
}

/// Proves membership does not hang on the node that bootstrapped the cluster (the
/// metadata group's first member): with node 1 SIGKILLed, a new node joins through
/// node 2, node 1 is declared dead after `dead_after` = 5 s and every replica it
/// had, of the data shards and of the metadata group, is re-created on nodes 2 to
/// 4; writes through the new node succeed and the keys written before are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t63_membership_survives_the_bootstrap_node() {
    let _place = ClusterPlace::take(4);
    let variables = fast_gossip_and_death();
    let environment = pairs(&variables);
    phase("start three nodes and write 1,000 keys");
    let mut cluster = Cluster::start(3, &environment);
    let keys = write_all(&cluster.node(2).url(""), "before/", 1_000, 16).await;

    phase("SIGKILL node 1, then join node 4 through node 2");
    cluster.node_mut(1).kill();
    let joined = Instant::now();
    let new = cluster.join_node_via(2, &environment);
    eprintln!(
        "node {new} joined {} ms after node 1 died",
        joined.elapsed().as_millis()
    );
    let recovered = wait_until(
        &cluster,
        "replacing node 1",
        Duration::from_secs(60),
        || {
            if registry_state(&cluster, 2, 1).as_deref() != Some("dead") {
                return Some("node 1 is not dead yet".into());
            }
            let load = replicas_per_node(&cluster, 2);
            if load.get(&1) != Some(&0) || load.get(&new).is_none_or(|count| *count == 0) {
                return Some(format!("replicas per node {load:?}"));
            }
            let Some(view) = cluster_view(cluster.node(2)) else {
                return Some("node 2 has no view".into());
            };
            let group = &view["metadata_group"]["replicas"];
            if group.as_array().is_none_or(|replicas| {
                replicas.len() != 3 || replicas.iter().any(|node| node.as_u64() == Some(1))
            }) {
                return Some(format!("metadata group on {group}"));
            }
            cluster.unsettled(3)
        },
    );
    eprintln!(
        "node 1's replicas re-created {} ms after it died: {:?}",
        recovered.as_millis(),
        replicas_per_node(&cluster, 2)
    );

    phase("the new node serves writes; the old keys are there");
    let written = write_all(&cluster.node(new).url(""), "after/", 500, 8).await;
    assert_all_readable(&cluster.node(3).url(""), &written, 8).await;
    assert_all_readable(&cluster.node(new).url(""), &keys, 16).await;
}

/// Retries `put` through `base` for up to 30 s (leaders may be moving).
async fn put_eventually(http: &reqwest::Client, base: &str, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        match put(http, base, key, value).await {
            Ok(_) => return,
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no write of {key} through {base} within 30 s: {last:?}");
}

/// Proves the fault hooks the chaos runner relies on. Cutting node 3's links both
/// ways (on every node) makes gossip on node 1 report node 3 down and node 3
/// report node 1 down, while writes through node 1 go on; clearing the rules
/// brings node 3 back alive, and a linearizable read through it returns the
/// write made while it was cut off. Killing node 2's Transport and Membership
/// actors through the admin protocol: both come back (node 2 is alive again with
/// a higher incarnation) and node 2 serves writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t64_fault_hooks_cut_links_and_kill_actors() {
    use mimori::admin::protocol::ActorTarget;
    use mimori_actors::ids::NodeId;
    let _place = ClusterPlace::take(3);
    let mut variables = fast_gossip().to_vec();
    variables.push(("MIMORI_FAULT_INJECTION", "true".to_string()));
    let environment = pairs(&variables);
    let cluster = Cluster::start(3, &environment);
    let settle = Duration::from_secs(30);
    for asked in 1..=3 {
        for about in (1..=3).filter(|about| *about != asked) {
            wait_for_state(&cluster, asked, about, "alive", settle);
        }
    }
    let http = client();

    phase("cut node 3 off both ways: gossip on both sides sees the other down");
    let rest = [NodeId(1), NodeId(2)];
    admin(cluster.node(3))
        .await
        .set_network_faults(&rest, &rest)
        .await
        .expect("cut node 3's links");
    for id in 1..=2 {
        admin(cluster.node(id))
            .await
            .set_network_faults(&[NodeId(3)], &[NodeId(3)])
            .await
            .expect("cut the links to node 3");
    }
    let (cut_seen, _) = wait_for_state(&cluster, 1, 3, "down", settle);
    wait_for_state(&cluster, 3, 1, "down", settle);
    eprintln!(
        "node 1 saw node 3 down {} ms after the cut",
        cut_seen.as_millis()
    );
    put_eventually(&http, &cluster.node(1).url(""), "during-the-cut", "v1").await;

    phase("heal: node 3 is alive again and reads the write it missed");
    for id in 1..=3 {
        admin(cluster.node(id))
            .await
            .set_network_faults(&[], &[])
            .await
            .expect("heal");
    }
    wait_for_state(&cluster, 1, 3, "alive", settle);
    wait_for_state(&cluster, 3, 1, "alive", settle);
    let base3 = cluster.node(3).url("");
    let deadline = Instant::now() + settle;
    let mut seen = None;
    while Instant::now() < deadline {
        seen = get(&http, &base3, "during-the-cut", false)
            .await
            .ok()
            .flatten();
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.map(|(value, _)| value), Some("v1".to_string()));

    phase("kill node 2's Transport and Membership: both come back");
    let (_, incarnation_before) = gossip_view(&cluster, 1, 2).expect("view");
    let mut admin2 = admin(cluster.node(2)).await;
    admin2
        .kill_actor(ActorTarget::Transport)
        .await
        .expect("kill the Transport");
    admin2
        .kill_actor(ActorTarget::Membership)
        .await
        .expect("kill the Membership actor");
    let deadline = Instant::now() + settle;
    let mut view = None;
    while Instant::now() < deadline {
        view = gossip_view(&cluster, 1, 2);
        if view.as_ref().is_some_and(|(state, incarnation)| {
            state == "alive" && *incarnation > incarnation_before
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (state, incarnation_after) = view.expect("node 1 reports node 2");
    eprintln!(
        "node 2 after the kills: {state}, incarnation {incarnation_before} -> {incarnation_after}"
    );
    assert_eq!(state, "alive");
    assert!(incarnation_after > incarnation_before);
    put_eventually(&http, &cluster.node(2).url(""), "after-the-kills", "v2").await;
    assert_eq!(
        get(&http, &cluster.node(1).url(""), "after-the-kills", false)
            .await
            .expect("read through node 1")
            .map(|(value, _)| value),
        Some("v2".to_string())
    );
}
