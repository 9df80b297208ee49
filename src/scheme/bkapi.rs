//! BlueKing API Gateway app verification (`X-Bkapi-Authorization`), spec §3.
//!
//! Owns: the JSON header (secret sent in clear), the legacy v1 `bk_signature` query
//! signature (`legacy_content`, also used by the signer), their freshness rules, and
//! the `X-Bkapi-Error-Code` / `X-Bkapi-Error-Message` answers.
//!
//! # Decisions
//! * Only the app is verified. `bk_username`, `bk_token`, `access_token` and `jwt` are
//!   never turned into a verified user; keygate does not expose a user at all.
//! * Header keys: `bk_app_code` before `app_code`, `bk_app_secret` before `app_secret`.
//!   `null` counts as absent; any other non-string value is `Malformed`.
//! * With the header present but no secret in it, the legacy query signature is used
//!   with the header's app code (the header is the only source of the app code then).
//! * Legacy content follows the gateway's Lua: method + path + `?` + all query
//!   parameters (decoded, `+` as space) except `bk_signature` — and except `signature`
//!   only when `bk_signature` is absent or empty — sorted by name (stable, every value
//!   of a repeated name kept, each `k=v`, a bare name as `k=`), and for `POST` any
//!   `data` parameter replaced by `data=<raw body>`. The path is tried raw, then decoded
//!   (nginx signs the decoded `$uri`).
//! * `bk_timestamp` older than the window is `TimestampExpired` like the gateway; unlike
//!   it, a timestamp more than the window in the *future* is refused too, because the
//!   replay cache can only cover a bounded window.
//! * `X-Bkapi-Authorization` is always removed upstream; `bk_app_secret`/`app_secret`
//!   query parameters are reported in `query_params_to_remove`.

use std::borrow::Cow;

use zeroize::Zeroizing;

use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

use super::canonical::{self, HmacAlg};
use super::{BodyCheck, SchemeConfig, add_header_once, deny};

/// Query parameters that would carry a secret.
pub const QUERY_SECRETS: [&str; 2] = ["bk_app_secret", "app_secret"];

/// The longest app code and secret keygate's admin API issues (an app id, an
/// AppSecret): every app keygate knows can use BlueKing's scheme. BlueKing's own
/// gateway issues shorter ones (32 and 128), which these include.
pub const MAX_APP_CODE: usize = 64;
const MAX_SECRET: usize = 256;

fn invalid(reason: &str) -> Deny {
    deny(DenyCode::Malformed, reason.to_owned())
}

/// Whether the query carries a legacy v1 signature.
pub(crate) fn has_legacy_query(q: Option<&str>) -> bool {
    canonical::query_param_count(q, "bk_signature") > 0
        || (canonical::query_param_count(q, "signature") > 0
            && (canonical::query_param_count(q, "bk_app_code") > 0
                || canonical::query_param_count(q, "app_code") > 0))
}

pub(crate) struct BkCredential {
    app_code: String,
    form: Form,
}

enum Form {
    Secret(Zeroizing<String>),
    Legacy {
        signature: String,
        nonce: Option<String>,
        timestamp: Option<String>,
    },
}

/// A string member of the JSON object; `Err` for a non-string, non-null value.
fn json_str<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    keys: &[&str],
) -> Result<Option<&'a str>, Deny> {
    for k in keys {
        match obj.get(*k) {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) => return Ok(Some(s.as_str())),
            Some(_) => return Err(invalid(&format!("{k} must be a string"))),
        }
    }
    Ok(None)
}

/// Whether `code` is an app code this scheme reads (the signer checks the same).
pub fn valid_app_code(code: &str) -> bool {
    !code.is_empty()
        && code.chars().count() <= MAX_APP_CODE
        && !code
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>')
}

fn check_app_code(code: &str) -> Result<(), Deny> {
    if code.is_empty() {
        return Err(invalid("app code cannot be empty"));
    }
    if !valid_app_code(code) {
        return Err(invalid("app code is invalid"));
    }
    Ok(())
}

