//! AWS Signature Version 4 (`Authorization: AWS4-HMAC-SHA256 ...` and presigned URLs), spec §4.
//!
//! Owns: parsing both forms, the canonical request / string-to-sign / key chain (also
//! used by the signer), the curl 7.x fallbacks, time and presign expiry, the payload
//! hash, and `x-amzn-ErrorType` answers.
//!
//! # Decisions
//! * Verifier rule (§4.4): the strict canonical request first (non-S3: normalised path
//!   encoded again; S3: decoded path encoded once; query decoded, re-encoded, sorted);
//!   then (raw path, raw query) as curl 7.x signs (header form only); then the
//!   single-encoded path with the strict query; then, if the query has a `+`, the
//!   strict request with `+` read as a space (curl 8.x). Any match is accepted. The
//!   mismatch message shows the strict canonical request and string-to-sign. Signed
//!   headers are used in the order listed; if that order is not sorted, the sorted
//!   order is tried as well (AWS sorts).
//! * `X-Amz-Security-Token` (header or query) is `Malformed`: keygate issues no session
//!   credentials. `STREAMING-*` payload hashes are `UnsupportedAlgorithm`.
//! * Without `X-Amz-Date` the `Date` header is used and must be signed. `host` must
//!   always be signed. Scope date ≠ request date, wrong region or service (per API
//!   options), or a terminator other than `aws4_request` are `Malformed`.
//! * Payload hash: `x-amz-content-sha256` when sent; `UNSIGNED-PAYLOAD` for presigned
//!   URLs (then, for non-S3 presigners such as botocore's `SigV4QueryAuth`, the body's
//!   hash); otherwise SHA-256 of the body. Without the body, an empty hash is assumed
//!   only when the framing headers say there is no body; otherwise `BodyDigestMissing`.
//! * Presigned URLs are refused when `X-Amz-Date` is more than the window in the future,
//!   or after `X-Amz-Date + X-Amz-Expires` (1..=604800 s).

use std::borrow::Cow;

use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

use super::canonical::{self, HmacAlg};
use super::{ApiSchemeOptions, BodyCheck, SchemeConfig, add_header_once, deny};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const TERMINATOR: &str = "aws4_request";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const MAX_EXPIRES_S: i64 = 604_800;

/// How the canonical URI is derived from the raw path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriMode {
    /// Non-S3 SDKs: remove dot segments and empty segments, then encode the
    /// already-encoded path again (`%20` → `%2520`).
    DoubleEncoded,
    /// S3 and curl 8: decode, then encode once.
    SingleEncoded,
    /// curl 7.x: the path exactly as on the wire.
    Raw,
}

/// RFC 3986 dot-segment removal, also dropping empty segments as AWS does.
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len() + 1);
    s.push('/');
    s.push_str(&out.join("/"));
    if path.ends_with('/') && !out.is_empty() {
        s.push('/');
    }
    s
}

pub fn canonical_uri(raw_path: &str, mode: UriMode) -> String {
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    match mode {
        UriMode::DoubleEncoded => canonical::aws_encode(normalize_path(path).as_bytes(), true),
        UriMode::SingleEncoded => {
            canonical::aws_encode(&canonical::percent_decode(path, false), true)
        }
        UriMode::Raw => path.to_owned(),
    }
}

/// The strict canonical query: decoded, re-encoded, sorted by name then value.
/// `X-Amz-Signature` is left out for presigned URLs; `plus_as_space` mimics curl 8.
pub fn canonical_query(raw: Option<&str>, skip_signature: bool, plus_as_space: bool) -> String {
    let Some(raw) = raw else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = canonical::raw_pairs(raw)
        .filter_map(|(n, v)| {
            let name = canonical::percent_decode(n, plus_as_space);
            if skip_signature && &*name == b"X-Amz-Signature" {
                return None;
            }
            Some((
                canonical::aws_encode(&name, false),
                canonical::aws_encode(&canonical::percent_decode(v, plus_as_space), false),
            ))
        })
        .collect();
    pairs.sort();
    let mut s = String::with_capacity(raw.len() + 8);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

/// Trims and collapses runs of spaces, as the canonical headers require.
fn push_header_value(out: &mut String, v: &str) {
    let mut prev_space = false;
    for c in v.trim().chars() {
        if c == ' ' {
            if !prev_space {
                out.push(' ');
            }
            prev_space = true;
        } else {
            out.push(c);
            prev_space = false;
        }
    }
}

/// The canonical request. `signed_headers` are lower-case names in signing order.
pub fn canonical_request(
    view: &RequestView,
    uri: &str,
    query: &str,
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(&view.method);
    s.push('\n');
    s.push_str(uri);
    s.push('\n');
    s.push_str(query);
    s.push('\n');
    for name in signed_headers {
        s.push_str(name);
        s.push(':');
        if name == "host" && !view.host.is_empty() {
            push_header_value(&mut s, &view.host);
        } else {
            for (i, v) in view.headers.get_all(name).enumerate() {
                if i > 0 {
                    s.push(',');
                }
                push_header_value(&mut s, v);
            }
        }
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&signed_headers.join(";"));
    s.push('\n');
    s.push_str(payload_hash);
    s
}

pub fn scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/{TERMINATOR}")
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        canonical::sha256_hex(canonical_request.as_bytes())
    )
}

