//! Proves the admin TCP server against a real single-node kernel started in-process:
//! hostile or broken input (garbage, truncated frames, oversized lengths, a wrong
//! first frame, a wrong protocol version, a wrong token) gets an error frame and a
//! closed connection while the node keeps answering fresh clients; the connection
//! limit refuses extra clients with `overloaded`; and put/get/delete/scan round-trip
//! with revisions and conditions through `AdminClient`.
//!
//! Raw-socket tests write frames by hand with `mimori::admin::protocol` so they can
//! send what a well-behaved client never would.

mod common;

use anyhow::{bail, Context};
use common::admin_node::AdminTestNode;
use mimori::admin::client::{AdminClient, AdminClientError};
use mimori::admin::protocol::{
    read_frame, write_frame, AdminRequest, AdminResponse, ADMIN_PROTOCOL_VERSION,
    FRAME_BYTES_MAX_DEFAULT,
};
use mimori::admin::server::AdminServerOptions;
use mimori::error_code::exit;
use mimori_actors::ids::{NodeId, Revision, ShardId};
use mimori_actors::kv::{Condition, Consistency};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single wait in these tests may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// The admin test node, with the client these tests connect through.
type TestNode = AdminTestNode;

trait Connect {
    async fn client(&self) -> anyhow::Result<AdminClient>;
}

impl Connect for TestNode {
    async fn client(&self) -> anyhow::Result<AdminClient> {
        Ok(AdminClient::connect(&self.endpoints(), None, WAIT).await?)
    }
}

/// Proves the node still serves: a fresh client opens a session and writes.
async fn assert_node_answers(node: &TestNode) -> anyhow::Result<()> {
    let mut client = node.client().await?;
    assert_eq!(client.node_id(), NodeId(1));
    let revision = client
        .put(b"still-alive", b"yes", Condition::Always)
        .await?;
    assert!(revision.0 > 0, "a write has a non-zero revision");
    Ok(())
}

async fn raw_connect(address: SocketAddr) -> anyhow::Result<TcpStream> {
    Ok(tokio::time::timeout(WAIT, TcpStream::connect(address)).await??)
}

async fn send_request(stream: &mut TcpStream, request: &AdminRequest) -> anyhow::Result<()> {
    write_frame(stream, request, FRAME_BYTES_MAX_DEFAULT).await?;
    Ok(())
}

/// Reads one response frame; fails the test if none arrives in time.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<AdminResponse> {
    let payload = tokio::time::timeout(WAIT, read_frame(stream, FRAME_BYTES_MAX_DEFAULT))
        .await
        .context("no response in time")??
        .context("connection closed instead of a response")?;
    Ok(rmp_serde::from_slice(&payload)?)
}

/// Reads one frame and checks it is an error with `code`.
async fn expect_error(stream: &mut TcpStream, code: &str) -> anyhow::Result<String> {
    match read_response(stream).await? {
        AdminResponse::Error {
            code: actual,
            message,
        } => {
            assert_eq!(actual, code, "error message: {message}");
            Ok(message)
        }
        other => bail!("expected error {code}, got {other:?}"),
    }
}

/// Proves the server closed the connection: a read ends (EOF or reset) in time.
async fn expect_closed(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut buffer = [0u8; 64];
    match tokio::time::timeout(WAIT, stream.read(&mut buffer)).await {
        Err(_) => bail!("connection still open after {WAIT:?}"),
        Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
        Ok(Ok(read)) => bail!("{read} unexpected bytes after the final frame"),
    }
}

fn hello(protocol_version: u32, token: Option<&str>) -> AdminRequest {
    AdminRequest::Hello {
        protocol_version,
        token: token.map(str::to_string),
        client: "t20".into(),
    }
}

