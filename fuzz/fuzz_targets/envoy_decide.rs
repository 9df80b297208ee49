//! The Envoy front door's translation plus the whole pipeline: any bytes, decoded as a
//! protobuf `CheckRequest` (so the fuzzer explores the real wire shape: header maps,
//! raw header_map bytes, bodies, context extensions), then `view_from_envoy` and
//! `decide` in the fuzz world, with its invariants.
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use keygate::server::check::view_from_envoy;
use keygate_fuzz::{exercise, judge};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = CheckRequest::decode(data) else {
        return;
    };
    let v = view_from_envoy(&req);
    exercise(&v);
    judge(&v);
});
