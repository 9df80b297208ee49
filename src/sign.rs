//! Caller-side signer: what a client must add to a request so keygate accepts it.
//!
//! Owns: `sign` (library: request + key + secret → headers to add, and the changed URL
//! for query-signed forms); the `keygate sign` command is `cli` (`SignArgs`, `run`). Every
//! string-to-sign comes from the verifier's own builders in `crate::scheme`, so the two
//! cannot drift. It reads the clock and randomness only in `run`; `sign` is pure.
//!
//! # Decisions
//! * `Accept: */*` is added when absent for aliyun and tencent: both sign `Accept`, and
//!   curl sends `*/*` when told nothing, so the signature must say the same.
//! * A body without `Content-Type` gets `application/x-www-form-urlencoded`, curl's own
//!   default for `-d`, made explicit so any client sends what was signed.
//! * aliyun signs every `X-Ca-*` header present (its own and the caller's, e.g.
//!   `X-Ca-Stage`) and adds `Content-MD5` for a non-empty, non-form body; tencent adds
//!   the demos' `Content-MD5` (Base64 of the hex digest) and signs `x-date` and
//!   `x-apigw-nonce`; rfc9421 signs `@method @authority @path` (+`@query`, and
//!   `content-type content-digest` with a body) with `created`, `expires` (+300 s),
//!   `nonce`, `keyid`, `alg`.
//! * bkapi: `--algorithm header` (default) sends `X-Bkapi-Authorization`; `--algorithm
//!   signature` produces the legacy `bk_signature` URL. sigv4: header form, or a
//!   presigned URL with `presign_expires_s`; region/service default to the host's first
//!   two labels, as curl does.
//! * Text output: the signed URL first when it changed, then one `Name: value` line per
//!   header. `-d @file` reads the file the way curl does (CR and LF removed).

#![deny(clippy::indexing_slicing)]

pub mod cli;

use crate::request::{Headers, RequestView};
use crate::scheme::canonical::{self, HmacAlg};
use crate::scheme::{SchemeKind, aliyun, bkapi, rfc9421, sigv4, tencent};

/// The request to sign.
#[derive(Clone, Debug, Default)]
pub struct SignRequest {
    /// HTTP method; upper-cased before signing.
    pub method: String,
    /// Absolute URL: `http(s)://authority/path?query` (path and query as sent).
    pub url: String,
    /// Headers the caller will send anyway (signed where the scheme signs them).
    pub headers: Vec<(String, String)>,
    /// The exact body bytes, if any.
    pub body: Option<Vec<u8>>,
}

/// Who signs, how, and when.
#[derive(Clone, Debug)]
pub struct SignOptions<'a> {
    pub scheme: SchemeKind,
    /// AppKey (aliyun/tencent/sigv4/rfc9421), app code (bkapi); unused for appcode.
    pub key: &'a str,
    /// AppSecret bytes; the AppCode itself for appcode.
    pub secret: &'a [u8],
    /// Signing time, unix milliseconds.
    pub now_ms: i64,
    /// A fresh random string (UUID form is best for aliyun).
    pub nonce: &'a str,
    /// aliyun `HmacSHA256|HmacSHA1`; tencent `hmac-sha1|256|384|512`; bkapi
    /// `header|signature`. `None` = the scheme's default.
    pub algorithm: Option<&'a str>,
    pub region: Option<&'a str>,
    pub service: Option<&'a str>,
    /// sigv4: produce a presigned URL valid this long instead of headers.
    pub presign_expires_s: Option<u32>,
    /// tencent: sign the path without `/release`, `/test`, `/prepub`.
    pub tencent_strip_env_prefix: bool,
}

impl<'a> SignOptions<'a> {
    pub fn new(
        scheme: SchemeKind,
        key: &'a str,
        secret: &'a [u8],
        now_ms: i64,
        nonce: &'a str,
    ) -> Self {
        Self {
            scheme,
            key,
            secret,
            now_ms,
            nonce,
            algorithm: None,
            region: None,
            service: None,
            presign_expires_s: None,
            tencent_strip_env_prefix: false,
        }
    }
}

