//! Kernel tests of one node in-process: the full Ready loop (propose → WAL → commit →
//! apply → reply), linearizable reads, restarts from disk, and the supervisor bringing
//! back killed shard replicas without losing acknowledged writes.

use bytes::Bytes;
use mimori_actors::ids::{NodeId, Revision, ShardId};
use mimori_actors::kv::{Condition, Consistency, KvError, Namespace};
use mimori_actors::node::{Node, NodeOptions};
use std::time::Duration;

fn options(dir: &std::path::Path) -> NodeOptions {
    let mut options = NodeOptions::new(NodeId(1), dir.to_path_buf());
    options.shard_count = 8;
    options
}

async fn start(dir: &std::path::Path) -> Node {
    let node = Node::start(options(dir)).await.expect("node starts");
    assert!(
        node.wait_until_serving(Duration::from_secs(10)).await,
        "node serves"
    );
    node
}

/// Proves writes get increasing revisions, reads see them linearizably and stale,
/// conditions are enforced, and scans page in key order across shards.
#[tokio::test]
async fn t01_put_get_delete_scan() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let router = node.router();
    let first = router
        .put(
            Namespace::Kv,
            b"a",
            Bytes::from_static(b"1"),
            Condition::Always,
        )
        .await
        .unwrap();
    let second = router
        .put(
            Namespace::Kv,
            b"a",
            Bytes::from_static(b"2"),
            Condition::RevisionIs(first),
        )
        .await
        .unwrap();
    assert!(second > first);
    let stale = router
        .put(
            Namespace::Kv,
            b"a",
            Bytes::from_static(b"3"),
            Condition::RevisionIs(first),
        )
        .await;
    assert_eq!(
        stale,
        Err(KvError::ConditionFailed {
            current: Some(second)
        })
    );
    for consistency in [Consistency::Linearizable, Consistency::Stale] {
        let read = router
            .get(Namespace::Kv, b"a", consistency)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((read.value.as_ref(), read.revision), (&b"2"[..], second));
    }
    assert_eq!(
        router
            .get(Namespace::Doc, b"a", Consistency::Linearizable)
            .await
            .unwrap(),
        None
    );
    for index in 0..50 {
        let key = format!("scan/{index:03}");
        router
            .put(
                Namespace::Kv,
                key.as_bytes(),
                Bytes::from(key.clone()),
                Condition::Absent,
            )
            .await
            .unwrap();
    }
    let page = router
        .scan(Namespace::Kv, b"scan/", None, 20, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 20);
    assert_eq!(page.items[0].key, b"scan/000");
    assert_eq!(page.next.as_deref(), Some(&b"scan/019"[..]));
    let rest = router
        .scan(
            Namespace::Kv,
            b"scan/",
            page.next.as_deref(),
            100,
            Consistency::Linearizable,
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 30);
    assert_eq!(rest.next, None);
    let deleted = router
        .delete(Namespace::Kv, b"a", Condition::Always)
        .await
        .unwrap();
    assert!(deleted > second);
    assert_eq!(
        router.delete(Namespace::Kv, b"a", Condition::Always).await,
        Err(KvError::NotFound)
    );
    node.shutdown().await.unwrap();
}

/// Proves every acknowledged write survives a clean restart with the same revision
/// (crash recovery with SIGKILL is proven by the black-box tests of the `mimori` crate).
#[tokio::test]
async fn t02_restart_recovers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let node = start(dir.path()).await;
        let router = node.router();
        for index in 0..500u32 {
            let key = format!("k{index}");
            let revision = router
                .put(
                    Namespace::Kv,
                    key.as_bytes(),
                    Bytes::from(format!("v{index}")),
                    Condition::Always,
                )
                .await
                .unwrap();
            written.push((key, revision));
        }
        node.shutdown().await.unwrap();
    }
    let node = start(dir.path()).await;
    let router = node.router();
    for (index, (key, revision)) in written.iter().enumerate() {
        let read = router
            .get(Namespace::Kv, key.as_bytes(), Consistency::Linearizable)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(read.revision, *revision, "{key}");
        assert_eq!(read.value, Bytes::from(format!("v{index}")));
    }
    // New writes continue above the old revisions.
    let next = router
        .put(
            Namespace::Kv,
            b"k0",
            Bytes::from_static(b"new"),
            Condition::Always,
        )
        .await
        .unwrap();
    assert!(next > written[0].1);
    node.shutdown().await.unwrap();
}

/// Proves a killed shard replica is restarted by its supervisor, recovers from disk
/// and serves again, with every acknowledged write intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_killed_shard_replica_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let router = node.router();
    let writer = {
        let router = router.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for index in 0..3_000u32 {
                let key = format!("w{index}");
                if let Ok(revision) = router
                    .put(
                        Namespace::Kv,
                        key.as_bytes(),
                        Bytes::from(key.clone()),
                        Condition::Always,
                    )
                    .await
                {
                    acknowledged.push((key, revision));
                }
            }
            acknowledged
        })
    };
    for round in 0..10u32 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = router.kill_shard_replica(ShardId(round % 8));
    }
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() > 2_000,
        "most writes succeed: {}",
        acknowledged.len()
    );
    assert!(node.wait_until_serving(Duration::from_secs(10)).await);
    for (key, revision) in &acknowledged {
        let read = router
            .get(Namespace::Kv, key.as_bytes(), Consistency::Linearizable)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {key} lost"));
        assert_eq!(read.revision, *revision);
    }
    let status = router.status().await;
    assert!(status.shard_restarts_total >= 1, "{status:?}");
    assert_eq!(status.shards_serving, 8);
    let _: Revision = router
        .put(
            Namespace::Kv,
            b"after",
            Bytes::from_static(b"x"),
            Condition::Always,
        )
        .await
        .unwrap();
    node.shutdown().await.unwrap();
}
