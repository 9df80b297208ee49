//! AWS SigV4 header form (`Authorization: AWS4-HMAC-SHA256 ...`): credential scope,
//! signed headers, canonical request. The presigned form is reached through the query.
#![no_main]

use keygate_fuzz::{Req, exercise, judge};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

fuzz_target!(|r: Req| {
    let v = r.view_prefixed(NAMES, &[("authorization", "AWS4-HMAC-SHA256 ")]);
    exercise(&v);
    judge(&v);
});
