//! A cluster of real `mimorid` processes on 127.0.0.1 for black-box tests: node 1
//! bootstraps, the others join through node 1's gossip address, and the harness
//! waits until every shard has all its voters and a leader. Plus the HTTP helpers
//! the cluster tests share (writes that remember what was acknowledged, reads that
//! check it) and the views they poll.

use super::NodeProcess;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shards of a test cluster: enough to spread keys, few enough for two cores.
pub const TEST_SHARDS: u32 = 16;

/// N real nodes sharing a temporary directory.
pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    dir: tempfile::TempDir,
}

/// What was acknowledged for one key: its value and revision.
pub type Acknowledged = BTreeMap<String, (String, u64)>;

impl Cluster {
    /// Starts `count` nodes with `environment` set on each, and waits until every
    /// shard has `count.min(3)` voters and a leader known to every node.
    pub fn start(count: u64, environment: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..count {
            cluster.spawn_node(environment, 1);
        }
        cluster.wait_replicated(count.min(3) as usize, Duration::from_secs(90));
        cluster
    }

    /// Starts one more node that joins through node 1 and waits until it serves;
    /// returns its id.
    pub fn join_node(&mut self, environment: &[(&str, &str)]) -> u64 {
        self.spawn_node(environment, 1)
    }

    /// Like `join_node`, through node `seed`.
    pub fn join_node_via(&mut self, seed: u64, environment: &[(&str, &str)]) -> u64 {
        self.spawn_node(environment, seed)
    }

