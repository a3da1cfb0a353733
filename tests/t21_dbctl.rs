//! Proves the `dbctl` binary's contract with scripts: what it prints on stdout, the
//! JSON shapes of `-o json`, and its exit codes (0 ok, 2 cannot connect, 3 not
//! found, 4 invalid input, 5 condition failed, 8 unauthorized).
//!
//! Runs the built binary as a child process against an admin server started
//! in-process on 127.0.0.1:0 over a real single-node kernel. (Black-box tests against
//! a `mimorid` process live elsewhere.) `MIMORI_ENDPOINTS` and `MIMORI_TOKEN` are
//! removed from the child's environment unless a test sets them.

mod common;

use anyhow::Context;
use common::admin_node::AdminTestNode;
use common::dbctl::{run_dbctl, Run, RUN_TIMEOUT};
use mimori::admin::server::AdminServerOptions;
use serde_json::Value;

type TestNode = AdminTestNode;

trait RunDbctl {
    async fn dbctl(&self, arguments: &[&str]) -> anyhow::Result<Run>;
}

impl RunDbctl for TestNode {
    /// Runs dbctl against this node.
    async fn dbctl(&self, arguments: &[&str]) -> anyhow::Result<Run> {
        let endpoint = self.address.to_string();
        let mut all = vec!["--endpoints", endpoint.as_str()];
        all.extend_from_slice(arguments);
        dbctl(&all, &[]).await
    }
}

/// Runs the dbctl binary with `arguments` and extra environment variables.
async fn dbctl(arguments: &[&str], environment: &[(&str, &str)]) -> anyhow::Result<Run> {
    run_dbctl(arguments, environment, None).await
}

/// An address where nothing listens: a port bound and released again.
fn unused_endpoint() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// Proves usage errors exit 4 (not clap's 2, which would read as "cannot connect")
/// and `--help` exits 0 with examples. Needs no server: parsing never connects.
#[tokio::test]
async fn usage_errors_exit_4() -> anyhow::Result<()> {
    let endpoint = unused_endpoint()?;
    for arguments in [
        vec!["put", "only-a-key"],
        vec!["frobnicate"],
        vec![],
        vec!["--timeout-ms", "abc", "status"],
        vec!["put", "k", "v", "--if-revision", "1", "--if-absent"],
        vec!["scan", "p", "--limit", "0"],
        vec!["-o", "yaml", "status"],
    ] {
        let mut all = vec!["--endpoints", endpoint.as_str()];
        all.extend(arguments.iter().copied());
        let run = dbctl(&all, &[]).await?;
        assert_eq!(run.exit_code, 4, "dbctl {arguments:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "a usage error explains itself");
    }
    let run = dbctl(&["--endpoints", "", "status"], &[]).await?;
    assert_eq!(run.exit_code, 4, "empty endpoint list: {run:?}");
    let help = dbctl(&["--help"], &[]).await?;
    assert_eq!(help.exit_code, 0);
    assert!(help.stdout_text().contains("Examples:"));
    assert!(help.stdout_text().contains("Exit codes:"));
    Ok(())
}

/// Proves an unreachable endpoint exits 2 and says which endpoint failed, in table
/// mode (stderr) and JSON mode (an error object on stdout).
#[tokio::test]
async fn unreachable_endpoint_exits_2() -> anyhow::Result<()> {
    let endpoint = unused_endpoint()?;
    let run = dbctl(
        &["--endpoints", &endpoint, "--timeout-ms", "2000", "get", "k"],
        &[],
    )
    .await?;
    assert_eq!(run.exit_code, 2, "{run:?}");
    assert!(run.stderr.contains(&endpoint), "{}", run.stderr);
    assert!(run.stderr.contains("cannot_connect"), "{}", run.stderr);
    assert!(run.stdout.is_empty());

    let run = dbctl(
        &["-o", "json", "get", "k"],
        &[("MIMORI_ENDPOINTS", &endpoint)],
    )
    .await?;
    assert_eq!(run.exit_code, 2, "{run:?}");
    assert_eq!(run.json()?["error"]["code"], "cannot_connect");
    Ok(())
}

/// Proves the headline flow: `put user:1 '{"name": "jerk"}'` succeeds and
/// `get user:1` prints exactly the value and a newline; a missing key exits 3;
/// `del` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_del_in_table_mode() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;
    let value = r#"{"name": "jerk"}"#;
    let put = node.dbctl(&["put", "user:1", value]).await?;
    assert_eq!(put.exit_code, 0, "{put:?}");
    assert!(put.stdout_text().starts_with("OK (revision "), "{put:?}");

    let get = node.dbctl(&["get", "user:1"]).await?;
    assert_eq!(get.exit_code, 0, "{get:?}");
    assert_eq!(get.stdout, format!("{value}\n").into_bytes());
    let stale = node.dbctl(&["get", "user:1", "--stale"]).await?;
    assert_eq!(stale.stdout, format!("{value}\n").into_bytes());

    let missing = node.dbctl(&["get", "user:404"]).await?;
    assert_eq!(missing.exit_code, 3, "{missing:?}");
    assert!(missing.stdout.is_empty());
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);

    let delete = node.dbctl(&["del", "user:1"]).await?;
    assert_eq!(delete.exit_code, 0, "{delete:?}");
    let gone = node.dbctl(&["get", "user:1"]).await?;
    assert_eq!(gone.exit_code, 3, "{gone:?}");
    let delete_again = node.dbctl(&["delete", "user:1"]).await?;
    assert_eq!(delete_again.exit_code, 3, "{delete_again:?}");
    node.stop(RUN_TIMEOUT).await
}

