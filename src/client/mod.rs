//! `mimori::client`: an async Rust client for Mimori's HTTP gateway.
//!
//! ```no_run
//! # async fn example() -> Result<(), mimori::client::ClientError> {
//! use mimori::client::{Client, Condition, Query};
//! use serde_json::json;
//!
//! let client = Client::builder(["127.0.0.1:7070", "127.0.0.1:7080"]).build()?;
//! let revision = client.put("greeting", "hello").await?;
//! let value = client.get("greeting").await?.expect("just written");
//! assert_eq!(value.revision, revision);
//! client.put_if("greeting", "hi", Condition::RevisionIs(revision)).await?;
//!
//! client.doc_put("users", "1", &json!({"name": "ada", "age": 36})).await?;
//! let page = client
//!     .query("users", &Query::new().filter(json!({"age": {"$gte": 18}})).sort_by("age"))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! **Routing.** The client keeps the cluster's placement table (`GET /v1/cluster`),
//! computes each key's shard like the servers do and sends the request straight to
//! the gateway of the shard's leader, so it is served without a forwarding hop. The
//! table is refreshed when it ages out, when a node cannot be reached and when a
//! request answers 503; requests without a key (scans, queries, cluster views) go to
//! the configured endpoints in turn. Any gateway serves any key, so routing is an
//! optimisation: a stale table costs a hop, never a wrong answer.
//!
//! **Retries.** A request is retried (with exponential backoff and full jitter,
//! [`RetryPolicy`]) only where doing it twice cannot do harm:
//!
//! - reads (`get`, `scan`, `doc_get`, `query`, views) on connection failures,
//!   timeouts and 503s;
//! - conditional writes (`put_if`, `delete_if`, `doc_put_if`, `doc_create`) likewise:
//!   if the first try was applied, the retry fails its condition and answers
//!   [`ClientError::Conflict`] — so a `Conflict` after a retry may mean "your write
//!   happened" (compare the current revision with what you expect);
//! - unconditional writes only when the connection failed before the request was
//!   sent. Once it may have reached a server, a timeout is reported as
//!   [`ClientError::Timeout`]: the write may or may not have happened.
//!
//! Every loop is bounded by `attempts_max` and every request by its timeout.

mod error;
mod retry;
mod routing;
mod types;

pub use error::ClientError;
pub use mimori_actors::kv::ClusterInfo;
pub use mimori_actors::router::docs::{CollectionStatus, IndexStatus};
pub use retry::RetryPolicy;
pub use routing::Placement;
pub use types::{Condition, Document, Query, QueryPage, ScanItem, ScanPage, Versioned};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{
    HeaderName, HeaderValue, CONTENT_TYPE, ETAG, HOST, IF_MATCH, IF_NONE_MATCH, RETRY_AFTER,
};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mimori_actors::kv::Namespace;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most endpoints one client may be given.
pub const ENDPOINTS_MAX: usize = 64;
/// Largest answer body the client reads, in bytes.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Pages `query_all` and `scan_all` follow at most.
pub const PAGES_MAX: u32 = 100_000;

/// Bytes of a key that go into the URL path unescaped: RFC 3986 unreserved
/// characters plus `/`, which the gateway accepts inside keys (its key route takes
/// the rest of the path). Everything else is percent-encoded and the gateway decodes
/// it back to the same bytes.
pub const KEY_PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// Bytes kept as they are in a query-string value.
const QUERY_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Builds a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    retry: RetryPolicy,
    routing: bool,
    placement_ttl_ms: u64,
    placement_refresh_min_interval_ms: u64,
    pool_idle_per_host_max: usize,
    seed: Option<u64>,
}

