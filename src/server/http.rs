//! The HTTP listener: liveness and readiness probes and Prometheus metrics (the NGINX
//! and Envoy HTTP front doors join it later).
//!
//! Owns: HTTP routing and rendering only; no policy.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use super::Shared;

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Ready once the store is open and the index loaded, which `Shared::open` guarantees
/// before the listener starts; reports the index sizes.
async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, Json<serde_json::Value>) {
    let s = shared.index.sizes();
    (
        StatusCode::OK,
        Json(
            serde_json::json!({"status": "ready", "apps": s.apps, "keys": s.keys, "apis": s.apis, "grants": s.grants}),
        ),
    )
}

async fn metrics(
    State(shared): State<Arc<Shared>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let body = shared.metrics.render(
        shared.index.sizes(),
        shared.replay.len(),
        shared.replay.capacity(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
