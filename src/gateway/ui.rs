//! `GET /ui`: the web dashboard, one HTML page with its script inside, embedded in
//! the binary (`ui/index.html`), so it needs no build step and no files next to
//! the node. The page asks the node that served it for `/v1/cluster` and
//! `/metrics` every two seconds: nodes and their states, the leader, replicas and
//! replication lag of every shard, and a sparkline of this node's request rate.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The dashboard page.
const PAGE: &str = include_str!("ui/index.html");

/// `GET /ui` (and `/ui/`).
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
