//! Hostile-input proptests: arbitrary bytes and strings thrown at every scheme's
//! detection and parsers, the canonicalisers, the front doors' translations (Envoy gRPC,
//! Envoy HTTP mode, NGINX) and the whole pipeline (`decide`).
//!
//! Two properties, on top of "never panics":
//! * no request passes without a valid signature: a request signed with a wrong secret,
//!   then mutated arbitrarily (headers set, duplicated or dropped, path, query, method,
//!   host or body replaced), is never allowed, except as an anonymous request to an API
//!   that allows anonymous callers and only when it carries no credential at all;
//! * a deny's response headers never carry CR, LF or NUL, whatever the input echoed
//!   into them (a proxy would reject such a header, or worse, split on it), and a deny
//!   stays small whatever the input's size (`canonical::MAX_ECHO`).
//!
//! A correctly signed control request is allowed in the same world, so the denies are
//! not vacuous. `fuzz/` has cargo-fuzz targets over the same entry points.

#![allow(clippy::indexing_slicing)]

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use proptest::prelude::*;

use super::*;
use crate::decide::{DecideConfig, Decision, decide};
use crate::index::Snapshot;
use crate::model::{Api, App, GrantTarget, Secret};
use crate::replay::ReplayGuard;
use crate::request::Headers;
use crate::server::door;
use crate::server::door::grpc::view_from_envoy;
use crate::sign::{SignOptions, SignRequest, sign};
use crate::testkit::{self, received};

const NOW: i64 = 1_700_000_000_000;
const APP: &str = "app1";
const KEY: &str = "K1";
const SECRET: &str = "hostile-right-secret-0123456789";
const WRONG: &str = "hostile-wrong-secret-0123456789";
const CODE: &str = "hostile-app-code-0123456789abcdef";
const WRONG_CODE: &str = "hostile-app-code-0123456789abcdeX";
const HOST: &str = "svc.us-east-1.example.com";

/// app1 (key K1, AppCode CODE) granted `api1` (every scheme, `/v1/...`) in any stage;
/// `anon` (`/anon/...`) allows anonymous callers.
fn world() -> Snapshot {
    let mut s = Snapshot::default();
    s.put_app(App {
        extend_info: String::new(),
        app_code: Some(Secret::new(CODE)),
        ..testkit::app(APP)
    });
    s.put_key(testkit::key(KEY, APP, SECRET));
    s.put_api(Api {
        id: "api1".into(),
        name: "api1".into(),
        owner: "acme".into(),
        path: "/v1/{*rest}".into(),
        auth_schemes: SchemeKind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        ..Default::default()
    });
    s.put_api(Api {
        id: "anon".into(),
        name: "anon".into(),
        owner: "acme".into(),
        path: "/anon/{*rest}".into(),
        anonymous_allowed: true,
        ..Default::default()
    });
    s.put_grant(testkit::grant(
        "g1",
        APP,
        GrantTarget::Api("api1".into()),
        &[],
        None,
    ));
    s
}

/// Runs the pipeline (fresh replay cache) and checks the invariants every decision
/// must keep, whatever came in. Returns the decision.
fn judge(v: &RequestView, snap: &Snapshot) -> Decision {
    let d = decide(
        v,
        snap,
        &ReplayGuard::new(64, 64),
        NOW,
        &DecideConfig::default(),
    );
    match &d {
        Decision::Allow(a) => {
            // The only allow without a verified signature is an anonymous one, for a
            // request that carries no credential of any scheme.
            if a.scheme == "anonymous" {
                assert_eq!(
                    detect(v).err().map(|d| d.code),
                    Some(DenyCode::MissingCredential),
                    "anonymous allow of a request with a credential: {v:?}"
                );
                assert_eq!(a.api_id, "anon");
            }
        }
        Decision::Deny(deny) => {
            let size = deny.message.len()
                + deny
                    .headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>();
            assert!(
                size <= 8 * canonical::MAX_ECHO,
                "a {size}-byte deny ({:?}): {:.300}",
                deny.code,
                deny.message
            );
            for (n, val) in door::deny_headers(deny, "rid") {
                assert!(
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
                    "deny header name {n:?} is not a token ({:?})",
                    deny.code
                );
                assert!(
                    !val.contains(['\r', '\n', '\0']),
                    "deny header {n} carries CR/LF/NUL: {val:?} ({:?})",
                    deny.code
                );
            }
        }
    }
    d
}