/// What to add to the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// Headers to add, in a sensible order, with conventional capitalisation.
    pub headers: Vec<(String, String)>,
    /// The URL to call: unchanged unless the scheme signs in the query.
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("invalid header {0:?}: expected 'Name: value'")]
    Header(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the secret is empty")]
    EmptySecret,
    #[error("no randomness available: {0}")]
    Random(String),
    #[error("HMAC computation failed")]
    Crypto,
}

struct UrlParts {
    scheme: String,
    authority: String,
    path: String,
    query: Option<String>,
}

fn parse_url(url: &str) -> Result<UrlParts, SignError> {
    let bad = |reason| SignError::Url {
        url: url.to_owned(),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected http:// or https://"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("expected http:// or https://"));
    }
    let rest = rest.split('#').next().unwrap_or("");
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(bad("the authority must be host[:port] without credentials"));
    }
    if target.contains(char::is_whitespace) {
        return Err(bad(
            "whitespace in the path or query must be percent-encoded",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok(UrlParts {
        scheme,
        authority: authority.to_owned(),
        path: path.to_owned(),
        query,
    })
}

fn build_url(p: &UrlParts, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{}://{}{}?{}", p.scheme, p.authority, p.path, q),
        None => format!("{}://{}{}", p.scheme, p.authority, p.path),
    }
}

/// The request as keygate will see it, with `added` headers on top of the caller's.
fn view_of(
    req: &SignRequest,
    url: &UrlParts,
    query: Option<&str>,
    added: &[(String, String)],
) -> RequestView {
    let mut headers = Headers::new();
    let mut host = url.authority.clone();
    for (n, v) in req.headers.iter().chain(added) {
        // An explicit Host replaces the URL's authority, as it does on the wire.
        if n.eq_ignore_ascii_case("host") {
            v.trim().clone_into(&mut host);
            continue;
        }
        headers.push(n, v.trim());
    }
    RequestView {
        method: req.method.to_ascii_uppercase(),
        scheme: url.scheme.clone(),
        host,
        path: url.path.clone(),
        query: query.map(str::to_owned),
        headers,
        body: req.body.clone(),
        ..RequestView::default()
    }
}

fn has_header(req: &SignRequest, added: &[(String, String)], name: &str) -> bool {
    req.headers
        .iter()
        .chain(added)
        .any(|(n, _)| n.eq_ignore_ascii_case(name))
}

fn push(added: &mut Vec<(String, String)>, name: &str, value: impl Into<String>) {
    added.push((name.to_owned(), value.into()));
}

/// Adds `Accept` / `Content-Type` defaults (see module docs).
fn add_defaults(req: &SignRequest, added: &mut Vec<(String, String)>, accept: bool) {
    if accept && !has_header(req, added, "accept") {
        push(added, "Accept", "*/*");
    }
    if req.body.is_some() && !has_header(req, added, "content-type") {
        push(added, "Content-Type", "application/x-www-form-urlencoded");
    }
}

fn non_form_body<'r>(req: &'r SignRequest, added: &[(String, String)]) -> Option<&'r [u8]> {
    let form = req.headers.iter().chain(added).any(|(n, v)| {
        n.eq_ignore_ascii_case("content-type")
            && v.trim_start()
                .get(..33)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    });
    req.body.as_deref().filter(|b| !b.is_empty() && !form)
}

fn reject_header(req: &SignRequest, name: &str) -> Result<(), SignError> {
    if has_header(req, &[], name) {
        return Err(SignError::Invalid(format!(
            "the request already has a {name} header; the signer sets it"
        )));
    }
    Ok(())
}

