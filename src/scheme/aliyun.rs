//! Alibaba Cloud API Gateway digest authentication (`X-Ca-Key` / `X-Ca-Signature`), spec §1.
//!
//! Owns: the StringToSign (`string_to_sign`, also used by the signer), the variants a
//! verifier must try, `X-Ca-Timestamp` freshness, `Content-MD5`, and the
//! `X-Ca-Error-Code` / `X-Ca-Error-Message` answers.
//!
//! # Decisions
//! * Signed header names are written as listed; on mismatch the string is rebuilt with
//!   lower-cased names (Higress), then with the percent-decoded path (§1.9). Any of the
//!   (up to four) variants may match. The echo shows the first variant.
//! * Header list split on `,`; on `:` only when no comma is present (§1.1). Names are
//!   trimmed, empties dropped, de-duplicated case-insensitively (first spelling kept).
//! * Query/form key collision: the **form value wins** (Java SDK). Repeated keys in one
//!   source: first value wins. Names decoding to nothing are skipped (Java SDK).
//! * Form fields are signed when `Content-Type` is a URL-encoded form and the proxy sent
//!   the body. Without the body the string is built from the query alone (a client that
//!   signed form fields then fails with `SignatureMismatch`, which tells the operator to
//!   enable `with_request_body`), and `check_body` answers `NotAvailable`.
//! * `X-Ca-Signature-Method` must be exactly `HmacSHA256` or `HmacSHA1` (absent or empty
//!   = SHA-256); anything else is `UnsupportedAlgorithm` rather than Higress's silent
//!   SHA-256.
//! * `X-Ca-Timestamp` shorter than 13 digits is read as seconds (Higress). Non-numeric
//!   is `Malformed`. With `require_timestamp_and_nonce` both headers must be present
//!   *and* listed in `X-Ca-Signature-Headers`, or an attacker could refresh them.
//! * Upstream keeps `X-Ca-Key`, `X-Ca-Timestamp`, `X-Ca-Nonce`, `X-Ca-Stage` (useful to
//!   backends, not secret); the signature headers go, and so does an `Authorization:
//!   APPCODE` sent alongside, since that one is a secret.
//! * A signed header (a fixed slot or one listed in `X-Ca-Signature-Headers`) sent twice
//!   is `Malformed` (`A400DH`): the StringToSign holds one value, the upstream may read
//!   the other.
//! * Error codes besides those in the spec (`A400IK`, `A401AC`, `A400AC`, `A403EP`,
//!   `A400DH`) follow
//!   Alibaba's class+status+reason pattern and are marked **\[U\]**.

use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

use super::canonical::{self, HmacAlg};
use super::{BodyCheck, SchemeConfig, add_header_once, deny};

/// Headers with a fixed slot in the StringToSign (or that are the signature itself):
/// never part of the headers block even when listed.
const FIXED: [&str; 6] = [
    "x-ca-signature",
    "x-ca-signature-headers",
    "accept",
    "content-md5",
    "content-type",
    "date",
];

/// Which of the StringToSign variants to build (§1.2 name case, §1.9 path encoding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Variant {
    /// Write signed header names lower-cased (Higress) instead of as listed (SDKs).
    pub lowercase_names: bool,
    /// Use the percent-decoded path instead of the raw one.
    pub decoded_path: bool,
}

/// The names of `X-Ca-Signature-Headers` that enter the headers block, in list order:
/// trimmed, empties and fixed-slot names dropped, de-duplicated case-insensitively.
pub fn signed_header_names(list: &str) -> Vec<&str> {
    let sep = if list.contains(',') { ',' } else { ':' };
    let mut out: Vec<&str> = Vec::new();
    for name in list.split(sep).map(str::trim) {
        if name.is_empty()
            || FIXED.iter().any(|f| f.eq_ignore_ascii_case(name))
            || out.iter().any(|n| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        out.push(name);
    }
    out
}

/// Builds the StringToSign of §1.2 for `view`. `header_list` is the raw
/// `X-Ca-Signature-Headers` value. The same function serves verification and signing.
pub fn string_to_sign(view: &RequestView, header_list: Option<&str>, variant: Variant) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(&canonical::upper_method(&view.method));
    s.push('\n');
    // The four fixed slots, found in one pass (first value of each wins).
    let mut slots: [Option<&str>; 4] = [None; 4];
    for (n, v) in view.headers.iter() {
        let i = match n {
            "accept" => 0,
            "content-md5" => 1,
            "content-type" => 2,
            "date" => 3,
            _ => continue,
        };
        if let Some(slot @ None) = slots.get_mut(i) {
            *slot = Some(v);
        }
    }
    for v in slots {
        s.push_str(v.unwrap_or(""));
        s.push('\n');
    }

    let mut names = header_list.map(signed_header_names).unwrap_or_default();
    if variant.lowercase_names {
        names.sort_by(|a, b| cmp_lowercase(a, b));
    } else {
        names.sort_unstable();
    }
    for name in names {
        let start = s.len();
        s.push_str(name);
        if variant.lowercase_names {
            // In place: ASCII case mapping keeps UTF-8 valid, and costs no char loop.
            s[start..].make_ascii_lowercase();
        }
        s.push(':');
        s.push_str(header_ci(view, name).unwrap_or(""));
        s.push('\n');
    }

    let mut params = view
        .query
        .as_deref()
        .map(canonical::first_wins_params)
        .unwrap_or_default();
    if let Some(body) = form_body(view) {
        canonical::merge_params(&mut params, canonical::first_wins_params(&body));
    }
    let path = if variant.decoded_path {
        canonical::decode_lossy(&view.path, false)
    } else {
        std::borrow::Cow::Borrowed(view.path.as_str())
    };
    canonical::push_path_and_params(&mut s, &path, &mut params);
    s
}

