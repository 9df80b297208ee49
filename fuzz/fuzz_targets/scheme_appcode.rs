//! AppCode (`Authorization: APPCODE <code>`, `AppCode=` query), alone and next to
//! `X-Ca-Key`.
#![no_main]

use keygate_fuzz::{Req, exercise, judge};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &["authorization", "x-ca-key", "x-ca-signature"];

fuzz_target!(|r: Req| {
    let v = r.view_prefixed(NAMES, &[("authorization", "APPCODE ")]);
    exercise(&v);
    judge(&v);
});
