//! Document queries: the request a client sends, the checked [`Query`] the shards
//! run, and the merge of the shards' pages into one ordered page with a cursor.
//!
//! Results are ordered by *position*: the encoded value of the sort field (empty
//! when there is no sort field or the document lacks it, so such documents come
//! first) and then the document id; `"order": "desc"` reverses the whole order.
//! Documents live on every shard, so every shard is asked; each answers its matches
//! after the cursor in that order, and how far it looked ([`ShardQueryPage`]). The
//! merge keeps only what every shard has looked at, so a page is exact even when a
//! shard stopped early on its time budget: the cursor then points at the end of what
//! all of them covered, and the next page continues there.

use super::filter::{FieldPath, Filter, FILTER_LIMITS};
use super::value_key;
use crate::ids::Revision;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Documents per page when the request names no limit.
pub const QUERY_LIMIT_DEFAULT: u32 = 100;
/// Most documents one page may return.
pub const QUERY_LIMIT_MAX: u32 = 1_000;
/// Most fields one projection may name.
pub const PROJECTION_FIELDS_MAX: usize = 32;
/// Most bytes of documents one merged page carries.
pub const QUERY_PAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest cursor accepted, in characters.
const CURSOR_CHARS_MAX: usize = 16 * 1024;
/// Version marker of the cursor's encoding.
const CURSOR_FORMAT_VERSION: u8 = 1;

/// The JSON body of `POST /v1/docs/{collection}/_query`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The filter (`docs::filter`); every document when absent.
    #[serde(default)]
    pub filter: Option<Value>,
    /// Dotted paths to return; the whole document when absent.
    #[serde(default)]
    pub projection: Option<Vec<String>>,
    /// The field to order by; document id order when absent.
    #[serde(default)]
    pub sort: Option<SortRequest>,
    /// Most documents to return (1..=1000, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `"sort": {"field": "age", "order": "desc"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortRequest {
    pub field: String,
    #[serde(default)]
    pub order: SortOrder,
}

/// Ascending (the default) or descending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

/// Where a document falls in a query's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The sort field's encoded value; empty without a sort field or value.
    #[serde(with = "serde_bytes")]
    pub sort_key: Vec<u8>,
    pub id: String,
}

/// A checked query, as the shards run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub filter: Filter,
    pub projection: Option<Vec<FieldPath>>,
    pub sort: Option<FieldPath>,
    pub descending: bool,
    pub limit: u32,
    /// Only positions strictly after this one (in query order).
    pub after: Option<Position>,
}

/// One matching document, projected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryHit {
    pub position: Position,
    pub revision: Revision,
    /// The (projected) document as JSON text.
    pub document: Bytes,
}

/// What one shard found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardQueryPage {
    /// Matches after the cursor, in query order, at most `limit + 1`.
    pub hits: Vec<QueryHit>,
    /// `None` when the shard looked at everything after the cursor; otherwise the
    /// last position it looked at (every match up to it is in `hits`).
    pub examined_through: Option<Position>,
    /// The indexed field the shard used, if any.
    pub index: Option<String>,
    /// Documents the shard read.
    pub examined: u64,
}

/// One page of a query's results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryPage {
    pub hits: Vec<QueryHit>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub cursor: Option<String>,
    /// The indexed field every shard used, if they all used one.
    pub index: Option<String>,
    /// Documents read on all shards.
    pub examined: u64,
}

