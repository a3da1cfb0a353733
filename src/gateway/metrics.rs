//! `GET /metrics`: the node's figures in the Prometheus text format (version 0.0.4).
//!
//! Two sources. The gateway records its own requests as they end (count by route,
//! method and status; latency histogram by route and method; admission
//! rejections). Everything else is read at scrape time from the kernel: the node's
//! status counters (WAL, transport, gossip, snapshots), per-shard figures of the
//! replicas hosted here, the histograms the kernel records (WAL fsync latency and
//! batch size) and the state machine's size on disk. Each scrape builds a fresh
//! registry, so a figure is never stale and nothing is kept between scrapes.
//!
//! Names follow `mimori_<subsystem>_<name>_<unit>`, counters end in `_total`, and
//! labels never carry keys or ids chosen by clients: `route` is the route template
//! (`/v1/kv/*key`, `/v1/docs/:collection/*id`), `shard` a shard number.

use super::problem::Problem;
use super::GatewayState;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mimori_actors::kv::NodeStatus;
use mimori_actors::router::ShardFigures;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

/// Buckets of request latency, in seconds: 250 µs to 10 s.
pub const REQUEST_SECONDS_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// The gateway's own figures, recorded as requests end.
pub struct GatewayMetrics {
    requests_total: IntCounterVec,
    request_duration_seconds: HistogramVec,
    admission_rejections_total: IntCounter,
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        GatewayMetrics {
            requests_total: IntCounterVec::new(
                Opts::new(
                    "mimori_http_requests_total",
                    "HTTP requests answered, by route template, method and status",
                ),
                &["route", "method", "status"],
            )
            .expect("constant counter options are valid"),
            request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "mimori_http_request_duration_seconds",
                    "Time from admission to the response head, by route template, method and status",
                )
                .buckets(REQUEST_SECONDS_BUCKETS.to_vec()),
                &["route", "method", "status"],
            )
            .expect("constant histogram options are valid"),
            admission_rejections_total: IntCounter::new(
                "mimori_http_admission_rejections_total",
                "Requests refused with 503 overloaded because too many were in flight",
            )
            .expect("constant counter options are valid"),
        }
    }

    /// Counts one answered request. `route` is the matched route template, or
    /// `unmatched` for the fallbacks.
    pub fn record(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        let route = route_label(route);
        let route = route.as_str();
        let method = method_label(method);
        self.requests_total
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.request_duration_seconds
            .with_label_values(&[route, method, status.as_str()])
            .observe(seconds);
    }

    /// Counts one request refused by admission control.
    pub fn record_rejection(&self) {
        self.admission_rejections_total.inc();
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests_total.clone()),
            Box::new(self.request_duration_seconds.clone()),
            Box::new(self.admission_rejections_total.clone()),
        ]
    }
}

impl Default for GatewayMetrics {
    fn default() -> GatewayMetrics {
        GatewayMetrics::new()
    }
}

/// A route template as a label: axum's `{name}` and `{*name}` become `:name` and
/// `*name`, so label values hold no braces (which some text-format parsers take for
/// the end of the label set).
fn route_label(template: &str) -> String {
    template
        .replace("{*", "*")
        .replace('{', ":")
        .replace('}', "")
}

/// A bounded set of method labels: anything unusual is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<GatewayState>) -> Result<Response, Problem> {
    let kernel = state.kernel();
    let status = kernel.status().await;
    let shards = kernel.shard_figures();
    let state_machine_bytes = match kernel.state_machine_bytes().await {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(%error, "state machine size unknown for /metrics");
            None
        }
    };
    let scrape = Scrape::default();
    for collector in state.metrics().collectors() {
        scrape.register(collector);
    }
    for collector in kernel.recorded_metrics().collectors() {
        scrape.register(collector);
    }
    scrape.gauge(
        "mimori_http_requests_in_flight",
        "Requests inside the gateway's handlers now",
        f64::from(state.requests_in_flight()),
    );
    node_figures(&scrape, &status, state_machine_bytes);
    shard_figures(&scrape, &shards);

    let mut body = Vec::with_capacity(16 * 1024);
    let encoder = TextEncoder::new();
    encoder
        .encode(&scrape.registry.gather(), &mut body)
        .map_err(|error| Problem::new("internal", format!("encoding metrics: {error}")))?;
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// A node-wide figure read from the kernel's status: name, help, value.
type NodeFigure = (&'static str, &'static str, fn(&NodeStatus) -> u64);

