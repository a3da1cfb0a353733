//! The HTTP/JSON gateway: the public data-plane API of a node.
//!
//! Owns the route table, admission control (a bound on requests in flight) and the
//! translation of HTTP requests into calls on the kernel's [`Router`]; it holds no data
//! of its own. `mimorid` starts it with [`serve`]; tests and embedders may mount
//! [`router`] themselves.
//!
//! Routes (the contract external tools rely on):
//!
//! | route | methods | handler |
//! |---|---|---|
//! | `/v1/kv/{key}` | GET PUT DELETE | `kv`: raw value bytes; `{key}` percent-decodes to raw bytes and may contain `/` |
//! | `/v1/kv?prefix=&after=&after_encoding=&limit=&consistency=` | GET | `kv`: scan pages |
//! | `/v1/docs/{collection}/{id}` | GET PUT DELETE | `docs`: JSON objects |
//! | `/v1/docs/{collection}` | GET (list) POST (create with a server-assigned id) | `docs` |
//! | `/health`, `/v1/cluster`, `/v1/status` | GET | `cluster` |
//! | `/metrics` | GET | `metrics`: Prometheus text format |
//! | `/ui` | GET | `ui`: the web dashboard (one embedded HTML page) |
//!
//! Invariants:
//! - Every error response, including unknown routes (404 `route_not_found`), wrong
//!   methods (405 `method_not_allowed`) and overload (503 `overloaded`), is
//!   `application/problem+json` built by [`Problem`]; no axum extractor that
//!   could answer with its own plain-text rejection is used.
//! - At most `requests_in_flight_max` requests are inside the handlers at once; the rest
//!   are refused immediately with 503 and `Retry-After` rather than queued, because the
//!   kernel's mailboxes are unbounded and queueing would only hide overload.
//! - No request buffers more than `body_bytes_max` bytes of body (`body.rs`).
//! - The request path takes no lock: admission is one atomic counter and the state is
//!   shared read-only behind an `Arc`.

mod body;
mod cluster;
mod collections;
mod conditions;
mod docs;
mod encoding;
mod kv;
mod metrics;
mod problem;
mod query;
mod reply;
mod ui;

pub use docs::{check_json_object, document_key, is_valid_name};
pub use problem::{Problem, PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::serve::ListenerExt as _;
use mimori_actors::kv::{KvError, Limits};
use mimori_actors::router::Router;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Tunables of the gateway. The kernel's own limits (key size, scan page size) come
/// from [`Router::limits`] and are not repeated here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayOptions {
    /// Largest request body (value or document) the gateway reads, in bytes. Bodies
    /// above it are refused with 413 `body_too_large` before they are buffered.
    pub body_bytes_max: u64,
    /// Requests allowed inside the handlers at once; beyond it the gateway answers
    /// 503 `overloaded`. Zero refuses everything (useful to drain a node).
    pub requests_in_flight_max: u32,
    /// `Retry-After` sent with 503s whose cause carries no better hint.
    pub retry_after_seconds: u32,
}

impl GatewayOptions {
    /// Default in-flight bound: enough to keep two cores and the WAL's group commit
    /// busy, small enough that a burst cannot pile unbounded work onto the kernel.
    pub const REQUESTS_IN_FLIGHT_MAX_DEFAULT: u32 = 1024;

    /// Defaults matching the kernel's limits: a body may be as large as a value.
    pub fn for_limits(limits: Limits) -> GatewayOptions {
        GatewayOptions {
            body_bytes_max: u64::from(limits.value_bytes_max),
            requests_in_flight_max: Self::REQUESTS_IN_FLIGHT_MAX_DEFAULT,
            retry_after_seconds: 1,
        }
    }

    /// Defaults for the limits of `kernel`.
    pub fn for_router(kernel: &Router) -> GatewayOptions {
        GatewayOptions::for_limits(kernel.limits())
    }
}

impl Default for GatewayOptions {
    /// Defaults for the kernel's default limits.
    fn default() -> GatewayOptions {
        GatewayOptions::for_limits(Limits::default())
    }
}

/// What every handler shares: the kernel handle, the options and the admission
/// counter. Cloning is one reference-count increment.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<GatewayShared>,
}

struct GatewayShared {
    kernel: Router,
    /// Snapshot of `kernel.limits()`, which are fixed for the life of a node.
    limits: Limits,
    options: GatewayOptions,
    /// Requests currently admitted; never above `options.requests_in_flight_max`.
    in_flight: AtomicU32,
    /// Requests answered and refused, for `/metrics`.
    metrics: metrics::GatewayMetrics,
}

