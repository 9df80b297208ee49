//! The three listeners (check, http, admin), the services on each, and shutdown.
//!
//! Owns: binding (with errors that name the listener and address), which service is
//! reachable on which port (admin operations only on the admin listener), TLS on each
//! listener (`tls`), connection hygiene on each (caps and timeouts in `conn`, HTTP/2
//! keep-alive pings and stream limits here), the check listener's bounds (size
//! `limits`, load shedding in `shed`, message size, call timeouts), health and reflection (the admin service is
//! NOT_SERVING while the store refuses writes), and the shutdown sequence: health NOT_SERVING -> stop accepting ->
//! in-flight calls finish (bounded by the grace period) -> store flushed.

pub mod admin;
pub mod conn;
pub mod decision_log;
pub mod door;
pub mod error;
pub mod http;
pub mod limits;
pub mod shared;
pub mod shed;
pub mod tls;

pub use error::ServeError;
pub use shared::Shared;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::index::Index;
use crate::pb;
use crate::store::Store;

/// The bound sockets. Binding happens before anything else so a taken port fails fast
/// with a clear message, and tests can bind port 0 and read the real addresses.
pub struct Listeners {
    pub check: TcpListener,
    pub http: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(cfg: &Config) -> Result<Self, ServeError> {
        async fn one(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    listener,
                    addr,
                    source,
                })
        }
        Ok(Self {
            check: one("check", cfg.check_addr).await?,
            http: one("http", cfg.http_addr).await?,
            admin: one("admin", cfg.admin_addr).await?,
        })
    }

    fn addrs(&self) -> [(&'static str, Option<SocketAddr>); 3] {
        [
            ("check", self.check.local_addr().ok()),
            ("http", self.http.local_addr().ok()),
            ("admin", self.admin.local_addr().ok()),
        ]
    }
}

fn reflection(
    descriptors: &[&[u8]],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServeError,
> {
    let mut v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for d in descriptors {
        v1 = v1.register_encoded_file_descriptor_set(d);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(d);
    }
    // grpcurl 1.8 speaks only v1alpha; newer clients prefer v1: serve both.
    Ok((v1.build_v1()?, v1alpha.build_v1alpha()?))
}

/// Whenever the store is degraded, tries to reopen it from disk (backing off from 1 s
/// to 30 s) and reloads the index from it, so the service heals by itself once the
/// disk has room again, without a restart.
async fn recover_store(store: Arc<Store>, index: Arc<Index>) {
    let mut degraded = store.degraded();
    loop {
        if degraded.wait_for(|d| *d).await.is_err() {
            return;
        }
        let mut pause = Duration::from_secs(1);
        loop {
            tokio::time::sleep(pause).await;
            match store.recover(|s| index.reload(s)).await {
                Ok(_) => break,
                Err(error) => {
                    pause = (pause * 2).min(Duration::from_secs(30));
                    tracing::warn!(%error, retry_in_secs = pause.as_secs(), "store still failing to reopen; checks keep serving from memory");
                }
            }
        }
    }
}

/// Writes the key pairs' last use to the store every `usage::FLUSH_EVERY`, and
/// forgets key pairs that were deleted.
async fn flush_key_usage(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(crate::usage::FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        write_key_usage(&shared);
    }
}

fn write_key_usage(shared: &Shared) {
    {
        let snap = shared.index.read();
        shared.usage.retain(|k| snap.key(k).is_some());
    }
    let batch = shared.usage.take_unflushed();
    if batch.is_empty() {
        return;
    }
    if let Err(error) = shared.store.record_key_use(&batch) {
        shared.usage.unflush(&batch);
        tracing::warn!(%error, keys = batch.len(), "cannot write the key pairs' last use; will retry");
    }
}

/// Every minute, deletes the previous secrets whose grace period has ended (they
/// stopped verifying at its end; this removes them from the store and the index).
async fn expire_previous_secrets(shared: Arc<Shared>) {
    const EVERY: Duration = Duration::from_secs(60);
    const BATCH: usize = 1000;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if *shared.store.degraded().borrow() {
            continue;
        }
        let due = match shared
            .store
            .expired_previous_secrets(shared.clock.now_ms(), BATCH)
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "cannot list expired previous secrets; will retry");
                continue;
            }
        };
        let mut dropped = 0usize;
        for app_key in &due {
            match shared
                .store
                .drop_expired_previous_secret("keygate", app_key)
                .await
            {
                Ok(changes) => {
                    dropped += usize::from(!changes.is_empty());
                    shared.index.refresh(&shared.store, &changes);
                }
                Err(error) => {
                    tracing::warn!(%error, app_key, "cannot delete an expired previous secret; will retry");
                    break;
                }
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "deleted previous secrets whose grace period ended");
        }
    }
}

