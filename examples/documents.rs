//! Documents with the Rust client: typed documents, a secondary index and a query
//! that follows cursors.
//!
//! Run against a local cluster (`cargo run --release --bin mimorid -- demo --nodes 3`):
//! `cargo run --example documents` (endpoints from `MIMORI_ENDPOINTS`, default
//! `127.0.0.1:7070`).

use mimori::client::{Client, ClientError, Query};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct Person {
    name: String,
    age: u32,
    city: String,
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let endpoints = std::env::var("MIMORI_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let client = Client::builder(endpoints.split(',').map(str::to_string)).build()?;

    let status = client
        .define_collection("example-people", &["age", "city"])
        .await?;
    println!(
        "indexes: {:?}",
        status
            .indexes
            .iter()
            .map(|index| (&index.field, &index.state))
            .collect::<Vec<_>>()
    );

    for n in 0..50u32 {
        let person = Person {
            name: format!("person {n}"),
            age: 15 + n % 40,
            city: ["Oslo", "Rome", "Lima"][(n % 3) as usize].to_string(),
        };
        client
            .doc_put("example-people", &format!("p{n:02}"), &person)
            .await?;
    }
    if let Some((person, revision)) = client.doc_get_as::<Person>("example-people", "p07").await? {
        println!("p07 = {person:?} at revision {revision}");
    }

    let query = Query::new()
        .filter(json!({"city": "Rome", "age": {"$gte": 30}}))
        .project(["name", "age"])
        .sort_by_desc("age")
        .limit(5);
    let documents = client.query_all("example-people", &query, 1_000).await?;
    for document in documents {
        println!("{} {}", document.id, document.body);
    }
    Ok(())
}