/// Signs `req`: returns the headers to add and the URL to call.
pub fn sign(req: &SignRequest, opts: &SignOptions<'_>) -> Result<Signed, SignError> {
    if opts.secret.is_empty() {
        return Err(SignError::EmptySecret);
    }
    if req.method.is_empty() || !req.method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(SignError::Invalid(format!(
            "invalid method {:?}",
            req.method
        )));
    }
    for (n, v) in &req.headers {
        if n.is_empty()
            || n.bytes().any(|b| b <= b' ' || b == b':' || b >= 0x7f)
            || v.contains(['\r', '\n'])
        {
            return Err(SignError::Header(format!("{n}: {v}")));
        }
    }
    if opts.scheme != SchemeKind::AppCode && opts.key.trim().is_empty() {
        return Err(SignError::Invalid(format!(
            "{} needs a key (--key)",
            opts.scheme
        )));
    }
    let url = parse_url(&req.url)?;
    match opts.scheme {
        SchemeKind::Aliyun => sign_aliyun(req, &url, opts),
        SchemeKind::AppCode => sign_appcode(req, &url, opts),
        SchemeKind::Tencent => sign_tencent(req, &url, opts),
        SchemeKind::Bkapi => sign_bkapi(req, &url, opts),
        SchemeKind::SigV4 => sign_sigv4(req, &url, opts),
        SchemeKind::Rfc9421 => sign_rfc9421(req, &url, opts),
    }
}

fn sign_aliyun(
    req: &SignRequest,
    url: &UrlParts,
    opts: &SignOptions<'_>,
) -> Result<Signed, SignError> {
    for h in [
        "x-ca-key",
        "x-ca-signature",
        "x-ca-signature-headers",
        "x-ca-signature-method",
        "x-ca-nonce",
        "x-ca-timestamp",
    ] {
        reject_header(req, h)?;
    }
    let (alg, method) = match opts.algorithm.map(str::to_ascii_lowercase).as_deref() {
        None | Some("hmacsha256" | "sha256" | "hmac-sha256") => (HmacAlg::Sha256, "HmacSHA256"),
        Some("hmacsha1" | "sha1" | "hmac-sha1") => (HmacAlg::Sha1, "HmacSHA1"),
        Some(other) => {
            return Err(SignError::Invalid(format!(
                "aliyun algorithm {other:?}: use HmacSHA256 or HmacSHA1"
            )));
        }
    };
    let mut added = Vec::new();
    add_defaults(req, &mut added, true);
    if let Some(body) = non_form_body(req, &added)
        && !has_header(req, &added, "content-md5")
    {
        push(
            &mut added,
            "Content-MD5",
            canonical::b64_encode(&canonical::md5(body)),
        );
    }
    push(&mut added, "X-Ca-Key", opts.key);
    push(&mut added, "X-Ca-Nonce", opts.nonce);
    push(&mut added, "X-Ca-Timestamp", opts.now_ms.to_string());
    push(&mut added, "X-Ca-Signature-Method", method);
    let mut names: Vec<String> = req
        .headers
        .iter()
        .chain(&added)
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| n.starts_with("x-ca-"))
        .collect();
    names.sort();
    names.dedup();
    let list = names.join(",");
    push(&mut added, "X-Ca-Signature-Headers", list.clone());
    let view = view_of(req, url, url.query.as_deref(), &added);
    let sts = aliyun::string_to_sign(&view, Some(&list), aliyun::Variant::default());
    let sig = aliyun::sign_string(alg, opts.secret, &sts).ok_or(SignError::Crypto)?;
    push(&mut added, "X-Ca-Signature", sig);
    Ok(Signed {
        headers: added,
        url: req.url.clone(),
    })
}

fn secret_text<'a>(opts: &SignOptions<'a>) -> Result<&'a str, SignError> {
    std::str::from_utf8(opts.secret).map_err(|_| {
        SignError::Invalid("this scheme sends the secret as text; it must be UTF-8".into())
    })
}

fn sign_appcode(
    req: &SignRequest,
    _url: &UrlParts,
    opts: &SignOptions<'_>,
) -> Result<Signed, SignError> {
    reject_header(req, "authorization")?;
    let code = secret_text(opts)?.trim();
    if code.is_empty() || code.contains(char::is_control) {
        return Err(SignError::Invalid(
            "the AppCode must be non-empty printable text".into(),
        ));
    }
    Ok(Signed {
        headers: vec![("Authorization".into(), format!("APPCODE {code}"))],
        url: req.url.clone(),
    })
}

