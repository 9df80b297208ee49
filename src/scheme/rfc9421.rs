//! RFC 9421 HTTP Message Signatures with `hmac-sha256`, spec §5.1.
//!
//! Owns: label selection, derived components, the signature base (`signature_base`,
//! also used by the signer), `created`/`expires`, the required-coverage policy and RFC
//! 9530 `Content-Digest`. The RFC 8941 Structured Field syntax is `sf`.
//!
//! # Decisions
//! * Label: the first `Signature-Input` member (in header order) that has a `keyid`,
//!   whose `alg` is absent or `hmac-sha256`, and that has a byte-sequence entry in
//!   `Signature`. Members with another `alg` are skipped; if only such members exist,
//!   `UnsupportedAlgorithm`.
//! * Duplicate dictionary keys are `Malformed` (RFC 8941 would let the last one win;
//!   an ambiguous signature is safer refused).
//! * `@signature-params` is the inner list exactly as sent; if that fails, its canonical
//!   re-serialisation is tried (same parameters, so no security difference).
//! * Coverage: `SchemeConfig::rfc9421_required`, plus `@query` when the request has a
//!   non-empty query and `content-digest` when it has a body. `@request-target` and
//!   `@target-uri` count as covering `@path` and `@query`; `@target-uri` covers
//!   `@authority`.
//! * `@query-param` gives one line per occurrence (spec §5.1), names matched and values
//!   re-encoded with the form percent-encode set (space as `%20`). Component parameters
//!   `sf`, `key`, `bs`, `req`, `tr` are not supported (`Malformed`).
//! * `@scheme`/`@target-uri` assume `https` when the front door did not say; a wrong
//!   guess can only make verification fail.
//! * Unsupported or missing digest algorithms in a covered `Content-Digest`
//!   (only `sha-256` and `sha-512` known) are `BodyDigestMismatch`.

use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

use super::canonical::{self, HmacAlg};
use super::{BodyCheck, SchemeConfig, add_header_once, deny};

pub const ALG: &str = "hmac-sha256";

pub mod sf;

use sf::{Bare, Item, Member};

fn malformed(msg: impl Into<String>) -> Deny {
    deny(DenyCode::Malformed, msg)
}

fn scheme_of(view: &RequestView) -> String {
    if view.scheme.is_empty() {
        "https".to_owned()
    } else {
        view.scheme.to_ascii_lowercase()
    }
}

/// `@authority`: lower-case host, default port dropped (both defaults when the scheme is
/// unknown).
pub fn authority(view: &RequestView) -> String {
    let host = canonical::header(view, "host")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let scheme = view.scheme.to_ascii_lowercase();
    let drop = |suffix: &str, s: &str| (scheme.is_empty() || scheme == s) && host.ends_with(suffix);
    if drop(":443", "https") {
        host.get(..host.len() - 4).unwrap_or(&host).to_owned()
    } else if drop(":80", "http") {
        host.get(..host.len() - 3).unwrap_or(&host).to_owned()
    } else {
        host
    }
}

fn component_name(item: &Item) -> Result<&str, Deny> {
    match &item.bare {
        Bare::Str(s) => Ok(s.as_str()),
        _ => Err(malformed("covered components must be strings")),
    }
}

