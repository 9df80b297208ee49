//! Signature schemes: find the credential in a request, verify it, judge its freshness.
//!
//! Owns: scheme detection (`detect`), the parsed `Credential` and each scheme's rules
//! as its vendor or RFC publishes them (one file per scheme, citing its source; shared
//! canonicalisation in `canonical`). It knows nothing about apps, keys or grants: the pipeline looks the
//! credential up and hands `verify` one candidate secret at a time. Every parser here is
//! total: any bytes in, a `Deny` out, never a panic.
//!
//! # Decisions taken where the spec leaves a choice
//! * Several credentials of different schemes in one request are `Malformed`, except
//!   `X-Ca-Key` + `Authorization: APPCODE`, where the signature path wins (§1.7). Header
//!   credentials are looked at before query ones (presigned SigV4, legacy `bk_signature`,
//!   `AppCode=`), which are only considered when no header credential is present.
//! * `X-Ca-Key` without `X-Ca-Signature` is `Malformed` ("Empty Signature"), not
//!   `MissingCredential`: a half-sent credential must never fall through to anonymous.
//! * Nonce TTLs are twice the scheme's window: a request stamped `t` is acceptable from
//!   `t - window` to `t + window`, so a nonce seen at the earliest moment must be kept
//!   `2 * window` to cover its last acceptable replay.
//! * Signed-header lists, covered components and signature labels are capped at 64
//!   (`Malformed` beyond) and parameter handling is O(n log n): AppKeys are public, so
//!   verification work must stay bounded for anyone who knows one.
//! * Secrets carried in the query (`AppCode=`, `bk_app_secret=`) are reported by
//!   `Credential::query_params_to_remove` (Envoy can drop query parameters upstream).
//! * Echoed strings-to-sign are single-line: Alibaba's `#` form in `X-Ca-Error-Message`,
//!   an escaped `\n` in the messages of the other schemes (safe in logs and headers).

#![deny(clippy::indexing_slicing)]

pub mod aliyun;
pub mod appcode;
pub mod bkapi;
pub mod canonical;
pub mod rfc9421;
pub mod sigv4;
pub mod tencent;

use std::fmt;
use std::str::FromStr;

use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

/// The signature schemes keygate understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemeKind {
    Aliyun,
    AppCode,
    Tencent,
    Bkapi,
    SigV4,
    Rfc9421,
}

impl SchemeKind {
    /// Names the scheme on a deny and adds its vendor's error headers, so the
    /// vendor's SDK shows the reason as it would from the vendor's gateway.
    pub fn decorate_deny(self, deny: Deny) -> Deny {
        let deny = deny.for_scheme(self.as_str());
        match self {
            SchemeKind::Aliyun => aliyun::decorate(deny),
            SchemeKind::AppCode => appcode::decorate(deny),
            SchemeKind::Tencent => deny,
            SchemeKind::Bkapi => bkapi::decorate(deny),
            SchemeKind::SigV4 => sigv4::decorate(deny),
            SchemeKind::Rfc9421 => rfc9421::decorate(deny),
        }
    }

    pub const ALL: [SchemeKind; 6] = [
        SchemeKind::Aliyun,
        SchemeKind::AppCode,
        SchemeKind::Tencent,
        SchemeKind::Bkapi,
        SchemeKind::SigV4,
        SchemeKind::Rfc9421,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchemeKind::Aliyun => "aliyun",
            SchemeKind::AppCode => "appcode",
            SchemeKind::Tencent => "tencent",
            SchemeKind::Bkapi => "bkapi",
            SchemeKind::SigV4 => "sigv4",
            SchemeKind::Rfc9421 => "rfc9421",
        }
    }

    /// Whether the secret itself travels in the request (AppCode, BlueKing header form).
    /// For BlueKing this is the kind-level answer; the legacy `bk_signature` form does not
    /// send it (see `Credential::sends_secret`).
    pub fn sends_secret(self) -> bool {
        matches!(self, SchemeKind::AppCode | SchemeKind::Bkapi)
    }

    /// Where a request of this scheme carries its nonce, for deny messages.
    pub fn nonce_field(self) -> &'static str {
        match self {
            SchemeKind::Aliyun => "X-Ca-Nonce",
            SchemeKind::Tencent => "X-Apigw-Nonce (a signed header)",
            SchemeKind::Bkapi => "bk_nonce, with bk_timestamp and bk_signature",
            SchemeKind::Rfc9421 => "the nonce signature parameter",
            SchemeKind::SigV4 => "none: the signature itself is recorded",
            SchemeKind::AppCode => "none",
        }
    }
}