/// The connection policy of `[check, http, admin]`, caps fitted under the open-file
/// limit (raised to its hard limit first).
fn connection_policies(limits: &crate::config::Limits) -> [conn::ConnPolicy; 3] {
    let asked = [
        limits.max_connections_check,
        limits.max_connections_http,
        limits.max_connections_admin,
    ];
    let fd_limit = conn::raise_fd_limit();
    let caps = conn::fit(asked, fd_limit);
    if caps != asked {
        tracing::warn!(
            fd_limit,
            check = caps[0],
            http = caps[1],
            admin = caps[2],
            "connection caps lowered to fit the open-file limit; raise `ulimit -n` to allow more"
        );
    }
    caps.map(|max_connections| conn::ConnPolicy {
        max_connections,
        first_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
    })
}

/// A gRPC server with the connection limits every gRPC listener shares: a stream cap
/// per connection, and pings on idle connections at a quarter of the idle timeout, so
/// a healthy idle peer (an Envoy between bursts) always makes progress and is never
/// closed by `conn`, while a dead one is dropped when a ping goes unanswered.
fn grpc_server(limits: &crate::config::Limits) -> Server {
    let ping = Duration::from_secs(limits.idle_timeout_secs)
        .div_f64(4.0)
        .max(Duration::from_secs(1));
    Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(ping))
        .http2_keepalive_timeout(Some(ping.min(Duration::from_secs(20))))
}

