//! Black-box tests of document queries and secondary indexes on three real
//! `mimorid` processes: declaring indexes over existing documents (built in the
//! background on every shard), queries through any node with filters, sorts,
//! projections and cursors, answers equal to a brute-force evaluation in the
//! test, and a lagging replica that receives documents and indexes by snapshot.

mod common;

use common::cluster::{admin, client, Cluster};
use common::ClusterPlace;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn phase(text: &str) {
    eprintln!("--- {text}");
}

const CITIES: [&str; 3] = ["Oslo", "Rome", "Lima"];

fn person(n: u32) -> Value {
    json!({"name": format!("person {n}"), "age": n % 50, "address": {"city": CITIES[(n % 3) as usize]}})
}

/// Writes `body` as document `people/{id}` through `base`; the revision.
async fn put_document(client: &reqwest::Client, base: &str, id: &str, body: &Value) -> u64 {
    let response = client
        .put(format!("{base}/v1/docs/people/{id}"))
        .json(body)
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 200, "put {id}");
    let body: Value = response.json().await.expect("put body");
    body["revision"].as_u64().expect("revision")
}

/// Every page of `query` through `base`: the ids in order and the `index` each
/// page reported.
async fn query_all(
    client: &reqwest::Client,
    base: &str,
    query: &Value,
) -> (Vec<String>, Vec<Value>, Vec<Value>) {
    let mut query = query.clone();
    let mut ids = Vec::new();
    let mut documents = Vec::new();
    let mut indexes = Vec::new();
    for _ in 0..1_000 {
        let response = client
            .post(format!("{base}/v1/docs/people/_query"))
            .json(&query)
            .send()
            .await
            .expect("query");
        let status = response.status();
        let page: Value = response.json().await.expect("query body");
        assert_eq!(status, 200, "{page}");
        for hit in page["documents"].as_array().expect("documents") {
            ids.push(hit["id"].as_str().expect("id").to_string());
            documents.push(hit["document"].clone());
        }
        indexes.push(page["index"].clone());
        match page["cursor"].as_str() {
            None => return (ids, documents, indexes),
            Some(cursor) => query["cursor"] = json!(cursor),
        }
    }
    panic!("the query did not end");
}

