//! The admin TCP client: one session with one node, typed methods for every admin
//! request.
//!
//! Who talks to it: `dbctl`, the chaos runner and tests. It speaks
//! [`super::protocol`] to [`super::server`].
//!
//! Invariants:
//! - Errors say whether no endpoint could be reached ([`AdminClientError::CannotConnect`],
//!   dbctl exit 2) or a server answered with a stable error code
//!   ([`AdminClientError::Server`]); the two are never confused.
//! - Every network wait is bounded by the client's timeout. After a timeout or a
//!   broken connection the session is abandoned (a late response would otherwise be
//!   taken as the answer to the next request); connect again to continue.
//! - Requests are strictly sequential on one session (`&mut self`).

use super::protocol::{
    decode_payload, read_frame, write_frame, ActorTarget, AdminRequest, AdminResponse,
    BatchDocument, BatchResult, NodeAction, QueryDocument, WriteCondition, ADMIN_PROTOCOL_VERSION,
    FRAME_BYTES_MAX_DEFAULT,
};
use crate::error_code;
use crate::logs::LogPage;
use bytes::Bytes;
use mimori_actors::ids::{NodeId, Revision, ShardId};
use mimori_actors::kv::{
    ClusterInfo, Condition, Consistency, Health, NodeStatus, ScanItem, ScanPage, ShardChecksum,
    Versioned,
};
use mimori_actors::router::docs::CollectionStatus;
use std::fmt;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why connecting to one endpoint failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointFailure {
    pub endpoint: String,
    pub reason: String,
}

impl fmt::Display for EndpointFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.endpoint, self.reason)
    }
}

/// Errors of the admin client.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The endpoint list was empty.
    #[error("no admin endpoint given")]
    NoEndpoints,
    /// No endpoint accepted a connection and a hello.
    #[error("cannot connect to any admin endpoint ({})", list_failures(.failures))]
    CannotConnect { failures: Vec<EndpointFailure> },
    /// The server answered with an error.
    #[error("{message}")]
    Server { code: String, message: String },
    /// The server did not answer in time. A write may or may not have happened.
    #[error(
        "no answer from {endpoint} within {timeout_ms} ms; a write may or may not have happened"
    )]
    Timeout { endpoint: String, timeout_ms: u64 },
    /// The connection broke during a request. A write may or may not have happened.
    #[error("connection to {endpoint} lost: {reason}")]
    ConnectionLost { endpoint: String, reason: String },
    /// The server sent something this client does not understand.
    #[error("unexpected answer from {endpoint}: {reason}")]
    Protocol { endpoint: String, reason: String },
}

