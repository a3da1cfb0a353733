//! Keys with the Rust client: write, read, compare-and-set, scan.
//!
//! Run against a local cluster (`cargo run --release --bin mimorid -- demo --nodes 3`):
//! `cargo run --example kv` (endpoints from `MIMORI_ENDPOINTS`, default
//! `127.0.0.1:7070`).

use mimori::client::{Client, ClientError, Condition};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let endpoints = std::env::var("MIMORI_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let client = Client::builder(endpoints.split(',').map(str::to_string)).build()?;

    let revision = client.put("example/greeting", "hello").await?;
    println!("wrote example/greeting at revision {revision}");
    if let Some(read) = client.get("example/greeting").await? {
        println!(
            "read {:?} at revision {}",
            String::from_utf8_lossy(&read.value),
            read.revision
        );
    }

    // Compare-and-set: only if nobody wrote since we read.
    let updated = client
        .put_if(
            "example/greeting",
            "hello again",
            Condition::RevisionIs(revision),
        )
        .await?;
    match client
        .put_if("example/greeting", "late", Condition::RevisionIs(revision))
        .await
    {
        Err(ClientError::Conflict { current }) => {
            println!(
                "a stale update is refused; the current revision is {current:?} (ours: {updated})"
            )
        }
        other => println!("unexpected: {other:?}"),
    }

    for n in 0..3 {
        client
            .put(format!("example/list/{n}"), format!("item {n}"))
            .await?;
    }
    let page = client.scan("example/list/", None, 10).await?;
    for item in page.items {
        println!(
            "{} = {}",
            String::from_utf8_lossy(&item.key),
            String::from_utf8_lossy(&item.value)
        );
    }
    Ok(())
}
