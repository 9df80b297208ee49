//! RFC 9421 (`Signature-Input` / `Signature`): structured-field dictionaries, covered
//! components, the signature base.
#![no_main]

use keygate_fuzz::{Req, exercise, judge};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &["signature-input", "signature", "content-digest"];

fuzz_target!(|r: Req| {
    let v = r.view(NAMES);
    exercise(&v);
    judge(&v);
});