impl ClientBuilder {
    /// Bounds connecting to a node (default 2,000 ms).
    pub fn connect_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.connect_timeout_ms = timeout_ms;
        self
    }

    /// Bounds each try of a request, answer included (default 10,000 ms).
    pub fn request_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.request_timeout_ms = timeout_ms;
        self
    }

    /// How safe requests are retried (default: 8 tries, 20 ms to 2 s backoff).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Whether keys are routed to their shard's leader (default on); off sends
    /// everything to the configured endpoints.
    pub fn routing(mut self, enabled: bool) -> Self {
        self.routing = enabled;
        self
    }

    /// How long a placement table is used before it is read again (default 5 s).
    pub fn placement_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.placement_ttl_ms = ttl_ms;
        self
    }

    /// Idle keep-alive connections kept per node (default 64).
    pub fn pool_idle_per_host_max(mut self, connections: usize) -> Self {
        self.pool_idle_per_host_max = connections;
        self
    }

    /// Seeds the backoff jitter (tests replay the same waits).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<Client, ClientError> {
        let invalid = |message: String| ClientError::InvalidInput {
            code: "invalid_input".into(),
            message,
        };
        if self.endpoints.is_empty() || self.endpoints.len() > ENDPOINTS_MAX {
            return Err(invalid(format!(
                "give 1 to {ENDPOINTS_MAX} endpoints, not {}",
                self.endpoints.len()
            )));
        }
        for endpoint in &self.endpoints {
            if endpoint.contains('/')
                || !endpoint.contains(':')
                || HeaderValue::try_from(endpoint.as_str()).is_err()
            {
                return Err(invalid(format!("endpoint {endpoint:?} is not host:port")));
            }
        }
        if self.retry.attempts_max == 0 || self.retry.attempts_max > retry::ATTEMPTS_MAX {
            return Err(invalid(format!(
                "attempts_max must be 1..={}",
                retry::ATTEMPTS_MAX
            )));
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(invalid("timeouts must be positive".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(self.connect_timeout_ms)));
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(self.pool_idle_per_host_max)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                settings: self,
                placement: Mutex::new(None),
                refreshing: tokio::sync::Mutex::new(()),
                last_refresh: Mutex::new(None),
                next_endpoint: AtomicUsize::new(0),
                rng: Mutex::new(rng),
                stats: Counters::default(),
            }),
        })
    }
}

/// Counters of what the client did, for tests and for the curious.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Tries sent (retries included).
    pub attempts_total: u64,
    /// Tries after the first.
    pub retries_total: u64,
    /// Tries sent to a shard leader's gateway found in the placement table.
    pub routed_to_leader_total: u64,
    /// Placement tables read.
    pub placement_refreshes_total: u64,
}

#[derive(Default)]
struct Counters {
    attempts_total: AtomicU64,
    retries_total: AtomicU64,
    routed_to_leader_total: AtomicU64,
    placement_refreshes_total: AtomicU64,
}

/// A cloneable handle on a pool of connections to a Mimori cluster.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    settings: ClientBuilder,
    placement: Mutex<Option<Placement>>,
    /// Held while the placement table is read, so one refresh runs at a time.
    refreshing: tokio::sync::Mutex<()>,
    last_refresh: Mutex<Option<Instant>>,
    next_endpoint: AtomicUsize,
    rng: Mutex<StdRng>,
    stats: Counters,
}

/// Whether a request may be sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Safety {
    /// Reads and conditional writes: retried on any transient failure.
    Retryable,
    /// Unconditional writes: retried only if the request never left.
    Once,
}

/// One request, kept so it can be sent again.
struct Call {
    method: Method,
    /// Path and query, percent-encoded.
    path: String,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The key whose shard leader should serve it.
    route: Option<(Namespace, Vec<u8>)>,
    safety: Safety,
}

/// A successful answer.
struct Answer {
    etag: Option<u64>,
    body: Bytes,
}

