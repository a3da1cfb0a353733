//! `application/problem+json` (RFC 9457) responses: the only shape an error leaves the
//! gateway in.
//!
//! Every handler, fallback and middleware of the gateway reports failure as a
//! [`Problem`]; its status and title come from [`crate::error_code::present_code`], so
//! the HTTP mapping of a code lives in one place shared with dbctl.
//!
//! Body fields: `type` is `https://mimori.dev/errors/<code>` (a stable, documentable
//! URI per code, never `about:blank`), `title` and `status` come from the code's
//! presentation, `detail` says what happened to this request, `code` repeats the stable
//! snake_case code for clients that do not want to parse URIs. Extension members (for
//! example `current_revision` on `condition_failed`) may be added; clients ignore
//! unknown ones. Every 503 carries `Retry-After` in whole seconds.

use crate::error_code::{present_code, ErrorPresentation};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mimori_actors::kv::KvError;
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Prefix of every problem `type` URI; the code is appended.
pub const PROBLEM_TYPE_BASE: &str = "https://mimori.dev/errors/";

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An error on its way to the client.
#[derive(Debug)]
pub struct Problem {
    /// Code, status and title, resolved once from the code table.
    presentation: ErrorPresentation,
    /// What went wrong with this particular request.
    detail: Cow<'static, str>,
    /// Sent as `Retry-After` on 503s; `None` falls back to one second so that no 503
    /// ever leaves without it.
    retry_after_seconds: Option<u32>,
    /// Extra members that help the client recover (the current revision after a failed
    /// condition, the health counters of a node that is not serving). Boxed because
    /// most problems have none and `Result<_, Problem>` is on every request path.
    extensions: Option<Box<Map<String, Value>>>,
}

/// The serialized body; borrowed from the [`Problem`] so building it copies nothing.
#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extensions: Option<&'a Map<String, Value>>,
}

impl Problem {
    /// A problem with a stable `code` (one known to [`present_code`]).
    pub fn new(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Problem {
        let presentation = present_code(code);
        debug_assert_eq!(
            presentation.code, code,
            "error code {code} is missing from error_code::present_code"
        );
        Problem {
            presentation,
            detail: detail.into(),
            retry_after_seconds: None,
            extensions: None,
        }
    }

    /// `400 invalid_input`.
    pub fn invalid_input(detail: impl Into<Cow<'static, str>>) -> Problem {
        Problem::new("invalid_input", detail)
    }

    /// `404 not_found` for a key or document that does not exist.
    pub fn not_found() -> Problem {
        Problem::new("not_found", "no such key")
    }

    /// Translates a kernel error. `retry_after_seconds` is used for 503s whose error
    /// does not carry its own hint.
    pub fn from_kv(error: &KvError, retry_after_seconds: u32) -> Problem {
        let mut problem = Problem::new(error.code(), error.to_string());
        match error {
            KvError::Unavailable { retry_after_ms, .. } => {
                problem.retry_after_seconds = Some(retry_after_ms.div_ceil(1000).max(1));
            }
            KvError::ConditionFailed { current } => {
                problem = problem.with_extension(
                    "current_revision",
                    current.map_or(Value::Null, |revision| Value::from(revision.0)),
                );
            }
            KvError::NotLeader { hint, .. } => {
                problem = problem.with_extension(
                    "leader_hint",
                    hint.map_or(Value::Null, |node| Value::from(node.0)),
                );
            }
            KvError::Corrupted(_) | KvError::Storage(_) => {
                tracing::error!(code = error.code(), error = %error, "kernel failure");
            }
            _ => {}
        }
        if problem.retry_after_seconds.is_none() {
            problem.retry_after_seconds = Some(retry_after_seconds);
        }
        problem
    }

    /// Overrides the `Retry-After` of a 503.
    pub fn with_retry_after_seconds(mut self, seconds: u32) -> Problem {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// Adds an extension member to the body.
    pub fn with_extension(mut self, name: &str, value: Value) -> Problem {
        self.extensions
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value);
        self
    }

    /// What went wrong with this particular request.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.presentation.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.presentation.http_status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ProblemBody {
            type_uri: format!("{PROBLEM_TYPE_BASE}{}", self.presentation.code),
            title: self.presentation.title,
            status: status.as_u16(),
            detail: &self.detail,
            code: self.presentation.code,
            extensions: self.extensions.as_deref(),
        };
        // Serializing strings, integers and a JSON map cannot fail; should it ever, an
        // empty object still carries the status and content type.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                RETRY_AFTER,
                HeaderValue::from(self.retry_after_seconds.unwrap_or(1)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimori_actors::ids::{Revision, ShardId};

    async fn body_json(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Proves the body carries the five documented members with values from the code
    /// table, and the media type is problem+json.
    #[tokio::test]
    async fn body_has_the_documented_members() {
        let response = Problem::invalid_input("empty key").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        assert!(response.headers().get(RETRY_AFTER).is_none());
        let body = body_json(response).await;
        assert_eq!(
            body,
            serde_json::json!({
                "type": "https://mimori.dev/errors/invalid_input",
                "title": "Invalid input",
                "status": 400,
                "detail": "empty key",
                "code": "invalid_input",
            })
        );
    }

    /// Proves kernel errors keep their code, a failed condition reports the current
    /// revision, and every 503 carries Retry-After (the kernel's hint rounded up, or
    /// the gateway default).
    #[tokio::test]
    async fn kernel_errors_map_with_retry_after_and_extensions() {
        let condition = Problem::from_kv(
            &KvError::ConditionFailed {
                current: Some(Revision(7)),
            },
            3,
        )
        .into_response();
        assert_eq!(condition.status(), StatusCode::PRECONDITION_FAILED);
        let body = body_json(condition).await;
        assert_eq!(body["code"], "condition_failed");
        assert_eq!(body["current_revision"], 7);

        let unavailable = Problem::from_kv(
            &KvError::Unavailable {
                shard: ShardId(2),
                reason: "electing".into(),
                retry_after_ms: 1_500,
            },
            9,
        )
        .into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[RETRY_AFTER], "2");

        let shutting_down = Problem::from_kv(&KvError::ShuttingDown, 9).into_response();
        assert_eq!(shutting_down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shutting_down.headers()[RETRY_AFTER], "9");

        let timeout = Problem::from_kv(&KvError::Timeout { timeout_ms: 5 }, 9).into_response();
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body_json(timeout).await["code"], "timeout");
    }
}
