//! Proves dbctl's document commands against a real kernel: `doc put|get|del|query`
//! with their conditions and exit codes, `collection create|list|drop`, `import`
//! of a JSON-lines file with bad lines reported by number, `export` round-tripping
//! the documents, the tsv default when piped, and shell completions.
//!
//! Runs the built binary as a child process against an admin server started
//! in-process on 127.0.0.1:0 over a single-node kernel (8 shards).

mod common;

use common::admin_node::AdminTestNode;
use common::dbctl::{run_dbctl, Run};
use mimori::admin::server::AdminServerOptions;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn dbctl(node: &AdminTestNode, arguments: &[&str]) -> anyhow::Result<Run> {
    let endpoint = node.address.to_string();
    let mut all = vec!["--endpoints", endpoint.as_str()];
    all.extend_from_slice(arguments);
    run_dbctl(&all, &[], None).await
}

/// Proves single-document commands: put (also from stdin), get as raw JSON and as
/// `-o json`, conditional put and delete answering exit 5 with the current
/// revision in the message, and exit 3 for a missing document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_doc_put_get_del_with_conditions() -> anyhow::Result<()> {
    let node = AdminTestNode::start(AdminServerOptions::default()).await?;
    let put = dbctl(
        &node,
        &[
            "-o",
            "json",
            "doc",
            "put",
            "people",
            "ada",
            r#"{"name": "ada", "age": 36}"#,
        ],
    )
    .await?;
    assert_eq!(put.exit_code, 0, "{put:?}");
    let revision = put.json()?["revision"].as_u64().expect("revision");
    let get = dbctl(&node, &["doc", "get", "people", "ada"]).await?;
    assert_eq!(get.stdout_text(), "{\"name\": \"ada\", \"age\": 36}\n");
    let get = dbctl(&node, &["-o", "json", "doc", "get", "people", "ada"])
        .await?
        .json()?;
    assert_eq!(
        get,
        json!({"collection": "people", "id": "ada", "revision": revision, "document": {"name": "ada", "age": 36}})
    );

    let stale = dbctl(
        &node,
        &[
            "doc",
            "put",
            "people",
            "ada",
            "{}",
            "--if-revision",
            &(revision + 100).to_string(),
        ],
    )
    .await?;
    assert_eq!(stale.exit_code, 5, "{stale:?}");
    assert!(
        stale.stderr.contains(&revision.to_string()),
        "{}",
        stale.stderr
    );
    let create = dbctl(&node, &["doc", "put", "people", "ada", "{}", "--if-absent"]).await?;
    assert_eq!(create.exit_code, 5);
    let endpoint = node.address.to_string();
    let from_stdin = run_dbctl(
        &[
            "--endpoints",
            &endpoint,
            "-o",
            "json",
            "doc",
            "put",
            "people",
            "bob",
            "-",
        ],
        &[],
        Some(br#"{"name": "bob"}"#),
    )
    .await?;
    assert_eq!(from_stdin.exit_code, 0, "{from_stdin:?}");
    let not_object = dbctl(&node, &["doc", "put", "people", "bad", "[1]"]).await?;
    assert_eq!(not_object.exit_code, 4);
    assert!(
        not_object.stderr.contains("not_json_object"),
        "{}",
        not_object.stderr
    );

    let wrong = dbctl(
        &node,
        &["doc", "del", "people", "ada", "--if-revision", "1"],
    )
    .await?;
    assert_eq!(wrong.exit_code, 5);
    let deleted = dbctl(&node, &["-o", "json", "doc", "del", "people", "ada"]).await?;
    assert_eq!(deleted.exit_code, 0);
    assert!(deleted.json()?["revision"].as_u64() > Some(revision));
    let missing = dbctl(&node, &["doc", "get", "people", "ada"]).await?;
    assert_eq!(missing.exit_code, 3);
    assert!(missing.stderr.contains("not_found"));
    Ok(())
}

