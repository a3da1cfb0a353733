//! Query filters: parsing a JSON filter into a [`Filter`] and matching documents.
//!
//! A filter is a JSON object. Each member is either a field test
//! (`"address.city": "Oslo"`, `"age": {"$gte": 18, "$lt": 65}`) or a logical operator
//! (`"$and": [..]`, `"$or": [..]`); members are ANDed. Field names are dotted paths
//! into nested objects (arrays are not traversed). Operators:
//!
//! | operator | matches when the field |
//! |---|---|
//! | value, `$eq` | exists and equals the value (a value that is an object without `$` keys is a literal) |
//! | `$ne` | is missing or differs |
//! | `$gt $gte $lt $lte` | exists, has the operand's type, and compares so |
//! | `$in` | exists and equals one of the listed values |
//! | `$exists` | exists (`true`) or is missing (`false`) |
//!
//! Comparisons use the encoding of `docs::value_key`, the same bytes the index holds,
//! so index-backed and scanning evaluation agree by construction. Every dimension of a
//! filter is bounded ([`FilterLimits`]); a filter over a limit is refused, not cut.

use super::value_key;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Limits on one filter.
#[derive(Clone, Copy, Debug)]
pub struct FilterLimits {
    /// Deepest nesting of `$and`/`$or`.
    pub depth_max: u32,
    /// Most field tests in the whole filter.
    pub tests_max: u32,
    /// Most values of one `$in`.
    pub in_values_max: u32,
}

/// The limits every query is held to.
pub const FILTER_LIMITS: FilterLimits = FilterLimits {
    depth_max: 8,
    tests_max: 64,
    in_values_max: 256,
};

/// Longest field path, in bytes.
pub const FIELD_PATH_BYTES_MAX: usize = 200;
/// Most segments of a field path.
pub const FIELD_PATH_SEGMENTS_MAX: usize = 16;

/// A dotted path into a document, checked against the limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FieldPath(String);

impl FieldPath {
    /// Checks `path`: 1..=200 bytes, at most 16 non-empty segments, no segment
    /// starting with `$`.
    pub fn parse(path: &str) -> Result<FieldPath, String> {
        if path.is_empty() || path.len() > FIELD_PATH_BYTES_MAX {
            return Err(format!(
                "field path {path:?} must be 1..={FIELD_PATH_BYTES_MAX} bytes"
            ));
        }
        let segments = path.split('.').count();
        if segments > FIELD_PATH_SEGMENTS_MAX {
            return Err(format!(
                "field path {path:?} has {segments} segments; the limit is {FIELD_PATH_SEGMENTS_MAX}"
            ));
        }
        if path.split('.').any(|segment| segment.is_empty()) {
            return Err(format!("field path {path:?} has an empty segment"));
        }
        if path.split('.').any(|segment| segment.starts_with('$')) {
            return Err(format!(
                "field path {path:?} has a segment starting with '$' (an operator in the wrong place?)"
            ));
        }
        Ok(FieldPath(path.to_string()))
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value at this path in `document`, if every step is an object member.
    pub fn lookup<'document>(&self, document: &'document Value) -> Option<&'document Value> {
        let mut value = document;
        for segment in self.0.split('.') {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }
}

