//! The HTTP endpoint: /metrics (Prometheus text), /healthz, /readyz, /flows (JSON, debugging).

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, MethodRouter},
    Json, Router,
};
use serde::Deserialize;

use crate::export::state::Shared;

/// The endpoint's routes. `/flows` lists client addresses, so it can be left out
/// (`--no-flows-endpoint`): it then answers 404 like any unknown path.
pub fn router(shared: Arc<Shared>, flows_endpoint: bool) -> Router {
    routes(
        get(metrics),
        get(readyz),
        flows_endpoint.then(|| get(flows)),
    )
    .with_state(shared)
}

/// Generic over the state so that tests can build it without loading the kernel program.
fn routes<S: Clone + Send + Sync + 'static>(
    metrics: MethodRouter<S>,
    readyz: MethodRouter<S>,
    flows: Option<MethodRouter<S>>,
) -> Router<S> {
    let r = Router::new()
        .route("/metrics", metrics)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", readyz);
    match flows {
        Some(f) => r.route("/flows", f),
        None => r,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// Serves the routes on a loopback port and returns the status line of `GET path`.
    fn status_of(flows: bool, path: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = routes::<()>(
            get(|| async { "metrics\n" }),
            get(|| async { "ready\n" }),
            flows.then(|| get(|| async { "[]" })),
        )
        .with_state(());
        let server = std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    axum::serve(listener, app),
                )
                .await;
            })
        });
        let mut conn = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).expect("read");
        drop(server);
        answer.lines().next().unwrap_or_default().to_owned()
    }

    #[test]
    fn flows_endpoint_can_be_left_out() {
        assert!(status_of(true, "/flows").contains("200"));
        assert!(status_of(false, "/flows").contains("404"));
        assert!(status_of(false, "/healthz").contains("200"));
        assert!(status_of(false, "/metrics").contains("200"));
    }
}
