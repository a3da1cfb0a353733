//! Success responses shared by the handlers: JSON bodies, `{"revision":N}` and stored
//! values with their `ETag`.
//!
//! Responses are assembled directly (no `Response::builder`, no intermediate
//! `serde_json::Value`) because they sit on every request's path.

use super::conditions::etag;
use super::problem::Problem;
use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, ETAG};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use mimori_actors::ids::Revision;
use serde::Serialize;

/// Content type of JSON bodies.
pub const JSON: &str = "application/json";

/// Content type of raw values.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// A response with `body` and `content_type`.
pub fn bytes(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response of `value`, serialized into a buffer of `capacity_bytes` to start
/// with (an estimate that avoids regrowing for large pages).
pub fn json<T: Serialize>(
    status: StatusCode,
    value: &T,
    capacity_bytes: usize,
) -> Result<Response, Problem> {
    let mut buffer = Vec::with_capacity(capacity_bytes);
    serde_json::to_writer(&mut buffer, value).map_err(|error| {
        tracing::error!(%error, "could not serialize a response");
        Problem::new("internal", "could not serialize the response")
    })?;
    Ok(bytes(status, JSON, buffer))
}

/// `200 {"revision":N}`, the answer to every write.
pub fn revision(revision: Revision) -> Response {
    bytes(
        StatusCode::OK,
        JSON,
        format!("{{\"revision\":{}}}", revision.0),
    )
}

/// `200` with a stored value, its revision as `ETag` and `content_type`.
pub fn stored(value: Bytes, revision: Revision, content_type: &'static str) -> Response {
    let mut response = bytes(StatusCode::OK, content_type, value);
    response.headers_mut().insert(ETAG, etag(revision));
    response
}

/// One page of a listing (`/v1/kv` scans, `/v1/docs/{collection}` listings): the
/// items, and the key to continue after, base64 with `next_encoding` when it is not
/// UTF-8.
#[derive(Serialize)]
pub struct PageBody<'a, Item: Serialize> {
    items: Vec<Item>,
    next: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_encoding: Option<&'static str>,
}

impl<'a, Item: Serialize> PageBody<'a, Item> {
    /// A page whose continuation is `next` (raw key or id bytes).
    pub fn new(items: Vec<Item>, next: Option<&'a [u8]>) -> PageBody<'a, Item> {
        let (next, next_encoding) = match next.map(super::encoding::text_or_base64) {
            Some((next, encoding)) => (Some(next), encoding),
            None => (None, None),
        };
        PageBody {
            items,
            next,
            next_encoding,
        }
    }
}
