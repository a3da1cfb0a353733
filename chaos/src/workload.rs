//! The client workload: concurrent clients, each running one operation at a time
//! against the gateway of a random node, recording every operation in the history.
//!
//! Operations, on register keys: linearizable reads, writes of fresh values, and
//! compare-and-sets (`If-Match` with the revision this client last saw the key at);
//! plus appends: create-only writes (`If-None-Match: *`) of fresh keys under
//! [`APPEND_PREFIX`]. Register keys are retired after [`OPERATIONS_PER_KEY_MAX`]
//! operations and replaced by fresh ones, which bounds each key's history and so
//! the linearizability search.
//!
//! Outcomes (see `history`): a refused connection is `Failed` (nothing was sent), a
//! 2xx, 404 or 412 is a definite answer, another 4xx is `Failed`, and a 5xx, a
//! timeout or a connection lost after sending is `Unknown`.

use crate::history::{Answer, Append, Call, History, Operation, Outcome, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Prefix of the register keys.
pub const REGISTER_PREFIX: &str = "chaos/register/";
/// Prefix of the append keys.
pub const APPEND_PREFIX: &str = "chaos/append/";
/// Operations on one register key before it is replaced by a fresh one.
pub const OPERATIONS_PER_KEY_MAX: u64 = 150;
/// Pause after an operation that could not reach its node, so a client does not
/// spin against a dead node.
const FAILURE_PAUSE: Duration = Duration::from_millis(20);

/// How the workload runs.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub clients: u32,
    /// Register keys in use at once.
    pub keys: u32,
    /// How long a client waits for an answer before the outcome is unknown.
    pub request_timeout: Duration,
    pub seed: u64,
    /// Read with `consistency=stale` (the local replica, no ReadIndex). Not
    /// linearizable by design: a run with it shows the checker catching stale
    /// reads.
    pub stale_reads: bool,
}

/// The register keys in use: `keys` slots, each with its current key and how many
/// operations it has had.
struct KeySpace {
    slots: Vec<Mutex<(u64, u64)>>,
    next_generation: AtomicU64,
}

impl KeySpace {
    fn new(keys: u32) -> KeySpace {
        KeySpace {
            slots: (0..keys.max(1))
                .map(|slot| Mutex::new((u64::from(slot), 0)))
                .collect(),
            next_generation: AtomicU64::new(u64::from(keys.max(1))),
        }
    }

    /// The key of slot `slot` for one more operation.
    fn take(&self, slot: usize) -> String {
        let mut entry = self.slots[slot]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entry.1 >= OPERATIONS_PER_KEY_MAX {
            *entry = (self.next_generation.fetch_add(1, Ordering::Relaxed), 0);
        }
        entry.1 += 1;
        register_key(entry.0)
    }
}

/// The name of register key number `number`.
pub fn register_key(number: u64) -> String {
    format!("{REGISTER_PREFIX}{number:06}")
}

/// The gateways the clients may use, kept current by the runner as nodes come
/// and go.
/// Each is a node id and its gateway's base URL.
pub type Gateways = Arc<RwLock<Vec<(u64, String)>>>;

