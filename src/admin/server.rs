//! The admin TCP server: accepts connections, runs the hello handshake, and answers
//! one response frame per request frame by calling the kernel's [`Router`].
//!
//! Who talks to it: `dbctl`, the chaos runner and tests, through
//! [`super::client::AdminClient`] or any MessagePack speaker. `mimorid` starts it
//! with [`serve`].
//!
//! Invariants:
//! - A peer can never crash the node or make it allocate more than the frame limit:
//!   garbage, oversized or undecodable frames get one `Error` frame
//!   (`bad_frame` / `frame_too_large`) and the connection is closed; every wait on a
//!   peer has a timeout, so a truncated frame cannot hold a connection forever.
//! - At most `connections_max` connections are served at once; extra connections
//!   get an `overloaded` error frame and are closed (at most
//!   `REFUSALS_IN_FLIGHT_MAX` refusals at once; beyond that they are just closed).
//! - Nothing but the request kind and the peer address is logged: never keys,
//!   values or tokens.

use super::protocol::{
    decode_payload, encode_frame, read_frame_header, read_frame_payload, AdminRequest,
    AdminResponse, BatchDocument, BatchResult, FrameError, QueryDocument, ScanEntry, StoredValue,
    ADMIN_PROTOCOL_VERSION, DOC_BATCH_ITEMS_MAX, FRAME_BYTES_MAX_DEFAULT,
};
use bytes::Bytes;
use mimori_actors::docs::collection::CollectionDefinition;
use mimori_actors::docs::query::{Query, QueryRequest};
use mimori_actors::ids::{NodeId, ShardId};
use mimori_actors::kv::{Condition, Consistency, KvError, Namespace};
use mimori_actors::router::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// The smallest frame limit the server accepts: a hello or an error must fit.
pub const FRAME_BYTES_MAX_MIN: u32 = 1024;

/// After sending a final error frame, how long the server keeps reading (and
/// discarding) what the peer still sends, so that closing does not reset the
/// connection before the peer has read the error.
const LINGER_MS: u64 = 500;

/// At most this many bytes are discarded while lingering.
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// How long the accept loop pauses after an accept error (e.g. out of file
/// descriptors) so it does not spin.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;

/// Connections over `connections_max` that are being told `overloaded` at once.
/// Refusing takes a write and a linger; past this many, extra connections are
/// closed without a word so a connection flood cannot grow the task count.
const REFUSALS_IN_FLIGHT_MAX: usize = 64;

/// How long writing the `overloaded` frame to a refused connection may take.
const REFUSAL_WRITE_TIMEOUT_MS: u64 = 1_000;

/// At most this much of the client's self-chosen name reaches the logs.
const CLIENT_NAME_LOGGED_CHARS_MAX: usize = 64;

/// How the admin server behaves. Every wait and every size has a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminServerOptions {
    /// When set, the hello must present exactly this token.
    pub token: Option<String>,
    /// Largest frame payload accepted or sent, in bytes.
    pub frame_bytes_max: u32,
    /// Connections served at once; more are refused with `overloaded`.
    pub connections_max: u32,
    /// How long a new connection may take to send its hello.
    pub hello_timeout_ms: u64,
    /// How long an open session may stay silent between requests before it is
    /// closed, freeing its connection slot.
    pub idle_timeout_ms: u64,
    /// Once a frame header has arrived, how long the rest of the frame may take; a
    /// truncated frame is dropped after this.
    pub frame_timeout_ms: u64,
    /// How long writing one response may take (a peer that does not read).
    pub write_timeout_ms: u64,
    /// On shutdown, how long in-flight requests may finish before their
    /// connections are cut.
    pub drain_timeout_ms: u64,
}

impl Default for AdminServerOptions {
    fn default() -> Self {
        AdminServerOptions {
            token: None,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            connections_max: 256,
            hello_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            frame_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            drain_timeout_ms: 5_000,
        }
    }
}

