//! mimori-bench's command line: options, their limits and help text.
//!
//! Who talks to it: the `mimori-bench` binary parses [`BenchArgs`] and turns them into
//! [`super::BenchOptions`] with [`BenchArgs::into_options`]. Parsing never touches the
//! network.
//!
//! Invariant: every numeric option has an upper bound, so a typo cannot ask for a
//! million connections or a terabyte value.

use super::workload::{Operation, Protocol, Workload};
use super::BenchOptions;
use clap::{Parser, ValueEnum};
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  mimori-bench --target 127.0.0.1:7070 --op put --connections 64
  mimori-bench --target 127.0.0.1:7070 --op get --keys 100000 --preload
  mimori-bench --target 127.0.0.1:7070 --op load --keys 1000000 -o json
  mimori-bench --target 127.0.0.1:2379 --protocol etcd --op mixed --read-percent 90

Requests:
  mimori  PUT /v1/kv/{prefix}{n} (raw value bytes), GET /v1/kv/{prefix}{n}
  etcd    POST /v3/kv/put {\"key\",\"value\"} and POST /v3/kv/range {\"key\"} (base64,
          linearizable reads), through etcd's HTTP/JSON gateway

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
    /// Server to load, as host:port (the HTTP gateway, not the admin port).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_target)]
    pub target: String,

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
            self.target.clone(),
        );
        BenchOptions {
            target: self.target,
            workload,
            connections: self.connections,
            duration: Duration::from_secs(self.duration_seconds),
            preload: self.preload,
            seed: self.seed,
        }
    }
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
}
