//! Pre-signed requests: every request of a run is signed before the run starts (so the
//! load generator spends its CPU on sending, not on HMACs), each with its own nonce
//! (or, with `--no-nonce`, none), for callers taken in turn across the whole data set.
//!
//! Owns: turning a signed request into what each front door receives: an Envoy
//! `CheckRequest` for gRPC, the `GET /envoy/<path>` Envoy's HTTP mode sends, or the
//! client's own `GET <path>` to a real Envoy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{self as core, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use keygate::scheme::SchemeKind;
use keygate::sign::{SignOptions, SignRequest, sign};

use crate::dataset::Caller;
use crate::error::{Context, Result};

pub const AUTHORITY: &str = "api.bench.example";
const REGION: &str = "us-east-1";
const SERVICE: &str = "execute-api";

/// One signed request, front-door neutral.
pub struct Signed {
    pub method: &'static str,
    /// Raw path and query, as on the wire.
    pub target: String,
    /// Header names as the client sends them.
    pub headers: Vec<(String, String)>,
}

/// Makes every nonce of this process unique, across runs too.
static POOL: AtomicU64 = AtomicU64::new(0);

/// Signs `count` requests with `scheme`, taking callers in turn. With `nonce` each
/// carries a nonce of its own (which keygate records); without, the nonce is left
/// empty: Tencent and RFC 9421 then send none, Alibaba an empty `X-Ca-Nonce`, which
/// keygate reads as absent. AppCode, BlueKing's header form and SigV4 never carry one.
pub fn sign_pool(
    callers: &[Caller],
    scheme: SchemeKind,
    count: usize,
    nonce: bool,
) -> Result<Vec<Signed>> {
    let pool = POOL.fetch_add(1, Ordering::Relaxed);
    let run = format!("{:x}{:x}", std::process::id(), pool);
    let now_ms = keygate::clock::system_now_ms();
    let n = callers.len().max(1);
    (0..count)
        .map(|k| {
            let c = callers.get(k % n).ctx("no callers in the data set")?;
            let (key, secret) = c
                .keys
                .get((k / n) % c.keys.len().max(1))
                .ctx("an app without keys")?;
            let (key, secret): (&str, &str) = match scheme {
                SchemeKind::AppCode => ("", &c.app_code),
                // BlueKing names the app; any of its secrets may match.
                SchemeKind::Bkapi => (&c.app_id, secret),
                _ => (key, secret),
            };
            let nonce = if nonce {
                format!("{run}-{k:x}")
            } else {
                String::new()
            };
            let target = format!(
                "{}?page={}&size=20",
                c.path.replace("{id}", &(k % 997).to_string()),
                k % 7
            );
            let req = SignRequest {
                method: "GET".into(),
                url: format!("http://{AUTHORITY}{target}"),
                headers: vec![("User-Agent".into(), "keygate-bench".into())],
                body: None,
            };
            let mut opts = SignOptions::new(scheme, key, secret.as_bytes(), now_ms, &nonce);
            if scheme == SchemeKind::SigV4 {
                opts.region = Some(REGION);
                opts.service = Some(SERVICE);
            }
            let signed = sign(&req, &opts).ctx("sign a request")?;
            let target = signed
                .url
                .strip_prefix(&format!("http://{AUTHORITY}"))
                .unwrap_or(&target)
                .to_owned();
            let mut headers = req.headers;
            headers.extend(signed.headers);
            Ok(Signed {
                method: "GET",
                target,
                headers,
            })
        })
        .collect()
}

/// The `CheckRequest` Envoy's ext_authz gRPC filter would send for `s`.
pub fn to_check(s: &Signed) -> CheckRequest {
    let mut headers: HashMap<String, String> = HashMap::new();
    for (n, v) in &s.headers {
        headers
            .entry(n.to_ascii_lowercase())
            .and_modify(|old| {
                old.push(',');
                old.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    headers.insert(":authority".into(), AUTHORITY.into());
    headers.insert(":method".into(), s.method.into());
    headers.insert(":path".into(), s.target.clone());
    headers.insert(":scheme".into(), "http".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(core::Address {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        port_specifier: Some(PortSpecifier::PortValue(40000)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: String::new(),
                    method: s.method.into(),
                    headers,
                    path: s.target.clone(),
                    host: AUTHORITY.into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// What Envoy's HTTP-mode ext_authz sends for `s`: the method, `/envoy` + the original
/// path and query, the original Host and the client's headers, no body.
pub fn to_http(s: &Signed) -> Result<http::Request<Body>> {
    let mut b = http::Request::builder()
        .method(s.method)
        .uri(format!("/envoy{}", s.target))
        .header("host", AUTHORITY)
        .header("content-length", "0");
    for (n, v) in &s.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    b.body(Body::empty()).ctx("build an HTTP request")
}

/// What a client sends to Envoy for `s`: the original path and query (Envoy hands
/// keygate the same `:path`, and the Host as `:authority`, which the request was signed
/// for) and the client's headers.
pub fn to_envoy(s: &Signed) -> Result<http::Request<Body>> {
    let mut b = http::Request::builder()
        .method(s.method)
        .uri(s.target.as_str())
        .header("host", AUTHORITY);
    for (n, v) in &s.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    b.body(Body::empty()).ctx("build an HTTP request")
}