/// Waits until every index of `people` is ready on every shard, through `base`.
async fn wait_ready(client: &reqwest::Client, base: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let collections: Value = client
            .get(format!("{base}/v1/collections"))
            .send()
            .await
            .expect("collections")
            .json()
            .await
            .expect("collections body");
        let ready = collections["collections"][0]["indexes"]
            .as_array()
            .is_some_and(|indexes| {
                !indexes.is_empty() && indexes.iter().all(|index| index["state"] == "ready")
            });
        if ready {
            return collections;
        }
        assert!(
            Instant::now() < deadline,
            "indexes never became ready: {collections}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids the test expects: documents matching `matches`, ordered by `age` (or
/// id when `by_age` is false), descending when asked.
fn expected(
    documents: &BTreeMap<String, Value>,
    matches: impl Fn(&Value) -> bool,
    by_age: bool,
    descending: bool,
) -> Vec<String> {
    let mut ids: Vec<(u64, String)> = documents
        .iter()
        .filter(|(_, body)| matches(body))
        .map(|(id, body)| {
            (
                if by_age {
                    body["age"].as_u64().unwrap_or(0)
                } else {
                    0
                },
                id.clone(),
            )
        })
        .collect();
    ids.sort();
    if descending {
        ids.reverse();
    }
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Proves the document API end to end: 600 documents written before the indexes
/// were declared get indexed in the background on every shard (progress reaches
/// `ready`); filtered, sorted, projected queries through another node return
/// exactly what a brute-force evaluation expects, page by page, using the index;
/// writes, updates and deletes after the build keep the indexes right; an
/// unindexed field scans with the same answers; bad queries get clear errors; and
/// dropping the collection removes its documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t56_queries_with_secondary_indexes() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes");
    let cluster = Cluster::start(3, &[]);
    let (one, two, three) = (
        cluster.node(1).url(""),
        cluster.node(2).url(""),
        cluster.node(3).url(""),
    );
    let client = client();
    let mut documents = BTreeMap::new();
    phase("write 600 documents through node 1");
    for n in 0..600u32 {
        let id = format!("p{n:04}");
        let body = person(n);
        put_document(&client, &one, &id, &body).await;
        documents.insert(id, body);
    }

    phase("declare indexes on age and address.city through node 2");
    let response = client
        .put(format!("{two}/v1/collections/people"))
        .json(&json!({"indexes": ["age", "address.city"]}))
        .send()
        .await
        .expect("define");
    assert_eq!(response.status(), 200);
    let collections = wait_ready(&client, &three).await;
    eprintln!("{collections}");
    let indexes = &collections["collections"][0]["indexes"];
    assert_eq!(indexes[0]["field"], "age");
    assert_eq!(indexes[1]["field"], "address.city");
    assert_eq!(indexes[0]["shards_ready"], indexes[0]["shards"]);

    phase("an indexed range query through node 3, sorted by age descending, 7 per page");
    let query = json!({
        "filter": {"address.city": "Rome", "age": {"$gte": 10, "$lt": 20}},
        "sort": {"field": "age", "order": "desc"},
        "limit": 7
    });
    let (ids, _, used) = query_all(&client, &three, &query).await;
    let rome_teens = |body: &Value| {
        body["address"]["city"] == "Rome" && (10..20).contains(&body["age"].as_u64().unwrap_or(0))
    };
    let want = expected(&documents, rome_teens, true, true);
    assert_eq!(ids, want);
    assert!(ids.len() > 7, "more than one page: {}", ids.len());
    assert!(
        used.iter().all(|index| index.is_string()),
        "pages used an index: {used:?}"
    );

    phase("writes, updates and deletes after the build keep the indexes right");
    for n in 600..700u32 {
        let id = format!("p{n:04}");
        let body = person(n);
        put_document(&client, &two, &id, &body).await;
        documents.insert(id, body);
    }
    for n in (0..600u32).step_by(7) {
        let id = format!("p{n:04}");
        let body = json!({"name": "moved", "age": 15, "address": {"city": "Rome"}});
        put_document(&client, &three, &id, &body).await;
        documents.insert(id, body);
    }
    for n in (1..600u32).step_by(11) {
        let id = format!("p{n:04}");
        let response = client
            .delete(format!("{one}/v1/docs/people/{id}"))
            .send()
            .await
            .expect("delete");
        assert!(response.status() == 200 || response.status() == 404);
        documents.remove(&id);
    }
    let (ids, _, _) = query_all(&client, &one, &query).await;
    assert_eq!(ids, expected(&documents, rome_teens, true, true));

    phase("$in, $or, $ne, $exists and a projection");
    let query = json!({
        "filter": {"$or": [{"age": {"$in": [3, 4]}}, {"name": "moved"}], "address.city": {"$ne": "Lima"}, "age": {"$exists": true}},
        "projection": ["name", "address.city"],
        "limit": 50
    });
    let (ids, projected, _) = query_all(&client, &two, &query).await;
    let want = expected(
        &documents,
        |body| {
            ([3, 4].contains(&body["age"].as_u64().unwrap_or(99)) || body["name"] == "moved")
                && body["address"]["city"] != "Lima"
        },
        false,
        false,
    );
    assert_eq!(ids, want);
    for (id, document) in ids.iter().zip(&projected) {
        let full = &documents[id];
        assert_eq!(
            document,
            &json!({"name": full["name"], "address": {"city": full["address"]["city"]}})
        );
    }

    phase("an unindexed field scans, with the same answers");
    let query = json!({"filter": {"name": {"$gte": "person 69"}}, "limit": 40});
    let (ids, _, used) = query_all(&client, &three, &query).await;
    assert_eq!(
        ids,
        expected(
            &documents,
            |body| body["name"]
                .as_str()
                .is_some_and(|name| name >= "person 69"),
            false,
            false
        )
    );
    assert!(used.iter().all(Value::is_null), "{used:?}");

    phase("bad queries are refused with a code");
    for (bad, code) in [
        (json!({"filter": {"age": {"$regex": "x"}}}), "invalid_input"),
        (json!({"limit": 0}), "invalid_input"),
        (json!({"cursor": "nonsense"}), "invalid_input"),
        (json!({"filtr": {}}), "invalid_json"),
    ] {
        let response = client
            .post(format!("{one}/v1/docs/people/_query"))
            .json(&bad)
            .send()
            .await
            .expect("bad query");
        assert_eq!(response.status(), 400, "{bad}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["code"], code, "{bad}: {problem}");
    }

    phase("drop the collection: its documents and definition are gone");
    let response = client
        .delete(format!("{two}/v1/collections/people"))
        .send()
        .await
        .expect("drop");
    assert_eq!(response.status(), 200);
    let (ids, _, _) = query_all(&client, &one, &json!({})).await;
    assert!(ids.is_empty(), "{} documents survived the drop", ids.len());
    let collections: Value = client
        .get(format!("{three}/v1/collections"))
        .send()
        .await
        .expect("collections")
        .json()
        .await
        .expect("collections body");
    assert_eq!(collections, json!({"collections": []}));
}

/// Proves index entries travel with snapshots and every replica indexes the same:
/// with logs compacted every 200 entries, node 3 is stopped while 6,000 documents are
/// written and an index is declared and built; restarted, it catches up by
/// snapshot, its shards' checksums (which cover index entries) equal the others',
/// and an indexed query through it answers the same as through node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t57_indexes_arrive_by_snapshot() {
    let _place = ClusterPlace::take(3);
    let environment = [
        ("MIMORI_COMPACT_AFTER_ENTRIES", "200"),
        ("MIMORI_CHECKPOINT_INTERVAL_MS", "1000"),
    ];
    phase("start three nodes, stop node 3");
    let mut cluster = Cluster::start(3, &environment);
    assert_eq!(cluster.node_mut(3).terminate(), Some(0));
    let (one, two) = (cluster.node(1).url(""), cluster.node(2).url(""));
    let client = client();
    phase("write 6,000 documents, declare an index on age and wait for the build");
    let mut tasks = Vec::new();
    for writer in 0..16u32 {
        let (client, one) = (client.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            for n in (writer..6_000).step_by(16) {
                put_document(&client, &one, &format!("p{n:04}"), &person(n)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let response = client
        .put(format!("{two}/v1/collections/people"))
        .json(&json!({"indexes": ["age"]}))
        .send()
        .await
        .expect("define");
    assert_eq!(response.status(), 200);
    wait_ready(&client, &one).await;

    phase("restart node 3 and wait until its shards equal the others'");
    cluster.node_mut(3).start();
    cluster.wait_checksums_equal(Duration::from_secs(90)).await;
    let mut admin_three = admin(cluster.node(3)).await;
    let installed = admin_three
        .status()
        .await
        .expect("status")
        .snapshots_installed_total;
    assert!(installed >= 1, "node 3 caught up without a snapshot");
    phase("a stale indexed query on node 3 answers like node 1");
    let three = cluster.node(3).url("");
    let query = json!({"filter": {"age": 17}, "limit": 1000});
    let (through_one, _, used) = query_all(&client, &one, &query).await;
    assert_eq!(through_one.len(), 120);
    assert!(used.iter().all(|index| index == "age"), "{used:?}");
    let response = client
        .post(format!("{three}/v1/docs/people/_query?consistency=stale"))
        .json(&query)
        .send()
        .await
        .expect("stale query");
    let page: Value = response.json().await.expect("page");
    let stale: Vec<&str> = page["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|hit| hit["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(stale, through_one);
}
