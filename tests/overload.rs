//! Load shedding and size limits on the check listener, against the real binary.
//!
//! `held_call_makes_the_next_one_overloaded` is deterministic: a raw HTTP/2 Check call
//! is held open mid-body (it holds the only slot of `--check-max-in-flight 1`), so the
//! next call must be shed with a proper deny; releasing it frees the slot. The flood
//! test sends many concurrent signed calls at a tiny limit and checks that every
//! answer is an allow or an `Overloaded` deny (503, RESOURCE_EXHAUSTED), never
//! anything else, and that the metrics count every shed call. How many are shed
//! depends on scheduling, so it is reported, not asserted.
//!
//! `oversized_requests_are_denied_with_a_code`: a correctly signed request over a
//! header-count, header-bytes or body limit is denied with `HeadersTooLarge` (431) or
//! `BodyTooLarge` (413); a gRPC message over the decoder limit is an RPC error, which
//! Envoy with `failure_mode_allow: false` turns into a deny.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Keygate;
use common::granted::{check_client, denied_http_status, deny_code, grant_app, signed_check};
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use prost::Message;

/// Hang guard for the polling loop (never a timing assertion).
const DEADLINE: Duration = Duration::from_secs(30);

fn shed_metric(kg: &Keygate) -> u64 {
    let (code, body) = kg.http_get("/metrics");
    assert_eq!(code, 200);
    body.lines()
        .find(|l| l.starts_with("keygate_decisions_total{result=\"deny\",code=\"Overloaded\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Overloaded counter in /metrics:\n{body}"))
}

fn assert_overloaded(r: &CheckResponse) {
    assert_eq!(deny_code(r).as_deref(), Some("Overloaded"), "{r:?}");
    assert_eq!(denied_http_status(r), Some(503), "{r:?}");
    assert_eq!(
        r.status.as_ref().unwrap().code,
        tonic::Code::ResourceExhausted as i32,
        "{r:?}"
    );
}

type Held = (h2::client::ResponseFuture, h2::SendStream<Bytes>);

/// Starts a Check call on its own HTTP/2 connection and sends `part` of its body.
/// Returns once the server has read the call's headers (a PING answered after them).
async fn hold(kg: &Keygate, part: &[u8]) -> Held {
    let tcp = tokio::net::TcpStream::connect(kg.check_addr())
        .await
        .unwrap();
    let (h2, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = conn.ping_pong().expect("ping_pong");
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/envoy.service.auth.v3.Authorization/Check",
            kg.check_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut body) = h2.send_request(req, false).unwrap();
    body.send_data(Bytes::copy_from_slice(part), false).unwrap();
    ping.ping(h2::Ping::opaque()).await.unwrap();
    (resp, body)
}

/// The CheckResponse of a raw HTTP/2 call.
async fn read_answer(resp: h2::client::ResponseFuture) -> CheckResponse {
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let mut raw = Vec::new();
    while let Some(chunk) = stream.data().await {
        let chunk = chunk.unwrap();
        stream.flow_control().release_capacity(chunk.len()).unwrap();
        raw.extend_from_slice(&chunk);
    }
    assert!(raw.len() > 5, "no gRPC message in the answer");
    CheckResponse::decode(&raw[5..]).unwrap()
}

