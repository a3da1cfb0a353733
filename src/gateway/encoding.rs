//! Byte-level encodings at the HTTP boundary: strict percent-decoding of paths and
//! query strings into raw key bytes, and the "UTF-8 text or base64" rule for putting
//! arbitrary bytes into JSON.
//!
//! Used by the key, document and query parsers of the gateway. Both directions are
//! lossless: any byte string can be written through a percent-encoded path and read
//! back through a JSON field plus its `*_encoding` marker.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::borrow::Cow;

/// The `*_encoding` marker carried next to a JSON field whose bytes were not UTF-8.
pub const BASE64_ENCODING: &str = "base64";

/// Why a percent-encoded string could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PercentDecodeError {
    /// Byte offset of the offending `%` in the input.
    pub offset_bytes: usize,
}

impl std::fmt::Display for PercentDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid percent-encoding at byte {}: '%' must be followed by two hex digits",
            self.offset_bytes
        )
    }
}

/// Which flavour of percent-encoding the input uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PercentFlavour {
    /// A path segment: `+` is a literal plus sign.
    Path,
    /// `application/x-www-form-urlencoded` (query strings): `+` stands for a space,
    /// which is what browsers and `reqwest::RequestBuilder::query` send.
    Form,
}

/// Decodes `%XX` escapes into raw bytes. Unlike the lenient decoders, a `%` that is not
/// followed by two hex digits is an error: accepting it literally would let two
/// different spellings silently name different keys than the client meant.
///
/// Borrows the input when there is nothing to decode, which is the common case.
pub fn percent_decode(
    input: &[u8],
    flavour: PercentFlavour,
) -> Result<Cow<'_, [u8]>, PercentDecodeError> {
    let needs_work = input
        .iter()
        .any(|&byte| byte == b'%' || (byte == b'+' && flavour == PercentFlavour::Form));
    if !needs_work {
        return Ok(Cow::Borrowed(input));
    }
    let mut decoded = Vec::with_capacity(input.len());
    let mut offset = 0;
    while offset < input.len() {
        let byte = input[offset];
        match byte {
            b'%' => {
                let high = input.get(offset + 1).copied().and_then(hex_value);
                let low = input.get(offset + 2).copied().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => decoded.push((high << 4) | low),
                    _ => {
                        return Err(PercentDecodeError {
                            offset_bytes: offset,
                        })
                    }
                }
                offset += 3;
            }
            b'+' if flavour == PercentFlavour::Form => {
                decoded.push(b' ');
                offset += 1;
            }
            _ => {
                decoded.push(byte);
                offset += 1;
            }
        }
    }
    Ok(Cow::Owned(decoded))
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Bytes as a JSON string: the text itself when it is valid UTF-8 (no copy), otherwise
/// standard base64 together with the [`BASE64_ENCODING`] marker the caller must emit.
pub fn text_or_base64(bytes: &[u8]) -> (Cow<'_, str>, Option<&'static str>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Cow::Borrowed(text), None),
        Err(_) => (Cow::Owned(BASE64.encode(bytes)), Some(BASE64_ENCODING)),
    }
}

/// Standard base64 of any bytes (for values that must be marked even when UTF-8).
pub fn base64_of(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Decodes standard base64 (the inverse of the non-UTF-8 branch of [`text_or_base64`]).
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    BASE64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves plain input is borrowed untouched, escapes decode to raw bytes (including
    /// non-UTF-8 and `/`), and `+` depends on the flavour.
    #[test]
    fn decodes_escapes_into_raw_bytes() {
        assert!(matches!(
            percent_decode(b"plain/key", PercentFlavour::Path),
            Ok(Cow::Borrowed(b"plain/key"))
        ));
        assert_eq!(
            percent_decode(b"a%2Fb", PercentFlavour::Path)
                .unwrap()
                .as_ref(),
            b"a/b"
        );
        assert_eq!(
            percent_decode(b"%FF%00%e9x", PercentFlavour::Path)
                .unwrap()
                .as_ref(),
            &[0xFF, 0x00, 0xE9, b'x']
        );
        assert_eq!(
            percent_decode(b"a+b%2B", PercentFlavour::Path)
                .unwrap()
                .as_ref(),
            b"a+b+"
        );
        assert_eq!(
            percent_decode(b"a+b%2B", PercentFlavour::Form)
                .unwrap()
                .as_ref(),
            b"a b+"
        );
    }

    /// Proves a `%` without two hex digits after it is rejected with its offset rather
    /// than passed through, wherever it appears.
    #[test]
    fn rejects_malformed_escapes() {
        for (input, offset) in [
            (&b"%"[..], 0),
            (b"ab%", 2),
            (b"ab%4", 2),
            (b"%zz", 0),
            (b"x%4g", 1),
            (b"ok%41%", 5),
        ] {
            assert_eq!(
                percent_decode(input, PercentFlavour::Path),
                Err(PercentDecodeError {
                    offset_bytes: offset
                }),
                "input {input:?}"
            );
        }
    }

    /// Proves UTF-8 stays text without a marker, and other bytes round-trip through
    /// base64 with the marker.
    #[test]
    fn text_or_base64_marks_non_utf8() {
        assert_eq!(text_or_base64("héllo".as_bytes()), ("héllo".into(), None));
        let bytes = [0xFF, 0x00, b'x'];
        let (text, marker) = text_or_base64(&bytes);
        assert_eq!(text, "/wB4");
        assert_eq!(marker, Some(BASE64_ENCODING));
        assert_eq!(decode_base64(text.as_bytes()).unwrap(), bytes);
        assert_eq!(decode_base64(b"not base64!"), None);
    }
}