fn quotable(s: &str, what: &str) -> Result<(), SignError> {
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_control() || c == '"' || c == '\\' || !c.is_ascii())
    {
        return Err(SignError::Invalid(format!(
            "{what} must be non-empty printable ASCII without quotes or backslashes"
        )));
    }
    Ok(())
}

fn sign_tencent(
    req: &SignRequest,
    url: &UrlParts,
    opts: &SignOptions<'_>,
) -> Result<Signed, SignError> {
    reject_header(req, "authorization")?;
    reject_header(req, "x-date")?;
    quotable(opts.key, "the key")?;
    let alg_name = opts.algorithm.unwrap_or("hmac-sha256").to_ascii_lowercase();
    let alg_name = if alg_name.starts_with("hmac-") {
        alg_name
    } else {
        format!("hmac-{alg_name}")
    };
    let alg = tencent::algorithm(&alg_name).ok_or_else(|| {
        SignError::Invalid(format!(
            "tencent algorithm {alg_name:?}: use hmac-sha1, -sha256, -sha384 or -sha512"
        ))
    })?;
    let mut added = Vec::new();
    add_defaults(req, &mut added, true);
    if let Some(body) = non_form_body(req, &added)
        && !has_header(req, &added, "content-md5")
    {
        push(&mut added, "Content-MD5", tencent::demo_content_md5(body));
    }
    push(
        &mut added,
        "X-Date",
        canonical::format_http_date(opts.now_ms),
    );
    let mut signed = vec!["x-date".to_owned()];
    if !opts.nonce.is_empty() && !has_header(req, &added, "x-apigw-nonce") {
        push(&mut added, "X-Apigw-Nonce", opts.nonce);
        signed.push("x-apigw-nonce".to_owned());
    }
    let view = view_of(req, url, url.query.as_deref(), &added);
    let sts = tencent::signing_string(&view, &signed, opts.tencent_strip_env_prefix, false);
    let tag = alg
        .mac(opts.secret, &[sts.as_bytes()])
        .ok_or(SignError::Crypto)?;
    push(
        &mut added,
        "Authorization",
        format!(
            "hmac id=\"{}\", algorithm=\"{alg_name}\", headers=\"{}\", signature=\"{}\"",
            opts.key,
            signed.join(" "),
            canonical::b64_encode(&tag)
        ),
    );
    Ok(Signed {
        headers: added,
        url: req.url.clone(),
    })
}

fn sign_bkapi(
    req: &SignRequest,
    url: &UrlParts,
    opts: &SignOptions<'_>,
) -> Result<Signed, SignError> {
    reject_header(req, "x-bkapi-authorization")?;
    if !bkapi::valid_app_code(opts.key) {
        return Err(SignError::Invalid(format!(
            "the app code must be 1-{} characters without whitespace or <>",
            bkapi::MAX_APP_CODE
        )));
    }
    match opts.algorithm.map(str::to_ascii_lowercase).as_deref() {
        None | Some("header") => {
            let json =
                serde_json::json!({ "bk_app_code": opts.key, "bk_app_secret": secret_text(opts)? });
            Ok(Signed {
                headers: vec![("X-Bkapi-Authorization".into(), json.to_string())],
                url: req.url.clone(),
            })
        }
        Some("signature" | "legacy" | "bk_signature") => {
            let q = url.query.as_deref();
            for p in [
                "bk_app_code",
                "bk_nonce",
                "bk_timestamp",
                "bk_signature",
                "signature",
            ] {
                if canonical::query_param_count(q, p) > 0 {
                    return Err(SignError::Invalid(format!(
                        "the URL already has a {p} parameter"
                    )));
                }
            }
            // bk_nonce must be a positive integer: derive one from the random nonce.
            let digest = canonical::sha256(opts.nonce.as_bytes());
            let nonce = digest
                .iter()
                .take(4)
                .fold(0u32, |acc, b| acc << 8 | u32::from(*b))
                % 999_999_999
                + 1;
            let mut query = q
                .filter(|q| !q.is_empty())
                .map(|q| format!("{q}&"))
                .unwrap_or_default();
            query.push_str(&format!(
                "bk_app_code={}&bk_nonce={nonce}&bk_timestamp={}",
                canonical::form_encode(opts.key.as_bytes()),
                opts.now_ms.div_euclid(1000)
            ));
            let view = view_of(req, url, Some(&query), &[]);
            let content = bkapi::legacy_content(&view, false, true);
            let sig = bkapi::legacy_signature(opts.secret, &content).ok_or(SignError::Crypto)?;
            query.push_str("&bk_signature=");
            query.push_str(&canonical::form_encode(sig.as_bytes()));
            Ok(Signed {
                headers: Vec::new(),
                url: build_url(url, Some(&query)),
            })
        }
        Some(other) => Err(SignError::Invalid(format!(
            "bkapi algorithm {other:?}: use header or signature"
        ))),
    }
}

