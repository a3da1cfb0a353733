//! Black-box durability of one real `mimorid` process: what the gateway acknowledged
//! survives SIGKILL (no chance to flush anything) and a clean SIGTERM restart, with
//! the same values and the same revisions.

mod common;

use common::NodeProcess;
use std::collections::HashMap;
use std::sync::Arc;

const KEYS: usize = 10_000;
const WRITERS: usize = 32;

/// Writes `count` keys through the gateway with `WRITERS` concurrent clients and
/// returns key → (value, revision) of every acknowledged write.
async fn write_keys(base: &str, count: usize) -> HashMap<String, (String, u64)> {
    let client = reqwest::Client::new();
    let base = Arc::new(base.to_string());
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let client = client.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for index in (writer..count).step_by(WRITERS) {
                let key = format!("restart/{index:05}");
                let value = format!("value-{index}-{}", index * 7);
                let response = client
                    .put(format!("{base}/v1/kv/{key}"))
                    .body(value.clone())
                    .send()
                    .await
                    .expect("gateway reachable");
                assert_eq!(response.status(), 200, "put {key}");
                let body: serde_json::Value = response.json().await.expect("json body");
                let revision = body["revision"].as_u64().expect("revision is a number");
                acknowledged.push((key, (value, revision)));
            }
            acknowledged
        }));
    }
    let mut all = HashMap::new();
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    all
}

/// Reads every key back and asserts value and revision (ETag) match.
async fn assert_all_present(base: &str, expected: &HashMap<String, (String, u64)>) {
    let client = reqwest::Client::new();
    let mut missing = Vec::new();
    for (key, (value, revision)) in expected {
        let response = client
            .get(format!("{base}/v1/kv/{key}"))
            .send()
            .await
            .expect("gateway reachable");
        if response.status() != 200 {
            missing.push(key.clone());
            continue;
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        assert_eq!(etag, Some(format!("\"{revision}\"")), "revision of {key}");
        assert_eq!(
            &response.text().await.expect("body"),
            value,
            "value of {key}"
        );
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged keys lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Proves 10,000 keys acknowledged over HTTP survive SIGKILL of the process with the
/// same revisions: the WAL's group commit covered every acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut node = NodeProcess::new(1, &dir.path().join("node1"));
    node.start();
    let written = write_keys(&node.url(""), KEYS).await;
    assert_eq!(written.len(), KEYS);
    tracing_free_log(&node);
    node.kill();
    node.start();
    assert_all_present(&node.url(""), &written).await;
}

/// Proves a SIGTERM shutdown exits 0 and a restart serves the same data, and that
/// writes after the restart get revisions above the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t31_sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut node = NodeProcess::new(1, &dir.path().join("node1"));
    node.start();
    let written = write_keys(&node.url(""), 500).await;
    assert_eq!(node.terminate(), Some(0), "clean exit:\n{}", node.log());
    assert!(node.log().contains("shut down cleanly"), "{}", node.log());
    node.start();
    assert_all_present(&node.url(""), &written).await;
    let old = written.get("restart/00000").expect("key written").1;
    let response = reqwest::Client::new()
        .put(node.url("/v1/kv/restart/00000"))
        .body("again")
        .send()
        .await
        .expect("gateway reachable");
    let body: serde_json::Value = response.json().await.expect("json body");
    assert!(body["revision"].as_u64().expect("revision") > old);
}

/// A node started on a data directory of another node id refuses to run.
#[test]
fn t32_refuses_foreign_data_directory() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut node = NodeProcess::new(1, &dir.path().join("node"));
    node.start();
    assert_eq!(node.terminate(), Some(0));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mimorid"))
        .args(["--node-id", "2", "--data-dir"])
        .arg(&node.data_dir)
        .args(["--http", &common::free_tcp_address().to_string()])
        .args(["--admin", &common::free_tcp_address().to_string()])
        .args(["--cluster", &common::free_tcp_address().to_string()])
        .args(["--gossip", &common::free_udp_address().to_string()])
        .output()
        .expect("run mimorid");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("belongs to node 1"), "{stderr}");
}

fn tracing_free_log(node: &NodeProcess) {
    // The node logs no document bodies: values written above must not appear.
    assert!(
        !node.log().contains("value-1-7"),
        "a value leaked into the log"
    );
}