/// Proves import, indexes, queries and export together: a 3,000-line file with
/// two bad lines imports 3,000 documents, names the bad lines by number and exits
/// 4; an index declared afterwards reaches `ready`; `doc query` uses it and answers
/// exactly what the file implies, in every output format; `export` writes back the
/// same documents; `collection drop` removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_import_index_query_export() -> anyhow::Result<()> {
    let node = AdminTestNode::start(AdminServerOptions::default()).await?;
    let scratch = tempfile::tempdir()?;
    let file = scratch.path().join("people.jsonl");
    let mut lines = String::new();
    let mut expected = BTreeMap::new();
    for n in 0..3_000u32 {
        let document =
            json!({"_id": format!("p{n:04}"), "age": n % 60, "name": format!("person {n}")});
        lines.push_str(&document.to_string());
        lines.push('\n');
        expected.insert(format!("p{n:04}"), document);
        if n == 99 {
            lines.push_str("not json\n");
        }
        if n == 1_999 {
            lines.push_str("[1, 2]\n");
        }
    }
    std::fs::write(&file, &lines)?;
    let path = file.to_string_lossy().into_owned();
    let import = dbctl(
        &node,
        &["-o", "json", "import", &path, "people", "--batch", "250"],
    )
    .await?;
    assert_eq!(import.exit_code, 4, "{import:?}");
    let summary = import.json()?;
    assert_eq!(summary["imported"], 3_000, "{summary}");
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["lines"], 3_002);
    assert!(
        import.stderr.contains("line 101: not valid JSON"),
        "{}",
        import.stderr
    );
    assert!(
        import.stderr.contains("line 2002: not a JSON object"),
        "{}",
        import.stderr
    );

    let create = dbctl(
        &node,
        &[
            "-o",
            "json",
            "collection",
            "create",
            "people",
            "--index",
            "age",
        ],
    )
    .await?;
    assert_eq!(create.exit_code, 0, "{create:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = dbctl(&node, &["-o", "json", "collection", "list"])
            .await?
            .json()?;
        if listed["collections"][0]["indexes"][0]["state"] == "ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index never became ready: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let piped = dbctl(&node, &["collection", "list"]).await?;
    assert_eq!(
        piped.stdout_text(),
        "NAME\tINDEX\tSTATE\tSHARDS READY\tDOCUMENTS INDEXED\npeople\tage\tready\t8/8\t0\n",
        "piped output defaults to tsv"
    );
    assert!(!piped.stdout.contains(&0x1b), "no colors when piped");

    let query = dbctl(
        &node,
        &[
            "-o",
            "json",
            "doc",
            "query",
            "people",
            r#"{"age": {"$gte": 57}}"#,
            "--sort",
            "age",
            "--desc",
            "--limit",
            "40",
            "--all",
            "--projection",
            "age",
        ],
    )
    .await?
    .json()?;
    assert_eq!(query["index"], "age");
    let ids: Vec<&str> = query["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|hit| hit["id"].as_str().unwrap_or(""))
        .collect();
    let mut want: Vec<(u64, &str)> = expected
        .iter()
        .filter(|(_, document)| document["age"].as_u64() >= Some(57))
        .map(|(id, document)| (document["age"].as_u64().unwrap_or(0), id.as_str()))
        .collect();
    want.sort();
    want.reverse();
    let want: Vec<&str> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, want);
    assert_eq!(query["documents"][0]["document"], json!({"age": 59}));
    let tsv = dbctl(
        &node,
        &["doc", "query", "people", r#"{"age": 3}"#, "--limit", "2"],
    )
    .await?;
    let tsv_lines: Vec<&str> = tsv
        .stdout
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| std::str::from_utf8(line).unwrap_or(""))
        .collect();
    assert_eq!(tsv_lines[0], "ID\tREVISION\tDOCUMENT");
    assert_eq!(tsv_lines.len(), 3, "{tsv_lines:?}");
    assert!(tsv_lines[1].starts_with("p0003\t"), "{tsv_lines:?}");
    let table = dbctl(
        &node,
        &[
            "-o",
            "table",
            "doc",
            "query",
            "people",
            r#"{"age": 3}"#,
            "--limit",
            "2",
        ],
    )
    .await?;
    assert!(
        table.stdout_text().starts_with("ID     REVISION"),
        "{:?}",
        table.stdout_text()
    );
    assert!(
        table.stdout_text().contains("cursor: "),
        "a cursor to continue"
    );
    let bad = dbctl(
        &node,
        &["doc", "query", "people", r#"{"age": {"$regex": 1}}"#],
    )
    .await?;
    assert_eq!(bad.exit_code, 4);

    let exported = scratch.path().join("export.jsonl");
    let export_path = exported.to_string_lossy().into_owned();
    let export = dbctl(&node, &["export", "people", &export_path]).await?;
    assert_eq!(export.exit_code, 0, "{export:?}");
    let mut round_trip = BTreeMap::new();
    for line in std::fs::read_to_string(&exported)?.lines() {
        let document: Value = serde_json::from_str(line)?;
        round_trip.insert(
            document["_id"].as_str().unwrap_or_default().to_string(),
            document,
        );
    }
    assert_eq!(round_trip, expected);

    let drop = dbctl(&node, &["collection", "drop", "people"]).await?;
    assert_eq!(drop.exit_code, 0);
    let after = dbctl(&node, &["-o", "json", "doc", "query", "people"])
        .await?
        .json()?;
    assert_eq!(after["documents"], json!([]));
    Ok(())
}

/// Proves completions are generated for each shell and name the subcommands, and
/// that `--help` of the new commands carries examples.
#[tokio::test]
async fn t22_completions_and_help() -> anyhow::Result<()> {
    for shell in ["bash", "zsh", "fish"] {
        let run = run_dbctl(&["completions", shell], &[], None).await?;
        assert_eq!(run.exit_code, 0, "{run:?}");
        let script = run.stdout_text();
        for word in ["import", "export", "collection", "query"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let help = run_dbctl(&["import", "--help"], &[], None).await?;
    assert!(help.stdout_text().contains("Examples:"));
    Ok(())
}