/// Proves garbage gets an error frame and a closed connection, and the server still
/// answers afterwards. Sends (1) a well-framed payload that is not MessagePack
/// (0xc1 is never used by the format) and (2) an HTTP request line, whose first
/// four bytes read as a length of about 1.2 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_error_frame_and_close() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;

    tracing::info!("--- a framed payload that does not decode");
    let mut stream = raw_connect(node.address).await?;
    stream
        .write_all(&[0, 0, 0, 5, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1])
        .await?;
    expect_error(&mut stream, "bad_frame").await?;
    expect_closed(&mut stream).await?;

    tracing::info!("--- an HTTP request sent to the admin port");
    let mut stream = raw_connect(node.address).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    expect_error(&mut stream, "frame_too_large").await?;
    expect_closed(&mut stream).await?;

    tracing::info!("--- garbage after a successful hello");
    let mut stream = raw_connect(node.address).await?;
    send_request(&mut stream, &hello(ADMIN_PROTOCOL_VERSION, None)).await?;
    assert!(matches!(
        read_response(&mut stream).await?,
        AdminResponse::HelloAccepted { node_id: 1, .. }
    ));
    stream.write_all(&[0, 0, 0, 3, 0x81, 0xa1, 0x78]).await?;
    expect_error(&mut stream, "bad_frame").await?;
    expect_closed(&mut stream).await?;

    tracing::info!("--- the node still answers a fresh client");
    assert_node_answers(&node).await?;
    node.stop(WAIT).await
}

/// Proves a truncated frame does not hold a connection forever: with a 300 ms frame
/// timeout, a header announcing 100 bytes followed by only 10 gets the connection
/// closed (no response), and a peer that half-closes mid-frame is dropped too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_dropped() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions {
        frame_timeout_ms: 300,
        ..AdminServerOptions::default()
    })
    .await?;

    tracing::info!("--- 10 of 100 bytes, then silence");
    let mut stream = raw_connect(node.address).await?;
    stream.write_all(&[0, 0, 0, 100]).await?;
    stream.write_all(&[0x81; 10]).await?;
    let started = std::time::Instant::now();
    expect_closed(&mut stream).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed by the frame timeout, not by chance"
    );

    tracing::info!("--- 10 of 100 bytes, then the client closes its side");
    let mut stream = raw_connect(node.address).await?;
    stream.write_all(&[0, 0, 0, 100]).await?;
    stream.write_all(&[0x81; 10]).await?;
    stream.shutdown().await?;
    expect_closed(&mut stream).await?;

    tracing::info!("--- the node still answers");
    assert_node_answers(&node).await?;
    node.stop(WAIT).await
}

/// Proves an oversized length is refused from the header alone: after sending only
/// the four bytes 0xFFFF_FFFF the client gets `frame_too_large` naming the limit,
/// so the server decided without waiting for (or allocating) 4 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_is_refused() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;
    let mut stream = raw_connect(node.address).await?;
    stream.write_all(&[0xff, 0xff, 0xff, 0xff]).await?;
    let message = expect_error(&mut stream, "frame_too_large").await?;
    assert!(
        message.contains(&FRAME_BYTES_MAX_DEFAULT.to_string()),
        "the message names the limit: {message}"
    );
    expect_closed(&mut stream).await?;

    tracing::info!("--- a smaller configured limit applies to requests after hello");
    node.stop(WAIT).await?;
    let node = TestNode::start(AdminServerOptions {
        frame_bytes_max: 2048,
        ..AdminServerOptions::default()
    })
    .await?;
    let mut client = node.client().await?;
    let error = client
        .put(b"big", &[b'x'; 4096], Condition::Always)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "frame_too_large", "{error}");
    node.stop(WAIT).await
}

