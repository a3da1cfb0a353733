//! Query-string parameters of the read endpoints: `consistency`, and for scans
//! `prefix`, `after`, `after_encoding` and `limit`.
//!
//! Parsed by hand rather than through axum's `Query` extractor because `prefix` and
//! `after` are raw key bytes (percent-encoded, possibly not UTF-8) and because every
//! rejection must be a problem+json with a stable code. Unknown parameters are ignored
//! (so cache-busting parameters work); a known parameter given twice is rejected.

use super::encoding::{decode_base64, percent_decode, PercentFlavour, BASE64_ENCODING};
use super::problem::Problem;
use mimori_actors::kv::Consistency;
use std::borrow::Cow;

/// Items a scan page returns when the request does not say.
pub const SCAN_LIMIT_DEFAULT: u32 = 100;

/// The known parameters of a read, decoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadQuery<'a> {
    pub consistency: Consistency,
    /// Raw bytes every scanned key starts with; empty scans everything.
    pub prefix: Cow<'a, [u8]>,
    /// Scan keys strictly after this one (the previous page's `next`).
    pub after: Option<Cow<'a, [u8]>>,
    /// Items per page, already checked against the limits.
    pub limit: u32,
}

impl<'a> ReadQuery<'a> {
    /// Parses the query string of a request. `limit_max` is the kernel's
    /// `scan_limit_max`; `limit` must be in `1..=limit_max`.
    pub fn parse(query: Option<&'a str>, limit_max: u32) -> Result<ReadQuery<'a>, Problem> {
        let mut consistency: Option<Consistency> = None;
        let mut prefix: Option<Cow<'a, [u8]>> = None;
        let mut after: Option<Cow<'a, [u8]>> = None;
        let mut after_is_base64: Option<bool> = None;
        let mut limit: Option<u32> = None;

        for pair in query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name.as_bytes())?;
            let value = decode(value.as_bytes())?;
            match name.as_ref() {
                b"consistency" => {
                    set_once(&mut consistency, "consistency", parse_consistency(&value)?)?
                }
                b"prefix" => set_once(&mut prefix, "prefix", value)?,
                b"after" => set_once(&mut after, "after", value)?,
                b"after_encoding" => set_once(
                    &mut after_is_base64,
                    "after_encoding",
                    parse_after_encoding(&value)?,
                )?,
                b"limit" => set_once(&mut limit, "limit", parse_limit(&value, limit_max)?)?,
                _ => {}
            }
        }

        let after = match (after, after_is_base64.unwrap_or(false)) {
            (Some(text), true) => Some(Cow::Owned(decode_base64(&text).ok_or_else(|| {
                Problem::invalid_input("after is not valid base64 although after_encoding=base64")
            })?)),
            (after, _) => after,
        };
        Ok(ReadQuery {
            consistency: consistency.unwrap_or_default(),
            prefix: prefix.unwrap_or(Cow::Borrowed(b"")),
            after,
            limit: limit.unwrap_or(SCAN_LIMIT_DEFAULT.min(limit_max)),
        })
    }
}

/// The `consistency` parameter of a single-item read; other parameters are ignored
/// there, so a shared query builder that adds scan parameters does no harm.
pub fn consistency_from_query(query: Option<&str>) -> Result<Consistency, Problem> {
    let mut consistency = None;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(name.as_bytes())?.as_ref() == b"consistency" {
            set_once(
                &mut consistency,
                "consistency",
                parse_consistency(&decode(value.as_bytes())?)?,
            )?;
        }
    }
    Ok(consistency.unwrap_or_default())
}

fn decode(text: &[u8]) -> Result<Cow<'_, [u8]>, Problem> {
    percent_decode(text, PercentFlavour::Form)
        .map_err(|error| Problem::invalid_input(format!("query string: {error}")))
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), Problem> {
    if slot.is_some() {
        return Err(Problem::invalid_input(format!(
            "query parameter {name} may appear only once"
        )));
    }
    *slot = Some(value);
    Ok(())
}