/// Proves `-o json` prints one parseable object per command with the documented
/// fields: put {key, revision}; get {key, value, value_encoding, revision}; scan
/// {items[{key, key_encoding, value, value_encoding, revision}], next,
/// next_encoding}; del {key, revision}; errors {error{code, message}}.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_has_documented_fields() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;
    let put = node
        .dbctl(&["-o", "json", "put", "user:1", r#"{"name": "jerk"}"#])
        .await?;
    assert_eq!(put.exit_code, 0, "{put:?}");
    let put = put.json()?;
    assert_eq!(put["key"], "user:1");
    let revision = put["revision"].as_u64().context("revision is a number")?;
    assert!(revision > 0);

    let get = node.dbctl(&["get", "user:1", "-o", "json"]).await?.json()?;
    assert_eq!(get["key"], "user:1");
    assert_eq!(get["value"], r#"{"name": "jerk"}"#);
    assert_eq!(get["value_encoding"], "utf8");
    assert_eq!(get["revision"], revision);

    node.dbctl(&["put", "user:2", "two"]).await?;
    node.dbctl(&["put", "user:3", "three"]).await?;
    let scan = node
        .dbctl(&["-o", "json", "scan", "user:", "--limit", "2"])
        .await?;
    assert_eq!(scan.exit_code, 0, "{scan:?}");
    let scan = scan.json()?;
    let items = scan["items"].as_array().context("items is an array")?;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["key"], "user:1");
    assert_eq!(items[0]["key_encoding"], "utf8");
    assert_eq!(items[0]["value_encoding"], "utf8");
    assert_eq!(items[0]["revision"], revision);
    assert_eq!(items[1]["key"], "user:2");
    assert_eq!(items[1]["value"], "two");
    if !scan["next"].is_null() {
        assert_eq!(scan["next"], "user:2");
        assert_eq!(scan["next_encoding"], "utf8");
    }
    let rest = node
        .dbctl(&["-o", "json", "scan", "user:", "--after", "user:2"])
        .await?
        .json()?;
    assert_eq!(rest["items"][0]["key"], "user:3");
    assert_eq!(rest["next"], Value::Null);

    let delete = node.dbctl(&["-o", "json", "del", "user:1"]).await?.json()?;
    assert_eq!(delete["key"], "user:1");
    assert!(delete["revision"].as_u64().context("revision")? > revision);

    let missing = node.dbctl(&["-o", "json", "get", "user:1"]).await?;
    assert_eq!(missing.exit_code, 3);
    let missing = missing.json()?;
    assert_eq!(missing["error"]["code"], "not_found");
    assert!(missing["error"]["message"].is_string());
    node.stop(RUN_TIMEOUT).await
}

/// Proves conditional writes exit 5 when the condition does not hold:
/// `--if-revision` with a stale revision, `--if-absent` on an existing key, and
/// `del --if-revision` with a stale revision; and succeed with the right revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_conditions_exit_5() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;
    let first = node
        .dbctl(&["-o", "json", "put", "k", "v1"])
        .await?
        .json()?;
    let first = first["revision"].as_u64().context("revision")?.to_string();
    let second = node
        .dbctl(&["-o", "json", "put", "k", "v2", "--if-revision", &first])
        .await?;
    assert_eq!(second.exit_code, 0, "{second:?}");
    let second = second.json()?["revision"]
        .as_u64()
        .context("revision")?
        .to_string();
    let stale = node
        .dbctl(&["put", "k", "v3", "--if-revision", &first])
        .await?;
    assert_eq!(stale.exit_code, 5, "{stale:?}");
    let absent = node.dbctl(&["put", "k", "v3", "--if-absent"]).await?;
    assert_eq!(absent.exit_code, 5, "{absent:?}");
    let delete_stale = node.dbctl(&["del", "k", "--if-revision", &first]).await?;
    assert_eq!(delete_stale.exit_code, 5, "{delete_stale:?}");
    let value = node.dbctl(&["get", "k"]).await?;
    assert_eq!(
        value.stdout,
        b"v2\n".to_vec(),
        "failed writes changed nothing"
    );
    let delete = node.dbctl(&["del", "k", "--if-revision", &second]).await?;
    assert_eq!(delete.exit_code, 0, "{delete:?}");
    node.stop(RUN_TIMEOUT).await
}