/// Proves the handshake rules: a hello with another protocol version gets
/// `protocol_mismatch`; a first frame that is not a hello gets `bad_frame`; both
/// close the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_rules() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;

    tracing::info!("--- wrong protocol version");
    let mut stream = raw_connect(node.address).await?;
    send_request(&mut stream, &hello(ADMIN_PROTOCOL_VERSION + 1, None)).await?;
    let message = expect_error(&mut stream, "protocol_mismatch").await?;
    assert!(message.contains(&(ADMIN_PROTOCOL_VERSION + 1).to_string()));
    expect_closed(&mut stream).await?;

    tracing::info!("--- a request before the hello");
    let mut stream = raw_connect(node.address).await?;
    send_request(&mut stream, &AdminRequest::Status).await?;
    expect_error(&mut stream, "bad_frame").await?;
    expect_closed(&mut stream).await?;

    tracing::info!("--- a second hello inside a session is an error, not a close");
    let mut stream = raw_connect(node.address).await?;
    send_request(&mut stream, &hello(ADMIN_PROTOCOL_VERSION, None)).await?;
    assert!(matches!(
        read_response(&mut stream).await?,
        AdminResponse::HelloAccepted { .. }
    ));
    send_request(&mut stream, &hello(ADMIN_PROTOCOL_VERSION, None)).await?;
    expect_error(&mut stream, "invalid_input").await?;
    send_request(&mut stream, &AdminRequest::Health).await?;
    assert!(matches!(
        read_response(&mut stream).await?,
        AdminResponse::Health { .. }
    ));
    node.stop(WAIT).await
}

/// Proves token auth: with a token configured, a wrong or missing token gets
/// `unauthorized` (dbctl exit 8) and the right one opens a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions {
        token: Some("s3cret".into()),
        ..AdminServerOptions::default()
    })
    .await?;
    for token in [Some("wrong"), None, Some("")] {
        let error = AdminClient::connect(&node.endpoints(), token, WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, AdminClientError::Server { code, .. } if code == "unauthorized"),
            "token {token:?}: {error:?}"
        );
        assert_eq!(error.exit_code(), exit::UNAUTHORIZED);
    }
    let mut client = AdminClient::connect(&node.endpoints(), Some("s3cret"), WAIT).await?;
    client.put(b"k", b"v", Condition::Always).await?;
    node.stop(WAIT).await
}

/// Proves the connection limit: with `connections_max = 1`, a second client is
/// refused with `overloaded` (dbctl exit 6) while the first is open, and admitted
/// once the first has closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_extra_clients() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions {
        connections_max: 1,
        ..AdminServerOptions::default()
    })
    .await?;
    let first = node.client().await?;
    let error = node.client().await.unwrap_err();
    let error = error.downcast::<AdminClientError>()?;
    assert_eq!(error.code(), "overloaded", "{error}");
    assert_eq!(error.exit_code(), exit::UNAVAILABLE);
    drop(first);
    // The slot frees when the server sees the close; allow it a moment.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node.client().await {
            Ok(_) => break,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "slot not free yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
    node.stop(WAIT).await
}

/// Proves the data path end to end: put/get/delete/scan through `AdminClient` with
/// revisions that grow, conditions that are enforced (`condition_failed`), missing
/// keys (`None` / `not_found`), non-UTF-8 bytes, and scan paging with `after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_round_trip_with_revisions() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;
    let mut client = node.client().await?;

    tracing::info!("--- put and get");
    let first = client
        .put(b"user:1", br#"{"name": "jerk"}"#, Condition::Always)
        .await?;
    let read = client
        .get(b"user:1", Consistency::Linearizable)
        .await?
        .context("user:1 exists")?;
    assert_eq!(&read.value[..], br#"{"name": "jerk"}"#);
    assert_eq!(read.revision, first);

    tracing::info!("--- conditional writes");
    let second = client
        .put(b"user:1", b"v2", Condition::RevisionIs(first))
        .await?;
    assert!(second > first, "revisions grow: {first} then {second}");
    let stale_condition = client
        .put(b"user:1", b"v3", Condition::RevisionIs(first))
        .await
        .unwrap_err();
    assert_eq!(stale_condition.code(), "condition_failed");
    assert_eq!(stale_condition.exit_code(), exit::CONDITION_FAILED);
    let create_only = client
        .put(b"user:1", b"v3", Condition::Absent)
        .await
        .unwrap_err();
    assert_eq!(create_only.code(), "condition_failed");
    client.put(b"user:2", b"two", Condition::Absent).await?;

    tracing::info!("--- binary keys and values survive");
    client
        .put(b"user:3", &[0x00, 0xff, 0xfe], Condition::Always)
        .await?;
    let binary = client
        .get(b"user:3", Consistency::Stale)
        .await?
        .context("user:3 exists")?;
    assert_eq!(&binary.value[..], &[0x00, 0xff, 0xfe]);

    tracing::info!("--- scan pages in key order");
    client.put(b"other", b"x", Condition::Always).await?;
    let page = client
        .scan(b"user:", None, 2, Consistency::Linearizable)
        .await?;
    let keys: Vec<&[u8]> = page.items.iter().map(|item| &item.key[..]).collect();
    assert_eq!(keys, vec![&b"user:1"[..], &b"user:2"[..]]);
    assert_eq!(page.items[0].revision, second);
    let rest = client
        .scan(b"user:", Some(b"user:2"), 10, Consistency::Linearizable)
        .await?;
    let keys: Vec<&[u8]> = rest.items.iter().map(|item| &item.key[..]).collect();
    assert_eq!(keys, vec![&b"user:3"[..]]);

    tracing::info!("--- delete");
    let wrong = client
        .delete(b"user:1", Condition::RevisionIs(first))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), "condition_failed");
    let deleted = client
        .delete(b"user:1", Condition::RevisionIs(second))
        .await?;
    assert!(deleted > second);
    assert!(client
        .get(b"user:1", Consistency::Linearizable)
        .await?
        .is_none());
    let missing = client
        .delete(b"user:1", Condition::Always)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), "not_found");
    assert_eq!(missing.exit_code(), exit::NOT_FOUND);
    node.stop(WAIT).await
}