impl SchemeKind {
    /// The scheme's value in the admin API (`keygate.admin.v1.AuthScheme`).
    pub fn proto(self) -> crate::pb::admin::AuthScheme {
        use crate::pb::admin::AuthScheme;
        match self {
            SchemeKind::Aliyun => AuthScheme::Aliyun,
            SchemeKind::AppCode => AuthScheme::Appcode,
            SchemeKind::Tencent => AuthScheme::Tencent,
            SchemeKind::Bkapi => AuthScheme::Bkapi,
            SchemeKind::SigV4 => AuthScheme::Sigv4,
            SchemeKind::Rfc9421 => AuthScheme::Rfc9421,
        }
    }

    /// The scheme an admin API value names; `None` for `UNSPECIFIED` or an unknown value.
    pub fn from_proto(value: i32) -> Option<SchemeKind> {
        SchemeKind::ALL
            .into_iter()
            .find(|k| k.proto() as i32 == value)
    }
}

impl fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scheme name that is not one of `SchemeKind::as_str`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheme {0:?} (expected aliyun, appcode, tencent, bkapi, sigv4 or rfc9421)")]
pub struct UnknownScheme(pub String);

impl FromStr for SchemeKind {
    type Err = UnknownScheme;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchemeKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownScheme(s.to_owned()))
    }
}

/// Service-wide settings (from config).
#[derive(Clone, Debug)]
pub struct SchemeConfig {
    /// Window for aliyun `X-Ca-Timestamp`, tencent `X-Date`, sigv4 `X-Amz-Date`.
    pub timestamp_window_ms: i64,
    /// `created` must be within this of now; `expires` is enforced as well.
    pub rfc9421_window_ms: i64,
    /// Components every RFC 9421 signature must cover. `@query` (when the request has
    /// a query) and `content-digest` (when it has a body) are required in addition.
    pub rfc9421_required: Vec<String>,
    /// Legacy BlueKing `bk_timestamp` window.
    pub bk_timestamp_window_ms: i64,
}

impl Default for SchemeConfig {
    fn default() -> Self {
        Self {
            timestamp_window_ms: 900_000,
            rfc9421_window_ms: 300_000,
            rfc9421_required: vec!["@method".into(), "@authority".into(), "@path".into()],
            bk_timestamp_window_ms: 300_000,
        }
    }
}

impl SchemeConfig {
    /// The longest any nonce must be remembered (`nonce_ttl_ms` of every scheme is at
    /// most this): how long a nonce store that lost its memory must refuse claims.
    pub fn max_nonce_ttl_ms(&self) -> i64 {
        self.timestamp_window_ms
            .max(self.rfc9421_window_ms)
            .max(self.bk_timestamp_window_ms)
            .saturating_mul(2)
    }
}

/// Per-API options, filled from the API record once the route is known.
#[derive(Clone, Debug, Default)]
pub struct ApiSchemeOptions {
    /// Strip `/release`, `/test`, `/prepub` from the path before signing (spec §2.2).
    pub tencent_strip_env_prefix: bool,
    /// `None` = any region accepted.
    pub sigv4_region: Option<String>,
    /// `None` = any service accepted.
    pub sigv4_service: Option<String>,
    /// Aliyun: replay protection makes `X-Ca-Timestamp` + `X-Ca-Nonce` mandatory (and
    /// signed).
    pub require_timestamp_and_nonce: bool,
}

/// Which credential the request names, so the pipeline can look it up in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialId<'a> {
    /// aliyun `X-Ca-Key`, tencent `id=`, sigv4 access key id, rfc9421 `keyid`.
    AppKey(&'a str),
    /// `Authorization: APPCODE <code>`: the code is a bearer secret.
    AppCode(&'a str),
    /// BlueKing `bk_app_code`: an App id; any of the app's secrets may match.
    BkAppCode(&'a str),
}

/// Result of checking the body against what the signature claims about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyCheck {
    /// The body was available, complete, and matches what the signature covers.
    Verified,
    /// The signature says nothing about the body.
    NotCovered,
    /// The signature covers the body but the proxy did not send it.
    NotAvailable,
}

/// A credential parsed from a request; no secret known yet.
pub struct Credential {
    inner: Inner,
}

enum Inner {
    Aliyun(aliyun::AliyunCredential),
    AppCode(appcode::AppCodeCredential),
    Tencent(tencent::TencentCredential),
    Bkapi(bkapi::BkCredential),
    SigV4(sigv4::SigV4Credential),
    Rfc9421(rfc9421::Rfc9421Credential),
}

pub(crate) fn deny(code: DenyCode, message: impl Into<String>) -> Deny {
    Deny::new(code, message)
}

/// Which `Authorization` scheme a value announces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    AppCode,
    Hmac,
    Aws4,
    Other,
}