/// One test of one field, with its operands already encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Test {
    Eq(#[serde(with = "serde_bytes")] Vec<u8>),
    Ne(#[serde(with = "serde_bytes")] Vec<u8>),
    Gt(#[serde(with = "serde_bytes")] Vec<u8>),
    Gte(#[serde(with = "serde_bytes")] Vec<u8>),
    Lt(#[serde(with = "serde_bytes")] Vec<u8>),
    Lte(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Sorted, without duplicates.
    In(Vec<Vec<u8>>),
    Exists(bool),
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    /// Matches when all match (the empty `And` matches everything).
    And(Vec<Filter>),
    /// Matches when any matches (the empty `Or` matches nothing).
    Or(Vec<Filter>),
    Field {
        path: FieldPath,
        test: Test,
    },
}

/// The type tag an encoded value starts with (booleans share one).
pub fn type_tag(encoded: &[u8]) -> u8 {
    encoded.first().copied().unwrap_or(0)
}

impl Test {
    /// Whether a field with `value` (encoded; `None` when missing) passes.
    pub fn passes(&self, value: Option<&[u8]>) -> bool {
        let ordered = |operand: &[u8], accept: fn(std::cmp::Ordering) -> bool| {
            value.is_some_and(|value| {
                type_tag(value) == type_tag(operand) && accept(value.cmp(operand))
            })
        };
        match self {
            Test::Eq(operand) => value == Some(operand.as_slice()),
            Test::Ne(operand) => value != Some(operand.as_slice()),
            Test::Gt(operand) => ordered(operand, std::cmp::Ordering::is_gt),
            Test::Gte(operand) => ordered(operand, std::cmp::Ordering::is_ge),
            Test::Lt(operand) => ordered(operand, std::cmp::Ordering::is_lt),
            Test::Lte(operand) => ordered(operand, std::cmp::Ordering::is_le),
            Test::In(operands) => value.is_some_and(|value| {
                operands
                    .binary_search_by(|o| o.as_slice().cmp(value))
                    .is_ok()
            }),
            Test::Exists(wanted) => value.is_some() == *wanted,
        }
    }
}

impl Filter {
    /// The filter that matches every document.
    pub fn everything() -> Filter {
        Filter::And(Vec::new())
    }

    /// Parses a JSON filter, holding it to `limits`.
    pub fn parse(filter: &Value, limits: FilterLimits) -> Result<Filter, String> {
        let mut tests = 0u32;
        let parsed = parse_object(filter, limits, 0, &mut tests)?;
        Ok(parsed)
    }

    /// Whether `document` matches.
    pub fn matches(&self, document: &Value) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|filter| filter.matches(document)),
            Filter::Or(any) => any.iter().any(|filter| filter.matches(document)),
            Filter::Field { path, test } => {
                let value = path.lookup(document).map(value_key::encode);
                test.passes(value.as_deref())
            }
        }
    }

    /// The field tests every match must pass: the tests of a top-level field, or
    /// of `$and`s all the way down (an `$or` promises nothing about one field).
    pub fn required_tests(&self) -> Vec<(&FieldPath, &Test)> {
        let mut tests = Vec::new();
        self.collect_required(&mut tests);
        tests
    }

    fn collect_required<'filter>(
        &'filter self,
        tests: &mut Vec<(&'filter FieldPath, &'filter Test)>,
    ) {
        match self {
            Filter::And(all) => all.iter().for_each(|filter| filter.collect_required(tests)),
            Filter::Or(any) if any.len() == 1 => any[0].collect_required(tests),
            Filter::Or(_) => {}
            Filter::Field { path, test } => tests.push((path, test)),
        }
    }
}

fn parse_object(
    filter: &Value,
    limits: FilterLimits,
    depth: u32,
    tests: &mut u32,
) -> Result<Filter, String> {
    if depth > limits.depth_max {
        return Err(format!(
            "the filter nests $and/$or deeper than {} levels",
            limits.depth_max
        ));
    }
    let members = filter
        .as_object()
        .ok_or_else(|| format!("a filter must be a JSON object, not {}", kind(filter)))?;
    let mut all = Vec::with_capacity(members.len());
    for (name, operand) in members {
        match name.as_str() {
            "$and" | "$or" => {
                let items = operand
                    .as_array()
                    .ok_or_else(|| format!("{name} takes an array of filters"))?;
                let parsed = items
                    .iter()
                    .map(|item| parse_object(item, limits, depth + 1, tests))
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if name == "$and" {
                    Filter::And(parsed)
                } else {
                    Filter::Or(parsed)
                });
            }
            other if other.starts_with('$') => {
                return Err(format!(
                    "unknown logical operator {other:?} (known: $and, $or)"
                ))
            }
            path => {
                let path = FieldPath::parse(path)?;
                for test in parse_tests(operand, limits)? {
                    *tests += 1;
                    if *tests > limits.tests_max {
                        return Err(format!(
                            "the filter has more than {} field tests",
                            limits.tests_max
                        ));
                    }
                    all.push(Filter::Field {
                        path: path.clone(),
                        test,
                    });
                }
            }
        }
    }
    Ok(if all.len() == 1 {
        all.pop().unwrap_or_else(Filter::everything)
    } else {
        Filter::And(all)
    })
}

