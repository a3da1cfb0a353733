//! The order-preserving byte encoding of JSON values, shared by index keys, sort
//! keys and filter comparisons.
//!
//! Values are compared *by their encoding*: the filter evaluator and the index both
//! compare these bytes, so an index range scan and a full scan can never disagree on
//! what `$gt` means. The order is: null < booleans (false < true) < numbers <
//! strings < arrays < objects. Each encoding starts with its type's tag byte, which
//! is what range operators bracket on (`{"$gt": 5}` matches numbers only).
//!
//! - numbers are IEEE-754 doubles (JSON integers beyond 2^53 compare as their
//!   nearest double), sign-flipped so their bytes sort numerically; `-0` is `0`;
//! - strings are their UTF-8 bytes with `0x00` escaped as `0x00 0xFF`, terminated by
//!   `0x00 0x00`, so a prefix sorts before its extensions and the encoding is
//!   self-delimiting (an index key can carry the document id after it);
//! - arrays are their elements' encodings, then `0x00`;
//! - objects are `0x01 key value` per member in key order, then `0x00`.

use serde_json::Value;

/// Tag of `null`.
pub const TAG_NULL: u8 = 0x10;
/// Tag of `false` and `true`.
pub const TAG_BOOL: u8 = 0x20;
/// Tag of numbers.
pub const TAG_NUMBER: u8 = 0x30;
/// Tag of strings.
pub const TAG_STRING: u8 = 0x40;
/// Tag of arrays.
pub const TAG_ARRAY: u8 = 0x50;
/// Tag of objects.
pub const TAG_OBJECT: u8 = 0x60;

/// Ends a string, array or object.
const END: u8 = 0x00;
/// Follows an escaped `0x00` inside a string.
const ESCAPED_ZERO: u8 = 0xFF;
/// Starts an object member.
const MEMBER: u8 = 0x01;

/// The encoding of `value`.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_into(value, &mut bytes);
    bytes
}

/// Appends the encoding of `value` to `bytes`.
pub fn encode_into(value: &Value, bytes: &mut Vec<u8>) {
    match value {
        Value::Null => bytes.push(TAG_NULL),
        Value::Bool(flag) => bytes.extend_from_slice(&[TAG_BOOL, u8::from(*flag)]),
        Value::Number(number) => {
            bytes.push(TAG_NUMBER);
            // A JSON number always has an f64 value (serde_json's arbitrary
            // precision feature is off).
            let double = number.as_f64().unwrap_or(0.0);
            bytes.extend_from_slice(&ordered_double(double));
        }
        Value::String(text) => {
            bytes.push(TAG_STRING);
            encode_text(text, bytes);
        }
        Value::Array(items) => {
            bytes.push(TAG_ARRAY);
            for item in items {
                encode_into(item, bytes);
            }
            bytes.push(END);
        }
        Value::Object(members) => {
            bytes.push(TAG_OBJECT);
            // serde_json's map iterates in key order (no `preserve_order`), so equal
            // objects encode equally whatever order their members came in.
            for (key, member) in members {
                bytes.push(MEMBER);
                encode_text(key, bytes);
                encode_into(member, bytes);
            }
            bytes.push(END);
        }
    }
}

/// Escaped, terminated UTF-8.
fn encode_text(text: &str, bytes: &mut Vec<u8>) {
    for &byte in text.as_bytes() {
        bytes.push(byte);
        if byte == 0 {
            bytes.push(ESCAPED_ZERO);
        }
    }
    bytes.extend_from_slice(&[END, END]);
}

