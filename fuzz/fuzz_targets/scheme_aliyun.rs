//! Alibaba (`X-Ca-*`) detection and parsing: any values in its headers, duplicated
//! or not, next to the common ones.
#![no_main]

use keygate_fuzz::{Req, exercise, judge};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "x-ca-key",
    "x-ca-signature",
    "x-ca-signature-headers",
    "x-ca-signature-method",
    "x-ca-timestamp",
    "x-ca-nonce",
    "authorization",
];

fuzz_target!(|r: Req| {
    let v = r.view(NAMES);
    exercise(&v);
    judge(&v);
});