/// kSigning = HMAC chain over date, region, service, `aws4_request`.
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> Option<Vec<u8>> {
    let k_date = HmacAlg::Sha256.mac(&[b"AWS4".as_slice(), secret].concat(), &[date.as_bytes()])?;
    let k_region = HmacAlg::Sha256.mac(&k_date, &[region.as_bytes()])?;
    let k_service = HmacAlg::Sha256.mac(&k_region, &[service.as_bytes()])?;
    HmacAlg::Sha256.mac(&k_service, &[TERMINATOR.as_bytes()])
}

/// Lower-case hex signature of a string-to-sign.
pub fn signature_hex(key: &[u8], sts: &str) -> Option<String> {
    HmacAlg::Sha256.mac(key, &[sts.as_bytes()]).map(hex::encode)
}

pub(crate) struct SigV4Credential {
    presigned: bool,
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: Vec<u8>,
    amz_date: String,
    time_ms: i64,
    expires_s: i64,
    content_sha256: Option<String>,
}

impl SigV4Credential {
    /// The signature's bytes as sent (hex-decoded).
    pub(crate) fn signature(&self) -> &[u8] {
        &self.signature
    }
}

fn malformed(msg: impl Into<String>) -> Deny {
    deny(DenyCode::Malformed, msg)
}

struct Scope {
    key: String,
    date: String,
    region: String,
    service: String,
}

fn parse_scope(credential: &str) -> Result<Scope, Deny> {
    let mut it = credential.trim().rsplitn(5, '/');
    let (Some(term), Some(service), Some(region), Some(date), Some(key)) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(malformed(
            "Credential must be <key>/<date>/<region>/<service>/aws4_request",
        ));
    };
    if term != TERMINATOR {
        return Err(malformed(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}'"
        )));
    }
    if key.is_empty()
        || region.is_empty()
        || service.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(malformed("Credential scope is malformed"));
    }
    Ok(Scope {
        key: key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
    })
}

fn parse_signed_headers(list: &str) -> Result<Vec<String>, Deny> {
    let names: Vec<String> = list
        .split(';')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if names.len() > canonical::MAX_SIGNED_NAMES {
        return Err(malformed("too many SignedHeaders"));
    }
    if !names.iter().any(|n| n == "host") {
        return Err(malformed("SignedHeaders must include host"));
    }
    Ok(names)
}

fn parse_signature(sig: &str) -> Result<Vec<u8>, Deny> {
    let sig = sig.trim();
    if sig.len() != 64 {
        return Err(malformed("Signature must be 64 hex characters"));
    }
    hex::decode(sig).map_err(|_| malformed("Signature must be 64 hex characters"))
}

fn reject_session_token(view: &RequestView) -> Result<(), Deny> {
    if view.headers.contains("x-amz-security-token")
        || canonical::query_param_count(view.query.as_deref(), "X-Amz-Security-Token") > 0
    {
        return Err(malformed(
            "X-Amz-Security-Token is not supported: keygate issues no session credentials",
        ));
    }
    Ok(())
}

