//! Browser test of the web dashboard (`/ui`): a 3-node cluster of real `mimorid`
//! processes, the page loaded in headless Chromium (Debian's `chromium`, driven by
//! playwright-core from npm through `tests/browser/dashboard.js`). The test installs
//! both with `scripts/install-browser` when they are missing.
//!
//! `MIMORI_TEST_UI_SCREENSHOT=docs/pages/images/ui-dashboard.png` writes the
//! screenshot there (that is how the one in the documentation is made); otherwise
//! it goes to a temporary directory and is only checked to be a PNG.

mod common;

use common::cluster::{admin, Cluster, TEST_SHARDS};
use common::ClusterPlace;
use mimori_actors::ids::{NodeId, ShardId};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn phase(text: &str) {
    eprintln!("--- {text}");
}

/// The node meant to lead `shard` once leadership is spread.
fn spread_leader(shard: u32) -> u64 {
    u64::from(shard % 3 + 1)
}

/// Proves the dashboard works in a real browser: loaded from node 2, with the
/// shards' leadership spread over the three nodes, it raises no console error or
/// exception, lists nodes 1, 2 and 3, shows for every shard exactly the leader the
/// cluster has, and draws a request rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t72_dashboard_shows_every_node_and_every_shards_leader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    phase("install Chromium and playwright-core if missing");
    let installed = Command::new(root.join("scripts/install-browser"))
        .status()
        .expect("run scripts/install-browser");
    assert!(
        installed.success(),
        "scripts/install-browser failed (see its message above)"
    );

    let _place = ClusterPlace::take(3);
    phase("start three nodes and spread the shards' leadership");
    let cluster = Cluster::start(3, &[]);
    let mut client = admin(cluster.node(1)).await;
    for shard in 0..TEST_SHARDS {
        let to = spread_leader(shard);
        if to != 1 {
            client
                .transfer_leader(ShardId(shard), NodeId(to))
                .await
                .unwrap_or_else(|error| panic!("move shard {shard} to node {to}: {error}"));
        }
    }

    phase("load node 2's /ui in headless Chromium");
    let scratch = tempfile::tempdir().expect("temporary directory");
    let screenshot = std::env::var_os("MIMORI_TEST_UI_SCREENSHOT")
        .map(|path| root.join(PathBuf::from(path)))
        .unwrap_or_else(|| scratch.path().join("dashboard.png"));
    let output = Command::new("node")
        .arg(root.join("tests/browser/dashboard.js"))
        .arg(cluster.node(2).url("/ui"))
        .arg(&screenshot)
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "the browser script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    eprintln!("shown: {shown}");

    assert_eq!(shown["errors"], serde_json::json!([]), "console errors");
    assert_eq!(shown["title"], "Mimori");
    let mut nodes: Vec<u64> = shown["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, [1, 2, 3]);
    let shards = shown["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), TEST_SHARDS as usize);
    for shard in shards {
        let id = shard["shard"].as_u64().expect("shard id") as u32;
        assert_eq!(
            shard["leader"],
            spread_leader(id).to_string(),
            "shard {id}'s leader"
        );
    }
    let rate = shown["rate"].as_str().expect("rate");
    assert!(rate.ends_with(" /s"), "{rate}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