    fn spawn_node(&mut self, environment: &[(&str, &str)], seed: u64) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let mut node =
            NodeProcess::new(id, &self.dir.path().join(format!("node{id}"))).with_env(environment);
        let mut args = vec!["--shard-count".to_string(), TEST_SHARDS.to_string()];
        if let Some(seed) = self.nodes.get(seed as usize - 1) {
            args.push("--join".into());
            args.push(seed.gossip.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node = node.with_args(&args);
        node.start();
        self.nodes.push(node);
        id
    }

    pub fn node(&self, id: u64) -> &NodeProcess {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Waits until, as every running node sees it, every shard is placed on
    /// `voters` nodes, its leader (asked through its own view) has exactly those
    /// as voters and no learners, and every node knows the leader. Panics with the
    /// last view and the logs otherwise.
    pub fn wait_replicated(&self, voters: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.unsettled(voters) {
                None => return,
                Some(reason) => last = reason,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("--- node {} ---\n{}", node.node_id, tail(&node.log(), 30)))
            .collect();
        panic!(
            "the cluster did not replicate every shard within {timeout:?}; {last}\n{}",
            logs.join("\n")
        );
    }

    /// Why the cluster is not settled with `voters` replicas per shard, if it is not.
    pub fn unsettled(&self, voters: usize) -> Option<String> {
        let mut views = BTreeMap::new();
        for node in &self.nodes {
            if !node.is_running_now() {
                continue;
            }
            match cluster_view(node) {
                Some(view) => views.insert(node.node_id, view),
                None => return Some(format!("node {} has no view", node.node_id)),
            };
        }
        // The data shards, then the metadata group (whose size follows the
        // cluster's, so only that it settled is checked).
        let groups = (0..TEST_SHARDS as usize)
            .map(|shard| (Some(shard), Some(voters)))
            .chain(std::iter::once((None, None)));
        for (shard, expected) in groups {
            let name = shard.map_or("metadata".to_string(), |shard| shard.to_string());
            let info_of = |view: &serde_json::Value| match shard {
                Some(index) => view["shards"][index].clone(),
                None => view["metadata_group"].clone(),
            };
            for (node, view) in &views {
                let info = info_of(view);
                if !info["leader"].is_u64() {
                    return Some(format!(
                        "node {node} knows no leader of shard {name}: {info}"
                    ));
                }
                if expected.is_some() && info["replicas"].as_array().map(Vec::len) != expected {
                    return Some(format!(
                        "node {node} places shard {name} on {}",
                        info["replicas"]
                    ));
                }
            }
            let leader_view = views.iter().find_map(|(node, view)| {
                let info = info_of(view);
                (info["leader"].as_u64() == Some(*node)).then_some(info)
            });
            let Some(info) = leader_view else {
                return Some(format!("no running node leads shard {name}"));
            };
            let set = |value: &serde_json::Value| {
                let mut ids: Vec<u64> = value
                    .as_array()
                    .map(|ids| ids.iter().filter_map(serde_json::Value::as_u64).collect())
                    .unwrap_or_default();
                ids.sort_unstable();
                ids
            };
            if set(&info["voters"]) != set(&info["replicas"])
                || !info["learners"].as_array().is_some_and(Vec::is_empty)
            {
                return Some(format!("shard {name} is still moving: {info}"));
            }
        }
        None
    }

    /// The node that leads the most shards, as node `asked` sees it.
    pub fn busiest_leader(&self, asked: u64) -> u64 {
        let view = cluster_view(self.node(asked)).expect("cluster view");
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for shard in view["shards"].as_array().expect("shards") {
            if let Some(leader) = shard["leader"].as_u64() {
                *counts.entry(leader).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .map(|(leader, _)| leader)
            .expect("some shard has a leader")
    }
}

/// The last `lines` lines of a log.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An admin protocol session with one node.
pub async fn admin(node: &NodeProcess) -> mimori::admin::client::AdminClient {
    mimori::admin::client::AdminClient::connect(
        &[node.admin.to_string()],
        None,
        Duration::from_secs(30),
    )
    .await
    .expect("admin connects")
}

/// `GET /v1/cluster` of a node, if it answers.
pub fn cluster_view(node: &NodeProcess) -> Option<serde_json::Value> {
    let body = super::http_get(node.http, "/v1/cluster")?;
    serde_json::from_slice(&body).ok()
}

/// Every replica's (shard, applied index, checksum) on a node, by shard.
pub async fn checksums(node: &NodeProcess) -> Vec<(u32, u64, u64)> {
    let mut admin = admin(node).await;
    let mut checksums: Vec<(u32, u64, u64)> = admin
        .shard_checksums()
        .await
        .expect("checksums")
        .into_iter()
        .map(|checksum| (checksum.shard.0, checksum.applied_index, checksum.checksum))
        .collect();
    checksums.sort();
    checksums
}

impl Cluster {
    /// Waits until nodes 2 and 3 hold the same (shard, applied index, checksum) as
    /// node 1; returns node 1's. Panics with node 3's log after `timeout`.
    pub async fn wait_checksums_equal(&self, timeout: Duration) -> Vec<(u32, u64, u64)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let leader = checksums(self.node(1)).await;
            let others = [checksums(self.node(2)).await, checksums(self.node(3)).await];
            if others.iter().all(|other| *other == leader) {
                return leader;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node 3 did not catch up: node 1 {leader:?}, node 3 {:?}\n{}",
                others[1],
                tail(&self.node(3).log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// An HTTP client for the tests, with a bound on every request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("HTTP client")
}

/// Writes `count` keys `{prefix}{n}` through `base` (a gateway URL) with
/// `writers` concurrent clients; every write must succeed. Returns what was
/// acknowledged.
pub async fn write_all(base: &str, prefix: &str, count: usize, writers: usize) -> Acknowledged {
    let client = client();
    let base = Arc::new(base.to_string());
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let client = client.clone();
        let base = base.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for index in (writer..count).step_by(writers) {
                let key = format!("{prefix}{index:06}");
                let value = format!("value of {key}");
                let revision = put(&client, &base, &key, &value)
                    .await
                    .unwrap_or_else(|error| panic!("put {key}: {error}"));
                acknowledged.push((key, (value, revision)));
            }
            acknowledged
        }));
    }
    let mut all = Acknowledged::new();
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    assert_eq!(all.len(), count);
    all
}

/// One PUT; the revision, or why it failed.
pub async fn put(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    value: &str,
) -> Result<u64, String> {
    let response = client
        .put(format!("{base}/v1/kv/{key}"))
        .body(value.to_string())
        .send()
        .await
        .map_err(|error| format!("transport: {error}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    let body: serde_json::Value =
        serde_json::from_str(&body).map_err(|error| format!("body {body}: {error}"))?;
    body["revision"]
        .as_u64()
        .ok_or_else(|| format!("no revision in {body}"))
}

/// One GET: `Some((value, revision))`, `None` for 404, or an error.
pub async fn get(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    stale: bool,
) -> Result<Option<(String, u64)>, String> {
    let query = if stale { "?consistency=stale" } else { "" };
    let response = client
        .get(format!("{base}/v1/kv/{key}{query}"))
        .send()
        .await
        .map_err(|error| format!("transport: {error}"))?;
    let status = response.status();
    if status == 404 {
        return Ok(None);
    }
    let revision = response
        .headers()
        .get("etag")
        .and_then(|etag| etag.to_str().ok())
        .and_then(|etag| etag.trim_matches('"').parse::<u64>().ok());
    let body = response.text().await.unwrap_or_default();
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    let revision = revision.ok_or("no ETag")?;
    Ok(Some((body, revision)))
}

/// Reads every acknowledged key through `base` (linearizably, with `readers`
/// concurrent clients) and asserts value and revision; returns how many were read.
pub async fn assert_all_readable(base: &str, expected: &Acknowledged, readers: usize) -> usize {
    let client = client();
    let keys: Arc<Vec<(String, (String, u64))>> = Arc::new(
        expected
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let base = Arc::new(base.to_string());
    let mut tasks = Vec::new();
    for reader in 0..readers {
        let client = client.clone();
        let keys = keys.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut problems = Vec::new();
            for index in (reader..keys.len()).step_by(readers) {
                let (key, (value, revision)) = &keys[index];
                match get(&client, &base, key, false).await {
                    Ok(Some((read, read_revision)))
                        if &read == value && read_revision == *revision => {}
                    other => problems.push(format!("{key}: expected {revision}, got {other:?}")),
                }
            }
            problems
        }));
    }
    let mut problems = Vec::new();
    for task in tasks {
        problems.extend(task.await.expect("reader task"));
    }
    assert!(
        problems.is_empty(),
        "{} of {} acknowledged keys not read back through {base}, e.g. {:?}",
        problems.len(),
        keys.len(),
        &problems[..problems.len().min(5)]
    );
    keys.len()
}

/// Writers that keep writing unique keys through a set of gateways until stopped,
/// remembering what was acknowledged; failed or unknown writes are counted, not
/// fatal (the cluster may be in the middle of a fault).
pub struct WriteLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Acknowledged, u64)>>,
}

