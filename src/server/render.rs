//! How a deny looks on the wire, shared by every front door: the JSON body
//! `{"code","message","request_id"}`, `x-keygate-error`, and the scheme's own headers.

use crate::deny::Deny;
use crate::request::RequestView;

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
    let mut raw = [0u8; 12];
    // Without randomness the id is still unique enough for logs: fall back to zeros.
    let _ = getrandom::getrandom(&mut raw);
    hex::encode(raw)
}

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
