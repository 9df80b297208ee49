//! Hostile input at every front door of the real binary (the Envoy gRPC Check, and over
//! HTTP the Envoy HTTP mode `/envoy/...` and NGINX `/nginx/check`, `/nginx/render-deny`):
//! invalid UTF-8,
//! thousands of headers, huge values, duplicated credential headers, absurd
//! timestamps, garbage signatures, overlong paths, huge and deep queries, huge bodies,
//! empty requests. Every one must come back as a deny with a code (gRPC status not OK,
//! a denied_response with `x-keygate-error`, no CR/LF/NUL in any response header), never
//! an allow; a request larger than the gRPC message limit may instead fail the RPC
//! itself (`OUT_OF_RANGE`/`RESOURCE_EXHAUSTED`), which Envoy with
//! `failure_mode_allow: false` turns into a 403. Afterwards the process is still up,
//! healthy, and a correctly signed request is still allowed.
//!
//! On the HTTP doors a deny is never 2xx, never 5xx on the Envoy door (a 5xx is an
//! authorization-server error there) and only 401/403 on the NGINX door; input the
//! HTTP layer refuses before keygate sees it (too many or too large headers, broken
//! framing) may get hyper's own 4xx or a closed connection, both of which the proxy
//! treats as a refusal. The renderer never answers 2xx/3xx, whatever it is handed.
//!
//! Where a hostile request could otherwise pass (the hostile part is not signed, e.g. a
//! huge path under an API's wildcard), it is either sent with a valid signature to a
//! path no API matches (so the whole verification runs on the hostile input and the
//! deny is `ApiNotFound`) or with a broken signature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{CheckClient, Keygate, Verdict};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use keygate::pb::admin as pb;
use keygate::scheme::SchemeKind;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const APP_ID: &str = "hostile-app";
const HOST: &str = "svc.us-east-1.example.com";
const MIB: usize = 1024 * 1024;
/// Largest deny (encoded CheckResponse, or HTTP response head) any input may cause.
const MAX_DENY: usize = 32 * 1024;

struct Fixture {
    kg: Keygate,
    check: CheckClient,
    app_key: String,
    secret: String,
    code: String,
    tried: usize,
    /// Requests the gRPC layer refused for their size (no CheckResponse at all).
    refused_by_transport: usize,
    failures: Vec<String>,
}

/// A request signed by `keygate::sign`, kept as parts so cases can tamper with them.
#[derive(Clone)]
struct Parts {
    method: String,
    authority: String,
    target: String,
    /// In order; the signer's headers last.
    headers: Vec<(String, Vec<u8>)>,
    /// Lower-case names of the headers the signer added.
    added: Vec<String>,
    body: Option<Vec<u8>>,
}

impl Parts {
    fn raw(&self) -> CheckRequest {
        common::envoy_request_raw(
            &self.method,
            &self.authority,
            &self.target,
            &self.headers,
            self.body.as_deref(),
        )
    }