/// Region and service from the options, else from the host (`service.region.…`) like curl.
fn region_service<'a>(
    url: &'a UrlParts,
    opts: &SignOptions<'a>,
) -> Result<(String, String), SignError> {
    let host = url
        .authority
        .rsplit_once(':')
        .map_or(url.authority.as_str(), |(h, _)| h);
    let mut labels = host.split('.');
    let (first, second) = (labels.next(), labels.next());
    let from_host = second.is_some() && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let service = opts
        .service
        .map(str::to_owned)
        .or_else(|| first.filter(|_| from_host).map(str::to_owned));
    let region = opts
        .region
        .map(str::to_owned)
        .or_else(|| second.filter(|_| from_host).map(str::to_owned));
    match (region, service) {
        (Some(r), Some(s))
            if !r.is_empty() && !s.is_empty() && !r.contains('/') && !s.contains('/') =>
        {
            Ok((r, s))
        }
        _ => Err(SignError::Invalid(
            "sigv4 needs --region and --service (they cannot be taken from this host)".into(),
        )),
    }
}

fn sign_sigv4(
    req: &SignRequest,
    url: &UrlParts,
    opts: &SignOptions<'_>,
) -> Result<Signed, SignError> {
    reject_header(req, "authorization")?;
    if opts.key.is_empty() || opts.key.contains(['/', ',', ' ']) {
        return Err(SignError::Invalid(
            "the access key must not be empty or contain '/', ',' or spaces".into(),
        ));
    }
    let (region, service) = region_service(url, opts)?;
    let given_date = req
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-date"))
        .map(|(_, v)| v.trim().to_owned());
    let amz_date = given_date
        .clone()
        .unwrap_or_else(|| canonical::format_amz_date(opts.now_ms));
    let date = amz_date.get(..8).unwrap_or("").to_owned();
    let scope = sigv4::scope(&date, &region, &service);
    let key = sigv4::signing_key(opts.secret, &date, &region, &service).ok_or(SignError::Crypto)?;
    let uri_mode = if service == "s3" {
        sigv4::UriMode::SingleEncoded
    } else {
        sigv4::UriMode::DoubleEncoded
    };
    let uri = sigv4::canonical_uri(&url.path, uri_mode);

    if let Some(expires) = opts.presign_expires_s {
        if !(1..=604_800).contains(&expires) {
            return Err(SignError::Invalid(
                "presign expiry must be 1..=604800 seconds".into(),
            ));
        }
        let mut query = url
            .query
            .as_deref()
            .filter(|q| !q.is_empty())
            .map(|q| format!("{q}&"))
            .unwrap_or_default();
        query.push_str(&format!(
            "X-Amz-Algorithm={}&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
            sigv4::ALGORITHM,
            canonical::aws_encode(format!("{}/{scope}", opts.key).as_bytes(), false),
        ));
        let view = view_of(req, url, Some(&query), &[]);
        let creq = sigv4::canonical_request(
            &view,
            &uri,
            &sigv4::canonical_query(Some(&query), true, false),
            &["host".to_owned()],
            sigv4::UNSIGNED_PAYLOAD,
        );
        let sig = sigv4::signature_hex(&key, &sigv4::string_to_sign(&amz_date, &scope, &creq))
            .ok_or(SignError::Crypto)?;
        query.push_str("&X-Amz-Signature=");
        query.push_str(&sig);
        return Ok(Signed {
            headers: Vec::new(),
            url: build_url(url, Some(&query)),
        });
    }

    let payload = canonical::sha256_hex(req.body.as_deref().unwrap_or_default());
    let mut added = Vec::new();
    if req.body.is_some() && !has_header(req, &added, "content-type") {
        push(
            &mut added,
            "Content-Type",
            "application/x-www-form-urlencoded",
        );
    }
    if given_date.is_none() {
        push(&mut added, "X-Amz-Date", amz_date.clone());
    }
    if service == "s3" && !has_header(req, &added, "x-amz-content-sha256") {
        push(&mut added, "X-Amz-Content-Sha256", payload.clone());
    }
    let mut signed: Vec<String> = std::iter::once("host".to_owned())
        .chain(
            req.headers
                .iter()
                .chain(&added)
                .map(|(n, _)| n.to_ascii_lowercase()),
        )
        .filter(|n| n != "authorization")
        .collect();
    signed.sort();
    signed.dedup();
    let view = view_of(req, url, url.query.as_deref(), &added);
    let creq = sigv4::canonical_request(
        &view,
        &uri,
        &sigv4::canonical_query(url.query.as_deref(), false, false),
        &signed,
        view.headers.get("x-amz-content-sha256").unwrap_or(&payload),
    );
    let sig = sigv4::signature_hex(&key, &sigv4::string_to_sign(&amz_date, &scope, &creq))
        .ok_or(SignError::Crypto)?;
    push(
        &mut added,
        "Authorization",
        format!(
            "{} Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
            sigv4::ALGORITHM,
            opts.key,
            signed.join(";")
        ),
    );
    Ok(Signed {
        headers: added,
        url: req.url.clone(),
    })
}

