//! mimori-bench's command line: options, their limits and help text.
//!
//! Who talks to it: the `mimori-bench` binary parses [`BenchArgs`] and turns them into
//! [`super::BenchOptions`] with [`BenchArgs::into_options`]. Parsing never touches the
//! network.
//!
//! Invariant: every numeric option and the target list have an upper bound, so a typo
//! cannot ask for a million connections, a terabyte value or a thousand servers.

use super::workload::{Operation, Protocol, Workload};
use super::BenchOptions;
use clap::{Parser, ValueEnum};
use std::time::Duration;

/// Most servers one run spreads its connections over: a whole cluster's client
/// endpoints fit, and a longer list is more likely a pasted mistake than a plan.
pub const TARGETS_MAX: usize = 16;

const AFTER_HELP: &str = "\
Examples:
  mimori-bench --target 127.0.0.1:7070 --op put --connections 64
  mimori-bench --target 127.0.0.1:7070,127.0.0.1:7080,127.0.0.1:7090 --op put
  mimori-bench --target 127.0.0.1:7070 --op get --keys 100000 --preload
  mimori-bench --target 127.0.0.1:7070 --op load --keys 1000000 -o json
  mimori-bench --target 127.0.0.1:2379 --protocol etcd --op mixed --read-percent 90

Targets:
  --target takes one host:port or a comma-separated list of up to 16 (no spaces, no
  empty elements). Every target is resolved before the run starts; connection i goes
  to target i % n, so 64 connections over 3 targets are 22, 21 and 21. A connection
  that fails reconnects to its own target. The report's target is the list as given.

