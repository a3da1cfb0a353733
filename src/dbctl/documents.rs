//! dbctl's document commands: `doc put|get|del|query`, `collection
//! create|list|drop`, `import` and `export`.
//!
//! Who talks to it: [`super::execute`] hands it the parsed command and an open
//! admin session. `import` opens `--parallel` more sessions and keeps one batch in
//! flight on each, so the server writes many documents at once (its group commit
//! then makes them durable together).
//!
//! Invariants: a line of an import file is read with a bound (the document limit
//! plus slack), never whole into memory first; every bad line is reported with its
//! number and counted; nothing an import failed to write is reported as imported.

use super::cli::{CollectionCommand, DocCommand, ExportArgs, ImportArgs, OutputFormat, QueryArgs};
use super::output::{json_line, render_table, tsv_cell};
use super::{invalid_input, Printed};
use crate::admin::client::{AdminClient, AdminClientError, AdminClientOptions};
use crate::admin::protocol::{BatchDocument, BatchResult, QueryDocument};
use crate::error_code::exit;
use mimori_actors::ids::Revision;
use mimori_actors::kv::{Condition, Consistency};
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// Longest import line read, in bytes: the default document limit and slack.
const IMPORT_LINE_BYTES_MAX: usize = 1024 * 1024 + 64 * 1024;
/// Bytes of documents one import batch carries at most (frames are 4 MiB).
const IMPORT_BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Bad lines printed to stderr at most (all are counted).
const IMPORT_ERRORS_SHOWN_MAX: u64 = 20;
/// Documents `--all` and `export` follow cursors through at most.
const FOLLOWED_DOCUMENTS_MAX: usize = 1_000_000;
/// Documents per page `export` asks for.
const EXPORT_PAGE_DOCUMENTS: u32 = 1_000;
/// Longest document shown in a table cell, in characters.
const TABLE_DOCUMENT_CHARS_MAX: usize = 100;

fn consistency(stale: bool) -> Consistency {
    if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    }
}

/// Runs a `doc` command.
pub async fn doc(
    client: &mut AdminClient,
    command: DocCommand,
    format: OutputFormat,
) -> Result<Printed, AdminClientError> {
    let json = format == OutputFormat::Json;
    match command {
        DocCommand::Put {
            collection,
            id,
            json: document,
            if_revision,
            if_absent,
        } => {
            let document = if document == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .take(IMPORT_LINE_BYTES_MAX as u64)
                    .read_to_string(&mut text)
                    .map_err(|error| {
                        invalid_input(format!("reading the document from stdin: {error}"))
                    })?;
                text
            } else {
                document
            };
            let condition = match (if_revision, if_absent) {
                (Some(revision), _) => Condition::RevisionIs(Revision(revision)),
                (None, true) => Condition::Absent,
                (None, false) => Condition::Always,
            };
            let revision = client
                .doc_put(&collection, &id, document.trim().as_bytes(), condition)
                .await?;
            Ok(Printed::ok(if json {
                json_line(&json!({"collection": collection, "id": id, "revision": revision.0}))
            } else {
                format!("OK (revision {revision})\n")
            }))
        }
        DocCommand::Get {
            collection,
            id,
            stale,
        } => {
            let Some(found) = client.doc_get(&collection, &id, consistency(stale)).await? else {
                return Err(AdminClientError::Server {
                    code: "not_found".into(),
                    message: format!("document {collection}/{id} not found"),
                });
            };
            if json {
                let document: Value = serde_json::from_slice(&found.value).unwrap_or(Value::Null);
                Ok(Printed::ok(json_line(&json!({
                    "collection": collection, "id": id,
                    "revision": found.revision.0, "document": document,
                }))))
            } else {
                let mut raw = found.value.to_vec();
                raw.push(b'\n');
                Ok(Printed::ok(raw))
            }
        }
        DocCommand::Del {
            collection,
            id,
            if_revision,
        } => {
            let condition = if_revision.map_or(Condition::Always, |revision| {
                Condition::RevisionIs(Revision(revision))
            });
            let revision = client.doc_delete(&collection, &id, condition).await?;
            Ok(Printed::ok(if json {
                json_line(&json!({"collection": collection, "id": id, "revision": revision.0}))
            } else {
                format!("deleted (revision {revision})\n")
            }))
        }
        DocCommand::Query(arguments) => query(client, arguments, format).await,
    }
}