/// Big-endian bytes of `double` that sort like the numbers do.
fn ordered_double(double: f64) -> [u8; 8] {
    let double = if double == 0.0 { 0.0 } else { double };
    let bits = double.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

/// The length of the one encoded value at the start of `bytes`, or `None` when
/// `bytes` does not start with a complete encoding.
pub fn encoded_length(bytes: &[u8]) -> Option<usize> {
    let tag = *bytes.first()?;
    match tag {
        TAG_NULL => Some(1),
        TAG_BOOL => (bytes.len() >= 2).then_some(2),
        TAG_NUMBER => (bytes.len() >= 9).then_some(9),
        TAG_STRING => text_length(&bytes[1..]).map(|length| 1 + length),
        TAG_ARRAY => {
            let mut at = 1;
            loop {
                if *bytes.get(at)? == END {
                    return Some(at + 1);
                }
                at += encoded_length(&bytes[at..])?;
            }
        }
        TAG_OBJECT => {
            let mut at = 1;
            loop {
                match *bytes.get(at)? {
                    END => return Some(at + 1),
                    MEMBER => {
                        at += 1;
                        at += text_length(&bytes[at..])?;
                        at += encoded_length(&bytes[at..])?;
                    }
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

/// The length of one escaped, terminated text at the start of `bytes`.
fn text_length(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        match *bytes.get(at)? {
            0 => match *bytes.get(at + 1)? {
                END => return Some(at + 2),
                ESCAPED_ZERO => at += 2,
                _ => return None,
            },
            _ => at += 1,
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`, or
/// `None` when there is none (`prefix` is all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Pins the encoding: index keys on disk depend on it.
    #[test]
    fn golden_bytes() {
        assert_eq!(encode(&json!(null)), [0x10]);
        assert_eq!(encode(&json!(true)), [0x20, 0x01]);
        assert_eq!(
            encode(&json!(1)),
            [0x30, 0xbf, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
        );
        assert_eq!(
            encode(&json!("a\u{0}")),
            [0x40, b'a', 0x00, 0xff, 0x00, 0x00]
        );
        assert_eq!(
            encode(&json!({"k": [null]})),
            [0x60, 0x01, b'k', 0x00, 0x00, 0x50, 0x10, 0x00, 0x00]
        );
    }

    /// Proves the encoding orders types first, then values within a type, with the
    /// corner cases of numbers and strings.
    #[test]
    fn orders_like_the_documented_order() {
        let ascending = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e300),
            json!(-2),
            json!(-0.5),
            json!(0),
            json!(0.25),
            json!(3),
            json!(1e300),
            json!(""),
            json!("\u{0}"),
            json!("a"),
            json!("a\u{0}"),
            json!("ab"),
            json!("b"),
            json!([]),
            json!([1]),
            json!([1, 2]),
            json!([2]),
            json!({}),
            json!({"a": 1}),
            json!({"b": 0}),
        ];
        for pair in ascending.windows(2) {
            assert!(
                encode(&pair[0]) < encode(&pair[1]),
                "{} should sort before {}",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(encode(&json!(-0.0)), encode(&json!(0)));
        assert_eq!(encode(&json!(1.0)), encode(&json!(1)));
        assert_eq!(
            encode(&json!({"a": 1, "b": 2})),
            encode(&serde_json::from_str::<Value>(r#"{"b":2,"a":1}"#).unwrap())
        );
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|number| json!(number)),
            (-1e6f64..1e6).prop_map(|number| json!(number)),
            "[a-c\u{0}]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{0,2}", inner, 0..3)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Proves every encoding is self-delimiting: its length is found again from
        /// the bytes, even with more bytes after it.
        #[test]
        fn encodings_delimit_themselves(value in any_json(), tail in prop::collection::vec(any::<u8>(), 0..4)) {
            let mut bytes = encode(&value);
            let length = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(encoded_length(&bytes), Some(length));
        }

        /// Proves numbers sort by value.
        #[test]
        fn numbers_sort_numerically(left in -1e12f64..1e12, right in -1e12f64..1e12) {
            let order = encode(&json!(left)).cmp(&encode(&json!(right)));
            prop_assert_eq!(order, left.partial_cmp(&right).unwrap_or(std::cmp::Ordering::Equal));
        }

        /// Proves strings sort by their bytes.
        #[test]
        fn strings_sort_bytewise(left in "[a-c\u{0}]{0,5}", right in "[a-c\u{0}]{0,5}") {
            prop_assert_eq!(encode(&json!(left)).cmp(&encode(&json!(right))), left.as_bytes().cmp(right.as_bytes()));
        }
    }

    /// Proves the prefix end bounds exactly the strings with the prefix.
    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[0x01, 0xFF]), Some(vec![0x02]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
