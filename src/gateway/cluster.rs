//! Node and cluster views: `GET /health`, `GET /v1/cluster` and `GET /v1/status`.
//!
//! Read-only JSON renderings of what the kernel's [`Router`] reports; load balancers
//! poll `/health`, the dashboard and operators read the other two. `/health` answers
//! `200 {"status":"serving", ..health fields}` while the node serves and a 503
//! `not_serving` problem (with the same fields under `health`) otherwise, so a load
//! balancer can act on the status code alone.
//!
//! [`Router`]: mimori_actors::router::Router

use super::problem::Problem;
use super::reply;
use super::GatewayState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mimori_actors::kv::Health;
use serde::Serialize;

/// `/health` body of a serving node.
#[derive(Serialize)]
struct HealthBody<'a> {
    status: &'static str,
    #[serde(flatten)]
    health: &'a Health,
}

/// `" (shards 3, 7)"`: the leaderless shards `health` lists, `...` when it does not
/// list them all.
fn leaderless_list(health: &Health) -> String {
    if health.leaderless_shards.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = health
        .leaderless_shards
        .iter()
        .map(u32::to_string)
        .collect();
    let more = if (ids.len() as u32) < health.shards_without_leader {
        ", ..."
    } else {
        ""
    };
    format!(" (shards {}{more})", ids.join(", "))
}

/// `GET /health`.
pub async fn health(State(state): State<GatewayState>) -> Result<Response, Problem> {
    let health = state.kernel().health().await;
    if !health.serving {
        let fields = serde_json::to_value(&health).unwrap_or_default();
        return Err(Problem::new(
            "not_serving",
            format!(
                "{} of {} local shards have no known leader{}",
                health.shards_without_leader,
                health.shards_total,
                leaderless_list(&health)
            ),
        )
        .with_retry_after_seconds(state.options().retry_after_seconds)
        .with_extension("health", fields));
    }
    reply::json(
        StatusCode::OK,
        &HealthBody {
            status: "serving",
            health: &health,
        },
        128,
    )
}

/// `GET /v1/cluster`: nodes, their states and addresses, and every shard's replicas,
/// leader and placement epoch.
pub async fn cluster_info(State(state): State<GatewayState>) -> Result<Response, Problem> {
    let info = state.kernel().cluster_info().await;
    let capacity_bytes = 256 + info.nodes.len() * 256 + info.shards.len() * 96;
    reply::json(StatusCode::OK, &info, capacity_bytes)
}

/// `GET /v1/status`: this node's counters (uptime, shards served and led, WAL).
pub async fn status(State(state): State<GatewayState>) -> Result<Response, Problem> {
    let status = state.kernel().status().await;
    reply::json(StatusCode::OK, &status, 512)
}