fn auth_kind(value: &str) -> AuthKind {
    let v = value.trim_start();
    let word = v
        .split(|c: char| c.is_ascii_whitespace())
        .next()
        .unwrap_or("");
    if word.eq_ignore_ascii_case("APPCODE") {
        AuthKind::AppCode
    } else if word.eq_ignore_ascii_case("hmac") {
        AuthKind::Hmac
    } else if word
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("AWS4-"))
    {
        AuthKind::Aws4
    } else {
        AuthKind::Other
    }
}

/// Headers `detect` looks at. All but the RFC 9421 pair must appear at most once.
const WATCHED: [&str; 13] = [
    "authorization",
    "x-ca-key",
    "x-ca-signature",
    "x-ca-signature-headers",
    "x-ca-signature-method",
    "x-ca-timestamp",
    "x-ca-nonce",
    "x-bkapi-authorization",
    "x-date",
    "x-amz-date",
    "x-amz-content-sha256",
    "signature-input",
    "signature",
];
const AUTHORIZATION: usize = 0;
const X_CA_KEY: usize = 1;
const X_CA_SIGNATURE: usize = 2;
const X_BKAPI: usize = 7;
const SIGNATURE_INPUT: usize = 11;

/// Finds the scheme from the headers (and, failing that, the query) and parses its
/// credential. No credential at all → `MissingCredential`; duplicated or unparseable
/// credential headers, or credentials of two schemes → `Malformed`.
pub fn detect(view: &RequestView) -> Result<Credential, Deny> {
    // One pass over the headers: this runs on every request.
    let mut seen = [0u8; WATCHED.len()];
    let mut auth = None;
    for (name, value) in view.headers.iter() {
        if !matches!(name.as_bytes().first(), Some(b'a' | b's' | b'x')) {
            continue;
        }
        if let Some(i) = WATCHED.iter().position(|w| *w == name) {
            if let Some(slot) = seen.get_mut(i) {
                *slot = slot.saturating_add(1);
            }
            if i == AUTHORIZATION {
                auth = Some(auth_kind(value));
            }
        }
    }
    // Signature-Input / Signature may repeat: they are dictionaries that combine.
    for (i, &n) in seen.iter().enumerate().take(SIGNATURE_INPUT) {
        if n > 1 {
            let name = WATCHED.get(i).copied().unwrap_or("credential");
            return Err(deny(
                DenyCode::Malformed,
                format!("duplicate {name} header"),
            ));
        }
    }
    let has = |i: usize| seen.get(i).is_some_and(|&n| n > 0);
    let appcode_hdr = auth == Some(AuthKind::AppCode);
    let aliyun = has(X_CA_KEY) && (has(X_CA_SIGNATURE) || !appcode_hdr);
    let candidates = [
        (aliyun, SchemeKind::Aliyun),
        (appcode_hdr && !aliyun, SchemeKind::AppCode),
        (auth == Some(AuthKind::Hmac), SchemeKind::Tencent),
        (auth == Some(AuthKind::Aws4), SchemeKind::SigV4),
        (has(X_BKAPI), SchemeKind::Bkapi),
        (has(SIGNATURE_INPUT), SchemeKind::Rfc9421),
    ];
    let mut found = candidates.iter().filter(|(on, _)| *on).map(|(_, k)| *k);
    let kind = match (found.next(), found.next()) {
        (Some(k), None) => Some(k),
        (Some(a), Some(b)) => {
            return Err(deny(
                DenyCode::Malformed,
                format!("credentials of several schemes ({a}, {b}) in one request"),
            ));
        }
        (None, _) => None,
    };
    let inner = match kind {
        Some(kind) => {
            parse_headers(view, kind, appcode_hdr).map_err(|d| d.for_scheme(kind.as_str()))?
        }
        None => detect_query(view)?,
    };
    Ok(Credential { inner })
}