/// Runs the service until `shutdown` resolves, then drains and flushes.
pub async fn run(
    shared: Shared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let shared = Arc::new(shared);
    let cfg = &shared.config;
    let limits = cfg.limits;
    let tls = match &cfg.tls {
        Some(files) => {
            let t = tls::TlsSetup::load(
                files,
                Duration::from_secs(limits.tls_handshake_timeout_secs),
            )?;
            tracing::info!(cert = %files.cert.display(), admin_client_certificates = if t.admin_mtls { "required" } else { "not required" }, "TLS on every listener");
            Some(t)
        }
        None => None,
    };
    let (admin_token, token_path) = crate::keyfile::admin_token(
        cfg.admin_token_file.as_deref(),
        &cfg.data_dir,
        std::env::var("KEYGATE_ADMIN_TOKEN").ok(),
    )?;
    match &token_path {
        Some(p) => {
            tracing::info!(admin_token_file = %p.display(), "admin token loaded (send it as 'authorization: Bearer <token>')")
        }
        None => tracing::info!("admin token taken from KEYGATE_ADMIN_TOKEN"),
    }

    let policies = connection_policies(&limits);
    let incoming = |listener: TcpListener,
                    name: &'static str,
                    which: tls::Listener,
                    auth_failures: Option<Arc<std::sync::atomic::AtomicU64>>| {
        let (policy, counters) = match which {
            tls::Listener::Check => (policies[0], &shared.metrics.connections.check),
            tls::Listener::Http => (policies[1], &shared.metrics.connections.http),
            tls::Listener::Admin => (policies[2], &shared.metrics.connections.admin),
        };
        conn::Incoming::new(
            listener,
            name,
            tls.as_ref().map(|t| t.accept(which, auth_failures)),
            policy,
            counters.clone(),
        )
    };
    let bound = listeners.addrs();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // Either a stop was sent or every sender is gone: both mean stop.
        let _ = rx.wait_for(|s| *s).await;
    };

    // --- admin listener: management API (token required), health, reflection ---
    let (admin_health, admin_health_svc) = tonic_health::server::health_reporter();
    admin_health
        .set_serving::<pb::admin::admin_server::AdminServer<admin::AdminService>>()
        .await;
    let auth = admin::auth::AdminAuth::new(
        &admin_token,
        shared.store.clone(),
        shared.metrics.admin_auth_failures.clone(),
    );
    drop(admin_token);
    let admin_svc = admin::calls::Logged::new(
        pb::admin::admin_server::AdminServer::new(admin::AdminService::new(shared.clone())),
        auth,
    );
    // The admin service reports NOT_SERVING while the store refuses writes.
    let degraded_watch = {
        let mut degraded = shared.store.degraded();
        let health = admin_health.clone();
        tokio::spawn(async move {
            while degraded.changed().await.is_ok() {
                let now = *degraded.borrow_and_update();
                if now {
                    health
                        .set_not_serving::<pb::admin::admin_server::AdminServer<admin::AdminService>>()
                        .await;
                } else {
                    health
                        .set_serving::<pb::admin::admin_server::AdminServer<admin::AdminService>>()
                        .await;
                }
            }
        })
    };
    let recovery = tokio::spawn(recover_store(shared.store.clone(), shared.index.clone()));
    let expiry = tokio::spawn(expire_previous_secrets(shared.clone()));
    let usage = tokio::spawn(flush_key_usage(shared.clone()));
    let (refl_v1, refl_v1alpha) = reflection(&[pb::ADMIN_DESCRIPTOR_SET])?;
    let admin_router = grpc_server(&limits)
        .timeout(Duration::from_secs(limits.admin_timeout_secs))
        .add_service(admin_health_svc)
        .add_service(refl_v1)
        .add_service(refl_v1alpha)
        .add_service(admin_svc);
    let admin_task = tokio::spawn(admin_router.serve_with_incoming_shutdown(
        incoming(
            listeners.admin,
            "admin",
            tls::Listener::Admin,
            // With mTLS a refused client certificate is a failed admin login.
            Some(shared.metrics.admin_auth_failures.clone()),
        ),
        stopped(stop_rx.clone()),
    ));

    // --- check listener: Envoy ext_authz, health, reflection; nothing else ---
    let (check_health, check_health_svc) = tonic_health::server::health_reporter();
    check_health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let (crefl_v1, crefl_v1alpha) = reflection(&[pb::ENVOY_AUTHZ_DESCRIPTOR_SET])?;
    check_health
        .set_service_status(
            "envoy.service.auth.v3.Authorization",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let check_svc = door::grpc::CheckServer::new(
        shared.clone(),
        shed::InFlight::new(limits.check_max_in_flight),
        limits.check_max_message_bytes,
    );
    let check_router = grpc_server(&limits)
        .timeout(Duration::from_millis(limits.check_timeout_ms))
        .add_service(check_svc)
        .add_service(check_health_svc)
        .add_service(crefl_v1)
        .add_service(crefl_v1alpha);
    let check_task = tokio::spawn(check_router.serve_with_incoming_shutdown(
        incoming(listeners.check, "check", tls::Listener::Check, None),
        stopped(stop_rx.clone()),
    ));

    // --- http listener ---
    let http_task = tokio::spawn(http::serve(
        incoming(listeners.http, "http", tls::Listener::Http, None),
        shared.clone(),
        stopped(stop_rx.clone()),
    ));

    let show = |i: usize| bound[i].1.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(check = %show(0), http = %show(1), admin = %show(2), "keygate serving");
    if let Some(path) = &cfg.ready_file {
        write_ready_file(path, &bound)?;
    }

    shutdown.await;
    degraded_watch.abort();
    recovery.abort();
    expiry.abort();
    usage.abort();
    tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
    admin_health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    admin_health
        .set_not_serving::<pb::admin::admin_server::AdminServer<admin::AdminService>>()
        .await;
    check_health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop_tx.send(true);

    let grace = Duration::from_secs(cfg.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        let (a, c, h) = tokio::join!(admin_task, check_task, http_task);
        for (name, r) in [
            ("admin", a.map(|r| r.map_err(|e| e.to_string()))),
            ("check", c.map(|r| r.map_err(|e| e.to_string()))),
            ("http", h.map(|r| r.map_err(|e| e.to_string()))),
        ] {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(listener = name, error = %e, "listener ended with an error")
                }
                Err(e) => tracing::error!(listener = name, error = %e, "listener task failed"),
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_secs = cfg.shutdown_grace_secs,
            "grace period over; abandoning calls still in flight"
        );
    }
    shared.nonces.close(shared.clock.now_ms());
    write_key_usage(&shared);
    shared
        .store
        .flush()
        .await
        .map_err(|source| ServeError::Store {
            dir: cfg.data_dir.clone(),
            source,
        })?;
    tracing::info!("store flushed; bye");
    Ok(())
}

fn write_ready_file(
    path: &std::path::Path,
    addrs: &[(&str, Option<SocketAddr>)],
) -> Result<(), ServeError> {
    let body = serde_json::Value::Object(
        addrs
            .iter()
            .filter_map(|(n, a)| {
                a.map(|a| ((*n).to_owned(), serde_json::Value::String(a.to_string())))
            })
            .collect(),
    );
    // Write then rename, so a reader never sees a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| ServeError::ReadyFile {
            path: path.to_owned(),
            source,
        })
}

/// Starts everything with the system clock: what `keygate serve` does.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    // A stale ready file from an earlier run would hand a waiting script old addresses.
    if let Some(p) = &config.ready_file {
        let _ = std::fs::remove_file(p);
    }
    let listeners = Listeners::bind(&config).await?;
    let shared = Shared::open(config, Arc::new(SystemClock)).await?;
    run(shared, listeners, shutdown).await
}

/// Resolves on SIGINT or SIGTERM, logging which.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