/// Proves the operational requests answer with this node's view (node id 1, the
/// configured shard count) and that killing a shard replica is accepted and the
/// shard serves again afterwards (the supervisor restarts it from disk); and that
/// a node without fault injection refuses to kill other actors or cut links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_cluster_info_and_kill_shard() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;
    let mut client = node.client().await?;
    let status = client.status().await?;
    assert_eq!(status.node_id, NodeId(1));
    assert_eq!(status.shard_count, 8);
    let health = client.health().await?;
    assert_eq!(health.node_id, NodeId(1));
    assert_eq!(health.shards_total, 8);
    let info = client.cluster_info().await?;
    assert_eq!(info.shard_count, 8);
    assert!(info.nodes.iter().any(|node| node.id == NodeId(1)));

    tracing::info!("--- kill every shard's replica, then write to all of them");
    for shard in 0..8 {
        client.kill_shard_replica(ShardId(shard)).await?;
    }
    for index in 0..32u32 {
        let key = format!("after-kill-{index}");
        let revision = client.put(key.as_bytes(), b"v", Condition::Always).await?;
        assert!(revision > Revision(0));
    }
    let out_of_range = client.kill_shard_replica(ShardId(1_000)).await.unwrap_err();
    assert!(
        matches!(out_of_range, AdminClientError::Server { .. }),
        "{out_of_range:?}"
    );

    tracing::info!("--- without fault injection, actor kills and cut links are refused");
    let refused = [
        client
            .kill_actor(mimori::admin::protocol::ActorTarget::Transport)
            .await
            .unwrap_err(),
        client
            .set_network_faults(&[NodeId(2)], &[])
            .await
            .unwrap_err(),
    ];
    for error in refused {
        assert_eq!(error.code(), "invalid_input", "{error:?}");
        assert!(
            error.to_string().contains("fault injection is disabled"),
            "{error}"
        );
    }
    // The node still serves: nothing was killed or cut.
    client
        .put(b"after-refusals", b"v", Condition::Always)
        .await?;
    node.stop(WAIT).await
}

/// Proves shutdown: after the shutdown future completes, `serve` returns, open
/// sessions are closed and the port refuses new sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_serving() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;
    let mut open = raw_connect(node.address).await?;
    send_request(&mut open, &hello(ADMIN_PROTOCOL_VERSION, None)).await?;
    read_response(&mut open).await?;
    let address = node.address;
    node.stop(WAIT).await?;
    expect_closed(&mut open).await?;
    let error = AdminClient::connect(&[address.to_string()], None, WAIT)
        .await
        .unwrap_err();
    assert_eq!(error.exit_code(), exit::CANNOT_CONNECT, "{error}");
    Ok(())
}