/// The value(s) of one covered component; several only for a repeated `@query-param`.
fn component_values(view: &RequestView, item: &Item) -> Result<Vec<String>, Deny> {
    let name = component_name(item)?;
    let only_name_param = item
        .params
        .iter()
        .all(|(k, _)| name == "@query-param" && k == "name");
    if !only_name_param {
        return Err(malformed(format!(
            "component parameters on {} are not supported",
            canonical::echo_escaped(name)
        )));
    }
    let path = if view.path.is_empty() {
        "/"
    } else {
        view.path.as_str()
    };
    let v = match name {
        "@method" => view.method.clone(),
        "@authority" => authority(view),
        "@scheme" => scheme_of(view),
        "@path" => path.to_owned(),
        "@query" => format!("?{}", view.query.as_deref().unwrap_or("")),
        "@request-target" => match &view.query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        },
        "@target-uri" => {
            let host = canonical::header(view, "host").unwrap_or("");
            match &view.query {
                Some(q) => format!("{}://{host}{path}?{q}", scheme_of(view)),
                None => format!("{}://{host}{path}", scheme_of(view)),
            }
        }
        "@query-param" => {
            let Some(Bare::Str(wanted)) = item.param("name") else {
                return Err(malformed("@query-param needs a name parameter"));
            };
            let values: Vec<String> = canonical::raw_pairs(view.query.as_deref().unwrap_or(""))
                .filter(|(n, _)| {
                    canonical::form_encode(&canonical::percent_decode(n, true)) == *wanted
                })
                .map(|(_, v)| canonical::form_encode(&canonical::percent_decode(v, true)))
                .collect();
            if values.is_empty() {
                return Err(malformed(format!(
                    "query parameter {} is not in the request",
                    canonical::echo_escaped(wanted)
                )));
            }
            return Ok(values);
        }
        n if n.starts_with('@') => {
            return Err(malformed(format!(
                "unsupported derived component {}",
                canonical::echo_escaped(n)
            )));
        }
        n => {
            if n.is_empty() || n.bytes().any(|b| b.is_ascii_uppercase() || b <= b' ') {
                return Err(malformed("header component names must be lower-case"));
            }
            let mut values = view.headers.get_all(n).map(str::trim).peekable();
            if values.peek().is_none() {
                if n == "host" && !view.host.is_empty() {
                    return Ok(vec![view.host.trim().to_owned()]);
                }
                return Err(malformed(format!(
                    "covered header {} is not in the request",
                    canonical::echo_escaped(n)
                )));
            }
            values.collect::<Vec<_>>().join(", ")
        }
    };
    Ok(vec![v])
}

/// The signature base of RFC 9421 §2.5: one line per covered component, then the
/// `@signature-params` line carrying `params_text` (the inner list as serialised).
pub fn signature_base(
    view: &RequestView,
    components: &[Item],
    params_text: &str,
) -> Result<String, Deny> {
    let mut s = String::with_capacity(256);
    let mut seen: Vec<String> = Vec::with_capacity(components.len());
    for item in components {
        let mut id = String::new();
        sf::serialize_item(&mut id, item);
        if seen.contains(&id) {
            return Err(malformed(format!(
                "component {} covered twice",
                canonical::echo_escaped(&id)
            )));
        }
        for v in component_values(view, item)? {
            s.push_str(&id);
            s.push_str(": ");
            s.push_str(&v);
            s.push('\n');
        }
        seen.push(id);
    }
    s.push_str("\"@signature-params\": ");
    s.push_str(params_text);
    Ok(s)
}

pub(crate) struct Rfc9421Credential {
    components: Vec<Item>,
    raw_params: String,
    canonical_params: String,
    signature: Vec<u8>,
    keyid: String,
    created: Option<i64>,
    expires: Option<i64>,
    nonce: Option<String>,
}

fn string_param(params: &sf::Params, key: &str) -> Result<Option<String>, Deny> {
    match params.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        None => Ok(None),
        Some(Bare::Str(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(format!(
            "signature parameter {key} must be a string"
        ))),
    }
}

fn int_param(params: &sf::Params, key: &str) -> Result<Option<i64>, Deny> {
    match params.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        None => Ok(None),
        Some(Bare::Integer(i)) => Ok(Some(*i)),
        Some(_) => Err(malformed(format!(
            "signature parameter {key} must be an integer"
        ))),
    }
}