impl BkCredential {
    pub(crate) fn parse(view: &RequestView) -> Result<Self, Deny> {
        let q = view.query.as_deref();
        let app_code = match view.headers.get("x-bkapi-authorization") {
            Some(raw) => {
                let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
                    .map_err(|_| {
                        invalid("request header X-Bkapi-Authorization is not a valid JSON")
                    })?;
                let code = json_str(&obj, &["bk_app_code", "app_code"])?
                    .unwrap_or("")
                    .to_owned();
                check_app_code(&code)?;
                if let Some(secret) =
                    json_str(&obj, &["bk_app_secret", "app_secret"])?.filter(|s| !s.is_empty())
                {
                    if secret.chars().count() > MAX_SECRET {
                        return Err(invalid("app secret is invalid"));
                    }
                    return Ok(Self {
                        app_code: code,
                        form: Form::Secret(Zeroizing::new(secret.to_owned())),
                    });
                }
                code
            }
            None => {
                let code = canonical::query_param(q, "bk_app_code")
                    .filter(|c| !c.is_empty())
                    .or_else(|| canonical::query_param(q, "app_code"))
                    .unwrap_or_default()
                    .into_owned();
                check_app_code(&code)?;
                code
            }
        };
        if !has_legacy_query(q) {
            return Err(invalid(
                "please provide bk_app_secret or bk_signature to verify app",
            ));
        }
        let (signature, _) = pop_signature(q);
        if signature.is_empty() {
            return Err(invalid(
                "please provide bk_app_secret or bk_signature to verify app",
            ));
        }
        Ok(Self {
            app_code,
            form: Form::Legacy {
                signature,
                nonce: canonical::query_param(q, "bk_nonce").map(Cow::into_owned),
                timestamp: canonical::query_param(q, "bk_timestamp").map(Cow::into_owned),
            },
        })
    }

    pub(crate) fn app_code(&self) -> &str {
        &self.app_code
    }

    pub(crate) fn sends_secret(&self) -> bool {
        matches!(self.form, Form::Secret(_))
    }

    pub(crate) fn nonce(&self) -> Option<&str> {
        match &self.form {
            Form::Legacy { nonce, .. } => nonce.as_deref(),
            Form::Secret(_) => None,
        }
    }

    /// The signed content of the legacy `bk_signature` form; `None` for the form that
    /// sends its secret (nothing is signed).
    pub(crate) fn string_to_sign(&self, view: &RequestView) -> Option<String> {
        match &self.form {
            Form::Legacy { .. } => {
                let keep = keep_signature_param(view.query.as_deref());
                Some(String::from_utf8_lossy(&legacy_content(view, false, keep)).into_owned())
            }
            Form::Secret(_) => None,
        }
    }

    pub(crate) fn verify(&self, view: &RequestView, secret: &[u8]) -> Result<(), Deny> {
        match &self.form {
            Form::Secret(sent) => {
                if canonical::ct_eq(sent.as_bytes(), secret) {
                    Ok(())
                } else {
                    Err(deny(
                        DenyCode::SignatureMismatch,
                        "bk_app_code or bk_app_secret is incorrect",
                    ))
                }
            }
            Form::Legacy { signature, .. } => {
                if view.method == "POST" {
                    if view.body.is_none() {
                        return Err(deny(
                            DenyCode::BodyDigestMissing,
                            "bk_signature of a POST covers the body, which was not sent",
                        ));
                    }
                    if view.body_partial {
                        return Err(deny(
                            DenyCode::BodyIncomplete,
                            "body was cut by the proxy; cannot verify bk_signature",
                        ));
                    }
                }
                let provided = canonical::b64_decode(signature);
                let keep = keep_signature_param(view.query.as_deref());
                for decoded_path in [false, true] {
                    if decoded_path && !view.path.contains('%') {
                        continue;
                    }
                    let content = legacy_content(view, decoded_path, keep);
                    if provided
                        .as_deref()
                        .is_some_and(|p| HmacAlg::Sha1.verify(secret, &content, p))
                    {
                        return Ok(());
                    }
                }
                Err(deny(
                    DenyCode::SignatureMismatch,
                    "signature [bk_signature] verification failed, please provide valid bk_signature",
                ))
            }
        }
    }

