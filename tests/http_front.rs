//! The HTTP listener against the real binary: Envoy HTTP-mode contract (requests shaped
//! as Envoy's ext_authz `http_service` sends them), the NGINX endpoints without
//! NGINX, and `/metrics` after a known sequence of decisions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::Keygate;
use common::http::{Caller, DataSet, HttpResponse, request, signed};
use keygate::scheme::SchemeKind;

/// The client-facing authority the signatures name (Envoy forwards it as `Host`).
const AUTHORITY: &str = "api.example.com";

struct Fixture {
    keygate: Keygate,
    caller: Caller,
}

impl Fixture {
    async fn start() -> Self {
        let keygate = Keygate::start();
        let caller = DataSet::create(&mut keygate.admin().await).await.caller;
        Self { keygate, caller }
    }

    fn http(&self) -> SocketAddr {
        self.keygate.http_addr()
    }

    fn signed(
        &self,
        scheme: SchemeKind,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (String, Vec<(String, String)>) {
        signed(&self.caller, scheme, method, AUTHORITY, target, extra, body)
    }

    /// What Envoy sends for a client request: `/envoy` + the original target, the
    /// original headers plus Envoy's own, and the body only when buffering is on
    /// (`with_body`: then with `x-envoy-auth-partial-body`).
    async fn envoy(
        &self,
        method: &str,
        target: &str,
        mut headers: Vec<(String, String)>,
        body: Option<(&[u8], bool)>,
    ) -> HttpResponse {
        headers.push(("x-forwarded-proto".into(), "https".into()));
        headers.push(("x-envoy-expected-rq-timeout-ms".into(), "300".into()));
        headers.push(("x-request-id".into(), "env-req-1".into()));
        let bytes = match body {
            Some((b, partial)) => {
                headers.push(("x-envoy-auth-partial-body".into(), partial.to_string()));
                b.to_vec()
            }
            None => Vec::new(),
        };
        if bytes.is_empty() && method != "POST" && method != "PUT" {
            headers.push(("content-length".into(), "0".into()));
        }
        let (addr, method, target) = (self.http(), method.to_owned(), format!("/envoy{target}"));
        tokio::task::spawn_blocking(move || request(addr, &method, &target, &headers, &bytes))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_allow_is_exactly_200_with_identity_headers() {
    let f = Fixture::start().await;
    let (target, headers) = f.signed(SchemeKind::Aliyun, "GET", "/v1/items?b=2&a=1", &[], None);
    let resp = f.envoy("GET", &target, headers, None).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body.is_empty());
    assert_eq!(
        resp.header("x-keygate-app-id"),
        Some(f.caller.app_id.as_str())
    );
    assert_eq!(
        resp.header("x-keygate-app-key"),
        Some(f.caller.app_key.as_str())
    );
    assert_eq!(resp.header("x-keygate-scheme"), Some("aliyun"));
    assert_eq!(resp.header("x-keygate-stage"), Some("RELEASE"));
    assert_eq!(resp.header("x-keygate-body"), Some("unsigned"));
    assert_eq!(resp.header("x-keygate-request-id"), Some("env-req-1"));
    let remove = resp
        .header("x-envoy-auth-headers-to-remove")
        .unwrap_or_default();
    let remove: Vec<&str> = remove.split(", ").collect();
    for h in [
        "x-ca-signature",
        "x-ca-signature-headers",
        "x-keygate-body-digest",
    ] {
        assert!(remove.contains(&h), "{h} not in {remove:?}");
    }

    // Every scheme goes through the same door.
    for scheme in SchemeKind::ALL {
        let (target, headers) = f.signed(scheme, "GET", "/v1/things/7", &[], None);
        let resp = f.envoy("GET", &target, headers, None).await;
        assert_eq!(resp.status, 200, "{scheme:?}: {resp:?}");
        assert_eq!(resp.header("x-keygate-scheme"), Some(scheme.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_checks_a_buffered_body_and_says_when_it_could_not() {
    let f = Fixture::start().await;
    let body: &[u8] = br#"{"sku":"A-1","qty":2}"#;
    let ct = [("Content-Type", "application/json")];

    // with_request_body: the digest is checked.
    let (target, headers) = f.signed(SchemeKind::Aliyun, "POST", "/v1/orders", &ct, Some(body));
    let resp = f
        .envoy("POST", &target, headers.clone(), Some((body, false)))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-keygate-body"), Some("verified"));
    assert_eq!(resp.header("x-keygate-body-digest"), None);

    // A different body under the same signature.
    let (target, headers) = f.signed(SchemeKind::Aliyun, "POST", "/v1/orders", &ct, Some(body));
    let resp = f
        .envoy(
            "POST",
            &target,
            headers,
            Some((b"{\"sku\":\"A-1\",\"qty\":200}", false)),
        )
        .await;
    resp.assert_deny(400, "BodyDigestMismatch");

    // Cut at Envoy's buffer limit: cannot be checked.
    let (target, headers) = f.signed(SchemeKind::Aliyun, "POST", "/v1/orders", &ct, Some(body));
    let resp = f
        .envoy("POST", &target, headers, Some((&body[..5], true)))
        .await;
    resp.assert_deny(400, "BodyIncomplete");

    // No buffering configured: allowed, but marked unverified with the digest named.
    let (target, headers) = f.signed(SchemeKind::Aliyun, "POST", "/v1/orders", &ct, Some(body));
    let resp = f.envoy("POST", &target, headers, None).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-keygate-body"), Some("unverified"));
    assert_eq!(resp.header("x-keygate-body-digest"), Some("content-md5"));

    // ...unless the API insists on a verified digest.
    let (target, headers) = f.signed(
        SchemeKind::Aliyun,
        "POST",
        "/strict/orders",
        &ct,
        Some(body),
    );
    let resp = f.envoy("POST", &target, headers, None).await;
    resp.assert_deny(400, "BodyDigestMissing");
    let (target, headers) = f.signed(
        SchemeKind::Aliyun,
        "POST",
        "/strict/orders",
        &ct,
        Some(body),
    );
    let resp = f.envoy("POST", &target, headers, Some((body, false))).await;
    assert_eq!(resp.status, 200, "{resp:?}");

    // RFC 9421 content-digest through the same door.
    let (target, headers) = f.signed(SchemeKind::Rfc9421, "POST", "/v1/orders", &ct, Some(body));
    let resp = f.envoy("POST", &target, headers, Some((body, false))).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-keygate-body"), Some("verified"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_denies_carry_status_code_and_body() {
    let f = Fixture::start().await;
    let stranger = Caller {
        app_key: "no-such-key".into(),
        ..f.caller.clone()
    };
    let (target, headers) = signed(
        &stranger,
        SchemeKind::Aliyun,
        "GET",
        AUTHORITY,
        "/v1/x",
        &[],
        None,
    );
    let resp = f.envoy("GET", &target, headers, None).await;
    resp.assert_deny(401, "UnknownAppKey");
    assert_eq!(resp.header("x-keygate-request-id"), Some("env-req-1"));

    let (target, headers) = f.signed(SchemeKind::Tencent, "GET", "/private/x", &[], None);
    let resp = f.envoy("GET", &target, headers, None).await;
    resp.assert_deny(403, "NoGrant");

    let (target, headers) = f.signed(SchemeKind::SigV4, "GET", "/v1/x?a=1", &[], None);
    let resp = f
        .envoy("GET", &target.replace("a=1", "a=2"), headers, None)
        .await;
    resp.assert_deny(401, "SignatureMismatch");

    let (target, headers) = f.signed(SchemeKind::Aliyun, "GET", "/v1/x", &[], None);
    let first = f.envoy("GET", &target, headers.clone(), None).await;
    assert_eq!(first.status, 200, "{first:?}");
    let again = f.envoy("GET", &target, headers, None).await;
    again.assert_deny(401, "NonceReplayed");

    let resp = f
        .envoy(
            "GET",
            "/v1/x",
            vec![("Host".into(), AUTHORITY.into())],
            None,
        )
        .await;
    resp.assert_deny(401, "MissingCredential");

    // More body than the door accepts: a deny with a code, not a dropped connection.
    let big = vec![b'a'; keygate::config::Limits::default().max_request_body_bytes + 1];
    let (target, headers) = f.signed(
        SchemeKind::Aliyun,
        "POST",
        "/v1/x",
        &[("Content-Type", "application/json")],
        Some(&big),
    );
    let resp = f.envoy("POST", &target, headers, Some((&big, false))).await;
    resp.assert_deny(413, "BodyTooLarge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_endpoints_without_nginx() {
    let f = Fixture::start().await;
    let addr = f.http();
    let (target, mut headers) = f.signed(SchemeKind::Aliyun, "GET", "/v1/items?q=1", &[], None);
    // What the shipped config sends: a GET to /nginx/check naming the original request.
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("host"));
    headers.extend([
        ("Host".to_owned(), addr.to_string()),
        ("X-Original-Method".to_owned(), "GET".to_owned()),
        ("X-Original-URI".to_owned(), target.clone()),
        ("X-Original-Host".to_owned(), AUTHORITY.to_owned()),
        ("X-Original-Scheme".to_owned(), "http".to_owned()),
    ]);
    let send = |headers: Vec<(String, String)>, path: &'static str| {
        tokio::task::spawn_blocking(move || request(addr, "GET", path, &headers, b""))
    };
    let resp = send(headers.clone(), "/nginx/check").await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("x-keygate-app-id"),
        Some(f.caller.app_id.as_str())
    );

    // Replayed: NGINX would see 401; the packed deny renders the real answer.
    let resp = send(headers.clone(), "/nginx/check").await.unwrap();
    assert_eq!(resp.status, 401, "{resp:?}");
    let packed = resp
        .header("x-keygate-deny")
        .expect("packed deny")
        .to_owned();
    let rendered = send(
        vec![
            ("Host".into(), addr.to_string()),
            ("X-Keygate-Deny".into(), packed),
        ],
        "/nginx/render-deny",
    )
    .await
    .unwrap();
    rendered.assert_deny(401, "NonceReplayed");

    // A config that forgets X-Original-URI fails closed with a message saying so.
    let broken: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| k != "X-Original-URI")
        .collect();
    let resp = send(broken, "/nginx/check").await.unwrap();
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(resp.header("x-keygate-error"), Some("Malformed"));
    assert!(
        resp.json()["message"]
            .as_str()
            .unwrap()
            .contains("X-Original-URI")
    );

    // Unknown paths on this listener are 404, never a decision.
    let resp = send(vec![("Host".into(), addr.to_string())], "/nginx/other")
        .await
        .unwrap();
    assert_eq!(resp.status, 404);
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let f = Fixture::start().await;
    // DataSet::create made 6 writes: an app, three APIs, two grants.
    let (_, text) = f.keygate.http_get("/metrics");
    assert_eq!(metric(&text, "keygate_admin_writes_total"), 6);
    assert_eq!(metric(&text, "keygate_check_duration_seconds_count"), 0);

    for scheme in [SchemeKind::Aliyun, SchemeKind::Aliyun, SchemeKind::Tencent] {
        let (target, headers) = f.signed(scheme, "GET", "/v1/m", &[], None);
        assert_eq!(f.envoy("GET", &target, headers, None).await.status, 200);
    }
    let (target, headers) = f.signed(SchemeKind::Aliyun, "GET", "/private/m", &[], None);
    f.envoy("GET", &target, headers, None)
        .await
        .assert_deny(403, "NoGrant");
    for _ in 0..2 {
        let h = vec![("Host".to_owned(), AUTHORITY.to_owned())];
        f.envoy("GET", "/v1/m", h, None)
            .await
            .assert_deny(401, "MissingCredential");
    }

    let (status, text) = f.keygate.http_get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, r#"keygate_decisions_total{result="allow",code=""}"#),
        3
    );
    assert_eq!(
        metric(
            &text,
            r#"keygate_decisions_total{result="deny",code="NoGrant"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            r#"keygate_decisions_total{result="deny",code="MissingCredential"}"#
        ),
        2
    );
    assert_eq!(
        metric(
            &text,
            r#"keygate_decisions_total{result="deny",code="SignatureMismatch"}"#
        ),
        0
    );
    // A deny counts under the scheme of the credential it was about (the NoGrant one
    // is aliyun's); `none` is only for requests without any credential.
    assert_eq!(
        metric(
            &text,
            r#"keygate_decisions_by_scheme_total{scheme="aliyun"}"#
        ),
        3
    );
    assert_eq!(
        metric(&text, r#"keygate_decisions_by_scheme_total{scheme="none"}"#),
        2
    );
    assert_eq!(
        metric(
            &text,
            r#"keygate_decisions_by_scheme_total{scheme="tencent"}"#
        ),
        1
    );
    assert_eq!(metric(&text, "keygate_check_duration_seconds_count"), 6);
    assert_eq!(
        metric(&text, r#"keygate_check_duration_seconds_bucket{le="+Inf"}"#),
        6
    );
    assert_eq!(metric(&text, r#"keygate_index_entries{kind="apis"}"#), 3);
    assert_eq!(metric(&text, r#"keygate_index_entries{kind="grants"}"#), 2);
    // Three requests were allowed and spent a nonce. The NoGrant one proved its
    // signature but spent none: a nonce is claimed only once every other check passed.
    // The unsigned ones never reach the cache.
    assert_eq!(metric(&text, "keygate_replay_cache_entries"), 3);
}