impl Rfc9421Credential {
    pub(crate) fn parse(view: &RequestView) -> Result<Self, Deny> {
        let input = canonical::header_joined(view, "signature-input", ", ").unwrap_or_default();
        let sigs = canonical::header_joined(view, "signature", ", ")
            .ok_or_else(|| malformed("Signature-Input without a Signature header"))?;
        let input = sf::parse_dictionary(&input)
            .ok_or_else(|| malformed("Signature-Input is not a valid dictionary"))?;
        let sigs = sf::parse_dictionary(&sigs)
            .ok_or_else(|| malformed("Signature is not a valid dictionary"))?;
        if input.len() > canonical::MAX_SIGNED_NAMES || sigs.len() > canonical::MAX_SIGNED_NAMES {
            return Err(malformed("too many signature labels"));
        }
        let mut other_alg = false;
        for (label, member) in input {
            let Member::Inner { items, params, raw } = member else {
                continue;
            };
            let Some(keyid) = string_param(&params, "keyid")? else {
                continue;
            };
            if string_param(&params, "alg")?.is_some_and(|a| a != ALG) {
                other_alg = true;
                continue;
            }
            let signature = sigs
                .iter()
                .find(|(l, _)| *l == label)
                .and_then(|(_, m)| match m {
                    Member::Item(Item {
                        bare: Bare::Bytes(b),
                        ..
                    }) => Some(b.clone()),
                    _ => None,
                });
            let Some(signature) = signature else {
                continue;
            };
            if items.len() > canonical::MAX_SIGNED_NAMES {
                return Err(malformed("too many covered components"));
            }
            for it in &items {
                component_name(it)?;
            }
            string_param(&params, "tag")?;
            return Ok(Self {
                canonical_params: sf::serialize_inner(&items, &params),
                created: int_param(&params, "created")?,
                expires: int_param(&params, "expires")?,
                nonce: string_param(&params, "nonce")?,
                components: items,
                raw_params: raw,
                signature,
                keyid,
            });
        }
        if other_alg {
            Err(deny(
                DenyCode::UnsupportedAlgorithm,
                format!("only alg=\"{ALG}\" is supported"),
            ))
        } else {
            Err(malformed(
                "no signature with a keyid and a matching Signature entry",
            ))
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.keyid
    }

    pub(crate) fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    fn covers(&self, name: &str) -> bool {
        let has = |n: &str| {
            self.components
                .iter()
                .any(|c| matches!(&c.bare, Bare::Str(s) if s == n))
        };
        match name {
            "@path" | "@query" => has(name) || has("@request-target") || has("@target-uri"),
            "@authority" => has(name) || has("@target-uri"),
            n => has(n),
        }
    }

    /// The signature base over the parameters as sent: what `explain` shows.
    pub(crate) fn string_to_sign(&self, view: &RequestView) -> Option<String> {
        signature_base(view, &self.components, &self.raw_params).ok()
    }

    pub(crate) fn verify(
        &self,
        view: &RequestView,
        cfg: &SchemeConfig,
        secret: &[u8],
    ) -> Result<(), Deny> {
        let has_query = view.query.as_deref().is_some_and(|q| !q.is_empty());
        let extra = [
            (has_query, "@query"),
            (canonical::has_body(view), "content-digest"),
        ];
        let required = cfg
            .rfc9421_required
            .iter()
            .map(String::as_str)
            .chain(extra.iter().filter(|(on, _)| *on).map(|(_, n)| *n));
        for name in required {
            if !self.covers(name) {
                return Err(malformed(format!(
                    "the signature must cover {}",
                    canonical::echo_escaped(name)
                ))
                .with_header("Accept-Signature", accept_signature(view, cfg)));
            }
        }
        let base = signature_base(view, &self.components, &self.raw_params)?;
        if HmacAlg::Sha256.verify(secret, base.as_bytes(), &self.signature) {
            return Ok(());
        }
        if self.canonical_params != self.raw_params {
            let alt = signature_base(view, &self.components, &self.canonical_params)?;
            if HmacAlg::Sha256.verify(secret, alt.as_bytes(), &self.signature) {
                return Ok(());
            }
        }
        Err(deny(
            DenyCode::SignatureMismatch,
            format!(
                "signature does not match; signature base: {}",
                canonical::echo_escaped(&base)
            ),
        )
        .with_header("WWW-Authenticate", WWW_AUTHENTICATE))
    }

    pub(crate) fn check_fresh(&self, cfg: &SchemeConfig, now_ms: i64) -> Result<(), Deny> {
        let Some(created) = self.created else {
            return Err(deny(
                DenyCode::TimestampMissing,
                "the created signature parameter is required",
            ));
        };
        let created_ms = created.saturating_mul(1000);
        if now_ms.saturating_sub(created_ms).saturating_abs() > cfg.rfc9421_window_ms {
            return Err(deny(
                DenyCode::TimestampExpired,
                "created is outside the accepted window",
            ));
        }
        if let Some(expires) = self.expires
            && now_ms > expires.saturating_mul(1000)
        {
            return Err(deny(
                DenyCode::TimestampExpired,
                "the signature has expired",
            ));
        }
        Ok(())
    }

    pub(crate) fn nonce_ttl_ms(&self, cfg: &SchemeConfig) -> i64 {
        let w = cfg.rfc9421_window_ms;
        let full = w.saturating_mul(2);
        match (self.created, self.expires) {
            (Some(c), Some(e)) => full
                .min(e.saturating_sub(c).saturating_mul(1000).saturating_add(w))
                .max(0),
            _ => full,
        }
    }

    pub(crate) fn check_body(&self, view: &RequestView) -> Result<BodyCheck, Deny> {
        if !self.covers("content-digest") {
            return Ok(BodyCheck::NotCovered);
        }
        let Some(body) = view.body.as_deref() else {
            return Ok(BodyCheck::NotAvailable);
        };
        if view.body_partial {
            return Err(deny(
                DenyCode::BodyIncomplete,
                "body was cut by the proxy; cannot check Content-Digest",
            ));
        }
        let header = canonical::header_joined(view, "content-digest", ", ").unwrap_or_default();
        let Some(dict) = sf::parse_dictionary(&header) else {
            return Err(deny(
                DenyCode::BodyDigestMismatch,
                "Content-Digest is not a valid dictionary",
            ));
        };
        let mut known = 0;
        for (alg, member) in &dict {
            let Member::Item(Item {
                bare: Bare::Bytes(claimed),
                ..
            }) = member
            else {
                continue;
            };
            let ok = match alg.as_str() {
                "sha-256" => canonical::ct_eq(claimed, &canonical::sha256(body)),
                "sha-512" => canonical::ct_eq(claimed, &canonical::sha512(body)),
                _ => continue,
            };
            if !ok {
                return Err(deny(
                    DenyCode::BodyDigestMismatch,
                    format!("Content-Digest {alg} does not match the body"),
                ));
            }
            known += 1;
        }
        if known == 0 {
            return Err(deny(
                DenyCode::BodyDigestMismatch,
                "Content-Digest has no sha-256 or sha-512 value",
            ));
        }
        Ok(BodyCheck::Verified)
    }
}

/// The `Content-Digest` value keygate's signer sends: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    format!(
        "sha-256=:{}:",
        canonical::b64_encode(&canonical::sha256(body))
    )
}