fn cmp_lowercase(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// A header by a name in any case (names in the view are lower-case); `host` from the
/// authority, as `canonical::header` does.
fn header_ci<'a>(view: &'a RequestView, name: &str) -> Option<&'a str> {
    if name.eq_ignore_ascii_case("host") && !view.host.is_empty() {
        return Some(view.host.as_str());
    }
    view.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The form body as text, when the request is a form and the proxy sent the body.
fn form_body(view: &RequestView) -> Option<std::borrow::Cow<'_, str>> {
    if !canonical::is_form(view) {
        return None;
    }
    view.body.as_deref().map(String::from_utf8_lossy)
}

/// Parses an `X-Ca-Signature-Method` value. `None` for an unsupported method.
pub fn algorithm(method: Option<&str>) -> Option<HmacAlg> {
    match method.map(str::trim) {
        None | Some("") | Some("HmacSHA256") => Some(HmacAlg::Sha256),
        Some("HmacSHA1") => Some(HmacAlg::Sha1),
        Some(_) => None,
    }
}

/// Base64 signature of a StringToSign (what a client sends as `X-Ca-Signature`).
pub fn sign_string(alg: HmacAlg, secret: &[u8], sts: &str) -> Option<String> {
    alg.mac(secret, &[sts.as_bytes()])
        .map(|t| canonical::b64_encode(&t))
}

/// What `detect` found for an Alibaba request.
pub(crate) struct AliyunCredential {
    key: String,
    signature: String,
    method: Option<String>,
    header_list: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    /// An `Authorization: APPCODE` came along; it is a secret and must not go upstream.
    appcode_present: bool,
}

