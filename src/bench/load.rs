//! The connection loops: keep-alive HTTP/1.1 connections, each running one request at a
//! time (a closed loop), either until a deadline ([`timed`]) or until every key has been
//! written once ([`sequential`]).
//!
//! Who talks to it: [`super::run`] opens the connections with [`Connection::open`] and
//! runs the phases; [`super::workload`] builds the requests and judges the responses.
//!
//! Invariants:
//! - A connection has at most one request in flight, so `connections` is exactly the
//!   concurrency the server sees, and each connection's latency histogram is its own
//!   (no lock or atomic on the request path; tallies merge once at the end).
//! - Every wait is bounded: connecting, each request, and the pause after a failure. A
//!   dead or hung server turns into counted errors, never into a hung benchmark.
//! - After a transport error or timeout the connection is dropped and reopened, because
//!   an HTTP/1.1 connection with a lost response cannot be reused. It reopens to its own
//!   target, so the spread of connections over targets holds for the whole run.

use super::report::Tally;
use super::workload::{Outcome, RequestKind, ValuePool, Workload};
use super::{BenchError, Target};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Bound on opening a TCP connection and completing the HTTP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one request, from sending it to the end of the response body. Far above
/// any healthy latency; reaching it means the server is stuck, not slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed reconnect or a refused write, so a down server is not hammered
/// with a busy loop that would also steal the CPU the server needs to come back.
const FAILURE_PAUSE: Duration = Duration::from_millis(100);
/// Attempts per key in a sequential load before the key is given up on.
const LOAD_ATTEMPTS_PER_KEY_MAX: u32 = 10;
/// Consecutive failed requests after which a loading connection stops: the server is
/// gone, and retrying a million keys one by one would take hours.
const LOAD_CONSECUTIVE_FAILURES_MAX: u32 = 100;
/// How often a sequential load reports progress on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// One keep-alive HTTP/1.1 connection to one target, reopened after failures.
pub struct Connection {
    /// Where the connection goes and what its requests name in `Host`; fixed for the
    /// connection's life.
    target: Target,
    /// `None` after a failure, until the next request reopens it.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// Opens a connection; used up front so connection setup is not part of the
    /// measured time, and so an unreachable target fails the run immediately.
    pub async fn open(target: &Target) -> Result<Connection, BenchError> {
        let sender = handshake(target.address).await?;
        Ok(Connection {
            target: target.clone(),
            sender: Some(sender),
        })
    }

    /// The address this connection sends to; tests check the spread with it.
    #[cfg(test)]
    pub fn address(&self) -> SocketAddr {
        self.target.address
    }

    /// The `Host` header of this connection's requests.
    fn host(&self) -> &HeaderValue {
        &self.target.host
    }

    /// Sends one request and counts its outcome in `tally`. Returns whether the
    /// operation succeeded (`Ok` or `NotFound`).
    async fn perform(
        &mut self,
        workload: &Workload,
        kind: RequestKind,
        request: Request<Full<Bytes>>,
        tally: &mut Tally,
    ) -> bool {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => match handshake(self.target.address).await {
                Ok(sender) => self.sender.insert(sender),
                Err(_) => {
                    tally.transport_errors_total += 1;
                    tokio::time::sleep(FAILURE_PAUSE).await;
                    return false;
                }
            },
        };
        let started = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, request)).await {
            Ok(Ok((status, body))) => match workload.judge(kind, status, &body) {
                Outcome::Ok => {
                    tally.record_latency(started.elapsed());
                    tally.ok_total += 1;
                    true
                }
                Outcome::NotFound => {
                    tally.record_latency(started.elapsed());
                    tally.not_found_total += 1;
                    true
                }
                Outcome::Error(status) => {
                    *tally.errors_by_status.entry(status.as_u16()).or_insert(0) += 1;
                    false
                }
            },
            Ok(Err(_)) => {
                tally.transport_errors_total += 1;
                self.sender = None;
                false
            }
            Err(_) => {
                tally.timeouts_total += 1;
                self.sender = None;
                false
            }
        }
    }
}

/// Opens TCP with `TCP_NODELAY` (a request is one small write; Nagle would hold it
/// back waiting for the previous response's ACK) and runs the HTTP/1.1 handshake.
async fn handshake(address: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BenchError> {
    let connect = async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| BenchError::Connect { address, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| BenchError::Connect { address, source })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| BenchError::Handshake { address, source })?;
        // The connection task drives the socket; its errors also surface on the sender,
        // where they are counted, so the task's own result carries nothing new.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| BenchError::ConnectTimeout { address })?
}

