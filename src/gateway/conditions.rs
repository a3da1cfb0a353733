//! Conditional requests: `If-Match` / `If-None-Match` headers to kernel [`Condition`]s,
//! and revisions to `ETag`s.
//!
//! A revision is exposed as the strong entity tag `"N"` (decimal, quoted). The write
//! handlers of keys and documents call in here; the kernel checks the condition
//! atomically with the write, so the gateway never reads before writing.
//!
//! Accepted forms (anything else is `400 invalid_input`, never silently ignored, since
//! an ignored precondition turns a safe update into a blind overwrite):
//! - `If-Match: "N"` on PUT and DELETE: write only at revision N.
//! - `If-None-Match: *` on PUT (and document POST): create only.
//! - Neither header: unconditional.
//!
//! Not supported: weak tags (`W/"N"`), lists of tags, `If-Match: *`, both headers at
//! once, and `If-None-Match` on DELETE.

use super::problem::Problem;
use axum::http::header::{IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use mimori_actors::ids::Revision;
use mimori_actors::kv::Condition;

/// Which write the condition guards; deletes cannot be create-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Put,
    Delete,
}

/// The `ETag` header value of a revision: `"N"`.
pub fn etag(revision: Revision) -> HeaderValue {
    HeaderValue::try_from(format!("\"{}\"", revision.0))
        .expect("quotes and decimal digits are valid header characters")
}

/// Reads the condition of a write from the request headers.
pub fn write_condition(headers: &HeaderMap, kind: WriteKind) -> Result<Condition, Problem> {
    let if_match = single_header(headers, IF_MATCH)?;
    let if_none_match = single_header(headers, IF_NONE_MATCH)?;
    parse_condition(if_match, if_none_match, kind).map_err(Problem::invalid_input)
}

/// Pure parser behind [`write_condition`]: header values in, condition or the reason
/// they are not accepted out.
pub fn parse_condition(
    if_match: Option<&[u8]>,
    if_none_match: Option<&[u8]>,
    kind: WriteKind,
) -> Result<Condition, &'static str> {
    match (if_match, if_none_match) {
        (None, None) => Ok(Condition::Always),
        (Some(_), Some(_)) => Err("If-Match and If-None-Match cannot be combined"),
        (Some(value), None) => parse_revision_tag(value).map(Condition::RevisionIs),
        (None, Some(_)) if kind == WriteKind::Delete => {
            Err("If-None-Match is not supported on DELETE")
        }
        (None, Some(value)) => {
            if value.trim_ascii() == b"*" {
                Ok(Condition::Absent)
            } else {
                Err("If-None-Match supports only `*` (create only)")
            }
        }
    }
}

/// Parses one strong entity tag `"N"` into a revision.
pub fn parse_revision_tag(value: &[u8]) -> Result<Revision, &'static str> {
    let value = value.trim_ascii();
    if value == b"*" {
        return Err("If-Match: * is not supported; use If-Match: \"<revision>\"");
    }
    if value.starts_with(b"W/") {
        return Err("weak entity tags are not supported in If-Match; revisions are strong tags");
    }
    let digits = value
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
        .ok_or("If-Match must be one quoted revision, like \"42\"")?;
    // `u64::from_str` would accept a leading `+`; a revision is plain digits.
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err("If-Match must be one quoted revision, like \"42\"");
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .map(Revision)
        .ok_or("the revision in If-Match does not fit in 64 bits")
}

/// The value of a header that may appear at most once.
fn single_header(headers: &HeaderMap, name: HeaderName) -> Result<Option<&[u8]>, Problem> {
    let mut values = headers.get_all(&name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Problem::invalid_input(format!(
            "{name} may appear only once"
        )));
    }
    Ok(first.map(HeaderValue::as_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves each accepted header form maps to its condition.
    #[test]
    fn accepted_forms() {
        assert_eq!(
            parse_condition(None, None, WriteKind::Put),
            Ok(Condition::Always)
        );
        assert_eq!(
            parse_condition(Some(b"\"42\""), None, WriteKind::Put),
            Ok(Condition::RevisionIs(Revision(42)))
        );
        assert_eq!(
            parse_condition(Some(b" \"7\" "), None, WriteKind::Delete),
            Ok(Condition::RevisionIs(Revision(7)))
        );
        assert_eq!(
            parse_condition(None, Some(b"*"), WriteKind::Put),
            Ok(Condition::Absent)
        );
        assert_eq!(
            parse_condition(None, None, WriteKind::Delete),
            Ok(Condition::Always)
        );
    }

    /// Proves malformed or unsupported headers are rejected instead of ignored.
    #[test]
    fn rejected_forms() {
        for if_match in [
            &b"42"[..],
            b"\"\"",
            b"\"4x\"",
            b"\"+4\"",
            b"\"-4\"",
            b"W/\"4\"",
            b"*",
            b"\"1\", \"2\"",
            b"\"99999999999999999999\"",
            b"\"4",
        ] {
            assert!(
                parse_condition(Some(if_match), None, WriteKind::Put).is_err(),
                "If-Match {:?} was accepted",
                String::from_utf8_lossy(if_match)
            );
        }
        assert!(parse_condition(None, Some(b"\"4\""), WriteKind::Put).is_err());
        assert!(parse_condition(None, Some(b"*"), WriteKind::Delete).is_err());
        assert!(parse_condition(Some(b"\"4\""), Some(b"*"), WriteKind::Put).is_err());
    }

    /// Proves the ETag is the quoted revision and parses back to it.
    #[test]
    fn etag_round_trips() {
        let tag = etag(Revision(1234));
        assert_eq!(tag, "\"1234\"");
        assert_eq!(parse_revision_tag(tag.as_bytes()), Ok(Revision(1234)));
    }

    /// Proves a repeated If-Match header is a 400 rather than "first one wins".
    #[test]
    fn repeated_header_is_rejected() {
        let mut headers = HeaderMap::new();
        headers.append(IF_MATCH, HeaderValue::from_static("\"1\""));
        headers.append(IF_MATCH, HeaderValue::from_static("\"2\""));
        let problem = write_condition(&headers, WriteKind::Put).unwrap_err();
        assert_eq!(problem.code(), "invalid_input");
    }
}
