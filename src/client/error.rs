//! The client's errors: one variant per outcome a caller acts on differently,
//! decided by the stable `code` of the server's problem+json body, never by its
//! message text.

use serde::Deserialize;

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The key, document or collection does not exist.
    #[error("not found")]
    NotFound,
    /// A condition (`If-Match` revision, create-only) did not hold; `current` is
    /// the revision the key has now (`None` when it does not exist).
    #[error("condition failed: current revision is {current:?}")]
    Conflict { current: Option<u64> },
    /// The request was refused as malformed or over a limit (`code` says which).
    #[error("invalid input ({code}): {message}")]
    InvalidInput { code: String, message: String },
    /// The shard or node cannot serve now; retrying later may succeed.
    #[error("unavailable: {message} (retry after {retry_after_ms} ms)")]
    Unavailable {
        retry_after_ms: u64,
        message: String,
    },
    /// The request timed out; a write may or may not have happened.
    #[error("timed out after {timeout_ms} ms; a write may or may not have happened")]
    Timeout { timeout_ms: u64 },
    /// No endpoint could be reached, or a connection broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered something this client cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Any other server error, with its stable code.
    #[error("server error ({code}): {message}")]
    Server { code: String, message: String },
}

/// The fields of a problem+json body the client reads.
#[derive(Deserialize, Default)]
struct ProblemBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    current_revision: Option<u64>,
}

impl ClientError {
    /// The error a non-success answer stands for.
    pub(crate) fn from_problem(
        status: u16,
        body: &[u8],
        retry_after_ms: Option<u64>,
    ) -> ClientError {
        let problem: ProblemBody = serde_json::from_slice(body).unwrap_or_default();
        let message = if problem.detail.is_empty() {
            format!("HTTP status {status}")
        } else {
            problem.detail
        };
        match problem.code.as_str() {
            "not_found" => ClientError::NotFound,
            "condition_failed" => ClientError::Conflict {
                current: problem.current_revision,
            },
            "invalid_input" | "invalid_json" | "not_json_object" | "key_too_large"
            | "value_too_large" | "body_too_large" | "query_too_broad" => {
                ClientError::InvalidInput {
                    code: problem.code,
                    message,
                }
            }
            "unavailable" | "not_leader" | "overloaded" | "not_serving" | "shutting_down" => {
                ClientError::Unavailable {
                    retry_after_ms: retry_after_ms.unwrap_or(100),
                    message,
                }
            }
            "timeout" => ClientError::Timeout { timeout_ms: 0 },
            "" if status == 404 => ClientError::NotFound,
            "" => ClientError::Protocol(format!("HTTP status {status} without a problem body")),
            _ => ClientError::Server {
                code: problem.code,
                message,
            },
        }
    }

    /// Whether retrying the same request may succeed (for requests safe to retry).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Transport(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves errors are chosen by code, with the conflict's current revision and
    /// the retry hint carried over.
    #[test]
    fn maps_problem_codes() {
        let conflict = br#"{"code":"condition_failed","detail":"x","current_revision":12}"#;
        assert_eq!(
            ClientError::from_problem(412, conflict, None),
            ClientError::Conflict { current: Some(12) }
        );
        let absent = br#"{"code":"condition_failed","current_revision":null}"#;
        assert_eq!(
            ClientError::from_problem(412, absent, None),
            ClientError::Conflict { current: None }
        );
        assert_eq!(
            ClientError::from_problem(404, br#"{"code":"not_found"}"#, None),
            ClientError::NotFound
        );
        assert!(matches!(
            ClientError::from_problem(
                503,
                br#"{"code":"unavailable","detail":"no leader"}"#,
                Some(2000)
            ),
            ClientError::Unavailable {
                retry_after_ms: 2000,
                ..
            }
        ));
        assert!(matches!(
            ClientError::from_problem(400, br#"{"code":"query_too_broad","detail":"d"}"#, None),
            ClientError::InvalidInput { code, .. } if code == "query_too_broad"
        ));
        assert!(matches!(
            ClientError::from_problem(500, br#"{"code":"corrupted","detail":"d"}"#, None),
            ClientError::Server { code, .. } if code == "corrupted"
        ));
        assert!(matches!(
            ClientError::from_problem(502, b"<html>", None),
            ClientError::Protocol(_)
        ));
    }
}