#[tokio::test]
async fn held_call_makes_the_next_one_overloaded() {
    // A long call timeout: the held call must not be cut while the test runs.
    let kg =
        Keygate::start_with_args(&["--check-max-in-flight", "1", "--check-timeout-ms", "600000"]);
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "shed").await;
    let mut check = check_client(kg.check_addr()).await;

    // Below the limit: allowed.
    let r = check
        .check(signed_check(&g, &g.app_secret, "a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");
    assert_eq!(shed_metric(&kg), 0);

    // A raw HTTP/2 Check call whose body is sent only in part holds the only slot,
    // once its task has run. Whether it got the slot or was itself shed (a probe may
    // hold the slot at that moment) is only visible from its answer, so a try that
    // did not end with a shed probe is finished and tried again.
    let msg = signed_check(&g, &g.app_secret, "held").encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&msg);
    let split = 5 + msg.len() / 2;
    let started = Instant::now();
    let (mut shed, mut tries) = (0u64, 0u32);
    let (held_resp, mut body) = loop {
        tries += 1;
        let (held_resp, mut body) = hold(&kg, &frame[..split]).await;
        let r = check
            .check(signed_check(&g, &g.app_secret, "probe"))
            .await
            .unwrap()
            .into_inner();
        match deny_code(&r).as_deref() {
            Some("Overloaded") => {
                assert_overloaded(&r);
                shed += 1;
                break (held_resp, body);
            }
            None => {}
            Some(other) => panic!("a probe must be allowed or shed, got {other}: {r:?}"),
        }
        body.send_data(Bytes::copy_from_slice(&frame[split..]), true)
            .unwrap();
        let held = read_answer(held_resp).await;
        match deny_code(&held).as_deref() {
            None => {}
            Some("Overloaded") => shed += 1,
            Some(other) => panic!("the held call must be allowed or shed, got {other}"),
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no try made the held call take the only slot ({tries} tries); stderr:\n{}",
            kg.stderr()
        );
    };
    eprintln!("held call took the slot on try {tries}");
    // Still held: shed again, deterministically, with the request id echoed.
    let mut again = signed_check(&g, &g.app_secret, "again");
    again
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .headers
        .insert("x-request-id".into(), "shed-me-42".into());
    let r = check.check(again).await.unwrap().into_inner();
    assert_overloaded(&r);
    shed += 1;
    match &r.http_response {
        Some(
            envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::DeniedResponse(
                d,
            ),
        ) => {
            assert!(
                d.body.contains("\"Overloaded\"") && d.body.contains("shed-me-42"),
                "{d:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(shed_metric(&kg), shed);

    // Release the held call: it was admitted, so it gets a real decision (an allow).
    body.send_data(Bytes::copy_from_slice(&frame[split..]), true)
        .unwrap();
    let held = read_answer(held_resp).await;
    assert_eq!(deny_code(&held), None, "{held:?}");

    // The slot is free again.
    let r = check
        .check(signed_check(&g, &g.app_secret, "after"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");
    assert_eq!(shed_metric(&kg), shed);
}

#[tokio::test]
async fn flood_gets_allows_or_overloaded_denies_only() {
    const CALLS: usize = 400;
    const CONNECTIONS: usize = 4;
    let kg = Keygate::start_with_args(&["--check-max-in-flight", "2"]);
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "flood").await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(check_client(kg.check_addr()).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let mut c = clients[i % CONNECTIONS].clone();
        let req = signed_check(&g, &g.app_secret, &format!("n{i}"));
        tasks.spawn(async move { c.check(req).await.map(|r| r.into_inner()) });
    }
    let (mut allowed, mut shed) = (0u64, 0u64);
    while let Some(r) = tasks.join_next().await {
        let r = r
            .unwrap()
            .expect("Check answers with a response, never an RPC error");
        match deny_code(&r).as_deref() {
            None => allowed += 1,
            Some("Overloaded") => {
                assert_overloaded(&r);
                shed += 1;
            }
            Some(other) => panic!("only allow or Overloaded expected, got {other}: {r:?}"),
        }
    }
    assert_eq!(allowed + shed, CALLS as u64);
    assert_eq!(shed_metric(&kg), shed, "every shed call is counted");
    eprintln!("flood: {CALLS} concurrent calls at limit 2: {allowed} allowed, {shed} shed");
}

#[tokio::test]
async fn oversized_requests_are_denied_with_a_code() {
    let kg = Keygate::start_with_args(&[
        "--max-request-headers",
        "20",
        "--max-request-header-bytes",
        "4096",
        "--max-request-body-bytes",
        "1024",
        "--check-max-message-bytes",
        "100000",
    ]);
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "sizes").await;
    let mut check = check_client(kg.check_addr()).await;
    let http = |r: &mut envoy_types::pb::envoy::service::auth::v3::CheckRequest| {
        r.attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http
            .take()
            .unwrap()
    };
    let put_back = |r: &mut envoy_types::pb::envoy::service::auth::v3::CheckRequest, h| {
        r.attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http = Some(h);
    };

    // Control: a signed request within every limit is allowed.
    let r = check
        .check(signed_check(&g, &g.app_secret, "ok"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");

    let mut cases = Vec::new();
    let mut many = signed_check(&g, &g.app_secret, "many");
    let mut h = http(&mut many);
    for i in 0..30 {
        h.headers.insert(format!("x-extra-{i}"), "v".into());
    }
    put_back(&mut many, h);
    cases.push(("30 extra headers", many, "HeadersTooLarge", 431));

    let mut long = signed_check(&g, &g.app_secret, "long");
    let mut h = http(&mut long);
    h.headers.insert("x-long".into(), "v".repeat(5000));
    put_back(&mut long, h);
    cases.push(("a 5000-byte header", long, "HeadersTooLarge", 431));

    let mut path = signed_check(&g, &g.app_secret, &"p".repeat(5000));
    let h = http(&mut path);
    put_back(&mut path, h);
    cases.push(("a 5000-byte path", path, "HeadersTooLarge", 431));

    let mut body = signed_check(&g, &g.app_secret, "body");
    let mut h = http(&mut body);
    h.headers
        .insert("x-envoy-auth-partial-body".into(), "false".into());
    h.headers.insert("content-length".into(), "2000".into());
    h.raw_body = vec![b'b'; 2000];
    put_back(&mut body, h);
    cases.push(("a 2000-byte body", body, "BodyTooLarge", 413));

    for (what, req, code, status) in cases {
        let r = check.check(req).await.unwrap().into_inner();
        assert_eq!(deny_code(&r).as_deref(), Some(code), "{what}: {r:?}");
        assert_eq!(denied_http_status(&r), Some(status), "{what}");
    }

    // Over the gRPC message limit: refused by the decoder, an RPC error, never an allow.
    let mut huge = signed_check(&g, &g.app_secret, "huge");
    let mut h = http(&mut huge);
    h.raw_body = vec![b'h'; 200_000];
    put_back(&mut huge, h);
    let e = check
        .check(huge)
        .await
        .expect_err("a message over the limit is refused");
    assert!(
        matches!(
            e.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{e:?}"
    );
}