/// The credential of `kind`, carried in headers.
fn parse_headers(view: &RequestView, kind: SchemeKind, appcode_hdr: bool) -> Result<Inner, Deny> {
    Ok(match kind {
        SchemeKind::Aliyun => Inner::Aliyun(aliyun::AliyunCredential::parse(view, appcode_hdr)?),
        SchemeKind::AppCode => Inner::AppCode(appcode::AppCodeCredential::from_header(view)?),
        SchemeKind::Tencent => Inner::Tencent(tencent::TencentCredential::parse(view)?),
        SchemeKind::SigV4 => Inner::SigV4(sigv4::SigV4Credential::parse_header(view)?),
        SchemeKind::Bkapi => Inner::Bkapi(bkapi::BkCredential::parse(view)?),
        SchemeKind::Rfc9421 => Inner::Rfc9421(rfc9421::Rfc9421Credential::parse(view)?),
    })
}

/// Credentials carried in the query: presigned SigV4, legacy BlueKing, AppCode.
fn detect_query(view: &RequestView) -> Result<Inner, Deny> {
    let q = view.query.as_deref();
    let presigned = canonical::query_param_count(q, "X-Amz-Algorithm") > 0;
    let bk_legacy = bkapi::has_legacy_query(q);
    let appcode = canonical::query_param_count(q, appcode::QUERY_PARAM) > 0;
    match (presigned, bk_legacy, appcode) {
        (false, false, false) => Err(deny(
            DenyCode::MissingCredential,
            "no credential of any known scheme",
        )),
        (true, false, false) => sigv4::SigV4Credential::parse_presigned(view)
            .map(Inner::SigV4)
            .map_err(|d| d.for_scheme(SchemeKind::SigV4.as_str())),
        (false, true, false) => bkapi::BkCredential::parse(view)
            .map(Inner::Bkapi)
            .map_err(|d| d.for_scheme(SchemeKind::Bkapi.as_str())),
        (false, false, true) => appcode::AppCodeCredential::from_query(view)
            .map(Inner::AppCode)
            .map_err(|d| d.for_scheme(SchemeKind::AppCode.as_str())),
        _ => Err(deny(
            DenyCode::Malformed,
            "credentials of several schemes in the query",
        )),
    }
}

impl fmt::Debug for Credential {
    /// Kind and id only: a credential may hold a secret (AppCode, BlueKing).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = match self.id() {
            CredentialId::AppKey(k) => format!("AppKey({k:?})"),
            CredentialId::AppCode(_) => "AppCode(<redacted>)".to_owned(),
            CredentialId::BkAppCode(c) => format!("BkAppCode({c:?})"),
        };
        f.debug_struct("Credential")
            .field("kind", &self.kind())
            .field("id", &id)
            .finish()
    }
}

impl Credential {
    pub fn kind(&self) -> SchemeKind {
        match &self.inner {
            Inner::Aliyun(_) => SchemeKind::Aliyun,
            Inner::AppCode(_) => SchemeKind::AppCode,
            Inner::Tencent(_) => SchemeKind::Tencent,
            Inner::Bkapi(_) => SchemeKind::Bkapi,
            Inner::SigV4(_) => SchemeKind::SigV4,
            Inner::Rfc9421(_) => SchemeKind::Rfc9421,
        }
    }

