//! BlueKing (`X-Bkapi-Authorization` JSON; the legacy `bk_signature` query form).
#![no_main]

use keygate_fuzz::{Req, exercise, judge};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &["x-bkapi-authorization", "authorization"];

fuzz_target!(|r: Req| {
    let v = r.view(NAMES);
    exercise(&v);
    judge(&v);
});