impl WriteLoad {
    /// Starts `writers` writers of keys `{prefix}{writer}/{n}`, spread over `bases`.
    pub fn start(bases: Vec<String>, prefix: &str, writers: usize) -> WriteLoad {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bases = Arc::new(bases);
        let tasks = (0..writers)
            .map(|writer| {
                let (stop, bases, prefix) = (stop.clone(), bases.clone(), prefix.to_string());
                tokio::spawn(async move {
                    let client = client();
                    let (mut acknowledged, mut failures) = (Acknowledged::new(), 0u64);
                    let mut sequence = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        sequence += 1;
                        let key = format!("{prefix}{writer:02}/{sequence:06}");
                        let value = format!("{writer}-{sequence}");
                        let base = &bases[sequence % bases.len()];
                        match put(&client, base, &key, &value).await {
                            Ok(revision) => {
                                acknowledged.insert(key, (value, revision));
                            }
                            Err(_) => {
                                failures += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    (acknowledged, failures)
                })
            })
            .collect();
        WriteLoad { stop, tasks }
    }

    /// Stops the writers; what they had acknowledged, and how many writes failed.
    pub async fn stop(self) -> (Acknowledged, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut all, mut failures) = (Acknowledged::new(), 0);
        for task in self.tasks {
            let (acknowledged, failed) = task.await.expect("writer task");
            all.extend(acknowledged);
            failures += failed;
        }
        (all, failures)
    }
}
