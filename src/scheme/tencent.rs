//! Tencent Cloud API Gateway application authentication (`Authorization: hmac id=...`), spec §2.
//!
//! Owns: the `hmac` parameter list, the signing string (`signing_string`, also used by
//! the signer), `X-Date` freshness, `Content-MD5` in both encodings, the environment
//! prefix rule, and Tencent's error texts.
//!
//! # Decisions
//! * `X-Date` is mandatory and must be in `headers=` (`TimestampMissing` otherwise); the
//!   legacy key-pair form that signs `Date` without a time check (§2.5) is not accepted.
//! * `headers=` names are lower-cased and used in the order given; a listed header that
//!   is absent is signed with an empty value; one sent twice (or a repeated `Accept`,
//!   `Content-Type`, `Content-MD5`) is `Malformed`, as for Alibaba.
//! * Parameters: query plus URL-encoded form fields (when the body was sent), decoded,
//!   first value wins for a repeated name, form wins on a clash, sorted, empty value as
//!   the bare name: the same rule as Alibaba, one implementation.
//! * The path is tried raw, then percent-decoded (as for Alibaba §1.9).
//! * `x-apigw-nonce` is returned as the nonce whether or not it is signed.

use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

use super::canonical::{self, HmacAlg};
use super::{ApiSchemeOptions, BodyCheck, SchemeConfig, deny};

const ENV_PREFIXES: [&str; 3] = ["/release", "/test", "/prepub"];

/// Tencent's algorithm names.
pub fn algorithm(name: &str) -> Option<HmacAlg> {
    match name.trim().to_ascii_lowercase().as_str() {
        "hmac-sha1" => Some(HmacAlg::Sha1),
        "hmac-sha256" => Some(HmacAlg::Sha256),
        "hmac-sha384" => Some(HmacAlg::Sha384),
        "hmac-sha512" => Some(HmacAlg::Sha512),
        _ => None,
    }
}

/// Removes a leading `/release`, `/test` or `/prepub` segment; an empty rest is `/`.
pub fn strip_env_prefix(path: &str) -> &str {
    for p in ENV_PREFIXES {
        if let Some(rest) = path.strip_prefix(p) {
            if rest.is_empty() {
                return "/";
            }
            if rest.starts_with('/') {
                return rest;
            }
        }
    }
    path
}

/// Builds the signing string of §2.2. `headers` are the lower-case names of `headers=`.
pub fn signing_string(
    view: &RequestView,
    headers: &[String],
    strip_env: bool,
    decoded_path: bool,
) -> String {
    let mut s = String::with_capacity(256);
    for (i, name) in headers.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(name);
        s.push_str(": ");
        s.push_str(canonical::header(view, name).unwrap_or(""));
    }
    s.push('\n');
    s.push_str(&canonical::upper_method(&view.method));
    s.push('\n');
    for slot in ["accept", "content-type", "content-md5"] {
        s.push_str(view.headers.get(slot).unwrap_or(""));
        s.push('\n');
    }
    let path = if decoded_path {
        canonical::decode_lossy(&view.path, false)
    } else {
        std::borrow::Cow::Borrowed(view.path.as_str())
    };
    let path = if strip_env {
        strip_env_prefix(&path)
    } else {
        &path
    };
    let path = if path.is_empty() { "/" } else { path };
    let mut params = view
        .query
        .as_deref()
        .map(canonical::first_wins_params)
        .unwrap_or_default();
    if canonical::is_form(view)
        && let Some(body) = view.body.as_deref()
    {
        canonical::merge_params(
            &mut params,
            canonical::first_wins_params(&String::from_utf8_lossy(body)),
        );
    }
    canonical::push_path_and_params(&mut s, path, &mut params);
    s
}

pub(crate) struct TencentCredential {
    id: String,
    algorithm: String,
    headers: Vec<String>,
    signature: String,
    x_date: Option<String>,
    nonce: Option<String>,
}

fn format_error(msg: &str) -> Deny {
    deny(DenyCode::Malformed, msg.to_owned())
}

impl TencentCredential {
    pub(crate) fn parse(view: &RequestView) -> Result<Self, Deny> {
        let value = view.headers.get("authorization").unwrap_or("").trim_start();
        let rest = value
            .get(4..)
            .filter(|r| r.starts_with([' ', '\t']))
            .ok_or_else(|| format_error("HMAC authorization format error."))?;
        let params = canonical::auth_params(rest)
            .ok_or_else(|| format_error("HMAC authorization format error."))?;
        let mut id = None;
        let mut alg = None;
        let mut headers = None;
        let mut signature = None;
        for (k, v) in params {
            let slot = match k.to_ascii_lowercase().as_str() {
                "id" => &mut id,
                "algorithm" => &mut alg,
                "headers" => &mut headers,
                "signature" => &mut signature,
                _ => continue,
            };
            if slot.replace(v.into_owned()).is_some() {
                return Err(format_error("HMAC authorization format error."));
            }
        }
        let (Some(id), Some(signature)) = (
            id.filter(|s| !s.is_empty()),
            signature.filter(|s| !s.is_empty()),
        ) else {
            return Err(format_error("HMAC id or signature missing."));
        };
        let algorithm = alg.ok_or_else(|| format_error("HMAC authorization format error."))?;
        let headers = headers
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>();
        if headers.len() > canonical::MAX_SIGNED_NAMES {
            return Err(format_error("HMAC authorization format error."));
        }
        Ok(Self {
            id,
            algorithm,
            headers,
            signature,
            x_date: view.headers.get("x-date").map(str::to_owned),
            nonce: view
                .headers
                .get("x-apigw-nonce")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        })
    }

