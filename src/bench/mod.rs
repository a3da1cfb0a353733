//! `mimori-bench`: a closed-loop HTTP load generator for Mimori's gateway and, for
//! comparison, etcd's v3 HTTP/JSON gateway. Performance targets live in benchmarks
//! run with it (`scripts/bench`), never in tests.
//!
//! Layout: [`cli`] parses the command line, [`workload`] shapes requests and judges
//! responses, `load` runs the connection loops, [`report`] merges the counters and
//! renders them. [`run`] strings the phases together: resolve the target, open every
//! connection, optionally preload every key, then the measured phase.
//!
//! Who talks to it: the thin `mimori-bench` binary; nothing in a node depends on it.
//!
//! Invariants: the tool is lean because it shares the machine with the server it
//! measures (one runtime thread by default, no allocation-heavy work per request, no
//! shared state on the request path); connection setup and the preload are never part
//! of the measured phase.

pub mod cli;
mod load;
pub mod report;
pub mod workload;

use load::Connection;
use report::{Report, RunLabel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use workload::{Operation, Workload};

/// Everything a run needs, as parsed from the command line.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// `host:port` of the server, as given.
    pub target: String,
    pub workload: Workload,
    /// Concurrent connections, each with one request in flight.
    pub connections: u32,
    /// Length of the measured phase (unused by [`Operation::Load`]).
    pub duration: Duration,
    /// Write every key once before the measured phase.
    pub preload: bool,
    /// Seed of the per-connection key and value generators.
    pub seed: u64,
}

/// Why a run could not start. Failures during a run are counted, not returned.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot resolve {target}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
    #[error("{target} resolves to no address")]
    NoAddress { target: String },
    #[error("cannot connect to {address}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {address} timed out")]
    ConnectTimeout { address: SocketAddr },
    #[error("HTTP/1.1 handshake with {address} failed")]
    Handshake {
        address: SocketAddr,
        source: hyper::Error,
    },
}

/// Runs a benchmark and returns the report of its measured phase. Progress and the
/// preload's summary go to stderr, so stdout holds only what the caller prints.
pub async fn run(options: BenchOptions) -> Result<Report, BenchError> {
    assert!(
        options.connections > 0,
        "a run needs at least one connection"
    );
    let address = resolve(&options.target).await?;
    let mut connections = Vec::with_capacity(options.connections as usize);
    for _ in 0..options.connections {
        connections.push(Connection::open(address).await?);
    }
    let workload = Arc::new(options.workload);

    if options.preload && workload.operation != Operation::Load {
        let (reused, tally, elapsed) =
            load::sequential(connections, Arc::clone(&workload), options.seed).await;
        connections = reused;
        eprintln!(
            "preloaded {} keys in {:.1} s ({} errors)",
            tally.ok_total,
            elapsed.as_secs_f64(),
            tally.errors_total()
        );
    }

    // Each phase gets its own seed offset so the preload's values are not replayed.
    let seed = options.seed.wrapping_add(u64::from(options.connections));
    let (_connections, tally, elapsed) = match workload.operation {
        Operation::Load => load::sequential(connections, Arc::clone(&workload), seed).await,
        Operation::Put | Operation::Get | Operation::Mixed => {
            load::timed(connections, Arc::clone(&workload), options.duration, seed).await
        }
    };
    let label = RunLabel {
        target: options.target,
        protocol: workload.protocol,
        operation: workload.operation,
        connections: options.connections,
        keys: workload.keys,
        value_bytes: workload.value_bytes,
    };
    Ok(Report::new(label, &tally, elapsed))
}

/// Resolves the target once, up front: every connection goes to the same address, and
/// a name that does not resolve should fail before anything else happens.
async fn resolve(target: &str) -> Result<SocketAddr, BenchError> {
    let mut addresses =
        tokio::net::lookup_host(target)
            .await
            .map_err(|source| BenchError::Resolve {
                target: target.to_string(),
                source,
            })?;
    addresses.next().ok_or_else(|| BenchError::NoAddress {
        target: target.to_string(),
    })
}
