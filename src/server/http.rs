//! The HTTP listener: the NGINX `auth_request` and Envoy HTTP-mode front doors, the
//! liveness and readiness probes, and Prometheus metrics.
//!
//! Owns: serving HTTP/1.1 on this listener (`serve`), routing on it, the in-flight
//! bound and the call time limit of its two front doors. The doors themselves
//! (`door::nginx`, `door::envoy_http`) translate only; policy stays in `decide`.
//!
//! | path | what |
//! |---|---|
//! | `/nginx/check` | NGINX `auth_request` subrequest (original request in `X-Original-*`) |
//! | `/nginx/render-deny` | NGINX `error_page` target: renders the real deny |
//! | `/envoy/<original path>` | Envoy `http_service` with `path_prefix: /envoy` |
//! | `/healthz`, `/readyz`, `/metrics` | probes and Prometheus text |
//!
//! The front doors match by prefix in the fallback handler rather than by router
//! pattern: the router would normalise or reject paths (`//`, `%2F`) that a signature
//! covers byte for byte.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::conn::Incoming;
use super::door::http_wire::{early_deny, header_str};
use super::door::{envoy_http, nginx, overloaded, request_id_or_new};
use super::shared::Shared;
use super::shed::InFlight;
use crate::deny::{Deny, DenyCode};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// Serves the HTTP listener until `shutdown` resolves, then lets the requests in
/// progress finish (the caller bounds how long).
pub async fn serve(
    incoming: Incoming,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_read_timeout = Duration::from_secs(shared.config.limits.header_read_timeout_secs);
    serve_router(incoming, router(shared), header_read_timeout, shutdown).await
}

/// HTTP/1.1 on each admitted connection, with hyper's header-read deadline on (it
/// needs a timer, which `axum::serve` does not set: without one a client could take
/// forever over its headers). In hyper the deadline also starts when a keep-alive
/// connection goes idle, so it bounds idle keep-alive time as well.
pub(super) async fn serve_router(
    mut incoming: Incoming,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = incoming.accept() => c,
            _ = &mut shutdown => break,
        };
        let Some(conn) = conn else { break };
        let peer = conn.remote_addr();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let serving = graceful.watch(http1.serve_connection(TokioIo::new(conn), service));
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::debug!(listener = "http", %peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting (frees the port), then wait for the connections to finish.
    drop(incoming);
    graceful.shutdown().await;
    Ok(())
}

/// State of the HTTP listener: the shared service and this listener's own bound on
/// decisions in progress (the same size as the check listener's).
#[derive(Clone)]
struct Door {
    shared: Arc<Shared>,
    in_flight: Arc<InFlight>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    let in_flight = InFlight::new(shared.config.limits.check_max_in_flight);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(front_door)
        .with_state(Door { shared, in_flight })
}

/// Dispatches the front doors by raw path prefix (see the module doc).
///
/// The whole call, body included, is bounded by the check time limit: a client that
/// sends its body slowly gets `RequestTimeout` instead of holding a task forever, and
/// the Envoy door takes its in-flight slot only once the body is in, so slow bodies
/// cannot make every other check `Overloaded`.
async fn front_door(State(door): State<Door>, req: Request) -> Response {
    let path = req.uri().path();
    let is_nginx = path == nginx::CHECK_PATH;
    let is_envoy = !is_nginx && envoy_http::matches(path);
    if !is_nginx && !is_envoy {
        return if path == nginx::RENDER_DENY_PATH {
            nginx::render_deny(req.headers())
        } else {
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        };
    }
    let render_deny: fn(&Deny, &str) -> Response = if is_nginx {
        nginx::deny
    } else {
        envoy_http::deny
    };
    let caller_id = request_id_or_new(header_str(req.headers(), "x-request-id"));
    let shared = &door.shared;
    let limit = Duration::from_millis(shared.config.limits.check_timeout_ms);
    let call = async {
        if is_nginx {
            match door.in_flight.try_acquire() {
                Some(_slot) => nginx::check(shared, req.headers()).await,
                None => early_deny(shared, overloaded(), &caller_id, render_deny),
            }
        } else {
            envoy_http::check(shared, req, &door.in_flight).await
        }
    };
    match tokio::time::timeout(limit, call).await {
        Ok(response) => response,
        Err(_) => {
            let d = Deny::new(
                DenyCode::RequestTimeout,
                format!(
                    "the request was not received and decided within {} ms",
                    limit.as_millis()
                ),
            );
            early_deny(shared, d, &caller_id, render_deny)
        }
    }
}

/// Ready once the store is open and the index loaded, which `Shared::open` guarantees
/// before the listener starts; reports the index sizes.
/// Stays 200 while the store refuses writes (checks are still answered from memory)
/// but says so, for dashboards.
async fn readyz(State(door): State<Door>) -> (StatusCode, Json<serde_json::Value>) {
    let s = door.shared.index.sizes();
    let degraded = *door.shared.store.degraded().borrow();
    let nonces = door.shared.nonces.health(door.shared.clock.now_ms());
    // With etcd: the revision the local view has applied and how long ago etcd last
    // answered (the view may be missing later writes by that much).
    #[cfg(feature = "etcd")]
    let etcd = door.shared.store.etcd().map(|e| {
        let (revision, age_ms) = e.position();
        serde_json::json!({"view_revision": revision, "last_contact_ms_ago": age_ms})
    });
    #[cfg(not(feature = "etcd"))]
    let etcd: Option<serde_json::Value> = None;
    (
        StatusCode::OK,
        Json(serde_json::json!({
            "status": "ready",
            "store": if degraded { "degraded: writes failing" } else { "ok" },
            // Still ready when the nonce store is not: requests without a nonce pass,
            // and every replica shares the same nonce store anyway.
            "nonce_store": nonces.err().unwrap_or_else(|| "ok".to_owned()),
            "etcd": etcd,
            "apps": s.apps, "keys": s.keys, "apis": s.apis, "grants": s.grants,
        })),
    )
}

async fn metrics(State(door): State<Door>) -> ([(HeaderName, &'static str); 1], String) {
    let shared = &door.shared;
    let mut body =
        shared
            .metrics
            .render(shared.index.sizes(), &shared.nonces, shared.clock.now_ms());
    shared.usage.render(&mut body);
    #[cfg(feature = "etcd")]
    if let Some(etcd) = shared.store.etcd() {
        crate::telemetry::render_etcd(&mut body, etcd);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