/// Runs the workload until `stop` is set; every operation lands in `history`.
pub async fn run(
    options: WorkloadOptions,
    gateways: Gateways,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let keys = Arc::new(KeySpace::new(options.keys));
    let http = reqwest::Client::builder()
        .timeout(options.request_timeout)
        .pool_max_idle_per_host(4)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let mut clients = Vec::new();
    for client in 0..options.clients {
        let client = Client {
            id: client,
            rng: StdRng::seed_from_u64(
                options.seed ^ (u64::from(client) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            http: http.clone(),
            gateways: Arc::clone(&gateways),
            history: Arc::clone(&history),
            keys: Arc::clone(&keys),
            seen: HashMap::new(),
            next_value: 0,
            stale_reads: options.stale_reads,
        };
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(client.run(stop)));
    }
    for client in clients {
        let _ = client.await;
    }
}

struct Client {
    id: u32,
    rng: StdRng,
    http: reqwest::Client,
    gateways: Gateways,
    history: Arc<History>,
    keys: Arc<KeySpace>,
    /// The last (value, revision) this client saw each key at.
    seen: HashMap<String, (Option<Value>, Option<u64>)>,
    next_value: u64,
    stale_reads: bool,
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let Some((node, gateway)) = self.pick_gateway() else {
                tokio::time::sleep(FAILURE_PAUSE).await;
                continue;
            };
            let roll = self.rng.gen_range(0..100);
            let slot = self.rng.gen_range(0..self.keys.slots.len());
            let outcome = if roll < 15 {
                self.append(node, &gateway).await
            } else {
                let key = self.keys.take(slot);
                // A compare-and-set needs a state this client saw: a value with its
                // revision, or the key absent.
                let known = match self.seen.get(&key) {
                    Some((Some(value), Some(_))) => Some(Some(*value)),
                    Some((None, None)) => Some(None),
                    _ => None,
                };
                let call = match (roll, known) {
                    (55..=74, _) => Call::Write {
                        value: self.fresh_value(),
                    },
                    (75..=99, Some(expected)) => Call::CompareAndSet {
                        expected,
                        value: self.fresh_value(),
                    },
                    _ => Call::Read,
                };
                self.register(node, &gateway, key, call).await
            };
            if outcome == Outcome::Failed {
                tokio::time::sleep(FAILURE_PAUSE).await;
            }
        }
    }

    fn pick_gateway(&mut self) -> Option<(u64, String)> {
        let gateways = self.gateways.read().ok()?;
        if gateways.is_empty() {
            return None;
        }
        Some(gateways[self.rng.gen_range(0..gateways.len())].clone())
    }

    /// A value no client ever wrote before.
    fn fresh_value(&mut self) -> Value {
        self.next_value += 1;
        (u64::from(self.id) + 1) << 40 | self.next_value
    }

    async fn register(&mut self, node: u64, gateway: &str, key: String, call: Call) -> Outcome {
        let invoked_ns = self.history.now_ns();
        let outcome = match call {
            Call::Read if self.stale_reads => {
                read_url(
                    &self.http,
                    &format!("{}?consistency=stale", key_url(gateway, &key)),
                )
                .await
            }
            Call::Read => read(&self.http, gateway, &key).await,
            Call::Write { value } => write(&self.http, gateway, &key, value, None).await,
            Call::CompareAndSet { value, .. } => {
                let revision = self.seen.get(&key).and_then(|(_, revision)| *revision);
                let condition = match revision {
                    Some(revision) => Condition::RevisionIs(revision),
                    None => Condition::Absent,
                };
                write(&self.http, gateway, &key, value, Some(condition)).await
            }
        };
        let completed_ns = self.history.now_ns();
        match (call, outcome) {
            (Call::Read, Outcome::Ok(Answer::Read { value, revision })) => {
                self.seen.insert(key.clone(), (value, revision));
            }
            (
                Call::Write { value } | Call::CompareAndSet { value, .. },
                Outcome::Ok(Answer::Written { revision }),
            ) => {
                self.seen.insert(key.clone(), (Some(value), Some(revision)));
            }
            // After an unknown write the client no longer knows the key's state.
            (_, Outcome::Unknown) => {
                self.seen.remove(&key);
            }
            _ => {}
        }
        self.history.record(Operation {
            client: self.id,
            node,
            key,
            call,
            outcome,
            invoked_ns,
            completed_ns,
        });
        outcome
    }

    async fn append(&mut self, node: u64, gateway: &str) -> Outcome {
        let value = self.fresh_value();
        let key = format!("{APPEND_PREFIX}{:016x}", value);
        let outcome = write(&self.http, gateway, &key, value, Some(Condition::Absent)).await;
        // A create-only write refused with 412 did not happen.
        let outcome = match outcome {
            Outcome::Ok(Answer::Refused) => Outcome::Failed,
            other => other,
        };
        self.history.record_append(Append {
            client: self.id,
            node,
            key,
            value,
            outcome,
        });
        outcome
    }
}

/// The precondition of a conditional write.
#[derive(Clone, Copy, Debug)]
enum Condition {
    RevisionIs(u64),
    Absent,
}

/// The URL of `key` on `gateway` (keys are plain ASCII with `/`, which the
/// gateway takes as part of the key).
fn key_url(gateway: &str, key: &str) -> String {
    format!("{gateway}/v1/kv/{key}")
}

/// Classifies a request that got no HTTP answer.
fn no_answer(error: &reqwest::Error) -> Outcome {
    if error.is_connect() {
        Outcome::Failed
    } else {
        Outcome::Unknown
    }
}

/// A linearizable read of `key`.
pub async fn read(http: &reqwest::Client, gateway: &str, key: &str) -> Outcome {
    read_url(http, &key_url(gateway, key)).await
}

async fn read_url(http: &reqwest::Client, url: &str) -> Outcome {
    let response = match http.get(url).send().await {
        Ok(response) => response,
        Err(error) => return no_answer(&error),
    };
    let status = response.status().as_u16();
    match status {
        200 => {
            let revision = response
                .headers()
                .get("etag")
                .and_then(|tag| tag.to_str().ok())
                .and_then(|tag| tag.trim_matches('"').parse::<u64>().ok());
            let Ok(body) = response.bytes().await else {
                return Outcome::Unknown;
            };
            match std::str::from_utf8(&body)
                .ok()
                .and_then(|text| text.parse::<Value>().ok())
            {
                Some(value) => Outcome::Ok(Answer::Read {
                    value: Some(value),
                    revision,
                }),
                // Not a value any client wrote: an impossible read, kept so the
                // checker fails on it.
                None => Outcome::Ok(Answer::Read {
                    value: Some(Value::MAX),
                    revision,
                }),
            }
        }
        404 => Outcome::Ok(Answer::Read {
            value: None,
            revision: None,
        }),
        400..=499 => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

async fn write(
    http: &reqwest::Client,
    gateway: &str,
    key: &str,
    value: Value,
    condition: Option<Condition>,
) -> Outcome {
    let mut request = http.put(key_url(gateway, key)).body(value.to_string());
    match condition {
        Some(Condition::RevisionIs(revision)) => {
            request = request.header("if-match", format!("\"{revision}\""));
        }
        Some(Condition::Absent) => request = request.header("if-none-match", "*"),
        None => {}
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return no_answer(&error),
    };
    match response.status().as_u16() {
        200..=299 => {
            let Ok(body) = response.bytes().await else {
                return Outcome::Unknown;
            };
            let revision = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|body| body["revision"].as_u64());
            match revision {
                Some(revision) => Outcome::Ok(Answer::Written { revision }),
                None => Outcome::Unknown,
            }
        }
        412 => Outcome::Ok(Answer::Refused),
        400..=499 => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}