/// Whether `value` is an operator object (`{"$gt": 1}`) rather than a literal.
fn is_operator_object(members: &Map<String, Value>) -> bool {
    members.keys().any(|key| key.starts_with('$'))
}

fn parse_tests(operand: &Value, limits: FilterLimits) -> Result<Vec<Test>, String> {
    let Some(members) = operand
        .as_object()
        .filter(|members| is_operator_object(members))
    else {
        return Ok(vec![Test::Eq(value_key::encode(operand))]);
    };
    let mut tests = Vec::with_capacity(members.len());
    for (operator, value) in members {
        let encoded = || value_key::encode(value);
        let test = match operator.as_str() {
            "$eq" => Test::Eq(encoded()),
            "$ne" => Test::Ne(encoded()),
            "$gt" => Test::Gt(encoded()),
            "$gte" => Test::Gte(encoded()),
            "$lt" => Test::Lt(encoded()),
            "$lte" => Test::Lte(encoded()),
            "$in" => {
                let values = value
                    .as_array()
                    .ok_or_else(|| "$in takes an array of values".to_string())?;
                if values.len() > limits.in_values_max as usize {
                    return Err(format!(
                        "$in lists {} values; the limit is {}",
                        values.len(),
                        limits.in_values_max
                    ));
                }
                let mut encoded: Vec<Vec<u8>> = values.iter().map(value_key::encode).collect();
                encoded.sort_unstable();
                encoded.dedup();
                Test::In(encoded)
            }
            "$exists" => Test::Exists(
                value
                    .as_bool()
                    .ok_or_else(|| "$exists takes true or false".to_string())?,
            ),
            other => {
                return Err(format!(
                    "unknown operator {other:?} (known: $eq $ne $gt $gte $lt $lte $in $exists)"
                ))
            }
        };
        tests.push(test);
    }
    Ok(tests)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(filter: Value, document: Value) -> bool {
        Filter::parse(&filter, FILTER_LIMITS)
            .unwrap_or_else(|error| panic!("{filter}: {error}"))
            .matches(&document)
    }

    /// Proves each operator's documented meaning, including the missing-field and
    /// type-bracketing cases.
    #[test]
    fn operators_mean_what_the_table_says() {
        let document = json!({"age": 30, "name": "ann", "address": {"city": "Oslo"}, "tags": ["a"], "none": null});
        assert!(matches(json!({}), document.clone()));
        assert!(matches(json!({"age": 30}), document.clone()));
        assert!(matches(json!({"age": 30.0}), document.clone()));
        assert!(!matches(json!({"age": "30"}), document.clone()));
        assert!(matches(json!({"address.city": "Oslo"}), document.clone()));
        assert!(matches(
            json!({"address": {"city": "Oslo"}}),
            document.clone()
        ));
        assert!(matches(json!({"tags": ["a"]}), document.clone()));
        assert!(matches(json!({"none": null}), document.clone()));
        assert!(!matches(json!({"missing": null}), document.clone()));
        assert!(matches(
            json!({"age": {"$gt": 29, "$lte": 30}}),
            document.clone()
        ));
        assert!(!matches(json!({"age": {"$gt": 30}}), document.clone()));
        assert!(
            !matches(json!({"age": {"$gt": "a"}}), document.clone()),
            "type bracketing"
        );
        assert!(
            !matches(json!({"name": {"$lt": 5}}), document.clone()),
            "type bracketing"
        );
        assert!(matches(
            json!({"name": {"$gte": "an", "$lt": "b"}}),
            document.clone()
        ));
        assert!(matches(json!({"age": {"$ne": 31}}), document.clone()));
        assert!(matches(json!({"missing": {"$ne": 31}}), document.clone()));
        assert!(!matches(json!({"age": {"$ne": 30}}), document.clone()));
        assert!(matches(json!({"age": {"$in": [1, 30]}}), document.clone()));
        assert!(!matches(json!({"age": {"$in": []}}), document.clone()));
        assert!(!matches(
            json!({"missing": {"$in": [null]}}),
            document.clone()
        ));
        assert!(matches(
            json!({"missing": {"$exists": false}}),
            document.clone()
        ));
        assert!(matches(
            json!({"none": {"$exists": true}}),
            document.clone()
        ));
        assert!(matches(
            json!({"$or": [{"age": 1}, {"name": "ann"}]}),
            document.clone()
        ));
        assert!(!matches(json!({"$or": []}), document.clone()));
        assert!(matches(json!({"$and": []}), document.clone()));
        assert!(!matches(
            json!({"$and": [{"age": 30}, {"name": "bob"}]}),
            document.clone()
        ));
        assert!(!matches(
            json!({"address.city.x": "Oslo"}),
            document.clone()
        ));
        assert!(
            !matches(json!({"tags.0": "a"}), document),
            "arrays are not traversed"
        );
    }

    /// Proves malformed filters and filters over a limit are refused with a reason.
    #[test]
    fn refuses_bad_filters() {
        let refused = |filter: Value| Filter::parse(&filter, FILTER_LIMITS).unwrap_err();
        assert!(refused(json!([1])).contains("JSON object"));
        assert!(refused(json!({"age": {"$regex": "a"}})).contains("unknown operator"));
        assert!(refused(json!({"$nor": []})).contains("unknown logical operator"));
        assert!(refused(json!({"$and": {}})).contains("array"));
        assert!(refused(json!({"a..b": 1})).contains("empty segment"));
        assert!(refused(json!({"age": {"$in": 3}})).contains("$in"));
        assert!(refused(json!({"age": {"$exists": 1}})).contains("$exists"));
        let long = "a".repeat(FIELD_PATH_BYTES_MAX + 1);
        assert!(refused(json!({ long: 1 })).contains("bytes"));
        let mut deep = json!({"a": 1});
        for _ in 0..=FILTER_LIMITS.depth_max {
            deep = json!({ "$and": [deep] });
        }
        assert!(refused(deep).contains("deeper"));
        let many: Map<String, Value> = (0..=FILTER_LIMITS.tests_max)
            .map(|field| (format!("f{field}"), json!(1)))
            .collect();
        assert!(refused(Value::Object(many)).contains("field tests"));
        let values: Vec<Value> = (0..=FILTER_LIMITS.in_values_max)
            .map(|v| json!(v))
            .collect();
        assert!(refused(json!({"a": {"$in": values}})).contains("limit"));
    }

    /// Proves the required tests are those of the top-level AND only.
    #[test]
    fn required_tests_skip_disjunctions() {
        let filter = Filter::parse(
            &json!({"a": 1, "$and": [{"b": {"$gt": 2}}], "$or": [{"c": 1}, {"d": 2}]}),
            FILTER_LIMITS,
        )
        .unwrap();
        let mut paths: Vec<&str> = filter
            .required_tests()
            .into_iter()
            .map(|(path, _)| path.as_str())
            .collect();
        paths.sort_unstable();
        assert_eq!(paths, ["a", "b"]);
    }
}
