//! JSON documents: `GET|PUT|DELETE /v1/docs/{collection}/{id}`, and on
//! `/v1/docs/{collection}` `POST` (create with a server-assigned id) and `GET` (list).
//!
//! Documents live in [`Namespace::Doc`] under the key `{collection}/{id}`. Collection
//! and id are 1..=128 characters of `[A-Za-z0-9_.-]` after percent-decoding, so the
//! `/` separator is unambiguous and ids never need escaping in a `Location`.
//!
//! A document is a JSON object. It is validated on the way in (UTF-8, well-formed,
//! top-level object) and stored byte for byte as the client sent it, so a read returns
//! exactly what was written without re-serializing. Listing embeds each stored
//! document as JSON; a stored value that is not JSON (written through another edge) is
//! embedded as base64 with `"document_encoding":"base64"` rather than breaking the page.

use super::body::read_limited;
use super::conditions::{write_condition, WriteKind};
use super::encoding::{percent_decode, text_or_base64, PercentFlavour};
use super::kv::check_key;
use super::problem::Problem;
use super::query::{consistency_from_query, ReadQuery};
use super::reply;
use super::GatewayState;
use axum::extract::{Request, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use mimori_actors::kv::{Condition, KvError, Namespace, ScanPage};
use serde::Serialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The path every document route starts with.
pub(super) const DOCS_PATH_PREFIX: &str = "/v1/docs/";

/// Longest collection name or document id, in characters (= bytes, they are ASCII).
pub const NAME_CHARS_MAX: usize = 128;

/// Deepest nesting of objects and arrays in a document (the top-level object is 1).
pub const DOCUMENT_DEPTH_MAX: usize = 64;

/// Attempts at finding an unused id for `POST`. With 128 random bits a collision is
/// practically impossible; the bound keeps a broken random source from looping.
const CREATE_ATTEMPTS_MAX: u32 = 3;

/// `GET /v1/docs/{collection}/{id}`: the stored JSON with `ETag`, or 404.
pub async fn get_document(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let (collection, id) = document_path(request.uri().path())?;
    let consistency = consistency_from_query(request.uri().query())?;
    let key = document_key(&collection, &id);
    check_key(&key, state.limits())?;
    let found = state
        .kernel()
        .get(Namespace::Doc, &key, consistency)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    let versioned = found.ok_or_else(|| Problem::new("not_found", "no such document"))?;
    Ok(reply::stored(
        versioned.value,
        versioned.revision,
        reply::JSON,
    ))
}

/// `PUT /v1/docs/{collection}/{id}`: stores a JSON object, honouring `If-Match` and
/// `If-None-Match: *`; answers `{"revision":N}`.
pub async fn put_document(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let (collection, id) = document_path(parts.uri.path())?;
    let key = document_key(&collection, &id);
    check_key(&key, state.limits())?;
    let condition = write_condition(&parts.headers, WriteKind::Put)?;
    let document = read_limited(&parts.headers, body, state.options().body_bytes_max).await?;
    check_json_object(&document)?;
    let revision = state
        .kernel()
        .put(Namespace::Doc, &key, document, condition)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    Ok(reply::revision(revision))
}

/// `DELETE /v1/docs/{collection}/{id}`: answers `{"revision":N}`, or 404.
pub async fn delete_document(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let (collection, id) = document_path(request.uri().path())?;
    let key = document_key(&collection, &id);
    check_key(&key, state.limits())?;
    let condition = write_condition(request.headers(), WriteKind::Delete)?;
    let revision = state
        .kernel()
        .delete(Namespace::Doc, &key, condition)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    Ok(reply::revision(revision))
}

/// The body of a successful `POST`.
#[derive(Serialize)]
struct CreatedBody<'a> {
    id: &'a str,
    revision: u64,
}