impl Query {
    /// Checks a request: filter, projection and sort paths, limit, cursor.
    pub fn compile(request: &QueryRequest) -> Result<Query, String> {
        let filter = match &request.filter {
            None => Filter::everything(),
            Some(filter) => Filter::parse(filter, FILTER_LIMITS)?,
        };
        let projection = match &request.projection {
            None => None,
            Some(fields) => {
                if fields.len() > PROJECTION_FIELDS_MAX {
                    return Err(format!(
                        "the projection names {} fields; the limit is {PROJECTION_FIELDS_MAX}",
                        fields.len()
                    ));
                }
                Some(
                    fields
                        .iter()
                        .map(|field| FieldPath::parse(field))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
        };
        let (sort, descending) = match &request.sort {
            None => (None, false),
            Some(sort) => (
                Some(FieldPath::parse(&sort.field)?),
                sort.order == SortOrder::Desc,
            ),
        };
        let limit = request.limit.unwrap_or(QUERY_LIMIT_DEFAULT);
        if limit == 0 || limit > QUERY_LIMIT_MAX {
            return Err(format!("limit must be 1..={QUERY_LIMIT_MAX}, not {limit}"));
        }
        let after = request.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Query {
            filter,
            projection,
            sort,
            descending,
            limit,
            after,
        })
    }

    /// The position of document `id`.
    pub fn position_of(&self, id: &str, document: &Value) -> Position {
        let sort_key = self
            .sort
            .as_ref()
            .and_then(|sort| sort.lookup(document))
            .map(value_key::encode)
            .unwrap_or_default();
        Position {
            sort_key,
            id: id.to_string(),
        }
    }

    /// `left` against `right` in this query's order.
    pub fn order(&self, left: &Position, right: &Position) -> Ordering {
        let ascending = (&left.sort_key, &left.id).cmp(&(&right.sort_key, &right.id));
        if self.descending {
            ascending.reverse()
        } else {
            ascending
        }
    }

    /// Whether `position` comes after the cursor.
    pub fn is_after_cursor(&self, position: &Position) -> bool {
        self.after
            .as_ref()
            .is_none_or(|after| self.order(position, after) == Ordering::Greater)
    }

    /// The hit for a matching document: projected and serialized.
    pub fn hit(&self, position: Position, revision: Revision, document: &Value) -> QueryHit {
        let projected = match &self.projection {
            None => serde_json::to_vec(document),
            Some(fields) => serde_json::to_vec(&project(document, fields)),
        };
        QueryHit {
            position,
            revision,
            // Serializing a parsed value cannot fail.
            document: Bytes::from(projected.unwrap_or_default()),
        }
    }

    /// Merges the shards' pages into one page of at most `limit` hits.
    pub fn merge(&self, pages: Vec<ShardQueryPage>) -> QueryPage {
        let mut bound: Option<Position> = None;
        let mut hits = Vec::new();
        let mut examined = 0;
        let mut indexes: Vec<Option<String>> = Vec::with_capacity(pages.len());
        for page in pages {
            examined += page.examined;
            indexes.push(page.index);
            if let Some(through) = page.examined_through {
                if bound
                    .as_ref()
                    .is_none_or(|bound| self.order(&through, bound) == Ordering::Less)
                {
                    bound = Some(through);
                }
            }
            hits.extend(page.hits);
        }
        if let Some(bound) = &bound {
            hits.retain(|hit| self.order(&hit.position, bound) != Ordering::Greater);
        }
        hits.sort_by(|left, right| self.order(&left.position, &right.position));
        let limit = self.limit as usize;
        let mut bytes = 0usize;
        let within_bytes = hits
            .iter()
            .enumerate()
            .take_while(|(at, hit)| {
                bytes += hit.document.len();
                *at == 0 || bytes <= QUERY_PAGE_BYTES_MAX
            })
            .count();
        let kept = limit.min(within_bytes);
        let cursor_at = if hits.len() > kept {
            hits.truncate(kept);
            hits.last().map(|hit| hit.position.clone())
        } else {
            // Everything up to the bound is here; continue after it if a shard
            // stopped early.
            bound
        };
        let index = match indexes.first() {
            Some(Some(first)) if indexes.iter().all(|index| index.as_ref() == Some(first)) => {
                Some(first.clone())
            }
            _ => None,
        };
        QueryPage {
            hits,
            cursor: cursor_at.map(|position| encode_cursor(&position)),
            index,
            examined,
        }
    }
}

/// `document` with only `fields` (missing ones are left out).
fn project(document: &Value, fields: &[FieldPath]) -> Value {
    let mut projected = Value::Object(Map::new());
    for field in fields {
        let Some(value) = field.lookup(document) else {
            continue;
        };
        let mut at = &mut projected;
        let mut segments = field.as_str().split('.').peekable();
        while let Some(segment) = segments.next() {
            let Value::Object(members) = at else { break };
            if segments.peek().is_none() {
                members.insert(segment.to_string(), value.clone());
                break;
            }
            at = members
                .entry(segment.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    projected
}

/// The cursor's encoded form: a version marker and the position.
#[derive(Serialize, Deserialize)]
struct CursorRecord {
    version: u8,
    position: Position,
}

/// A cursor for continuing after `position`: hex of its rmp-serde encoding.
pub fn encode_cursor(position: &Position) -> String {
    let record = CursorRecord {
        version: CURSOR_FORMAT_VERSION,
        position: position.clone(),
    };
    // Serializing an owned, well-formed struct into a Vec cannot fail.
    let bytes = rmp_serde::to_vec_named(&record).unwrap_or_default();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The position a cursor continues after.
pub fn decode_cursor(cursor: &str) -> Result<Position, String> {
    let malformed = || "the cursor is not one this server handed out".to_string();
    if cursor.len() > CURSOR_CHARS_MAX || cursor.len() % 2 != 0 || !cursor.is_ascii() {
        return Err(malformed());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&cursor[at..at + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| malformed())?;
    let record: CursorRecord = rmp_serde::from_slice(&bytes).map_err(|_| malformed())?;
    if record.version != CURSOR_FORMAT_VERSION {
        return Err(malformed());
    }
    Ok(record.position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(request: Value) -> Query {
        let request: QueryRequest = serde_json::from_value(request).unwrap();
        Query::compile(&request).unwrap()
    }

    fn hit(query: &Query, id: &str, document: Value) -> QueryHit {
        query.hit(query.position_of(id, &document), Revision(1), &document)
    }

    fn ids(page: &QueryPage) -> Vec<&str> {
        page.hits
            .iter()
            .map(|hit| hit.position.id.as_str())
            .collect()
    }

    /// Proves the merge orders across shards, truncates to the limit with a cursor at
    /// the last hit, and never returns what a shard that stopped early did not cover.
    #[test]
    fn merge_orders_truncates_and_respects_early_stops() {
        let query = query(json!({"sort": {"field": "n", "order": "desc"}, "limit": 2}));
        let shard = |hits: Vec<QueryHit>, through: Option<Position>| ShardQueryPage {
            hits,
            examined_through: through,
            index: None,
            examined: 3,
        };
        let page = query.merge(vec![
            shard(
                vec![
                    hit(&query, "a", json!({"n": 5})),
                    hit(&query, "b", json!({"n": 1})),
                ],
                None,
            ),
            shard(vec![hit(&query, "c", json!({"n": 3}))], None),
        ]);
        assert_eq!(ids(&page), ["a", "c"]);
        assert_eq!(page.examined, 6);
        let cursor = page.cursor.clone().unwrap();
        assert_eq!(decode_cursor(&cursor).unwrap().id, "c");

        // The second shard stopped after n = 4: the first shard's n = 3 may not be
        // the next hit overall, so the page ends at the bound.
        let stopped = query.position_of("x", &json!({"n": 4}));
        let page = query.merge(vec![
            shard(
                vec![
                    hit(&query, "a", json!({"n": 5})),
                    hit(&query, "b", json!({"n": 3})),
                ],
                None,
            ),
            shard(vec![], Some(stopped.clone())),
        ]);
        assert_eq!(ids(&page), ["a"]);
        assert_eq!(
            decode_cursor(page.cursor.as_deref().unwrap()).unwrap(),
            stopped
        );

        let page = query.merge(vec![shard(vec![], None), shard(vec![], None)]);
        assert!(page.hits.is_empty());
        assert_eq!(page.cursor, None);
    }

    /// Proves a projection keeps only the named paths, nested as in the document.
    #[test]
    fn projection_keeps_named_paths() {
        let query = query(json!({"projection": ["name", "address.city", "missing.x"]}));
        let hit = hit(
            &query,
            "a",
            json!({"name": "ann", "age": 3, "address": {"city": "Oslo", "zip": "0150"}}),
        );
        let document: Value = serde_json::from_slice(&hit.document).unwrap();
        assert_eq!(
            document,
            json!({"name": "ann", "address": {"city": "Oslo"}})
        );
    }

    /// Proves bad requests are refused with a reason.
    #[test]
    fn refuses_bad_requests() {
        let refused = |request: Value| {
            let request: QueryRequest = serde_json::from_value(request).unwrap();
            Query::compile(&request).unwrap_err()
        };
        assert!(refused(json!({"limit": 0})).contains("limit"));
        assert!(refused(json!({"limit": 1001})).contains("limit"));
        assert!(refused(json!({"cursor": "zz"})).contains("cursor"));
        assert!(refused(json!({"cursor": "abc"})).contains("cursor"));
        assert!(refused(json!({"sort": {"field": ""}})).contains("field path"));
        let many: Vec<String> = (0..=PROJECTION_FIELDS_MAX)
            .map(|f| format!("f{f}"))
            .collect();
        assert!(refused(json!({ "projection": many })).contains("projection"));
        assert!(serde_json::from_value::<QueryRequest>(json!({"filtr": {}})).is_err());
    }

    /// Proves documents without the sort field sort first, and ties break by id.
    #[test]
    fn positions_order_missing_first_then_id() {
        let query = query(json!({"sort": {"field": "n"}}));
        let missing = query.position_of("z", &json!({}));
        let small_b = query.position_of("b", &json!({"n": 1}));
        let small_a = query.position_of("a", &json!({"n": 1}));
        assert_eq!(query.order(&missing, &small_a), Ordering::Less);
        assert_eq!(query.order(&small_a, &small_b), Ordering::Less);
        assert_eq!(decode_cursor(&encode_cursor(&small_b)).unwrap(), small_b);
    }
}