/// The query body of `doc query`'s arguments.
fn query_body(arguments: &QueryArgs, cursor: Option<&str>) -> Result<Value, AdminClientError> {
    let mut body = serde_json::Map::new();
    if let Some(filter) = &arguments.filter {
        let filter: Value = serde_json::from_str(filter)
            .map_err(|error| invalid_input(format!("the filter is not JSON: {error}")))?;
        body.insert("filter".into(), filter);
    }
    if let Some(field) = &arguments.sort {
        let order = if arguments.desc { "desc" } else { "asc" };
        body.insert("sort".into(), json!({"field": field, "order": order}));
    } else if arguments.desc {
        return Err(invalid_input("--desc needs --sort"));
    }
    if !arguments.projection.is_empty() {
        body.insert("projection".into(), json!(arguments.projection));
    }
    body.insert("limit".into(), json!(arguments.limit));
    if let Some(cursor) = cursor {
        body.insert("cursor".into(), json!(cursor));
    }
    Ok(Value::Object(body))
}

async fn query(
    client: &mut AdminClient,
    arguments: QueryArgs,
    format: OutputFormat,
) -> Result<Printed, AdminClientError> {
    let mut documents: Vec<QueryDocument> = Vec::new();
    let mut cursor = arguments.cursor.clone();
    let mut indexes: Vec<Option<String>> = Vec::new();
    let mut examined = 0;
    loop {
        let body = query_body(&arguments, cursor.as_deref())?;
        let page = client
            .doc_query(
                &arguments.collection,
                body.to_string().as_bytes(),
                consistency(arguments.stale),
            )
            .await?;
        documents.extend(page.documents);
        indexes.push(page.index);
        examined += page.examined;
        cursor = page.cursor;
        if !arguments.all || cursor.is_none() {
            break;
        }
        if documents.len() > FOLLOWED_DOCUMENTS_MAX {
            return Err(invalid_input(format!(
                "the query matches more than {FOLLOWED_DOCUMENTS_MAX} documents; page with --cursor instead of --all"
            )));
        }
    }
    let index = indexes.last().cloned().flatten();
    let text = match format {
        OutputFormat::Json => {
            let documents: Vec<Value> = documents
                .iter()
                .map(|document| {
                    json!({
                        "id": document.id,
                        "revision": document.revision,
                        "document": serde_json::from_slice::<Value>(&document.document).unwrap_or(Value::Null),
                    })
                })
                .collect();
            json_line(
                &json!({"documents": documents, "cursor": cursor, "index": index, "examined": examined}),
            )
        }
        OutputFormat::Table | OutputFormat::Tsv => {
            let tsv = format == OutputFormat::Tsv;
            let rows: Vec<Vec<String>> = documents
                .iter()
                .map(|document| {
                    let text = String::from_utf8_lossy(&document.document).into_owned();
                    let text = if tsv { text } else { shorten(text) };
                    vec![document.id.clone(), document.revision.to_string(), text]
                })
                .collect();
            let mut text = render_table(&["ID", "REVISION", "DOCUMENT"], &rows);
            if let (Some(cursor), false) = (&cursor, tsv) {
                text.push_str(&format!(
                    "cursor: {cursor} (continue with --cursor, or use --all)\n"
                ));
            }
            text
        }
    };
    Ok(Printed::ok(text))
}

fn shorten(text: String) -> String {
    if text.chars().count() <= TABLE_DOCUMENT_CHARS_MAX {
        return text;
    }
    let mut short: String = text.chars().take(TABLE_DOCUMENT_CHARS_MAX - 1).collect();
    short.push('…');
    short
}

