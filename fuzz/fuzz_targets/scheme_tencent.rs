//! Tencent (`Authorization: hmac ...`) parameter parsing, signing string, `X-Date`.
#![no_main]

use keygate_fuzz::{Req, exercise, judge};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &["authorization", "x-date", "x-apigw-nonce", "source"];

fuzz_target!(|r: Req| {
    let v = r.view_prefixed(NAMES, &[("authorization", "hmac ")]);
    exercise(&v);
    judge(&v);
});
