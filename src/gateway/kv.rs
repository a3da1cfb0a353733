//! Plain keys: `GET|PUT|DELETE /v1/kv/{key}` and scans with `GET /v1/kv`.
//!
//! Keys live in [`Namespace::Kv`]. The key is the rest of the raw request path after
//! `/v1/kv/`, percent-decoded into bytes: `a%2Fb` and `a/b` name the same key, `%FF`
//! is the byte 0xFF. Values are opaque bytes in both directions; revisions travel as
//! `ETag: "N"` on reads and `{"revision":N}` on writes.
//!
//! Scan pages are JSON. A key or value that is valid UTF-8 is a JSON string as is;
//! otherwise it is standard base64 and the item carries `key_encoding` /
//! `value_encoding` = `"base64"`. The same rule applies to `next` (`next_encoding`);
//! a client continues with `after=<next>` plus `after_encoding=base64` when present.

use super::body::read_limited;
use super::conditions::{write_condition, WriteKind};
use super::encoding::{percent_decode, text_or_base64, PercentFlavour};
use super::problem::Problem;
use super::query::{consistency_from_query, ReadQuery};
use super::reply;
use super::GatewayState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use mimori_actors::kv::{Limits, Namespace, ScanPage};
use serde::Serialize;
use std::borrow::Cow;

/// The path every key route starts with; the key is what follows.
const KEY_PATH_PREFIX: &str = "/v1/kv/";

/// `GET /v1/kv/{key}`: the raw value with `ETag`, or 404.
pub async fn get_value(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let key = key_from_path(request.uri().path(), state.limits())?;
    let consistency = consistency_from_query(request.uri().query())?;
    let found = state
        .kernel()
        .get(Namespace::Kv, &key, consistency)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    let versioned = found.ok_or_else(Problem::not_found)?;
    Ok(reply::stored(
        versioned.value,
        versioned.revision,
        reply::OCTET_STREAM,
    ))
}

/// `PUT /v1/kv/{key}`: stores the body as the value, honouring `If-Match` and
/// `If-None-Match: *`; answers `{"revision":N}`.
pub async fn put_value(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    // Everything that can be refused without the body is checked before reading it.
    let key = key_from_path(parts.uri.path(), state.limits())?;
    let condition = write_condition(&parts.headers, WriteKind::Put)?;
    let value = read_limited(&parts.headers, body, state.options().body_bytes_max).await?;
    let revision = state
        .kernel()
        .put(Namespace::Kv, &key, value, condition)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    Ok(reply::revision(revision))
}

/// `DELETE /v1/kv/{key}`: answers `{"revision":N}` of the delete, or 404.
pub async fn delete_value(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let key = key_from_path(request.uri().path(), state.limits())?;
    let condition = write_condition(request.headers(), WriteKind::Delete)?;
    let revision = state
        .kernel()
        .delete(Namespace::Kv, &key, condition)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    Ok(reply::revision(revision))
}

/// Any method on `/v1/kv/`: the empty key is never valid.
pub async fn empty_key() -> Problem {
    Problem::invalid_input("the key is empty; use /v1/kv/{key}")
}

/// One item of a scan page as JSON; borrows the page so nothing is copied for UTF-8
/// keys and values.
#[derive(Serialize)]
struct ScanItemBody<'a> {
    key: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    value: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
    revision: u64,
}

/// `GET /v1/kv?prefix=P&after=K&limit=L&consistency=C`: one page of keys in order.
pub async fn scan(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let limits = state.limits();
    let query = ReadQuery::parse(request.uri().query(), limits.scan_limit_max)?;
    let page = state
        .kernel()
        .scan(
            Namespace::Kv,
            &query.prefix,
            query.after.as_deref(),
            query.limit,
            query.consistency,
        )
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    scan_response(&page)
}

