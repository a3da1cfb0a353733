//! Black-box test of `GET /metrics`: a 3-node cluster of real `mimorid` processes is
//! scraped with a Prometheus text-format parser before and after a load, and the
//! key series must exist, be well formed and grow with the load; every series the
//! Grafana dashboard (`docs/grafana-dashboard.json`) queries must exist.

mod common;

use common::cluster::{client, write_all, Cluster, TEST_SHARDS};
use common::ClusterPlace;
use prometheus_parse::{Sample, Scrape, Value};

fn phase(text: &str) {
    eprintln!("--- {text}");
}

/// Series every node must export, whatever its load.
const SERIES: &[&str] = &[
    "mimori_build_info",
    "mimori_node_uptime_seconds",
    "mimori_http_requests_total",
    "mimori_http_request_duration_seconds",
    "mimori_http_admission_rejections_total",
    "mimori_http_requests_in_flight",
    "mimori_raft_proposals_total",
    "mimori_raft_entries_committed_total",
    "mimori_raft_log_entries_appended_total",
    "mimori_raft_log_appended_bytes_total",
    "mimori_raft_leader_changes_total",
    "mimori_raft_log_entries",
    "mimori_raft_applied_index",
    "mimori_raft_commit_index",
    "mimori_raft_leader",
    "mimori_snapshot_sent_total",
    "mimori_snapshot_installed_total",
    "mimori_snapshot_sent_bytes_total",
    "mimori_snapshot_received_bytes_total",
    "mimori_wal_fsync_duration_seconds",
    "mimori_wal_batch_writes",
    "mimori_wal_fsyncs_total",
    "mimori_wal_entries_total",
    "mimori_wal_size_bytes",
    "mimori_storage_state_machine_bytes",
    "mimori_shard_replicas",
    "mimori_shard_leaders",
    "mimori_gossip_members",
    "mimori_gossip_packets_rejected_total",
    "mimori_transport_peers_reachable",
    "mimori_transport_frames_sent_total",
    "mimori_transport_forwarded_requests_total",
];

/// One node's scrape.
struct Scraped {
    samples: Vec<Sample>,
}

impl Scraped {
    async fn of(url: &str) -> Scraped {
        let response = client().get(url).send().await.expect("/metrics answers");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("content type")
            .to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let body = response.text().await.expect("/metrics body");
        let scrape = Scrape::parse(body.lines().map(|line| Ok(line.to_string())))
            .unwrap_or_else(|error| panic!("not the Prometheus text format ({error}):\n{body}"));
        let scraped = Scraped {
            samples: scrape.samples,
        };
        // The parser skips lines it cannot read: every series line must have
        // become a sample (histogram lines under their family's name).
        for line in body.lines().filter(|line| !line.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                scraped.has(name) || scraped.has(family),
                "a line the parser could not read: {line}"
            );
        }
        scraped
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|sample| sample.metric == name)
    }

    /// A counter's or gauge's value summed over the series matching `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|sample| match &sample.value {
                Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => *value,
                other => panic!("{name} is not a counter or gauge: {other:?}"),
            })
            .sum()
    }

    /// A histogram's observation count summed over the series matching `labels`.
    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|sample| match &sample.value {
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|bucket| bucket.less_than == f64::INFINITY)
                    .map_or(0.0, |bucket| bucket.count),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(label, value)| sample.labels.get(label) == Some(*value))
        })
    }
}