impl AdminServerOptions {
    /// Rejects options the server cannot work with.
    pub fn validate(&self) -> Result<(), String> {
        if self.frame_bytes_max < FRAME_BYTES_MAX_MIN {
            return Err(format!(
                "frame_bytes_max is {}; it must be at least {FRAME_BYTES_MAX_MIN}",
                self.frame_bytes_max
            ));
        }
        if self.connections_max == 0 {
            return Err("connections_max must be at least 1".into());
        }
        let timeouts = [
            ("hello_timeout_ms", self.hello_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("frame_timeout_ms", self.frame_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
        ];
        for (name, value) in timeouts {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.token.as_deref() == Some("") {
            return Err("an empty admin token would accept anyone; leave it unset instead".into());
        }
        Ok(())
    }
}

/// Serves admin connections on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish for up to `drain_timeout_ms` and
/// returns. Fails only when the options are invalid.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: AdminServerOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    options
        .validate()
        .map_err(|reason| std::io::Error::new(std::io::ErrorKind::InvalidInput, reason))?;
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(options.connections_max as usize));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX));
    // Encoded once, for every connection over the limit.
    let overloaded_frame = encode_frame(
        &AdminResponse::error(
            "overloaded",
            format!(
                "the admin server already serves {} connections",
                options.connections_max
            ),
        ),
        options.frame_bytes_max,
    )
    .map_err(|error| std::io::Error::other(error.to_string()))?;
    let overloaded_frame: Arc<[u8]> = Arc::from(overloaded_frame);
    let (stop_sender, stop_receiver) = watch::channel(false);
    let mut connections = JoinSet::new();
    tracing::info!(
        address = ?listener.local_addr().ok(),
        connections_max = options.connections_max,
        token_required = options.token.is_some(),
        "admin server listening"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    // A panic in one connection must not take the server down;
                    // it is a bug, so it is logged loudly.
                    tracing::error!(%error, "admin connection task failed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            router.clone(),
                            options.clone(),
                            stop_receiver.clone(),
                            slot,
                        ));
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "admin connection refused: too many connections");
                        if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                            connections.spawn(refuse_connection(
                                stream,
                                overloaded_frame.clone(),
                                refusal,
                            ));
                        }
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_sender.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_millis(options.drain_timeout_ms), drain)
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "admin connections did not drain in time; cutting them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    tracing::info!("admin server stopped");
    Ok(())
}

/// How reading the next request ended.
enum ReadOutcome {
    Request(AdminRequest),
    /// The peer closed cleanly between frames, went idle, or the server stops.
    Closed,
    /// The peer broke the protocol or the session cannot go on: send this error
    /// frame, then close.
    Reject(AdminResponse),
    /// The connection is unusable (truncated frame, socket error); close silently.
    Broken(String),
}

/// One connection, from hello to close. Holds its connection slot until it ends.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    options: Arc<AdminServerOptions>,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    // Requests and responses are small and strictly alternate; Nagle would only
    // add latency.
    let _ = stream.set_nodelay(true);
    match run_session(&mut stream, peer, &router, &options, &mut stop).await {
        Ok(()) => tracing::debug!(%peer, "admin connection closed"),
        Err(SessionEnd::Reject(response)) => {
            if let AdminResponse::Error { code, .. } = response.as_ref() {
                tracing::info!(%peer, code = code.as_str(), "admin connection rejected");
            }
            let _ = write_response(&mut stream, &response, &options).await;
            close_after_error(&mut stream).await;
        }
        Err(SessionEnd::Broken(reason)) => {
            tracing::debug!(%peer, reason = reason.as_str(), "admin connection dropped");
        }
    }
}

/// Tells a connection over the limit that the server is overloaded, then closes it.
/// Holds a refusal slot, not a connection slot.
async fn refuse_connection(
    mut stream: TcpStream,
    overloaded_frame: Arc<[u8]>,
    _refusal: OwnedSemaphorePermit,
) {
    let write = async {
        stream.write_all(&overloaded_frame).await?;
        stream.flush().await
    };
    let written =
        tokio::time::timeout(Duration::from_millis(REFUSAL_WRITE_TIMEOUT_MS), write).await;
    if matches!(written, Ok(Ok(()))) {
        close_after_error(&mut stream).await;
    }
}

/// Why a session ended other than by a clean close.
enum SessionEnd {
    Reject(Box<AdminResponse>),
    Broken(String),
}