/// `POST /v1/docs/{collection}`: stores a JSON object under a new random id (32 hex
/// characters); answers `201` with `Location` and `{"id":..,"revision":N}`.
///
/// The write is create-only, so an id collision can never overwrite a document.
/// `If-None-Match: *` is therefore redundant but accepted; `If-Match` can never hold
/// for a document that does not exist yet and answers 412, as RFC 9110 prescribes.
pub async fn create_document(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let collection = collection_path(parts.uri.path())?;
    if let Condition::RevisionIs(_) = write_condition(&parts.headers, WriteKind::Put)? {
        return Err(Problem::new(
            "condition_failed",
            "If-Match cannot hold for a document that is being created",
        ));
    }
    let document = read_limited(&parts.headers, body, state.options().body_bytes_max).await?;
    check_json_object(&document)?;

    for _attempt in 0..CREATE_ATTEMPTS_MAX {
        let id = new_document_id();
        let key = document_key(&collection, &id);
        check_key(&key, state.limits())?;
        // `Bytes` clones share the buffer; a retry does not copy the document.
        match state
            .kernel()
            .put(Namespace::Doc, &key, document.clone(), Condition::Absent)
            .await
        {
            Ok(revision) => {
                let location = format!("{DOCS_PATH_PREFIX}{collection}/{id}");
                let mut response = reply::json(
                    StatusCode::CREATED,
                    &CreatedBody {
                        id: &id,
                        revision: revision.0,
                    },
                    64,
                )?;
                // Collection and id are validated ASCII, so the header is always valid.
                if let Ok(location) = HeaderValue::try_from(location) {
                    response.headers_mut().insert(LOCATION, location);
                }
                return Ok(response);
            }
            Err(KvError::ConditionFailed { .. }) => continue,
            Err(error) => return Err(state.kernel_problem(&error)),
        }
    }
    Err(Problem::new(
        "internal",
        "could not find an unused document id",
    ))
}

/// One document of a listing page.
#[derive(Serialize)]
struct DocumentItemBody<'a> {
    id: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_encoding: Option<&'static str>,
    document: DocumentBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    document_encoding: Option<&'static str>,
    revision: u64,
}

