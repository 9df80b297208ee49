//! Canonicalisation helpers shared by every scheme and by the signer.
//!
//! Owns: percent decoding/encoding, query and form parameter handling, header lookup
//! that knows where `host` lives, HMAC/digest helpers, the constant-time comparison,
//! Base64, the `Authorization` parameter-list scanner, and the date conversions the
//! schemes need. One implementation of each, so a verifier and the signer can never
//! disagree about a byte. Must not hold policy: no deny codes are chosen here.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use crate::request::RequestView;

/// Most signed headers / covered components a credential may list. Real clients sign a
/// handful; the cap keeps a hostile list from costing quadratic work.
pub const MAX_SIGNED_NAMES: usize = 64;

// === Base64 ===

/// Standard alphabet; encodes with padding, decodes with or without it (clients
/// disagree on whether to strip `=`, and padding carries no information).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn b64_encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes standard Base64, ignoring surrounding whitespace. `None` on any bad byte.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim()).ok()
}

/// Decodes a Base64 MAC tag (at most 64 bytes) without allocating; `None` if invalid
/// or too long.
pub fn b64_decode_tag<'b>(s: &str, buf: &'b mut [u8; 64]) -> Option<&'b [u8]> {
    let s = s.trim();
    if s.len() > 88 {
        return None;
    }
    let n = B64.decode_slice(s, buf).ok()?;
    buf.get(..n)
}

// === HMAC and digests ===

/// The HMAC hash functions the schemes accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HmacAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HmacAlg {
    /// HMAC of the concatenation of `parts` under `key`.
    ///
    /// `None` only if the MAC refuses the key, which HMAC never does; callers still
    /// treat it as a failure so that no path can compare against an empty tag.
    pub fn mac(self, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
            for p in parts {
                m.update(p);
            }
            Some(m.finalize().into_bytes().to_vec())
        }
        match self {
            HmacAlg::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
            HmacAlg::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
            HmacAlg::Sha384 => run::<Hmac<sha2::Sha384>>(key, parts),
            HmacAlg::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
        }
    }

    /// `true` when `tag` is the HMAC of `msg`; constant time in the tag's content.
    pub fn verify(self, key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
        match self.mac(key, &[msg]) {
            Some(expected) => ct_eq(&expected, tag),
            None => false,
        }
    }
}

/// Constant-time equality. Lengths are not secret (every tag of one algorithm has the
/// same length); empty inputs never compare equal, so an absent tag cannot match.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn md5(data: &[u8]) -> [u8; 16] {
    md5::Md5::digest(data).into()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