impl AliyunCredential {
    pub(crate) fn parse(view: &RequestView, appcode_present: bool) -> Result<Self, Deny> {
        // One pass: x-ca-* headers (first value; detect already refused duplicates).
        let mut found: [Option<&str>; 6] = [None; 6];
        for (n, v) in view.headers.iter() {
            let i = match n {
                "x-ca-key" => 0,
                "x-ca-signature" => 1,
                "x-ca-signature-method" => 2,
                "x-ca-signature-headers" => 3,
                "x-ca-timestamp" => 4,
                "x-ca-nonce" => 5,
                _ => continue,
            };
            if let Some(slot @ None) = found.get_mut(i) {
                *slot = Some(v);
            }
        }
        let [key, signature, method, header_list, timestamp, nonce] = found;
        let trimmed = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let key = trimmed(key).unwrap_or_default();
        if key.is_empty() {
            return Err(
                deny(DenyCode::Malformed, "Invalid Key").with_header("X-Ca-Error-Code", "A400IK")
            );
        }
        let signature = trimmed(signature).unwrap_or_default();
        if signature.is_empty() {
            return Err(deny(DenyCode::Malformed, "Empty Signature")
                .with_header("X-Ca-Error-Code", "A400MS")
                .with_header("X-Ca-Error-Message", "Empty Signature"));
        }
        Ok(Self {
            key,
            signature,
            method: method.map(|m| m.trim().to_owned()),
            header_list: header_list.map(str::to_owned),
            timestamp: trimmed(timestamp),
            nonce: trimmed(nonce),
            appcode_present,
        })
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// The StringToSign of the SDKs' spelling (names as listed, raw path): what
    /// `explain` shows; `verify` also tries the other variants.
    pub(crate) fn string_to_sign(&self, view: &RequestView) -> String {
        string_to_sign(view, self.header_list.as_deref(), Variant::default())
    }

    pub(crate) fn verify(&self, view: &RequestView, secret: &[u8]) -> Result<(), Deny> {
        super::check_signed_params(view)?;
        let Some(alg) = algorithm(self.method.as_deref()) else {
            return Err(deny(
                DenyCode::UnsupportedAlgorithm,
                format!(
                    "Unsupported X-Ca-Signature-Method \"{}\"",
                    canonical::echo_escaped(self.method.as_deref().unwrap_or(""))
                ),
            )
            .with_header("X-Ca-Error-Code", "I400HD")
            .with_header(
                "X-Ca-Error-Message",
                "Invalid Header `X-Ca-Signature-Method`",
            ));
        };
        if canonical::is_form(view) && view.body.is_some() && view.body_partial {
            return Err(deny(
                DenyCode::BodyIncomplete,
                "form body was cut by the proxy; cannot verify",
            )
            .with_header("X-Ca-Error-Code", "I413RL")
            .with_header("X-Ca-Error-Message", "Request body too Large"));
        }
        let mut buf = [0u8; 64];
        let provided = canonical::b64_decode_tag(&self.signature, &mut buf);
        let list = self.header_list.as_deref();
        if list.is_some_and(|l| l.split([',', ':']).count() > canonical::MAX_SIGNED_NAMES) {
            return Err(deny(
                DenyCode::Malformed,
                "too many names in X-Ca-Signature-Headers",
            ));
        }
        let listed = list.map(signed_header_names).unwrap_or_default();
        if let Some(name) = canonical::repeated_header(view, FIXED.into_iter().chain(listed)) {
            return Err(deny(
                DenyCode::Malformed,
                format!(
                    "signed header {} appears more than once",
                    canonical::echo_escaped(name)
                ),
            )
            .with_header("X-Ca-Error-Code", "A400DH")
            .with_header("X-Ca-Error-Message", "Duplicate Signed Header"));
        }
        let lower_differs = list.is_some_and(|l| l.bytes().any(|b| b.is_ascii_uppercase()));
        let path_differs = view.path.contains('%');
        let mut first: Option<String> = None;
        for lowercase_names in [false, true] {
            if lowercase_names && !lower_differs {
                continue;
            }
            for decoded_path in [false, true] {
                if decoded_path && !path_differs {
                    continue;
                }
                let sts = string_to_sign(
                    view,
                    list,
                    Variant {
                        lowercase_names,
                        decoded_path,
                    },
                );
                if provided.is_some_and(|p| alg.verify(secret, sts.as_bytes(), p)) {
                    return Ok(());
                }
                first.get_or_insert(sts);
            }
        }
        let echo = canonical::echo_hash_form(&first.unwrap_or_default());
        Err(deny(DenyCode::SignatureMismatch, "Invalid Signature")
            .with_header("X-Ca-Error-Code", "A400IS")
            .with_header(
                "X-Ca-Error-Message",
                format!("Invalid Signature, Server StringToSign:`{echo}`"),
            ))
    }

    fn is_signed(&self, name: &str) -> bool {
        self.header_list.as_deref().is_some_and(|l| {
            signed_header_names(l)
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
        })
    }

    pub(crate) fn check_fresh(
        &self,
        cfg: &SchemeConfig,
        api: &super::ApiSchemeOptions,
        now_ms: i64,
    ) -> Result<(), Deny> {
        match &self.timestamp {
            Some(ts) => {
                let ms = parse_timestamp(ts).ok_or_else(|| {
                    deny(DenyCode::Malformed, "Invalid X-Ca-Timestamp")
                        .with_header("X-Ca-Error-Code", "I400HD")
                        .with_header("X-Ca-Error-Message", "Invalid Header `X-Ca-Timestamp`")
                })?;
                if now_ms.saturating_sub(ms).saturating_abs() > cfg.timestamp_window_ms {
                    return Err(deny(
                        DenyCode::TimestampExpired,
                        "Invalid Timestamp: X-Ca-Timestamp is expired",
                    ));
                }
            }
            None if api.require_timestamp_and_nonce => {
                return Err(deny(
                    DenyCode::TimestampMissing,
                    "X-Ca-Timestamp is required",
                ));
            }
            None => {}
        }
        if api.require_timestamp_and_nonce {
            if self.nonce.is_none() {
                return Err(deny(DenyCode::NonceMissing, "X-Ca-Nonce is required"));
            }
            if !self.is_signed("x-ca-timestamp") {
                return Err(deny(
                    DenyCode::TimestampMissing,
                    "X-Ca-Timestamp must be listed in X-Ca-Signature-Headers",
                ));
            }
            if !self.is_signed("x-ca-nonce") {
                return Err(deny(
                    DenyCode::NonceMissing,
                    "X-Ca-Nonce must be listed in X-Ca-Signature-Headers",
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn check_body(&self, view: &RequestView) -> Result<BodyCheck, Deny> {
        // RFC 1864: Base64 of the raw digest.
        let matches = |claimed: &str, body: &[u8]| {
            canonical::b64_decode(claimed)
                .is_some_and(|c| canonical::ct_eq(&c, &canonical::md5(body)))
        };
        super::check_content_md5(view, matches, || {
            deny(DenyCode::BodyDigestMismatch, "Invalid Content-MD5")
                .with_header("X-Ca-Error-Code", "I400BD")
                .with_header("X-Ca-Error-Message", "Invalid Content-MD5")
        })
    }

    pub(crate) fn headers_to_remove(&self) -> &'static [&'static str] {
        if self.appcode_present {
            &[
                "x-ca-signature",
                "x-ca-signature-headers",
                "x-ca-signature-method",
                "authorization",
            ]
        } else {
            &[
                "x-ca-signature",
                "x-ca-signature-headers",
                "x-ca-signature-method",
            ]
        }
    }
}

/// `X-Ca-Timestamp` in milliseconds; fewer than 13 digits means seconds (Higress).
pub fn parse_timestamp(ts: &str) -> Option<i64> {
    let ts = ts.trim();
    if ts.is_empty() || ts.len() > 16 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = ts.parse().ok()?;
    if ts.len() < 13 {
        v.checked_mul(1000)
    } else {
        Some(v)
    }
}

/// Alibaba's `X-Ca-Error-Code` and message for a deny code. **\[U\]** where not in the
/// spec (see module docs).
pub(crate) fn vendor_error(code: DenyCode) -> Option<(&'static str, &'static str)> {
    Some(match code {
        DenyCode::MissingCredential => ("A400MA", "Missing Credentials"),
        DenyCode::Malformed => ("I400HD", "Invalid Header"),
        DenyCode::UnknownAppKey | DenyCode::KeyDisabled | DenyCode::KeyExpired => {
            ("A400IK", "Invalid AppKey")
        }
        DenyCode::UnknownAppCode => ("A401AC", "Invalid AppCode"),
        DenyCode::AppDisabled => ("A403AD", "App Disabled"),
        DenyCode::SignatureMismatch => ("A400IS", "Invalid Signature"),
        DenyCode::UnsupportedAlgorithm => ("I400HD", "Invalid Header `X-Ca-Signature-Method`"),
        DenyCode::TimestampMissing | DenyCode::TimestampExpired => ("A400IT", "Invalid Timestamp"),
        DenyCode::NonceMissing => ("A400IN", "Invalid Nonce"),
        DenyCode::NonceReplayed => ("A400IN", "Nonce Used"),
        DenyCode::BodyDigestMismatch | DenyCode::BodyDigestMissing => {
            ("I400BD", "Invalid Content-MD5")
        }
        DenyCode::BodyIncomplete | DenyCode::BodyTooLarge => ("I413RL", "Request body too Large"),
        DenyCode::HeadersTooLarge => ("I400HD", "Invalid Header"),
        DenyCode::SchemeNotAllowed => ("A403PR", "Unsupported Authorization Type"),
        DenyCode::ApiNotFound => ("I404NF", "API not found"),
        DenyCode::NoGrant => ("A403UC", "Unauthorized Consumer"),
        DenyCode::GrantExpired => ("A403EP", "App authorization expired"),
        DenyCode::ReplayCacheFull | DenyCode::Overloaded => ("T429SR", "Too Many Requests"),
        DenyCode::Internal | DenyCode::ReplayUnavailable => ("X500ER", "Internal Error"),
        // The gateway has no client-side timeout code to copy, and no user
        // authentication: no vendor header.
        DenyCode::RequestTimeout
        | DenyCode::UserMissing
        | DenyCode::UserInvalid
        | DenyCode::UserExpired => return None,
    })
}

pub(crate) fn decorate(deny: Deny) -> Deny {
    match vendor_error(deny.code) {
        Some((code, msg)) => {
            let deny = add_header_once(deny, "X-Ca-Error-Code", code);
            add_header_once(deny, "X-Ca-Error-Message", msg)
        }
        None => deny,
    }
}
