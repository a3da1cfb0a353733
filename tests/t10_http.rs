//! Proves the HTTP gateway's public contract end to end against a real single-node
//! kernel: every documented status code (200, 201, 400, 404, 405, 412, 413, 503), the
//! problem+json shape of every error, revisions as ETags, conditional writes, raw-byte
//! keys through percent-encoding, scan pagination and base64 marking, documents with
//! server-assigned ids, size limits enforced before buffering, and admission control.
//!
//! Each test starts its own node in a temporary directory and its own gateway on an
//! ephemeral port, and drives it with `reqwest` (or a raw TCP socket where the test
//! needs control over how the request is sent).

use mimori::gateway::{self, GatewayOptions, GatewayState};
use mimori_actors::ids::NodeId;
use mimori_actors::node::{Node, NodeOptions};
use mimori_actors::router::Router;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Body limit used by tests that exercise it: small enough that an oversized request
/// fits in socket buffers, so the client always sees the response.
const TEST_BODY_BYTES_MAX: u64 = 1024;

/// How long a test waits for a condition (node serving, request admitted) before it
/// fails; generous because CI machines are slow, never needed on the happy path.
const WAIT_DEADLINE: Duration = Duration::from_secs(20);

/// A node plus a gateway serving it.
struct Harness {
    address: SocketAddr,
    client: reqwest::Client,
    kernel: Router,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    node: Option<Node>,
    _data_dir: tempfile::TempDir,
}

/// Starts a node with few shards (fast elections) in a fresh directory.
async fn start_node() -> (Node, tempfile::TempDir) {
    let data_dir = tempfile::TempDir::new().expect("temporary directory");
    let mut options = NodeOptions::new(NodeId(1), data_dir.path().to_path_buf());
    options.shard_count = 8;
    let node = Node::start(options).await.expect("node starts");
    (node, data_dir)
}

impl Harness {
    /// A gateway with default options except the small test body limit.
    async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// A gateway whose options `configure` adjusts, started through `gateway::serve`.
    async fn start_with(configure: impl FnOnce(&mut GatewayOptions)) -> Harness {
        let (node, data_dir) = start_node().await;
        let kernel = node.router();
        let mut options = GatewayOptions::for_router(&kernel);
        options.body_bytes_max = TEST_BODY_BYTES_MAX;
        configure(&mut options);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let (shutdown, shutdown_received) = oneshot::channel::<()>();
        let server = tokio::spawn(gateway::serve(
            listener,
            kernel.clone(),
            options,
            async move {
                let _ = shutdown_received.await;
            },
        ));
        let harness = Harness {
            address,
            client: reqwest::Client::new(),
            kernel,
            shutdown: Some(shutdown),
            server: Some(server),
            node: Some(node),
            _data_dir: data_dir,
        };
        if options.requests_in_flight_max > 0 {
            harness.wait_until_serving().await;
        }
        harness
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    async fn send(&self, method: Method, path: &str) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .send()
            .await
            .expect("request is answered")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.send(Method::GET, path).await
    }

    async fn delete(&self, path: &str) -> reqwest::Response {
        self.send(Method::DELETE, path).await
    }

    async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .expect("request is answered")
    }

    /// PUT with one extra header (If-Match / If-None-Match).
    async fn put_with(
        &self,
        path: &str,
        header: (&str, &str),
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .header(header.0, header.1)
            .body(body)
            .send()
            .await
            .expect("request is answered")
    }

    async fn wait_until_serving(&self) {
        wait_until_serving(&self.client, &self.url("/health")).await;
    }

    /// Shuts the kernel down while the gateway keeps serving.
    async fn shutdown_node(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("node stops cleanly");
        }
    }

    /// Stops the gateway gracefully, then the node; fails the test if either fails.
    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("gateway task does not panic")
                .expect("gateway stops cleanly");
        }
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("node stops cleanly");
        }
    }
}

