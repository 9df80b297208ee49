//! What the two HTTP doors (`nginx`, `envoy_http`) share on the wire: request headers
//! read from an `http::HeaderMap`, and an allow or a deny built as an HTTP response.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Door, deny_headers, deny_json, record_early_deny};
use crate::decide::Allow;
use crate::deny::Deny;
use crate::request::Headers;
use crate::server::shared::Shared;

/// Request headers as `Headers`, skipping the names in `skip` (lower-case). A value
/// that is not UTF-8 is kept lossily: a signature over it then fails, which is a deny.
pub fn headers_from(map: &HeaderMap, skip: &[&str]) -> Headers {
    let mut out = Headers::new();
    for (name, value) in map {
        let name = name.as_str();
        if skip.contains(&name) {
            continue;
        }
        match value.to_str() {
            Ok(v) => out.push(name, v),
            Err(_) => out.push(name, String::from_utf8_lossy(value.as_bytes()).into_owned()),
        }
    }
    out
}

/// First value of `name` as text, if it is visible ASCII.
pub fn header_str<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
    map.get(name).and_then(|v| v.to_str().ok())
}

/// Appends `name: value` when both are valid on the wire; a value keygate cannot send
/// is dropped rather than failing the answer.
pub fn push_header(out: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        out.append(n, v);
    }
}

/// An allow: exactly 200 (Envoy treats any other 2xx as a deny), the identity headers
/// and the request id, no body.
pub fn allow_response(a: &Allow, request_id: &str, extra: &[(&str, String)]) -> Response {
    // Sized once: growing a HeaderMap rehashes it, on every allow.
    let mut headers = HeaderMap::with_capacity(a.headers_to_set.len() + 1 + extra.len());
    for (k, v) in &a.headers_to_set {
        push_header(&mut headers, k, v);
    }
    push_header(&mut headers, "x-keygate-request-id", request_id);
    for (k, v) in extra {
        push_header(&mut headers, k, v);
    }
    (StatusCode::OK, headers).into_response()
}

/// A deny as `door` answers it: its status (`Door::http_status`), keygate's headers,
/// the scheme's, and the JSON body.
pub fn deny_response(d: &Deny, request_id: &str, door: Door) -> Response {
    let listed = deny_headers(d, request_id);
    let mut headers = HeaderMap::with_capacity(listed.len());
    for (k, v) in listed {
        push_header(&mut headers, &k, &v);
    }
    let status = StatusCode::from_u16(door.http_status(d.code)).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = Response::new(Body::from(deny_json(d, request_id)));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A deny an HTTP door makes before (or instead of) `decide`: counted and logged, then
/// answered by `render` (the door's own deny) with the caller's request id.
pub fn early_deny(
    shared: &Shared,
    d: Deny,
    request_id: &str,
    render: fn(&Deny, &str) -> Response,
) -> Response {
    record_early_deny(shared, &d, request_id);
    render(&d, request_id)
}
