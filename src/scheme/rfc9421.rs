//! RFC 9421 HTTP Message Signatures with `hmac-sha256`, spec §5.1.
//!
//! Owns: a Structured Field (RFC 8941) dictionary parser and serialiser (`sf`), label
//! selection, derived components, the signature base (`signature_base`, also used by
//! the signer), `created`/`expires`, the required-coverage policy and RFC 9530
//! `Content-Digest`.
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

/// RFC 8941 Structured Field values: the subset HTTP message signatures use.
pub mod sf {
    use super::canonical;

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Bare {
        Integer(i64),
        /// Kept as written; signatures never carry decimals in practice.
        Decimal(String),
        Str(String),
        Token(String),
        Bytes(Vec<u8>),
        Bool(bool),
    }

    pub type Params = Vec<(String, Bare)>;

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Item {
        pub bare: Bare,
        pub params: Params,
    }

    impl Item {
        pub fn param(&self, key: &str) -> Option<&Bare> {
            self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
        }
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Member {
        Item(Item),
        /// An inner list with its parameters and its exact text in the header.
        Inner {
            items: Vec<Item>,
            params: Params,
            raw: String,
        },
    }

    struct Parser<'a> {
        src: &'a str,
        s: &'a [u8],
        i: usize,
    }

    impl<'a> Parser<'a> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        fn eat(&mut self, b: u8) -> bool {
            if self.peek() == Some(b) {
                self.i += 1;
                true
            } else {
                false
            }
        }

        fn skip_sp(&mut self) {
            while self.peek() == Some(b' ') {
                self.i += 1;
            }
        }