/// Node-wide gauges.
const NODE_GAUGES: &[NodeFigure] = &[
    (
        "mimori_node_uptime_seconds",
        "Seconds since the node started",
        |status| status.uptime_seconds,
    ),
    (
        "mimori_shard_replicas",
        "Shard replicas hosted on this node",
        |status| u64::from(status.shards_hosted),
    ),
    ("mimori_shard_leaders", "Shards this node leads", |status| {
        u64::from(status.shards_leading)
    }),
    ("mimori_wal_segments", "WAL segment files", |status| {
        status.wal.segments
    }),
    (
        "mimori_wal_size_bytes",
        "Bytes in the WAL's segment files",
        |status| status.wal.bytes,
    ),
    (
        "mimori_transport_peers",
        "Other nodes known to this one",
        |status| u64::from(status.transport.peers),
    ),
    (
        "mimori_transport_peers_reachable",
        "Known nodes with a live session, heard from recently",
        |status| u64::from(status.transport.peers_reachable),
    ),
];

/// Node-wide counters (cumulative since the node started).
const NODE_COUNTERS: &[NodeFigure] = &[
    (
        "mimori_shard_replica_restarts_total",
        "Shard replica actors restarted by the supervisor",
        |status| status.shard_restarts_total,
    ),
    (
        "mimori_snapshot_sent_total",
        "Snapshot streams completed to lagging replicas",
        |status| status.snapshots_sent_total,
    ),
    (
        "mimori_snapshot_installed_total",
        "Snapshots installed by local replicas",
        |status| status.snapshots_installed_total,
    ),
    (
        "mimori_wal_fsyncs_total",
        "fdatasync calls made by group commit",
        |status| status.wal.fsyncs_total,
    ),
    (
        "mimori_wal_records_total",
        "Records appended to the WAL",
        |status| status.wal.records_total,
    ),
    (
        "mimori_wal_entries_total",
        "Raft entries made durable in the WAL",
        |status| status.wal.entries_total,
    ),
    (
        "mimori_wal_checkpoints_total",
        "Checkpoints completed (state machine durable, logs compacted)",
        |status| status.wal.checkpoints_total,
    ),
    (
        "mimori_transport_frames_sent_total",
        "Frames sent to other nodes",
        |status| status.transport.frames_sent_total,
    ),
    (
        "mimori_transport_frames_received_total",
        "Frames received from other nodes",
        |status| status.transport.frames_received_total,
    ),
    (
        "mimori_transport_frames_rejected_total",
        "Frames from other nodes that did not decode",
        |status| status.transport.frames_rejected_total,
    ),
    (
        "mimori_transport_items_dropped_total",
        "Messages dropped because a peer could not take them",
        |status| status.transport.items_dropped_total,
    ),
    (
        "mimori_transport_forwarded_requests_total",
        "Client requests forwarded to other nodes",
        |status| status.transport.calls_total,
    ),
    (
        "mimori_gossip_packets_sent_total",
        "Gossip packets sent",
        |status| status.gossip.packets_sent_total,
    ),
    (
        "mimori_gossip_packets_received_total",
        "Gossip packets received",
        |status| status.gossip.packets_received_total,
    ),
    (
        "mimori_gossip_packets_rejected_total",
        "Gossip packets dropped before parsing: wrong HMAC, version or size",
        |status| status.gossip.packets_rejected_total,
    ),
    (
        "mimori_gossip_packets_invalid_total",
        "Authentic gossip packets the protocol could not use",
        |status| status.gossip.packets_invalid_total,
    ),
];

/// A Raft counter: the sum over the node's replicas of one of their counters.
type ShardCounter = (&'static str, &'static str, fn(&ShardFigures) -> u64);

const SHARD_COUNTERS: &[ShardCounter] = &[
    (
        "mimori_raft_proposals_total",
        "Proposals handed to Raft by local replicas (a follower's go to its leader)",
        |shard| shard.proposals_total,
    ),
    (
        "mimori_raft_entries_committed_total",
        "Committed entries applied by local replicas",
        |shard| shard.entries_committed_total,
    ),
    (
        "mimori_raft_log_entries_appended_total",
        "Entries appended to local replicas' logs",
        |shard| shard.log_entries_appended_total,
    ),
    (
        "mimori_raft_log_appended_bytes_total",
        "Payload bytes of entries appended to local replicas' logs",
        |shard| shard.log_bytes_appended_total,
    ),
    (
        "mimori_raft_leader_changes_total",
        "Times a local replica saw its shard's leader change",
        |shard| shard.leader_changes_total,
    ),
];

