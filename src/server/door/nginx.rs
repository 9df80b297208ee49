//! NGINX front door: the `auth_request` subrequest (`/nginx/check`) and the deny
//! renderer (`/nginx/render-deny`).
//!
//! Owns: translating the subrequest into a `RequestView` and a `Decision` into what
//! `ngx_http_auth_request_module` understands. No policy.
//!
//! How NGINX behaves (Debian nginx 1.22, see `examples/nginx/nginx.conf`):
//! * The subrequest is a GET without a body whatever the client sent; the original
//!   method, URI, host, scheme, length and transfer coding come in `X-Original-*`
//!   headers the config sets (client copies are overwritten by `proxy_set_header`).
//!   The oathkeeper/oauth2-proxy spelling `X-Forwarded-Method/-Uri/-Host/-Proto` is a
//!   fallback only with `--trust-forwarded-headers`: NGINX passes every client header
//!   to the subrequest, so without a config that overwrites them they are the client's.
//! * The stage comes from `X-Keygate-Route-Stage`, set in the auth location; the
//!   client's `X-Ca-Stage` only with `--trust-client-stage`.
//! * Any 2xx allows; 401 and 403 reach the client with our body and headers dropped;
//!   any other status becomes a 500. So a deny is always answered 401 or 403 here, with
//!   the real deny (status, code, message, request id, vendor headers) packed into
//!   `x-keygate-deny`. The config captures it with `auth_request_set` and hands it to
//!   `error_page 401 403 = @authz_deny`, which proxies to `/nginx/render-deny`; that
//!   endpoint unpacks it and answers with the real status, headers and JSON body, which
//!   NGINX relays unchanged.
//! * No body ever reaches keygate, so a body digest cannot be checked here: the allow
//!   says `x-keygate-body: unverified` and names the digest header the upstream must
//!   compare (`x-keygate-body-digest`), and APIs with `body_digest_required` are denied
//!   (`BodyDigestMissing`). See the README's "Use with NGINX".

use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::http_wire::{allow_response, deny_response, early_deny, header_str, headers_from};
use super::{Door, request_id, request_id_or_new};
use crate::decide::Decision;
use crate::deny::{Deny, DenyCode};
use crate::request::{ROUTE_STAGE_HEADER, RequestView, spelled_like};
use crate::server::shared::Shared;

pub const CHECK_PATH: &str = "/nginx/check";
pub const RENDER_DENY_PATH: &str = "/nginx/render-deny";
/// Carries the packed deny from the check answer to the renderer.
pub const DENY_HEADER: &str = "x-keygate-deny";

/// Headers that describe the original request rather than belong to it.
const CONTROL: [&str; 7] = [
    "x-original-method",
    "x-original-uri",
    "x-original-host",
    "x-original-scheme",
    "x-original-content-length",
    "x-original-transfer-encoding",
    DENY_HEADER,
];
/// Headers NGINX rewrites on the subrequest; the originals come from `X-Original-*`.
const REWRITTEN: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// Upper bounds on what is packed into `x-keygate-deny`: NGINX reads an upstream's
/// response headers into one buffer (`proxy_buffer_size`, 4 KiB on most systems) and
/// answers 502 when they do not fit.
const MAX_MESSAGE: usize = 512;
const MAX_PACKED: usize = 2048;

