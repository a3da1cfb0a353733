//! Black-box tests of the Rust client SDK (`mimori::client`) against three real
//! `mimorid` processes: round trips, shard-aware routing, conditional writes and
//! their conflicts, queries, and a leader killed while the SDK reads.

mod common;

use common::cluster::{admin, client, Cluster, TEST_SHARDS};
use common::ClusterPlace;
use mimori::client::{Client, ClientError, Condition, Query, RetryPolicy};
use mimori_actors::ids::{NodeId, ShardId};
use mimori_actors::kv::Namespace;
use mimori_actors::router::shard_for;
use serde_json::json;
use std::time::{Duration, Instant};

fn phase(text: &str) {
    eprintln!("--- {text}");
}

/// An SDK client of every node's gateway.
fn sdk(cluster: &Cluster, routing: bool) -> Client {
    let endpoints: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| node.http.to_string())
        .collect();
    Client::builder(endpoints)
        .routing(routing)
        .request_timeout_ms(5_000)
        .connect_timeout_ms(500)
        .retry(RetryPolicy {
            attempts_max: 12,
            backoff_base_ms: 20,
            backoff_max_ms: 500,
        })
        .seed(55)
        .build()
        .expect("client")
}

/// Key `PUT`s node `node`'s gateway answered so far (`/metrics`).
async fn puts_answered(cluster: &Cluster, node: u64) -> f64 {
    let text = client()
        .get(cluster.node(node).url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|line| {
            line.starts_with("mimori_http_requests_total{")
                && line.contains(r#"method="PUT""#)
                && line.contains(r#"route="/v1/kv/*key""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Proves the SDK end to end on a cluster: keys and documents round-trip with
/// their revisions; with routing, each write is answered by the gateway of its
/// shard's leader (per-node request counts equal the leaders' shares of the keys,
/// computed from the placement table); a stale conditional write answers
/// `Conflict` carrying the actual current revision, a second create `Conflict`
/// with the document's revision, a conditional delete of the wrong revision
/// `Conflict`; scans and queries page through what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t55_round_trips_routing_and_conflicts() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes");
    let cluster = Cluster::start(3, &[]);
    phase("spread the shards' leadership over the three nodes");
    let mut operator = admin(cluster.node(1)).await;
    for shard in 0..TEST_SHARDS {
        operator
            .transfer_leader(ShardId(shard), NodeId(u64::from(shard % 3) + 1))
            .await
            .unwrap_or_else(|error| panic!("move shard {shard}: {error}"));
    }
    let routed = sdk(&cluster, true);

    phase("keys and documents round-trip");
    let revision = routed.put("sdk/a", "one").await.expect("put");
    let read = routed.get("sdk/a").await.expect("get").expect("present");
    assert_eq!(
        (read.value.as_ref(), read.revision),
        (&b"one"[..], revision)
    );
    assert_eq!(routed.get("sdk/missing").await.expect("get"), None);
    let stale = routed
        .get_stale("sdk/a")
        .await
        .expect("stale get")
        .expect("present");
    assert_eq!(stale.revision, revision);
    let document_revision = routed
        .doc_put("people", "ada", &json!({"name": "ada", "age": 36}))
        .await
        .expect("doc put");
    let document = routed
        .doc_get("people", "ada")
        .await
        .expect("doc get")
        .expect("present");
    assert_eq!(document.body, json!({"name": "ada", "age": 36}));
    assert_eq!(document.revision, document_revision);

    phase("routed writes are answered by the gateway of their shard's leader");
    let info = routed.cluster_info().await.expect("cluster info");
    let leader_of = |key: &str| {
        let shard = shard_for(Namespace::Kv, key.as_bytes(), info.shard_count);
        info.shards[shard.0 as usize]
            .leader
            .expect("every shard has a leader")
            .0
    };
    let mut before = Vec::new();
    for node in 1..=3 {
        before.push(puts_answered(&cluster, node).await);
    }
    let mut expected = [0.0f64; 3];
    for n in 0..150 {
        let key = format!("sdk/routed/{n:03}");
        expected[(leader_of(&key) - 1) as usize] += 1.0;
        let revision = routed.put(&key, format!("v{n}")).await.expect("put");
        assert_eq!(
            routed
                .get(&key)
                .await
                .expect("get")
                .map(|found| found.revision),
            Some(revision)
        );
    }
    let mut answered = Vec::new();
    for node in 1..=3u64 {
        answered.push(puts_answered(&cluster, node).await - before[(node - 1) as usize]);
    }
    let stats = routed.stats();
    eprintln!(
        "routed: {stats:?}; PUTs answered per node {answered:?}, leaders' share {expected:?}"
    );
    assert_eq!(
        answered,
        expected.to_vec(),
        "each write went to its shard leader's node"
    );
    assert!(
        expected.iter().all(|share| *share > 0.0),
        "every node leads some keys: {expected:?}"
    );
    assert!(stats.routed_to_leader_total >= 300, "{stats:?}");

    phase("conditional writes: conflicts carry the current revision");
    let first = routed.put("sdk/cas", "1").await.expect("put");
    let second = routed
        .put_if("sdk/cas", "2", Condition::RevisionIs(first))
        .await
        .expect("cas");
    assert!(second > first);
    assert_eq!(
        routed
            .put_if("sdk/cas", "3", Condition::RevisionIs(first))
            .await,
        Err(ClientError::Conflict {
            current: Some(second)
        })
    );
    assert_eq!(
        routed.put_if("sdk/cas", "3", Condition::Absent).await,
        Err(ClientError::Conflict {
            current: Some(second)
        })
    );
    assert_eq!(
        routed.delete_if("sdk/cas", first).await,
        Err(ClientError::Conflict {
            current: Some(second)
        })
    );
    let created = routed
        .doc_create("people", "bob", &json!({"name": "bob", "age": 17}))
        .await
        .expect("create");
    assert_eq!(
        routed
            .doc_create("people", "bob", &json!({"name": "other"}))
            .await,
        Err(ClientError::Conflict {
            current: Some(created)
        })
    );
    assert_eq!(
        routed
            .doc_put_if(
                "people",
                "ada",
                &json!({}),
                Condition::RevisionIs(created + 1_000)
            )
            .await,
        Err(ClientError::Conflict {
            current: Some(document_revision)
        })
    );
    assert!(routed.delete_if("sdk/cas", second).await.expect("delete") > second);
    assert_eq!(routed.delete("sdk/cas").await, Err(ClientError::NotFound));

    phase("scans and queries page through");
    let mut keys = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = routed
            .scan("sdk/routed/", after.as_deref(), 40)
            .await
            .expect("scan");
        keys.extend(page.items.iter().map(|item| item.key.clone()));
        match page.next {
            None => break,
            Some(next) => after = Some(next),
        }
    }
    let expected: Vec<Vec<u8>> = (0..150)
        .map(|n| format!("sdk/routed/{n:03}").into_bytes())
        .collect();
    assert_eq!(keys, expected);
    for n in 0..30 {
        routed
            .doc_put(
                "people",
                &format!("p{n:02}"),
                &json!({"name": format!("p{n}"), "age": n}),
            )
            .await
            .expect("doc put");
    }
    let adults = routed
        .query_all(
            "people",
            &Query::new()
                .filter(json!({"age": {"$gte": 18}}))
                .sort_by_desc("age")
                .project(["age"])
                .limit(7),
            1_000,
        )
        .await
        .expect("query");
    let ages: Vec<u64> = adults
        .iter()
        .map(|document| document.body["age"].as_u64().unwrap_or(0))
        .collect();
    let mut want: Vec<u64> = (18..30).collect();
    want.push(36);
    want.sort_unstable_by(|left, right| right.cmp(left));
    assert_eq!(ages, want);
    assert!(matches!(
        routed.query("people", &Query::new().filter(json!({"age": {"$bad": 1}}))).await,
        Err(ClientError::InvalidInput { code, .. }) if code == "invalid_input"
    ));
    let status = routed
        .define_collection("people", &["age"])
        .await
        .expect("define");
    assert_eq!(status.indexes[0].field, "age");
    let listed = routed.collections().await.expect("collections");
    assert_eq!(listed[0].name, "people");
    assert_eq!(
        routed
            .cluster_info()
            .await
            .expect("cluster info")
            .nodes
            .len(),
        3
    );
}

/// Proves retries hide a leader's death from readers: while the SDK reads known
/// keys in a loop, the node leading the most shards is SIGKILLed; every read still
/// returns the right value, and the SDK's counters show it retried (reads routed
/// to the dead node were sent again elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t55_leader_killed_during_reads() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes and write 200 keys");
    let mut cluster = Cluster::start(3, &[]);
    let sdk = sdk(&cluster, true);
    let mut written = Vec::new();
    for n in 0..200 {
        let key = format!("kill/{n:03}");
        let revision = sdk.put(&key, format!("value {n}")).await.expect("put");
        written.push((key, format!("value {n}"), revision));
    }
    let victim = cluster.busiest_leader(1);
    phase(&format!(
        "read in a loop; SIGKILL node {victim} after a second"
    ));
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let sdk = sdk.clone();
            let written = written.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut reads = 0u64;
                let mut at = reader * 50;
                while started.elapsed() < Duration::from_secs(8) {
                    let (key, value, revision) = &written[at % written.len()];
                    let read = sdk
                        .get(key)
                        .await
                        .unwrap_or_else(|error| panic!("read {key}: {error}"))
                        .unwrap_or_else(|| panic!("{key} vanished"));
                    assert_eq!(
                        (read.value.as_ref(), read.revision),
                        (value.as_bytes(), *revision),
                        "{key}"
                    );
                    reads += 1;
                    at += 1;
                }
                reads
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node_mut(victim).kill();
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader");
    }
    let stats = sdk.stats();
    eprintln!("{reads} reads, all correct; {stats:?}");
    assert!(stats.retries_total > 0, "no read was retried: {stats:?}");
    assert!(stats.placement_refreshes_total >= 2, "{stats:?}");
}
