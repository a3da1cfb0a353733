//! What one benchmark request looks like: key naming, value generation, the HTTP
//! request of each protocol and how a response is judged.
//!
//! Who talks to it: [`super::load`] asks a [`Workload`] for requests and hands the
//! responses back to [`Workload::judge`]. Nothing here does I/O or reads a clock, so the
//! request shapes can be tested without a server.
//!
//! Invariants: key `n` is always the bytes of `{key_prefix}{n}` (decimal `n`), in both
//! protocols, so a Mimori run and an etcd run touch the same key space; every request
//! carries a `Host` header, which HTTP/1.1 requires and Go servers (the etcd gateway)
//! enforce. The header names the server the request goes to, so it is given per
//! request by the connection, not fixed in the workload: a run may load several servers.

use crate::client::KEY_PATH_KEEP as PATH_KEEP;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use percent_encoding::utf8_percent_encode;
use rand::Rng;
use serde::Serialize;

/// The HTTP API the target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Mimori's gateway: `PUT`/`GET /v1/kv/{key}` with raw value bytes.
    Mimori,
    /// etcd's v3 HTTP/JSON gateway: `POST /v3/kv/put` and `/v3/kv/range` (linearizable).
    Etcd,
    /// Mimori's documents: writes `PUT /v1/docs/{prefix}/{n}` with
    /// `{"group": n / DOCUMENTS_PER_GROUP, "n": n, "pad": ".."}`; reads are the
    /// query `POST /v1/docs/{prefix}/_query` with `{"filter": {"group": g}}` for a
    /// random key's group, so each returns `DOCUMENTS_PER_GROUP` documents (an
    /// indexed equality when the collection indexes `group`).
    Documents,
}

/// Documents sharing one `group` value under `--protocol documents`: what one
/// benchmark query returns.
pub const DOCUMENTS_PER_GROUP: u64 = 100;

/// What the timed phase does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Writes to keys chosen uniformly at random.
    Put,
    /// Reads of keys chosen uniformly at random.
    Get,
    /// Reads and writes mixed by `--read-percent`, keys chosen uniformly at random.
    Mixed,
    /// Writes every key of `0..keys` exactly once, then stops; the duration is ignored.
    /// Used to fill a node to a known size (e.g. to measure memory per key).
    Load,
}

/// The kind of one request, decided per request for `mixed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Put,
    Get,
}

/// How one response is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The operation did what it was asked; its latency is recorded.
    Ok,
    /// A read of a key that does not exist. An expected outcome when keys were not
    /// preloaded, so it is counted apart from errors, and its latency is recorded.
    NotFound,
    /// Any other status, counted by status code; its latency is not recorded, because
    /// fast refusals (503 `overloaded`) would make the server look faster than it is.
    Error(StatusCode),
}

/// Everything needed to build requests, shared read-only by all connections.
#[derive(Clone, Debug)]
pub struct Workload {
    pub protocol: Protocol,
    pub operation: Operation,
    /// Size of the key space; random keys are drawn from `0..keys`.
    pub keys: u64,
    /// Prepended to the decimal key number; lets runs use disjoint key spaces.
    pub key_prefix: String,
    /// Size of every written value, in bytes.
    pub value_bytes: u32,
    /// Share of reads in `mixed`, 0 to 100.
    pub read_percent: u8,
    /// `key_prefix` percent-encoded once, so the per-request cost is one number.
    prefix_in_path: String,
}

impl Workload {
    /// Builds a workload; `read_percent` above 100 is clamped to 100.
    pub fn new(
        protocol: Protocol,
        operation: Operation,
        keys: u64,
        key_prefix: String,
        value_bytes: u32,
        read_percent: u8,
    ) -> Workload {
        assert!(keys > 0, "a workload needs at least one key");
        let prefix_in_path = utf8_percent_encode(&key_prefix, PATH_KEEP).to_string();
        Workload {
            protocol,
            operation,
            keys,
            key_prefix,
            value_bytes,
            read_percent: read_percent.min(100),
            prefix_in_path,
        }
    }