    pub(crate) fn key(&self) -> &str {
        &self.id
    }

    pub(crate) fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// The signing string over the raw path: what `explain` shows.
    pub(crate) fn string_to_sign(&self, view: &RequestView, api: &ApiSchemeOptions) -> String {
        signing_string(view, &self.headers, api.tencent_strip_env_prefix, false)
    }

    pub(crate) fn verify(
        &self,
        view: &RequestView,
        api: &ApiSchemeOptions,
        secret: &[u8],
    ) -> Result<(), Deny> {
        super::check_signed_params(view)?;
        let Some(alg) = algorithm(&self.algorithm) else {
            return Err(deny(
                DenyCode::UnsupportedAlgorithm,
                format!(
                    "HMAC algorithm {} not supported.",
                    canonical::echo_escaped(&self.algorithm)
                ),
            ));
        };
        if self.x_date.is_none() || !self.headers.iter().any(|h| h == "x-date") {
            return Err(deny(
                DenyCode::TimestampMissing,
                "HMAC signature cannot be verified, a valid x-date header is required for HMAC Authentication.",
            ));
        }
        if canonical::is_form(view) && view.body.is_some() && view.body_partial {
            return Err(deny(
                DenyCode::BodyIncomplete,
                "form body was cut by the proxy; cannot verify",
            ));
        }
        let signed = ["accept", "content-type", "content-md5"]
            .into_iter()
            .chain(self.headers.iter().map(String::as_str));
        if let Some(name) = canonical::repeated_header(view, signed) {
            return Err(deny(
                DenyCode::Malformed,
                format!(
                    "signed header {} appears more than once",
                    canonical::echo_escaped(name)
                ),
            ));
        }
        let provided = canonical::b64_decode(&self.signature);
        let mut first: Option<String> = None;
        for decoded_path in [false, true] {
            if decoded_path && !view.path.contains('%') {
                continue;
            }
            let sts = signing_string(
                view,
                &self.headers,
                api.tencent_strip_env_prefix,
                decoded_path,
            );
            if provided
                .as_deref()
                .is_some_and(|p| alg.verify(secret, sts.as_bytes(), p))
            {
                return Ok(());
            }
            first.get_or_insert(sts);
        }
        Err(deny(
            DenyCode::SignatureMismatch,
            format!(
                "HMAC signature does not match, Server StringToSign:{}",
                canonical::echo_escaped(&first.unwrap_or_default())
            ),
        ))
    }

    pub(crate) fn check_fresh(&self, cfg: &SchemeConfig, now_ms: i64) -> Result<(), Deny> {
        let Some(t) = self
            .x_date
            .as_deref()
            .and_then(canonical::parse_http_date_ms)
        else {
            return Err(deny(
                DenyCode::TimestampMissing,
                "HMAC signature cannot be verified, a valid x-date header is required for HMAC Authentication.",
            ));
        };
        if now_ms.saturating_sub(t).saturating_abs() > cfg.timestamp_window_ms {
            return Err(deny(
                DenyCode::TimestampExpired,
                "HMAC signature cannot be verified, the x-date header is out of date for HMAC Authentication.",
            ));
        }
        Ok(())
    }

    pub(crate) fn check_body(&self, view: &RequestView) -> Result<BodyCheck, Deny> {
        super::check_content_md5(view, content_md5_matches, || {
            deny(
                DenyCode::BodyDigestMismatch,
                "Content-MD5 does not match the body",
            )
        })
    }
}

/// Tencent demos send Base64 of the 32-char hex MD5; RFC 1864 sends Base64 of the raw
/// digest. Either is accepted (hex compared case-insensitively).
pub fn content_md5_matches(claimed: &str, body: &[u8]) -> bool {
    let digest = canonical::md5(body);
    let Some(decoded) = canonical::b64_decode(claimed) else {
        return false;
    };
    if decoded.len() == 16 {
        return canonical::ct_eq(&decoded, &digest);
    }
    let hex = hex::encode(digest);
    decoded.len() == 32 && canonical::ct_eq(&decoded.to_ascii_lowercase(), hex.as_bytes())
}

/// Content-MD5 the way the Tencent demos send it: Base64 of the lower-case hex digest.
pub fn demo_content_md5(body: &[u8]) -> String {
    canonical::b64_encode(hex::encode(canonical::md5(body)).as_bytes())
}
