//! The one place where a kernel error becomes something a user sees: a stable code,
//! an HTTP status, a problem+json title and a dbctl exit code.
//!
//! Codes and exit codes are part of the public contract (docs/errors.md); never
//! renumber them.

use mimori_actors::kv::KvError;

/// dbctl exit codes. Each value means one thing.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An error not covered below (server-side failure, storage error, corruption).
    pub const ERROR: u8 = 1;
    /// No endpoint could be reached.
    pub const CANNOT_CONNECT: u8 = 2;
    /// The key does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// The request was rejected as invalid (bad argument, too large, bad frame).
    pub const INVALID_INPUT: u8 = 4;
    /// A precondition (expected revision, create-only) did not hold.
    pub const CONDITION_FAILED: u8 = 5;
    /// The shard or node is temporarily unavailable; retrying later may succeed.
    pub const UNAVAILABLE: u8 = 6;
    /// The request timed out; a write may or may not have happened.
    pub const TIMEOUT: u8 = 7;
    /// The server refused the credentials (admin token).
    pub const UNAUTHORIZED: u8 = 8;
    /// The server speaks an incompatible protocol version.
    pub const PROTOCOL_MISMATCH: u8 = 9;
}

/// How one error code is presented at every edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorPresentation {
    pub code: &'static str,
    pub http_status: u16,
    pub title: &'static str,
    pub exit_code: u8,
}

/// Maps a stable error code to its presentation. Unknown codes map to a generic
/// internal error so an old client facing a newer server still behaves.
pub fn present_code(code: &str) -> ErrorPresentation {
    let (code, http_status, title, exit_code) = match code {
        "not_found" => ("not_found", 404, "Not found", exit::NOT_FOUND),
        "condition_failed" => (
            "condition_failed",
            412,
            "Precondition failed",
            exit::CONDITION_FAILED,
        ),
        "invalid_input" => ("invalid_input", 400, "Invalid input", exit::INVALID_INPUT),
        "not_json_object" => (
            "not_json_object",
            400,
            "Body is not a JSON object",
            exit::INVALID_INPUT,
        ),
        "invalid_json" => (
            "invalid_json",
            400,
            "Body is not valid JSON",
            exit::INVALID_INPUT,
        ),
        "key_too_large" => ("key_too_large", 413, "Key too large", exit::INVALID_INPUT),
        "value_too_large" => (
            "value_too_large",
            413,
            "Value too large",
            exit::INVALID_INPUT,
        ),
        "body_too_large" => ("body_too_large", 413, "Body too large", exit::INVALID_INPUT),
        "unavailable" => ("unavailable", 503, "Service unavailable", exit::UNAVAILABLE),
        "not_leader" => ("not_leader", 503, "Not the leader", exit::UNAVAILABLE),
        "overloaded" => (
            "overloaded",
            503,
            "Too many requests in flight",
            exit::UNAVAILABLE,
        ),
        "not_serving" => ("not_serving", 503, "Node is not serving", exit::UNAVAILABLE),
        "timeout" => ("timeout", 504, "Request timed out", exit::TIMEOUT),
        "shutting_down" => (
            "shutting_down",
            503,
            "Node is shutting down",
            exit::UNAVAILABLE,
        ),
        "query_too_broad" => (
            "query_too_broad",
            400,
            "Query too broad",
            exit::INVALID_INPUT,
        ),
        "corrupted" => ("corrupted", 500, "Data corruption detected", exit::ERROR),
        "storage_error" => ("storage_error", 500, "Storage failure", exit::ERROR),
        "method_not_allowed" => (
            "method_not_allowed",
            405,
            "Method not allowed",
            exit::INVALID_INPUT,
        ),
        "route_not_found" => (
            "route_not_found",
            404,
            "No such endpoint",
            exit::INVALID_INPUT,
        ),
        "unauthorized" => ("unauthorized", 401, "Unauthorized", exit::UNAUTHORIZED),
        "bad_frame" => ("bad_frame", 400, "Malformed frame", exit::INVALID_INPUT),
        "frame_too_large" => (
            "frame_too_large",
            413,
            "Frame too large",
            exit::INVALID_INPUT,
        ),
        "protocol_mismatch" => (
            "protocol_mismatch",
            400,
            "Unsupported protocol version",
            exit::PROTOCOL_MISMATCH,
        ),
        // Client-side outcomes of the admin client (dbctl); a server never sends them.
        "cannot_connect" => (
            "cannot_connect",
            502,
            "Cannot connect to any endpoint",
            exit::CANNOT_CONNECT,
        ),
        "connection_lost" => (
            "connection_lost",
            502,
            "Connection lost during the request",
            exit::ERROR,
        ),
        "protocol_error" => (
            "protocol_error",
            502,
            "Unexpected answer from the server",
            exit::ERROR,
        ),
        _ => ("internal", 500, "Internal error", exit::ERROR),
    };
    ErrorPresentation {
        code,
        http_status,
        title,
        exit_code,
    }
}

/// Maps a kernel error to its presentation.
pub fn present(error: &KvError) -> ErrorPresentation {
    present_code(error.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every kernel error code has its own presentation (none falls through to
    /// `internal`), so adding a `KvError` variant without mapping it fails here.
    #[test]
    fn every_kernel_code_is_mapped() {
        let errors = [
            KvError::NotFound,
            KvError::ConditionFailed { current: None },
            KvError::InvalidInput(String::new()),
            KvError::KeyTooLarge {
                actual: 1,
                limit: 0,
            },
            KvError::ValueTooLarge {
                actual: 1,
                limit: 0,
            },
            KvError::Unavailable {
                shard: mimori_actors::ids::ShardId(0),
                reason: String::new(),
                retry_after_ms: 1,
            },
            KvError::NotLeader {
                shard: mimori_actors::ids::ShardId(0),
                hint: None,
            },
            KvError::Timeout { timeout_ms: 1 },
            KvError::Corrupted(String::new()),
            KvError::Storage(String::new()),
            KvError::ShuttingDown,
            KvError::QueryTooBroad(String::new()),
        ];
        for error in errors {
            let presentation = present(&error);
            assert_eq!(presentation.code, error.code(), "{error:?} is not mapped");
        }
        assert_eq!(present(&KvError::NotFound).http_status, 404);
        assert_eq!(present(&KvError::NotFound).exit_code, exit::NOT_FOUND);
    }
}
