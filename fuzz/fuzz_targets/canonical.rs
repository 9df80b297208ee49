//! The shared canonicaliser and the schemes' small parsers on arbitrary text and bytes.
#![no_main]

use keygate::scheme::{aliyun, canonical, rfc9421, sigv4, tencent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &[u8])| {
    let (s, bytes) = input;
    let _ = canonical::percent_decode(s, true);
    let _ = canonical::percent_decode(s, false);
    let _ = canonical::decode_lossy(s, true);
    let mut params = canonical::first_wins_params(s);
    canonical::merge_params(&mut params, canonical::first_wins_params(s));
    let mut out = String::new();
    canonical::push_path_and_params(&mut out, s, &mut params);
    let _ = canonical::raw_pairs(s).count();
    let _ = canonical::query_param(Some(s), "a");
    let _ = canonical::query_param_count(Some(s), "X-Amz-Algorithm");
    let _ = canonical::auth_params(s);
    let _ = canonical::parse_amz_date(s);
    let _ = canonical::parse_http_date_ms(s);
    let _ = canonical::b64_decode(s);
    let mut buf = [0u8; 64];
    let _ = canonical::b64_decode_tag(s, &mut buf);
    let _ = canonical::form_encode(bytes);
    let _ = canonical::aws_encode(bytes, true);
    let _ = canonical::upper_method(s);
    let _ = canonical::echo_hash_form(s);
    let escaped = canonical::echo_escaped(s);
    assert!(!escaped.contains(['\r', '\n']), "{escaped:?}");
    if let Ok(ms) = i64::try_from(bytes.len()).map(|n| n.wrapping_mul(86_400_000_123)) {
        let _ = canonical::format_http_date(ms);
        let _ = canonical::format_amz_date(ms);
    }
    let _ = aliyun::signed_header_names(s);
    let _ = aliyun::parse_timestamp(s);
    let _ = sigv4::canonical_query(Some(s), true, true);
    for m in [
        sigv4::UriMode::DoubleEncoded,
        sigv4::UriMode::SingleEncoded,
        sigv4::UriMode::Raw,
    ] {
        let _ = sigv4::canonical_uri(s, m);
    }
    let _ = rfc9421::sf::parse_dictionary(s);
    let _ = tencent::strip_env_prefix(s);
});
