//! Envoy HTTP-mode front door: ext_authz `http_service` with `path_prefix: /envoy`.
//!
//! Owns: translating Envoy's authorization request into a `RequestView` and a
//! `Decision` into the response Envoy reads. No policy.
//!
//! What Envoy sends (Envoy's ext_authz filter docs, "HTTP service"): the client's method, `path_prefix` + the
//! original path with its query, the original `Host`, `Authorization`, the headers
//! matching `allowed_headers`, and the buffered body when `with_request_body` is set
//! (then with `x-envoy-auth-partial-body`). `Content-Length` is Envoy's own (0 or the
//! buffered length), so an empty body without that marker means "not sent", never
//! "empty": a body digest then stays unverified (`x-keygate-body: unverified`) and an API
//! that requires one is denied.
//!
//! The stage comes from `x-keygate-route-stage`, which the Envoy config adds to the
//! authorization request; the client's `X-Ca-Stage` only with `--trust-client-stage`.
//!
//! What Envoy reads back: exactly 200 allows (any other 2xx would be a deny); our
//! headers matching `allowed_upstream_headers` are set upstream, and
//! `x-envoy-auth-headers-to-remove` strips the credential headers. A 5xx would count
//! as an authorization-server *error* and fall to `failure_mode_allow`/`status_on_error`,
//! so a deny is never 5xx here: overload and a full replay cache answer 429, an
//! internal fault 403, each with the real code in `x-keygate-error` and the JSON body.

use axum::extract::Request;
use axum::response::Response;

use std::sync::Arc;

use super::http_wire::{allow_response, deny_response, early_deny, header_str, headers_from};
use super::{Door, overloaded, request_id};
use crate::decide::Decision;
use crate::deny::{Deny, DenyCode};
use crate::request::{ROUTE_STAGE_HEADER, RequestView};
use crate::server::shared::Shared;
use crate::server::shed::InFlight;

pub const PREFIX: &str = "/envoy";

/// True for `/envoy` and `/envoy/...`.
pub fn matches(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The request Envoy describes, body aside.
pub fn view_from_envoy_http(req: &Request) -> RequestView {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str());
    let original = target.strip_prefix(PREFIX).unwrap_or(target);
    let original = if original.starts_with('/') {
        original.to_owned()
    } else {
        format!("/{original}")
    };
    let headers = req.headers();
    let mut view = RequestView {
        method: req.method().as_str().to_ascii_uppercase(),
        host: header_str(headers, "host").unwrap_or_default().to_owned(),
        scheme: header_str(headers, "x-forwarded-proto")
            .unwrap_or_default()
            .to_ascii_lowercase(),
        headers: headers_from(headers, &[]),
        peer: header_str(headers, "x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned()),
        ..RequestView::default()
    };
    view.set_target(&original);
    // Only Envoy can put this header on the authorization request (`headers_to_add`);
    // a client's copy is not among `allowed_headers` and never reaches keygate.
    view.stage_hint = header_str(headers, ROUTE_STAGE_HEADER)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    view
}

/// The body Envoy attached, if it attached one (see the module doc).
fn attach_body(view: &mut RequestView, body: Vec<u8>) {
    match view.headers.get("x-envoy-auth-partial-body") {
        Some(partial) => {
            view.body_partial = partial.eq_ignore_ascii_case("true");
            view.body = Some(body);
        }
        None if !body.is_empty() => view.body = Some(body),
        None => view.body = None,
    }
}

/// A deny as this door answers it.
pub fn deny(d: &Deny, request_id: &str) -> Response {
    deny_response(d, request_id, Door::EnvoyHttp)
}

/// Reads the body (bounded), then takes an in-flight slot and decides: a slow body
/// holds no slot.
pub async fn check(shared: &Shared, req: Request, in_flight: &Arc<InFlight>) -> Response {
    let mut view = view_from_envoy_http(&req);
    let request_id = request_id(&view);
    // Read no more than the limit (`--max-request-body-bytes`; set Envoy's
    // `max_request_bytes` at or below it): a bigger body is a deny, never buffered.
    let max = shared.config.limits.max_request_body_bytes;
    let body = match axum::body::to_bytes(req.into_body(), max).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            let d = Deny::new(
                DenyCode::BodyTooLarge,
                format!("the body is larger than the {max} bytes keygate accepts"),
            );
            return early_deny(shared, d, &request_id, deny);
        }
    };
    attach_body(&mut view, body);
    let Some(_slot) = in_flight.try_acquire() else {
        return early_deny(shared, overloaded(), &request_id, deny);
    };
    match shared.decide(&view, &request_id).await {
        Decision::Allow(a) => {
            let remove = a.headers_to_remove.join(", ");
            let extra: Vec<(&str, String)> = if remove.is_empty() {
                Vec::new()
            } else {
                vec![("x-envoy-auth-headers-to-remove", remove)]
            };
            allow_response(&a, &request_id, &extra)
        }
        Decision::Deny(d) => deny(&d, &request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    /// Builds a request the way Envoy would send it.
    pub fn envoy_request(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Request {
        let mut b = axum::http::Request::builder()
            .method(method)
            .uri(format!("{PREFIX}{target}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::from(body)).unwrap_or_default()
    }

    #[test]
    fn prefix_is_stripped_and_the_raw_target_kept() {
        let req = envoy_request(
            "post",
            "/v1//items%2Fx?b=2&a=1",
            &[("host", "api.example.com"), ("x-ca-key", "K")],
            Vec::new(),
        );
        let v = view_from_envoy_http(&req);
        assert_eq!(v.method, "POST");
        assert_eq!(v.path, "/v1//items%2Fx");
        assert_eq!(v.query.as_deref(), Some("b=2&a=1"));
        assert_eq!(v.host, "api.example.com");
        assert_eq!(v.headers.get("x-ca-key"), Some("K"));
    }

    #[test]
    fn matches_only_the_prefix_as_a_whole_segment() {
        assert!(matches("/envoy"));
        assert!(matches("/envoy/"));
        assert!(matches("/envoy/a/b"));
        assert!(!matches("/envoyx"));
        assert!(!matches("/nginx/check"));
    }

    #[test]
    fn body_is_known_only_when_envoy_attached_it() {
        let mut v = RequestView::default();
        attach_body(&mut v, Vec::new());
        assert!(v.body.is_none(), "empty without the marker means not sent");
        attach_body(&mut v, b"x=1".to_vec());
        assert_eq!(v.body.as_deref(), Some(&b"x=1"[..]));
        let mut v = RequestView::default();
        v.headers.push("x-envoy-auth-partial-body", "true");
        attach_body(&mut v, b"abc".to_vec());
        assert!(v.body_partial);
        let mut v = RequestView::default();
        v.headers.push("x-envoy-auth-partial-body", "false");
        attach_body(&mut v, Vec::new());
        assert_eq!(
            v.body.as_deref(),
            Some(&b""[..]),
            "marker + empty = empty body"
        );
    }
}