/// How long an RFC 9421 signature made by `sign` stays valid.
pub const RFC9421_TTL_S: i64 = 300;

fn sign_rfc9421(
    req: &SignRequest,
    url: &UrlParts,
    opts: &SignOptions<'_>,
) -> Result<Signed, SignError> {
    use rfc9421::sf::{Bare, Item, Member};
    reject_header(req, "signature")?;
    reject_header(req, "signature-input")?;
    quotable(opts.key, "the keyid")?;
    let mut added = Vec::new();
    add_defaults(req, &mut added, false);
    if let Some(body) = req.body.as_deref()
        && !has_header(req, &added, "content-digest")
    {
        push(&mut added, "Content-Digest", rfc9421::content_digest(body));
    }
    let mut names = vec!["@method", "@authority", "@path"];
    if url.query.as_deref().is_some_and(|q| !q.is_empty()) {
        names.push("@query");
    }
    if req.body.is_some() {
        names.extend(["content-type", "content-digest"]);
    }
    let items: Vec<Item> = names
        .iter()
        .map(|n| Item {
            bare: Bare::Str((*n).to_owned()),
            params: Vec::new(),
        })
        .collect();
    let created = opts.now_ms.div_euclid(1000);
    let mut params = vec![
        ("created".to_owned(), Bare::Integer(created)),
        ("expires".to_owned(), Bare::Integer(created + RFC9421_TTL_S)),
    ];
    if !opts.nonce.is_empty() {
        quotable(opts.nonce, "the nonce")?;
        params.push(("nonce".to_owned(), Bare::Str(opts.nonce.to_owned())));
    }
    params.push(("keyid".to_owned(), Bare::Str(opts.key.to_owned())));
    params.push(("alg".to_owned(), Bare::Str(rfc9421::ALG.to_owned())));
    let input = format!("sig1={}", rfc9421::sf::serialize_inner(&items, &params));
    // Re-parse what will be sent, so the base is built exactly as the verifier builds it.
    let parsed = rfc9421::sf::parse_dictionary(&input).ok_or(SignError::Crypto)?;
    let Some((_, Member::Inner { items, raw, .. })) = parsed.into_iter().next() else {
        return Err(SignError::Crypto);
    };
    let view = view_of(req, url, url.query.as_deref(), &added);
    let base =
        rfc9421::signature_base(&view, &items, &raw).map_err(|d| SignError::Invalid(d.message))?;
    let tag = HmacAlg::Sha256
        .mac(opts.secret, &[base.as_bytes()])
        .ok_or(SignError::Crypto)?;
    push(&mut added, "Signature-Input", input);
    push(
        &mut added,
        "Signature",
        format!("sig1=:{}:", canonical::b64_encode(&tag)),
    );
    Ok(Signed {
        headers: added,
        url: req.url.clone(),
    })
}