/// One request and its whole response body; reading the body to the end is what
/// lets the connection carry the next request.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Runs every connection in a closed loop of random requests until `duration` has
/// passed. Returns the connections (for reuse), the merged tally and the time from
/// the start to the last response.
pub async fn timed(
    connections: Vec<Connection>,
    workload: Arc<Workload>,
    duration: Duration,
    seed: u64,
) -> (Vec<Connection>, Tally, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for (index, mut connection) in connections.into_iter().enumerate() {
        let workload = Arc::clone(&workload);
        let seed = seed.wrapping_add(index as u64);
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let values = ValuePool::new(workload.value_bytes, &mut rng);
            let mut tally = Tally::new();
            while Instant::now() < deadline {
                let kind = workload.next_kind(&mut rng);
                let key_index = workload.next_key(&mut rng);
                let request = match kind {
                    RequestKind::Put => {
                        workload.put_request(connection.host(), key_index, values.next(&mut rng))
                    }
                    RequestKind::Get => workload.get_request(connection.host(), key_index),
                };
                connection
                    .perform(&workload, kind, request, &mut tally)
                    .await;
            }
            (connection, tally)
        });
    }
    let (connections, tally) = join_all(tasks).await;
    (connections, tally, started.elapsed())
}

/// Writes every key of `0..workload.keys` once, spread over the connections, retrying
/// refused writes so the key space ends up complete. Returns like [`timed`].
pub async fn sequential(
    connections: Vec<Connection>,
    workload: Arc<Workload>,
    seed: u64,
) -> (Vec<Connection>, Tally, Duration) {
    let started = Instant::now();
    // Connections claim the next unwritten key from one counter, so fast connections
    // take more keys and no connection idles while others still have work.
    let next_key = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(report_progress(Arc::clone(&next_key), workload.keys));
    let mut tasks = JoinSet::new();
    for (index, mut connection) in connections.into_iter().enumerate() {
        let workload = Arc::clone(&workload);
        let next_key = Arc::clone(&next_key);
        let seed = seed.wrapping_add(index as u64);
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let values = ValuePool::new(workload.value_bytes, &mut rng);
            let mut tally = Tally::new();
            let mut consecutive_failures = 0u32;
            'keys: loop {
                let key_index = next_key.fetch_add(1, Ordering::Relaxed);
                if key_index >= workload.keys {
                    break;
                }
                for _ in 0..LOAD_ATTEMPTS_PER_KEY_MAX {
                    let request =
                        workload.put_request(connection.host(), key_index, values.next(&mut rng));
                    if connection
                        .perform(&workload, RequestKind::Put, request, &mut tally)
                        .await
                    {
                        consecutive_failures = 0;
                        continue 'keys;
                    }
                    consecutive_failures += 1;
                    if consecutive_failures >= LOAD_CONSECUTIVE_FAILURES_MAX {
                        eprintln!(
                            "giving up on a connection after {consecutive_failures} failed writes in a row"
                        );
                        break 'keys;
                    }
                    // Refusals are mostly 503 `overloaded`; retrying at once would just
                    // be refused again.
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
            (connection, tally)
        });
    }
    let (connections, tally) = join_all(tasks).await;
    progress.abort();
    (connections, tally, started.elapsed())
}

/// Prints how many keys have been claimed, every [`PROGRESS_INTERVAL`], until aborted;
/// a million-key load takes minutes and should not look hung.
async fn report_progress(next_key: Arc<AtomicU64>, keys: u64) {
    let started = Instant::now();
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    // The first tick completes immediately; skip it so the first line has news.
    interval.tick().await;
    loop {
        interval.tick().await;
        let claimed = next_key.load(Ordering::Relaxed).min(keys);
        eprintln!(
            "loading: {claimed} of {keys} keys after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Waits for every connection task and merges their tallies.
async fn join_all(mut tasks: JoinSet<(Connection, Tally)>) -> (Vec<Connection>, Tally) {
    let mut connections = Vec::with_capacity(tasks.len());
    let mut merged = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((connection, tally)) => {
                merged.merge(&tally);
                connections.push(connection);
            }
            // A panic in a loop is a bug in this tool; surface it with its message.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    (connections, merged)
}
