//! The HTTP front doors' translations plus the pipeline: NGINX's auth subrequest
//! (`X-Original-*` plus the client's headers) and Envoy's HTTP mode (`/envoy/<path>`),
//! from any header names and values the HTTP layer can carry.
#![no_main]

use arbitrary::Arbitrary;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use keygate::server::{envoy_http, nginx};
use keygate_fuzz::{exercise, judge};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "x-original-method",
    "x-original-uri",
    "x-original-host",
    "x-original-scheme",
    "x-original-content-length",
    "x-original-transfer-encoding",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-for",
    "host",
    "authorization",
    "x-ca-key",
    "x-ca-signature",
    "x-bkapi-authorization",
    "signature-input",
    "signature",
    "x-envoy-auth-partial-body",
];

#[derive(Arbitrary, Debug)]
struct Input {
    headers: Vec<(u8, Vec<u8>)>,
    free: Vec<(String, Vec<u8>)>,
    method: String,
    target: String,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mut map = HeaderMap::new();
    let named = input
        .headers
        .iter()
        .map(|(i, v)| (NAMES[usize::from(*i) % NAMES.len()].to_owned(), v));
    for (n, v) in named.chain(input.free.iter().map(|(n, v)| (n.clone(), v))) {
        // What the HTTP layer cannot carry never reaches a door.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            map.append(n, v);
        }
    }
    if let Ok(v) = nginx::view_from_nginx(&map) {
        exercise(&v);
        judge(&v);
    }
    let mut b = axum::http::Request::builder()
        .method(input.method.as_str())
        .uri(format!("/envoy{}", input.target));
    for (n, v) in &map {
        b = b.header(n, v);
    }
    if let Ok(req) = b.body(axum::body::Body::from(input.body.clone())) {
        let mut v = envoy_http::view_from_envoy_http(&req);
        v.body = Some(input.body);
        exercise(&v);
        judge(&v);
    }
});
