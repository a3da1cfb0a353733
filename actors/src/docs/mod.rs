//! Documents beyond single-key access: JSON filters, secondary indexes and queries.
//!
//! Pure parts live here: the value encoding both indexes and comparisons use
//! ([`value_key`]), filters ([`filter`]), queries and the merge of shard answers
//! ([`query`]) and collection definitions ([`collection`]). Index entries are kept
//! by the shard state machine (`storage::doc_index`), in the same apply as the
//! document write; `node::index_builder` is the node task that keeps every
//! shard's index list in step with the metadata and builds new indexes in the
//! background.

pub mod collection;
pub mod filter;
pub mod query;
pub mod value_key;
