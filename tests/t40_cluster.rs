//! Black-box tests of a replicated cluster: three real `mimorid` processes on
//! 127.0.0.1 (node 1 bootstraps, nodes 2 and 3 join), killed, frozen and restarted
//! like an operator or a crash would.
//!
//! Each test is one story told with `--- phase` lines; each starts by saying what
//! it proves. At most six nodes run at once (`common::ClusterPlace`), so two cores
//! are not swamped by two dozen processes.

mod common;

use common::cluster::{
    admin, assert_all_readable, client, cluster_view, get, put, write_all, Acknowledged, Cluster,
    TEST_SHARDS,
};
use common::ClusterPlace;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn phase(text: &str) {
    eprintln!("--- {text}");
}

/// Proves any node's gateway serves any key: 5,000 keys written through node 1 are
/// read back linearizably, with their revisions, through node 2 and through node 3
/// (whose replicas follow, so every read is a ReadIndex round through the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_writes_through_one_node_read_through_the_others() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes");
    let cluster = Cluster::start(3, &[]);
    phase("write 5,000 keys through node 1");
    let written = write_all(&cluster.node(1).url(""), "spread/", 5_000, 32).await;
    for reader in [2, 3] {
        phase(&format!("read them all through node {reader}"));
        let read = assert_all_readable(&cluster.node(reader).url(""), &written, 32).await;
        assert_eq!(read, 5_000);
    }
}

/// What one writer of the failover test saw.
#[derive(Default)]
struct WriterLog {
    acknowledged: Vec<(String, String, u64, Instant)>,
    failures: u64,
}

/// Proves failover: during a 12-second write stream through nodes that survive,
/// the node leading the most shards is SIGKILLed; writes resume once the others
/// elect new leaders (the gap is printed), and every acknowledged write is
/// readable afterwards with its revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_leader_killed_during_writes() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes");
    let mut cluster = Cluster::start(3, &[]);
    let victim = cluster.busiest_leader(2);
    let survivors: Vec<u64> = (1..=3).filter(|node| *node != victim).collect();
    eprintln!("node {victim} leads the most shards; writing through {survivors:?}");
    let bases: Arc<Vec<String>> = Arc::new(
        survivors
            .iter()
            .map(|node| cluster.node(*node).url(""))
            .collect(),
    );
    let stream_started = Instant::now();
    let stream_length = Duration::from_secs(12);
    let writers = 16;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let bases = bases.clone();
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut log = WriterLog::default();
            let mut sequence = 0u64;
            while stream_started.elapsed() < stream_length {
                sequence += 1;
                let key = format!("failover/{writer:02}/{sequence:06}");
                let value = format!("{writer}-{sequence}");
                let base = &bases[(sequence as usize) % bases.len()];
                match put(&client, base, &key, &value).await {
                    Ok(revision) => log
                        .acknowledged
                        .push((key, value, revision, Instant::now())),
                    Err(_) => {
                        log.failures += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            log
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase(&format!("SIGKILL node {victim}"));
    let killed_at = Instant::now();
    cluster.node_mut(victim).kill();
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.expect("writer task"));
    }

    phase("measure the gap");
    let mut gaps = Vec::new();
    for (writer, log) in logs.iter().enumerate() {
        let before = log
            .acknowledged
            .iter()
            .rev()
            .find(|(.., at)| *at < killed_at)
            .map(|(.., at)| *at);
        let after = log
            .acknowledged
            .iter()
            .find(|(.., at)| *at >= killed_at)
            .map(|(.., at)| *at);
        let (Some(before), Some(after)) = (before, after) else {
            panic!("writer {writer} has no acknowledged write on both sides of the kill");
        };
        gaps.push(after.duration_since(before));
    }
    gaps.sort();
    let resumed_all = logs
        .iter()
        .filter_map(|log| log.acknowledged.iter().find(|(.., at)| *at >= killed_at))
        .map(|(.., at)| at.duration_since(killed_at))
        .max()
        .unwrap_or_default();
    let acknowledged: usize = logs.iter().map(|log| log.acknowledged.len()).sum();
    let failures: u64 = logs.iter().map(|log| log.failures).sum();
    eprintln!(
        "failover: every writer acknowledged again {:.0} ms after the kill; per-writer gap median {:.0} ms, max {:.0} ms; {acknowledged} writes acknowledged, {failures} failed or unknown",
        resumed_all.as_secs_f64() * 1e3,
        gaps[gaps.len() / 2].as_secs_f64() * 1e3,
        gaps[gaps.len() - 1].as_secs_f64() * 1e3,
    );
    // Failover speed is a benchmark figure (scripts/bench-cluster); here only that
    // it happened at all within the request-timeout scale.
    assert!(
        resumed_all < Duration::from_secs(10),
        "writes did not resume: {resumed_all:?}"
    );

    phase("every acknowledged write is readable through a survivor");
    let expected: Acknowledged = logs
        .into_iter()
        .flat_map(|log| log.acknowledged)
        .map(|(key, value, revision, _)| (key, (value, revision)))
        .collect();
    assert_all_readable(&bases[0], &expected, 16).await;
}