fn is_signed_allow(d: &Decision) -> bool {
    matches!(d, Decision::Allow(a) if a.scheme != "anonymous")
}

/// A request to `api1` signed with `secret` under `scheme`.
fn signed_view(
    scheme: SchemeKind,
    secret: &str,
    code: &str,
    path: &str,
    query: Option<&str>,
    body: Option<&[u8]>,
    nonce: &str,
) -> RequestView {
    let url = match query {
        Some(q) => format!("https://{HOST}/v1/{path}?{q}"),
        None => format!("https://{HOST}/v1/{path}"),
    };
    let req = SignRequest {
        method: if body.is_some() { "POST" } else { "GET" }.into(),
        url,
        headers: Vec::new(),
        body: body.map(<[u8]>::to_vec),
    };
    let (key, secret) = match scheme {
        SchemeKind::AppCode => ("", code),
        SchemeKind::Bkapi => (APP, secret),
        _ => (KEY, secret),
    };
    let opts = SignOptions::new(scheme, key, secret.as_bytes(), NOW, nonce);
    let signed = sign(&req, &opts).unwrap();
    received(&req, &signed)
}

// === strategies ===

/// Text of every kind: arbitrary bytes made UTF-8 (replacement characters, control
/// bytes), any Unicode, printable ASCII, the characters parsers split on, and long runs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ".{0,120}",
        "[ -~]{0,200}",
        "[a-zA-Z0-9=&%+;:,\"()*?@/=\\\\ \t\r\n-]{0,120}",
        ("[ -~]{1,4}", 500usize..4000).prop_map(|(s, n)| s.repeat(n)),
        Just(String::new()),
        Just("-1".to_owned()),
        Just("1e30".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("-9223372036854775808".to_owned()),
    ]
}

const NAMES: [&str; 30] = [
    "authorization",
    "x-ca-key",
    "x-ca-signature",
    "x-ca-signature-headers",
    "x-ca-signature-method",
    "x-ca-timestamp",
    "x-ca-nonce",
    "x-ca-stage",
    "x-bkapi-authorization",
    "x-date",
    "date",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "signature-input",
    "signature",
    "content-digest",
    "content-md5",
    "content-type",
    "content-length",
    "transfer-encoding",
    "x-envoy-auth-partial-body",
    "x-apigw-nonce",
    "source",
    "host",
    "accept",
    "x-request-id",
    ":path",
    ":authority",
    ":method",
];

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&NAMES[..]).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_-]{1,24}",
        1 => ".{0,12}",
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(String, String),
    Add(String, String),
    Duplicate(usize),
    Drop(usize),
    Path(String),
    Query(Option<String>),
    Method(String),
    Host(String),
    Body(Option<Vec<u8>>),
    Partial(bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (header_name(), text()).prop_map(|(n, v)| Mutation::Set(n, v)),
        2 => (header_name(), text()).prop_map(|(n, v)| Mutation::Add(n, v)),
        2 => any::<usize>().prop_map(Mutation::Duplicate),
        2 => any::<usize>().prop_map(Mutation::Drop),
        1 => text().prop_map(Mutation::Path),
        1 => proptest::option::of(text()).prop_map(Mutation::Query),
        1 => text().prop_map(Mutation::Method),
        1 => text().prop_map(Mutation::Host),
        1 => proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)).prop_map(Mutation::Body),
        1 => any::<bool>().prop_map(Mutation::Partial),
    ]
}

fn mutate(v: &mut RequestView, m: &Mutation) {
    let pairs: Vec<(String, String)> = v
        .headers
        .iter()
        .map(|(n, x)| (n.to_owned(), x.to_owned()))
        .collect();
    let rebuild = |pairs: Vec<(String, String)>| pairs.into_iter().collect::<Headers>();
    match m {
        Mutation::Set(name, value) => {
            let lower = name.to_ascii_lowercase();
            let mut out = pairs;
            match out.iter_mut().find(|(n, _)| *n == lower) {
                Some(slot) => slot.1 = value.clone(),
                None => out.push((lower, value.clone())),
            }
            v.headers = rebuild(out);
        }
        Mutation::Add(name, value) => v.headers.push(name, value.clone()),
        Mutation::Duplicate(i) if !pairs.is_empty() => {
            let (n, x) = pairs[i % pairs.len()].clone();
            v.headers.push(&n, x);
        }
        Mutation::Drop(i) if !pairs.is_empty() => {
            let mut out = pairs;
            out.remove(i % out.len());
            v.headers = rebuild(out);
        }
        Mutation::Duplicate(_) | Mutation::Drop(_) => {}
        Mutation::Path(p) => v.path = p.clone(),
        Mutation::Query(q) => v.query = q.clone(),
        Mutation::Method(x) => v.method = x.clone(),
        Mutation::Host(h) => v.host = h.clone(),
        Mutation::Body(b) => v.body = b.clone(),
        Mutation::Partial(p) => v.body_partial = *p,
    }
}