const WWW_AUTHENTICATE: &str = "Signature realm=\"keygate\"";

/// Advertises what a signature for this request must cover (RFC 9421 §5.1).
fn accept_signature(view: &RequestView, cfg: &SchemeConfig) -> String {
    let mut names: Vec<&str> = cfg.rfc9421_required.iter().map(String::as_str).collect();
    if view.query.as_deref().is_some_and(|q| !q.is_empty()) && !names.contains(&"@query") {
        names.push("@query");
    }
    if canonical::has_body(view) && !names.contains(&"content-digest") {
        names.push("content-digest");
    }
    let items: Vec<Item> = names
        .into_iter()
        .map(|n| Item {
            bare: Bare::Str(n.to_owned()),
            params: Vec::new(),
        })
        .collect();
    let params = vec![
        ("created".to_owned(), Bare::Bool(true)),
        ("keyid".to_owned(), Bare::Bool(true)),
        ("alg".to_owned(), Bare::Str(ALG.to_owned())),
    ];
    format!("sig1={}", sf::serialize_inner(&items, &params))
}

pub(crate) fn decorate(deny: Deny) -> Deny {
    if deny.code.status().http == 401 {
        add_header_once(deny, "WWW-Authenticate", WWW_AUTHENTICATE)
    } else {
        deny
    }
}