fn list_failures(failures: &[EndpointFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl AdminClientError {
    /// The stable error code (see `crate::error_code`).
    pub fn code(&self) -> &str {
        match self {
            AdminClientError::NoEndpoints => "invalid_input",
            AdminClientError::CannotConnect { .. } => "cannot_connect",
            AdminClientError::Server { code, .. } => code,
            AdminClientError::Timeout { .. } => "timeout",
            AdminClientError::ConnectionLost { .. } => "connection_lost",
            AdminClientError::Protocol { .. } => "protocol_error",
        }
    }

    /// The dbctl exit code for this error.
    pub fn exit_code(&self) -> u8 {
        error_code::present_code(self.code()).exit_code
    }
}

/// How the client connects.
#[derive(Clone, Debug)]
pub struct AdminClientOptions {
    /// Presented in the hello; required when the server has a token.
    pub token: Option<String>,
    /// Bounds the TCP connect, the hello, and each request.
    pub timeout: Duration,
    /// Largest response frame accepted, in bytes.
    pub frame_bytes_max: u32,
    /// Sent in the hello for the server's logs.
    pub client_name: String,
}

impl Default for AdminClientOptions {
    fn default() -> Self {
        AdminClientOptions {
            token: None,
            timeout: Duration::from_secs(5),
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            client_name: format!("mimori-admin-client/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// An open admin session with one node.
pub struct AdminClient {
    stream: TcpStream,
    /// The endpoint that accepted the session, for error messages.
    endpoint: String,
    node_id: NodeId,
    server_version: String,
    timeout: Duration,
    frame_bytes_max: u32,
    /// Set after a timeout or an I/O error: the stream may hold a late response, so
    /// it must not be used again.
    broken: bool,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AdminClient")
            .field("endpoint", &self.endpoint)
            .field("node_id", &self.node_id)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// How one connection attempt ended, when it did not open a session.
enum AttemptFailure {
    /// The endpoint could not be reached or dropped us before answering: try the next.
    Unreachable(String),
    /// The server answered with an error that may not hold for the next endpoint
    /// (overloaded, shutting down): try the next, but report it if all fail.
    Refused(AdminClientError),
    /// The server answered with an error every endpoint will repeat (wrong token,
    /// wrong protocol version): stop here.
    Fatal(AdminClientError),
}

impl AdminClient {
    /// Connects to the first endpoint (`host:port`) that accepts a session, trying
    /// them in order, with default options and this token and timeout.
    pub async fn connect(
        endpoints: &[String],
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<AdminClient, AdminClientError> {
        let options = AdminClientOptions {
            token: token.map(str::to_string),
            timeout,
            ..AdminClientOptions::default()
        };
        AdminClient::connect_with(endpoints, &options).await
    }

    /// Connects to the first endpoint that accepts a session, trying them in order.
    pub async fn connect_with(
        endpoints: &[String],
        options: &AdminClientOptions,
    ) -> Result<AdminClient, AdminClientError> {
        if endpoints.is_empty() {
            return Err(AdminClientError::NoEndpoints);
        }
        let mut failures = Vec::new();
        let mut refused = None;
        for endpoint in endpoints {
            match AdminClient::attempt(endpoint, options).await {
                Ok(client) => return Ok(client),
                Err(AttemptFailure::Unreachable(reason)) => failures.push(EndpointFailure {
                    endpoint: endpoint.clone(),
                    reason,
                }),
                Err(AttemptFailure::Refused(error)) => {
                    tracing::debug!(endpoint = endpoint.as_str(), %error, "admin endpoint refused the session");
                    refused = Some(error);
                }
                Err(AttemptFailure::Fatal(error)) => return Err(error),
            }
        }
        Err(refused.unwrap_or(AdminClientError::CannotConnect { failures }))
    }

    async fn attempt(
        endpoint: &str,
        options: &AdminClientOptions,
    ) -> Result<AdminClient, AttemptFailure> {
        let timeout_ms = options.timeout.as_millis();
        let stream = match tokio::time::timeout(options.timeout, TcpStream::connect(endpoint)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(AttemptFailure::Unreachable(error.to_string())),
            Err(_elapsed) => {
                return Err(AttemptFailure::Unreachable(format!(
                    "connect timed out after {timeout_ms} ms"
                )))
            }
        };
        // Requests and responses strictly alternate; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let mut client = AdminClient {
            stream,
            endpoint: endpoint.to_string(),
            node_id: NodeId(0),
            server_version: String::new(),
            timeout: options.timeout,
            frame_bytes_max: options.frame_bytes_max,
            broken: false,
        };
        let hello = AdminRequest::Hello {
            protocol_version: ADMIN_PROTOCOL_VERSION,
            token: options.token.clone(),
            client: options.client_name.clone(),
        };
        match client.request(hello).await {
            Ok(AdminResponse::HelloAccepted {
                protocol_version,
                node_id,
                server_version,
            }) => {
                if protocol_version != ADMIN_PROTOCOL_VERSION {
                    return Err(AttemptFailure::Fatal(AdminClientError::Server {
                        code: "protocol_mismatch".into(),
                        message: format!(
                            "the server speaks admin protocol version {protocol_version}; this client speaks version {ADMIN_PROTOCOL_VERSION}"
                        ),
                    }));
                }
                client.node_id = NodeId(node_id);
                client.server_version = server_version;
                Ok(client)
            }
            Ok(other) => Err(AttemptFailure::Fatal(AdminClientError::Protocol {
                endpoint: endpoint.to_string(),
                reason: format!("expected hello_accepted, got {}", response_kind(&other)),
            })),
            Err(error @ AdminClientError::Server { .. })
                if matches!(error.code(), "unauthorized" | "protocol_mismatch") =>
            {
                Err(AttemptFailure::Fatal(error))
            }
            Err(error @ AdminClientError::Server { .. }) => Err(AttemptFailure::Refused(error)),
            Err(error) => Err(AttemptFailure::Unreachable(error.to_string())),
        }
    }

    /// The endpoint this session is connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The id of the node serving this session.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The server's crate version, for diagnostics.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Sends one request and returns its response. An `Error` response becomes
    /// [`AdminClientError::Server`].
    pub async fn request(
        &mut self,
        request: AdminRequest,
    ) -> Result<AdminResponse, AdminClientError> {
        if self.broken {
            return Err(AdminClientError::ConnectionLost {
                endpoint: self.endpoint.clone(),
                reason: "the session was abandoned after an earlier failure; connect again".into(),
            });
        }
        let frame_bytes_max = self.frame_bytes_max;
        let exchange = async {
            write_frame(&mut self.stream, &request, frame_bytes_max).await?;
            read_frame(&mut self.stream, frame_bytes_max).await
        };
        let payload = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(Some(payload))) => payload,
            Ok(Ok(None)) => {
                self.broken = true;
                return Err(AdminClientError::ConnectionLost {
                    endpoint: self.endpoint.clone(),
                    reason: "the server closed the connection".into(),
                });
            }
            Ok(Err(error)) => {
                self.broken = true;
                return Err(match error.code() {
                    // Our own request was too large to send: the peer saw nothing.
                    Some("frame_too_large") => AdminClientError::Server {
                        code: "frame_too_large".into(),
                        message: error.to_string(),
                    },
                    _ => AdminClientError::ConnectionLost {
                        endpoint: self.endpoint.clone(),
                        reason: error.to_string(),
                    },
                });
            }
            Err(_elapsed) => {
                self.broken = true;
                return Err(AdminClientError::Timeout {
                    endpoint: self.endpoint.clone(),
                    timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
        };
        match decode_payload::<AdminResponse>(&payload) {
            Ok(AdminResponse::Error { code, message }) => {
                Err(AdminClientError::Server { code, message })
            }
            Ok(response) => Ok(response),
            Err(error) => {
                self.broken = true;
                Err(AdminClientError::Protocol {
                    endpoint: self.endpoint.clone(),
                    reason: error.to_string(),
                })
            }
        }
    }

    fn unexpected(&self, expected: &str, response: &AdminResponse) -> AdminClientError {
        AdminClientError::Protocol {
            endpoint: self.endpoint.clone(),
            reason: format!("expected {expected}, got {}", response_kind(response)),
        }
    }

    /// Writes `value` under `key` if `condition` holds; returns the new revision.
    pub async fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        condition: Condition,
    ) -> Result<Revision, AdminClientError> {
        let request = AdminRequest::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            condition: WriteCondition::from(condition),
        };
        match self.request(request).await? {
            AdminResponse::Written { revision } => Ok(Revision(revision)),
            other => Err(self.unexpected("written", &other)),
        }
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(
        &mut self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Versioned>, AdminClientError> {
        let request = AdminRequest::Get {
            key: key.to_vec(),
            stale: consistency == Consistency::Stale,
        };
        match self.request(request).await? {
            AdminResponse::Value { found } => Ok(found.map(|stored| Versioned {
                value: Bytes::from(stored.value),
                revision: Revision(stored.revision),
            })),
            other => Err(self.unexpected("value", &other)),
        }
    }

    /// Deletes `key` if `condition` holds; returns the revision of the delete. A
    /// missing key is a `not_found` server error.
    pub async fn delete(
        &mut self,
        key: &[u8],
        condition: Condition,
    ) -> Result<Revision, AdminClientError> {
        let request = AdminRequest::Delete {
            key: key.to_vec(),
            condition: WriteCondition::from(condition),
        };
        match self.request(request).await? {
            AdminResponse::Deleted { revision } => Ok(Revision(revision)),
            other => Err(self.unexpected("deleted", &other)),
        }
    }

    /// Lists keys starting with `prefix` in key order, strictly after `after`, at
    /// most `limit` of them (the server may return fewer to fit a frame; `next` is
    /// then set).
    pub async fn scan(
        &mut self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<ScanPage, AdminClientError> {
        let request = AdminRequest::Scan {
            prefix: prefix.to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit,
            stale: consistency == Consistency::Stale,
        };
        match self.request(request).await? {
            AdminResponse::ScanPage { entries, next } => Ok(ScanPage {
                items: entries
                    .into_iter()
                    .map(|entry| ScanItem {
                        key: entry.key,
                        value: Bytes::from(entry.value),
                        revision: Revision(entry.revision),
                    })
                    .collect(),
                next,
            }),
            other => Err(self.unexpected("scan_page", &other)),
        }
    }

    /// The node's counters.
    pub async fn status(&mut self) -> Result<NodeStatus, AdminClientError> {
        match self.request(AdminRequest::Status).await? {
            AdminResponse::Status { status } => Ok(status),
            other => Err(self.unexpected("status", &other)),
        }
    }

    /// The cluster as the node sees it.
    pub async fn cluster_info(&mut self) -> Result<ClusterInfo, AdminClientError> {
        match self.request(AdminRequest::ClusterInfo).await? {
            AdminResponse::ClusterInfo { info } => Ok(info),
            other => Err(self.unexpected("cluster_info", &other)),
        }
    }

    /// Whether the node serves.
    pub async fn health(&mut self) -> Result<Health, AdminClientError> {
        match self.request(AdminRequest::Health).await? {
            AdminResponse::Health { health } => Ok(health),
            other => Err(self.unexpected("health", &other)),
        }
    }

    /// Fault injection: kills the node's local replica actor of `shard`.
    pub async fn kill_shard_replica(&mut self, shard: ShardId) -> Result<(), AdminClientError> {
        match self
            .request(AdminRequest::KillShardReplica { shard: shard.0 })
            .await?
        {
            AdminResponse::ShardReplicaKilled { .. } => Ok(()),
            other => Err(self.unexpected("shard_replica_killed", &other)),
        }
    }

    /// The node's recent log lines: the last `limit`, or with `after`, the first
    /// `limit` written after that sequence.
    pub async fn logs(
        &mut self,
        after: Option<u64>,
        limit: u32,
    ) -> Result<LogPage, AdminClientError> {
        match self.request(AdminRequest::Logs { after, limit }).await? {
            AdminResponse::Logs { page } => Ok(page),
            other => Err(self.unexpected("logs", &other)),
        }
    }

    /// Fault injection: kills one of the node's actors (the node must run with
    /// `fault_injection`).
    pub async fn kill_actor(&mut self, target: ActorTarget) -> Result<(), AdminClientError> {
        match self.request(AdminRequest::KillActor { target }).await? {
            AdminResponse::ActorKilled { .. } => Ok(()),
            other => Err(self.unexpected("actor_killed", &other)),
        }
    }

    /// Fault injection: the node drops all traffic to `drop_to` and from
    /// `drop_from` until called again (empty lists heal).
    pub async fn set_network_faults(
        &mut self,
        drop_to: &[NodeId],
        drop_from: &[NodeId],
    ) -> Result<(), AdminClientError> {
        let request = AdminRequest::SetNetworkFaults {
            drop_to: drop_to.iter().map(|node| node.0).collect(),
            drop_from: drop_from.iter().map(|node| node.0).collect(),
        };
        match self.request(request).await? {
            AdminResponse::NetworkFaultsSet { .. } => Ok(()),
            other => Err(self.unexpected("network_faults_set", &other)),
        }
    }

    /// Moves the leadership of `shard` to node `to`.
    pub async fn transfer_leader(
        &mut self,
        shard: ShardId,
        to: NodeId,
    ) -> Result<(), AdminClientError> {
        match self
            .request(AdminRequest::TransferLeader {
                shard: shard.0,
                to: to.0,
            })
            .await?
        {
            AdminResponse::LeaderTransferred { .. } => Ok(()),
            other => Err(self.unexpected("leader_transferred", &other)),
        }
    }

    /// Asks the cluster to drain or remove `node`.
    pub async fn node_action(
        &mut self,
        node: NodeId,
        action: NodeAction,
    ) -> Result<(), AdminClientError> {
        match self
            .request(AdminRequest::NodeAction {
                node: node.0,
                action,
            })
            .await?
        {
            AdminResponse::NodeActionApplied { .. } => Ok(()),
            other => Err(self.unexpected("node_action_applied", &other)),
        }
    }

    /// Writes document `id` of `collection` if `condition` holds.
    pub async fn doc_put(
        &mut self,
        collection: &str,
        id: &str,
        document: &[u8],
        condition: Condition,
    ) -> Result<Revision, AdminClientError> {
        let request = AdminRequest::DocPut {
            collection: collection.to_string(),
            id: id.to_string(),
            document: document.to_vec(),
            condition: WriteCondition::from(condition),
        };
        match self.request(request).await? {
            AdminResponse::Written { revision } => Ok(Revision(revision)),
            other => Err(self.unexpected("written", &other)),
        }
    }

    /// Reads document `id` of `collection`; `None` when it does not exist.
    pub async fn doc_get(
        &mut self,
        collection: &str,
        id: &str,
        consistency: Consistency,
    ) -> Result<Option<Versioned>, AdminClientError> {
        let request = AdminRequest::DocGet {
            collection: collection.to_string(),
            id: id.to_string(),
            stale: consistency == Consistency::Stale,
        };
        match self.request(request).await? {
            AdminResponse::Value { found } => Ok(found.map(|found| Versioned {
                value: Bytes::from(found.value),
                revision: Revision(found.revision),
            })),
            other => Err(self.unexpected("value", &other)),
        }
    }

    /// Deletes document `id` of `collection` if `condition` holds.
    pub async fn doc_delete(
        &mut self,
        collection: &str,
        id: &str,
        condition: Condition,
    ) -> Result<Revision, AdminClientError> {
        let request = AdminRequest::DocDelete {
            collection: collection.to_string(),
            id: id.to_string(),
            condition: WriteCondition::from(condition),
        };
        match self.request(request).await? {
            AdminResponse::Deleted { revision } => Ok(Revision(revision)),
            other => Err(self.unexpected("deleted", &other)),
        }
    }

    /// One page of a query; `query` is the JSON query body.
    pub async fn doc_query(
        &mut self,
        collection: &str,
        query: &[u8],
        consistency: Consistency,
    ) -> Result<DocQueryPage, AdminClientError> {
        let request = AdminRequest::DocQuery {
            collection: collection.to_string(),
            query: query.to_vec(),
            stale: consistency == Consistency::Stale,
        };
        match self.request(request).await? {
            AdminResponse::QueryPage {
                documents,
                cursor,
                index,
                examined,
            } => Ok(DocQueryPage {
                documents,
                cursor,
                index,
                examined,
            }),
            other => Err(self.unexpected("query_page", &other)),
        }
    }

    /// Writes a batch of documents unconditionally; one result per document.
    pub async fn doc_put_batch(
        &mut self,
        collection: &str,
        documents: Vec<BatchDocument>,
    ) -> Result<Vec<BatchResult>, AdminClientError> {
        let count = documents.len();
        let request = AdminRequest::DocPutBatch {
            collection: collection.to_string(),
            documents,
        };
        match self.request(request).await? {
            AdminResponse::BatchWritten { results } if results.len() == count => Ok(results),
            other => Err(self.unexpected("batch_written", &other)),
        }
    }

    /// Declares `name` with secondary indexes on `indexes`.
    pub async fn collection_define(
        &mut self,
        name: &str,
        indexes: Vec<String>,
    ) -> Result<Vec<CollectionStatus>, AdminClientError> {
        let request = AdminRequest::CollectionDefine {
            name: name.to_string(),
            indexes,
        };
        match self.request(request).await? {
            AdminResponse::Collections { collections } => Ok(collections),
            other => Err(self.unexpected("collections", &other)),
        }
    }

    /// Every declared collection.
    pub async fn collection_list(&mut self) -> Result<Vec<CollectionStatus>, AdminClientError> {
        match self.request(AdminRequest::CollectionList).await? {
            AdminResponse::Collections { collections } => Ok(collections),
            other => Err(self.unexpected("collections", &other)),
        }
    }

    /// Drops collection `name` with its documents.
    pub async fn collection_drop(&mut self, name: &str) -> Result<(), AdminClientError> {
        let request = AdminRequest::CollectionDrop {
            name: name.to_string(),
        };
        match self.request(request).await? {
            AdminResponse::CollectionDropped { .. } => Ok(()),
            other => Err(self.unexpected("collection_dropped", &other)),
        }
    }

    /// The content checksum and applied index of every replica on the node.
    pub async fn shard_checksums(&mut self) -> Result<Vec<ShardChecksum>, AdminClientError> {
        match self.request(AdminRequest::ShardChecksums).await? {
            AdminResponse::ShardChecksums { checksums } => Ok(checksums),
            other => Err(self.unexpected("shard_checksums", &other)),
        }
    }
}

/// One page of a document query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocQueryPage {
    pub documents: Vec<QueryDocument>,
    pub cursor: Option<String>,
    pub index: Option<String>,
    pub examined: u64,
}

/// The wire name of a response variant, for error messages.
fn response_kind(response: &AdminResponse) -> &'static str {
    match response {
        AdminResponse::HelloAccepted { .. } => "hello_accepted",
        AdminResponse::Written { .. } => "written",
        AdminResponse::Deleted { .. } => "deleted",
        AdminResponse::Value { .. } => "value",
        AdminResponse::ScanPage { .. } => "scan_page",
        AdminResponse::Status { .. } => "status",
        AdminResponse::ClusterInfo { .. } => "cluster_info",
        AdminResponse::Health { .. } => "health",
        AdminResponse::ShardReplicaKilled { .. } => "shard_replica_killed",
        AdminResponse::ActorKilled { .. } => "actor_killed",
        AdminResponse::NetworkFaultsSet { .. } => "network_faults_set",
        AdminResponse::LeaderTransferred { .. } => "leader_transferred",
        AdminResponse::ShardChecksums { .. } => "shard_checksums",
        AdminResponse::NodeActionApplied { .. } => "node_action_applied",
        AdminResponse::Logs { .. } => "logs",
        AdminResponse::Error { .. } => "error",
        AdminResponse::QueryPage { .. } => "query_page",
        AdminResponse::BatchWritten { .. } => "batch_written",
        AdminResponse::Collections { .. } => "collections",
        AdminResponse::CollectionDropped { .. } => "collection_dropped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves an unreachable endpoint list is `CannotConnect` (exit 2) naming each
    /// endpoint, and an empty list is invalid input (exit 4). Uses a port that was
    /// just bound and released, so nothing listens there.
    #[tokio::test]
    async fn unreachable_endpoints_are_cannot_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        drop(listener);
        let endpoints = vec![endpoint.clone(), "not a host name:1".to_string()];
        let error = AdminClient::connect(&endpoints, None, Duration::from_secs(2))
            .await
            .unwrap_err();
        let AdminClientError::CannotConnect { failures } = &error else {
            panic!("expected CannotConnect, got {error:?}");
        };
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[0].endpoint, endpoint);
        assert_eq!(error.exit_code(), error_code::exit::CANNOT_CONNECT);
        let empty = AdminClient::connect(&[], None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(empty.exit_code(), error_code::exit::INVALID_INPUT);
    }

    /// Proves server error codes keep their meaning for dbctl's exit code.
    #[test]
    fn server_errors_map_to_exit_codes() {
        let error = |code: &str| AdminClientError::Server {
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(error("not_found").exit_code(), error_code::exit::NOT_FOUND);
        assert_eq!(
            error("unauthorized").exit_code(),
            error_code::exit::UNAUTHORIZED
        );
        assert_eq!(
            error("protocol_mismatch").exit_code(),
            error_code::exit::PROTOCOL_MISMATCH
        );
        assert_eq!(
            error("condition_failed").exit_code(),
            error_code::exit::CONDITION_FAILED
        );
        let timeout = AdminClientError::Timeout {
            endpoint: String::new(),
            timeout_ms: 1,
        };
        assert_eq!(timeout.exit_code(), error_code::exit::TIMEOUT);
    }
}