/// `linearizable` (the default) or `stale`.
pub fn parse_consistency(value: &[u8]) -> Result<Consistency, Problem> {
    match value {
        b"linearizable" => Ok(Consistency::Linearizable),
        b"stale" => Ok(Consistency::Stale),
        _ => Err(Problem::invalid_input(
            "consistency must be `linearizable` or `stale`",
        )),
    }
}

fn parse_after_encoding(value: &[u8]) -> Result<bool, Problem> {
    if value == BASE64_ENCODING.as_bytes() {
        Ok(true)
    } else {
        Err(Problem::invalid_input("after_encoding must be `base64`"))
    }
}

/// A page size in `1..=limit_max`.
pub fn parse_limit(value: &[u8], limit_max: u32) -> Result<u32, Problem> {
    let limit = std::str::from_utf8(value)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|text| text.parse::<u32>().ok());
    match limit {
        Some(limit) if (1..=limit_max).contains(&limit) => Ok(limit),
        _ => Err(Problem::invalid_input(format!(
            "limit must be an integer from 1 to {limit_max}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves an absent query string yields the defaults.
    #[test]
    fn defaults() {
        let query = ReadQuery::parse(None, 1_000).unwrap();
        assert_eq!(query.consistency, Consistency::Linearizable);
        assert_eq!(query.prefix.as_ref(), b"");
        assert_eq!(query.after, None);
        assert_eq!(query.limit, SCAN_LIMIT_DEFAULT);
        // The default never exceeds a smaller maximum.
        assert_eq!(ReadQuery::parse(None, 10).unwrap().limit, 10);
    }

    /// Proves every known parameter is decoded into raw bytes (form flavour: `+` is a
    /// space) and unknown parameters are ignored.
    #[test]
    fn decodes_known_parameters() {
        let query = ReadQuery::parse(
            Some("prefix=a%2Fb+c&after=%FF&limit=5&consistency=stale&_=123"),
            1_000,
        )
        .unwrap();
        assert_eq!(query.prefix.as_ref(), b"a/b c");
        assert_eq!(query.after.as_deref(), Some(&[0xFF][..]));
        assert_eq!(query.limit, 5);
        assert_eq!(query.consistency, Consistency::Stale);

        let base64 = ReadQuery::parse(Some("after=%2FwB4&after_encoding=base64"), 10).unwrap();
        assert_eq!(base64.after.as_deref(), Some(&[0xFF, 0x00, b'x'][..]));
    }

    /// Proves single-item reads look only at `consistency`, and still reject a bad one.
    #[test]
    fn consistency_only() {
        assert_eq!(
            consistency_from_query(None).unwrap(),
            Consistency::Linearizable
        );
        assert_eq!(
            consistency_from_query(Some("limit=0&consistency=stale")).unwrap(),
            Consistency::Stale
        );
        assert_eq!(
            consistency_from_query(Some("consistency=linearizable")).unwrap(),
            Consistency::Linearizable
        );
        assert!(consistency_from_query(Some("consistency=eventual")).is_err());
        assert!(consistency_from_query(Some("consistency=stale&consistency=stale")).is_err());
    }

    /// Proves out-of-range limits, unknown consistency levels, bad escapes, bad base64
    /// and repeated parameters are all 400 invalid_input.
    #[test]
    fn rejects_bad_parameters() {
        for query in [
            "limit=0",
            "limit=1001",
            "limit=abc",
            "limit=",
            "limit=-1",
            "limit=+5",
            "consistency=eventual",
            "consistency=",
            "prefix=%zz",
            "limit=1&limit=2",
            "after=%%%&after_encoding=base64",
            "after=!!&after_encoding=base64",
            "after_encoding=hex",
        ] {
            let problem = ReadQuery::parse(Some(query), 1_000).unwrap_err();
            assert_eq!(problem.code(), "invalid_input", "query {query}");
        }
        assert_eq!(
            ReadQuery::parse(Some("limit=1000"), 1_000).unwrap().limit,
            1_000
        );
    }
}