impl SigV4Credential {
    pub(crate) fn parse_header(view: &RequestView) -> Result<Self, Deny> {
        let value = view.headers.get("authorization").unwrap_or("").trim_start();
        let (alg, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((value, ""));
        if alg != ALGORITHM {
            return Err(deny(
                DenyCode::UnsupportedAlgorithm,
                format!("unsupported algorithm {}", canonical::echo_escaped(alg)),
            ));
        }
        reject_session_token(view)?;
        if canonical::query_param_count(view.query.as_deref(), "X-Amz-Algorithm") > 0
            || canonical::query_param_count(view.query.as_deref(), "X-Amz-Signature") > 0
        {
            return Err(malformed("Only one auth mechanism allowed"));
        }
        let params = canonical::auth_params(rest)
            .ok_or_else(|| malformed("Authorization header is malformed"))?;
        let (mut cred, mut signed, mut sig) = (None, None, None);
        for (k, v) in params {
            let slot = match k {
                k if k.eq_ignore_ascii_case("Credential") => &mut cred,
                k if k.eq_ignore_ascii_case("SignedHeaders") => &mut signed,
                k if k.eq_ignore_ascii_case("Signature") => &mut sig,
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(malformed(format!("duplicate {k} in Authorization")));
            }
        }
        let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
            return Err(malformed(
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
            ));
        };
        let scope = parse_scope(&cred)?;
        let signed_headers = parse_signed_headers(&signed)?;
        let signature = parse_signature(&sig)?;
        let (amz_date, time_ms) = match view.headers.get("x-amz-date") {
            Some(d) => {
                let d = d.trim();
                (
                    d.to_owned(),
                    canonical::parse_amz_date(d)
                        .ok_or_else(|| malformed("X-Amz-Date is malformed"))?,
                )
            }
            None => {
                let d = view
                    .headers
                    .get("date")
                    .ok_or_else(|| malformed("X-Amz-Date or Date is required"))?;
                if !signed_headers.iter().any(|h| h == "date") {
                    return Err(malformed(
                        "the Date header must be signed when X-Amz-Date is absent",
                    ));
                }
                let ms = canonical::parse_http_date_ms(d)
                    .ok_or_else(|| malformed("Date is malformed"))?;
                (canonical::format_amz_date(ms), ms)
            }
        };
        Ok(Self {
            presigned: false,
            access_key: scope.key,
            date: scope.date,
            region: scope.region,
            service: scope.service,
            signed_headers,
            signature,
            amz_date,
            time_ms,
            expires_s: 0,
            content_sha256: view
                .headers
                .get("x-amz-content-sha256")
                .map(|v| v.trim().to_owned()),
        })
    }