/// The original request as the subrequest describes it. A subrequest that does not say
/// which request it is about is a broken NGINX config: a deny, never a guess.
pub fn view_from_nginx(headers: &HeaderMap, trust_forwarded: bool) -> Result<RequestView, Deny> {
    let pick = |names: &[&str; 2]| {
        let names = if trust_forwarded {
            &names[..]
        } else {
            &names[..1]
        };
        names.iter().find_map(|n| header_str(headers, n))
    };
    let method = pick(&["x-original-method", "x-forwarded-method"]).ok_or_else(|| {
        Deny::new(
            DenyCode::Malformed,
            "the auth subrequest lacks X-Original-Method (set it in the nginx config)",
        )
    })?;
    let uri = pick(&["x-original-uri", "x-forwarded-uri"]).ok_or_else(|| {
        Deny::new(
            DenyCode::Malformed,
            "the auth subrequest lacks X-Original-URI (set it to $request_uri in the nginx config)",
        )
    })?;
    if !uri.starts_with('/') {
        return Err(Deny::new(
            DenyCode::Malformed,
            "X-Original-URI must be an origin-form target (/path?query)",
        ));
    }
    // Never the subrequest's own Host: NGINX sets it to the keygate upstream's name.
    let host = pick(&["x-original-host", "x-forwarded-host"]).ok_or_else(|| {
        Deny::new(
            DenyCode::Malformed,
            "the auth subrequest lacks X-Original-Host (set it to $host in the nginx config)",
        )
    })?;

    // NGINX cannot strip headers by prefix on the way upstream, so a client's own
    // identity-looking header (any case, `_` for `-`) would reach the upstream beside
    // the ones the config sets: refuse the request instead.
    let own = |n: &str, h: &str| n.len() == h.len() && spelled_like(n, h);
    if let Some(name) = headers.keys().map(|n| n.as_str()).find(|n| {
        spelled_like(n, "x-keygate-") && !own(n, ROUTE_STAGE_HEADER) && !own(n, DENY_HEADER)
    }) {
        return Err(Deny::new(
            DenyCode::Malformed,
            format!(
                "the request carries {}, a header only keygate sets",
                crate::scheme::canonical::echo_escaped(name)
            ),
        ));
    }
    let mut view = RequestView {
        method: method.to_ascii_uppercase(),
        scheme: pick(&["x-original-scheme", "x-forwarded-proto"])
            .unwrap_or_default()
            .to_ascii_lowercase(),
        host: host.to_owned(),
        ..RequestView::default()
    };
    view.set_target(uri);
    view.stage_hint = header_str(headers, ROUTE_STAGE_HEADER)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);

    let mut skip: Vec<&str> = CONTROL.to_vec();
    skip.extend(REWRITTEN);
    if trust_forwarded && header_str(headers, "x-original-method").is_none() {
        skip.push("x-forwarded-method");
    }
    if trust_forwarded && header_str(headers, "x-original-uri").is_none() {
        skip.push("x-forwarded-uri");
    }
    let mut h = headers_from(headers, &skip);
    // Put back what NGINX rewrote, as the client sent it: signatures cover these.
    if !host.is_empty() {
        h.push("host", host);
    }
    if let Some(len) = header_str(headers, "x-original-content-length").filter(|v| !v.is_empty()) {
        h.push("content-length", len);
    }
    if let Some(te) = header_str(headers, "x-original-transfer-encoding").filter(|v| !v.is_empty())
    {
        h.push("transfer-encoding", te);
    }
    view.headers = h;
    // NGINX reads the body only after the access phase: it never reaches us.
    view.body = None;
    view.peer = header_str(headers, "x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned());
    Ok(view)
}

/// `/nginx/check`: 200 with the identity headers, or 401/403 with the packed deny.
pub async fn check(shared: &Shared, headers: &HeaderMap) -> Response {
    let view = match view_from_nginx(headers, shared.config.trust_forwarded_headers) {
        Ok(v) => v,
        Err(d) => {
            let id = request_id_or_new(header_str(headers, "x-request-id"));
            return early_deny(shared, d, &id, deny);
        }
    };
    let request_id = request_id(&view);
    match shared.decide(&view, &request_id).await {
        Decision::Allow(a) => allow_response(&a, &request_id, &[]),
        Decision::Deny(d) => deny(&d, &request_id),
    }
}

/// 401 when the caller has not proven who it is, else 403: the only two statuses
/// `auth_request` passes on. The real status travels in the packed deny.
pub fn deny(d: &Deny, request_id: &str) -> Response {
    let mut resp = deny_response(d, request_id, Door::NginxAuthRequest);
    // NGINX copies a 401's WWW-Authenticate to the client itself; the renderer sends
    // the real one, so sending it here too would double it.
    resp.headers_mut()
        .remove(axum::http::header::WWW_AUTHENTICATE);
    if let Ok(v) = axum::http::HeaderValue::from_str(&pack(d, request_id)) {
        resp.headers_mut().insert(DENY_HEADER, v);
    }
    resp
}

