//! Slow and silent clients against the real binary (connection hygiene, issue 11).
//!
//! `floods_of_silent_connections_stop_no_listener`: under a 1024 open-file limit, 1,100
//! half-sent HTTP requests and 600 silent TCP connections to the check listener. Before
//! connection caps these took every descriptor and stopped all three listeners, admin
//! included. Now admin answers during the flood, the flooded listeners answer again
//! once the first-read / header-read timeout has closed the silent connections, and
//! `/metrics` counts what was refused and what timed out.
//!
//! `slow_bodies_time_out_and_do_not_starve_the_envoy_door`: 20 Envoy-door requests that
//! announce a body and stall, against `--check-max-in-flight 4`. A signed request sent
//! meanwhile is allowed (a stalled body holds no in-flight slot), and every stalled one
//! is answered `RequestTimeout` (408) once the call's time limit passes.
//!
//! The deadlines below are hang guards, never timing assertions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Keygate;
use common::granted::{deny_code, grant_app, signed_check};
use common::http::{DataSet, request, signed};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keygate::scheme::SchemeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const DEADLINE: Duration = Duration::from_secs(60);

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls `ok` until it holds; panics with `what` at the deadline.
async fn eventually<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !ok().await {
        assert!(started.elapsed() < DEADLINE, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens `n` connections to `addr` and sends `prefix` on each (nothing when empty).
/// Connections the server refused are kept too: the point is the attempt.
async fn flood(addr: SocketAddr, n: usize, prefix: &'static [u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        if !prefix.is_empty() {
            let _ = s.write_all(prefix).await;
        }
        held.push(s);
    }
    held
}

/// A channel on a new connection, or `None` when the listener does not answer.
async fn fresh_channel(addr: SocketAddr) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()
}

async fn admin_serving(addr: SocketAddr) -> bool {
    let Some(ch) = fresh_channel(addr).await else {
        return false;
    };
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

fn healthz(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_silent_connections_stop_no_listener() {
    // This test holds about 1,700 sockets itself.
    keygate::server::conn::raise_fd_limit();
    let kg = Keygate::start_with_fd_limit(1024, &["--header-read-timeout-secs", "3"]);
    assert!(
        kg.stderr().contains("connection caps lowered"),
        "the fitted caps are logged:\n{}",
        kg.stderr()
    );
    let g = grant_app(&mut kg.admin().await, "slow").await;

    let half_sent = flood(
        kg.http_addr(),
        1_100,
        b"GET /nginx/check HTTP/1.1\r\nHost: k\r\nX-Original-Uri: /v1/",
    )
    .await;
    let silent = flood(kg.check_addr(), 600, b"").await;
    eprintln!(
        "holding {} half-sent HTTP requests and {} silent check connections",
        half_sent.len(),
        silent.len()
    );

    // Admin is untouched by floods on the other listeners.
    assert!(
        admin_serving(kg.admin_addr()).await,
        "admin stopped answering during a flood of the front doors:\n{}",
        kg.stderr()
    );

    // The flooded listeners answer again once the silent connections are closed, with
    // the flood still held open on the client side.
    eventually("the check listener never answered again", || async {
        let Some(ch) = fresh_channel(kg.check_addr()).await else {
            return false;
        };
        AuthorizationClient::new(ch)
            .check(signed_check(&g, &g.app_secret, "flood"))
            .await
            .is_ok_and(|r| deny_code(&r.into_inner()).is_none())
    })
    .await;
    let http = kg.http_addr();
    eventually("the HTTP listener never answered again", || async move {
        tokio::task::spawn_blocking(move || healthz(http))
            .await
            .unwrap()
    })
    .await;

    // The server closed the half-sent requests (EOF or reset), it did not wait on them.
    for mut s in half_sent.into_iter().take(20) {
        let mut buf = [0u8; 256];
        let r = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(_)) | Ok(Err(_))),
            "a half-sent request is still open"
        );
    }
    drop(silent);

    let (_, text) = kg.http_get("/metrics");
    let refused_http = metric(
        &text,
        "keygate_connections_refused_total{listener=\"http\"}",
    );
    let refused_check = metric(
        &text,
        "keygate_connections_refused_total{listener=\"check\"}",
    );
    let timed_out_check = metric(
        &text,
        "keygate_connections_timed_out_total{listener=\"check\"}",
    );
    eprintln!(
        "refused: http {refused_http}, check {refused_check}; timed out: check {timed_out_check}"
    );
    assert!(refused_http > 0 && refused_check > 0, "{text}");
    assert!(timed_out_check > 0, "{text}");
    assert!(
        kg.stderr().contains("connection cap reached"),
        "the cap is logged:\n{}",
        kg.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_and_do_not_starve_the_envoy_door() {
    let kg =
        Keygate::start_with_args(&["--check-max-in-flight", "4", "--check-timeout-ms", "1500"]);
    let caller = DataSet::create(&mut kg.admin().await).await.caller;
    let http = kg.http_addr();

    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(http).await.unwrap();
        let head = format!(
            "POST /envoy/v1/upload HTTP/1.1\r\nHost: api.example.com\r\nx-request-id: slow-{i}\r\nContent-Length: 1000\r\n\r\n0123456789"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    // Every stalled request is in (its connection open and its head sent) before the
    // signed one goes out.
    eventually("the stalled requests never reached keygate", || async {
        let (_, text) = kg.http_get("/metrics");
        metric(&text, "keygate_connections{listener=\"http\"}") > 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (target, mut headers) = signed(
        &caller,
        SchemeKind::Aliyun,
        "GET",
        "api.example.com",
        "/v1/items",
        &[],
        None,
    );
    headers.push(("content-length".into(), "0".into()));
    let target = format!("/envoy{target}");
    let resp = tokio::task::spawn_blocking(move || request(http, "GET", &target, &headers, b""))
        .await
        .unwrap();
    assert_eq!(
        resp.status, 200,
        "a stalled body starved the door: {resp:?}"
    );

    for (i, mut s) in stalled.into_iter().enumerate() {
        let mut out = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .expect("a stalled request was never answered")
            .ok();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408"), "{i}: {text}");
        assert!(
            text.contains("x-keygate-error: RequestTimeout"),
            "{i}: {text}"
        );
        // The caller's request id survives a deny made before the pipeline.
        assert!(
            text.contains(&format!("x-keygate-request-id: slow-{i}")),
            "{i}: {text}"
        );
    }
    let (_, text) = kg.http_get("/metrics");
    assert_eq!(
        metric(
            &text,
            "keygate_decisions_total{result=\"deny\",code=\"RequestTimeout\"}"
        ),
        20,
        "{text}"
    );
}