/// Proves a frozen leader cannot serve a stale read: node L (leading the most
/// shards) is SIGSTOPped for 10 s while a key it led is overwritten through another
/// node; right after SIGCONT, linearizable reads through L return the new value or
/// an error, never the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t42_resumed_leader_serves_no_stale_read() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes");
    let cluster = Cluster::start(3, &[]);
    let frozen = cluster.busiest_leader(1);
    let other = if frozen == 1 { 2 } else { 1 };
    let client = client();
    // A key whose shard the frozen node leads.
    let view = cluster_view(cluster.node(frozen)).expect("cluster view");
    let led: Vec<u64> = view["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|shard| shard["leader"].as_u64() == Some(frozen))
        .filter_map(|shard| shard["id"].as_u64())
        .collect();
    assert!(!led.is_empty(), "node {frozen} leads nothing: {view}");
    let key = (0..10_000)
        .map(|index| format!("frozen/{index}"))
        .find(|key| led.contains(&shard_of(key)))
        .expect("some key lands on a led shard");
    let old = put(&client, &cluster.node(frozen).url(""), &key, "old")
        .await
        .expect("write the old value");

    phase(&format!("SIGSTOP node {frozen}"));
    cluster.node(frozen).pause();
    let paused_at = Instant::now();
    phase(&format!("overwrite {key} through node {other}"));
    let mut new = None;
    while new.is_none() && paused_at.elapsed() < Duration::from_secs(9) {
        match put(&client, &cluster.node(other).url(""), &key, "new").await {
            Ok(revision) => new = Some(revision),
            Err(error) => eprintln!("while electing: {error}"),
        }
    }
    let new = new.expect("the others elect a leader and accept the write");
    assert!(new > old);
    let remaining = Duration::from_secs(10).saturating_sub(paused_at.elapsed());
    tokio::time::sleep(remaining).await;

    phase(&format!(
        "SIGCONT node {frozen} and read at once, repeatedly"
    ));
    cluster.node(frozen).resume();
    let mut fresh = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        match get(&client, &cluster.node(frozen).url(""), &key, false).await {
            Ok(Some((value, revision))) => {
                assert_eq!(
                    (value.as_str(), revision),
                    ("new", new),
                    "stale read through the resumed node"
                );
                fresh += 1;
            }
            Ok(None) => panic!("{key} vanished"),
            // An error (the resumed node learning it is no longer leader) is fine.
            Err(_) => {}
        }
    }
    assert!(fresh > 0, "the resumed node never answered a read");
    eprintln!("{fresh} linearizable reads through the resumed node, all fresh");
}

/// The shard of a key, as the nodes compute it (FNV-1a 64 of 0x01 ++ key).
fn shard_of(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in std::iter::once(1u8).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % u64::from(TEST_SHARDS)
}

/// Sums a status counter of a node over the admin protocol.
async fn status(node: &common::NodeProcess) -> mimori_actors::kv::NodeStatus {
    let mut admin = admin(node).await;
    admin.status().await.expect("status")
}