#[derive(Serialize, Deserialize)]
struct Packed {
    status: u16,
    code: String,
    message: String,
    request_id: String,
    headers: Vec<(String, String)>,
}

fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The deny as one header value (URL-safe base64 of JSON), small enough for NGINX's
/// header buffer: the vendor headers go first when it would not fit, then the message.
fn pack(d: &Deny, request_id: &str) -> String {
    let mut p = Packed {
        status: Door::NginxRenderer.http_status(d.code),
        code: d.code.as_str().to_owned(),
        message: clip(&d.message, MAX_MESSAGE),
        request_id: request_id.to_owned(),
        headers: d.headers.clone(),
    };
    let encode = |p: &Packed| URL_SAFE_NO_PAD.encode(serde_json::to_vec(p).unwrap_or_default());
    let mut out = encode(&p);
    if out.len() > MAX_PACKED {
        p.headers.clear();
        out = encode(&p);
    }
    if out.len() > MAX_PACKED {
        p.message = clip(&p.message, 64);
        out = encode(&p);
    }
    out
}

/// Headers a packed deny may not set: framing and connection management belong to the
/// HTTP layer, and a deny has no business setting cookies or redirecting.
fn renderable(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !matches!(
        n.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "set-cookie"
            | "location"
            | "content-type"
            | "x-keygate-error"
            | "x-keygate-request-id"
    ) && !n.starts_with(':')
}