/// Proves the token and endpoint environment variables: with a token configured, a
/// wrong `--token` exits 8, `MIMORI_TOKEN` with the right token works, and
/// `MIMORI_ENDPOINTS` (with an unreachable endpoint first) is tried in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_environment() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions {
        token: Some("s3cret".into()),
        ..AdminServerOptions::default()
    })
    .await?;
    let wrong = node.dbctl(&["--token", "nope", "put", "k", "v"]).await?;
    assert_eq!(wrong.exit_code, 8, "{wrong:?}");
    let none = node.dbctl(&["put", "k", "v"]).await?;
    assert_eq!(none.exit_code, 8, "{none:?}");
    let endpoints = format!("{},{}", unused_endpoint()?, node.address);
    let right = dbctl(
        &["put", "k", "v"],
        &[("MIMORI_ENDPOINTS", &endpoints), ("MIMORI_TOKEN", "s3cret")],
    )
    .await?;
    assert_eq!(right.exit_code, 0, "{right:?}");
    let read = dbctl(
        &["get", "k"],
        &[("MIMORI_ENDPOINTS", &endpoints), ("MIMORI_TOKEN", "s3cret")],
    )
    .await?;
    assert_eq!(read.stdout, b"v\n".to_vec());
    node.stop(RUN_TIMEOUT).await
}

/// Proves the operational commands work in both modes: status, health and cluster
/// info exit 0 and report node 1 with the configured 8 shards; `debug kill-shard`
/// exits 0 and the shard serves writes again afterwards; `debug kill-actor` and
/// `debug cut-links` are refused by a node without fault injection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_commands() -> anyhow::Result<()> {
    let node = TestNode::start(AdminServerOptions::default()).await?;
    let status = node.dbctl(&["-o", "json", "status"]).await?;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let status = status.json()?;
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["shard_count"], 8);
    let table = node.dbctl(&["status"]).await?;
    assert_eq!(table.exit_code, 0, "{table:?}");
    assert!(table.stdout_text().contains("shard_count"));

    let health = node.dbctl(&["-o", "json", "health"]).await?;
    let serving = health.json()?["serving"]
        .as_bool()
        .context("serving is a bool")?;
    assert_eq!(health.exit_code, if serving { 0 } else { 6 }, "{health:?}");

    let info = node.dbctl(&["-o", "json", "cluster", "info"]).await?;
    assert_eq!(info.exit_code, 0, "{info:?}");
    assert_eq!(info.json()?["shard_count"], 8);
    let table = node.dbctl(&["cluster", "info"]).await?;
    assert!(table.stdout_text().contains("SHARD"), "{table:?}");

    let kill = node
        .dbctl(&["-o", "json", "debug", "kill-shard", "0"])
        .await?;
    assert_eq!(kill.exit_code, 0, "{kill:?}");
    let kill = kill.json()?;
    assert_eq!(kill["shard"], 0);
    assert_eq!(kill["killed"], true);
    for index in 0..16 {
        let key = format!("after-kill-{index}");
        let put = node.dbctl(&["put", &key, "v"]).await?;
        assert_eq!(put.exit_code, 0, "{put:?}");
    }

    // This node runs without fault injection: the other fault commands are
    // refused with invalid_input (exit 4) and a reason.
    for arguments in [
        &["-o", "json", "debug", "kill-actor", "transport"][..],
        &["-o", "json", "debug", "cut-links", "--to", "2"][..],
    ] {
        let refused = node.dbctl(arguments).await?;
        assert_eq!(refused.exit_code, 4, "{refused:?}");
        let error = refused.json()?;
        assert_eq!(error["error"]["code"], "invalid_input");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("fault injection is disabled")),
            "{error}"
        );
    }
    node.stop(RUN_TIMEOUT).await
}
