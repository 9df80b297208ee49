//! The Envoy gRPC front door's translation plus the whole pipeline: a `CheckRequest`
//! built from structured input (header map or raw `header_map` bytes, pseudo-headers,
//! bodies, context extensions) or decoded from raw protobuf bytes, then
//! `view_from_envoy` and `decide` in the fuzz world, with its invariants.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use keygate::server::door::grpc::view_from_envoy;
use keygate_fuzz::{exercise, judge};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const NAMES: &[&str] = &[
    ":path",
    ":authority",
    ":method",
    "authorization",
    "x-ca-key",
    "x-ca-signature",
    "x-ca-signature-headers",
    "x-ca-timestamp",
    "x-ca-nonce",
    "x-bkapi-authorization",
    "x-date",
    "x-amz-date",
    "signature-input",
    "signature",
    "content-digest",
    "content-type",
    "content-length",
    "transfer-encoding",
    "x-envoy-auth-partial-body",
    "x-request-id",
];

#[derive(Arbitrary, Debug)]
enum Input {
    /// Raw protobuf bytes, as they could arrive on the wire.
    Proto(Vec<u8>),
    Structured {
        method: String,
        host: String,
        path: String,
        headers: Vec<(u8, String)>,
        raw_headers: Option<Vec<(u8, Vec<u8>)>>,
        body: String,
        raw_body: Vec<u8>,
        stage: Option<String>,
        api: Option<String>,
    },
}

fn build(input: Input) -> Option<CheckRequest> {
    let (method, host, path, headers, raw_headers, body, raw_body, stage, api) = match input {
        Input::Proto(bytes) => return CheckRequest::decode(bytes.as_slice()).ok(),
        Input::Structured {
            method,
            host,
            path,
            headers,
            raw_headers,
            body,
            raw_body,
            stage,
            api,
        } => (
            method,
            host,
            path,
            headers,
            raw_headers,
            body,
            raw_body,
            stage,
            api,
        ),
    };
    let name = |i: u8| NAMES[usize::from(i) % NAMES.len()].to_owned();
    let http = HttpRequest {
        method,
        host,
        path,
        headers: headers
            .into_iter()
            .map(|(i, v)| (name(i), v))
            .collect::<HashMap<_, _>>(),
        header_map: raw_headers.map(|h| HeaderMap {
            headers: h
                .into_iter()
                .map(|(i, raw_value)| HeaderValue {
                    key: name(i),
                    value: String::new(),
                    raw_value,
                })
                .collect(),
        }),
        body,
        raw_body,
        ..Default::default()
    };
    let mut ext = HashMap::new();
    if let Some(s) = stage {
        ext.insert("stage".to_owned(), s);
    }
    if let Some(a) = api {
        ext.insert("api".to_owned(), a);
    }
    Some(CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            context_extensions: ext,
            ..Default::default()
        }),
    })
}

fuzz_target!(|input: Input| {
    let Some(req) = build(input) else { return };
    let v = view_from_envoy(&req);
    exercise(&v);
    judge(&v);
});