    pub fn id(&self) -> CredentialId<'_> {
        match &self.inner {
            Inner::Aliyun(c) => CredentialId::AppKey(c.key()),
            Inner::AppCode(c) => CredentialId::AppCode(c.code()),
            Inner::Tencent(c) => CredentialId::AppKey(c.key()),
            Inner::Bkapi(c) => CredentialId::BkAppCode(c.app_code()),
            Inner::SigV4(c) => CredentialId::AppKey(c.key()),
            Inner::Rfc9421(c) => CredentialId::AppKey(c.key()),
        }
    }

    /// Whether this very request carries the secret in clear (AppCode, BlueKing
    /// `bk_app_secret`); `false` for the legacy `bk_signature` form.
    pub fn sends_secret(&self) -> bool {
        match &self.inner {
            Inner::AppCode(_) => true,
            Inner::Bkapi(c) => c.sends_secret(),
            _ => false,
        }
    }

    /// Verifies the signature with one candidate secret (the AppSecret's bytes; for RFC
    /// 9421 whatever bytes the key is, e.g. a Base64-decoded shared key). Constant-time
    /// on decoded bytes. On mismatch: `SignatureMismatch` with the scheme's own error
    /// headers and the server's string-to-sign, never the secret.
    pub fn verify(
        &self,
        view: &RequestView,
        cfg: &SchemeConfig,
        api: &ApiSchemeOptions,
        secret: &[u8],
    ) -> Result<(), Deny> {
        match &self.inner {
            Inner::Aliyun(c) => c.verify(view, secret),
            Inner::AppCode(c) => c.verify(secret),
            Inner::Tencent(c) => c.verify(view, api, secret),
            Inner::Bkapi(c) => c.verify(view, secret),
            Inner::SigV4(c) => c.verify(view, api, secret),
            Inner::Rfc9421(c) => c.verify(view, cfg, secret),
        }
    }

    /// What the server signs for this request (the scheme's string-to-sign in its
    /// primary spelling), for `explain`; `None` where nothing is signed (AppCode,
    /// BlueKing with `bk_app_secret`). Holds request parts, never a secret.
    pub fn string_to_sign(&self, view: &RequestView, api: &ApiSchemeOptions) -> Option<String> {
        match &self.inner {
            Inner::Aliyun(c) => Some(c.string_to_sign(view)),
            Inner::AppCode(_) => None,
            Inner::Tencent(c) => Some(c.string_to_sign(view, api)),
            Inner::Bkapi(c) => c.string_to_sign(view),
            Inner::SigV4(c) => c.string_to_sign(view),
            Inner::Rfc9421(c) => c.string_to_sign(view),
        }
    }

    /// Freshness, after `verify` succeeded. `now_ms` = unix milliseconds.
    pub fn check_fresh(
        &self,
        cfg: &SchemeConfig,
        api: &ApiSchemeOptions,
        now_ms: i64,
    ) -> Result<(), Deny> {
        match &self.inner {
            Inner::Aliyun(c) => c.check_fresh(cfg, api, now_ms),
            Inner::AppCode(_) => Ok(()),
            Inner::Tencent(c) => c.check_fresh(cfg, now_ms),
            Inner::Bkapi(c) => c.check_fresh(cfg, now_ms),
            Inner::SigV4(c) => c.check_fresh(cfg, now_ms),
            Inner::Rfc9421(c) => c.check_fresh(cfg, now_ms),
        }
    }

    /// The nonce to record in the replay cache, if the scheme carries one.
    pub fn nonce(&self) -> Option<&str> {
        match &self.inner {
            Inner::Aliyun(c) => c.nonce(),
            Inner::AppCode(_) | Inner::SigV4(_) => None,
            Inner::Tencent(c) => c.nonce(),
            Inner::Bkapi(c) => c.nonce(),
            Inner::Rfc9421(c) => c.nonce(),
        }
    }

    /// For a scheme without a nonce field (SigV4), what identifies this one signed
    /// request on a replay-protected API: its signature, which covers the timestamp and
    /// every signed part. `None` for schemes that carry a nonce (or none at all).
    pub fn one_time_token(&self) -> Option<String> {
        match &self.inner {
            Inner::SigV4(c) => Some(format!("sig:{}", hex::encode(c.signature()))),
            _ => None,
        }
    }

    /// How long (ms from now) the nonce must be remembered: as long as the request could
    /// still pass `check_fresh`.
    pub fn nonce_ttl_ms(&self, cfg: &SchemeConfig) -> i64 {
        match &self.inner {
            Inner::Aliyun(_) | Inner::Tencent(_) | Inner::SigV4(_) | Inner::AppCode(_) => {
                cfg.timestamp_window_ms.saturating_mul(2)
            }
            Inner::Bkapi(_) => cfg.bk_timestamp_window_ms.saturating_mul(2),
            Inner::Rfc9421(c) => c.nonce_ttl_ms(cfg),
        }
    }

    /// Checks the body against the digest the scheme covers. Never `Verified` without
    /// the body; `BodyIncomplete` when a covered body was cut by the proxy.
    pub fn check_body(&self, view: &RequestView) -> Result<BodyCheck, Deny> {
        match &self.inner {
            Inner::Aliyun(c) => c.check_body(view),
            Inner::AppCode(_) => Ok(BodyCheck::NotCovered),
            Inner::Tencent(c) => c.check_body(view),
            Inner::Bkapi(c) => c.check_body(view),
            Inner::SigV4(c) => c.check_body(view),
            Inner::Rfc9421(c) => c.check_body(view),
        }
    }

    /// When the signature covers the body through a digest header, that header's name:
    /// the upstream can compare it with the body when keygate could not (no body sent).
    /// `None` when the body is signed in another way (form parameters) or not at all.
    pub fn body_digest_header(&self, view: &RequestView) -> Option<&'static str> {
        let present = |h: &'static str| view.headers.contains(h).then_some(h);
        match &self.inner {
            Inner::Aliyun(_) | Inner::Tencent(_) => present("content-md5"),
            Inner::SigV4(_) => present("x-amz-content-sha256"),
            Inner::Rfc9421(_) => present("content-digest"),
            Inner::AppCode(_) | Inner::Bkapi(_) => None,
        }
    }

    /// Request headers (lower-case) that carried the credential or signature, to strip
    /// before the request goes upstream.
    pub fn headers_to_remove(&self) -> Vec<String> {
        let names: &[&str] = match &self.inner {
            Inner::Aliyun(c) => c.headers_to_remove(),
            Inner::AppCode(c) => c.headers_to_remove(),
            Inner::Tencent(_) => &["authorization"],
            Inner::Bkapi(_) => &["x-bkapi-authorization"],
            Inner::SigV4(c) => c.headers_to_remove(),
            Inner::Rfc9421(_) => &["signature", "signature-input"],
        };
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Query parameters (exact names) that carry a secret and should be dropped before
    /// the request goes upstream (Envoy: `OkHttpResponse.query_parameters_to_remove`).
    pub fn query_params_to_remove(&self) -> Vec<String> {
        match &self.inner {
            Inner::AppCode(c) => c.query_params_to_remove(),
            Inner::Bkapi(_) => bkapi::QUERY_SECRETS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Adds the scheme's vendor error headers to a deny produced elsewhere, so vendor
    /// SDKs still show something useful. The status stays keygate's; headers the deny
    /// already carries are kept.
    pub fn decorate_deny(&self, deny: Deny) -> Deny {
        self.kind().decorate_deny(deny)
    }
}

/// The body check shared by the schemes that cover the body with `Content-MD5` or by
/// signing form fields (aliyun, tencent): not covered, not available to check, cut by
/// the proxy, or checked with the scheme's own `matches` (its accepted encodings), a
/// mismatch answered with the scheme's own `mismatch` deny.
pub(crate) fn check_content_md5(
    view: &RequestView,
    matches: impl Fn(&str, &[u8]) -> bool,
    mismatch: impl FnOnce() -> Deny,
) -> Result<BodyCheck, Deny> {
    let md5 = view.headers.get("content-md5");
    if md5.is_none() && !canonical::is_form(view) {
        return Ok(BodyCheck::NotCovered);
    }
    let Some(body) = view.body.as_deref() else {
        return Ok(BodyCheck::NotAvailable);
    };
    if view.body_partial {
        return Err(deny(
            DenyCode::BodyIncomplete,
            "body was cut by the proxy; cannot check it",
        ));
    }
    if let Some(claimed) = md5
        && !matches(claimed, body)
    {
        return Err(mismatch());
    }
    Ok(BodyCheck::Verified)
}

/// Refuses parameters a sorted string-to-sign cannot tell apart (`canonical::
/// param_ambiguity`): with them, a request signed for `?to=alice` would still verify
/// with `&to=mallory` appended, and the upstream may read the second value.
pub(crate) fn check_signed_params(view: &RequestView) -> Result<(), Deny> {
    let form = canonical::is_form(view)
        .then(|| view.body.as_deref().map(String::from_utf8_lossy))
        .flatten();
    let Some(why) = canonical::param_ambiguity(view.query.as_deref(), form.as_deref()) else {
        return Ok(());
    };
    let message = match why {
        canonical::ParamAmbiguity::TooMany => format!(
            "more than {} query and form parameters",
            canonical::MAX_SIGNED_PARAMS
        ),
        canonical::ParamAmbiguity::Repeated(n) => format!(
            "parameter \"{}\" appears more than once; the signature cannot tell its values apart",
            canonical::echo_escaped(&n)
        ),
        canonical::ParamAmbiguity::Separator(n) => format!(
            "parameter \"{}\" decodes to text holding '&' or '='; the signature cannot tell it \
             from other parameters",
            canonical::echo_escaped(&n)
        ),
    };
    Err(deny(DenyCode::Malformed, message))
}

/// Adds `name: value` unless the deny already carries that header (case-insensitive).
pub(crate) fn add_header_once(mut deny: Deny, name: &str, value: impl Into<String>) -> Deny {
    if !deny
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        deny.headers.push((name.to_owned(), value.into()));
    }
    deny
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