pub fn sha512(data: &[u8]) -> [u8; 64] {
    sha2::Sha512::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

// === Percent encoding ===

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` (and `+` as space when `plus_as_space`). A `%` not followed by two hex
/// digits stays literal, as every server library we mirror does. Borrows when nothing
/// needs decoding, which is the common case.
pub fn percent_decode(input: &str, plus_as_space: bool) -> Cow<'_, [u8]> {
    let bytes = input.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_as_space && b == b'+'))
    {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(if plus_as_space && b == b'+' { b' ' } else { b });
        i += 1;
    }
    Cow::Owned(out)
}

/// `percent_decode` as text; invalid UTF-8 becomes U+FFFD, which is what the Java and
/// Python SDKs' decoders produce for the same input.
pub fn decode_lossy(input: &str, plus_as_space: bool) -> Cow<'_, str> {
    match percent_decode(input, plus_as_space) {
        Cow::Borrowed(_) => Cow::Borrowed(input),
        Cow::Owned(v) => match String::from_utf8(v) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        },
    }
}

fn upper_hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + (n - 10) })
}

fn push_pct(out: &mut String, b: u8) {
    out.push('%');
    out.push(upper_hex_digit(b >> 4));
    out.push(upper_hex_digit(b & 0x0f));
}

/// AWS SigV4 URI encoding: every byte except `A-Z a-z 0-9 - _ . ~` (and `/` when
/// `keep_slash`) becomes `%XX` with upper-case hex.
pub fn aws_encode_into(out: &mut String, bytes: &[u8], keep_slash: bool) {
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            push_pct(out, b);
        }
    }
}

pub fn aws_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut s = String::with_capacity(bytes.len());
    aws_encode_into(&mut s, bytes, keep_slash);
    s
}

/// The `application/x-www-form-urlencoded` percent-encode set (everything but ASCII
/// alphanumerics and `*-._`), with a space written `%20` as RFC 9421 §2.2.8 requires.
pub fn form_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') {
            s.push(char::from(b));
        } else {
            push_pct(&mut s, b);
        }
    }
    s
}

// === Query and form parameters ===

/// Raw `name=value` pairs of a query or form body, split on `&` and at the first `=`.
/// Empty segments (`a=1&&b=2`) are skipped; a bare `name` yields an empty value.
pub fn raw_pairs(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    raw.split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| seg.split_once('=').unwrap_or((seg, "")))
}

/// Decoded parameters, sorted by name (byte order), in which the first value of a
/// repeated name wins and names that decode to nothing are dropped (the Java SDK skips
/// blank keys). O(n log n): a client controls how many parameters there are.
pub fn first_wins_params(raw: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = raw_pairs(raw)
        .filter_map(|(n, v)| {
            let name = decode_lossy(n, true);
            (!name.is_empty()).then(|| (name.into_owned(), decode_lossy(v, true).into_owned()))
        })
        .collect();
    // A stable sort keeps repeated names in arrival order, so dedup keeps the first.
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.dedup_by(|later, earlier| later.0 == earlier.0);
    out
}

/// Most query plus form parameters a sorted string-to-sign may hold: bounds the work a
/// request with a real AppKey but no valid signature can cost (decode, sort) before the
/// signature is known good. Real API calls carry a few dozen.
pub const MAX_SIGNED_PARAMS: usize = 512;

/// Why parameters cannot be told apart in a string-to-sign built from sorted, decoded
/// `name=value` pairs (Alibaba, Tencent): a repeated name (which value did the client
/// sign, and which one will the upstream read?), a name that decodes to text holding `&`
/// or `=`, or a value holding `&` (`a=1%26b%3D2` and `a=1&b=2` sign alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamAmbiguity {
    TooMany,
    Repeated(String),
    Separator(String),
}

/// The first ambiguity among the parameters of a query and a form body together.
pub fn param_ambiguity(query: Option<&str>, form: Option<&str>) -> Option<ParamAmbiguity> {
    let mut names: Vec<Cow<'_, str>> = Vec::new();
    for (n, v) in query.into_iter().chain(form).flat_map(raw_pairs) {
        if names.len() == MAX_SIGNED_PARAMS {
            return Some(ParamAmbiguity::TooMany);
        }
        let name = decode_lossy(n, true);
        if name.contains(['&', '=']) || decode_lossy(v, true).contains('&') {
            return Some(ParamAmbiguity::Separator(name.into_owned()));
        }
        if !name.is_empty() {
            names.push(name);
        }
    }
    names.sort_unstable();
    names
        .windows(2)
        .find(|w| w.first() == w.get(1))
        .and_then(|w| w.first())
        .map(|n| ParamAmbiguity::Repeated(n.clone().into_owned()))
}

/// Merges two `first_wins_params` results: a name present in both takes `over`'s value.
pub fn merge_params(base: &mut Vec<(String, String)>, over: Vec<(String, String)>) {
    let old = std::mem::take(base);
    let mut a = old.into_iter().peekable();
    let mut b = over.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(x), Some(y)) => match x.0.as_bytes().cmp(y.0.as_bytes()) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => {
                    a.next();
                    false
                }
            },
        };
        let next = if take_a { a.next() } else { b.next() };
        base.extend(next);
    }
}

/// Appends `path` then, if there are parameters, `?k1=v1&k2&...` sorted by name in
/// byte order; an empty value is written as the bare name (Alibaba and Tencent rule).
pub fn push_path_and_params(out: &mut String, path: &str, params: &mut [(String, String)]) {
    out.push_str(path);
    params.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (i, (k, v)) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        if !v.is_empty() {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// Finds a query parameter by exact (decoded) name: `Some(value)` of its first
/// occurrence, decoded with `+` as space. Names are compared raw first, so the common
/// ASCII case costs no allocation.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    let q = query?;
    raw_pairs(q)
        .find(|(n, _)| *n == name || (n.contains('%') && decode_lossy(n, true) == name))
        .map(|(_, v)| decode_lossy(v, true))
}

/// How many times a parameter name occurs in the query.
pub fn query_param_count(query: Option<&str>, name: &str) -> usize {
    query.map_or(0, |q| {
        raw_pairs(q)
            .filter(|(n, _)| *n == name || (n.contains('%') && decode_lossy(n, true) == name))
            .count()
    })
}

// === Headers ===

/// First value of a header, `host` answered from the request's authority because
/// proxies carry it as a pseudo-header rather than a header.
pub fn header<'a>(view: &'a RequestView, name: &str) -> Option<&'a str> {
    if name == "host" && !view.host.is_empty() {
        return Some(view.host.as_str());
    }
    view.headers.get(name)
}

/// The first of `names` (any case) that the request carries more than once. The
/// Alibaba and Tencent strings-to-sign take one value per header: with two copies the
/// verifier would check one while the upstream may read the other, so a signed header
/// must appear once. `host` is exempt: it is read from the authority.
pub fn repeated_header<'n>(
    view: &RequestView,
    names: impl IntoIterator<Item = &'n str>,
) -> Option<&'n str> {
    names.into_iter().find(|name| {
        !name.eq_ignore_ascii_case("host")
            && view
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .nth(1)
                .is_some()
    })
}

/// Every value of a header joined by `sep` (`None` if absent); `host` as in `header`.
pub fn header_joined<'a>(view: &'a RequestView, name: &str, sep: &str) -> Option<Cow<'a, str>> {
    if name == "host" && !view.host.is_empty() {
        return Some(Cow::Borrowed(view.host.as_str()));
    }
    let mut it = view
        .headers
        .iter()
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v);
    let first = it.next()?;
    match it.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut s = String::from(first);
            s.push_str(sep);
            s.push_str(second);
            for v in it {
                s.push_str(sep);
                s.push_str(v);
            }
            Some(Cow::Owned(s))
        }
    }
}

/// `Content-Type` says the body is an URL-encoded form (case-insensitive prefix).
pub fn is_form(view: &RequestView) -> bool {
    view.headers.get("content-type").is_some_and(|ct| {
        ct.trim_start()
            .get(..33)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    })
}

/// Whether the request carries a body, judged from the body when the proxy sent it
/// and from the framing headers otherwise.
pub fn has_body(view: &RequestView) -> bool {
    match &view.body {
        Some(b) => !b.is_empty() || view.body_partial,
        None => {
            view.headers.contains("transfer-encoding")
                || view
                    .headers
                    .get("content-length")
                    .is_some_and(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0))
        }
    }
}

/// Upper-cases the method if needed (proxies already do; the copy is the rare path).
pub fn upper_method(method: &str) -> Cow<'_, str> {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(method.to_ascii_uppercase())
    } else {
        Cow::Borrowed(method)
    }
}

/// Most bytes of one echo of request-derived text (a string-to-sign, a canonical
/// request, a header name) in a deny's message or vendor headers: far more than any
/// real string-to-sign, and small enough that a deny always fits a proxy's limits. A
/// deny the proxy cannot read (Envoy reads at most 60 KiB of response headers from the
/// authorization service) is an authorization *error* there, not a deny, and
/// `failure_mode_allow` decides what becomes of it.
pub const MAX_ECHO: usize = 2048;
const TRUNCATED: &str = "...(truncated)";

/// Maps `s` char by char into at most `MAX_ECHO` bytes, marking a cut.
fn echo_with(s: &str, map: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_ECHO) + TRUNCATED.len());
    for c in s.chars() {
        if out.len() >= MAX_ECHO {
            out.push_str(TRUNCATED);
            break;
        }
        map(c, &mut out);
    }
    out
}

/// Makes a string-to-sign safe to echo in one header line: line feeds become `#`
/// (Alibaba's own echo form) and any other control byte becomes `?`. At most
/// `MAX_ECHO` bytes (plus a truncation mark).
pub fn echo_hash_form(s: &str) -> String {
    echo_with(s, |c, out| {
        out.push(match c {
            '\n' => '#',
            c if c.is_control() => '?',
            c => c,
        })
    })
}

/// Makes a multi-line canonical text readable on one line: `\n` becomes the two
/// characters `\n`, other control bytes `?`, so messages stay safe in logs and headers.
/// At most `MAX_ECHO` bytes (plus a truncation mark).
pub fn echo_escaped(s: &str) -> String {
    echo_with(s, |c, out| match c {
        '\n' => out.push_str("\\n"),
        c if c.is_control() => out.push('?'),
        c => out.push(c),
    })
}

// === `Authorization` parameter lists ===

/// Scans `k1="v1", k2=v2, ...` (values quoted or bare, separated by commas, spaces
/// tolerated anywhere between items). Keys keep their case; quoted values may escape
/// `"` and `\` with a backslash. `None` on an unterminated quote or a missing `=`.
pub fn auth_params(s: &str) -> Option<Vec<(&str, Cow<'_, str>)>> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return Some(out);
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        if key.is_empty() || key.contains(',') {
            return None;
        }
        let after = after.trim_start();
        if let Some(quoted) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in quoted.char_indices() {
                if escaped {
                    val.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                } else {
                    val.push(c);
                }
            }
            let end = end?;
            out.push((key, Cow::Owned(val)));
            rest = quoted.get(end + 1..)?;
        } else {
            let (val, tail) = after.split_once(',').unwrap_or((after, ""));
            out.push((key, Cow::Borrowed(val.trim())));
            rest = tail;
        }
    }
}