impl Client {
    /// A builder for a client of the gateways at `endpoints` (`host:port`).
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            retry: RetryPolicy::default(),
            routing: true,
            placement_ttl_ms: 5_000,
            placement_refresh_min_interval_ms: 200,
            pool_idle_per_host_max: 64,
            seed: None,
        }
    }

    /// What the client did so far.
    pub fn stats(&self) -> ClientStats {
        let counters = &self.inner.stats;
        ClientStats {
            attempts_total: counters.attempts_total.load(Ordering::Relaxed),
            retries_total: counters.retries_total.load(Ordering::Relaxed),
            routed_to_leader_total: counters.routed_to_leader_total.load(Ordering::Relaxed),
            placement_refreshes_total: counters.placement_refreshes_total.load(Ordering::Relaxed),
        }
    }

    // ---- keys ----

    /// Reads `key` linearizably; `None` when it does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>, ClientError> {
        self.get_with(key.as_ref(), false).await
    }

    /// Reads `key` from a replica as it is (may miss recent writes).
    pub async fn get_stale(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>, ClientError> {
        self.get_with(key.as_ref(), true).await
    }

    async fn get_with(&self, key: &[u8], stale: bool) -> Result<Option<Versioned>, ClientError> {
        let path = format!("/v1/kv/{}{}", encode_path(key), stale_query(stale, '?'));
        let call = Call::read(Method::GET, path, Some((Namespace::Kv, key.to_vec())));
        match self.execute(call).await {
            Ok(answer) => Ok(Some(Versioned {
                revision: answer
                    .etag
                    .ok_or_else(|| ClientError::Protocol("no ETag on a read".into()))?,
                value: answer.body,
            })),
            Err(ClientError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Writes `value` under `key` unconditionally; the new revision.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        self.write_key(Method::PUT, key.as_ref(), value.into(), None)
            .await
    }

    /// Writes `value` under `key` if `condition` holds; the new revision, or
    /// [`ClientError::Conflict`] with the current one.
    pub async fn put_if(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        condition: Condition,
    ) -> Result<u64, ClientError> {
        self.write_key(Method::PUT, key.as_ref(), value.into(), Some(condition))
            .await
    }

    /// Deletes `key`; the revision of the delete, or [`ClientError::NotFound`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<u64, ClientError> {
        self.write_key(Method::DELETE, key.as_ref(), Bytes::new(), None)
            .await
    }

    /// Deletes `key` if its revision is `revision`.
    pub async fn delete_if(
        &self,
        key: impl AsRef<[u8]>,
        revision: u64,
    ) -> Result<u64, ClientError> {
        self.write_key(
            Method::DELETE,
            key.as_ref(),
            Bytes::new(),
            Some(Condition::RevisionIs(revision)),
        )
        .await
    }

    async fn write_key(
        &self,
        method: Method,
        key: &[u8],
        body: Bytes,
        condition: Option<Condition>,
    ) -> Result<u64, ClientError> {
        let path = format!("/v1/kv/{}", encode_path(key));
        let call = Call::write(
            method,
            path,
            body,
            "application/octet-stream",
            condition,
            Some((Namespace::Kv, key.to_vec())),
        );
        revision_of(&self.execute(call).await?.body)
    }

    /// One page of the keys starting with `prefix`, in key order, strictly after
    /// `after`, at most `limit` (1..=10,000) of them.
    pub async fn scan(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<ScanPage, ClientError> {
        let mut path = format!(
            "/v1/kv?prefix={}&limit={limit}",
            encode_query(prefix.as_ref())
        );
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode_query(after)));
        }
        let answer = self.execute(Call::read(Method::GET, path, None)).await?;
        ScanPage::parse(&answer.body)
    }

    // ---- documents ----

    /// Reads document `id` of `collection`; `None` when it does not exist.
    pub async fn doc_get(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<Document>, ClientError> {
        let (path, route) = document_target(collection, id)?;
        match self
            .execute(Call::read(Method::GET, path, Some(route)))
            .await
        {
            Ok(answer) => Ok(Some(Document {
                id: id.to_string(),
                revision: answer
                    .etag
                    .ok_or_else(|| ClientError::Protocol("no ETag on a read".into()))?,
                body: serde_json::from_slice(&answer.body).map_err(|error| {
                    ClientError::Protocol(format!("document is not JSON: {error}"))
                })?,
            })),
            Err(ClientError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Reads document `id` of `collection` into `T`.
    pub async fn doc_get_as<T: DeserializeOwned>(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<(T, u64)>, ClientError> {
        let Some(document) = self.doc_get(collection, id).await? else {
            return Ok(None);
        };
        let value = serde_json::from_value(document.body).map_err(|error| {
            ClientError::Protocol(format!("document does not fit the type: {error}"))
        })?;
        Ok(Some((value, document.revision)))
    }

    /// Writes `body` (a JSON object) as document `id`; the new revision.
    pub async fn doc_put(
        &self,
        collection: &str,
        id: &str,
        body: &impl Serialize,
    ) -> Result<u64, ClientError> {
        self.write_document(collection, id, body, None).await
    }

    /// Writes document `id` if `condition` holds.
    pub async fn doc_put_if(
        &self,
        collection: &str,
        id: &str,
        body: &impl Serialize,
        condition: Condition,
    ) -> Result<u64, ClientError> {
        self.write_document(collection, id, body, Some(condition))
            .await
    }

    /// Creates document `id`; [`ClientError::Conflict`] when it exists.
    pub async fn doc_create(
        &self,
        collection: &str,
        id: &str,
        body: &impl Serialize,
    ) -> Result<u64, ClientError> {
        self.write_document(collection, id, body, Some(Condition::Absent))
            .await
    }

    /// Deletes document `id`; [`ClientError::NotFound`] when it does not exist.
    pub async fn doc_delete(&self, collection: &str, id: &str) -> Result<u64, ClientError> {
        let (path, route) = document_target(collection, id)?;
        let call = Call::write(
            Method::DELETE,
            path,
            Bytes::new(),
            "application/json",
            None,
            Some(route),
        );
        revision_of(&self.execute(call).await?.body)
    }

    async fn write_document(
        &self,
        collection: &str,
        id: &str,
        body: &impl Serialize,
        condition: Option<Condition>,
    ) -> Result<u64, ClientError> {
        let (path, route) = document_target(collection, id)?;
        let body = serde_json::to_vec(body).map_err(|error| ClientError::InvalidInput {
            code: "invalid_json".into(),
            message: error.to_string(),
        })?;
        let call = Call::write(
            Method::PUT,
            path,
            Bytes::from(body),
            "application/json",
            condition,
            Some(route),
        );
        revision_of(&self.execute(call).await?.body)
    }

    /// One page of a query over `collection` (`POST /v1/docs/{collection}/_query`).
    pub async fn query(&self, collection: &str, query: &Query) -> Result<QueryPage, ClientError> {
        check_name("collection", collection)?;
        let path = format!(
            "/v1/docs/{collection}/_query{}",
            stale_query(query.is_stale(), '?')
        );
        let body = Bytes::from(query.body());
        let mut call = Call::read(Method::POST, path, None);
        call.body = body;
        call.headers
            .push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        let answer = self.execute(call).await?;
        QueryPage::parse(&answer.body)
    }

    /// Every matching document, following cursors (at most `documents_max`).
    pub async fn query_all(
        &self,
        collection: &str,
        query: &Query,
        documents_max: usize,
    ) -> Result<Vec<Document>, ClientError> {
        let mut query = query.clone();
        let mut documents = Vec::new();
        for _ in 0..PAGES_MAX {
            let page = self.query(collection, &query).await?;
            documents.extend(page.documents);
            if documents.len() > documents_max {
                return Err(ClientError::InvalidInput {
                    code: "invalid_input".into(),
                    message: format!("the query matches more than {documents_max} documents"),
                });
            }
            match page.cursor {
                None => return Ok(documents),
                Some(cursor) => query = query.cursor(cursor),
            }
        }
        Err(ClientError::Protocol(format!(
            "the query did not end after {PAGES_MAX} pages"
        )))
    }

    // ---- collections and the cluster ----

    /// Declares `collection` with secondary indexes on `indexes` (dotted paths).
    pub async fn define_collection(
        &self,
        collection: &str,
        indexes: &[&str],
    ) -> Result<CollectionStatus, ClientError> {
        check_name("collection", collection)?;
        let body =
            serde_json::to_vec(&serde_json::json!({ "indexes": indexes })).unwrap_or_default();
        // Defining the same list twice leaves the same state: safe to retry.
        let mut call = Call::read(Method::PUT, format!("/v1/collections/{collection}"), None);
        call.body = Bytes::from(body);
        call.headers
            .push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        parse_json(&self.execute(call).await?.body)
    }

    /// Every declared collection with the state of its indexes.
    pub async fn collections(&self) -> Result<Vec<CollectionStatus>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Collections {
            collections: Vec<CollectionStatus>,
        }
        let answer = self
            .execute(Call::read(Method::GET, "/v1/collections".into(), None))
            .await?;
        Ok(parse_json::<Collections>(&answer.body)?.collections)
    }

    /// Drops `collection`: its definition, documents and index entries.
    pub async fn drop_collection(&self, collection: &str) -> Result<(), ClientError> {
        check_name("collection", collection)?;
        // Dropping twice drops nothing more: safe to retry.
        let call = Call::read(
            Method::DELETE,
            format!("/v1/collections/{collection}"),
            None,
        );
        self.execute(call).await.map(|_| ())
    }

    /// The cluster as an endpoint sees it: nodes, shards, leaders, epochs.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, ClientError> {
        let answer = self
            .execute(Call::read(Method::GET, "/v1/cluster".into(), None))
            .await?;
        parse_json(&answer.body)
    }

    // ---- plumbing ----

    /// Sends `call`, routed and retried as its safety allows.
    async fn execute(&self, call: Call) -> Result<Answer, ClientError> {
        let settings = &self.inner.settings;
        let mut last_error = ClientError::Transport("no attempt was made".into());
        for attempt in 0..settings.retry.attempts_max {
            if attempt > 0 {
                self.inner
                    .stats
                    .retries_total
                    .fetch_add(1, Ordering::Relaxed);
                let retry_after = match &last_error {
                    ClientError::Unavailable { retry_after_ms, .. } => Some(*retry_after_ms),
                    _ => None,
                };
                let wait = {
                    let mut rng = self
                        .inner
                        .rng
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    settings.retry.backoff(attempt, retry_after, &mut *rng)
                };
                tokio::time::sleep(wait).await;
            }
            let (address, routed) = self.address_for(&call, attempt).await;
            self.inner
                .stats
                .attempts_total
                .fetch_add(1, Ordering::Relaxed);
            if routed {
                self.inner
                    .stats
                    .routed_to_leader_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            match self.send_once(&address, &call).await {
                Ok(answer) => return Ok(answer),
                Err((error, sent)) => {
                    let retry = error.is_transient() && (call.safety == Safety::Retryable || !sent);
                    if matches!(
                        error,
                        ClientError::Transport(_) | ClientError::Unavailable { .. }
                    ) {
                        if !sent {
                            self.forget(&address);
                        }
                        self.refresh_placement_soon().await;
                    }
                    if !retry {
                        return Err(error);
                    }
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// Where try number `attempt` of `call` goes, and whether that is a leader
    /// from the placement table.
    async fn address_for(&self, call: &Call, attempt: u32) -> (String, bool) {
        let settings = &self.inner.settings;
        if settings.routing && attempt == 0 {
            if let Some((namespace, key)) = &call.route {
                self.refresh_placement_if_expired().await;
                let placement = self
                    .inner
                    .placement
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(leader) = placement
                    .as_ref()
                    .and_then(|placement| placement.leader_of(*namespace, key))
                {
                    return (leader.to_string(), true);
                }
            }
        }
        let at = self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed);
        (
            settings.endpoints[at % settings.endpoints.len()].clone(),
            false,
        )
    }

    /// One try. The error says whether the request may have reached the server.
    async fn send_once(&self, address: &str, call: &Call) -> Result<Answer, (ClientError, bool)> {
        let settings = &self.inner.settings;
        let uri = format!("http://{address}{}", call.path);
        let mut builder = Request::builder().method(call.method.clone()).uri(&uri);
        for (name, value) in &call.headers {
            builder = builder.header(name, value);
        }
        if let Ok(host) = HeaderValue::try_from(address) {
            builder = builder.header(HOST, host);
        }
        let request = builder
            .body(Full::new(call.body.clone()))
            .map_err(|error| {
                (
                    ClientError::InvalidInput {
                        code: "invalid_input".into(),
                        message: error.to_string(),
                    },
                    false,
                )
            })?;
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        let timed_out = ClientError::Timeout {
            timeout_ms: settings.request_timeout_ms,
        };
        let response = match tokio::time::timeout(timeout, self.inner.http.request(request)).await {
            Err(_) => return Err((timed_out, true)),
            Ok(Err(error)) => {
                let sent = !error.is_connect();
                return Err((ClientError::Transport(format!("{address}: {error}")), sent));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let header = |name: HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        let etag = header(ETAG).and_then(|tag| tag.trim_matches('"').parse::<u64>().ok());
        let retry_after_ms = header(RETRY_AFTER)
            .and_then(|seconds| seconds.trim().parse::<u64>().ok())
            .map(|seconds| seconds.saturating_mul(1_000));
        let body = match tokio::time::timeout(
            timeout,
            Limited::new(response.into_body(), RESPONSE_BYTES_MAX).collect(),
        )
        .await
        {
            Err(_) => return Err((timed_out, true)),
            Ok(Err(error)) => {
                return Err((
                    ClientError::Transport(format!("{address}: reading the answer: {error}")),
                    true,
                ))
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        if status.is_success() {
            return Ok(Answer { etag, body });
        }
        let mut error = ClientError::from_problem(status.as_u16(), &body, retry_after_ms);
        if let ClientError::Timeout { timeout_ms } = &mut error {
            *timeout_ms = settings.request_timeout_ms;
        }
        Err((error, true))
    }

    /// Reads the placement table when it is missing or expired.
    async fn refresh_placement_if_expired(&self) {
        let ttl = Duration::from_millis(self.inner.settings.placement_ttl_ms);
        let current = {
            let placement = self
                .inner
                .placement
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            placement
                .as_ref()
                .is_some_and(|placement| !placement.is_expired(ttl, Instant::now()))
        };
        if !current {
            self.refresh_placement_soon().await;
        }
    }

    /// Reads the placement table again unless that happened very recently.
    async fn refresh_placement_soon(&self) {
        if !self.inner.settings.routing {
            return;
        }
        let Ok(_refreshing) = self.inner.refreshing.try_lock() else {
            return;
        };
        let interval = Duration::from_millis(self.inner.settings.placement_refresh_min_interval_ms);
        {
            let mut last = self
                .inner
                .last_refresh
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|last| last.elapsed() < interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.inner
            .stats
            .placement_refreshes_total
            .fetch_add(1, Ordering::Relaxed);
        let settings = &self.inner.settings;
        let at = self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed);
        let address = &settings.endpoints[at % settings.endpoints.len()];
        let call = Call::read(Method::GET, "/v1/cluster".into(), None);
        let Ok(answer) = self.send_once(address, &call).await else {
            return;
        };
        let Ok(info) = parse_json::<ClusterInfo>(&answer.body) else {
            return;
        };
        let fresh = Placement::from_cluster(&info, Instant::now());
        let mut placement = self
            .inner
            .placement
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = placement.as_ref() {
            if old.moved_since(&fresh) {
                tracing::debug!("placement changed since the last table");
            }
        }
        *placement = Some(fresh);
    }

    /// Forgets the leaders at `address` until the next table.
    fn forget(&self, address: &str) {
        let mut placement = self
            .inner
            .placement
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(placement) = placement.as_mut() {
            placement.forget(address);
        }
    }
}

impl Call {
    fn read(method: Method, path: String, route: Option<(Namespace, Vec<u8>)>) -> Call {
        Call {
            method,
            path,
            body: Bytes::new(),
            headers: Vec::new(),
            route,
            safety: Safety::Retryable,
        }
    }

    fn write(
        method: Method,
        path: String,
        body: Bytes,
        content_type: &'static str,
        condition: Option<Condition>,
        route: Option<(Namespace, Vec<u8>)>,
    ) -> Call {
        let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static(content_type))];
        match condition {
            None => {}
            Some(Condition::Absent) => headers.push((IF_NONE_MATCH, HeaderValue::from_static("*"))),
            Some(Condition::RevisionIs(revision)) => {
                if let Ok(tag) = HeaderValue::try_from(format!("\"{revision}\"")) {
                    headers.push((IF_MATCH, tag));
                }
            }
        }
        Call {
            method,
            path,
            body,
            headers,
            route,
            safety: if condition.is_some() {
                Safety::Retryable
            } else {
                Safety::Once
            },
        }
    }
}

fn encode_path(key: &[u8]) -> String {
    percent_encoding::percent_encode(key, KEY_PATH_KEEP).to_string()
}

fn encode_query(value: &[u8]) -> String {
    percent_encoding::percent_encode(value, QUERY_KEEP).to_string()
}

fn stale_query(stale: bool, separator: char) -> String {
    if stale {
        format!("{separator}consistency=stale")
    } else {
        String::new()
    }
}

/// Collection and ids: 1..=128 characters of `[A-Za-z0-9_.-]`, as the gateway
/// requires.
fn check_name(what: &str, name: &str) -> Result<(), ClientError> {
    let valid = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ClientError::InvalidInput {
            code: "invalid_input".into(),
            message: format!("the {what} must be 1 to 128 characters of A-Z a-z 0-9 _ . -"),
        })
    }
}

/// The path and routing key of a document.
fn document_target(
    collection: &str,
    id: &str,
) -> Result<(String, (Namespace, Vec<u8>)), ClientError> {
    check_name("collection", collection)?;
    check_name("document id", id)?;
    let path = format!(
        "/v1/docs/{collection}/{}",
        utf8_percent_encode(id, KEY_PATH_KEEP)
    );
    Ok((
        path,
        (Namespace::Doc, format!("{collection}/{id}").into_bytes()),
    ))
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body)
        .map_err(|error| ClientError::Protocol(format!("unexpected answer: {error}")))
}

fn revision_of(body: &[u8]) -> Result<u64, ClientError> {
    #[derive(serde::Deserialize)]
    struct Written {
        revision: u64,
    }
    Ok(parse_json::<Written>(body)?.revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves bad settings are refused before any connection is made.
    #[test]
    fn refuses_bad_settings() {
        assert!(Client::builder(Vec::<String>::new()).build().is_err());
        assert!(Client::builder(["http://a:1"]).build().is_err());
        assert!(Client::builder(["a"]).build().is_err());
        assert!(Client::builder(["a:1"])
            .request_timeout_ms(0)
            .build()
            .is_err());
        let no_tries = RetryPolicy {
            attempts_max: 0,
            ..RetryPolicy::default()
        };
        assert!(Client::builder(["a:1"]).retry(no_tries).build().is_err());
    }

    /// Proves keys are percent-encoded except `/`, conditions become the documented
    /// headers, and only conditional writes are retryable.
    #[test]
    fn requests_carry_conditions() {
        assert_eq!(encode_path(b"a b/\xff"), "a%20b/%FF");
        assert_eq!(encode_query(b"a/b"), "a%2Fb");
        let write = Call::write(
            Method::PUT,
            "/".into(),
            Bytes::new(),
            "x",
            Some(Condition::RevisionIs(7)),
            None,
        );
        assert_eq!(
            write.headers[1],
            (IF_MATCH, HeaderValue::from_static("\"7\""))
        );
        assert_eq!(write.safety, Safety::Retryable);
        let create = Call::write(
            Method::PUT,
            "/".into(),
            Bytes::new(),
            "x",
            Some(Condition::Absent),
            None,
        );
        assert_eq!(
            create.headers[1],
            (IF_NONE_MATCH, HeaderValue::from_static("*"))
        );
        let blind = Call::write(Method::PUT, "/".into(), Bytes::new(), "x", None, None);
        assert_eq!(blind.safety, Safety::Once);
        assert!(document_target("users", "a/b").is_err());
        assert_eq!(
            document_target("users", "1").unwrap().1,
            (Namespace::Doc, b"users/1".to_vec())
        );
    }
}
