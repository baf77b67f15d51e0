//! The HTTP endpoint: /metrics (Prometheus text), /healthz, /readyz, /flows (JSON, debugging).

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Deserialize;

use crate::run::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/flows", get(flows))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let started = Instant::now();
    // Map reads are a handful of syscalls; not worth a blocking-pool hop.
    let text = shared.scrape(started);
    match text {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => {
            tracing::error!("scrape failed: {e:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("scrape failed: {e:#}\n"),
            )
                .into_response()
        }
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not attached yet\n",
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct FlowsQuery {
    /// At most this many flows, largest first (by total bytes). Default 1000.
    limit: Option<usize>,
}

async fn flows(State(shared): State<Arc<Shared>>, Query(q): Query<FlowsQuery>) -> Response {
    let mut flows = shared.flows_snapshot();
    flows.sort_by_key(|f| std::cmp::Reverse(f.to_server.bytes + f.to_client.bytes));
    flows.truncate(q.limit.unwrap_or(1000));
    Json(flows).into_response()
}