/// Polls `health_url` until the node serves (elections may still run right after
/// start); fails the test at the deadline. The pause between polls only spaces them
/// out; correctness never depends on it.
async fn wait_until_serving(client: &reqwest::Client, health_url: &str) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        let response = client.get(health_url).send().await.expect("health answers");
        if response.status() == StatusCode::OK {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node not serving after {WAIT_DEADLINE:?}: {}",
            response.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Parses `{"revision": N}` and returns N, checking the JSON content type.
async fn revision_of(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.expect("JSON body");
    body["revision"].as_u64().expect("revision is a number")
}

/// The ETag header as a revision, checking it is a quoted decimal.
fn etag_revision(response: &reqwest::Response) -> u64 {
    let etag = response.headers()["etag"].to_str().expect("ASCII ETag");
    etag.strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("ETag {etag:?} is not a quoted revision"))
}

/// Checks a problem+json response with `status` and `code`; returns its body.
async fn expect_problem(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status of a `{code}` problem");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "content type of a `{code}` problem"
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let retry_after = response.headers()["retry-after"].to_str().expect("ASCII");
        assert!(
            retry_after.parse::<u32>().is_ok_and(|seconds| seconds >= 1),
            "Retry-After {retry_after:?}"
        );
    }
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "problem body {body}");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["type"], format!("https://mimori.dev/errors/{code}"));
    assert!(body["title"]
        .as_str()
        .is_some_and(|title| !title.is_empty()));
    assert!(body["detail"]
        .as_str()
        .is_some_and(|detail| !detail.is_empty()));
    body
}

/// Sends `request` verbatim on a new connection and returns the status and the raw
/// response (headers and body) once the server has answered and closed or the
/// response is complete.
async fn raw_exchange(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    read_raw_response(&mut stream).await
}