impl GatewayState {
    /// State for a gateway in front of `kernel`.
    pub fn new(kernel: Router, options: GatewayOptions) -> GatewayState {
        let limits = kernel.limits();
        GatewayState {
            inner: Arc::new(GatewayShared {
                kernel,
                limits,
                options,
                in_flight: AtomicU32::new(0),
                metrics: metrics::GatewayMetrics::new(),
            }),
        }
    }

    /// The kernel handle.
    pub fn kernel(&self) -> &Router {
        &self.inner.kernel
    }

    /// The kernel's limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The gateway's options.
    pub fn options(&self) -> &GatewayOptions {
        &self.inner.options
    }

    /// The gateway's request figures.
    fn metrics(&self) -> &metrics::GatewayMetrics {
        &self.inner.metrics
    }

    /// Requests currently inside the handlers (for metrics and tests).
    pub fn requests_in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// The problem for a kernel error, with this gateway's default `Retry-After`.
    fn kernel_problem(&self, error: &KvError) -> Problem {
        Problem::from_kv(error, self.inner.options.retry_after_seconds)
    }

    /// Admits one request if fewer than the maximum are in flight. The returned guard
    /// releases the slot when dropped, whichever way the handler ends.
    fn try_admit(&self) -> Option<Admission<'_>> {
        let maximum = self.inner.options.requests_in_flight_max;
        self.inner
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current < maximum).then_some(current + 1)
            })
            .ok()
            .map(|_| Admission {
                in_flight: &self.inner.in_flight,
            })
    }
}

/// One admitted request; holds its in-flight slot until dropped.
struct Admission<'a> {
    in_flight: &'a AtomicU32,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let previous = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(previous > 0, "in-flight counter underflow");
    }
}

/// The gateway's route table with admission control, ready to serve or to nest.
pub fn router(state: GatewayState) -> axum::Router {
    axum::Router::new()
        .route("/health", get(cluster::health))
        .route("/v1/cluster", get(cluster::cluster_info))
        .route("/v1/status", get(cluster::status))
        .route("/metrics", get(metrics::metrics))
        .route("/ui", get(ui::page))
        .route("/ui/", get(ui::page))
        .route("/v1/kv", get(kv::scan))
        // A catch-all needs at least one character, so the empty key gets its own
        // route to answer 400 instead of 404.
        .route("/v1/kv/", any(kv::empty_key))
        .route(
            "/v1/kv/{*key}",
            get(kv::get_value)
                .put(kv::put_value)
                .delete(kv::delete_value),
        )
        .route(
            "/v1/docs/{collection}",
            get(docs::list_documents).post(docs::create_document),
        )
        .route("/v1/docs/{collection}/", any(docs::empty_id))
        .route(
            "/v1/docs/{collection}/{*id}",
            get(docs::get_document)
                .put(docs::put_document)
                .delete(docs::delete_document)
                .post(collections::post_to_document),
        )
        .route("/v1/collections", get(collections::list_collections))
        .route(
            "/v1/collections/{name}",
            get(collections::get_collection)
                .put(collections::define_collection)
                .delete(collections::drop_collection),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Added last so it wraps every route and both fallbacks.
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .with_state(state)
}

/// Serves the gateway on `listener` until `shutdown` completes, then stops accepting
/// connections and waits for the requests in progress to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    kernel: Router,
    options: GatewayOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(GatewayState::new(kernel, options));
    // Responses are small and written once; Nagle's algorithm would only add latency
    // on keep-alive connections.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on a gateway connection");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Admission control: refuses the request with 503 `overloaded` when the in-flight
/// bound is reached, instead of queueing it. Every answer is counted for
/// `/metrics` by route template, method and status.
async fn admit(State(state): State<GatewayState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = match state.try_admit() {
        Some(_admission) => next.run(request).await,
        None => {
            state.metrics().record_rejection();
            let maximum = state.options().requests_in_flight_max;
            Problem::new(
                "overloaded",
                format!("the node already has {maximum} requests in flight; retry later"),
            )
            .with_retry_after_seconds(state.options().retry_after_seconds)
            .into_response()
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state
        .metrics()
        .record(route, &method, response.status(), seconds);
    response
}

async fn route_not_found(request: Request) -> Problem {
    Problem::new(
        "route_not_found",
        format!("no endpoint at {}", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        "method_not_allowed",
        format!(
            "{} is not allowed on {}; see the Allow header",
            request.method(),
            request.uri().path()
        ),
    )
}