    /// Key number `index`: the prefix followed by the number in decimal.
    pub fn key(&self, index: u64) -> String {
        format!("{}{index}", self.key_prefix)
    }

    /// Picks the kind of the next timed request. `Load` only writes.
    pub fn next_kind(&self, rng: &mut impl Rng) -> RequestKind {
        match self.operation {
            Operation::Put | Operation::Load => RequestKind::Put,
            Operation::Get => RequestKind::Get,
            Operation::Mixed => {
                if rng.gen_range(0..100u8) < self.read_percent {
                    RequestKind::Get
                } else {
                    RequestKind::Put
                }
            }
        }
    }

    /// Picks a key uniformly from `0..keys`.
    pub fn next_key(&self, rng: &mut impl Rng) -> u64 {
        rng.gen_range(0..self.keys)
    }

    /// The request that writes `value` under key number `index`, to the server whose
    /// `host:port` is `host`.
    pub fn put_request(
        &self,
        host: &HeaderValue,
        index: u64,
        value: Bytes,
    ) -> Request<Full<Bytes>> {
        assert_eq!(value.len() as u64, u64::from(self.value_bytes));
        match self.protocol {
            Protocol::Mimori => self.request(
                host,
                Method::PUT,
                format!("/v1/kv/{}{index}", self.prefix_in_path),
                "application/octet-stream",
                value,
            ),
            Protocol::Documents => {
                // JSON needs text: the random bytes become letters.
                let pad: String = value
                    .iter()
                    .map(|byte| char::from(b'a' + byte % 26))
                    .collect();
                let body = format!(
                    r#"{{"group":{},"n":{index},"pad":"{pad}"}}"#,
                    index / DOCUMENTS_PER_GROUP
                );
                self.request(
                    host,
                    Method::PUT,
                    format!("/v1/docs/{}/{index}", self.prefix_in_path),
                    "application/json",
                    Bytes::from(body),
                )
            }
            Protocol::Etcd => {
                let body = format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    BASE64.encode(self.key(index)),
                    BASE64.encode(&value)
                );
                self.request(
                    host,
                    Method::POST,
                    "/v3/kv/put".to_string(),
                    "application/json",
                    Bytes::from(body),
                )
            }
        }
    }

    /// The request that reads key number `index` from the server whose `host:port` is
    /// `host`; etcd ranges are linearizable unless `serializable` is set, so both
    /// protocols read the latest committed value.
    pub fn get_request(&self, host: &HeaderValue, index: u64) -> Request<Full<Bytes>> {
        match self.protocol {
            Protocol::Mimori => self.request(
                host,
                Method::GET,
                format!("/v1/kv/{}{index}", self.prefix_in_path),
                "application/octet-stream",
                Bytes::new(),
            ),
            Protocol::Documents => {
                let body = format!(
                    r#"{{"filter":{{"group":{}}},"limit":{DOCUMENTS_PER_GROUP}}}"#,
                    index / DOCUMENTS_PER_GROUP
                );
                self.request(
                    host,
                    Method::POST,
                    format!("/v1/docs/{}/_query", self.prefix_in_path),
                    "application/json",
                    Bytes::from(body),
                )
            }
            Protocol::Etcd => {
                let body = format!(r#"{{"key":"{}"}}"#, BASE64.encode(self.key(index)));
                self.request(
                    host,
                    Method::POST,
                    "/v3/kv/range".to_string(),
                    "application/json",
                    Bytes::from(body),
                )
            }
        }
    }

    /// Judges a response. etcd answers a range over a missing key with 200 and no
    /// `kvs` field (its JSON omits empty fields), and a document query that matched
    /// nothing answers 200 with no documents, so those cases are told apart by body.
    pub fn judge(&self, kind: RequestKind, status: StatusCode, body: &[u8]) -> Outcome {
        match (self.protocol, kind, status) {
            (_, _, StatusCode::OK) => {
                let missed = kind == RequestKind::Get
                    && match self.protocol {
                        Protocol::Etcd => !contains(body, br#""kvs""#),
                        Protocol::Documents => contains(body, br#""documents":[]"#),
                        Protocol::Mimori => false,
                    };
                if missed {
                    Outcome::NotFound
                } else {
                    Outcome::Ok
                }
            }
            (Protocol::Mimori, RequestKind::Get, StatusCode::NOT_FOUND) => Outcome::NotFound,
            (_, _, status) => Outcome::Error(status),
        }
    }

    fn request(
        &self,
        host: &HeaderValue,
        method: Method,
        path: String,
        content_type: &'static str,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, host.clone());
        // A GET without a body needs no content type; sending one would only cost bytes.
        let builder = if method == Method::GET {
            builder
        } else {
            builder.header(CONTENT_TYPE, content_type)
        };
        // The path is built from a percent-encoded prefix and a number, and the host is
        // an already valid header value, so this cannot fail.
        builder
            .body(Full::new(body))
            .expect("benchmark requests are built from validated parts")
    }
}

/// Random value bytes without a fresh allocation per request: a buffer twice the value
/// size filled once, from which each write takes a window at a random offset. Values
/// still differ between writes, which keeps any compression or deduplication honest.
#[derive(Clone, Debug)]
pub struct ValuePool {
    buffer: Bytes,
    value_bytes: usize,
}

impl ValuePool {
    /// Fills a pool for values of `value_bytes` bytes from `rng`.
    pub fn new(value_bytes: u32, rng: &mut impl Rng) -> ValuePool {
        let value_bytes = value_bytes as usize;
        let mut buffer = vec![0u8; value_bytes * 2 + 1];
        rng.fill(buffer.as_mut_slice());
        ValuePool {
            buffer: Bytes::from(buffer),
            value_bytes,
        }
    }

    /// A value of exactly `value_bytes` bytes; a reference-counted view, not a copy.
    pub fn next(&self, rng: &mut impl Rng) -> Bytes {
        let offset = rng.gen_range(0..=self.buffer.len() - self.value_bytes);
        self.buffer.slice(offset..offset + self.value_bytes)
    }
}

/// Whether `needle` occurs in `haystack`; responses are small, so a window scan is fine.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn workload(protocol: Protocol) -> Workload {
        Workload::new(
            protocol,
            Operation::Mixed,
            10,
            "bench key/".to_string(),
            4,
            50,
        )
    }

    fn host() -> HeaderValue {
        HeaderValue::from_static("127.0.0.1:7070")
    }

    async fn body_of(request: Request<Full<Bytes>>) -> Bytes {
        request
            .into_body()
            .collect()
            .await
            .expect("a Full body cannot fail")
            .to_bytes()
    }

    /// Proves the Mimori request shape: the prefix is percent-encoded except `/`, the
    /// body is the raw value, and the Host header is set.
    #[tokio::test]
    async fn mimori_requests() {
        let workload = workload(Protocol::Mimori);
        let put = workload.put_request(&host(), 7, Bytes::from_static(b"abcd"));
        assert_eq!(put.method(), Method::PUT);
        assert_eq!(put.uri().path(), "/v1/kv/bench%20key/7");
        assert_eq!(put.headers()[HOST], "127.0.0.1:7070");
        assert_eq!(body_of(put).await, Bytes::from_static(b"abcd"));

        let get = workload.get_request(&host(), 3);
        assert_eq!(get.method(), Method::GET);
        assert_eq!(get.uri().path(), "/v1/kv/bench%20key/3");
        assert!(get.headers().get(CONTENT_TYPE).is_none());
    }

    /// Proves the etcd request shape: JSON with base64 key and value on the v3 routes.
    #[tokio::test]
    async fn etcd_requests() {
        let workload = workload(Protocol::Etcd);
        let put = workload.put_request(&host(), 7, Bytes::from_static(b"abcd"));
        assert_eq!(put.method(), Method::POST);
        assert_eq!(put.uri().path(), "/v3/kv/put");
        let json: serde_json::Value =
            serde_json::from_slice(&body_of(put).await).expect("put body is JSON");
        assert_eq!(json["key"], BASE64.encode("bench key/7"));
        assert_eq!(json["value"], BASE64.encode("abcd"));

        let range = workload.get_request(&HeaderValue::from_static("127.0.0.1:2379"), 3);
        assert_eq!(range.uri().path(), "/v3/kv/range");
        assert_eq!(range.headers()[HOST], "127.0.0.1:2379");
        let json: serde_json::Value =
            serde_json::from_slice(&body_of(range).await).expect("range body is JSON");
        assert_eq!(json["key"], BASE64.encode("bench key/3"));
    }

    /// Proves the documents request shape: a JSON document with its group, and a
    /// query on that group.
    #[tokio::test]
    async fn documents_requests() {
        let workload = Workload::new(
            Protocol::Documents,
            Operation::Mixed,
            1_000,
            "people".into(),
            4,
            50,
        );
        let put = workload.put_request(&host(), 250, Bytes::from_static(&[0, 1, 2, 25]));
        assert_eq!(put.method(), Method::PUT);
        assert_eq!(put.uri().path(), "/v1/docs/people/250");
        let json: serde_json::Value =
            serde_json::from_slice(&body_of(put).await).expect("document is JSON");
        assert_eq!(
            json,
            serde_json::json!({"group": 2, "n": 250, "pad": "abcz"})
        );

        let query = workload.get_request(&host(), 399);
        assert_eq!(query.method(), Method::POST);
        assert_eq!(query.uri().path(), "/v1/docs/people/_query");
        let json: serde_json::Value =
            serde_json::from_slice(&body_of(query).await).expect("query is JSON");
        assert_eq!(
            json,
            serde_json::json!({"filter": {"group": 3}, "limit": 100})
        );
        assert_eq!(
            workload.judge(
                RequestKind::Get,
                StatusCode::OK,
                br#"{"documents":[],"cursor":null}"#
            ),
            Outcome::NotFound
        );
    }

    /// Proves misses are told apart from errors in both protocols.
    #[test]
    fn judging() {
        let mimori = workload(Protocol::Mimori);
        assert_eq!(
            mimori.judge(RequestKind::Get, StatusCode::NOT_FOUND, b""),
            Outcome::NotFound
        );
        assert_eq!(
            mimori.judge(RequestKind::Put, StatusCode::NOT_FOUND, b""),
            Outcome::Error(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            mimori.judge(RequestKind::Put, StatusCode::SERVICE_UNAVAILABLE, b""),
            Outcome::Error(StatusCode::SERVICE_UNAVAILABLE)
        );
        let etcd = workload(Protocol::Etcd);
        assert_eq!(
            etcd.judge(RequestKind::Get, StatusCode::OK, br#"{"header":{}}"#),
            Outcome::NotFound
        );
        assert_eq!(
            etcd.judge(RequestKind::Get, StatusCode::OK, br#"{"kvs":[{}]}"#),
            Outcome::Ok
        );
    }

    /// Proves pool values have the requested size and are not all the same window.
    #[test]
    fn value_pool_windows() {
        let mut rng = StdRng::seed_from_u64(1);
        let pool = ValuePool::new(256, &mut rng);
        let values: Vec<Bytes> = (0..16).map(|_| pool.next(&mut rng)).collect();
        assert!(values.iter().all(|value| value.len() == 256));
        assert!(values.iter().any(|value| value != &values[0]));
        let empty = ValuePool::new(0, &mut rng);
        assert!(empty.next(&mut rng).is_empty());
    }
}