/// Runs a `collection` command.
pub async fn collection(
    client: &mut AdminClient,
    command: CollectionCommand,
    format: OutputFormat,
) -> Result<Printed, AdminClientError> {
    let collections = match command {
        CollectionCommand::Create { name, indexes } => {
            client.collection_define(&name, indexes).await?
        }
        CollectionCommand::List => client.collection_list().await?,
        CollectionCommand::Drop { name } => {
            client.collection_drop(&name).await?;
            return Ok(Printed::ok(if format == OutputFormat::Json {
                json_line(&json!({"dropped": name}))
            } else {
                format!("dropped collection {name} with its documents\n")
            }));
        }
    };
    if format == OutputFormat::Json {
        return Ok(Printed::ok(json_line(
            &json!({ "collections": collections }),
        )));
    }
    let mut rows = Vec::new();
    for collection in &collections {
        if collection.indexes.is_empty() {
            rows.push(vec![
                collection.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for index in &collection.indexes {
            rows.push(vec![
                collection.name.clone(),
                index.field.clone(),
                index.state.clone(),
                format!("{}/{}", index.shards_ready, index.shards),
                index.documents_indexed.to_string(),
            ]);
        }
    }
    Ok(Printed::ok(render_table(
        &[
            "NAME",
            "INDEX",
            "STATE",
            "SHARDS READY",
            "DOCUMENTS INDEXED",
        ],
        &rows,
    )))
}

/// What an import did.
#[derive(Default)]
struct ImportTally {
    imported: u64,
    failed: u64,
    /// The code of the first failure, for the exit code.
    first_failure: Option<String>,
}

/// The line numbers of a batch and what writing it gave.
type BatchOutcome = (Vec<u64>, Result<Vec<BatchResult>, AdminClientError>);

/// One batch on its way, with the line number of each document.
struct Batch {
    documents: Vec<BatchDocument>,
    lines: Vec<u64>,
}

/// Runs `import`.
pub async fn import(
    endpoints: &[String],
    options: &AdminClientOptions,
    arguments: ImportArgs,
    format: OutputFormat,
    stderr: &mut dyn Write,
) -> Result<Printed, AdminClientError> {
    let input: Box<dyn BufRead> = if arguments.file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&arguments.file)
            .map_err(|error| invalid_input(format!("{}: {error}", arguments.file)))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
    };
    let started = Instant::now();
    let mut sessions = Vec::with_capacity(arguments.parallel as usize);
    for _ in 0..arguments.parallel {
        sessions.push(AdminClient::connect_with(endpoints, options).await?);
    }
    let (batches, receiver) = tokio::sync::mpsc::channel::<Batch>(arguments.parallel as usize * 2);
    let receiver = std::sync::Arc::new(tokio::sync::Mutex::new(receiver));
    let (results, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<BatchOutcome>();
    let mut workers = tokio::task::JoinSet::new();
    for mut session in sessions {
        let receiver = receiver.clone();
        let results = results.clone();
        let collection = arguments.collection.clone();
        workers.spawn(async move {
            loop {
                let batch = { receiver.lock().await.recv().await };
                let Some(batch) = batch else { return };
                let outcome = session.doc_put_batch(&collection, batch.documents).await;
                let failed = outcome.is_err();
                if results.send((batch.lines, outcome)).is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(results);

    let progress = std::io::stderr().is_terminal();
    let mut tally = ImportTally::default();
    let mut shown = 0u64;
    let mut report =
        |tally: &mut ImportTally, stderr: &mut dyn Write, line: u64, code: &str, message: &str| {
            tally.failed += 1;
            tally.first_failure.get_or_insert_with(|| code.to_string());
            if shown < IMPORT_ERRORS_SHOWN_MAX {
                let _ = writeln!(stderr, "line {line}: {message} ({code})");
                shown += 1;
            }
        };
    let mut reader = input;
    let mut line_number = 0u64;
    let mut batch = Batch {
        documents: Vec::new(),
        lines: Vec::new(),
    };
    let mut batch_bytes = 0usize;
    let mut line = Vec::with_capacity(4096);
    let mut last_progress = Instant::now();
    let mut sent_all = true;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(IMPORT_LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|error| invalid_input(format!("{}: {error}", arguments.file)))?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if line.len() > IMPORT_LINE_BYTES_MAX && line.last() != Some(&b'\n') {
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            let _ = reader.read_until(b'\n', &mut rest);
            report(
                &mut tally,
                stderr,
                line_number,
                "value_too_large",
                &format!("longer than {IMPORT_LINE_BYTES_MAX} bytes"),
            );
        } else {
            let text = line.trim_ascii();
            if !text.is_empty() {
                match document_of(text, &arguments.id_field) {
                    Ok((id, document)) => {
                        batch_bytes += document.len() + id.len();
                        batch.documents.push(BatchDocument { id, document });
                        batch.lines.push(line_number);
                    }
                    Err(message) => {
                        report(&mut tally, stderr, line_number, "invalid_input", &message)
                    }
                }
            }
        }
        while let Ok((lines, outcome)) = outcomes.try_recv() {
            account(&mut tally, stderr, &mut report, lines, outcome)?;
        }
        if tally.failed > arguments.errors_max {
            sent_all = false;
            break;
        }
        if batch.documents.len() >= arguments.batch as usize
            || batch_bytes >= IMPORT_BATCH_BYTES_MAX
        {
            let full = std::mem::replace(
                &mut batch,
                Batch {
                    documents: Vec::new(),
                    lines: Vec::new(),
                },
            );
            batch_bytes = 0;
            if batches.send(full).await.is_err() {
                break;
            }
        }
        if progress && last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            let seconds = started.elapsed().as_secs_f64();
            let _ = write!(
                stderr,
                "\r{} documents, {:.0}/s, {:.0} s ",
                tally.imported,
                tally.imported as f64 / seconds.max(0.001),
                seconds
            );
            let _ = stderr.flush();
        }
    }
    if sent_all && !batch.documents.is_empty() {
        let _ = batches.send(batch).await;
    }
    drop(batches);
    while let Some((lines, outcome)) = outcomes.recv().await {
        account(&mut tally, stderr, &mut report, lines, outcome)?;
    }
    while workers.join_next().await.is_some() {}
    if progress {
        let _ = writeln!(stderr);
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = tally.imported as f64 / seconds.max(0.001);
    let text = match format {
        OutputFormat::Json => json_line(&json!({
            "collection": arguments.collection, "imported": tally.imported, "failed": tally.failed,
            "lines": line_number, "seconds": (seconds * 1000.0).round() / 1000.0,
            "documents_per_second": rate.round(), "complete": sent_all,
        })),
        OutputFormat::Tsv => format!(
            "collection\timported\tfailed\tlines\tseconds\tdocuments_per_second\n{}\t{}\t{}\t{line_number}\t{seconds:.3}\t{rate:.0}\n",
            tsv_cell(&arguments.collection), tally.imported, tally.failed
        ),
        OutputFormat::Table => format!(
            "imported {} documents into {} in {seconds:.1} s ({rate:.0} documents/s); {} failed{}\n",
            tally.imported,
            arguments.collection,
            tally.failed,
            if sent_all { "" } else { "; stopped early after too many errors (--errors-max)" }
        ),
    };
    let exit_code = match &tally.first_failure {
        None => exit::OK,
        Some(code) => crate::error_code::present_code(code).exit_code,
    };
    Ok(Printed {
        stdout: text.into_bytes(),
        exit_code,
    })
}

/// Counts one batch's results; a batch that failed as a whole ends the import.
fn account(
    tally: &mut ImportTally,
    stderr: &mut dyn Write,
    report: &mut impl FnMut(&mut ImportTally, &mut dyn Write, u64, &str, &str),
    lines: Vec<u64>,
    outcome: Result<Vec<BatchResult>, AdminClientError>,
) -> Result<(), AdminClientError> {
    let results = outcome?;
    for (line, result) in lines.into_iter().zip(results) {
        match result.revision {
            Some(_) => tally.imported += 1,
            None => report(
                tally,
                stderr,
                line,
                result.code.as_deref().unwrap_or("internal"),
                result.message.as_deref().unwrap_or("not written"),
            ),
        }
    }
    Ok(())
}

/// The id and stored bytes of one import line: a JSON object, its id from
/// `id_field` (a string or an integer) or a fresh random one.
fn document_of(text: &[u8], id_field: &str) -> Result<(String, Vec<u8>), String> {
    let value: Value =
        serde_json::from_slice(text).map_err(|error| format!("not valid JSON: {error}"))?;
    let Value::Object(members) = &value else {
        return Err("not a JSON object".into());
    };
    let id = match members.get(id_field) {
        None => format!("{:032x}", rand::random::<u128>()),
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(number)) if number.is_u64() || number.is_i64() => number.to_string(),
        Some(_) => return Err(format!("member {id_field:?} is not a string or an integer")),
    };
    if !crate::gateway::is_valid_name(id.as_bytes()) {
        return Err(format!(
            "id {id:?} is not 1 to 128 characters of A-Z a-z 0-9 _ . -"
        ));
    }
    Ok((id, text.to_vec()))
}

/// Runs `export`.
pub async fn export(
    client: &mut AdminClient,
    arguments: ExportArgs,
    format: OutputFormat,
) -> Result<Printed, AdminClientError> {
    let mut sink: Box<dyn Write> = match &arguments.file {
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|error| invalid_input(format!("{path}: {error}")))?,
        )),
    };
    let mut cursor: Option<String> = None;
    let mut exported = 0usize;
    let write_failed = |error: std::io::Error| AdminClientError::Server {
        code: "internal".into(),
        message: format!("writing the export: {error}"),
    };
    loop {
        let mut body = json!({ "limit": EXPORT_PAGE_DOCUMENTS });
        if let Some(cursor) = &cursor {
            body["cursor"] = json!(cursor);
        }
        let page = client
            .doc_query(
                &arguments.collection,
                body.to_string().as_bytes(),
                consistency(arguments.stale),
            )
            .await?;
        for document in page.documents {
            let mut line = if arguments.no_id {
                document.document
            } else {
                let mut value: Value =
                    serde_json::from_slice(&document.document).unwrap_or(Value::Null);
                if let Value::Object(members) = &mut value {
                    members.insert("_id".into(), Value::String(document.id));
                }
                serde_json::to_vec(&value).unwrap_or_default()
            };
            line.push(b'\n');
            sink.write_all(&line).map_err(write_failed)?;
            exported += 1;
        }
        if exported > FOLLOWED_DOCUMENTS_MAX * 100 {
            return Err(invalid_input("the export does not end"));
        }
        match page.cursor {
            None => break,
            Some(next) => cursor = Some(next),
        }
    }
    sink.flush().map_err(write_failed)?;
    drop(sink);
    let summary = match (&arguments.file, format) {
        (None, _) => String::new(),
        (Some(path), OutputFormat::Json) => json_line(
            &json!({"collection": arguments.collection, "exported": exported, "file": path}),
        ),
        (Some(path), _) => format!(
            "exported {exported} documents of {} to {path}\n",
            arguments.collection
        ),
    };
    Ok(Printed::ok(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves import lines become (id, bytes as given) with the id rule, and bad
    /// lines say why.
    #[test]
    fn import_lines() {
        let (id, bytes) = document_of(br#"{"_id": "ada", "age": 3}"#, "_id").unwrap();
        assert_eq!(
            (id.as_str(), bytes.as_slice()),
            ("ada", &br#"{"_id": "ada", "age": 3}"#[..])
        );
        assert_eq!(document_of(br#"{"n": 7}"#, "n").unwrap().0, "7");
        assert_eq!(document_of(br#"{"a": 1}"#, "_id").unwrap().0.len(), 32);
        assert!(document_of(b"[1]", "_id").unwrap_err().contains("object"));
        assert!(document_of(b"{", "_id").unwrap_err().contains("JSON"));
        assert!(document_of(br#"{"_id": "a/b"}"#, "_id")
            .unwrap_err()
            .contains("id"));
        assert!(document_of(br#"{"_id": 1.5}"#, "_id")
            .unwrap_err()
            .contains("integer"));
    }
}