/// A random UUID v4 string.
pub fn fresh_nonce() -> Result<String, SignError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| SignError::Random(e.to_string()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or(""),
        h.get(8..12).unwrap_or(""),
        h.get(12..16).unwrap_or(""),
        h.get(16..20).unwrap_or(""),
        h.get(20..32).unwrap_or("")
    ))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use std::io::Write as _;

    use super::cli::{SignArgs, run, shell_quote};
    use super::*;
    use crate::scheme::{ApiSchemeOptions, SchemeConfig, detect};

    fn args(scheme: SchemeKind, secret: &std::path::Path, url: &str) -> SignArgs {
        SignArgs {
            scheme,
            key: "k-1".into(),
            secret_file: secret.to_path_buf(),
            method: None,
            headers: Vec::new(),
            data: None,
            curl: false,
            region: None,
            service: None,
            algorithm: None,
            presign: None,
            strip_env_prefix: false,
            url: url.into(),
        }
    }

    fn secret_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    /// Rebuilds the request from `run`'s text output and verifies it.
    fn verify_output(
        out: &str,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
        secret: &[u8],
    ) {
        let mut lines = out.lines().peekable();
        let url = match lines.peek() {
            Some(l) if l.starts_with("http") => lines.next().unwrap().to_owned(),
            _ => url.to_owned(),
        };
        let parts = parse_url(&url).unwrap();
        let mut v = RequestView {
            method: method.into(),
            scheme: parts.scheme,
            host: parts.authority,
            path: parts.path,
            query: parts.query,
            body: body.map(<[u8]>::to_vec),
            ..RequestView::default()
        };
        // The output is every header the request must carry, the caller's included.
        for (n, val) in extra {
            assert!(
                out.lines().any(|l| l == format!("{n}: {val}")),
                "{n} missing from:\n{out}"
            );
        }
        for l in lines {
            let (n, val) = l.split_once(": ").unwrap();
            v.headers.push(n, val);
        }
        let c = detect(&v).unwrap();
        c.verify(
            &v,
            &SchemeConfig::default(),
            &ApiSchemeOptions::default(),
            secret,
        )
        .unwrap();
        c.check_fresh(
            &SchemeConfig::default(),
            &ApiSchemeOptions::default(),
            crate::clock::system_now_ms(),
        )
        .unwrap();
    }

    #[test]
    fn run_prints_headers_that_verify_for_every_scheme() {
        let f = secret_file(b"s3cr3t\n");
        for scheme in SchemeKind::ALL {
            let mut a = args(
                scheme,
                f.path(),
                "https://svc.us-east-1.example.com/v1/x?b=2&a=1",
            );
            a.headers = vec!["X-Trace: t-1".into()];
            let out = run(&a).unwrap();
            verify_output(&out, "GET", &a.url, &[("X-Trace", "t-1")], None, b"s3cr3t");
        }
    }

    #[test]
    fn data_from_file_is_read_like_curl() {
        let secret = secret_file(b"s3cr3t\r\n");
        let data = secret_file(b"{\"a\":\n1}\r\n");
        let mut a = args(
            SchemeKind::Aliyun,
            secret.path(),
            "https://api.example.com/p",
        );
        a.headers = vec!["Content-Type: application/json".into()];
        a.data = Some(format!("@{}", data.path().display()));
        let out = run(&a).unwrap();
        assert!(out.contains(&format!(
            "Content-MD5: {}",
            canonical::b64_encode(&canonical::md5(b"{\"a\":1}"))
        )));
        verify_output(
            &out,
            "POST",
            &a.url,
            &[("Content-Type", "application/json")],
            Some(b"{\"a\":1}"),
            b"s3cr3t",
        );
    }

    #[test]
    fn curl_output_is_quoted_and_complete() {
        let f = secret_file(b"s3cr3t");
        let mut a = args(
            SchemeKind::Tencent,
            f.path(),
            "https://api.example.com/p?q=it's",
        );
        a.method = Some("put".into());
        a.data = Some("a=1&b='x'".into());
        a.curl = true;
        let out = run(&a).unwrap();
        assert!(out.starts_with("curl -X PUT -H 'Accept: */*' -H 'Content-Type: application/x-www-form-urlencoded' -H 'X-Date: "), "{out}");
        assert!(
            out.contains(r#" -d 'a=1&b='\''x'\''' 'https://api.example.com/p?q=it'\''s'"#),
            "{out}"
        );
        assert!(out.contains(" -H 'Authorization: hmac id=\"k-1\", algorithm=\"hmac-sha256\", headers=\"x-date x-apigw-nonce\""));
        // POST is curl's default with -d, so no -X.
        a.method = None;
        assert!(run(&a).unwrap().starts_with("curl -H "));
    }

    #[test]
    fn presigned_and_legacy_print_the_url_first() {
        let f = secret_file(b"s3cr3t");
        let mut a = args(
            SchemeKind::SigV4,
            f.path(),
            "https://bucket.s3.amazonaws.com/k",
        );
        a.presign = Some(60);
        a.region = Some("us-east-1".into());
        let out = run(&a).unwrap();
        assert!(out.starts_with("https://bucket.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k-1%2F"));
        verify_output(&out, "GET", &a.url, &[], None, b"s3cr3t");
        let mut a = args(
            SchemeKind::Bkapi,
            f.path(),
            "http://bk.example.com/api/?x=%20y",
        );
        a.algorithm = Some("signature".into());
        let out = run(&a).unwrap();
        assert!(out.contains("bk_signature="));
        verify_output(&out, "GET", &a.url, &[], None, b"s3cr3t");
    }

    #[test]
    fn errors_are_reported() {
        let f = secret_file(b"s");
        assert!(matches!(
            run(&args(SchemeKind::Aliyun, f.path(), "ftp://x/")),
            Err(SignError::Url { .. })
        ));
        assert!(matches!(
            run(&args(SchemeKind::Aliyun, f.path(), "https://u@x/")),
            Err(SignError::Url { .. })
        ));
        let empty = secret_file(b"\n");
        assert!(matches!(
            run(&args(SchemeKind::Aliyun, empty.path(), "https://x/")),
            Err(SignError::EmptySecret)
        ));
        assert!(matches!(
            run(&args(
                SchemeKind::Aliyun,
                std::path::Path::new("/nonexistent/secret"),
                "https://x/"
            )),
            Err(SignError::Io { .. })
        ));
        let mut a = args(SchemeKind::SigV4, f.path(), "http://127.0.0.1:8080/");
        assert!(matches!(run(&a), Err(SignError::Invalid(_))));
        a.region = Some("r".into());
        a.service = Some("s".into());
        assert!(run(&a).is_ok());
        let mut a = args(SchemeKind::Tencent, f.path(), "https://x/");
        a.headers = vec!["Authorization: Basic x".into()];
        assert!(matches!(run(&a), Err(SignError::Invalid(_))));
        a.headers = vec!["NoColon".into()];
        assert!(matches!(run(&a), Err(SignError::Header(_))));
        a.headers = vec![];
        a.algorithm = Some("hmac-md5".into());
        assert!(matches!(run(&a), Err(SignError::Invalid(_))));
    }

    #[test]
    fn helpers() {
        assert_eq!(shell_quote("abc-1.2/x:y"), "abc-1.2/x:y");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let n = fresh_nonce().unwrap();
        assert_eq!(n.len(), 36);
        assert_eq!(&n[14..15], "4");
        let p = parse_url("HTTPS://Host:8443?x=1#frag").unwrap();
        assert_eq!(
            (
                p.scheme.as_str(),
                p.authority.as_str(),
                p.path.as_str(),
                p.query.as_deref()
            ),
            ("https", "Host:8443", "/", Some("x=1"))
        );
    }
}