    pub(crate) fn parse_presigned(view: &RequestView) -> Result<Self, Deny> {
        reject_session_token(view)?;
        let q = view.query.as_deref();
        let one = |name: &str| -> Result<Cow<'_, str>, Deny> {
            match canonical::query_param_count(q, name) {
                0 => Err(malformed(format!(
                    "Query-string authentication requires the {name} parameter"
                ))),
                1 => canonical::query_param(q, name)
                    .ok_or_else(|| malformed(format!("{name} is missing"))),
                _ => Err(malformed(format!("{name} given more than once"))),
            }
        };
        let alg = one("X-Amz-Algorithm")?;
        if alg != ALGORITHM {
            return Err(deny(
                DenyCode::UnsupportedAlgorithm,
                format!("unsupported algorithm {}", canonical::echo_escaped(&alg)),
            ));
        }
        let scope = parse_scope(&one("X-Amz-Credential")?)?;
        let amz_date = one("X-Amz-Date")?.trim().to_owned();
        let time_ms = canonical::parse_amz_date(&amz_date)
            .ok_or_else(|| malformed("X-Amz-Date is malformed"))?;
        let expires_s = one("X-Amz-Expires")?
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|e| (1..=MAX_EXPIRES_S).contains(e))
            .ok_or_else(|| malformed("X-Amz-Expires must be between 1 and 604800 seconds"))?;
        let signed_headers = parse_signed_headers(&one("X-Amz-SignedHeaders")?)?;
        let signature = parse_signature(&one("X-Amz-Signature")?)?;
        Ok(Self {
            presigned: true,
            access_key: scope.key,
            date: scope.date,
            region: scope.region,
            service: scope.service,
            signed_headers,
            signature,
            amz_date,
            time_ms,
            expires_s,
            content_sha256: view
                .headers
                .get("x-amz-content-sha256")
                .map(|v| v.trim().to_owned()),
        })
    }

    pub(crate) fn key(&self) -> &str {
        &self.access_key
    }

    fn payload_hash<'a>(&'a self, view: &RequestView) -> Result<Cow<'a, str>, Deny> {
        if let Some(h) = &self.content_sha256 {
            if h.starts_with("STREAMING-") {
                return Err(deny(
                    DenyCode::UnsupportedAlgorithm,
                    format!(
                        "payload signing {} is not supported",
                        canonical::echo_escaped(h)
                    ),
                ));
            }
            return Ok(Cow::Borrowed(h.as_str()));
        }
        if self.presigned {
            return Ok(Cow::Borrowed(UNSIGNED_PAYLOAD));
        }
        match &view.body {
            Some(_) if view.body_partial => Err(deny(
                DenyCode::BodyIncomplete,
                "body was cut by the proxy; cannot hash the payload",
            )),
            Some(b) => Ok(Cow::Owned(canonical::sha256_hex(b))),
            None if canonical::has_body(view) => Err(deny(
                DenyCode::BodyDigestMissing,
                "SigV4 signs the payload hash and the body was not sent (enable with_request_body or send x-amz-content-sha256)",
            )),
            None => Ok(Cow::Borrowed(EMPTY_SHA256)),
        }
    }

    /// The strict String-to-Sign (AWS's own canonical URI and query): what `explain`
    /// shows; `verify` also accepts the spellings other signers use.
    pub(crate) fn string_to_sign(&self, view: &RequestView) -> Option<String> {
        let payload = self.payload_hash(view).ok()?;
        let mode = if self.service == "s3" {
            UriMode::SingleEncoded
        } else {
            UriMode::DoubleEncoded
        };
        let creq = canonical_request(
            view,
            &canonical_uri(&view.path, mode),
            &canonical_query(view.query.as_deref(), self.presigned, false),
            &self.signed_headers,
            &payload,
        );
        let scope = scope(&self.date, &self.region, &self.service);
        Some(string_to_sign(&self.amz_date, &scope, &creq))
    }

    pub(crate) fn verify(
        &self,
        view: &RequestView,
        api: &ApiSchemeOptions,
        secret: &[u8],
    ) -> Result<(), Deny> {
        if let Some(r) = api.sigv4_region.as_deref().filter(|r| *r != self.region) {
            return Err(malformed(format!(
                "the region '{}' is wrong; expecting '{r}'",
                canonical::echo_escaped(&self.region)
            )));
        }
        if let Some(s) = api.sigv4_service.as_deref().filter(|s| *s != self.service) {
            return Err(malformed(format!(
                "the service '{}' is wrong; expecting '{s}'",
                canonical::echo_escaped(&self.service)
            )));
        }
        if self.amz_date.get(..8) != Some(self.date.as_str()) {
            return Err(malformed(format!(
                "Date in Credential scope does not match YYYYMMDD from the request time: {} vs {}",
                self.date,
                canonical::echo_escaped(&self.amz_date)
            )));
        }
        let payload = self.payload_hash(view)?;
        let key = signing_key(secret, &self.date, &self.region, &self.service)
            .ok_or_else(|| deny(DenyCode::Internal, "HMAC key setup failed"))?;
        let scope = scope(&self.date, &self.region, &self.service);
        let q = view.query.as_deref();
        let strict_uri = canonical_uri(
            &view.path,
            if self.service == "s3" {
                UriMode::SingleEncoded
            } else {
                UriMode::DoubleEncoded
            },
        );
        let strict_query = canonical_query(q, self.presigned, false);

        let check_with = |uri: &str, query: &str, payload: &str| -> (bool, String, String) {
            let creq = canonical_request(view, uri, query, &self.signed_headers, payload);
            let sts = string_to_sign(&self.amz_date, &scope, &creq);
            let ok = HmacAlg::Sha256.verify(&key, sts.as_bytes(), &self.signature);
            (ok, creq, sts)
        };
        let check = |uri: &str, query: &str| check_with(uri, query, &payload);

        let (ok, creq, sts) = check(&strict_uri, &strict_query);
        if ok {
            return Ok(());
        }
        if !self.presigned && check(&canonical_uri(&view.path, UriMode::Raw), q.unwrap_or("")).0 {
            return Ok(());
        }
        let single = canonical_uri(&view.path, UriMode::SingleEncoded);
        if single != strict_uri && check(&single, &strict_query).0 {
            return Ok(());
        }
        if q.is_some_and(|q| q.contains('+'))
            && check(&strict_uri, &canonical_query(q, self.presigned, true)).0
        {
            return Ok(());
        }
        // AWS itself sorts the signed headers; a client that listed them out of order may
        // have signed them sorted.
        if !self.signed_headers.is_sorted() {
            let mut sorted = self.signed_headers.clone();
            sorted.sort();
            let creq = canonical_request(view, &strict_uri, &strict_query, &sorted, &payload);
            let sts = string_to_sign(&self.amz_date, &scope, &creq);
            if HmacAlg::Sha256.verify(&key, sts.as_bytes(), &self.signature) {
                return Ok(());
            }
        }
        // Non-S3 presigners (botocore's SigV4QueryAuth) hash the (empty) body instead of
        // writing UNSIGNED-PAYLOAD.
        if self.presigned && self.content_sha256.is_none() {
            let hashed = match &view.body {
                Some(b) if !view.body_partial => Some(canonical::sha256_hex(b)),
                None if !canonical::has_body(view) => Some(EMPTY_SHA256.to_owned()),
                _ => None,
            };
            if let Some(h) = hashed
                && (check_with(&strict_uri, &strict_query, &h).0
                    || (single != strict_uri && check_with(&single, &strict_query, &h).0))
            {
                return Ok(());
            }
        }
        Err(deny(
            DenyCode::SignatureMismatch,
            format!(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. The Canonical String for this request should have been '{}' The String-to-Sign should have been '{}'",
                canonical::echo_escaped(&creq),
                canonical::echo_escaped(&sts)
            ),
        )
        .with_header("x-amzn-ErrorType", "InvalidSignatureException"))
    }

    pub(crate) fn check_fresh(&self, cfg: &SchemeConfig, now_ms: i64) -> Result<(), Deny> {
        let w = cfg.timestamp_window_ms;
        if self.presigned {
            if self.time_ms.saturating_sub(now_ms) > w {
                return Err(deny(DenyCode::TimestampExpired, "Request is not yet valid"));
            }
            if now_ms
                > self
                    .time_ms
                    .saturating_add(self.expires_s.saturating_mul(1000))
            {
                return Err(deny(DenyCode::TimestampExpired, "Request has expired"));
            }
            return Ok(());
        }
        if now_ms.saturating_sub(self.time_ms).saturating_abs() > w {
            return Err(deny(
                DenyCode::TimestampExpired,
                format!(
                    "Signature expired: {} is now earlier or later than {} ({} +/- {} min.)",
                    canonical::echo_escaped(&self.amz_date),
                    canonical::format_amz_date(now_ms),
                    canonical::format_amz_date(now_ms),
                    w / 60_000
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_body(&self, view: &RequestView) -> Result<BodyCheck, Deny> {
        match self.content_sha256.as_deref() {
            Some(UNSIGNED_PAYLOAD) => Ok(BodyCheck::NotCovered),
            Some(claimed) => match &view.body {
                None => Ok(BodyCheck::NotAvailable),
                Some(_) if view.body_partial => {
                    Err(deny(DenyCode::BodyIncomplete, "body was cut by the proxy"))
                }
                Some(b) if canonical::sha256_hex(b).eq_ignore_ascii_case(claimed) => {
                    Ok(BodyCheck::Verified)
                }
                Some(_) => Err(deny(
                    DenyCode::BodyDigestMismatch,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                )
                .with_header("x-amzn-ErrorType", "XAmzContentSHA256Mismatch")),
            },
            None if self.presigned => Ok(BodyCheck::NotCovered),
            None => match &view.body {
                None => Ok(BodyCheck::NotAvailable),
                Some(_) if view.body_partial => {
                    Err(deny(DenyCode::BodyIncomplete, "body was cut by the proxy"))
                }
                // verify() hashed this very body into the canonical request.
                Some(_) => Ok(BodyCheck::Verified),
            },
        }
    }

    pub(crate) fn headers_to_remove(&self) -> &'static [&'static str] {
        if self.presigned {
            &[]
        } else {
            &["authorization"]
        }
    }
}

/// `x-amzn-ErrorType` (Amazon API Gateway names) for a deny.
pub(crate) fn decorate(deny: Deny) -> Deny {
    let t = match deny.code {
        DenyCode::SignatureMismatch | DenyCode::TimestampExpired | DenyCode::TimestampMissing => {
            "InvalidSignatureException"
        }
        DenyCode::UnknownAppKey
        | DenyCode::KeyDisabled
        | DenyCode::KeyExpired
        | DenyCode::AppDisabled => "UnrecognizedClientException",
        DenyCode::Malformed | DenyCode::UnsupportedAlgorithm => "IncompleteSignatureException",
        DenyCode::MissingCredential => "MissingAuthenticationTokenException",
        DenyCode::NoGrant
        | DenyCode::GrantExpired
        | DenyCode::SchemeNotAllowed
        | DenyCode::ApiNotFound => "AccessDeniedException",
        DenyCode::BodyDigestMismatch => "XAmzContentSHA256Mismatch",
        _ => return deny,
    };
    add_header_once(deny, "x-amzn-ErrorType", t)
}
