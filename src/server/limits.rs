//! Size limits on a checked request, applied to every front door's `RequestView`
//! before the pipeline runs (`Shared::decide`).
//!
//! Owns: what counts toward the header budget (names and values, plus method, host,
//! path and query, the way HTTP servers count the request line) and the deny codes of
//! an oversized request: `HeadersTooLarge` (431) and `BodyTooLarge` (413). An oversized
//! request is always a deny, never an allow; the limits are checked before any scheme
//! parses a header, so the cost of a hostile request is bounded by them.

use crate::config::Limits;
use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

/// The deny for a request over a limit, or `None` when it is within all of them.
pub fn check(view: &RequestView, limits: &Limits) -> Option<Deny> {
    let count = view.headers.len();
    if count > limits.max_request_headers {
        return Some(Deny::new(
            DenyCode::HeadersTooLarge,
            format!(
                "request has {count} headers; the limit is {}",
                limits.max_request_headers
            ),
        ));
    }
    let line = view.method.len()
        + view.host.len()
        + view.path.len()
        + view.query.as_ref().map_or(0, String::len);
    let bytes = view
        .headers
        .iter()
        .fold(line, |n, (k, v)| n.saturating_add(k.len() + v.len()));
    if bytes > limits.max_request_header_bytes {
        return Some(Deny::new(
            DenyCode::HeadersTooLarge,
            format!(
                "request headers, path and query take {bytes} bytes; the limit is {}",
                limits.max_request_header_bytes
            ),
        ));
    }
    if let Some(body) = &view.body
        && body.len() > limits.max_request_body_bytes
    {
        return Some(Deny::new(
            DenyCode::BodyTooLarge,
            format!(
                "request body of {} bytes; the limit is {}",
                body.len(),
                limits.max_request_body_bytes
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;

    fn limits() -> Limits {
        Limits {
            max_request_headers: 3,
            max_request_header_bytes: 64,
            max_request_body_bytes: 10,
            ..Limits::default()
        }
    }

    fn view(headers: &[(&str, &str)], path: &str, body: Option<&[u8]>) -> RequestView {
        let mut h = Headers::new();
        for (k, v) in headers {
            h.push(k, *v);
        }
        RequestView {
            method: "GET".into(),
            host: "h".into(),
            path: path.into(),
            headers: h,
            body: body.map(<[u8]>::to_vec),
            ..RequestView::default()
        }
    }

    #[test]
    fn within_limits_passes() {
        let v = view(
            &[("a", "1"), ("b", "2"), ("c", "3")],
            "/x",
            Some(b"0123456789"),
        );
        assert_eq!(check(&v, &limits()), None);
    }

    #[test]
    fn each_limit_has_its_code() {
        let code = |v: &RequestView| check(v, &limits()).map(|d| d.code);
        let many = view(&[("a", ""), ("b", ""), ("c", ""), ("d", "")], "/", None);
        assert_eq!(code(&many), Some(DenyCode::HeadersTooLarge));
        let long_value = view(&[("a", &"v".repeat(60))], "/", None);
        assert_eq!(code(&long_value), Some(DenyCode::HeadersTooLarge));
        // The path counts toward the header bytes.
        let long_path = view(&[], &format!("/{}", "p".repeat(64)), None);
        assert_eq!(code(&long_path), Some(DenyCode::HeadersTooLarge));
        let mut long_query = view(&[], "/", None);
        long_query.query = Some("q".repeat(64));
        assert_eq!(code(&long_query), Some(DenyCode::HeadersTooLarge));
        let big_body = view(&[], "/", Some(&[0u8; 11]));
        assert_eq!(code(&big_body), Some(DenyCode::BodyTooLarge));
    }

    #[test]
    fn oversized_maps_to_4xx() {
        assert_eq!(DenyCode::HeadersTooLarge.status().http, 431);
        assert_eq!(DenyCode::BodyTooLarge.status().http, 413);
    }
}