/// Reads one `Connection: close` response: until EOF, bounded by the deadline.
async fn read_raw_response(stream: &mut TcpStream) -> (u16, String) {
    let mut response = Vec::new();
    tokio::time::timeout(WAIT_DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("the server answers in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    (status, text)
}

// Proves the basic key life cycle: PUT answers a revision, GET returns the bytes
// with that revision as ETag and the octet-stream type, an overwrite gets a larger
// revision, DELETE answers its own revision, and afterwards GET and DELETE are 404
// problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_put_get_delete_round_trip() {
    let harness = Harness::start().await;

    let first = revision_of(harness.put("/v1/kv/greeting", "hello").await).await;
    assert!(first > 0);
    let response = harness.get("/v1/kv/greeting").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(etag_revision(&response), first);
    assert_eq!(&response.bytes().await.unwrap()[..], b"hello");

    let second = revision_of(harness.put("/v1/kv/greeting", "hello again").await).await;
    assert!(second > first, "revisions grow: {first} then {second}");
    let response = harness.get("/v1/kv/greeting").await;
    assert_eq!(etag_revision(&response), second);
    assert_eq!(&response.bytes().await.unwrap()[..], b"hello again");

    let deleted = revision_of(harness.delete("/v1/kv/greeting").await).await;
    assert!(deleted > second);
    expect_problem(
        harness.get("/v1/kv/greeting").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        harness.delete("/v1/kv/greeting").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        harness.get("/v1/kv/never-written").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // An empty value is a value, not an absence.
    revision_of(harness.put("/v1/kv/empty", Vec::<u8>::new()).await).await;
    let response = harness.get("/v1/kv/empty").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());

    harness.stop().await;
}

// Proves keys are raw bytes after percent-decoding: `a/b` and `a%2Fb` are one key,
// `%FF` is byte 0xFF (a scan shows such keys, and `next`, as base64, and `after` takes
// them back either base64-marked or percent-encoded), `+` is literal in paths, a
// malformed escape is 400 and the empty key is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_keys_with_slash_and_percent_encoding() {
    let harness = Harness::start().await;

    let revision = revision_of(harness.put("/v1/kv/dir/a/b", "slashes").await).await;
    let response = harness.get("/v1/kv/dir%2Fa%2Fb").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(etag_revision(&response), revision);
    assert_eq!(&response.bytes().await.unwrap()[..], b"slashes");

    let binary_revision = revision_of(harness.put("/v1/kv/bin%FF%00", "binary key").await).await;
    let response = harness.get("/v1/kv/bin%ff%00").await;
    assert_eq!(etag_revision(&response), binary_revision);
    assert_eq!(&response.bytes().await.unwrap()[..], b"binary key");
    let second_revision = revision_of(harness.put("/v1/kv/bin%FF%01", "second").await).await;

    // One item per page: `next` is the non-UTF-8 key in base64, and feeding it back
    // with after_encoding=base64 continues after it.
    let page: Value = harness
        .get("/v1/kv?prefix=bin&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page,
        json!({
            "items": [{
                "key": "Ymlu/wA=",
                "key_encoding": "base64",
                "value": "binary key",
                "revision": binary_revision,
            }],
            "next": "Ymlu/wA=",
            "next_encoding": "base64",
        })
    );
    let page: Value = harness
        .get("/v1/kv?prefix=bin&limit=1&after=Ymlu%2FwA%3D&after_encoding=base64")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["key"], "Ymlu/wE=");
    assert_eq!(page["items"][0]["value"], "second");
    assert_eq!(page["items"][0]["revision"], second_revision);
    // The same continuation spelled as percent-encoded raw bytes.
    let page: Value = harness
        .get("/v1/kv?prefix=bin&limit=1&after=bin%FF%00")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["key"], "Ymlu/wE=");

    revision_of(harness.put("/v1/kv/a+b", "plus").await).await;
    assert_eq!(
        &harness.get("/v1/kv/a%2Bb").await.bytes().await.unwrap()[..],
        b"plus"
    );
    expect_problem(
        harness.get("/v1/kv/a%20b").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let body = expect_problem(
        harness.get("/v1/kv/bad%zzescape").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("percent"));
    expect_problem(
        harness.get("/v1/kv/").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    expect_problem(
        harness.put("/v1/kv/", "no key").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;

    harness.stop().await;
}

// Proves conditional writes on keys: If-Match with the current ETag succeeds, a
// stale one is 412 (reporting the current revision) and leaves the value alone,
// If-None-Match: * creates only, malformed conditions are 400, and DELETE honours
// If-Match the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_if_match_and_if_none_match() {
    let harness = Harness::start().await;

    let created = revision_of(
        harness
            .put_with("/v1/kv/counter", ("If-None-Match", "*"), "1")
            .await,
    )
    .await;
    let body = expect_problem(
        harness
            .put_with("/v1/kv/counter", ("If-None-Match", "*"), "again")
            .await,
        StatusCode::PRECONDITION_FAILED,
        "condition_failed",
    )
    .await;
    assert_eq!(body["current_revision"], created);

    let current = format!("\"{created}\"");
    let updated = revision_of(
        harness
            .put_with("/v1/kv/counter", ("If-Match", &current), "2")
            .await,
    )
    .await;
    assert!(updated > created);

    // The old ETag no longer matches: 412, and the value stays "2".
    expect_problem(
        harness
            .put_with("/v1/kv/counter", ("If-Match", &current), "3")
            .await,
        StatusCode::PRECONDITION_FAILED,
        "condition_failed",
    )
    .await;
    let response = harness.get("/v1/kv/counter").await;
    assert_eq!(etag_revision(&response), updated);
    assert_eq!(&response.bytes().await.unwrap()[..], b"2");

    // If-Match on a key that does not exist cannot hold.
    expect_problem(
        harness
            .put_with("/v1/kv/missing", ("If-Match", "\"1\""), "x")
            .await,
        StatusCode::PRECONDITION_FAILED,
        "condition_failed",
    )
    .await;
    expect_problem(
        harness.get("/v1/kv/missing").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    for malformed in ["1", "W/\"1\"", "\"x\"", "*", "\"1\", \"2\""] {
        expect_problem(
            harness
                .put_with("/v1/kv/counter", ("If-Match", malformed), "4")
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )
        .await;
    }
    expect_problem(
        harness
            .put_with("/v1/kv/counter", ("If-None-Match", "\"1\""), "4")
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;

    let stale_delete = harness
        .client
        .delete(harness.url("/v1/kv/counter"))
        .header("If-Match", &current)
        .send()
        .await
        .unwrap();
    expect_problem(
        stale_delete,
        StatusCode::PRECONDITION_FAILED,
        "condition_failed",
    )
    .await;
    assert_eq!(harness.get("/v1/kv/counter").await.status(), StatusCode::OK);

    let matching_delete = harness
        .client
        .delete(harness.url("/v1/kv/counter"))
        .header("If-Match", format!("\"{updated}\""))
        .send()
        .await
        .unwrap();
    assert!(revision_of(matching_delete).await > updated);
    expect_problem(
        harness.get("/v1/kv/counter").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    harness.stop().await;
}

// Proves scans return keys under the prefix in order, page by page: following `next`
// with `after` visits every key exactly once and ends with `next: null`; items carry
// the revisions their writes returned; keys outside the prefix never appear; limits
// outside 1..=scan_limit_max are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_scan_pages_with_next() {
    let harness = Harness::start().await;

    let mut written = Vec::new();
    for index in 0..7 {
        let key = format!("page/{index:02}");
        let value = format!("value {index}");
        let revision =
            revision_of(harness.put(&format!("/v1/kv/{key}"), value.clone()).await).await;
        written.push((key, value, revision));
    }
    revision_of(harness.put("/v1/kv/pagf", "outside").await).await;
    revision_of(harness.put("/v1/kv/pag", "outside").await).await;

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/kv?prefix=page%2F&limit=3".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", after.replace('/', "%2F")));
        }
        let response = harness.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        let page: Value = response.json().await.unwrap();
        let items = page["items"].as_array().expect("items array");
        assert!(items.len() <= 3, "page larger than the limit: {page}");
        for item in items {
            assert!(item.get("key_encoding").is_none() && item.get("value_encoding").is_none());
            seen.push((
                item["key"].as_str().unwrap().to_owned(),
                item["value"].as_str().unwrap().to_owned(),
                item["revision"].as_u64().unwrap(),
            ));
        }
        pages += 1;
        assert!(pages <= 10, "pagination does not end");
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(
                    Some(next),
                    items.last().and_then(|item| item["key"].as_str())
                );
                after = Some(next.to_owned());
            }
            None => {
                assert!(page["next"].is_null());
                break;
            }
        }
    }
    assert_eq!(seen, written);
    assert!(
        pages >= 3,
        "7 keys at 3 per page take at least 3 pages, got {pages}"
    );

    // Default limit and prefix: everything written fits in one default page.
    let all: Value = harness.get("/v1/kv").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 9);
    assert!(all["next"].is_null());

    let limit_max = harness.kernel.limits().scan_limit_max;
    for bad in [
        "limit=0".to_owned(),
        format!("limit={}", limit_max + 1),
        "limit=ten".to_owned(),
    ] {
        expect_problem(
            harness.get(&format!("/v1/kv?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )
        .await;
    }
    let at_max = harness.get(&format!("/v1/kv?limit={limit_max}")).await;
    assert_eq!(at_max.status(), StatusCode::OK);

    harness.stop().await;
}

// Proves values that are not UTF-8 come back from a scan as standard base64 with
// `value_encoding: base64` (and decode to the stored bytes), while GET returns them
// raw; UTF-8 values in the same page stay plain strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_scan_non_utf8_value_is_base64() {
    let harness = Harness::start().await;

    let binary = vec![0xFF, 0xFE, 0x00, b'a'];
    let binary_revision =
        revision_of(harness.put("/v1/kv/mixed/binary", binary.clone()).await).await;
    let text_revision = revision_of(harness.put("/v1/kv/mixed/text", "plain ✓").await).await;

    let page: Value = harness
        .get("/v1/kv?prefix=mixed/")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page,
        json!({
            "items": [
                {"key": "mixed/binary", "value": "//4AYQ==", "value_encoding": "base64",
                 "revision": binary_revision},
                {"key": "mixed/text", "value": "plain ✓", "revision": text_revision},
            ],
            "next": null,
        })
    );
    let response = harness.get("/v1/kv/mixed/binary").await;
    assert_eq!(&response.bytes().await.unwrap()[..], &binary[..]);

    harness.stop().await;
}

