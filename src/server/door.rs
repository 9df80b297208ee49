//! The front doors: how each proxy's question becomes a `RequestView` and a `Decision`
//! becomes the answer that proxy reads. Translation only; policy stays in `decide`.
//!
//! | door | proxy | module |
//! |---|---|---|
//! | `Door::Grpc` | Envoy ext_authz gRPC (`Authorization/Check`, check listener) | `grpc` |
//! | `Door::EnvoyHttp` | Envoy ext_authz `http_service` (`/envoy/...`, http listener) | `envoy_http` |
//! | `Door::NginxAuthRequest`, `Door::NginxRenderer` | NGINX `auth_request` and its deny renderer | `nginx` |
//!
//! Owns what every door shares: the one table of how a deny's HTTP status is narrowed
//! on each door (`Door::http_status`), the request id (the caller's when sane), a
//! deny's JSON body and headers, and counting and logging a deny a door makes before
//! the pipeline runs. `http_wire` holds what the two HTTP doors share on the wire.

pub mod check_wire;
pub mod envoy_http;
pub mod grpc;
pub mod http_wire;
pub mod nginx;

use crate::decide::Decision;
use crate::deny::{Deny, DenyCode, DenyStatus};
use crate::request::RequestView;
use crate::server::shared::Shared;

/// Where a deny is answered; each door's proxy reads statuses its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// Envoy over gRPC: the real status goes in `CheckResponse.denied_response`.
    Grpc,
    /// Envoy `http_service`: a 5xx would count as an authorization-server *error* and
    /// fall to `failure_mode_allow`/`status_on_error`, so never 5xx: shedding answers
    /// 429, an internal fault 403.
    EnvoyHttp,
    /// NGINX `auth_request`: only 401 and 403 reach the client (anything else becomes a
    /// 500), so those two; the real status travels packed to the renderer.
    NginxAuthRequest,
    /// NGINX's `error_page` target: answers with the real status.
    NginxRenderer,
}

impl Door {
    /// The HTTP status a deny with `code` is answered with on this door: the one place
    /// each door narrows `DenyCode::status`.
    pub fn http_status(self, code: DenyCode) -> u16 {
        let DenyStatus { http, grpc } = code.status();
        match self {
            Door::Grpc | Door::NginxRenderer => http,
            Door::EnvoyHttp if http < 500 => http,
            Door::EnvoyHttp if grpc == tonic::Code::ResourceExhausted => 429,
            Door::EnvoyHttp => 403,
            Door::NginxAuthRequest if http == 401 => 401,
            Door::NginxAuthRequest => 403,
        }
    }
}

/// The caller's `x-request-id` when it is sane, else a fresh random id.
pub fn request_id(view: &RequestView) -> String {
    request_id_or_new(view.headers.get("x-request-id"))
}

/// `caller` when it is a sane request id, else a fresh random id: for denies made
/// before a request view exists, which keep the caller's id too.
pub fn request_id_or_new(caller: Option<&str>) -> String {
    if let Some(id) = caller
        && !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_graphic())
    {
        return id.to_owned();
    }
    fresh_id()
}

/// A new request id: a random 64-bit prefix drawn once per process, then a counter.
/// Unique within the process and across restarts, and no system call per request (a
/// request id correlates logs; it is not a secret).
fn fresh_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut raw = [0u8; 8];
        // Without randomness the ids are still unique within this process.
        let _ = getrandom::getrandom(&mut raw);
        u64::from_le_bytes(raw)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Hex by hand: `format!` costs more than the rest of a deny's bookkeeping.
    let mut id = String::with_capacity(24);
    for shift in (0..16).rev() {
        id.push(hex_digit(prefix >> (shift * 4)));
    }
    for shift in (0..8).rev() {
        id.push(hex_digit(u64::from(n) >> (shift * 4)));
    }
    id
}

fn hex_digit(v: u64) -> char {
    char::from(b"0123456789abcdef"[(v & 0xf) as usize])
}

/// A deny's body on every door: `{"code","message","request_id"}`.
pub fn deny_json(d: &Deny, request_id: &str) -> String {
    serde_json::json!({"code": d.code.as_str(), "message": d.message, "request_id": request_id})
        .to_string()
}

/// Response headers of a deny: keygate's own, then the scheme's (vendor SDKs read them).
pub fn deny_headers(d: &Deny, request_id: &str) -> Vec<(String, String)> {
    let mut h = vec![
        ("x-keygate-error".to_owned(), d.code.as_str().to_owned()),
        ("x-keygate-request-id".to_owned(), request_id.to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    h.extend(d.headers.iter().cloned());
    h
}

/// The deny for a call over the in-flight bound: fast, with a code, instead of a
/// growing queue.
pub fn overloaded() -> Deny {
    Deny::new(
        DenyCode::Overloaded,
        "keygate is shedding load; retry shortly",
    )
}

/// Counts and logs a deny a door made before (or instead of) `decide` (shed, timed
/// out, untranslatable), so `/metrics` and the log see every refusal.
pub fn record_early_deny(shared: &Shared, d: &Deny, request_id: &str) {
    let decision = Decision::Deny(d.clone());
    shared.metrics.record(&decision, 0);
    shared.decision_log.record(None, request_id, &decision, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_door_answers_only_statuses_its_proxy_reads_as_a_deny() {
        for code in DenyCode::ALL {
            let real = code.status().http;
            assert_eq!(Door::Grpc.http_status(code), real);
            assert_eq!(Door::NginxRenderer.http_status(code), real);
            let envoy = Door::EnvoyHttp.http_status(code);
            assert!((400..500).contains(&envoy), "{code}: {envoy}");
            let nginx = Door::NginxAuthRequest.http_status(code);
            assert!(nginx == 401 || nginx == 403, "{code}: {nginx}");
        }
        assert_eq!(Door::EnvoyHttp.http_status(DenyCode::Overloaded), 429);
        assert_eq!(Door::EnvoyHttp.http_status(DenyCode::Internal), 403);
        assert_eq!(
            Door::NginxAuthRequest.http_status(DenyCode::SignatureMismatch),
            401
        );
    }

    #[test]
    fn request_ids_are_the_callers_when_sane_else_fresh_and_distinct() {
        assert_eq!(request_id_or_new(Some("abc-123")), "abc-123");
        let a = request_id_or_new(Some("has space"));
        let b = request_id_or_new(None);
        assert_ne!(a, b);
        assert_eq!((a.len(), b.len()), (24, 24));
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_eq!(a[..16], b[..16], "one prefix per process");
        let (x, y) = (
            u32::from_str_radix(&a[16..], 16).unwrap(),
            u32::from_str_radix(&b[16..], 16).unwrap(),
        );
        assert!(y > x, "the counter counts: {a} then {b}");
    }
}