fn scan_response(page: &ScanPage) -> Result<Response, Problem> {
    let items = page
        .items
        .iter()
        .map(|item| {
            let (key, key_encoding) = text_or_base64(&item.key);
            let (value, value_encoding) = text_or_base64(&item.value);
            ScanItemBody {
                key,
                key_encoding,
                value,
                value_encoding,
                revision: item.revision.0,
            }
        })
        .collect();
    // Base64 grows bytes by 4/3 and each item adds about 64 bytes of JSON around them.
    let capacity_bytes = page
        .items
        .iter()
        .map(|item| (item.key.len() + item.value.len()) * 4 / 3 + 64)
        .sum::<usize>()
        + 64;
    reply::json(
        StatusCode::OK,
        &reply::PageBody::new(items, page.next.as_deref()),
        capacity_bytes,
    )
}

/// The key named by a `/v1/kv/{key}` path: percent-decoded, non-empty and within the
/// key size limit.
fn key_from_path(path: &str, limits: Limits) -> Result<Cow<'_, [u8]>, Problem> {
    let encoded = path.strip_prefix(KEY_PATH_PREFIX).unwrap_or_default();
    let key = percent_decode(encoded.as_bytes(), PercentFlavour::Path)
        .map_err(|error| Problem::invalid_input(format!("key: {error}")))?;
    check_key(&key, limits)?;
    Ok(key)
}

/// Refuses empty keys (400) and keys above `key_bytes_max` (413 `key_too_large`).
/// The kernel checks the size too; checking here spares reading the body.
pub(super) fn check_key(key: &[u8], limits: Limits) -> Result<(), Problem> {
    if key.is_empty() {
        return Err(Problem::invalid_input("the key is empty"));
    }
    if key.len() as u64 > u64::from(limits.key_bytes_max) {
        return Err(Problem::new(
            "key_too_large",
            format!(
                "the key is {} bytes; the limit is {}",
                key.len(),
                limits.key_bytes_max
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimori_actors::ids::Revision;
    use mimori_actors::kv::ScanItem;

    /// Proves the key is the percent-decoded rest of the path, `/` included.
    #[test]
    fn key_is_the_decoded_rest_of_the_path() {
        let limits = Limits::default();
        assert_eq!(
            key_from_path("/v1/kv/a/b", limits).unwrap().as_ref(),
            b"a/b"
        );
        assert_eq!(
            key_from_path("/v1/kv/a%2Fb", limits).unwrap().as_ref(),
            b"a/b"
        );
        assert_eq!(
            key_from_path("/v1/kv/%FF", limits).unwrap().as_ref(),
            &[0xFF]
        );
    }

    /// Proves empty keys and bad escapes are 400 and long keys are 413, with the
    /// limit inclusive.
    #[test]
    fn key_errors() {
        let limits = Limits {
            key_bytes_max: 3,
            ..Limits::default()
        };
        assert_eq!(
            key_from_path("/v1/kv/", limits).unwrap_err().code(),
            "invalid_input"
        );
        assert_eq!(
            key_from_path("/v1/kv/%zz", limits).unwrap_err().code(),
            "invalid_input"
        );
        assert!(key_from_path("/v1/kv/abc", limits).is_ok());
        assert!(key_from_path("/v1/kv/%41%42%43", limits).is_ok());
        let problem = key_from_path("/v1/kv/abcd", limits).unwrap_err();
        assert_eq!(problem.code(), "key_too_large");
        assert_eq!(problem.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// Proves the scan page JSON: UTF-8 as strings, other bytes as base64 with their
    /// markers (on keys, values and next), absent markers omitted.
    #[tokio::test]
    async fn scan_page_json_shape() {
        let page = ScanPage {
            items: vec![
                ScanItem {
                    key: b"a".to_vec(),
                    value: "héllo".into(),
                    revision: Revision(3),
                },
                ScanItem {
                    key: vec![0xFF],
                    value: vec![0x00, 0xFE].into(),
                    revision: Revision(5),
                },
            ],
            next: Some(vec![0xFF]),
        };
        let response = scan_response(&page).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "items": [
                    {"key": "a", "value": "héllo", "revision": 3},
                    {"key": "/w==", "key_encoding": "base64",
                     "value": "AP4=", "value_encoding": "base64", "revision": 5},
                ],
                "next": "/w==",
                "next_encoding": "base64",
            })
        );

        let last = scan_response(&ScanPage::default()).unwrap();
        let bytes = axum::body::to_bytes(last.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&bytes[..], br#"{"items":[],"next":null}"#);
    }
}