/// Node-wide figures from the status the kernel keeps.
fn node_figures(scrape: &Scrape, status: &NodeStatus, state_machine_bytes: Option<u64>) {
    let build = scrape.gauge_vec(
        "mimori_build_info",
        "Always 1; the labels name the build",
        &["version"],
    );
    build.with_label_values(&[status.version.as_str()]).set(1.0);
    for (name, help, value) in NODE_GAUGES {
        scrape.gauge(name, help, value(status) as f64);
    }
    for (name, help, value) in NODE_COUNTERS {
        scrape.counter(name, help, value(status));
    }
    if let Some(bytes) = state_machine_bytes {
        scrape.gauge(
            "mimori_storage_state_machine_bytes",
            "Bytes the state machine (sled) takes on disk",
            bytes as f64,
        );
    }
    let gossip = &status.gossip;
    let members = scrape.gauge_vec(
        "mimori_gossip_members",
        "Other members as gossip sees them, by state",
        &["state"],
    );
    for (state, count) in [
        ("alive", gossip.members_alive),
        ("suspect", gossip.members_suspect),
        ("down", gossip.members_down),
    ] {
        members.with_label_values(&[state]).set(f64::from(count));
    }
}

/// Raft figures: node-wide sums of the replicas' counters, and per-shard gauges.
fn shard_figures(scrape: &Scrape, shards: &[ShardFigures]) {
    for (name, help, value) in SHARD_COUNTERS {
        scrape.counter(name, help, shards.iter().map(value).sum());
    }
    let log_entries = scrape.gauge_vec(
        "mimori_raft_log_entries",
        "Entries in a replica's log not yet compacted away",
        &["shard"],
    );
    let lag = scrape.gauge_vec(
        "mimori_raft_replication_lag_entries",
        "On the shard's leader: entries its furthest-behind member lacks",
        &["shard"],
    );
    let applied = scrape.gauge_vec(
        "mimori_raft_applied_index",
        "Highest log index a replica applied",
        &["shard"],
    );
    let committed = scrape.gauge_vec(
        "mimori_raft_commit_index",
        "Highest log index a replica knows committed",
        &["shard"],
    );
    let leading = scrape.gauge_vec(
        "mimori_raft_leader",
        "1 when this node leads the shard, else 0",
        &["shard"],
    );
    for shard in shards {
        let label = shard.shard.to_string();
        let labels = [label.as_str()];
        log_entries
            .with_label_values(&labels)
            .set(shard.log_entries as f64);
        applied
            .with_label_values(&labels)
            .set(shard.applied_index as f64);
        committed
            .with_label_values(&labels)
            .set(shard.commit_index as f64);
        leading
            .with_label_values(&labels)
            .set(if shard.leading { 1.0 } else { 0.0 });
        if shard.leading {
            lag.with_label_values(&labels)
                .set(shard.replication_lag_entries as f64);
        }
    }
}

/// One scrape's registry. A metric that cannot be registered (which only a
/// duplicate name could cause) is logged and left out rather than failing the
/// scrape.
#[derive(Default)]
struct Scrape {
    registry: Registry,
}

impl Scrape {
    fn register(&self, collector: Box<dyn Collector>) {
        if let Err(error) = self.registry.register(collector) {
            tracing::warn!(%error, "metric left out of /metrics");
        }
    }

    fn gauge(&self, name: &str, help: &str, value: f64) {
        if let Ok(gauge) = Gauge::new(name, help) {
            gauge.set(value);
            self.register(Box::new(gauge));
        }
    }

    /// A counter read from a cumulative figure the kernel keeps.
    fn counter(&self, name: &str, help: &str, value: u64) {
        if let Ok(counter) = IntCounter::new(name, help) {
            counter.inc_by(value);
            self.register(Box::new(counter));
        }
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let gauges =
            GaugeVec::new(Opts::new(name, help), labels).expect("constant gauge options are valid");
        self.register(Box::new(gauges.clone()));
        gauges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the gateway's metrics can be created and record by label.
    #[test]
    fn gateway_metrics_record_by_label() {
        let metrics = GatewayMetrics::new();
        metrics.record("/v1/kv/{*key}", &Method::PUT, StatusCode::OK, 0.002);
        metrics.record("/v1/kv/{*key}", &Method::PUT, StatusCode::OK, 0.004);
        assert_eq!(
            route_label("/v1/docs/{collection}/{*id}"),
            "/v1/docs/:collection/*id"
        );
        metrics.record_rejection();
        let ok = metrics
            .requests_total
            .with_label_values(&["/v1/kv/*key", "PUT", "200"]);
        assert_eq!(ok.get(), 2);
        let latency =
            metrics
                .request_duration_seconds
                .with_label_values(&["/v1/kv/*key", "PUT", "200"]);
        assert_eq!(latency.get_sample_count(), 2);
        assert!((latency.get_sample_sum() - 0.006).abs() < 1e-9);
        assert_eq!(metrics.admission_rejections_total.get(), 1);
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