// === Time ===

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of `days_from_civil`: (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses the ISO 8601 basic form `YYYYMMDDTHHMMSSZ` into unix milliseconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    if s.len() != 16 || s.get(8..9) != Some("T") || s.get(15..16) != Some("Z") {
        return None;
    }
    let y = digits(s.get(0..4)?)?;
    let mo = u32::try_from(digits(s.get(4..6)?)?).ok()?;
    let d = u32::try_from(digits(s.get(6..8)?)?).ok()?;
    let h = digits(s.get(9..11)?)?;
    let mi = digits(s.get(11..13)?)?;
    let se = digits(s.get(13..15)?)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000)
}

/// Formats unix milliseconds as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an HTTP date (IMF-fixdate, RFC 850 or asctime) into unix milliseconds.
pub fn parse_http_date_ms(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// Latest instant an IMF-fixdate can show (9999-12-31T23:59:59.999Z); `httpdate`
/// panics beyond it.
const HTTP_DATE_MAX_MS: u64 = 253_402_300_799_999;

/// Formats unix milliseconds as an IMF-fixdate (`Mon, 19 Mar 2018 12:08:40 GMT`),
/// clamped to 1970..=9999 (the format has four year digits).
pub fn format_http_date(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0).min(HTTP_DATE_MAX_MS);
    let t = UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    httpdate::fmt_http_date(t)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_handles_plus_and_bad_escapes() {
        assert_eq!(&*percent_decode("a+b%20c", true), b"a b c");
        assert_eq!(&*percent_decode("a+b%20c", false), b"a+b c");
        assert_eq!(&*percent_decode("%zz%4", false), b"%zz%4");
        assert_eq!(&*percent_decode("%e4%B8%AD", false), "中".as_bytes());
    }

    #[test]
    fn aws_encoding_matches_the_rules() {
        assert_eq!(aws_encode(b"a b+c/~*", true), "a%20b%2Bc/~%2A");
        assert_eq!(aws_encode(b"a/b", false), "a%2Fb");
    }

    #[test]
    fn params_first_wins_and_bare_keys() {
        let mut p = first_wins_params("b=2&a=&c=x%20y&b=3&=skip&d");
        assert_eq!(p.len(), 4);
        let mut s = String::new();
        push_path_and_params(&mut s, "/v1/items", &mut p);
        assert_eq!(s, "/v1/items?a&b=2&c=x y&d");
    }

    #[test]
    fn merge_prefers_over() {
        let mut base = first_wins_params("a=1&b=2");
        merge_params(&mut base, first_wins_params("b=9&c=3"));
        assert_eq!(
            base,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "9".into()),
                ("c".into(), "3".into())
            ]
        );
    }

    #[test]
    fn auth_params_scanner() {
        let p = auth_params(
            r#"id="k", algorithm="hmac-sha1", headers="x-date source", signature="a\"b=""#,
        )
        .unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[3].1, "a\"b=");
        let p =
            auth_params("Credential=A/B/C, SignedHeaders=host;x-amz-date,Signature=ff").unwrap();
        assert_eq!(p[1], ("SignedHeaders", Cow::Borrowed("host;x-amz-date")));
        assert!(auth_params(r#"id="unterminated"#).is_none());
        assert!(auth_params("novalue").is_none());
    }

    #[test]
    fn dates_round_trip() {
        let ms = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(ms, 1_440_938_160_000);
        assert_eq!(format_amz_date(ms), "20150830T123600Z");
        let t = parse_http_date_ms("Mon, 19 Mar 2018 12:08:40 GMT").unwrap();
        assert_eq!(format_http_date(t), "Mon, 19 Mar 2018 12:08:40 GMT");
        // Beyond year 9999 the format cannot show the date: clamped, not a panic.
        assert_eq!(format_http_date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(format_http_date(-5), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert!(parse_amz_date("2015-08-30T12:36").is_none());
        for z in [-800_000, -1, 0, 1, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn ct_eq_never_matches_empty() {
        assert!(!ct_eq(b"", b""));
        assert!(ct_eq(b"ab", b"ab"));
        assert!(!ct_eq(b"ab", b"abc"));
    }

    #[test]
    fn form_detection() {
        let mut v = RequestView::default();
        v.headers.push(
            "content-type",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
        );
        assert!(is_form(&v));
        let mut v = RequestView::default();
        v.headers.push("content-type", "application/json");
        assert!(!is_form(&v));
    }
}