fn view() -> impl Strategy<Value = RequestView> {
    (
        (text(), text(), text(), proptest::option::of(text())),
        proptest::collection::vec((header_name(), text()), 0..12),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        any::<bool>(),
        proptest::option::of(prop_oneof![
            text(),
            Just("api1".to_owned()),
            Just("anon".to_owned())
        ]),
        proptest::option::of(text()),
    )
        .prop_map(
            |((method, host, path, query), headers, body, partial, api, stage)| RequestView {
                method,
                scheme: "https".into(),
                host,
                path,
                query,
                headers: headers.into_iter().collect(),
                body,
                body_partial: partial,
                stage_hint: stage,
                api_hint: api,
                peer: None,
            },
        )
}

fn envoy_request() -> impl Strategy<Value = CheckRequest> {
    (
        (text(), text(), text()),
        proptest::collection::vec((header_name(), text()), 0..10),
        proptest::collection::vec(
            (
                header_name(),
                proptest::collection::vec(any::<u8>(), 0..120),
            ),
            0..10,
        ),
        any::<bool>(),
        (text(), proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                prop_oneof![Just("stage".to_owned()), Just("api".to_owned()), ".{0,6}"],
                text(),
            ),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(
            |((method, host, path), map, raw, use_raw, (body, raw_body), ext, bare)| {
                if bare {
                    return CheckRequest::default();
                }
                let http = HttpRequest {
                    method,
                    host,
                    path,
                    headers: if use_raw {
                        HashMap::new()
                    } else {
                        map.into_iter().collect()
                    },
                    header_map: use_raw.then(|| HeaderMap {
                        headers: raw
                            .into_iter()
                            .map(|(key, raw_value)| HeaderValue {
                                key,
                                value: String::new(),
                                raw_value,
                            })
                            .collect(),
                    }),
                    body,
                    raw_body,
                    ..Default::default()
                };
                CheckRequest {
                    attributes: Some(AttributeContext {
                        request: Some(Request {
                            http: Some(http),
                            ..Default::default()
                        }),
                        context_extensions: ext.into_iter().collect(),
                        ..Default::default()
                    }),
                }
            },
        )
}

/// Every method of a parsed credential, with a secret that is not the key's.
fn exercise(v: &RequestView) {
    let Ok(c) = detect(v) else { return };
    let cfg = SchemeConfig::default();
    for api in [
        ApiSchemeOptions::default(),
        ApiSchemeOptions {
            tencent_strip_env_prefix: true,
            sigv4_region: Some("us-east-1".into()),
            sigv4_service: Some("svc".into()),
            require_timestamp_and_nonce: true,
        },
    ] {
        assert!(
            c.verify(v, &cfg, &api, WRONG.as_bytes()).is_err(),
            "{:?} verified with a secret nobody signed with: {v:?}",
            c.kind()
        );
        let _ = c.check_fresh(&cfg, &api, NOW);
        let _ = c.check_fresh(&cfg, &api, i64::MIN);
        let _ = c.check_fresh(&cfg, &api, i64::MAX);
    }
    let _ = c.id();
    let _ = c.nonce();
    let _ = c.nonce_ttl_ms(&cfg);
    let _ = c.check_body(v);
    let _ = c.headers_to_remove();
    let _ = c.query_params_to_remove();
    let _ = c.sends_secret();
    let _ = format!("{c:?}");
    let d = c.decorate_deny(Deny::new(DenyCode::SignatureMismatch, "x"));
    for (_, val) in &d.headers {
        assert!(!val.contains(['\r', '\n', '\0']), "{val:?}");
    }
}

/// Cases per property: 256 in CI; `PROPTEST_CASES` if set; 10 000 with `KEYGATE_SOAK=1`.
fn cases() -> u32 {
    if let Some(n) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if std::env::var("KEYGATE_SOAK").is_ok_and(|v| v == "1") {
        10_000
    } else {
        256
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The scheme's own credential headers filled with anything, alone, doubled and
    /// next to every other scheme's: detection and every parser stay total, and no
    /// credential verifies with a secret nobody signed with.
    #[test]
    fn every_scheme_parser_takes_any_bytes(
        which in 0usize..8,
        a in text(),
        b in text(),
        c in text(),
        twice in any::<bool>(),
        body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        path in text(),
        query in proptest::option::of(text()),
    ) {
        let mut v = RequestView { method: "POST".into(), host: HOST.into(), path, query, body, ..RequestView::default() };
        let set: Vec<(&str, String)> = match which {
            0 => vec![("x-ca-key", a), ("x-ca-signature", b.clone()), ("x-ca-signature-headers", c.clone()), ("x-ca-timestamp", c), ("x-ca-nonce", b)],
            1 => vec![("authorization", format!("APPCODE {a}")), ("x-ca-key", b)],
            2 => vec![("authorization", format!("hmac {a}")), ("x-date", b), ("date", c)],
            3 => vec![("x-bkapi-authorization", a), ("authorization", b)],
            4 => vec![("authorization", format!("AWS4-HMAC-SHA256 {a}")), ("x-amz-date", b), ("x-amz-content-sha256", c)],
            5 => vec![("signature-input", a), ("signature", b), ("content-digest", c)],
            6 => { v.query = Some(format!("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={a}&X-Amz-Date={b}&X-Amz-Expires={c}&X-Amz-SignedHeaders=host&X-Amz-Signature={b}")); vec![] }
            _ => { v.query = Some(format!("bk_app_code={a}&bk_signature={b}&bk_nonce={c}&bk_timestamp={c}&AppCode={a}")); vec![] }
        };
        for (n, val) in &set {
            v.headers.push(n, val.clone());
            if twice {
                v.headers.push(n, val.clone());
            }
        }
        exercise(&v);
        judge(&v, &world());
    }

    /// Canonicalisers and small parsers on arbitrary (and large) input.
    #[test]
    fn canonicalisers_take_any_bytes(s in text(), bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = canonical::percent_decode(&s, true);
        let _ = canonical::percent_decode(&s, false);
        let _ = canonical::decode_lossy(&s, true);
        let _ = canonical::first_wins_params(&s);
        let mut p = canonical::first_wins_params(&s);
        canonical::merge_params(&mut p, canonical::first_wins_params(&s));
        let mut out = String::new();
        canonical::push_path_and_params(&mut out, &s, &mut p);
        let _ = canonical::raw_pairs(&s).count();
        let _ = canonical::query_param(Some(&s), "a");
        let _ = canonical::query_param_count(Some(&s), "X-Amz-Algorithm");
        let _ = canonical::auth_params(&s);
        let _ = canonical::parse_amz_date(&s);
        let _ = canonical::parse_http_date_ms(&s);
        let _ = canonical::b64_decode(&s);
        let mut buf = [0u8; 64];
        let _ = canonical::b64_decode_tag(&s, &mut buf);
        let _ = canonical::form_encode(&bytes);
        let _ = canonical::aws_encode(&bytes, true);
        let _ = canonical::aws_encode(s.as_bytes(), false);
        let _ = canonical::upper_method(&s);
        let _ = canonical::echo_hash_form(&s);
        let escaped = canonical::echo_escaped(&s);
        prop_assert!(!escaped.contains(['\r', '\n']), "{escaped:?}");
        let _ = aliyun::signed_header_names(&s);
        let _ = aliyun::parse_timestamp(&s);
        let _ = sigv4::canonical_query(Some(&s), true, true);
        let _ = sigv4::canonical_query(Some(&s), false, false);
        for m in [sigv4::UriMode::DoubleEncoded, sigv4::UriMode::SingleEncoded, sigv4::UriMode::Raw] {
            let _ = sigv4::canonical_uri(&s, m);
        }
        let _ = rfc9421::sf::parse_dictionary(&s);
        let _ = tencent::strip_env_prefix(&s);
        let _ = s.parse::<SchemeKind>();
    }

    /// Signed with the wrong secret (or AppCode), then mutated in any way: never a
    /// signed allow; an anonymous allow only without any credential. The same request
    /// signed with the right secret is allowed (the world is valid).
    #[test]
    fn no_allow_without_a_valid_signature(
        scheme_ix in 0usize..6,
        // Canonical paths only: the control request must be routable (crate::path).
        path in "[a-zA-Z0-9_~-]{1,12}(/[a-zA-Z0-9_~-]{1,8}){0,3}",
        query in proptest::option::of("[a-z]{1,3}=[a-zA-Z0-9%+.-]{0,6}(&[a-z]{1,3}=[a-z0-9]{0,4}){0,3}"),
        body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        nonce in "[a-f0-9]{8}-[a-f0-9]{4}-4[a-f0-9]{3}-[89ab][a-f0-9]{3}-[a-f0-9]{12}",
        mutations in proptest::collection::vec(mutation(), 0..5),
    ) {
        let scheme = SchemeKind::ALL[scheme_ix];
        // A repeated parameter is Malformed under aliyun and tencent: not a control.
        prop_assume!(canonical::param_ambiguity(query.as_deref(), None).is_none());
        let snap = world();
        let good = signed_view(scheme, SECRET, CODE, &path, query.as_deref(), body.as_deref(), &nonce);
        let control = judge(&good, &snap);
        prop_assert!(is_signed_allow(&control), "control {scheme} not allowed: {control:?}\n{good:?}");

        let mut bad = signed_view(scheme, WRONG, WRONG_CODE, &path, query.as_deref(), body.as_deref(), &nonce);
        prop_assert!(!is_signed_allow(&judge(&bad, &snap)));
        for m in &mutations {
            mutate(&mut bad, m);
            let d = judge(&bad, &snap);
            prop_assert!(!is_signed_allow(&d), "{scheme} with a wrong secret allowed after {m:?}: {d:?}\n{bad:?}");
        }
    }

    /// Any view at all through the whole pipeline.
    #[test]
    fn decide_takes_any_view(v in view()) {
        let d = judge(&v, &world());
        prop_assert!(!is_signed_allow(&d), "{d:?}\n{v:?}");
    }

    /// Any NGINX auth subrequest (`X-Original-*` and the client's headers, any bytes
    /// the HTTP layer lets through) and any Envoy HTTP-mode request through their
    /// translations and the pipeline.
    #[test]
    fn http_translations_take_any_request(
        original in proptest::collection::vec((prop_oneof![
            Just("x-original-method".to_owned()), Just("x-original-uri".to_owned()),
            Just("x-original-host".to_owned()), Just("x-original-scheme".to_owned()),
            Just("x-original-content-length".to_owned()), Just("x-original-transfer-encoding".to_owned()),
            Just("x-forwarded-uri".to_owned()), Just("x-forwarded-method".to_owned()),
            Just("x-forwarded-for".to_owned()), Just("x-keygate-deny".to_owned()),
        ], proptest::collection::vec(any::<u8>(), 0..80)), 0..8),
        client in proptest::collection::vec((header_name(), proptest::collection::vec(any::<u8>(), 0..80)), 0..10),
        method in "[A-Z]{1,8}",
        target in "/[ -~]{0,60}",
        body in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        use axum::http::{HeaderMap, HeaderName, HeaderValue};
        let mut map = HeaderMap::new();
        for (n, v) in original.iter().chain(client.iter()) {
            // What the HTTP layer cannot carry never reaches a door.
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_bytes(v)) {
                map.append(n, v);
            }
        }
        if let Ok(v) = crate::server::door::nginx::view_from_nginx(&map, true) {
            let d = judge(&v, &world());
            prop_assert!(!is_signed_allow(&d), "{d:?}\n{v:?}");
        }
        let mut b = axum::http::Request::builder().method(method.as_str()).uri(format!("/envoy{target}"));
        for (n, v) in map.iter() {
            b = b.header(n, v);
        }
        if let Ok(req) = b.body(axum::body::Body::from(body.clone())) {
            let mut v = crate::server::door::envoy_http::view_from_envoy_http(&req);
            v.body = Some(body);
            let d = judge(&v, &world());
            prop_assert!(!is_signed_allow(&d), "{d:?}\n{v:?}");
        }
    }

    /// Any Envoy CheckRequest (header map or raw header_map with arbitrary bytes,
    /// bodies, context extensions, or nothing at all) through the translation and the
    /// pipeline.
    #[test]
    fn envoy_translation_takes_any_check_request(req in envoy_request()) {
        let v = view_from_envoy(&req);
        let d = judge(&v, &world());
        prop_assert!(!is_signed_allow(&d), "{d:?}\n{req:?}");
    }
}

/// Valid signatures with absurd clocks: the signer at the extremes of time, the verifier
/// at now. Never allowed, always a code, never a panic (time arithmetic saturates).
#[test]
fn absurd_signing_times_are_denied() {
    let snap = world();
    for scheme in SchemeKind::ALL {
        if scheme == SchemeKind::AppCode {
            continue; // carries no time
        }
        for t in [
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            NOW - 86_400_000 * 365,
            NOW + 86_400_000 * 365,
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            253_402_300_800_000,
            i64::MAX / 2,
            i64::MAX,
        ] {
            let req = SignRequest {
                method: "GET".into(),
                url: format!("https://{HOST}/v1/x"),
                headers: Vec::new(),
                body: None,
            };
            let key = if scheme == SchemeKind::Bkapi {
                APP
            } else {
                KEY
            };
            let opts = SignOptions::new(scheme, key, SECRET.as_bytes(), t, "n-0123456789");
            // The signer may refuse an unrepresentable time; then there is nothing to send.
            let Ok(signed) = sign(&req, &opts) else {
                continue;
            };
            let v = received(&req, &signed);
            let d = judge(&v, &snap);
            if scheme == SchemeKind::Bkapi && !signed.url.contains("bk_timestamp") {
                // The header form carries the secret and no time: it is allowed.
                assert!(is_signed_allow(&d), "{d:?}");
                continue;
            }
            assert!(
                !d.is_allow(),
                "{scheme} signed at {t} allowed at {NOW}: {v:?}"
            );
        }
    }
}

/// A second copy of a header the signature covers, with another value, is refused: the
/// verifier reads one copy, the upstream may read the other. (SigV4 and RFC 9421 combine
/// the copies into the signed value, so there the signature no longer matches.)
#[test]
fn a_repeated_signed_header_is_refused() {
    let snap = world();
    for scheme in SchemeKind::ALL {
        let req = SignRequest {
            method: "POST".into(),
            url: format!("https://{HOST}/v1/x"),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Ca-Stage".into(), "RELEASE".into()),
            ],
            body: Some(b"{}".to_vec()),
        };
        let (key, secret) = match scheme {
            SchemeKind::AppCode => ("", CODE),
            SchemeKind::Bkapi => (APP, SECRET),
            _ => (KEY, SECRET),
        };
        let opts = SignOptions::new(scheme, key, secret.as_bytes(), NOW, "n-0123456789");
        let signed = sign(&req, &opts).unwrap();
        let good = received(&req, &signed);
        assert!(is_signed_allow(&judge(&good, &snap)), "{scheme} control");
        let names: Vec<String> = good.headers.iter().map(|(n, _)| n.to_owned()).collect();
        for name in names {
            let mut v = good.clone();
            v.headers.push(&name, "text/x-smuggled");
            let d = judge(&v, &snap);
            let covered = match scheme {
                // Bearer schemes sign nothing but carry the secret in one header.
                SchemeKind::AppCode | SchemeKind::Bkapi => {
                    name == "authorization" || name == "x-bkapi-authorization"
                }
                SchemeKind::Aliyun => true,
                // X-Ca-Stage is an Alibaba header; the others need not sign it.
                _ => name != "x-ca-stage",
            };
            if covered {
                assert!(!d.is_allow(), "{scheme}: second {name} allowed: {v:?}");
            }
            if covered && matches!(scheme, SchemeKind::Aliyun | SchemeKind::Tencent) {
                assert_eq!(
                    d.deny_code(),
                    Some(DenyCode::Malformed),
                    "{scheme}: second {name}"
                );
            }
        }
    }
}

/// A deny echoes request-derived text (strings-to-sign, canonical requests) only up to a
/// bound, so an attacker cannot grow a deny past what a proxy reads: a deny a proxy
/// cannot parse is an authorization error there, not a deny.
#[test]
fn deny_echoes_are_bounded() {
    let snap = world();
    let long = "%25".repeat(20_000);
    for scheme in SchemeKind::ALL {
        let mut v = signed_view(
            scheme,
            WRONG,
            WRONG_CODE,
            &long,
            Some(&long),
            None,
            "n-0123456789",
        );
        v.headers.push("x-ca-stage", "RELEASE");
        let d = judge(&v, &snap);
        let Decision::Deny(deny) = d else {
            panic!("{scheme} allowed")
        };
        let total = deny.message.len()
            + deny
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        assert!(
            total <= 4 * canonical::MAX_ECHO + 1024,
            "{scheme} ({:?}): a 120 KB request gave a {total}-byte deny",
            deny.code
        );
    }
    let cut = canonical::echo_escaped(&"a\n".repeat(10_000));
    assert!(cut.len() <= canonical::MAX_ECHO + 32 && cut.ends_with("(truncated)"));
    assert_eq!(canonical::echo_hash_form("a\nb"), "a#b");
}