    fn set(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        let value = value.into();
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name.to_owned(), value)),
        }
        self
    }

    fn push(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn get(&self, name: &str) -> Vec<u8> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

impl Fixture {
    async fn new() -> Self {
        // Limits far above the defaults, so the whole pipeline (parsers, canonicalisers,
        // verification) runs over the huge inputs instead of stopping at the size check;
        // tests/overload.rs proves that the limits themselves deny with a code.
        let kg = Keygate::start_with_args(&[
            "--max-request-headers",
            "20000",
            "--max-request-header-bytes",
            "4194304",
            "--max-request-body-bytes",
            "4194304",
            "--check-max-message-bytes",
            "12582912",
        ]);
        let mut c = kg.admin().await;
        let r = c
            .create_app(pb::CreateAppRequest {
                app: Some(pb::App {
                    id: APP_ID.into(),
                    name: "hostile".into(),
                    owner: "acme".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let app = r.app.unwrap();
        let key = r.key_pair.unwrap();
        let api = c
            .create_api(pb::CreateApiRequest {
                api: Some(pb::Api {
                    name: "hostile-api".into(),
                    owner: "acme".into(),
                    path: "/v1/{*rest}".into(),
                    auth_schemes: (1..=6).collect(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        c.create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: app.id.clone(),
                target: Some(pb::grant::Target::ApiId(api.id)),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
        let check = common::check_client(kg.check_addr()).await;
        Self {
            kg,
            check,
            app_key: key.app_key,
            secret: key.app_secret,
            code: app.app_code,
            tried: 0,
            refused_by_transport: 0,
            failures: Vec::new(),
        }
    }

    fn sign_at(
        &self,
        scheme: SchemeKind,
        algorithm: Option<&str>,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        now_ms: i64,
    ) -> Option<Parts> {
        let (key, secret) = match scheme {
            SchemeKind::AppCode => ("", self.code.as_str()),
            SchemeKind::Bkapi => (APP_ID, self.secret.as_str()),
            _ => (self.app_key.as_str(), self.secret.as_str()),
        };
        // A JSON body: every body-covering scheme then covers it (a form body is
        // covered by its fields or not at all, depending on the scheme).
        let headers: Vec<(String, String)> = body
            .map(|_| ("Content-Type".to_owned(), "application/json".to_owned()))
            .into_iter()
            .collect();
        let req = keygate::sign::SignRequest {
            method: method.into(),
            url: url.into(),
            headers: headers.clone(),
            body: body.map(<[u8]>::to_vec),
        };
        let nonce = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            rand32(),
            now_ms & 0xffff_ffff_ffff
        );
        let mut opts =
            keygate::sign::SignOptions::new(scheme, key, secret.as_bytes(), now_ms, &nonce);
        opts.algorithm = algorithm;
        let signed = keygate::sign::sign(&req, &opts).ok()?;
        let (authority, target) = common::split_url(&signed.url);
        Some(Parts {
            method: method.into(),
            authority: authority.into(),
            target: target.into(),
            added: signed
                .headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .collect(),
            headers: headers
                .into_iter()
                .chain(signed.headers)
                .map(|(n, v)| (n, v.into_bytes()))
                .collect(),
            body: body.map(<[u8]>::to_vec),
        })
    }

    /// A valid request now; `path` decides whether an API matches (`/v1/...`) or not.
    fn sign(&self, scheme: SchemeKind, path_and_query: &str, body: Option<&[u8]>) -> Parts {
        let method = if body.is_some() { "POST" } else { "GET" };
        self.sign_at(
            scheme,
            None,
            method,
            &format!("http://{HOST}{path_and_query}"),
            body,
            common::now_ms(),
        )
        .unwrap_or_else(|| panic!("cannot sign {scheme} {path_and_query}"))
    }

    async fn call(&mut self, req: CheckRequest) -> Result<Verdict, tonic::Status> {
        let resp = self.check.check(req).await?.into_inner();
        // No CR, LF or NUL may reach a response header, whatever the request echoed, and
        // a deny stays small whatever the request's size (a deny a proxy cannot read is
        // an authorization error there, not a deny).
        if let Some(HttpResponse::DeniedResponse(d)) = &resp.http_response {
            use prost::Message as _;
            let size = resp.encoded_len();
            if size > MAX_DENY {
                self.failures.push(format!(
                    "#{}: a {size}-byte deny ({:?})",
                    self.tried,
                    resp.status
                        .as_ref()
                        .map(|s| s.message.chars().take(120).collect::<String>())
                ));
            }
            for h in d.headers.iter().filter_map(|h| h.header.as_ref()) {
                assert!(
                    !h.value.contains(['\r', '\n', '\0'])
                        && !h.key.contains(['\r', '\n', '\0', ':']),
                    "unsafe deny header {:?}: {:?}",
                    h.key,
                    h.value
                );
            }
        }
        Ok(common::verdict(&resp))
    }

    /// `req` must be denied (with `want`, when given).
    async fn deny(&mut self, name: &str, req: CheckRequest, want: Option<&str>) {
        self.tried += 1;
        match self.call(req).await {
            Ok(Verdict::Allow) => self.failures.push(format!("{name}: ALLOWED")),
            Ok(v @ Verdict::Deny { .. }) => {
                if let Some(w) = want
                    && v.code() != Some(w)
                {
                    self.failures
                        .push(format!("{name}: denied with {:?}, expected {w}", v.code()));
                }
            }
            Err(s) => self
                .failures
                .push(format!("{name}: RPC failed instead of a deny: {s:?}")),
        }
    }

    /// `req` is over the transport's limits: a deny, or the RPC itself refused with a
    /// size error (never an allow, never a dropped server).
    async fn refuse(&mut self, name: &str, req: CheckRequest) {
        self.tried += 1;
        match self.call(req).await {
            Ok(Verdict::Allow) => self.failures.push(format!("{name}: ALLOWED")),
            Ok(Verdict::Deny { .. }) => {}
            Err(s) if matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted) => {
                self.refused_by_transport += 1;
                // The channel survives a refused message; a fresh one is cheap anyway.
                self.check = common::check_client(self.kg.check_addr()).await;
            }
            Err(s) => self
                .failures
                .push(format!("{name}: unexpected RPC failure: {s:?}")),
        }
    }

    async fn allow(&mut self, name: &str, req: CheckRequest) {
        match self.call(req).await {
            Ok(Verdict::Allow) => {}
            other => self
                .failures
                .push(format!("control {name}: expected an allow, got {other:?}")),
        }
    }
}

fn rand32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0x2545_f491);
    N.fetch_add(0x9e37_79b9, Ordering::Relaxed)
}

/// Names of the headers that carry each scheme's credential (what `detect` watches).
fn credential_headers(scheme: SchemeKind) -> &'static [&'static str] {
    match scheme {
        SchemeKind::Aliyun => &[
            "x-ca-key",
            "x-ca-signature",
            "x-ca-signature-headers",
            "x-ca-signature-method",
            "x-ca-timestamp",
            "x-ca-nonce",
        ],
        SchemeKind::AppCode => &["authorization"],
        SchemeKind::Tencent => &["authorization", "x-date"],
        SchemeKind::Bkapi => &["x-bkapi-authorization"],
        SchemeKind::SigV4 => &["authorization", "x-amz-date", "x-amz-content-sha256"],
        SchemeKind::Rfc9421 => &["signature-input", "signature"],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_check_requests_are_denied_and_the_server_survives() {
    let mut fx = Fixture::new().await;

    // Controls: every scheme's valid request is allowed, so the denies below mean
    // something.
    for scheme in SchemeKind::ALL {
        let p = fx.sign(scheme, "/v1/items/1?a=1", None);
        fx.allow(scheme.as_str(), p.raw()).await;
        let p = fx.sign(scheme, "/v1/items", Some(b"{\"a\":1}"));
        fx.allow(&format!("{scheme} with body"), p.raw()).await;
    }
    assert!(fx.failures.is_empty(), "{:#?}", fx.failures);

    // --- empty everything ---
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
    fx.deny(
        "empty CheckRequest",
        CheckRequest::default(),
        // No path at all: nothing to route on.
        Some("Malformed"),
    )
    .await;
    fx.deny(
        "empty attributes",
        CheckRequest {
            attributes: Some(AttributeContext::default()),
        },
        None,
    )
    .await;
    fx.deny(
        "empty http",
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(Default::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        },
        None,
    )
    .await;
    fx.deny(
        "empty method/host/path",
        common::envoy_request("", "", "", &[], None),
        None,
    )
    .await;
    fx.deny(
        "empty header map",
        common::envoy_request_raw("", "", "", &[], Some(b"")),
        None,
    )
    .await;

    for scheme in SchemeKind::ALL {
        let s = scheme.as_str();
        let base = fx.sign(scheme, "/v1/items/1?a=1", None);

        // --- invalid UTF-8 (raw header_map bytes) in every header the signer added ---
        for name in base.added.clone() {
            for (label, bad) in [
                ("0xff appended", [base.get(&name), vec![0xff]].concat()),
                (
                    "0xc0 0x80 prefix",
                    [vec![0xc0, 0x80], base.get(&name)].concat(),
                ),
                ("lone continuation", vec![0x80, 0x80, 0x80]),
                (
                    "NUL inside",
                    [base.get(&name), vec![0], base.get(&name)].concat(),
                ),
                (
                    "CRLF inside",
                    [base.get(&name), b"\r\nx-ca-key: x".to_vec()].concat(),
                ),
                ("all 0xfe", vec![0xfe; 300]),
            ] {
                let p = base.clone().set(&name, bad);
                fx.deny(&format!("{s}: {name} {label}"), p.raw(), None)
                    .await;
            }
        }

        // --- duplicate credential headers: same value, other value, before and after ---
        for name in credential_headers(scheme) {
            let v = base.get(name);
            if v.is_empty() {
                continue;
            }
            let garbage = b"garbage, sig1=:AAAA:, hmac id=\"x\"".to_vec();
            let mut cases = vec![
                ("garbage after", base.clone().push(name, garbage.clone())),
                ("garbage before", {
                    let mut p = base.clone();
                    p.headers.insert(0, ((*name).to_owned(), garbage.clone()));
                    p
                }),
            ];
            // RFC 9421's Signature and Signature-Input are structured dictionaries that
            // combine across lines (RFC 9110 §5.3); repeating one verbatim is the same
            // dictionary, not a second credential. Every other scheme's header is one
            // value and a second copy is ambiguous.
            if scheme != SchemeKind::Rfc9421 {
                cases.push(("same value twice", base.clone().push(name, v.clone())));
                cases.push((
                    "upper-case copy",
                    base.clone().push(&name.to_ascii_uppercase(), v.clone()),
                ));
            }
            for (label, p) in cases {
                // "garbage before" for RFC 9421 combines into a dictionary whose later
                // member wins; it must still never pass with a member that did not verify.
                let want = (scheme != SchemeKind::Rfc9421).then_some("Malformed");
                if scheme == SchemeKind::Rfc9421 && label == "garbage before" {
                    fx.tried += 1;
                    match fx.call(p.raw()).await {
                        Ok(Verdict::Deny { .. }) | Ok(Verdict::Allow) => {}
                        Err(e) => fx.failures.push(format!("{s}: {name} {label}: {e:?}")),
                    }
                    continue;
                }
                fx.deny(&format!("{s}: duplicate {name} ({label})"), p.raw(), want)
                    .await;
            }
        }
        // A second copy, with another value, of every header of a signed request that
        // the signature covers (the bearer schemes cover only their credential).
        let with_body = fx.sign(scheme, "/v1/items", Some(b"{\"a\":1}"));
        for (name, _) in with_body.headers.clone() {
            let lower = name.to_ascii_lowercase();
            if matches!(scheme, SchemeKind::AppCode | SchemeKind::Bkapi)
                && !credential_headers(scheme).contains(&lower.as_str())
            {
                continue;
            }
            let p = with_body.clone().push(&name, b"text/x-smuggled".to_vec());
            fx.deny(
                &format!("{s}: second {name} with another value"),
                p.raw(),
                None,
            )
            .await;
        }

        // Thousands of copies of every credential header.
        let mut p = base.clone();
        for name in credential_headers(scheme) {
            let v = base.get(name);
            for _ in 0..1000 {
                p = p.push(name, v.clone());
            }
        }
        fx.deny(
            &format!("{s}: 1000 copies of each credential header"),
            p.raw(),
            None,
        )
        .await;

        // --- huge header values ---
        for name in credential_headers(scheme) {
            let mut huge = base.get(name);
            huge.extend(std::iter::repeat_n(b'A', MIB));
            fx.deny(
                &format!("{s}: 1 MiB {name}"),
                base.clone().set(name, huge).raw(),
                None,
            )
            .await;
        }

        // --- thousands of headers, with a broken signature ---
        let mut p = tamper_signature(scheme, &base);
        for i in 0..5000 {
            p = p.push(&format!("x-junk-{i}"), format!("value-{i}"));
        }
        fx.deny(&format!("{s}: 5000 headers, bad signature"), p.raw(), None)
            .await;
        // ...and with a valid signature to a path no API serves: the full verification
        // runs over them.
        let mut p = fx.sign(scheme, "/nowhere", None);
        for i in 0..5000 {
            p = p.push(&format!("x-junk-{i}"), format!("value-{i}"));
        }
        fx.deny(
            &format!("{s}: 5000 headers, signed"),
            p.raw(),
            Some("ApiNotFound"),
        )
        .await;

        // --- garbage signatures ---
        for (label, p) in garbage_signatures(scheme, &base) {
            fx.deny(&format!("{s}: {label}"), p.raw(), None).await;
        }

        // --- absurd timestamps, validly signed ---
        if scheme != SchemeKind::AppCode {
            let algorithm = (scheme == SchemeKind::Bkapi).then_some("signature");
            let now = common::now_ms();
            for t in [
                i64::MIN,
                -1,
                0,
                now - 10 * 365 * 86_400_000,
                now + 10 * 365 * 86_400_000,
                253_402_300_799_999,
                i64::MAX,
            ] {
                let Some(p) = fx.sign_at(
                    scheme,
                    algorithm,
                    "GET",
                    &format!("http://{HOST}/v1/items/1"),
                    None,
                    t,
                ) else {
                    continue; // the signer cannot express that time
                };
                fx.deny(&format!("{s}: signed at {t}"), p.raw(), None).await;
            }
        }

        // --- overlong paths and huge/deep queries, validly signed, no API there ---
        for (label, target) in [
            ("1 MiB path", format!("/x/{}", "a".repeat(MIB))),
            ("100k segments", "/x".repeat(100_000)),
            (
                "percent garbage path",
                "/x/%/%zz/%ff%fe%00/%%%/..%2f..%2f".to_owned(),
            ),
            (
                "100k query params",
                format!("/x?{}", "a=1&".repeat(100_000)),
            ),
            ("deep query", format!("/x?{}=1", "a[b]".repeat(50_000))),
            (
                "1 MiB query value",
                format!("/x?q={}", "%41".repeat(MIB / 3)),
            ),
            (
                "query of separators",
                format!("/x?{}", "&=&==&&%&+".repeat(50_000)),
            ),
        ] {
            if let Some(p) = fx.sign_at(
                scheme,
                None,
                "GET",
                &format!("http://{HOST}{target}"),
                None,
                common::now_ms(),
            ) {
                // An ambiguous path is refused before routing; so are parameters a
                // sorted string-to-sign cannot tell apart (aliyun, tencent).
                let sorted_params = matches!(scheme, SchemeKind::Aliyun | SchemeKind::Tencent);
                let expected = match label {
                    "percent garbage path" => "Malformed",
                    "100k query params" | "query of separators" if sorted_params => "Malformed",
                    _ => "ApiNotFound",
                };
                fx.deny(&format!("{s}: {label} (signed)"), p.raw(), Some(expected))
                    .await;
            }
            // The same target under the API's wildcard, with a broken signature.
            let mut p = tamper_signature(scheme, &base);
            p.target = format!("/v1{target}");
            fx.deny(&format!("{s}: {label} (bad signature)"), p.raw(), None)
                .await;
        }

        // --- huge bodies ---
        let big = vec![b'z'; 3 * MIB];
        let p = fx.sign(scheme, "/nowhere", Some(&big));
        fx.deny(
            &format!("{s}: 3 MiB body, signed"),
            p.raw(),
            Some("ApiNotFound"),
        )
        .await;
        let mut p = fx.sign(scheme, "/v1/items", Some(b"small"));
        p.body = Some(big.clone());
        // AppCode and BlueKing's header form sign nothing: a swapped body is not
        // theirs to detect. Every other scheme covers a JSON body.
        if !matches!(scheme, SchemeKind::AppCode | SchemeKind::Bkapi) {
            fx.deny(&format!("{s}: body swapped for 3 MiB"), p.raw(), None)
                .await;
        }
        let mut p = tamper_signature(scheme, &fx.sign(scheme, "/v1/items", Some(b"x")));
        p.body = Some(vec![0xff; 16 * MIB]);
        fx.refuse(&format!("{s}: 16 MiB body"), p.raw()).await;
    }

    // --- routing hints and odd header names ---
    let base = fx.sign(SchemeKind::Aliyun, "/v1/items/1", None);
    let mut req = base.raw();
    let attrs = req.attributes.as_mut().unwrap();
    attrs
        .context_extensions
        .insert("stage".into(), "S".repeat(MIB));
    fx.deny("1 MiB stage hint", req, Some("Malformed")).await;
    let mut req = base.raw();
    let attrs = req.attributes.as_mut().unwrap();
    attrs
        .context_extensions
        .insert("api".into(), "../../admin\0".into());
    fx.deny("garbage api hint", req, None).await;
    for name in ["", " ", "X-Ca-Key ", "x-ca-key\0", ":x-ca-key", "x-ca-key:"] {
        let p = tamper_signature(SchemeKind::Aliyun, &base).push(name, b"K".to_vec());
        fx.deny(&format!("header name {name:?}"), p.raw(), None)
            .await;
    }
    fx.deny(
        "header map form with duplicates in the map",
        common::envoy_request(
            "GET",
            HOST,
            "/v1/x",
            &[
                ("X-Ca-Key".into(), fx.app_key.clone()),
                ("x-ca-key".into(), "other".into()),
                ("x-ca-signature".into(), "AAAA".into()),
            ],
            None,
        ),
        None,
    )
    .await;

    // --- the server survived and still serves ---
    assert!(
        common::is_running(&mut fx.kg),
        "keygate died; stderr:\n{}",
        fx.kg.stderr()
    );
    let mut h = HealthClient::new(common::channel(fx.kg.check_addr()).await);
    let status = h
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health after the hostile run")
        .into_inner()
        .status;
    assert_eq!(
        status, 1,
        "check listener not SERVING after the hostile run"
    );
    for scheme in SchemeKind::ALL {
        let p = fx.sign(scheme, "/v1/items/2", None);
        fx.allow(&format!("{scheme} after"), p.raw()).await;
    }
    let log = fx.kg.stderr();
    assert!(!log.contains("panicked"), "a panic was logged:\n{log}");
    println!(
        "hostile: {} inputs tried: {} denied with a code, {} refused by the gRPC size limit, \
         {} allowed; failures: {}",
        fx.tried,
        fx.tried - fx.refused_by_transport - fx.failures.len(),
        fx.refused_by_transport,
        fx.failures
            .iter()
            .filter(|f| f.ends_with("ALLOWED"))
            .count(),
        fx.failures.len()
    );
    assert!(
        fx.failures.is_empty(),
        "{} failures:\n{}",
        fx.failures.len(),
        fx.failures.join("\n")
    );
}

/// `p` with its signature (or, for the bearer schemes, its secret) broken.
fn tamper_signature(scheme: SchemeKind, p: &Parts) -> Parts {
    match scheme {
        SchemeKind::Aliyun => p.clone().set(
            "x-ca-signature",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_vec(),
        ),
        SchemeKind::AppCode => p
            .clone()
            .set("authorization", b"APPCODE not-the-code-0123456789".to_vec()),
        SchemeKind::Bkapi => p.clone().set(
            "x-bkapi-authorization",
            format!(
                "{{\"bk_app_code\":\"{APP_ID}\",\"bk_app_secret\":\"wrong-secret-0123456789\"}}"
            ),
        ),
        SchemeKind::Tencent | SchemeKind::SigV4 | SchemeKind::Rfc9421 => {
            let name = if scheme == SchemeKind::Rfc9421 {
                "signature"
            } else {
                "authorization"
            };
            let v = String::from_utf8(p.get(name)).unwrap();
            // Flip the last character of the signature value, keeping its alphabet.
            let mut chars: Vec<char> = v.chars().collect();
            let i = chars
                .iter()
                .rposition(|c| c.is_ascii_alphanumeric())
                .unwrap();
            chars[i] = if chars[i] == '0' { '1' } else { '0' };
            p.clone().set(name, chars.into_iter().collect::<String>())
        }
    }
}

/// Base64/hex garbage in place of the signature, per scheme.
fn garbage_signatures(scheme: SchemeKind, p: &Parts) -> Vec<(String, Parts)> {
    let junk: [&str; 9] = [
        "",
        "!!!!",
        "====",
        "A",
        "AAAA====AAAA",
        "////////////////////////////////////////////w==",
        "%00%ff",
        "\u{0}\u{7f}",
        "é漢字🙂",
    ];
    let mut out = Vec::new();
    for j in junk {
        let set = |name: &str, value: String| {
            (
                format!("{name} = {value:?}"),
                p.clone().set(name, value.into_bytes()),
            )
        };
        match scheme {
            SchemeKind::Aliyun => out.push(set("x-ca-signature", j.to_owned())),
            SchemeKind::AppCode => out.push(set("authorization", format!("APPCODE {j}"))),
            SchemeKind::Tencent => out.push(set(
                "authorization",
                format!("hmac id=\"x\", algorithm=\"hmac-sha256\", headers=\"x-date\", signature=\"{j}\""),
            )),
            SchemeKind::Bkapi => out.push(set("x-bkapi-authorization", format!("{{\"bk_app_code\":\"{j}\",\"bk_signature\":\"{j}\"}}"))),
            SchemeKind::SigV4 => {
                let v = String::from_utf8(p.get("authorization")).unwrap();
                let head = v.split("Signature=").next().unwrap();
                out.push(set("authorization", format!("{head}Signature={j}")));
            }
            SchemeKind::Rfc9421 => {
                out.push(set("signature", format!("sig1=:{j}:")));
                out.push(set("signature", format!("sig1={j}")));
                out.push(set("signature-input", format!("sig1={j}")));
            }
        }
    }
    out
}

// === the HTTP front doors: NGINX auth_request and Envoy HTTP mode ===

/// Which HTTP front door a request goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Door {
    /// `/envoy/<original path>`, original Host, the body attached.
    Envoy,
    /// `GET /nginx/check` with the original request in `X-Original-*`; no body.
    Nginx,
}

/// A response as far as these tests need it.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `x-keygate-error`, when keygate (not the HTTP layer) answered.
    code: Option<String>,
    head: String,
}

/// Writes `raw` to the http listener and reads the answer; `None` when the server
/// closed the connection without one (an error for the proxy, which fails closed).
fn http_raw(addr: std::net::SocketAddr, raw: &[u8]) -> Option<Answer> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the http listener");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    // The server may answer (and close) before reading everything: ignore write errors.
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let code = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("x-keygate-error"))
        .map(|(_, v)| v.trim().to_owned());
    Some(Answer { status, code, head })
}

/// The raw HTTP/1.1 request a door receives for `p`.
fn door_request(door: Door, p: &Parts) -> Vec<u8> {
    let mut raw = Vec::new();
    match door {
        Door::Envoy => {
            raw.extend(
                format!(
                    "{} /envoy{} HTTP/1.1\r\nHost: {}\r\n",
                    p.method, p.target, p.authority
                )
                .into_bytes(),
            );
            if let Some(b) = &p.body {
                raw.extend(
                    format!(
                        "Content-Length: {}\r\nx-envoy-auth-partial-body: false\r\n",
                        b.len()
                    )
                    .into_bytes(),
                );
            }
        }
        Door::Nginx => {
            raw.extend(b"GET /nginx/check HTTP/1.1\r\nHost: keygate\r\n");
            raw.extend(
                format!(
                    "X-Original-Method: {}\r\nX-Original-Host: {}\r\n",
                    p.method, p.authority
                )
                .into_bytes(),
            );
            raw.extend(b"X-Original-URI: ");
            raw.extend(p.target.as_bytes());
            raw.extend(b"\r\n");
        }
    }
    for (n, v) in &p.headers {
        raw.extend(n.as_bytes());
        raw.extend(b": ");
        raw.extend(v);
        raw.extend(b"\r\n");
    }
    raw.extend(b"Connection: close\r\n\r\n");
    if let (Door::Envoy, Some(b)) = (door, &p.body) {
        raw.extend(b);
    }
    raw
}

impl Fixture {
    /// `raw` must not be allowed: keygate's deny with a code (when `coded`), or, for
    /// input the HTTP layer refuses before keygate sees it, any non-2xx answer (or a
    /// closed connection). A deny is never 5xx on the Envoy door, and only 401/403 on
    /// the NGINX door (what `auth_request` passes on).
    fn http_deny(&mut self, name: &str, door: Door, raw: &[u8], coded: bool) {
        self.tried += 1;
        let Some(a) = http_raw(self.kg.http_addr(), raw) else {
            if coded {
                self.failures
                    .push(format!("{name}: connection closed without an answer"));
            } else {
                self.refused_by_transport += 1;
            }
            return;
        };
        if (200..300).contains(&a.status) {
            self.failures
                .push(format!("{name}: ALLOWED ({})", a.status));
            return;
        }
        if a.head.len() > MAX_DENY {
            self.failures
                .push(format!("{name}: a {}-byte response head", a.head.len()));
        }
        if a.head.contains('\0') {
            self.failures
                .push(format!("{name}: NUL in the response head"));
        }
        match (&a.code, coded) {
            (Some(_), _) => {
                let ok = match door {
                    Door::Envoy => a.status < 500,
                    Door::Nginx => a.status == 401 || a.status == 403,
                };
                if !ok {
                    self.failures.push(format!(
                        "{name}: deny status {} on the {door:?} door",
                        a.status
                    ));
                }
            }
            (None, true) => self.failures.push(format!(
                "{name}: {} without x-keygate-error: {}",
                a.status, a.head
            )),
            (None, false) => self.refused_by_transport += 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_requests_are_denied_and_the_server_survives() {
    let mut fx = Fixture::new().await;
    let http = fx.kg.http_addr();
    let doors = [Door::Envoy, Door::Nginx];

    // Controls: every scheme passes both doors.
    for door in doors {
        for scheme in SchemeKind::ALL {
            let p = fx.sign(scheme, "/v1/items/1?a=1", None);
            let a = http_raw(http, &door_request(door, &p)).expect("answer");
            assert_eq!(a.status, 200, "control {scheme} via {door:?}: {}", a.head);
        }
    }

    for door in doors {
        let d = format!("{door:?}");
        for scheme in SchemeKind::ALL {
            let s = format!("{d} {scheme}");
            let base = fx.sign(scheme, "/v1/items/1?a=1", None);

            fx.http_deny(
                &format!("{s}: bad signature"),
                door,
                &door_request(door, &tamper_signature(scheme, &base)),
                true,
            );
            for (label, p) in garbage_signatures(scheme, &base) {
                // A value with control bytes is refused by the HTTP parser itself.
                let coded = !label.contains("\\0") && !label.contains("\\u{0}");
                fx.http_deny(
                    &format!("{s}: {label}"),
                    door,
                    &door_request(door, &p),
                    coded,
                );
            }
            // Invalid UTF-8 and overlong encodings in every header the signer added.
            for name in base.added.clone() {
                for (label, bad) in [
                    ("0xff appended", [base.get(&name), vec![0xff]].concat()),
                    (
                        "0xc0 0x80 prefix",
                        [vec![0xc0, 0x80], base.get(&name)].concat(),
                    ),
                    ("all 0xfe", vec![0xfe; 300]),
                ] {
                    let p = base.clone().set(&name, bad);
                    fx.http_deny(
                        &format!("{s}: {name} {label}"),
                        door,
                        &door_request(door, &p),
                        true,
                    );
                }
            }
            // Duplicate credential headers.
            for name in credential_headers(scheme) {
                if base.get(name).is_empty() {
                    continue;
                }
                let p = base.clone().push(name, b"garbage, sig1=:AAAA:".to_vec());
                fx.http_deny(
                    &format!("{s}: duplicate {name}"),
                    door,
                    &door_request(door, &p),
                    true,
                );
                if scheme != SchemeKind::Rfc9421 {
                    let p = base.clone().push(name, base.get(name));
                    fx.http_deny(
                        &format!("{s}: {name} twice"),
                        door,
                        &door_request(door, &p),
                        true,
                    );
                }
            }
            // Absurd signing times.
            if scheme != SchemeKind::AppCode {
                let algorithm = (scheme == SchemeKind::Bkapi).then_some("signature");
                for t in [
                    i64::MIN,
                    -1,
                    0,
                    i64::MAX,
                    common::now_ms() + 10 * 365 * 86_400_000,
                ] {
                    if let Some(p) = fx.sign_at(
                        scheme,
                        algorithm,
                        "GET",
                        &format!("http://{HOST}/v1/items/1"),
                        None,
                        t,
                    ) {
                        fx.http_deny(
                            &format!("{s}: signed at {t}"),
                            door,
                            &door_request(door, &p),
                            true,
                        );
                    }
                }
            }
            // Many headers, huge values, long targets: refused by the HTTP layer or
            // denied by keygate, never allowed.
            let mut p = base.clone();
            for i in 0..1000 {
                p = p.push(&format!("x-junk-{i}"), format!("v{i}"));
            }
            fx.http_deny(
                &format!("{s}: 1000 headers"),
                door,
                &door_request(door, &p),
                false,
            );
            for name in credential_headers(scheme) {
                let mut huge = base.get(name);
                huge.extend(std::iter::repeat_n(b'A', MIB));
                fx.http_deny(
                    &format!("{s}: 1 MiB {name}"),
                    door,
                    &door_request(door, &base.clone().set(name, huge)),
                    false,
                );
                let mut big = base.get(name);
                big.extend(std::iter::repeat_n(b'A', 16 * 1024));
                fx.http_deny(
                    &format!("{s}: 16 KiB {name}"),
                    door,
                    &door_request(door, &base.clone().set(name, big)),
                    false,
                );
            }
            for (label, target) in [
                ("64 KiB path", format!("/x/{}", "a".repeat(64 * 1024))),
                (
                    "percent garbage path",
                    "/x/%/%zz/%ff%fe%00/..%2f..%2f".to_owned(),
                ),
                ("10k query params", format!("/x?{}", "a=1&".repeat(10_000))),
                ("deep query", format!("/x?{}=1", "a[b]".repeat(8_000))),
            ] {
                if let Some(p) = fx.sign_at(
                    scheme,
                    None,
                    "GET",
                    &format!("http://{HOST}{target}"),
                    None,
                    common::now_ms(),
                ) {
                    fx.http_deny(
                        &format!("{s}: {label}"),
                        door,
                        &door_request(door, &p),
                        false,
                    );
                }
            }
        }
    }

    // --- the Envoy door's body ---
    let big = vec![b'z'; 5 * MIB];
    let p = fx.sign(SchemeKind::Aliyun, "/v1/items", Some(&big));
    fx.http_deny(
        "Envoy: 5 MiB body (over the door's limit)",
        Door::Envoy,
        &door_request(Door::Envoy, &p),
        true,
    );
    let mut p = fx.sign(SchemeKind::SigV4, "/v1/items", Some(b"{\"a\":1}"));
    p.body = Some(b"{\"a\":2}".to_vec());
    fx.http_deny(
        "Envoy: body swapped",
        Door::Envoy,
        &door_request(Door::Envoy, &p),
        true,
    );
    let p = fx.sign(SchemeKind::Aliyun, "/v1/items", None);
    let mut raw = door_request(Door::Envoy, &p);
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    raw.splice(
        at..at,
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
            .iter()
            .copied(),
    );
    raw.extend(b"zzzz\r\ngarbage\r\n");
    fx.http_deny(
        "Envoy: Content-Length with chunked garbage",
        Door::Envoy,
        &raw,
        false,
    );
    let mut raw = door_request(Door::Envoy, &p);
    raw.splice(at..at, b"Transfer-Encoding: chunked\r\n".iter().copied());
    raw.extend(b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n");
    fx.http_deny("Envoy: absurd chunk size", Door::Envoy, &raw, false);

    // --- the NGINX door's own headers ---
    let p = fx.sign(SchemeKind::Aliyun, "/v1/items/1", None);
    let mut hdrs = Vec::new();
    for (n, v) in &p.headers {
        hdrs.extend(n.as_bytes());
        hdrs.extend(b": ");
        hdrs.extend(v);
        hdrs.extend(b"\r\n");
    }
    let nginx = |original: &str| {
        let mut raw =
            format!("GET /nginx/check HTTP/1.1\r\nHost: keygate\r\n{original}").into_bytes();
        raw.extend(&hdrs);
        raw.extend(b"Connection: close\r\n\r\n");
        raw
    };
    for (label, original) in [
        ("no X-Original-*", String::new()),
        (
            "no X-Original-URI",
            format!("X-Original-Method: GET\r\nX-Original-Host: {HOST}\r\n"),
        ),
        (
            "no X-Original-Method",
            format!("X-Original-URI: /v1/items/1\r\nX-Original-Host: {HOST}\r\n"),
        ),
        (
            "absolute URI",
            format!(
                "X-Original-Method: GET\r\nX-Original-URI: http://evil.example/v1/items/1\r\nX-Original-Host: {HOST}\r\n"
            ),
        ),
        (
            "empty URI",
            format!("X-Original-Method: GET\r\nX-Original-URI: \r\nX-Original-Host: {HOST}\r\n"),
        ),
        (
            "other path",
            format!(
                "X-Original-Method: GET\r\nX-Original-URI: /v1/items/2\r\nX-Original-Host: {HOST}\r\n"
            ),
        ),
        (
            "other method",
            format!(
                "X-Original-Method: DELETE\r\nX-Original-URI: /v1/items/1\r\nX-Original-Host: {HOST}\r\n"
            ),
        ),
        (
            "two URIs",
            format!(
                "X-Original-Method: GET\r\nX-Original-URI: /v1/items/2\r\nX-Original-URI: /v1/items/1\r\nX-Original-Host: {HOST}\r\n"
            ),
        ),
        (
            "forged identity",
            format!(
                "X-Original-Method: GET\r\nX-Original-URI: /v1/items/2\r\nX-Original-Host: {HOST}\r\nx-keygate-app-id: {APP_ID}\r\nx-keygate-deny: e30\r\n"
            ),
        ),
    ] {
        fx.http_deny(
            &format!("NGINX: {label}"),
            Door::Nginx,
            &nginx(&original),
            true,
        );
    }
    // The renderer never answers 2xx, whatever it is handed, and drops what a deny may
    // not set.
    let render = |packed: &str| {
        format!("GET /nginx/render-deny HTTP/1.1\r\nHost: keygate\r\nx-keygate-deny: {packed}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    use base64::Engine as _;
    let pack = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    for (label, packed) in [
        ("garbage", "!!!not-base64!!!".to_owned()),
        ("empty", String::new()),
        (
            "status 200",
            pack(r#"{"status":200,"code":"NoGrant","message":"m","request_id":"r","headers":[]}"#),
        ),
        (
            "status 99999",
            pack(
                r#"{"status":99999,"code":"NoGrant","message":"m","request_id":"r","headers":[]}"#,
            ),
        ),
        (
            "status 302 + location",
            pack(
                r#"{"status":302,"code":"NoGrant","message":"m","request_id":"r","headers":[["Location","http://evil"],["Set-Cookie","a=b"]]}"#,
            ),
        ),
        (
            "CRLF in headers",
            pack(
                "{\"status\":401,\"code\":\"X\",\"message\":\"m\\r\\nx: y\",\"request_id\":\"r\\r\\nx: y\",\"headers\":[[\"a\\r\\nb\",\"c\\r\\nd\"]]}",
            ),
        ),
        (
            "huge message",
            pack(&format!(
                r#"{{"status":401,"code":"X","message":"{}","request_id":"r","headers":[]}}"#,
                "m".repeat(100_000)
            )),
        ),
    ] {
        fx.tried += 1;
        let a = http_raw(http, &render(&packed)).expect("render-deny answers");
        let lower = a.head.to_ascii_lowercase();
        if (200..400).contains(&a.status)
            || lower.contains("\r\nlocation:")
            || lower.contains("\r\nset-cookie:")
            || lower.contains("\r\nx: y")
        {
            fx.failures.push(format!("render-deny {label}: {}", a.head));
        }
    }

    // --- paths next to the doors ---
    for target in [
        "/envoyx/v1/items/1",
        "/ENVOY/v1/items/1",
        "//envoy/v1/items/1",
        "/nginx/check/../../envoy/v1",
        "/nginx/checkx",
        "/%65nvoy/v1/items/1",
    ] {
        let p = fx.sign(SchemeKind::AppCode, "/v1/items/1", None);
        let mut raw = format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n").into_bytes();
        for (n, v) in &p.headers {
            raw.extend(n.as_bytes());
            raw.extend(b": ");
            raw.extend(v);
            raw.extend(b"\r\n");
        }
        raw.extend(b"Connection: close\r\n\r\n");
        fx.http_deny(&format!("path {target}"), Door::Envoy, &raw, false);
    }
    for line in [
        "GET * HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "CONNECT keygate:80 HTTP/1.1",
        "GET http://evil/envoy/v1/items/1 HTTP/1.1",
        "G\0ET /envoy/v1 HTTP/1.1",
        "GET /envoy/v1 HTTP/9.9",
    ] {
        let raw = format!("{line}\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").into_bytes();
        fx.http_deny(&format!("request line {line:?}"), Door::Envoy, &raw, false);
    }

    // --- the server survived and still serves ---
    assert!(
        common::is_running(&mut fx.kg),
        "keygate died; stderr:\n{}",
        fx.kg.stderr()
    );
    let (code, _) = fx.kg.http_get("/healthz");
    assert_eq!(code, 200);
    for door in doors {
        for scheme in SchemeKind::ALL {
            let p = fx.sign(scheme, "/v1/items/2", None);
            let a = http_raw(http, &door_request(door, &p)).expect("answer");
            assert_eq!(a.status, 200, "{scheme} via {door:?} after: {}", a.head);
        }
    }
    let log = fx.kg.stderr();
    assert!(!log.contains("panicked"), "a panic was logged:\n{log}");
    println!(
        "hostile http: {} inputs tried: {} denied with a code, {} refused by the HTTP layer, \
         {} allowed; failures: {}",
        fx.tried,
        fx.tried - fx.refused_by_transport - fx.failures.len(),
        fx.refused_by_transport,
        fx.failures.iter().filter(|f| f.contains("ALLOWED")).count(),
        fx.failures.len()
    );
    assert!(
        fx.failures.is_empty(),
        "{} failures:\n{}",
        fx.failures.len(),
        fx.failures.join("\n")
    );
}
