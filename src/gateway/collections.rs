//! Collections and document queries: `PUT|GET|DELETE /v1/collections/{name}`,
//! `GET /v1/collections` and `POST /v1/docs/{collection}/_query`.
//!
//! A collection needs no declaration to hold documents; declaring one gives it
//! secondary indexes. The definition lives in the cluster metadata; every shard
//! indexes its own documents in the background (`node::index_builder`), and the
//! state of each index (`building` with progress, then `ready`) is read from every
//! shard. Queries work at any time: a shard whose index is not ready yet scans.

use super::body::read_limited;
use super::docs::{decode_name, DOCS_PATH_PREFIX};
use super::problem::Problem;
use super::query::consistency_from_query;
use super::reply;
use super::GatewayState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use mimori_actors::docs::collection::CollectionDefinition;
use mimori_actors::docs::query::{Query, QueryRequest};
use mimori_actors::router::docs::CollectionStatus;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The path every collection route starts with.
const COLLECTIONS_PATH_PREFIX: &str = "/v1/collections/";
/// The id segment that names the query endpoint of a collection.
pub const QUERY_SEGMENT: &str = "_query";
/// Largest query or collection body, in bytes.
const BODY_BYTES_MAX: u64 = 256 * 1024;

/// `PUT /v1/collections/{name}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefineBody {
    #[serde(default)]
    indexes: Vec<String>,
}

/// `GET /v1/collections` body.
#[derive(Serialize)]
struct CollectionsBody<'a> {
    collections: &'a [CollectionStatus],
}

/// The name of a `/v1/collections/{name}` path.
fn collection_name(path: &str) -> Result<String, Problem> {
    let encoded = path
        .strip_prefix(COLLECTIONS_PATH_PREFIX)
        .unwrap_or_default();
    decode_name("collection", encoded)
}

/// `PUT /v1/collections/{name}` with `{"indexes": ["field", "a.b"]}`: declares the
/// collection or replaces its index list; answers the collection's status.
pub async fn define_collection(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let name = collection_name(parts.uri.path())?;
    let body = read_limited(&parts.headers, body, BODY_BYTES_MAX).await?;
    let body: DefineBody = serde_json::from_slice(&body).map_err(|error| {
        Problem::new(
            "invalid_json",
            format!("expected {{\"indexes\": [\"field\", ...]}}: {error}"),
        )
    })?;
    let definition =
        CollectionDefinition::new(name, body.indexes).map_err(Problem::invalid_input)?;
    state
        .kernel()
        .define_collection(definition.clone())
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    let status = state
        .kernel()
        .collection_status(&definition)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    reply::json(StatusCode::OK, &status, 1024)
}

/// `GET /v1/collections`: every declared collection with its indexes' state.
pub async fn list_collections(State(state): State<GatewayState>) -> Result<Response, Problem> {
    let collections = state
        .kernel()
        .collections()
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    reply::json(
        StatusCode::OK,
        &CollectionsBody {
            collections: &collections,
        },
        4096,
    )
}

/// `GET /v1/collections/{name}`: one declared collection, or 404.
pub async fn get_collection(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let name = collection_name(request.uri().path())?;
    let status = state
        .kernel()
        .collection(&name)
        .await
        .map_err(|error| state.kernel_problem(&error))?
        .ok_or_else(|| Problem::new("not_found", "no such collection is declared"))?;
    reply::json(StatusCode::OK, &status, 1024)
}

/// `DELETE /v1/collections/{name}`: forgets the definition and deletes every
/// document of the collection and its index entries.
pub async fn drop_collection(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let name = collection_name(request.uri().path())?;
    state
        .kernel()
        .drop_collection(&name)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    reply::json(StatusCode::OK, &serde_json::json!({ "dropped": name }), 256)
}

/// One document of a query page.
#[derive(Serialize)]
struct QueryHitBody<'a> {
    id: &'a str,
    revision: u64,
    document: &'a RawValue,
}

/// A query page.
#[derive(Serialize)]
struct QueryPageBody<'a> {
    documents: Vec<QueryHitBody<'a>>,
    cursor: Option<&'a str>,
    /// The indexed field the shards used; `null` when any of them scanned.
    index: Option<&'a str>,
    /// Documents read on all shards (the cost of the query).
    examined: u64,
}

/// `POST /v1/docs/{collection}/_query` with a [`QueryRequest`] body.
pub async fn query_documents(
    state: GatewayState,
    collection: String,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let consistency = consistency_from_query(parts.uri.query())?;
    let body = read_limited(&parts.headers, body, BODY_BYTES_MAX).await?;
    let query_request: QueryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        QueryRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            Problem::new("invalid_json", format!("the query is not valid: {error}"))
        })?
    };
    let query = Query::compile(&query_request).map_err(Problem::invalid_input)?;
    let page = state
        .kernel()
        .query(&collection, query, consistency)
        .await
        .map_err(|error| state.kernel_problem(&error))?;
    let documents = page
        .hits
        .iter()
        .filter_map(|hit| {
            // The shards serialized these from parsed JSON.
            let text = std::str::from_utf8(&hit.document).ok()?;
            let document: &RawValue = serde_json::from_str(text).ok()?;
            Some(QueryHitBody {
                id: &hit.position.id,
                revision: hit.revision.0,
                document,
            })
        })
        .collect();
    let capacity_bytes = page
        .hits
        .iter()
        .map(|hit| hit.document.len() + hit.position.id.len() + 48)
        .sum::<usize>()
        + 128;
    reply::json(
        StatusCode::OK,
        &QueryPageBody {
            documents,
            cursor: page.cursor.as_deref(),
            index: page.index.as_deref(),
            examined: page.examined,
        },
        capacity_bytes,
    )
}

/// `POST /v1/docs/{collection}/{id}`: only `_query` takes a POST.
pub async fn post_to_document(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, Problem> {
    let rest = request
        .uri()
        .path()
        .strip_prefix(DOCS_PATH_PREFIX)
        .unwrap_or_default();
    let (collection, id) = rest.split_once('/').unwrap_or((rest, ""));
    if id != QUERY_SEGMENT {
        return Err(Problem::new(
            "method_not_allowed",
            "POST on a document is not supported; use PUT to write it, or POST /v1/docs/{collection}/_query to query",
        ));
    }
    let collection = decode_name("collection", collection)?;
    query_documents(state, collection, request).await
}
