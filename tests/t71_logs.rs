//! Black-box test of the nodes' logs: `dbctl logs` reads a remote node's recent lines
//! over the admin protocol, `--follow` prints new lines as they are written, and
//! `log_format = "json"` writes one JSON object per line to stderr.

mod common;

use common::cluster::Cluster;
use common::ClusterPlace;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn phase(text: &str) {
    eprintln!("--- {text}");
}

/// Longest a single dbctl run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs dbctl against `endpoint`; its exit code and stdout.
async fn dbctl(endpoint: &str, arguments: &[&str]) -> (i32, String) {
    let output = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dbctl"))
            .arg("--endpoints")
            .arg(endpoint)
            .args(arguments)
            .env_remove("MIMORI_ENDPOINTS")
            .env_remove("MIMORI_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("dbctl finishes in time")
    .expect("dbctl runs");
    (
        output.status.code().expect("dbctl exits"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Proves an operator reads any node's recent lines through any node: the last 500
/// lines of node 2 asked of node 1 are node 2's (its "serving" line names node 2),
/// `-o json` gives them with increasing sequences, an unknown node exits 3, and
/// `--follow` on node 3 prints the line node 3 writes when one of its replicas is
/// killed, within seconds. The nodes log JSON to stderr, and every line of node 3's
/// stderr parses as a JSON object with a level and fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t71_dbctl_reads_and_follows_a_remote_nodes_logs() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes logging JSON to stderr");
    let cluster = Cluster::start(3, &[("MIMORI_LOG_FORMAT", "json")]);
    let node1 = cluster.node(1).admin.to_string();
    let node3 = cluster.node(3).admin.to_string();

    phase("node 2's lines since it started, asked of node 1");
    let (code, text) = dbctl(&node1, &["logs", "--node", "2", "--lines", "500"]).await;
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!((1..=500).contains(&lines.len()), "{} lines", lines.len());
    let serving = lines
        .iter()
        .find(|line| line.contains("mimorid serving"))
        .unwrap_or_else(|| panic!("no serving line in:\n{text}"));
    assert!(serving.contains("node_id=2"), "{serving}");

    phase("the same as JSON");
    let (code, json) = dbctl(
        &node1,
        &["-o", "json", "logs", "--node", "2", "--lines", "5"],
    )
    .await;
    assert_eq!(code, 0, "{json}");
    let body: Value = serde_json::from_str(&json).expect("one JSON object");
    assert_eq!(body["node_id"], 2);
    let sequences: Vec<u64> = body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| line["sequence"].as_u64().expect("sequence"))
        .collect();
    assert_eq!(sequences.len(), 5, "{json}");
    assert!(
        sequences.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{sequences:?}"
    );

    phase("an unknown node");
    let (code, _) = dbctl(&node1, &["logs", "--node", "9"]).await;
    assert_eq!(code, 3, "not found");

    phase("follow node 3 while one of its replicas is killed");
    let mut follower = tokio::process::Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args([
            "--endpoints",
            &node1,
            "logs",
            "--node",
            "3",
            "--follow",
            "--lines",
            "1",
        ])
        .env_remove("MIMORI_ENDPOINTS")
        .env_remove("MIMORI_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("dbctl logs --follow starts");
    let mut followed = BufReader::new(follower.stdout.take().expect("stdout")).lines();
    // The first line printed is the newest one at the start: following has begun.
    let first = tokio::time::timeout(RUN_TIMEOUT, followed.next_line())
        .await
        .expect("a first line in time")
        .expect("read")
        .expect("a first line");
    assert!(!first.contains("shard replica died"), "{first}");
    let (code, killed) = dbctl(&node3, &["debug", "kill-shard", "5"]).await;
    assert_eq!(code, 0, "{killed}");
    let seen = tokio::time::timeout(RUN_TIMEOUT, async {
        while let Some(line) = followed.next_line().await.expect("read") {
            if line.contains("shard replica died") && line.contains("shard=5") {
                return line;
            }
        }
        panic!("dbctl logs --follow ended");
    })
    .await
    .expect("the kill's line is followed within 30 s");
    eprintln!("followed: {seen}");
    follower.kill().await.expect("stop the follower");

    phase("node 3's stderr is JSON lines");
    let stderr = cluster.node(3).log();
    let mut parsed = 0;
    for line in stderr.lines().filter(|line| !line.trim().is_empty()) {
        let object: Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["fields"].is_object(), "{line}");
        parsed += 1;
    }
    assert!(parsed >= 5, "only {parsed} lines on node 3's stderr");
}
