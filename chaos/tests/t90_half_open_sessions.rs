//! Regression test for the bug long chaos run 303 found: a node killed right after
//! a partition healed came back and stayed not serving for over a minute.
//!
//! The partition had left its peers' TCP connections to it retransmitting with a
//! long backoff, so when it was killed, its close did not reach them for a long
//! time: the peers kept half-open sessions to the dead process. ractor_cluster
//! elects one session per peer name, and the restarted node has the same name, so
//! on a peer whose stale session won the election the new connections were
//! refused as duplicates, and the peer's Transport kept sending into the stale
//! one. Replicas on the restarted node never heard their leaders.
//!
//! The test makes the half-open connections certain instead of likely: node 1's
//! FIN and RST segments towards its peers are dropped (as by a firewall that drops
//! what it does not know), then node 1 is killed and restarted. Node 1 is the one
//! whose name sorts first, so its peers prefer the sessions they opened themselves,
//! the stale ones. The fix: a Transport closes a session that carried nothing from
//! its peer for a few seconds, so the peer can connect again.

mod common;

use common::mimorid;
use mimori_chaos::cluster::{Cluster, ClusterOptions, NetworkMode};
use mimori_chaos::netns::Namespaces;
use std::time::{Duration, Instant};

/// How long a new cluster may take to place 3 replicas of every shard.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request is retried while its shard answers 503 (electing a leader).
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Sends a request to node `node`'s gateway, again while it answers 503 with
/// `Retry-After` (a shard without a leader yet), for [`RETRY_FOR`] at most;
/// returns the last status and body.
async fn send(
    cluster: &Cluster,
    node: u64,
    request: impl Fn(&reqwest::Client, String) -> reqwest::RequestBuilder,
    key: &str,
) -> (reqwest::StatusCode, String) {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/kv/{key}", cluster.node(node).expect("node").url());
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        let response = request(&client, url.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        let status = response.status();
        let retry_after = response.headers().get("retry-after").is_some();
        let body = response.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE
            || !retry_after
            || Instant::now() > deadline
        {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn put(cluster: &Cluster, node: u64, key: &str, value: &'static str) {
    let (status, body) = send(
        cluster,
        node,
        |client, url| client.put(url).body(value),
        key,
    )
    .await;
    assert!(
        status.is_success(),
        "PUT {key} through node {node}: {status} {body}\n{}",
        cluster.log_tails(40)
    );
}

async fn get(cluster: &Cluster, node: u64, key: &str) -> String {
    let (status, body) = send(cluster, node, |client, url| client.get(url), key).await;
    assert!(
        status.is_success(),
        "GET {key} through node {node}: {status} {body}\n{}",
        cluster.log_tails(40)
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_a_restarted_node_is_not_locked_out_by_half_open_sessions() {
    assert!(
        Namespaces::available(),
        "this test runs nodes in network namespaces: it needs root, ip and iptables \
         (./scripts/test installs iptables)"
    );
    let directory = tempfile::tempdir().expect("temporary directory");
    let options = ClusterOptions {
        binary: mimorid(),
        directory: directory.path().to_path_buf(),
        shard_count: 8,
        environment: Vec::new(),
        network: NetworkMode::Namespaces,
    };
    let mut cluster = Cluster::start(options, 3).await.expect("a 3-node cluster");
    cluster
        .wait_replicated(3, SETTLE_TIMEOUT)
        .await
        .expect("every shard on 3 replicas, with a leader");
    put(&cluster, 2, "before", "1").await;

    cluster.hide_closes(1).expect("hide node 1's closes");
    cluster.kill(1).expect("kill node 1");
    // Waits (a minute at most) until node 1 reports healthy: every replica it
    // hosts knows its leader, which it learns only from its peers.
    let restarted = cluster.restart(1).await;
    if let Err(error) = &restarted {
        panic!("{error:#}\n{}", cluster.log_tails(40));
    }

    put(&cluster, 3, "after", "2").await;
    assert_eq!(get(&cluster, 1, "before").await, "1");
    assert_eq!(get(&cluster, 1, "after").await, "2");
    cluster.stop_all();
}