// Proves `consistency=stale` and `consistency=linearizable` are accepted on every
// read (key GET, scan, document GET, listing) and return the written data, while
// any other level is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_parameter() {
    let harness = Harness::start().await;
    revision_of(harness.put("/v1/kv/fresh", "v").await).await;
    revision_of(harness.put("/v1/docs/things/one", r#"{"n":1}"#).await).await;

    for level in ["stale", "linearizable"] {
        let response = harness
            .get(&format!("/v1/kv/fresh?consistency={level}"))
            .await;
        assert_eq!(&response.bytes().await.unwrap()[..], b"v", "{level}");
        let page: Value = harness
            .get(&format!("/v1/kv?prefix=fresh&consistency={level}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"][0]["value"], "v", "{level}");
        let document: Value = harness
            .get(&format!("/v1/docs/things/one?consistency={level}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(document, json!({"n": 1}), "{level}");
        let listing: Value = harness
            .get(&format!("/v1/docs/things?consistency={level}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listing["items"][0]["id"], "one", "{level}");
    }
    for path in [
        "/v1/kv/fresh?consistency=eventual",
        "/v1/kv?consistency=eventual",
        "/v1/docs/things/one?consistency=STALE",
        "/v1/docs/things?consistency=",
    ] {
        expect_problem(
            harness.get(path).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )
        .await;
    }

    harness.stop().await;
}

// Proves size limits: a body exactly at body_bytes_max is stored; one byte more is a
// 413 body_too_large; a declared Content-Length above the limit is refused before
// any body byte is sent (raw socket, body never written); a chunked body without a
// length is cut off once it crosses the limit; a key above key_bytes_max is a 413
// key_too_large. None of the refused writes is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_keys_above_limits_are_refused() {
    let harness = Harness::start().await;
    let limit = TEST_BODY_BYTES_MAX as usize;

    revision_of(harness.put("/v1/kv/at-limit", vec![b'x'; limit]).await).await;
    expect_problem(
        harness
            .put("/v1/kv/over-limit", vec![b'x'; limit + 1])
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    expect_problem(
        harness
            .put(
                "/v1/docs/big/one",
                format!("{{\"a\":\"{}\"}}", "x".repeat(limit)),
            )
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;

    // Declared length only: the server must answer without waiting for the body.
    let (status, response) = raw_exchange(
        harness.address,
        format!(
            "PUT /v1/kv/declared HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            limit + 1
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(
        response.contains("\"code\":\"body_too_large\""),
        "{response}"
    );

    // Chunked, no length: two chunks whose sum crosses the limit by one byte.
    let first_chunk = "a".repeat(limit / 2);
    let second_chunk = "b".repeat(limit - limit / 2 + 1);
    let request = format!(
        "PUT /v1/kv/chunked HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first_chunk}\r\n{:x}\r\n{second_chunk}\r\n0\r\n\r\n",
        first_chunk.len(),
        second_chunk.len()
    );
    let (status, response) = raw_exchange(harness.address, request.as_bytes()).await;
    assert_eq!(status, 413, "{response}");
    assert!(
        response.contains("\"code\":\"body_too_large\""),
        "{response}"
    );

    // The same chunked upload within the limit is stored.
    let within = format!(
        "PUT /v1/kv/chunked HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first_chunk}\r\n0\r\n\r\n",
        first_chunk.len()
    );
    let (status, response) = raw_exchange(harness.address, within.as_bytes()).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        &harness.get("/v1/kv/chunked").await.bytes().await.unwrap()[..],
        first_chunk.as_bytes()
    );

    let key_bytes_max = harness.kernel.limits().key_bytes_max as usize;
    let long_key = "k".repeat(key_bytes_max + 1);
    expect_problem(
        harness.put(&format!("/v1/kv/{long_key}"), "v").await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "key_too_large",
    )
    .await;
    let longest_key = "k".repeat(key_bytes_max);
    revision_of(harness.put(&format!("/v1/kv/{longest_key}"), "v").await).await;

    for refused in ["over-limit", "declared"] {
        expect_problem(
            harness.get(&format!("/v1/kv/{refused}")).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    expect_problem(
        harness.get("/v1/docs/big/one").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    harness.stop().await;
}

// Proves the document life cycle: PUT of a JSON object answers a revision, GET
// returns the exact stored JSON as application/json with the revision as ETag,
// If-Match / If-None-Match work as for keys, non-objects are 400 not_json_object,
// malformed JSON is 400 invalid_json, bad collection or id names are 400, and DELETE
// answers a revision then 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_crud_conditions_and_validation() {
    let harness = Harness::start().await;
    let document = r#"{"name": "Ada", "tags": ["math", "engines"], "born": 1815}"#;

    let created = revision_of(
        harness
            .put_with("/v1/docs/people/ada", ("If-None-Match", "*"), document)
            .await,
    )
    .await;
    let response = harness.get("/v1/docs/people/ada").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(etag_revision(&response), created);
    assert_eq!(
        response.text().await.unwrap(),
        document,
        "stored byte for byte"
    );

    expect_problem(
        harness
            .put_with("/v1/docs/people/ada", ("If-None-Match", "*"), "{}")
            .await,
        StatusCode::PRECONDITION_FAILED,
        "condition_failed",
    )
    .await;
    let updated = revision_of(
        harness
            .put_with(
                "/v1/docs/people/ada",
                ("If-Match", &format!("\"{created}\"")),
                r#"{"v":2}"#,
            )
            .await,
    )
    .await;
    expect_problem(
        harness
            .put_with(
                "/v1/docs/people/ada",
                ("If-Match", &format!("\"{created}\"")),
                r#"{"v":3}"#,
            )
            .await,
        StatusCode::PRECONDITION_FAILED,
        "condition_failed",
    )
    .await;
    let response = harness.get("/v1/docs/people/ada").await;
    assert_eq!(etag_revision(&response), updated);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"v": 2}));

    for not_object in ["[1,2]", "\"text\"", "42", "null"] {
        expect_problem(
            harness.put("/v1/docs/people/x", not_object).await,
            StatusCode::BAD_REQUEST,
            "not_json_object",
        )
        .await;
    }
    for not_json in ["", "{", "{\"a\":}", "{} trailing"] {
        expect_problem(
            harness.put("/v1/docs/people/x", not_json).await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        )
        .await;
    }
    expect_problem(
        harness
            .put(
                "/v1/docs/people/x",
                vec![b'{', b'"', 0xFF, b'"', b':', b'1', b'}'],
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    let long_id = "i".repeat(129);
    for bad_path in [
        "/v1/docs/people/has%20space".to_owned(),
        "/v1/docs/people/a/b".to_owned(),
        "/v1/docs/people/a%2Fb".to_owned(),
        "/v1/docs/pe!ople/x".to_owned(),
        "/v1/docs/people/".to_owned(),
        format!("/v1/docs/people/{long_id}"),
    ] {
        expect_problem(
            harness.put(&bad_path, "{}").await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )
        .await;
    }
    expect_problem(
        harness.get("/v1/docs/people/x").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let longest_id = "i".repeat(128);
    revision_of(
        harness
            .put(&format!("/v1/docs/people/{longest_id}"), "{}")
            .await,
    )
    .await;

    let deleted = revision_of(harness.delete("/v1/docs/people/ada").await).await;
    assert!(deleted > updated);
    expect_problem(
        harness.get("/v1/docs/people/ada").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        harness.delete("/v1/docs/people/ada").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    harness.stop().await;
}

// Proves POST assigns ids: 201 with a Location that GET resolves to the posted
// document (ETag = returned revision), two posts get different ids, If-Match on a
// POST is 412, and the collection listing returns every document with its id,
// embedded JSON and revision, paginated with `next`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_post_location_and_listing() {
    let harness = Harness::start().await;

    let mut posted = Vec::new();
    for index in 0..3 {
        let response = harness
            .client
            .post(harness.url("/v1/docs/orders"))
            .body(format!(r#"{{"order": {index}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        let revision = body["revision"].as_u64().unwrap();
        assert_eq!(location, format!("/v1/docs/orders/{id}"));
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|byte| byte.is_ascii_hexdigit()));

        let fetched = harness.get(&location).await;
        assert_eq!(fetched.status(), StatusCode::OK);
        assert_eq!(etag_revision(&fetched), revision);
        assert_eq!(
            fetched.json::<Value>().await.unwrap(),
            json!({"order": index})
        );
        posted.push((id, index, revision));
    }
    posted.sort();
    posted.dedup_by(|a, b| a.0 == b.0);
    assert_eq!(posted.len(), 3, "ids are unique");

    expect_problem(
        harness
            .client
            .post(harness.url("/v1/docs/orders"))
            .header("If-Match", "\"1\"")
            .body("{}")
            .send()
            .await
            .unwrap(),
        StatusCode::PRECONDITION_FAILED,
        "condition_failed",
    )
    .await;
    expect_problem(
        harness
            .client
            .post(harness.url("/v1/docs/orders"))
            .body("[]")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "not_json_object",
    )
    .await;

    // A document in another collection whose name extends this one must not leak in.
    revision_of(harness.put("/v1/docs/orders2/x", "{}").await).await;

    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/v1/docs/orders?limit=2".to_owned()
        } else {
            format!("/v1/docs/orders?limit=2&after={after}")
        };
        let page: Value = harness.get(&path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap().to_owned();
            let index = item["document"]["order"].as_u64().unwrap();
            listed.push((id, index as i32, item["revision"].as_u64().unwrap()));
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
        assert!(listed.len() <= 3, "listing does not end");
    }
    assert_eq!(listed, posted);

    harness.stop().await;
}

// Proves routing errors are problems too: an unknown path is 404 route_not_found, a
// known path with the wrong method is 405 method_not_allowed with an Allow header
// listing the right methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_problems() {
    let harness = Harness::start().await;

    for path in ["/", "/v2/kv/x", "/v1/unknown", "/v1/docs"] {
        expect_problem(
            harness.get(path).await,
            StatusCode::NOT_FOUND,
            "route_not_found",
        )
        .await;
    }

    let response = harness.send(Method::POST, "/v1/kv/some-key").await;
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    for method in ["GET", "PUT", "DELETE"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    expect_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    expect_problem(
        harness.send(Method::DELETE, "/v1/docs/people").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    expect_problem(
        harness.send(Method::POST, "/health").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    harness.stop().await;
}

// Proves admission control with no slots: every request, whatever its route, is
// refused with 503 overloaded, the configured Retry-After, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_in_flight_slots_refuse_everything_with_503() {
    let harness = Harness::start_with(|options| {
        options.requests_in_flight_max = 0;
        options.retry_after_seconds = 7;
    })
    .await;

    for response in [
        harness.get("/health").await,
        harness.put("/v1/kv/refused", "v").await,
        harness.get("/no/such/route").await,
    ] {
        assert_eq!(response.headers()["retry-after"], "7");
        expect_problem(response, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    }
    let stored = harness
        .kernel
        .get(
            mimori_actors::kv::Namespace::Kv,
            b"refused",
            mimori_actors::kv::Consistency::Linearizable,
        )
        .await
        .expect("kernel read");
    assert_eq!(stored, None, "a refused request must not reach the kernel");

    harness.stop().await;
}

// Proves admission control under load with one slot: an upload that has sent only
// half its body holds the slot (observed through the gateway state's counter, not
// through timing), so a concurrent request is refused with 503 overloaded; once the
// upload completes it is stored and the slot is free again. Mounts `gateway::router`
// directly to keep a handle on the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_slot_makes_concurrent_requests_503() {
    let (node, _data_dir) = start_node().await;
    let kernel = node.router();
    let mut options = GatewayOptions::for_router(&kernel);
    options.requests_in_flight_max = 1;
    options.retry_after_seconds = 3;
    let state = GatewayState::new(kernel, options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, shutdown_received) = oneshot::channel::<()>();
    let app = gateway::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown_received.await;
            })
            .await
    });
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{address}{path}");
    wait_until_serving(&client, &url("/health")).await;
    assert_eq!(state.requests_in_flight(), 0);

    tracing::info!("--- half an upload takes the only slot");
    let mut upload = TcpStream::connect(address).await.unwrap();
    upload
        .write_all(
            b"PUT /v1/kv/slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 10\r\n\r\n12345",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT_DEADLINE;
    while state.requests_in_flight() != 1 {
        assert!(Instant::now() < deadline, "the upload was never admitted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    tracing::info!("--- a concurrent request is refused");
    let refused = client.get(url("/v1/kv/slow")).send().await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "3");
    expect_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert_eq!(state.requests_in_flight(), 1, "the refusal took no slot");

    tracing::info!("--- the upload completes and frees the slot");
    upload.write_all(b"67890").await.unwrap();
    let (status, response) = read_raw_response(&mut upload).await;
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("\"revision\":"), "{response}");
    assert_eq!(state.requests_in_flight(), 0);
    let stored = client.get(url("/v1/kv/slow")).send().await.unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(&stored.bytes().await.unwrap()[..], b"1234567890");

    let _ = shutdown.send(());
    server.await.unwrap().unwrap();
    node.shutdown().await.unwrap();
}

// Proves the node views: /health is 200 with status "serving" and the kernel's
// health fields; /v1/cluster lists this node (active) and every shard with its
// replicas, leader and epoch; /v1/status reports the node's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_cluster_and_status_views() {
    let harness = Harness::start().await;

    let response = harness.get("/health").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let health: Value = response.json().await.unwrap();
    assert_eq!(health["status"], "serving");
    assert_eq!(health["serving"], true);
    assert_eq!(health["node_id"], 1);
    assert_eq!(health["shards_without_leader"], 0);

    let cluster: Value = harness.get("/v1/cluster").await.json().await.unwrap();
    assert!(
        cluster["cluster_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{cluster}"
    );
    let nodes = cluster["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{cluster}");
    assert_eq!(nodes[0]["id"], 1);
    assert_eq!(nodes[0]["state"], "active");
    assert!(nodes[0]["http"].is_string());
    assert!(nodes[0]["replicas"].is_u64() && nodes[0]["leaders"].is_u64());
    let shards = cluster["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 8, "{cluster}");
    for (index, shard) in shards.iter().enumerate() {
        assert_eq!(shard["id"], index as u64);
        assert_eq!(shard["replicas"], json!([1]));
        assert_eq!(shard["leader"], 1);
        assert!(shard["epoch"].is_u64());
    }

    let status: Value = harness.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["shard_count"], 8);

    harness.stop().await;
}

// Proves kernel unavailability reaches clients as 503 problems with Retry-After: once
// the node shuts down under a running gateway, reads, writes and scans answer 503
// shutting_down with the configured Retry-After, and /health answers 503 not_serving
// carrying the kernel's health fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_shutdown_is_503_with_retry_after() {
    let mut harness = Harness::start_with(|options| options.retry_after_seconds = 4).await;
    revision_of(harness.put("/v1/kv/before", "v").await).await;

    harness.shutdown_node().await;

    for response in [
        harness.get("/v1/kv/before").await,
        harness.put("/v1/kv/after", "v").await,
        harness.get("/v1/kv?prefix=b").await,
        harness.get("/v1/docs/people/ada").await,
    ] {
        assert_eq!(response.headers()["retry-after"], "4");
        expect_problem(response, StatusCode::SERVICE_UNAVAILABLE, "shutting_down").await;
    }
    let body = expect_problem(
        harness.get("/health").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not_serving",
    )
    .await;
    assert_eq!(body["health"]["serving"], false);
    assert_eq!(body["health"]["node_id"], 1);

    harness.stop().await;
}
