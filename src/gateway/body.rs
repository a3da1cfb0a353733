//! Size-limited request body reading.
//!
//! Values and documents arrive as request bodies; the gateway must never buffer more
//! than `body_bytes_max` of one. The limit is enforced before buffering: a declared
//! `Content-Length` above it is refused without reading a byte, and a body without a
//! length (chunked) is read through [`Limited`], which stops at the first frame that
//! crosses the limit. Called by the key and document handlers.

use super::problem::Problem;
use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_LENGTH;
use axum::http::HeaderMap;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

/// Reads the whole body, at most `bytes_max` bytes of it.
///
/// Errors: `413 body_too_large` when the declared or actual size exceeds the limit,
/// `400 invalid_input` when the body cannot be read (the client went away mid-body or
/// sent a malformed length).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    bytes_max: u64,
) -> Result<Bytes, Problem> {
    if let Some(declared_bytes) = declared_length_bytes(headers)? {
        if declared_bytes > bytes_max {
            return Err(too_large(bytes_max));
        }
    }
    // A limit beyond the address space cannot be reached anyway.
    let limit = usize::try_from(bytes_max).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            debug_assert!(bytes.len() as u64 <= bytes_max);
            Ok(bytes)
        }
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(too_large(bytes_max))
        }
        Err(error) => Err(Problem::invalid_input(format!(
            "could not read the request body: {error}"
        ))),
    }
}

/// The `Content-Length` the client declared, if any. hyper already rejects malformed
/// lengths on HTTP/1, but the header map is client input, so it is parsed defensively.
fn declared_length_bytes(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get(CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| Problem::invalid_input("Content-Length is not a decimal integer"))
}

fn too_large(bytes_max: u64) -> Problem {
    Problem::new(
        "body_too_large",
        format!("the request body exceeds the limit of {bytes_max} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use hyper::body::Frame;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body that yields its chunks one by one without announcing a length (like a
    /// chunked upload), then fails if polled again when `fails_when_polled` is set.
    struct ChunkedBody {
        chunks: Vec<Bytes>,
        fails_when_polled: bool,
    }

    impl hyper::body::Body for ChunkedBody {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _context: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.fails_when_polled {
                return Poll::Ready(Some(Err(std::io::Error::other("polled"))));
            }
            if self.chunks.is_empty() {
                return Poll::Ready(None);
            }
            let chunk = self.chunks.remove(0);
            Poll::Ready(Some(Ok(Frame::data(chunk))))
        }
    }

    fn chunked(chunks: &[&'static [u8]]) -> Body {
        Body::new(ChunkedBody {
            chunks: chunks
                .iter()
                .map(|chunk| Bytes::from_static(chunk))
                .collect(),
            fails_when_polled: false,
        })
    }

    /// Proves a declared length above the limit is refused before the body is touched:
    /// the body here fails when polled, so reading it would give 400, not 413.
    #[tokio::test]
    async fn declared_length_is_refused_without_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("11"));
        let body = Body::new(ChunkedBody {
            chunks: Vec::new(),
            fails_when_polled: true,
        });
        let problem = read_limited(&headers, body, 10).await.unwrap_err();
        assert_eq!(problem.code(), "body_too_large");
        assert_eq!(problem.status(), 413);
    }

    /// Proves a body without a length is cut off once it crosses the limit, while one
    /// exactly at the limit is read whole across chunks.
    #[tokio::test]
    async fn chunked_body_is_limited_while_reading() {
        let headers = HeaderMap::new();
        let at_limit = read_limited(&headers, chunked(&[b"hello", b"world"]), 10)
            .await
            .unwrap();
        assert_eq!(at_limit, Bytes::from_static(b"helloworld"));

        let problem = read_limited(&headers, chunked(&[b"hello", b"world", b"!"]), 10)
            .await
            .unwrap_err();
        assert_eq!(problem.code(), "body_too_large");
    }

    /// Proves a failing body and a malformed declared length are client errors (400).
    #[tokio::test]
    async fn unreadable_bodies_are_invalid_input() {
        let failing = Body::new(ChunkedBody {
            chunks: Vec::new(),
            fails_when_polled: true,
        });
        let problem = read_limited(&HeaderMap::new(), failing, 10)
            .await
            .unwrap_err();
        assert_eq!(problem.code(), "invalid_input");

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("ten"));
        let problem = read_limited(&headers, chunked(&[b"x"]), 10)
            .await
            .unwrap_err();
        assert_eq!(problem.code(), "invalid_input");
    }
}