async fn run_session(
    stream: &mut TcpStream,
    peer: SocketAddr,
    router: &Router,
    options: &AdminServerOptions,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), SessionEnd> {
    let hello = match read_request(stream, options, options.hello_timeout_ms, stop).await {
        ReadOutcome::Request(request) => request,
        ReadOutcome::Closed => return Ok(()),
        ReadOutcome::Reject(response) => return Err(SessionEnd::Reject(Box::new(response))),
        ReadOutcome::Broken(reason) => return Err(SessionEnd::Broken(reason)),
    };
    let answer = accept_hello(hello, router, options);
    if matches!(answer, AdminResponse::Error { .. }) {
        return Err(SessionEnd::Reject(Box::new(answer)));
    }
    write_response(stream, &answer, options)
        .await
        .map_err(SessionEnd::Broken)?;
    loop {
        let request = match read_request(stream, options, options.idle_timeout_ms, stop).await {
            ReadOutcome::Request(request) => request,
            ReadOutcome::Closed => return Ok(()),
            ReadOutcome::Reject(response) => return Err(SessionEnd::Reject(Box::new(response))),
            ReadOutcome::Broken(reason) => return Err(SessionEnd::Broken(reason)),
        };
        let kind = request.kind();
        let response = execute(router, request).await;
        if let AdminResponse::Error { code, .. } = &response {
            tracing::debug!(%peer, request = kind, code = code.as_str(), "admin request failed");
        }
        let frame = encode_response(response, options.frame_bytes_max);
        write_frame_bytes(stream, &frame, options)
            .await
            .map_err(SessionEnd::Broken)?;
    }
}