/// Every `mimori_*` series the Grafana dashboard's queries name (its panels and
/// its variables), histogram suffixes included.
fn dashboard_series() -> Vec<String> {
    let text = include_str!("../docs/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(text).expect("dashboard JSON");
    let mut queries: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        queries.push(
            variable["definition"]
                .as_str()
                .expect("definition")
                .to_string(),
        );
    }
    let mut names: Vec<String> = Vec::new();
    for query in &queries {
        assert!(
            !query.contains("[5m]") && !query.contains("[1m]"),
            "rates use $__rate_interval: {query}"
        );
        let mut rest = query.as_str();
        while let Some(start) = rest.find("mimori_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    names
}

async fn scrape_all(cluster: &Cluster) -> Vec<Scraped> {
    let mut scrapes = Vec::new();
    for node in 1..=3 {
        scrapes.push(Scraped::of(&cluster.node(node).url("/metrics")).await);
    }
    scrapes
}

fn total(scrapes: &[Scraped], name: &str) -> f64 {
    scrapes.iter().map(|scrape| scrape.value(name, &[])).sum()
}

/// Proves `/metrics` exports every key series in the Prometheus text format, that
/// cluster-wide figures add up (every shard led exactly once, two peers alive per
/// node), and that request, Raft, WAL and transport figures grow with 2,000 writes
/// through node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_metrics_exist_and_grow_under_load() {
    let _place = ClusterPlace::take(3);
    phase("start three nodes and scrape them");
    let cluster = Cluster::start(3, &[]);
    let before = scrape_all(&cluster).await;
    for (index, scrape) in before.iter().enumerate() {
        let missing: Vec<&str> = SERIES
            .iter()
            .copied()
            .filter(|name| !scrape.has(name))
            .collect();
        assert!(
            missing.is_empty(),
            "node {}: missing {missing:?}",
            index + 1
        );
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            scrape.value("mimori_build_info", &[("version", version)]),
            1.0
        );
        assert_eq!(
            scrape.value("mimori_gossip_members", &[("state", "alive")]),
            2.0
        );
        assert_eq!(
            scrape.value("mimori_shard_replicas", &[]),
            f64::from(TEST_SHARDS)
        );
    }
    assert_eq!(
        total(&before, "mimori_shard_leaders"),
        f64::from(TEST_SHARDS),
        "every shard is led by exactly one node"
    );
    assert_eq!(
        total(&before, "mimori_raft_leader"),
        f64::from(TEST_SHARDS),
        "the per-shard leader series agree"
    );

    phase("write 2,000 keys through node 1 and scrape again");
    let written = 2_000;
    write_all(&cluster.node(1).url(""), "metrics/", written, 16).await;
    let after = scrape_all(&cluster).await;

    let puts = [
        ("route", "/v1/kv/*key"),
        ("method", "PUT"),
        ("status", "200"),
    ];
    let grew = |name: &str| total(&after, name) - total(&before, name);
    assert!(
        after[0].value("mimori_http_requests_total", &puts)
            - before[0].value("mimori_http_requests_total", &puts)
            >= written as f64,
        "node 1 counted every PUT"
    );
    assert!(
        after[0].histogram_count("mimori_http_request_duration_seconds", &puts)
            - before[0].histogram_count("mimori_http_request_duration_seconds", &puts)
            >= written as f64,
        "node 1 timed every PUT"
    );
    assert!(
        grew("mimori_raft_proposals_total") >= written as f64,
        "every write was proposed by some leader"
    );
    // Each write is committed on all three replicas.
    assert!(grew("mimori_raft_entries_committed_total") >= 3.0 * written as f64);
    assert!(grew("mimori_raft_log_entries_appended_total") >= 3.0 * written as f64);
    assert!(grew("mimori_raft_log_appended_bytes_total") > 0.0);
    assert!(grew("mimori_wal_fsyncs_total") > 0.0);
    assert!(grew("mimori_wal_entries_total") >= 3.0 * written as f64);
    assert!(grew("mimori_transport_frames_sent_total") > 0.0);
    let fsyncs: f64 = after
        .iter()
        .zip(&before)
        .map(|(after, before)| {
            after.histogram_count("mimori_wal_fsync_duration_seconds", &[])
                - before.histogram_count("mimori_wal_fsync_duration_seconds", &[])
        })
        .sum();
    assert!(fsyncs > 0.0, "fsync latencies were recorded");

    phase("every series the Grafana dashboard queries exists");
    let queried = dashboard_series();
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            !after[0].has(name) && !after[0].has(base)
        })
        .collect();
    assert!(missing.is_empty(), "the dashboard queries {missing:?}");
}