        fn skip_ows(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t')) {
                self.i += 1;
            }
        }

        fn key(&mut self) -> Option<String> {
            let start = self.i;
            match self.peek()? {
                b'a'..=b'z' | b'*' => self.i += 1,
                _ => return None,
            }
            while matches!(
                self.peek(),
                Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
            ) {
                self.i += 1;
            }
            self.src.get(start..self.i).map(str::to_owned)
        }

        fn params(&mut self) -> Option<Params> {
            let mut out: Params = Vec::new();
            while self.eat(b';') {
                self.skip_sp();
                let k = self.key()?;
                let v = if self.eat(b'=') {
                    self.bare()?
                } else {
                    Bare::Bool(true)
                };
                match out.iter_mut().find(|(ek, _)| *ek == k) {
                    Some(slot) => slot.1 = v,
                    None => out.push((k, v)),
                }
            }
            Some(out)
        }

        fn item(&mut self) -> Option<Item> {
            let bare = self.bare()?;
            let params = self.params()?;
            Some(Item { bare, params })
        }

        fn bare(&mut self) -> Option<Bare> {
            match self.peek()? {
                b'-' | b'0'..=b'9' => self.number(),
                b'"' => self.string(),
                b':' => self.bytes(),
                b'?' => {
                    self.i += 1;
                    let v = match self.peek()? {
                        b'0' => false,
                        b'1' => true,
                        _ => return None,
                    };
                    self.i += 1;
                    Some(Bare::Bool(v))
                }
                b'A'..=b'Z' | b'a'..=b'z' | b'*' => self.token(),
                _ => None,
            }
        }

        fn number(&mut self) -> Option<Bare> {
            let start = self.i;
            self.eat(b'-');
            let digits_start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let int_len = self.i - digits_start;
            if int_len == 0 {
                return None;
            }
            if self.eat(b'.') {
                let frac_start = self.i;
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
                let frac = self.i - frac_start;
                if int_len > 12 || frac == 0 || frac > 3 {
                    return None;
                }
                return self
                    .src
                    .get(start..self.i)
                    .map(|s| Bare::Decimal(s.to_owned()));
            }
            if int_len > 15 {
                return None;
            }
            self.src.get(start..self.i)?.parse().ok().map(Bare::Integer)
        }

        fn string(&mut self) -> Option<Bare> {
            self.i += 1;
            let mut out = String::new();
            loop {
                let b = self.peek()?;
                self.i += 1;
                match b {
                    b'\\' => {
                        let e = self.peek()?;
                        if e != b'"' && e != b'\\' {
                            return None;
                        }
                        out.push(char::from(e));
                        self.i += 1;
                    }
                    b'"' => return Some(Bare::Str(out)),
                    0x20..=0x7e => out.push(char::from(b)),
                    _ => return None,
                }
            }
        }

        fn token(&mut self) -> Option<Bare> {
            let start = self.i;
            self.i += 1;
            while let Some(b) = self.peek() {
                let ok = b.is_ascii_alphanumeric() || b":/!#$%&'*+-.^_`|~".contains(&b);
                if !ok {
                    break;
                }
                self.i += 1;
            }
            self.src
                .get(start..self.i)
                .map(|s| Bare::Token(s.to_owned()))
        }

        fn bytes(&mut self) -> Option<Bare> {
            self.i += 1;
            let start = self.i;
            while let Some(b) = self.peek() {
                if b == b':' {
                    let text = self.src.get(start..self.i)?;
                    self.i += 1;
                    if !text
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
                    {
                        return None;
                    }
                    return canonical::b64_decode(text).map(Bare::Bytes);
                }
                self.i += 1;
            }
            None
        }

        fn inner(&mut self) -> Option<(Vec<Item>, Params)> {
            if !self.eat(b'(') {
                return None;
            }
            let mut items = Vec::new();
            loop {
                self.skip_sp();
                if self.eat(b')') {
                    let params = self.params()?;
                    return Some((items, params));
                }
                items.push(self.item()?);
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return None;
                }
            }
        }
    }

    /// Parses a dictionary field value. `None` if it is not valid RFC 8941 or a key
    /// repeats.
    pub fn parse_dictionary(src: &str) -> Option<Vec<(String, Member)>> {
        let src = src.trim_matches(' ');
        let mut p = Parser {
            src,
            s: src.as_bytes(),
            i: 0,
        };
        let mut out: Vec<(String, Member)> = Vec::new();
        if src.is_empty() {
            return Some(out);
        }
        loop {
            let key = p.key()?;
            let member = if p.eat(b'=') {
                if p.peek() == Some(b'(') {
                    let start = p.i;
                    let (items, params) = p.inner()?;
                    let raw = src.get(start..p.i)?.to_owned();
                    Member::Inner { items, params, raw }
                } else {
                    Member::Item(p.item()?)
                }
            } else {
                Member::Item(Item {
                    bare: Bare::Bool(true),
                    params: p.params()?,
                })
            };
            if out.iter().any(|(k, _)| *k == key) {
                return None;
            }
            out.push((key, member));
            p.skip_ows();
            if p.peek().is_none() {
                return Some(out);
            }
            if !p.eat(b',') {
                return None;
            }
            p.skip_ows();
            p.peek()?;
        }
    }

    pub fn serialize_bare(out: &mut String, b: &Bare) {
        match b {
            Bare::Integer(i) => out.push_str(&i.to_string()),
            Bare::Decimal(d) => out.push_str(d),
            Bare::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Bare::Token(t) => out.push_str(t),
            Bare::Bytes(v) => {
                out.push(':');
                out.push_str(&canonical::b64_encode(v));
                out.push(':');
            }
            Bare::Bool(v) => out.push_str(if *v { "?1" } else { "?0" }),
        }
    }

    pub fn serialize_params(out: &mut String, params: &Params) {
        for (k, v) in params {
            out.push(';');
            out.push_str(k);
            if *v != Bare::Bool(true) {
                out.push('=');
                serialize_bare(out, v);
            }
        }
    }

    pub fn serialize_item(out: &mut String, item: &Item) {
        serialize_bare(out, &item.bare);
        serialize_params(out, &item.params);
    }

    pub fn serialize_inner(items: &[Item], params: &Params) -> String {
        let mut s = String::from("(");
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            serialize_item(&mut s, it);
        }
        s.push(')');
        serialize_params(&mut s, params);
        s
    }
}

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