/// Proves catch-up by snapshot: with logs compacted every 200 entries, a node
/// stopped while 20,000 keys are written is behind every leader's compaction
/// point; restarted, it installs snapshots and ends with the same content, shard
/// by shard, as the other two (equal applied indexes and checksums).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t43_stopped_node_catches_up_by_snapshot() {
    let _place = ClusterPlace::take(3);
    let environment = [
        ("MIMORI_COMPACT_AFTER_ENTRIES", "200"),
        ("MIMORI_CHECKPOINT_INTERVAL_MS", "1000"),
    ];
    phase("start three nodes");
    let mut cluster = Cluster::start(3, &environment);
    write_all(&cluster.node(1).url(""), "before/", 500, 16).await;
    let view = cluster_view(cluster.node(3)).expect("cluster view");
    let behind: Vec<u64> = view["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|shard| shard["applied_index"].as_u64().unwrap_or(0))
        .collect();
    phase("stop node 3");
    assert_eq!(cluster.node_mut(3).terminate(), Some(0));
    phase("write 20,000 keys through node 1");
    let written = write_all(&cluster.node(1).url(""), "while-down/", 20_000, 32).await;
    phase("wait until every leader compacted past node 3's position");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = cluster_view(cluster.node(1)).expect("cluster view");
        let compacted_past = view["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .zip(&behind)
            .all(|(shard, behind)| shard["compacted_index"].as_u64().unwrap_or(0) > *behind);
        if compacted_past {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs were not compacted past node 3: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase("restart node 3 and wait until it caught up");
    cluster.node_mut(3).start();
    let leader = cluster.wait_checksums_equal(Duration::from_secs(90)).await;
    eprintln!(
        "{} shards equal on all three nodes, e.g. shard 0 at index {} checksum {:016x}",
        leader.len(),
        leader[0].1,
        leader[0].2
    );
    assert_eq!(leader.len(), TEST_SHARDS as usize);
    let installed = status(cluster.node(3)).await.snapshots_installed_total;
    assert!(
        installed >= u64::from(TEST_SHARDS),
        "node 3 installed {installed} snapshots for {TEST_SHARDS} shards"
    );
    phase("node 3 serves the keys written while it was down");
    assert_all_readable(&cluster.node(3).url(""), &written, 32).await;
}

/// Proves durability across a whole-cluster crash: after SIGKILL of all three
/// nodes and a restart, every acknowledged write is there with its revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t44_whole_cluster_killed_and_restarted() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes");
    let mut cluster = Cluster::start(3, &[]);
    let written = write_all(&cluster.node(2).url(""), "crash/", 3_000, 32).await;
    phase("SIGKILL all three");
    for node in 1..=3 {
        cluster.node_mut(node).kill();
    }
    phase("restart all three");
    for node in 1..=3 {
        cluster.node_mut(node).spawn();
    }
    for node in 1..=3 {
        cluster
            .node_mut(node)
            .wait_until_healthy(Duration::from_secs(60));
    }
    cluster.wait_replicated(3, Duration::from_secs(60));
    phase("every acknowledged write is back");
    assert_all_readable(&cluster.node(3).url(""), &written, 32).await;
}

/// Proves a shard without quorum answers rather than hangs: with two of three nodes
/// SIGKILLed, a write and a linearizable read through the survivor get 503 with
/// `Retry-After` within the request timeout (a stale read still answers), and once
/// the two are back the same write succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t45_no_quorum_answers_503_then_recovers() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes");
    let mut cluster = Cluster::start(3, &[]);
    let client = client();
    let base = cluster.node(3).url("");
    let revision = put(&client, &base, "quorum/key", "before")
        .await
        .expect("write with quorum");
    phase("SIGKILL nodes 1 and 2");
    cluster.node_mut(1).kill();
    cluster.node_mut(2).kill();
    for (method, path) in [("PUT", "/v1/kv/quorum/key"), ("GET", "/v1/kv/quorum/key")] {
        let started = Instant::now();
        let request = match method {
            "PUT" => client.put(cluster.node(3).url(path)).body("after"),
            _ => client.get(cluster.node(3).url(path)),
        };
        let response = request.send().await.expect("the survivor answers");
        let waited = started.elapsed();
        eprintln!(
            "{method} without quorum: {} after {waited:?}",
            response.status()
        );
        assert_eq!(response.status(), 503, "{method}");
        assert!(
            response.headers().contains_key("retry-after"),
            "{method}: no Retry-After"
        );
        // The default request timeout is 5 s; the answer must not wait much longer.
        assert!(
            waited < Duration::from_secs(9),
            "{method} hung for {waited:?}"
        );
    }
    let stale = get(&client, &base, "quorum/key", true).await;
    assert_eq!(stale, Ok(Some(("before".to_string(), revision))));
    phase("the survivor's /health names the shards without a leader");
    let health = wait_not_serving(&client, &cluster.node(3).url("/health")).await;
    let hosted = health["health"]["shards_hosted"]
        .as_u64()
        .expect("shards_hosted");
    let listed: Vec<u64> = health["health"]["leaderless_shards"]
        .as_array()
        .expect("leaderless_shards")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert_eq!(
        health["health"]["shards_without_leader"], hosted,
        "{health}"
    );
    assert_eq!(listed, (0..hosted.min(32)).collect::<Vec<_>>(), "{health}");
    let detail = health["detail"].as_str().expect("detail");
    assert!(detail.contains("(shards 0, 1, 2"), "{detail}");
    phase("restart nodes 1 and 2");
    for node in [1, 2] {
        cluster.node_mut(node).spawn();
    }
    for node in [1, 2] {
        cluster
            .node_mut(node)
            .wait_until_healthy(Duration::from_secs(60));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match put(&client, &base, "quorum/key", "after").await {
            Ok(new) => {
                assert!(new > revision);
                break;
            }
            Err(error) if Instant::now() < deadline => eprintln!("while recovering: {error}"),
            Err(error) => panic!("writes did not recover: {error}"),
        }
    }
}