/// Checks the hello and answers `HelloAccepted`, or the `Error` to send before
/// closing. The protocol version is checked first (an old client learns it must
/// upgrade even with a wrong token), then the token.
fn accept_hello(
    hello: AdminRequest,
    router: &Router,
    options: &AdminServerOptions,
) -> AdminResponse {
    let AdminRequest::Hello {
        protocol_version,
        token,
        client,
    } = hello
    else {
        return AdminResponse::error(
            "bad_frame",
            format!("the first frame must be hello, not {}", hello.kind()),
        );
    };
    if protocol_version != ADMIN_PROTOCOL_VERSION {
        return AdminResponse::error(
            "protocol_mismatch",
            format!(
                "the client speaks admin protocol version {protocol_version}; this server speaks version {ADMIN_PROTOCOL_VERSION}"
            ),
        );
    }
    if let Some(expected) = &options.token {
        let presented = token.as_deref().unwrap_or("");
        if !tokens_match(presented.as_bytes(), expected.as_bytes()) {
            return AdminResponse::error("unauthorized", "the admin token is missing or wrong");
        }
    }
    // The name is the peer's free text: bounded before it reaches the logs.
    let client: String = client.chars().take(CLIENT_NAME_LOGGED_CHARS_MAX).collect();
    tracing::debug!(client = client.as_str(), "admin session opened");
    AdminResponse::HelloAccepted {
        protocol_version: ADMIN_PROTOCOL_VERSION,
        node_id: router.node_id().0,
        server_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Compares tokens in time independent of where they differ, so the token cannot be
/// guessed byte by byte from response times. (The length is not hidden.)
fn tokens_match(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    let difference = presented
        .iter()
        .zip(expected)
        .fold(0u8, |accumulated, (left, right)| {
            accumulated | (left ^ right)
        });
    difference == 0
}

/// Waits up to `wait_ms` for the next frame header, then up to
/// `frame_timeout_ms` for the rest of the frame, and decodes it.
async fn read_request(
    stream: &mut TcpStream,
    options: &AdminServerOptions,
    wait_ms: u64,
    stop: &mut watch::Receiver<bool>,
) -> ReadOutcome {
    let header = tokio::select! {
        header = tokio::time::timeout(
            Duration::from_millis(wait_ms),
            read_frame_header(stream, options.frame_bytes_max),
        ) => header,
        _ = stop.wait_for(|stopped| *stopped) => return ReadOutcome::Closed,
    };
    let length_bytes = match header {
        Err(_elapsed) => return ReadOutcome::Closed,
        Ok(Ok(None)) => return ReadOutcome::Closed,
        Ok(Ok(Some(length_bytes))) => length_bytes,
        Ok(Err(error)) => return frame_error_outcome(error),
    };
    let payload = match tokio::time::timeout(
        Duration::from_millis(options.frame_timeout_ms),
        read_frame_payload(stream, length_bytes),
    )
    .await
    {
        Err(_elapsed) => {
            return ReadOutcome::Broken(format!(
                "frame of {length_bytes} bytes incomplete after {} ms",
                options.frame_timeout_ms
            ))
        }
        Ok(Err(error)) => return frame_error_outcome(error),
        Ok(Ok(payload)) => payload,
    };
    match decode_payload::<AdminRequest>(&payload) {
        Ok(request) => ReadOutcome::Request(request),
        Err(error) => frame_error_outcome(error),
    }
}

fn frame_error_outcome(error: FrameError) -> ReadOutcome {
    match error.code() {
        Some(code) => ReadOutcome::Reject(AdminResponse::error(code, error.to_string())),
        None => ReadOutcome::Broken(error.to_string()),
    }
}

/// The rule for collection names and document ids, as refusals state it.
const NAME_RULE: &str =
    "collection names and document ids are 1 to 128 characters of A-Z a-z 0-9 _ . -";

/// Documents of one batch written at once, at most.
const BATCH_WRITES_IN_FLIGHT_MAX: usize = 256;

/// The kernel key of document `id` of `collection`, after checking both names and,
/// when given, that the document is a JSON object; or the refusal's code and
/// message.
fn checked_document(
    collection: &str,
    id: &str,
    document: Option<&[u8]>,
) -> Result<Vec<u8>, (String, String)> {
    if !crate::gateway::is_valid_name(collection.as_bytes())
        || !crate::gateway::is_valid_name(id.as_bytes())
    {
        return Err(("invalid_input".into(), NAME_RULE.into()));
    }
    if let Some(document) = document {
        crate::gateway::check_json_object(document)
            .map_err(|problem| (problem.code().to_string(), problem.detail().to_string()))?;
    }
    Ok(crate::gateway::document_key(collection, id))
}

/// Writes a batch of documents, up to [`BATCH_WRITES_IN_FLIGHT_MAX`] at a time;
/// one result per document, in order.
async fn put_batch(
    router: &Router,
    collection: String,
    documents: Vec<BatchDocument>,
) -> AdminResponse {
    if documents.len() > DOC_BATCH_ITEMS_MAX {
        return AdminResponse::error(
            "invalid_input",
            format!(
                "a batch carries at most {DOC_BATCH_ITEMS_MAX} documents, not {}",
                documents.len()
            ),
        );
    }
    let refused = |code: &str, message: String| BatchResult {
        revision: None,
        code: Some(code.to_string()),
        message: Some(message),
    };
    let mut results: Vec<Option<BatchResult>> = vec![None; documents.len()];
    let mut tasks = JoinSet::new();
    for (at, item) in documents.into_iter().enumerate() {
        let key = match checked_document(&collection, &item.id, Some(&item.document)) {
            Ok(key) => key,
            Err((code, message)) => {
                results[at] = Some(refused(&code, message));
                continue;
            }
        };
        while tasks.len() >= BATCH_WRITES_IN_FLIGHT_MAX {
            if let Some(Ok((done, result))) = tasks.join_next().await {
                results[done] = Some(result);
            }
        }
        let router = router.clone();
        tasks.spawn(async move {
            let outcome = router
                .put(
                    Namespace::Doc,
                    &key,
                    Bytes::from(item.document),
                    Condition::Always,
                )
                .await;
            let result = match outcome {
                Ok(revision) => BatchResult {
                    revision: Some(revision.0),
                    code: None,
                    message: None,
                },
                Err(error) => BatchResult {
                    revision: None,
                    code: Some(error.code().to_string()),
                    message: Some(error.to_string()),
                },
            };
            (at, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((done, result)) = joined {
            results[done] = Some(result);
        }
    }
    AdminResponse::BatchWritten {
        results: results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| refused("internal", "the write task failed".into()))
            })
            .collect(),
    }
}

/// Runs one request against the kernel. Keys are plain KV keys.
async fn execute(router: &Router, request: AdminRequest) -> AdminResponse {
    let consistency = |stale: bool| {
        if stale {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        }
    };
    let result = match request {
        AdminRequest::Hello { .. } => Err(KvError::InvalidInput(
            "the session is already open; hello is only the first frame".into(),
        )),
        AdminRequest::Put {
            key,
            value,
            condition,
        } => router
            .put(Namespace::Kv, &key, Bytes::from(value), condition.into())
            .await
            .map(|revision| AdminResponse::Written {
                revision: revision.0,
            }),
        AdminRequest::Get { key, stale } => router
            .get(Namespace::Kv, &key, consistency(stale))
            .await
            .map(|found| AdminResponse::Value {
                found: found.map(|versioned| StoredValue {
                    value: versioned.value.to_vec(),
                    revision: versioned.revision.0,
                }),
            }),
        AdminRequest::Delete { key, condition } => router
            .delete(Namespace::Kv, &key, condition.into())
            .await
            .map(|revision| AdminResponse::Deleted {
                revision: revision.0,
            }),
        AdminRequest::Scan {
            prefix,
            after,
            limit,
            stale,
        } => router
            .scan(
                Namespace::Kv,
                &prefix,
                after.as_deref(),
                limit,
                consistency(stale),
            )
            .await
            .map(|page| AdminResponse::ScanPage {
                entries: page
                    .items
                    .into_iter()
                    .map(|item| ScanEntry {
                        key: item.key,
                        value: item.value.to_vec(),
                        revision: item.revision.0,
                    })
                    .collect(),
                next: page.next,
            }),
        AdminRequest::Status => Ok(AdminResponse::Status {
            status: router.status().await,
        }),
        AdminRequest::ClusterInfo => Ok(AdminResponse::ClusterInfo {
            info: router.cluster_info().await,
        }),
        AdminRequest::Health => Ok(AdminResponse::Health {
            health: router.health().await,
        }),
        AdminRequest::KillShardReplica { shard } => router
            .kill_shard_replica(ShardId(shard))
            .map(|()| AdminResponse::ShardReplicaKilled { shard }),
        AdminRequest::TransferLeader { shard, to } => router
            .transfer_leader(ShardId(shard), NodeId(to))
            .await
            .map(|()| AdminResponse::LeaderTransferred { shard, leader: to }),
        AdminRequest::ShardChecksums => router
            .shard_checksums()
            .await
            .map(|checksums| AdminResponse::ShardChecksums { checksums }),
        AdminRequest::NodeAction { node, action } => router
            .node_action(NodeId(node), action)
            .await
            .map(|()| AdminResponse::NodeActionApplied { node, action }),
        AdminRequest::Logs { after, limit } => match crate::logs::ring() {
            Some(ring) => Ok(AdminResponse::Logs {
                page: ring.read(after, limit),
            }),
            None => Ok(AdminResponse::error(
                "unavailable",
                "this process keeps no log lines (its logging was not set up by mimorid)",
            )),
        },
        AdminRequest::DocPut {
            collection,
            id,
            document,
            condition,
        } => {
            let key = match checked_document(&collection, &id, Some(&document)) {
                Ok(key) => key,
                Err((code, message)) => return AdminResponse::error(&code, message),
            };
            router
                .put(
                    Namespace::Doc,
                    &key,
                    Bytes::from(document),
                    condition.into(),
                )
                .await
                .map(|revision| AdminResponse::Written {
                    revision: revision.0,
                })
        }
        AdminRequest::DocGet {
            collection,
            id,
            stale,
        } => {
            let key = match checked_document(&collection, &id, None) {
                Ok(key) => key,
                Err((code, message)) => return AdminResponse::error(&code, message),
            };
            router
                .get(Namespace::Doc, &key, consistency(stale))
                .await
                .map(|found| AdminResponse::Value {
                    found: found.map(|versioned| StoredValue {
                        value: versioned.value.to_vec(),
                        revision: versioned.revision.0,
                    }),
                })
        }
        AdminRequest::DocDelete {
            collection,
            id,
            condition,
        } => {
            let key = match checked_document(&collection, &id, None) {
                Ok(key) => key,
                Err((code, message)) => return AdminResponse::error(&code, message),
            };
            router
                .delete(Namespace::Doc, &key, condition.into())
                .await
                .map(|revision| AdminResponse::Deleted {
                    revision: revision.0,
                })
        }
        AdminRequest::DocQuery {
            collection,
            query,
            stale,
        } => {
            if !crate::gateway::is_valid_name(collection.as_bytes()) {
                return AdminResponse::error("invalid_input", NAME_RULE);
            }
            let request: QueryRequest = match serde_json::from_slice(&query) {
                Ok(request) => request,
                Err(error) => {
                    return AdminResponse::error(
                        "invalid_json",
                        format!("the query is not valid: {error}"),
                    )
                }
            };
            let query = match Query::compile(&request) {
                Ok(query) => query,
                Err(reason) => return AdminResponse::error("invalid_input", reason),
            };
            router
                .query(&collection, query, consistency(stale))
                .await
                .map(|page| AdminResponse::QueryPage {
                    documents: page
                        .hits
                        .into_iter()
                        .map(|hit| QueryDocument {
                            id: hit.position.id,
                            revision: hit.revision.0,
                            document: hit.document.to_vec(),
                        })
                        .collect(),
                    cursor: page.cursor,
                    index: page.index,
                    examined: page.examined,
                })
        }
        AdminRequest::DocPutBatch {
            collection,
            documents,
        } => return put_batch(router, collection, documents).await,
        AdminRequest::CollectionDefine { name, indexes } => {
            if !crate::gateway::is_valid_name(name.as_bytes()) {
                return AdminResponse::error("invalid_input", NAME_RULE);
            }
            let definition = match CollectionDefinition::new(name, indexes) {
                Ok(definition) => definition,
                Err(reason) => return AdminResponse::error("invalid_input", reason),
            };
            match router.define_collection(definition.clone()).await {
                Err(error) => Err(error),
                Ok(()) => router.collection_status(&definition).await.map(|status| {
                    AdminResponse::Collections {
                        collections: vec![status],
                    }
                }),
            }
        }
        AdminRequest::CollectionList => router
            .collections()
            .await
            .map(|collections| AdminResponse::Collections { collections }),
        AdminRequest::CollectionDrop { name } => {
            if !crate::gateway::is_valid_name(name.as_bytes()) {
                return AdminResponse::error("invalid_input", NAME_RULE);
            }
            router
                .drop_collection(&name)
                .await
                .map(|()| AdminResponse::CollectionDropped { name })
        }
        AdminRequest::KillActor { target } => router
            .kill_actor(target)
            .map(|()| AdminResponse::ActorKilled { target }),
        AdminRequest::SetNetworkFaults { drop_to, drop_from } => router
            .set_network_faults(
                drop_to.iter().copied().map(NodeId).collect(),
                drop_from.iter().copied().map(NodeId).collect(),
            )
            .map(|()| AdminResponse::NetworkFaultsSet { drop_to, drop_from }),
    };
    result.unwrap_or_else(|error| AdminResponse::error(error.code(), error.to_string()))
}

/// Encodes a response so it fits the frame limit. A scan page that is too large is
/// cut to fewer entries (with `next` set so the client continues where it stopped);
/// anything else that cannot fit becomes a `frame_too_large` error.
fn encode_response(response: AdminResponse, frame_bytes_max: u32) -> Vec<u8> {
    let replacement = match encode_frame(&response, frame_bytes_max) {
        Ok(frame) => return frame,
        Err(FrameError::TooLarge { .. }) => match response {
            AdminResponse::ScanPage { entries, .. } => {
                if let Some(frame) = fit_scan_page(entries, frame_bytes_max) {
                    return frame;
                }
                AdminResponse::error(
                    "frame_too_large",
                    format!("one scan entry does not fit in a frame of {frame_bytes_max} bytes"),
                )
            }
            _ => AdminResponse::error(
                "frame_too_large",
                format!("the response does not fit in a frame of {frame_bytes_max} bytes"),
            ),
        },
        Err(error) => AdminResponse::error("internal", error.to_string()),
    };
    // Error responses are a few hundred bytes and the limit is at least
    // FRAME_BYTES_MAX_MIN, so this cannot fail; if it ever did, sending nothing
    // lets the client time out rather than read a corrupt frame.
    encode_frame(&replacement, frame_bytes_max).unwrap_or_default()
}

/// Halves a scan page until it fits in a frame; `None` when even one entry does not.
fn fit_scan_page(mut entries: Vec<ScanEntry>, frame_bytes_max: u32) -> Option<Vec<u8>> {
    while entries.len() > 1 {
        entries.truncate(entries.len() / 2);
        let page = AdminResponse::ScanPage {
            next: entries.last().map(|entry| entry.key.clone()),
            entries: entries.clone(),
        };
        if let Ok(frame) = encode_frame(&page, frame_bytes_max) {
            return Some(frame);
        }
    }
    None
}

async fn write_response(
    stream: &mut TcpStream,
    response: &AdminResponse,
    options: &AdminServerOptions,
) -> Result<(), String> {
    let frame = encode_response(response.clone(), options.frame_bytes_max);
    write_frame_bytes(stream, &frame, options).await
}

async fn write_frame_bytes(
    stream: &mut TcpStream,
    frame: &[u8],
    options: &AdminServerOptions,
) -> Result<(), String> {
    let write = async {
        stream.write_all(frame).await?;
        stream.flush().await
    };
    match tokio::time::timeout(Duration::from_millis(options.write_timeout_ms), write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("write failed: {error}")),
        Err(_elapsed) => Err(format!(
            "peer did not read a response within {} ms",
            options.write_timeout_ms
        )),
    }
}

/// Closes after a final error frame: half-closes, then discards what the peer still
/// sends for a short while. Closing a socket with unread input makes the kernel
/// send a reset, which can destroy the error frame before the peer reads it.
async fn close_after_error(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let discard = async {
        let mut buffer = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_BYTES_MAX {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => discarded += read,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(LINGER_MS), discard).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::protocol::FRAME_HEADER_BYTES;

    /// Proves the token comparison accepts only the exact token.
    #[test]
    fn tokens_match_only_exactly() {
        assert!(tokens_match(b"secret", b"secret"));
        assert!(!tokens_match(b"secreT", b"secret"));
        assert!(!tokens_match(b"secret1", b"secret"));
        assert!(!tokens_match(b"", b"secret"));
    }

    /// Proves an oversized scan page is cut to fit, with `next` pointing at the last
    /// entry kept, instead of failing the whole scan.
    #[test]
    fn oversized_scan_page_is_cut_to_fit() {
        let entries: Vec<ScanEntry> = (0..64u8)
            .map(|index| ScanEntry {
                key: vec![b'k', index],
                value: vec![index; 100],
                revision: u64::from(index) + 1,
            })
            .collect();
        let frame = encode_response(
            AdminResponse::ScanPage {
                entries,
                next: None,
            },
            2048,
        );
        assert!(frame.len() <= 2048 + FRAME_HEADER_BYTES);
        let decoded: AdminResponse = decode_payload(&frame[FRAME_HEADER_BYTES..]).unwrap();
        let AdminResponse::ScanPage { entries, next } = decoded else {
            panic!("expected a scan page, got {decoded:?}");
        };
        assert!(!entries.is_empty() && entries.len() < 64);
        assert_eq!(next, entries.last().map(|entry| entry.key.clone()));
        assert_eq!(entries[0].key, vec![b'k', 0]);
    }

    /// Proves invalid options are refused with a reason.
    #[test]
    fn invalid_options_are_refused() {
        assert!(AdminServerOptions::default().validate().is_ok());
        let tiny = AdminServerOptions {
            frame_bytes_max: 10,
            ..AdminServerOptions::default()
        };
        assert!(tiny.validate().is_err());
        let empty_token = AdminServerOptions {
            token: Some(String::new()),
            ..AdminServerOptions::default()
        };
        assert!(empty_token.validate().is_err());
    }
}
