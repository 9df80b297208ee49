//! The pipeline on any `RequestView`: every watched header name available, routing
//! hints, bodies, partial bodies.
#![no_main]

use keygate_fuzz::{Req, exercise, judge};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "authorization",
    "x-ca-key",
    "x-ca-signature",
    "x-ca-signature-headers",
    "x-ca-timestamp",
    "x-ca-nonce",
    "x-bkapi-authorization",
    "x-date",
    "x-amz-date",
    "x-amz-content-sha256",
    "signature-input",
    "signature",
    "content-digest",
    "x-request-id",
];

fuzz_target!(|r: Req| {
    let v = r.view(NAMES);
    exercise(&v);
    judge(&v);
});