/// Polls `/health` until it answers 503 with every hosted shard leaderless (the
/// survivor's replicas give up their leaders once they campaign); its body.
async fn wait_not_serving(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.get(url).send().await.expect("/health answers");
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("/health is JSON");
        let all = body["health"]["shards_without_leader"] == body["health"]["shards_hosted"];
        if status == 503 && all {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/health did not report every shard leaderless: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Proves `dbctl shard transfer-leader` moves a shard's leadership (the cluster
/// view then names the new leader) and `dbctl shard checksums` lists every replica
/// of the node with its applied index, in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t46_dbctl_transfers_leadership_and_lists_checksums() {
    let _place = ClusterPlace::take(3);
    let cluster = Cluster::start(3, &[]);
    let view = cluster_view(cluster.node(1)).expect("cluster view");
    let shard = &view["shards"][0];
    let leader = shard["leader"].as_u64().expect("a leader");
    let target = (1..=3).find(|node| *node != leader).expect("another voter");
    let endpoints = cluster
        .nodes
        .iter()
        .map(|node| node.admin.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let dbctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dbctl"))
            .arg("--endpoints")
            .arg(&endpoints)
            .args(args)
            .output()
            .expect("run dbctl")
    };
    let moved = dbctl(&["shard", "transfer-leader", "0", &target.to_string()]);
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&moved.stdout),
        format!("shard 0 is now led by node {target}\n")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster_view(cluster.node(1)).expect("view")["shards"][0]["leader"].as_u64()
        != Some(target)
    {
        assert!(
            Instant::now() < deadline,
            "the view never showed the new leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = dbctl(&["shard", "transfer-leader", "0", "9"]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "an unknown node is invalid input"
    );
    let listed = dbctl(&["-o", "json", "shard", "checksums"]);
    assert!(listed.status.success());
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let shards = json["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), TEST_SHARDS as usize);
    assert!(shards.iter().all(|shard| shard["applied_index"]
        .as_u64()
        .is_some_and(|index| index > 0)));
}

/// Proves `mimorid demo --nodes 3` starts a working three-node cluster, prints its
/// endpoints, and on Ctrl-C (SIGINT) stops every node and removes its temporary
/// data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t47_demo_runs_a_local_cluster() {
    use std::io::BufRead;
    let _place = ClusterPlace::take(3);
    let base = common::reserve_ports(30);
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_mimorid"))
        .args(["demo", "--nodes", "3", "--base-port", &base.to_string()])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the demo");
    let stdout = demo.stdout.take().expect("stdout");
    let (lines, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !printed
        .iter()
        .any(|line: &String| line.contains("Ctrl-C stops every node"))
    {
        let wait = deadline.saturating_duration_since(Instant::now());
        match read.recv_timeout(wait) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = demo.kill();
                let output = demo.wait_with_output().expect("demo output");
                panic!(
                    "the demo did not come up: {printed:?}\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    let data_dir = printed
        .iter()
        .find_map(|line| line.strip_prefix("Data and logs: "))
        .and_then(|rest| rest.strip_suffix(" (removed at exit)"))
        .map(std::path::PathBuf::from)
        .expect("the demo names its temporary directory");
    assert!(data_dir.exists());
    let first = format!("http://127.0.0.1:{base}");
    let third = format!("http://127.0.0.1:{}", base + 20);
    assert!(
        printed.iter().any(|line| line.contains(&third)),
        "{printed:?}"
    );
    let client = client();
    let revision = put(&client, &third, "demo/key", "hello")
        .await
        .expect("write through node 3");
    assert_eq!(
        get(&client, &first, "demo/key", false).await,
        Ok(Some(("hello".to_string(), revision)))
    );
    let view: serde_json::Value = client
        .get(format!("{first}/v1/cluster"))
        .send()
        .await
        .expect("cluster view")
        .json()
        .await
        .expect("JSON");
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(3));

    phase("Ctrl-C");
    let status = std::process::Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = demo.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "demo exit {exit}");
    assert!(!data_dir.exists(), "the temporary directory is removed");
    for node in 0..3u16 {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], base + 10 * node));
        assert_eq!(
            common::http_status(address, "/health"),
            None,
            "node {node} still answers"
        );
    }
}
