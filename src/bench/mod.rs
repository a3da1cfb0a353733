//! `mimori-bench`: a closed-loop HTTP load generator for Mimori's gateway and, for
//! comparison, etcd's v3 HTTP/JSON gateway. Performance targets live in benchmarks
//! run with it (`scripts/bench`), never in tests.
//!
//! Layout: [`cli`] parses the command line, [`workload`] shapes requests and judges
//! responses, `load` runs the connection loops, [`report`] merges the counters and
//! renders them. [`run`] strings the phases together: resolve every target, open every
//! connection (spread round-robin over the targets), optionally preload every key, then
//! the measured phase.
//!
//! Who talks to it: the thin `mimori-bench` binary; nothing in a node depends on it.
//!
//! Invariants: the tool is lean because it shares the machine with the server it
//! measures (one runtime thread by default, no allocation-heavy work per request, no
//! shared state on the request path); connection setup and the preload are never part
//! of the measured phase; connection `i` of `n` targets always talks to target `i % n`.

pub mod cli;
mod load;
pub mod report;
pub mod workload;

use hyper::header::HeaderValue;
use load::Connection;
use report::{Report, RunLabel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use workload::{Operation, Workload};

/// Everything a run needs, as parsed from the command line.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// `host:port` of every server, as given: at least one; connections are spread
    /// over them round-robin.
    pub targets: Vec<String>,
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

/// One server of a run, resolved before anything is sent.
#[derive(Clone, Debug)]
pub struct Target {
    /// Where its connections go. Resolved once, so a reconnect never waits on a name
    /// lookup and every connection to the target uses the same address.
    pub address: SocketAddr,
    /// The `Host` header of every request to it: the target as given.
    pub host: HeaderValue,
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
    #[error("{target} is not a valid Host header")]
    InvalidHost {
        target: String,
        source: hyper::header::InvalidHeaderValue,
    },
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
    assert!(
        !options.targets.is_empty(),
        "a run needs at least one target"
    );
    let targets = resolve_all(&options.targets).await?;
    if targets.len() > options.connections as usize {
        eprintln!(
            "{} targets but {} connections: the targets after the first {} get no load",
            targets.len(),
            options.connections,
            options.connections
        );
    }
    let mut connections = open_connections(&targets, options.connections).await?;
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
        target: options.targets.join(","),
        protocol: workload.protocol,
        operation: workload.operation,
        connections: options.connections,
        keys: workload.keys,
        value_bytes: workload.value_bytes,
    };
    Ok(Report::new(label, &tally, elapsed))
}

/// Resolves every target, in order, before anything is sent: a name that does not
/// resolve should fail the run before any load reaches the others.
async fn resolve_all(targets: &[String]) -> Result<Vec<Target>, BenchError> {
    let mut resolved = Vec::with_capacity(targets.len());
    for target in targets {
        let address = resolve(target).await?;
        let host = HeaderValue::from_str(target).map_err(|source| BenchError::InvalidHost {
            target: target.clone(),
            source,
        })?;
        resolved.push(Target { address, host });
    }
    assert_eq!(resolved.len(), targets.len());
    Ok(resolved)
}

/// The target of connection number `connection_index` among `target_count` targets:
/// round-robin, so the counts per target differ by at most one and the first targets
/// get the extra connections.
fn target_index(connection_index: u32, target_count: usize) -> usize {
    assert!(target_count > 0, "round-robin needs at least one target");
    connection_index as usize % target_count
}

/// Opens `count` connections one after another, connection `i` to target `i % n`; the
/// first that cannot be opened fails the run with an error naming its address.
async fn open_connections(targets: &[Target], count: u32) -> Result<Vec<Connection>, BenchError> {
    let mut connections = Vec::with_capacity(count as usize);
    for connection_index in 0..count {
        let target = &targets[target_index(connection_index, targets.len())];
        connections.push(Connection::open(target).await?);
    }
    Ok(connections)
}

/// Resolves one target to its first address.
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Proves the assignment is `i % n`: for every target count up to the limit, each
    /// connection lands on `i % n`, and per-target counts differ by at most one.
    #[test]
    fn round_robin_assignment() {
        assert_eq!(
            (0..7)
                .map(|index| target_index(index, 3))
                .collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2, 0]
        );
        for target_count in 1..=cli::TARGETS_MAX {
            for connections in [1u32, 16, 64, 256] {
                let mut per_target = vec![0u32; target_count];
                for index in 0..connections {
                    let target = target_index(index, target_count);
                    assert_eq!(target, index as usize % target_count);
                    per_target[target] += 1;
                }
                let most = per_target.iter().max().copied().unwrap_or(0);
                let fewest = per_target.iter().min().copied().unwrap_or(0);
                assert!(most - fewest <= 1, "{per_target:?}");
                assert_eq!(per_target.iter().sum::<u32>(), connections);
            }
        }
    }

    /// Proves the wiring, not just the arithmetic: with three listening sockets as
    /// targets, seven connections are opened in the order 0, 1, 2, 0, 1, 2, 0, so the
    /// listeners accept 3, 2 and 2 connections and nothing more. The listeners never
    /// answer; the HTTP/1.1 handshake of the client needs no bytes from the server.
    #[tokio::test]
    async fn connections_spread_round_robin() {
        let mut listeners = Vec::new();
        let mut names = Vec::new();
        for _ in 0..3 {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            let address = listener.local_addr().expect("bound socket has an address");
            names.push(address.to_string());
            listeners.push(listener);
        }
        let targets = resolve_all(&names).await.expect("IP literals resolve");
        for (target, name) in targets.iter().zip(&names) {
            assert_eq!(target.address.to_string(), *name);
            assert_eq!(target.host, name.as_str());
        }

        let connections = open_connections(&targets, 7)
            .await
            .expect("listeners accept connections");
        let addresses: Vec<SocketAddr> = connections.iter().map(Connection::address).collect();
        let expected: Vec<SocketAddr> = [0, 1, 2, 0, 1, 2, 0]
            .iter()
            .map(|&index| targets[index].address)
            .collect();
        assert_eq!(addresses, expected);

        for (listener, expected_count) in listeners.iter().zip([3, 2, 2]) {
            for _ in 0..expected_count {
                tokio::time::timeout(Duration::from_secs(5), listener.accept())
                    .await
                    .expect("an opened connection is waiting to be accepted")
                    .expect("accept succeeds");
            }
            let extra = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
            assert!(
                extra.is_err(),
                "a listener got more connections than its share"
            );
        }
    }

    /// Proves a run whose second target has no listener fails before any request is
    /// sent, with an error naming that target's address rather than a run that
    /// silently loads only the first.
    #[tokio::test]
    async fn unreachable_target_fails_up_front() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let good = listener.local_addr().expect("bound socket has an address");
        // A port that was free a moment ago: bind, read, drop.
        let closed = {
            let probe = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            probe.local_addr().expect("bound socket has an address")
        };
        let targets = resolve_all(&[good.to_string(), closed.to_string()])
            .await
            .expect("IP literals resolve");
        match open_connections(&targets, 2).await {
            Err(BenchError::Connect { address, .. }) => assert_eq!(address, closed),
            Err(other) => panic!("expected a connect error, got {other}"),
            Ok(_) => panic!("a closed port must fail the run"),
        }
    }
}