/// `/nginx/render-deny`: answers with the deny packed in `x-keygate-deny`, with the
/// status of its code. Never 2xx: whatever arrives here, the answer is a refusal (an
/// unknown code is `Internal`, an unreadable pack a 403), so a broken or hostile header
/// cannot turn into an allow.
pub fn render_deny(headers: &HeaderMap) -> Response {
    let packed = header_str(headers, DENY_HEADER)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim()).ok())
        .and_then(|b| serde_json::from_slice::<Packed>(&b).ok());
    let Some(p) = packed else {
        let d = Deny::new(
            DenyCode::Internal,
            "access denied (the deny details did not reach the renderer; check the nginx config)",
        );
        // Answered as the subrequest would have been: a refusal, 403.
        return deny_response(&d, &request_id_or_new(None), Door::NginxAuthRequest);
    };
    let code = DenyCode::ALL
        .into_iter()
        .find(|c| c.as_str() == p.code)
        .unwrap_or(DenyCode::Internal);
    let mut d = Deny::new(code, clip(&p.message, MAX_MESSAGE));
    d.headers = p
        .headers
        .into_iter()
        .filter(|(n, _)| renderable(n))
        .collect();
    // The status follows from the code (one table, `Door`), not from the pack.
    deny_response(
        &d,
        &request_id_or_new(Some(&p.request_id)),
        Door::NginxRenderer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn original_request_comes_from_the_x_original_headers() {
        let m = map(&[
            ("host", "127.0.0.1:8081"),
            ("content-length", ""),
            ("x-original-method", "post"),
            ("x-original-uri", "/v1/items?b=2&a=1"),
            ("x-original-host", "api.example.com:8088"),
            ("x-original-scheme", "https"),
            ("x-original-content-length", "17"),
            ("x-forwarded-for", "10.0.0.7"),
            ("x-ca-key", "K1"),
        ]);
        let v = view_from_nginx(&m, false).unwrap();
        assert_eq!(v.method, "POST");
        assert_eq!(v.path, "/v1/items");
        assert_eq!(v.query.as_deref(), Some("b=2&a=1"));
        assert_eq!(v.host, "api.example.com:8088");
        assert_eq!(v.scheme, "https");
        assert_eq!(v.headers.get("host"), Some("api.example.com:8088"));
        assert_eq!(v.headers.get("content-length"), Some("17"));
        assert_eq!(v.headers.count("host"), 1);
        assert!(!v.headers.contains("x-original-uri"));
        assert_eq!(v.headers.get("x-ca-key"), Some("K1"));
        assert_eq!(v.peer.as_deref(), Some("10.0.0.7"));
        assert!(v.body.is_none(), "nginx never sends the body");
    }

    #[test]
    fn forwarded_spelling_is_a_fallback_only_when_trusted() {
        let m = map(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/a"),
            ("x-forwarded-host", "h.example"),
            ("x-forwarded-proto", "http"),
        ]);
        let v = view_from_nginx(&m, true).unwrap();
        assert_eq!((v.method.as_str(), v.path.as_str()), ("GET", "/a"));
        assert_eq!(v.host, "h.example");
        assert!(!v.headers.contains("x-forwarded-uri"));
        // By default they are the client's: the subrequest is refused.
        let d = view_from_nginx(&m, false).unwrap_err();
        assert_eq!(d.code, DenyCode::Malformed);
        // Original method and URI with a client-chosen X-Forwarded-Host: still refused.
        let m = map(&[
            ("x-original-method", "GET"),
            ("x-original-uri", "/a"),
            ("x-forwarded-host", "admin.example"),
            ("host", "keygate"),
        ]);
        let d = view_from_nginx(&m, false).unwrap_err();
        assert!(d.message.contains("X-Original-Host"), "{}", d.message);
    }

    #[test]
    fn a_client_identity_header_is_refused() {
        for forged in ["x-keygate-app-id", "x-keygate-anything", "x_keygate_api_id"] {
            let m = map(&[
                ("x-original-method", "GET"),
                ("x-original-uri", "/a"),
                ("x-original-host", "h"),
                (forged, "forged"),
            ]);
            let d = view_from_nginx(&m, false).unwrap_err();
            assert_eq!(d.code, DenyCode::Malformed, "{forged}");
        }
    }

    #[test]
    fn the_stage_comes_from_the_auth_location_header() {
        let m = map(&[
            ("x-original-method", "GET"),
            ("x-original-uri", "/a"),
            ("x-original-host", "h"),
            ("x-keygate-route-stage", "TEST"),
        ]);
        assert_eq!(
            view_from_nginx(&m, false).unwrap().stage_hint.as_deref(),
            Some("TEST")
        );
    }

    #[test]
    fn a_subrequest_without_the_original_request_is_denied() {
        let d = view_from_nginx(&map(&[("host", "x")]), false).unwrap_err();
        assert_eq!(d.code, DenyCode::Malformed);
        assert!(d.message.contains("X-Original-Method"), "{}", d.message);
        let d = view_from_nginx(
            &map(&[
                ("x-original-method", "GET"),
                ("x-original-uri", "http://evil/abs"),
                ("x-original-host", "h"),
            ]),
            false,
        )
        .unwrap_err();
        assert_eq!(d.code, DenyCode::Malformed);
    }

    #[test]
    fn pack_round_trips_through_the_renderer() {
        let d = Deny::new(DenyCode::SignatureMismatch, "Invalid Signature")
            .with_header(
                "X-Ca-Error-Message",
                "Invalid Signature, Server StringToSign:`GET#/`",
            )
            .with_header("Set-Cookie", "x=1");
        let packed = pack(&d, "req-1");
        let resp = render_deny(&map(&[(DENY_HEADER, &packed)]));
        assert_eq!(resp.status(), 401);
        let h = resp.headers();
        assert_eq!(h["x-keygate-error"], "SignatureMismatch");
        assert_eq!(h["x-keygate-request-id"], "req-1");
        assert!(h.contains_key("x-ca-error-message"));
        assert!(!h.contains_key("set-cookie"), "a deny never sets cookies");
    }

    #[test]
    fn renderer_never_answers_2xx() {
        for bad in [
            "",
            "garbage!!",
            &URL_SAFE_NO_PAD.encode(
                br#"{"status":200,"code":"NoGrant","message":"m","request_id":"r","headers":[]}"#,
            ),
        ] {
            let resp = render_deny(&map(&[(DENY_HEADER, bad)]));
            assert_eq!(resp.status(), 403, "{bad:?}");
        }
        assert_eq!(render_deny(&HeaderMap::new()).status(), 403);
    }

    #[test]
    fn huge_denies_still_fit_nginx_header_buffer() {
        let d = Deny::new(DenyCode::SignatureMismatch, "m".repeat(10_000))
            .with_header("X-Ca-Error-Message", "s".repeat(10_000));
        assert!(pack(&d, "r").len() <= MAX_PACKED);
    }
}