Requests:
  mimori  PUT /v1/kv/{prefix}{n} (raw value bytes), GET /v1/kv/{prefix}{n}
  etcd    POST /v3/kv/put {\"key\",\"value\"} and POST /v3/kv/range {\"key\"} (base64,
          linearizable reads), through etcd's HTTP/JSON gateway
  documents
          PUT /v1/docs/{prefix}/{n} {\"group\": n/100, \"n\", \"pad\"} and, as reads, the
          query POST /v1/docs/{prefix}/_query {\"filter\": {\"group\": g}} (100 hits
          each); the prefix is the collection name

Counting:
  200 is success. A read of a missing key (404, or an etcd range without kvs) is
  counted in ops and in not_found. Other statuses, transport errors and timeouts are
  errors; they are not in ops and their latency is not recorded. Latencies are in
  microseconds.

Output:
  -o table prints a header row and a value row, then one line per kind of error.
  -o json prints one JSON object with the fields: target, protocol, operation,
  connections, keys, value_bytes, elapsed_seconds, ops_total, not_found_total,
  errors_total, errors_by_status, transport_errors_total, timeouts_total,
  ops_per_second, latency_us_p50, latency_us_p90, latency_us_p99, latency_us_p999,
  latency_us_max.";

/// Closed-loop HTTP load generator for Mimori (and etcd, for comparison).
///
/// Opens N keep-alive HTTP/1.1 connections; each sends one request at a time and the
/// next as soon as the response arrives, for the given duration.
#[derive(Debug, Parser)]
#[command(name = "mimori-bench", version, after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Server to load, as host:port (the HTTP gateway, not the admin port), or a
    /// comma-separated list of servers that the connections are spread over in turn.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", value_parser = parse_targets)]
    pub target: TargetList,

    /// HTTP API the target speaks.
    #[arg(long, value_enum, default_value_t = Protocol::Mimori)]
    pub protocol: Protocol,

    /// What to do: put/get/mixed run for --duration-seconds on random keys; load
    /// writes each key once and stops.
    #[arg(long = "op", value_enum)]
    pub operation: Operation,

    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,

    /// Length of the timed phase, in seconds (ignored by --op load).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_seconds: u64,

    /// Size of each written value, in bytes.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=16 * 1024 * 1024))]
    pub value_bytes: u32,

    /// Size of the key space: keys are {prefix}0 .. {prefix}(K-1).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub keys: u64,

    /// Prepended to every key number.
    #[arg(long, default_value = "bench/", value_name = "PREFIX")]
    pub key_prefix: String,

    /// Share of reads in --op mixed, in percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,

    /// Write every key once (with the same connections) before the timed phase, so
    /// reads hit.
    #[arg(long)]
    pub preload: bool,

    /// Seed of the key and value generators; the same seed replays the same keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Runtime worker threads. One is plenty for hundreds of connections and leaves
    /// the other cores to the server when both share a machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// The servers of a run, in the order given: at least one, at most [`TARGETS_MAX`],
/// each a valid `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetList(Vec<String>);

impl TargetList {
    /// The targets, in the order given.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned text: a header row and a value row.
    Table,
    /// One JSON object on stdout.
    Json,
}

impl BenchArgs {
    /// The run these arguments describe.
    pub fn into_options(self) -> BenchOptions {
        let workload = Workload::new(
            self.protocol,
            self.operation,
            self.keys,
            self.key_prefix,
            self.value_bytes,
            self.read_percent,
        );
        BenchOptions {
            targets: self.target.0,
            workload,
            connections: self.connections,
            duration: Duration::from_secs(self.duration_seconds),
            preload: self.preload,
            seed: self.seed,
        }
    }
}

/// Accepts one `host:port` or a comma-separated list of them, refusing empty elements
/// (a stray comma is a mistake, not a request for fewer servers) and more than
/// [`TARGETS_MAX`].
fn parse_targets(text: &str) -> Result<TargetList, String> {
    let elements: Vec<&str> = text.split(',').collect();
    if elements.len() > TARGETS_MAX {
        return Err(format!(
            "{} targets; at most {TARGETS_MAX} are supported",
            elements.len()
        ));
    }
    let mut targets = Vec::with_capacity(elements.len());
    for (position, element) in elements.iter().enumerate() {
        if element.is_empty() {
            return Err(format!(
                "target {} of the list is empty; expected host:port[,host:port...]",
                position + 1
            ));
        }
        let target = parse_target(element)
            .map_err(|error| format!("target {} ({element:?}): {error}", position + 1))?;
        targets.push(target);
    }
    assert!(!targets.is_empty() && targets.len() <= TARGETS_MAX);
    Ok(TargetList(targets))
}

/// Accepts `host:port` only: it becomes the `Host` header, so it must be a valid URI
/// authority, and a missing port would silently mean port 80.
fn parse_target(text: &str) -> Result<String, String> {
    let authority: hyper::http::uri::Authority = text
        .parse()
        .map_err(|error| format!("not a host:port: {error}"))?;
    if authority.port_u16().is_none() {
        return Err("missing port; expected host:port".to_string());
    }
    if authority.as_str().contains('@') {
        return Err("user info is not supported; expected host:port".to_string());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the documented flags parse into the options they name, and the
    /// defaults are the documented ones.
    #[test]
    fn flags_and_defaults() {
        let args = BenchArgs::try_parse_from([
            "mimori-bench",
            "--target",
            "localhost:7070",
            "--op",
            "get",
            "--protocol",
            "etcd",
            "--preload",
            "-o",
            "json",
        ])
        .expect("valid flags parse");
        assert_eq!(args.protocol, Protocol::Etcd);
        assert_eq!(args.output, OutputFormat::Json);
        let options = args.into_options();
        assert_eq!(options.targets, vec!["localhost:7070".to_string()]);
        assert_eq!(options.connections, 16);
        assert_eq!(options.duration, Duration::from_secs(10));
        assert_eq!(options.workload.value_bytes, 256);
        assert_eq!(options.workload.operation, Operation::Get);
        assert!(options.preload);
    }

    /// Proves bad targets and out-of-range numbers are refused at parse time.
    #[test]
    fn refusals() {
        for target in ["localhost", "http://a:1/x", "a b:1", "user@a:1"] {
            let parsed =
                BenchArgs::try_parse_from(["mimori-bench", "--target", target, "--op", "put"]);
            assert!(parsed.is_err(), "target {target:?} must be refused");
        }
        let parsed = BenchArgs::try_parse_from([
            "mimori-bench",
            "--target",
            "a:1",
            "--op",
            "put",
            "--connections",
            "0",
        ]);
        assert!(parsed.is_err());
    }

    /// Proves a comma-separated list parses into its elements in order, up to and
    /// including the limit, and a single target is a list of one.
    #[test]
    fn target_lists() {
        let list = "127.0.0.1:7070,localhost:7080,[::1]:7090";
        let args = BenchArgs::try_parse_from(["mimori-bench", "--target", list, "--op", "put"])
            .expect("a list of three targets parses");
        assert_eq!(
            args.target.as_slice(),
            ["127.0.0.1:7070", "localhost:7080", "[::1]:7090"]
        );
        assert_eq!(args.into_options().targets.len(), 3);

        let at_limit: Vec<String> = (0..TARGETS_MAX)
            .map(|n| format!("h{n}:{}", 7000 + n))
            .collect();
        let parsed = parse_targets(&at_limit.join(",")).expect("the limit itself is accepted");
        assert_eq!(parsed.as_slice(), at_limit.as_slice());

        let single = parse_targets("a:1").expect("one target parses");
        assert_eq!(single.as_slice(), ["a:1"]);
    }

    /// Proves lists with an empty element, a bad element or more than the limit are
    /// refused, and the message names the culprit.
    #[test]
    fn target_list_refusals() {
        for list in ["", ",", "a:1,", ",a:1", "a:1,,b:2"] {
            let error = parse_targets(list).expect_err("an empty element is refused");
            assert!(error.contains("empty"), "{list:?}: {error}");
        }
        let error = parse_targets("a:1,b").expect_err("an element without port is refused");
        assert!(error.contains("target 2"), "{error}");
        let error = parse_targets("a:1, b:2").expect_err("a space is refused");
        assert!(error.contains("target 2"), "{error}");

        let over_limit: Vec<String> = (0..=TARGETS_MAX).map(|n| format!("h{n}:1")).collect();
        let error = parse_targets(&over_limit.join(",")).expect_err("17 targets are refused");
        assert!(error.contains("at most 16"), "{error}");
        let parsed = BenchArgs::try_parse_from([
            "mimori-bench",
            "--target",
            &over_limit.join(","),
            "--op",
            "put",
        ]);
        assert!(parsed.is_err());
    }
}