/// A stored document: embedded as JSON when it is JSON, else as a base64 string.
#[derive(Serialize)]
#[serde(untagged)]
enum DocumentBody<'a> {
    Json(&'a RawValue),
    Text(Cow<'a, str>),
}

/// `GET /v1/docs/{collection}?prefix=&after=&limit=&consistency=`: documents in id
/// order. `prefix` and `after` are ids (or their beginnings); `next` is the last id
/// of the page when more may follow.
pub async fn list_documents(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let collection = collection_path(request.uri().path())?;
    let query = ReadQuery::parse(request.uri().query(), state.limits().scan_limit_max)?;
    let collection_prefix = document_key(&collection, "");
    let mut prefix = collection_prefix.clone();
    prefix.extend_from_slice(&query.prefix);
    let after = query.after.as_ref().map(|after| {
        let mut key = collection_prefix.clone();
        key.extend_from_slice(after);
        key
    });
    let page = state
        .kernel()
        .scan(
            Namespace::Doc,
            &prefix,
            after.as_deref(),
            query.limit,
            query.consistency,
        )
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    list_response(&page, collection_prefix.len())
}

fn list_response(page: &ScanPage, collection_prefix_bytes: usize) -> Result<Response, Problem> {
    // The kernel only returns keys under the prefix; `get` keeps a broken promise
    // from panicking.
    let id_of = |key: &[u8]| -> Vec<u8> {
        key.get(collection_prefix_bytes..)
            .unwrap_or_default()
            .to_vec()
    };
    let ids: Vec<Vec<u8>> = page.items.iter().map(|item| id_of(&item.key)).collect();
    let next_id = page.next.as_deref().map(id_of);
    let items = page
        .items
        .iter()
        .zip(&ids)
        .map(|(item, id)| {
            let (id, id_encoding) = text_or_base64(id);
            let (document, document_encoding) = embed_document(&item.value);
            DocumentItemBody {
                id,
                id_encoding,
                document,
                document_encoding,
                revision: item.revision.0,
            }
        })
        .collect();
    let capacity_bytes = page
        .items
        .iter()
        .map(|item| item.key.len() + item.value.len() + 64)
        .sum::<usize>()
        + 64;
    reply::json(
        StatusCode::OK,
        &reply::PageBody::new(items, next_id.as_deref()),
        capacity_bytes,
    )
}

fn embed_document(stored: &[u8]) -> (DocumentBody<'_>, Option<&'static str>) {
    let json = std::str::from_utf8(stored)
        .ok()
        .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
    match json {
        Some(raw) => (DocumentBody::Json(raw), None),
        None => {
            let (text, encoding) = text_or_base64(stored);
            // Valid UTF-8 that is not JSON still has to be marked, or a client would
            // take the string for the document.
            let (text, encoding) = match encoding {
                Some(encoding) => (text, encoding),
                None => (
                    Cow::Owned(super::encoding::base64_of(stored)),
                    super::encoding::BASE64_ENCODING,
                ),
            };
            (DocumentBody::Text(text), Some(encoding))
        }
    }
}

/// Any method on `/v1/docs/{collection}/`: the empty id is never valid.
pub async fn empty_id() -> Problem {
    Problem::invalid_input("the document id is empty; use /v1/docs/{collection}/{id}")
}

/// Refuses a body that is not a JSON object: `invalid_json` when it is not JSON at
/// all, `not_json_object` when it is JSON of another type.
pub fn check_json_object(document: &[u8]) -> Result<(), Problem> {
    // serde_json does not check UTF-8 inside strings it skips, so check it up front;
    // a stored document must be returnable as `application/json`.
    let text = std::str::from_utf8(document)
        .map_err(|_| Problem::new("invalid_json", "the document is not valid UTF-8"))?;
    let raw = serde_json::from_str::<&RawValue>(text).map_err(|error| {
        Problem::new(
            "invalid_json",
            format!("the document is not valid JSON: {error}"),
        )
    })?;
    if !raw.get().starts_with('{') {
        return Err(Problem::new(
            "not_json_object",
            "a document must be a JSON object ({...})",
        ));
    }
    let depth = nesting_depth(raw.get());
    if depth > DOCUMENT_DEPTH_MAX {
        return Err(Problem::invalid_input(format!(
            "the document nests objects and arrays {depth} levels deep; the limit is {DOCUMENT_DEPTH_MAX}"
        )));
    }
    Ok(())
}

/// How deeply `json` (well-formed) nests objects and arrays.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether `name` is a valid collection name or document id: 1..=128 characters of
/// `[A-Za-z0-9_.-]`.
pub fn is_valid_name(name: &[u8]) -> bool {
    (1..=NAME_CHARS_MAX).contains(&name.len())
        && name
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// The collection of a `/v1/docs/{collection}` path.
fn collection_path(path: &str) -> Result<String, Problem> {
    let encoded = path.strip_prefix(DOCS_PATH_PREFIX).unwrap_or_default();
    decode_name("collection", encoded)
}

/// Collection and id of a `/v1/docs/{collection}/{id}` path.
fn document_path(path: &str) -> Result<(String, String), Problem> {
    let rest = path.strip_prefix(DOCS_PATH_PREFIX).unwrap_or_default();
    let (collection, id) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((
        decode_name("collection", collection)?,
        decode_name("id", id)?,
    ))
}

pub(super) fn decode_name(what: &str, encoded: &str) -> Result<String, Problem> {
    let decoded = percent_decode(encoded.as_bytes(), PercentFlavour::Path)
        .map_err(|error| Problem::invalid_input(format!("{what}: {error}")))?;
    if !is_valid_name(&decoded) {
        return Err(Problem::invalid_input(format!(
            "the {what} must be 1 to {NAME_CHARS_MAX} characters of A-Z a-z 0-9 _ . -"
        )));
    }
    // Valid names are ASCII, hence UTF-8.
    String::from_utf8(decoded.into_owned())
        .map_err(|_| Problem::invalid_input(format!("the {what} is not UTF-8")))
}

/// The kernel key of a document: `{collection}/{id}`.
pub fn document_key(collection: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(collection.len() + 1 + id.len());
    key.extend_from_slice(collection.as_bytes());
    key.push(b'/');
    key.extend_from_slice(id.as_bytes());
    key
}

/// A fresh document id: 128 random bits as 32 lowercase hex characters.
fn new_document_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimori_actors::ids::Revision;
    use mimori_actors::kv::ScanItem;

    /// Proves the name rule: allowed characters, length 1..=128, nothing else.
    #[test]
    fn name_validation() {
        assert!(is_valid_name(b"users"));
        assert!(is_valid_name(b"A-z_0.9"));
        assert!(is_valid_name(&[b'x'; 128]));
        assert!(!is_valid_name(&[b'x'; 129]));
        assert!(!is_valid_name(b""));
        for bad in [
            &b"a/b"[..],
            b"a b",
            b"caf\xc3\xa9",
            b"a%2F",
            b"a+b",
            b"\xff",
        ] {
            assert!(!is_valid_name(bad), "{bad:?} was accepted");
        }
    }

    /// Proves paths split into collection and id after percent-decoding, and that a
    /// `/` inside the id (escaped or not) is refused.
    #[test]
    fn document_paths() {
        assert_eq!(
            document_path("/v1/docs/users/42").unwrap(),
            ("users".to_owned(), "42".to_owned())
        );
        assert_eq!(
            document_path("/v1/docs/us%65rs/4%32").unwrap(),
            ("users".to_owned(), "42".to_owned())
        );
        for bad in [
            "/v1/docs/users/a/b",
            "/v1/docs/users/a%2Fb",
            "/v1/docs/users/",
            "/v1/docs/us!ers/1",
            "/v1/docs/users/%zz",
        ] {
            assert_eq!(
                document_path(bad).unwrap_err().code(),
                "invalid_input",
                "{bad}"
            );
        }
        assert_eq!(collection_path("/v1/docs/users").unwrap(), "users");
        assert_eq!(document_key("users", "42"), b"users/42");
    }

    /// Proves only JSON objects are documents, with distinct codes for not-JSON and
    /// not-an-object.
    #[test]
    fn json_object_check() {
        assert!(check_json_object(br#" {"a": [1, {"b": null}]} "#).is_ok());
        assert!(check_json_object(b"{}").is_ok());
        for not_json in [&b""[..], b"{", b"{\"a\":}", b"{} {}", b"{\"a\":\"\xff\"}"] {
            assert_eq!(
                check_json_object(not_json).unwrap_err().code(),
                "invalid_json",
                "{not_json:?}"
            );
        }
        for not_object in [&b"[]"[..], b"1", b"\"text\"", b"null", b" [ {} ] "] {
            assert_eq!(
                check_json_object(not_object).unwrap_err().code(),
                "not_json_object",
                "{not_object:?}"
            );
        }
    }

    /// Proves the nesting limit counts objects and arrays, not brackets in strings.
    #[test]
    fn nesting_depth_limit() {
        assert_eq!(nesting_depth(r#"{"a": [{"b": "[[{{"}], "c": "\\"}"#), 3);
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(DOCUMENT_DEPTH_MAX),
            "1".to_owned() + &"}".repeat(DOCUMENT_DEPTH_MAX)
        );
        assert!(check_json_object(deep.as_bytes()).is_ok());
        let deeper = format!("{{\"a\":{deep}}}");
        assert_eq!(
            check_json_object(deeper.as_bytes()).unwrap_err().code(),
            "invalid_input"
        );
    }

    /// Proves generated ids are 32 lowercase hex characters, valid names, and differ.
    #[test]
    fn generated_ids() {
        let first = new_document_id();
        let second = new_document_id();
        assert_eq!(first.len(), 32);
        assert!(first
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
        assert!(is_valid_name(first.as_bytes()));
        assert_ne!(first, second);
    }

    /// Proves a listing strips the collection from ids, embeds stored JSON as JSON,
    /// and marks a stored value that is not JSON as base64.
    #[tokio::test]
    async fn listing_json_shape() {
        let page = ScanPage {
            items: vec![
                ScanItem {
                    key: b"users/1".to_vec(),
                    value: r#"{"name":"ada"}"#.into(),
                    revision: Revision(4),
                },
                ScanItem {
                    key: b"users/2".to_vec(),
                    value: "not json".into(),
                    revision: Revision(6),
                },
            ],
            next: Some(b"users/2".to_vec()),
        };
        let response = list_response(&page, b"users/".len()).unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "items": [
                    {"id": "1", "document": {"name": "ada"}, "revision": 4},
                    {"id": "2", "document": "bm90IGpzb24=", "document_encoding": "base64",
                     "revision": 6},
                ],
                "next": "2",
            })
        );
    }
}
