//! The values the client API takes and returns.

use super::ClientError;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

/// A precondition on the current revision of a key or document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Write only if it exists with exactly this revision (`If-Match`).
    RevisionIs(u64),
    /// Write only if it does not exist (`If-None-Match: *`).
    Absent,
}

/// A value with the revision of its last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub revision: u64,
}

/// One key of a scan page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanItem {
    pub key: Vec<u8>,
    pub value: Bytes,
    pub revision: u64,
}

/// One page of a scan; `next` is the key to continue after, when more follow.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScanPage {
    pub items: Vec<ScanItem>,
    pub next: Option<Vec<u8>>,
}

/// A JSON document with its id and revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub id: String,
    pub revision: u64,
    pub body: Value,
}

/// One page of a query.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryPage {
    pub documents: Vec<Document>,
    /// Pass to [`Query::cursor`] for the next page; `None` on the last page.
    pub cursor: Option<String>,
    /// The indexed field every shard used, if any.
    pub index: Option<String>,
    /// Documents the servers read to answer.
    pub examined: u64,
}

/// A document query: filter, projection, sort, limit and cursor, serialised as
/// the body of `POST /v1/docs/{collection}/_query` (see the HTTP API docs).
///
/// ```
/// use mimori::client::Query;
/// use serde_json::json;
/// let query = Query::new()
///     .filter(json!({"address.city": "Oslo", "age": {"$gte": 18}}))
///     .project(["name", "age"])
///     .sort_by_desc("age")
///     .limit(20);
/// assert_eq!(query.limit_value(), 20);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    filter: Option<Value>,
    projection: Option<Vec<String>>,
    sort: Option<(String, bool)>,
    limit: Option<u32>,
    cursor: Option<String>,
    stale: bool,
}

impl Query {
    /// Every document, in id order, 100 per page.
    pub fn new() -> Query {
        Query::default()
    }

    /// Only documents matching `filter` (a JSON object).
    pub fn filter(mut self, filter: Value) -> Query {
        self.filter = Some(filter);
        self
    }

    /// Only these dotted paths of each document.
    pub fn project<I, S>(mut self, fields: I) -> Query
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.projection = Some(fields.into_iter().map(Into::into).collect());
        self
    }

    /// Ordered by `field`, ascending.
    pub fn sort_by(mut self, field: impl Into<String>) -> Query {
        self.sort = Some((field.into(), false));
        self
    }

    /// Ordered by `field`, descending.
    pub fn sort_by_desc(mut self, field: impl Into<String>) -> Query {
        self.sort = Some((field.into(), true));
        self
    }

    /// At most `limit` documents per page (1..=1000).
    pub fn limit(mut self, limit: u32) -> Query {
        self.limit = Some(limit);
        self
    }

    /// The page after the one that returned `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Query {
        self.cursor = Some(cursor.into());
        self
    }

    /// Served by each shard's local replica as it is (may miss recent writes).
    pub fn stale(mut self) -> Query {
        self.stale = true;
        self
    }

    /// The page size asked for.
    pub fn limit_value(&self) -> u32 {
        self.limit.unwrap_or(100)
    }

    pub(crate) fn is_stale(&self) -> bool {
        self.stale
    }

    /// The request body.
    pub fn body(&self) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        if let Some(filter) = &self.filter {
            body.insert("filter".into(), filter.clone());
        }
        if let Some(projection) = &self.projection {
            body.insert("projection".into(), json!(projection));
        }
        if let Some((field, descending)) = &self.sort {
            let order = if *descending { "desc" } else { "asc" };
            body.insert("sort".into(), json!({"field": field, "order": order}));
        }
        if let Some(limit) = self.limit {
            body.insert("limit".into(), json!(limit));
        }
        if let Some(cursor) = &self.cursor {
            body.insert("cursor".into(), json!(cursor));
        }
        serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
    }
}

impl QueryPage {
    pub(crate) fn parse(body: &[u8]) -> Result<QueryPage, ClientError> {
        #[derive(Deserialize)]
        struct Hit {
            id: String,
            revision: u64,
            document: Value,
        }
        #[derive(Deserialize)]
        struct Page {
            documents: Vec<Hit>,
            cursor: Option<String>,
            index: Option<String>,
            #[serde(default)]
            examined: u64,
        }
        let page: Page = super::parse_json(body)?;
        Ok(QueryPage {
            documents: page
                .documents
                .into_iter()
                .map(|hit| Document {
                    id: hit.id,
                    revision: hit.revision,
                    body: hit.document,
                })
                .collect(),
            cursor: page.cursor,
            index: page.index,
            examined: page.examined,
        })
    }
}

impl ScanPage {
    /// Reads a scan answer, undoing the base64 of keys and values that are not
    /// UTF-8.
    pub(crate) fn parse(body: &[u8]) -> Result<ScanPage, ClientError> {
        #[derive(Deserialize)]
        struct Item {
            key: String,
            #[serde(default)]
            key_encoding: Option<String>,
            value: String,
            #[serde(default)]
            value_encoding: Option<String>,
            revision: u64,
        }
        #[derive(Deserialize)]
        struct Page {
            items: Vec<Item>,
            next: Option<String>,
            #[serde(default)]
            next_encoding: Option<String>,
        }
        let decode = |text: String, encoding: Option<String>| -> Result<Vec<u8>, ClientError> {
            match encoding.as_deref() {
                None => Ok(text.into_bytes()),
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|error| {
                        ClientError::Protocol(format!("bad base64 in a scan: {error}"))
                    }),
                Some(other) => Err(ClientError::Protocol(format!("unknown encoding {other:?}"))),
            }
        };
        let page: Page = super::parse_json(body)?;
        let items = page
            .items
            .into_iter()
            .map(|item| {
                Ok(ScanItem {
                    key: decode(item.key, item.key_encoding)?,
                    value: Bytes::from(decode(item.value, item.value_encoding)?),
                    revision: item.revision,
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let next = page
            .next
            .map(|next| decode(next, page.next_encoding))
            .transpose()?;
        Ok(ScanPage { items, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the query body the server reads.
    #[test]
    fn query_body_golden_json() {
        let query = Query::new()
            .filter(json!({"age": {"$gt": 3}}))
            .project(["name"])
            .sort_by_desc("age")
            .limit(5)
            .cursor("ab");
        let body: Value = serde_json::from_slice(&query.body()).unwrap();
        assert_eq!(
            body,
            json!({"filter": {"age": {"$gt": 3}}, "projection": ["name"],
                   "sort": {"field": "age", "order": "desc"}, "limit": 5, "cursor": "ab"})
        );
        assert_eq!(Query::new().body(), b"{}");
    }

    /// Proves scan pages decode plain and base64 keys, values and `next`.
    #[test]
    fn scan_pages_decode() {
        let page = ScanPage::parse(
            br#"{"items":[{"key":"a","value":"v","revision":3},
                {"key":"/w==","key_encoding":"base64","value":"AA==","value_encoding":"base64","revision":4}],
                "next":"/w==","next_encoding":"base64"}"#,
        )
        .unwrap();
        assert_eq!(page.items[0].key, b"a");
        assert_eq!(page.items[1].key, [0xff]);
        assert_eq!(page.items[1].value, Bytes::from_static(&[0]));
        assert_eq!(page.next, Some(vec![0xff]));
        assert!(ScanPage::parse(b"[]").is_err());
    }
}