    pub(crate) fn check_fresh(&self, cfg: &SchemeConfig, now_ms: i64) -> Result<(), Deny> {
        let Form::Legacy {
            nonce, timestamp, ..
        } = &self.form
        else {
            return Ok(());
        };
        match nonce.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(deny(DenyCode::NonceMissing, "parameter bk_nonce required"));
            }
            Some(n) if n.parse::<u64>().map_or(true, |v| v == 0) => {
                return Err(deny(
                    DenyCode::NonceMissing,
                    "parameter bk_nonce is invalid, it should be a positive integer",
                ));
            }
            Some(_) => {}
        }
        let ts = match timestamp.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(deny(
                    DenyCode::TimestampMissing,
                    "parameter bk_timestamp required",
                ));
            }
            Some(t) => t
                .parse::<i64>()
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .ok_or_else(|| {
                    invalid("parameter bk_timestamp is invalid, it should be in time format")
                })?,
        };
        let age = now_ms.saturating_sub(ts);
        if age > cfg.bk_timestamp_window_ms || age < cfg.bk_timestamp_window_ms.saturating_neg() {
            return Err(deny(
                DenyCode::TimestampExpired,
                "parameter bk_timestamp has expired",
            ));
        }
        Ok(())
    }

    pub(crate) fn check_body(&self, view: &RequestView) -> Result<BodyCheck, Deny> {
        match &self.form {
            Form::Legacy { .. } if view.method == "POST" => match &view.body {
                None => Ok(BodyCheck::NotAvailable),
                Some(_) if view.body_partial => {
                    Err(deny(DenyCode::BodyIncomplete, "body was cut by the proxy"))
                }
                Some(_) => Ok(BodyCheck::Verified),
            },
            _ => Ok(BodyCheck::NotCovered),
        }
    }
}

/// The signature the gateway would read: the first `bk_signature`, or, when that is
/// absent or empty, the first `signature`. The flag says whether `signature` stays in
/// the signed content.
fn pop_signature(q: Option<&str>) -> (String, bool) {
    match canonical::query_param(q, "bk_signature").filter(|s| !s.is_empty()) {
        Some(s) => (s.trim().to_owned(), true),
        None => (
            canonical::query_param(q, "signature")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            false,
        ),
    }
}

/// Whether a `signature` parameter stays in the legacy content for this query.
pub fn keep_signature_param(q: Option<&str>) -> bool {
    pop_signature(q).1
}

type BytePair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The legacy v1 content (§3.2 step 3) as bytes: the body of a `POST` enters raw.
/// `keep_signature` is `keep_signature_param(query)` when verifying; a signer that is
/// about to add `bk_signature` passes `true`.
pub fn legacy_content(view: &RequestView, decoded_path: bool, keep_signature: bool) -> Vec<u8> {
    let mut pairs: Vec<BytePair<'_>> = Vec::new();
    if let Some(q) = view.query.as_deref() {
        for (n, v) in canonical::raw_pairs(q) {
            let name = canonical::percent_decode(n, true);
            let drop = name.is_empty()
                || &*name == b"bk_signature"
                || (!keep_signature && &*name == b"signature")
                || (view.method == "POST" && &*name == b"data");
            if !drop {
                pairs.push((name, canonical::percent_decode(v, true)));
            }
        }
    }
    if view.method == "POST" {
        let body = view.body.as_deref().unwrap_or_default();
        pairs.push((Cow::Borrowed(b"data"), Cow::Borrowed(body)));
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));

    let mut out = Vec::with_capacity(64 + view.path.len());
    out.extend_from_slice(view.method.as_bytes());
    if decoded_path {
        out.extend_from_slice(&canonical::percent_decode(&view.path, false));
    } else {
        out.extend_from_slice(view.path.as_bytes());
    }
    out.push(b'?');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
    out
}

/// Base64 HMAC-SHA1 of legacy content (what a client sends as `bk_signature`).
pub fn legacy_signature(secret: &[u8], content: &[u8]) -> Option<String> {
    HmacAlg::Sha1
        .mac(secret, &[content])
        .map(|t| canonical::b64_encode(&t))
}

/// BlueKing's error code and reason for a deny.
fn vendor_error(deny: &Deny) -> (&'static str, String) {
    match deny.code {
        DenyCode::UnknownAppKey => ("1640001", "app not found".to_owned()),
        DenyCode::ApiNotFound => ("1640401", "API not found".to_owned()),
        DenyCode::NoGrant | DenyCode::GrantExpired | DenyCode::SchemeNotAllowed => (
            "1640301",
            "App has no permission to the resource".to_owned(),
        ),
        DenyCode::Internal
        | DenyCode::ReplayCacheFull
        | DenyCode::ReplayUnavailable
        | DenyCode::Overloaded => ("1650001", "Internal server error".to_owned()),
        _ => ("1640001", deny.message.clone()),
    }
}

pub(crate) fn decorate(deny: Deny) -> Deny {
    let (code, reason) = vendor_error(&deny);
    let message = match code {
        "1640001" => format!(
            "Parameters error [reason={:?}]",
            canonical::echo_escaped(&reason)
        ),
        "1640301" => "App has no permission to the resource".to_owned(),
        "1640401" => "API not found".to_owned(),
        _ => "Internal server error".to_owned(),
    };
    let deny = add_header_once(deny, "X-Bkapi-Error-Code", code);
    add_header_once(deny, "X-Bkapi-Error-Message", message)
}
