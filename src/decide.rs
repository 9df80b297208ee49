//! The check pipeline: `RequestView` in, `Decision` out. The one place that decides.
//!
//! Owns: the order of the checks and the rule that a request is denied unless every
//! check passed; `Allow` can only be built at the end of `decide` (its constructor is
//! private to this module tree). Front doors translate, schemes parse and verify,
//! the index answers lookups; none of them decides.
//!
//! Order, and why:
//! 1. detect the scheme and parse the credential (no credential: anonymous only where
//!    the API allows it);
//! 2. look up the key (or app) and verify the signature, trying a reset key's previous
//!    secret inside its grace period. Verification comes before the app/key state
//!    checks so that only a holder of the secret learns that an app is disabled;
//! 3. app enabled, key enabled and not expired;
//! 4. freshness. The nonce is claimed last, once every other check passed (`Pending`,
//!    claimed by the caller outside the index lock): only requests whose signature
//!    verified may record one, so unsigned traffic cannot fill the nonce store;
//! 5. the body digest, when the scheme covers the body (or the API requires one);
//! 6. the API (resolved early from the route hint or host + method + path, but only
//!    reported after authentication so unauthenticated callers learn nothing of it),
//!    and whether it accepts the scheme;
//! 7. a live grant on the API or its group for the stage.

pub mod decision;

use std::borrow::Cow;
use std::sync::Arc;

pub use crate::deny::{Deny, DenyCode, DenyStatus};
pub use decision::{Allow, Decision};

use crate::index::Snapshot;
use crate::model::{Api, App, KeyPair};
use crate::nonce::{ClaimError, NonceClaim};
use crate::path::{self, PathMode};
use crate::replay::ReplayGuard;
use crate::request::{RequestView, spelled_like};
use crate::scheme::{
    self, ApiSchemeOptions, BodyCheck, Credential, CredentialId, SchemeConfig, SchemeKind,
};

/// Settings of the pipeline, from the service configuration.
#[derive(Clone, Debug)]
pub struct DecideConfig {
    pub default_stage: String,
    pub schemes: SchemeConfig,
    /// Upstream header for the app's extension info (lower-case).
    pub extend_info_header: String,
    /// Whether a path must already be canonical (`crate::path`).
    pub path_mode: PathMode,
    /// Honour the client's `X-Ca-Stage` when the proxy names no stage. Off by default:
    /// the stage selects grants, so it is the proxy's to say (it routes to the stage's
    /// upstream), never the client's, unless the proxy routes on that same header.
    pub trust_client_stage: bool,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            default_stage: "RELEASE".into(),
            schemes: SchemeConfig::default(),
            extend_info_header: "x-keygate-app-extend-info".into(),
            path_mode: PathMode::Strict,
            trust_client_stage: false,
        }
    }
}

/// Identity headers keygate sets upstream; client-sent copies never survive.
pub const IDENTITY_HEADERS: [&str; 5] = [
    "x-keygate-app-id",
    "x-keygate-app-key",
    "x-keygate-api-id",
    "x-keygate-stage",
    "x-keygate-scheme",
];

/// Tells the upstream what became of the body: `verified` (keygate checked it against
/// the signature), `unsigned` (the signature does not cover it), or `unverified` (the
/// signature covers it but the proxy did not send it, e.g. NGINX `auth_request`).
pub const BODY_HEADER: &str = "x-keygate-body";
/// With `unverified`: the request header holding the signed digest that the upstream
/// must compare with the body itself (`content-md5`, `content-digest`,
/// `x-amz-content-sha256`). Absent when no such header exists.
pub const BODY_DIGEST_HEADER: &str = "x-keygate-body-digest";

/// Schemes an API accepts when its list is empty: those whose secret never travels.
fn accepts(api: &Api, kind: SchemeKind) -> bool {
    if api.auth_schemes.is_empty() {
        return !kind.sends_secret();
    }
    api.auth_schemes.iter().any(|s| s == kind.as_str())
}

fn api_options(api: Option<&Api>) -> ApiSchemeOptions {
    match api {
        None => ApiSchemeOptions::default(),
        Some(a) => ApiSchemeOptions {
            tencent_strip_env_prefix: a.tencent_strip_env_prefix,
            sigv4_region: a.sigv4_region.clone(),
            sigv4_service: a.sigv4_service.clone(),
            require_timestamp_and_nonce: a.replay_protection,
        },
    }
}

fn stage_of(view: &RequestView, cfg: &DecideConfig) -> Result<String, Deny> {
    let client = || {
        cfg.trust_client_stage
            .then(|| view.headers.get("x-ca-stage"))
            .flatten()
    };
    let raw = view
        .stage_hint
        .as_deref()
        .or_else(client)
        .unwrap_or(&cfg.default_stage);
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(Deny::new(
            DenyCode::Malformed,
            "stage must be 1 to 32 characters of [A-Za-z0-9_-]",
        ));
    }
    Ok(raw.to_ascii_uppercase())
}

/// What routing and grants are decided on: the canonical host and path, never the raw
/// spelling (see `crate::path`). The signature is still checked over the raw request.
struct Target<'v> {
    host: String,
    path: Cow<'v, str>,
}

fn target_of<'v>(view: &'v RequestView, cfg: &DecideConfig) -> Result<Target<'v>, Deny> {
    let path = path::canonical(&view.path, cfg.path_mode)
        .map_err(|a| Deny::new(DenyCode::Malformed, a.to_string()))?;
    let host = path::canonical_host(&view.host)
        .map_err(|e| Deny::new(DenyCode::Malformed, e.to_string()))?;
    Ok(Target { host, path })
}

/// A route hint narrows: the API it names must still serve this method, host and path,
/// else the request matches no API (a hint never lets a request reach what its route
/// would not).
fn resolve_api<'s>(
    view: &RequestView,
    target: &Target<'_>,
    snap: &'s Snapshot,
) -> Option<&'s Arc<Api>> {
    match &view.api_hint {
        Some(hint) => snap
            .api_by_hint(hint)
            .filter(|api| snap.api_serves(api, &target.host, &view.method, &target.path)),
        None => snap.route(&target.host, &view.method, &target.path),
    }
}

/// Client headers that look like an identity header in any spelling (case, `_` for
/// `-`): CGI, WSGI, PHP and Rack upstreams read `X_Keygate_App_Id` as
/// `HTTP_X_KEYGATE_APP_ID`. Those keygate sets are overwritten; every other one is
/// removed so that only keygate's own copy reaches the upstream.
fn forged_identity_headers(
    view: &RequestView,
    cfg: &DecideConfig,
    set: &[(String, String)],
    remove: &mut Vec<String>,
) {
    for (name, _) in view.headers.iter() {
        let identity = spelled_like(name, "x-keygate-")
            || (name.len() == cfg.extend_info_header.len()
                && spelled_like(name, &cfg.extend_info_header));
        if identity && !set.iter().any(|(n, _)| n == name) && !remove.iter().any(|n| n == name) {
            remove.push(name.to_owned());
        }
    }
}

/// What to record in the replay cache for this request, if anything.
///
/// A nonce is always recorded when the request carries one. On an API with
/// `replay_protection`, a request must be one-time: it carries a nonce (its timestamp is
/// then mandatory too, which every nonce-carrying scheme checks in `check_fresh`, or
/// aliyun with `require_timestamp_and_nonce`); SigV4, which has no nonce field, records
/// its signature instead (it covers `X-Amz-Date` and the whole request, so the same
/// signature twice is the same captured request); a credential that sends its secret
/// in clear (AppCode, BlueKing's `bk_app_secret`) cannot be one-time and is refused.
fn replay_token<'c>(cred: &'c Credential, api: Option<&Api>) -> Result<Option<Cow<'c, str>>, Deny> {
    if let Some(n) = cred.nonce() {
        return Ok(Some(Cow::Borrowed(n)));
    }
    if !api.is_some_and(|a| a.replay_protection) {
        return Ok(None);
    }
    if let Some(t) = cred.one_time_token() {
        return Ok(Some(Cow::Owned(t)));
    }
    if cred.sends_secret() {
        return Err(Deny::new(
            DenyCode::SchemeNotAllowed,
            format!(
                "the API requires replay protection, which a {} credential that carries \
                 its secret cannot give",
                cred.kind().as_str()
            ),
        ));
    }
    Err(Deny::new(
        DenyCode::NonceMissing,
        format!(
            "the API requires replay protection: sign a nonce ({})",
            cred.kind().nonce_field()
        ),
    ))
}

/// Who proved what: the outcome of steps 1-3.
struct Identity<'s> {
    app: &'s Arc<App>,
    key: Option<&'s Arc<KeyPair>>,
}

/// What the pure part of the pipeline concluded: a decision, or an allow that holds
/// only once its nonce is claimed.
#[derive(Debug)]
pub enum Verdict {
    Decided(Decision),
    Claim(Pending),
}

/// An allowed request whose nonce must still be claimed from the nonce store.
#[derive(Debug)]
pub struct Pending {
    allow: Allow,
    claim: NonceClaim,
    scheme: SchemeKind,
}

impl Pending {
    pub fn claim(&self) -> &NonceClaim {
        &self.claim
    }

    /// The decision, given the nonce store's answer. A refused claim is a deny of an
    /// authenticated caller: it names the app.
    pub fn settle(self, claimed: Result<(), ClaimError>) -> Decision {
        let deny = match claimed {
            Ok(()) => return Decision::Allow(self.allow),
            Err(ClaimError::Replayed) => Deny::new(DenyCode::NonceReplayed, "nonce already used"),
            Err(ClaimError::Full) => Deny::new(
                DenyCode::ReplayCacheFull,
                "replay cache is full; retry shortly",
            ),
            Err(ClaimError::KeyFull) => Deny::new(
                DenyCode::ReplayCacheFull,
                "this key holds its whole share of the replay cache; retry shortly",
            ),
            Err(e @ (ClaimError::Unavailable(_) | ClaimError::Fenced { .. })) => {
                Deny::new(DenyCode::ReplayUnavailable, e.to_string())
            }
        };
        Decision::Deny(self.scheme.decorate_deny(deny.for_app(&self.allow.app_id)))
    }
}

/// Decides one request with the in-process replay cache: [`evaluate`], then the claim
/// (for tests, benchmarks and tools; the service claims from its nonce store).
pub fn decide(
    view: &RequestView,
    snap: &Snapshot,
    replay: &ReplayGuard,
    now_ms: i64,
    cfg: &DecideConfig,
) -> Decision {
    match evaluate(view, snap, now_ms, cfg) {
        Verdict::Decided(d) => d,
        Verdict::Claim(p) => {
            let c = p.claim();
            let claimed = replay
                .check_and_insert(&c.scope, &c.token, now_ms, c.ttl_ms)
                .map_err(ClaimError::from);
            p.settle(claimed)
        }
    }
}

/// The pure part of the pipeline: everything but the nonce claim. Never panics,
/// never errs: anything unexpected is a deny.
pub fn evaluate(view: &RequestView, snap: &Snapshot, now_ms: i64, cfg: &DecideConfig) -> Verdict {
    let decided = |d: Decision| Verdict::Decided(d);
    let stage = match stage_of(view, cfg) {
        Ok(s) => s,
        Err(d) => return decided(d.into()),
    };
    let target = match target_of(view, cfg) {
        Ok(t) => t,
        Err(d) => return decided(d.into()),
    };
    let api = resolve_api(view, &target, snap);
    let cred = match scheme::detect(view) {
        Ok(c) => c,
        Err(deny) => {
            return decided(match api {
                Some(api) if deny.code == DenyCode::MissingCredential && api.anonymous_allowed => {
                    allow_anonymous(view, api, stage, cfg)
                }
                _ => deny.into(),
            });
        }
    };
    match decide_signed(
        view,
        snap,
        now_ms,
        cfg,
        &cred,
        api.map(|a| a.as_ref()),
        &stage,
    ) {
        Ok(v) => v,
        Err(deny) => decided(Decision::Deny(cred.decorate_deny(deny))),
    }
}

fn decide_signed(
    view: &RequestView,
    snap: &Snapshot,
    now_ms: i64,
    cfg: &DecideConfig,
    cred: &Credential,
    api: Option<&Api>,
    stage: &str,
) -> Result<Verdict, Deny> {
    let opts = api_options(api);
    let who = authenticate(view, snap, now_ms, cfg, cred, &opts)?;
    // From here on the caller has proven who it is: a deny names its app (for the
    // proxy's access log), which a deny before the signature verified never does.
    let authorized = || -> Result<Verdict, Deny> {
        if !who.app.enabled {
            return Err(Deny::new(
                DenyCode::AppDisabled,
                format!("app {} is disabled", who.app.id),
            ));
        }
        if let Some(key) = who.key {
            if !key.enabled {
                return Err(Deny::new(
                    DenyCode::KeyDisabled,
                    format!("key {} is disabled", key.app_key),
                ));
            }
            if key.expires_ms.is_some_and(|e| now_ms >= e) {
                return Err(Deny::new(
                    DenyCode::KeyExpired,
                    format!("key {} has expired", key.app_key),
                ));
            }
        }

        cred.check_fresh(&cfg.schemes, &opts, now_ms)?;
        // Claimed only once everything else passed, by the caller, outside the index
        // lock: the one step that may wait on I/O (`crate::nonce`).
        let claim = replay_token(cred, api)?.map(|token| NonceClaim {
            scope: format!(
                "{}/{}",
                cred.kind().as_str(),
                who.key.map_or(who.app.id.as_str(), |k| k.app_key.as_str())
            ),
            token: token.into_owned(),
            ttl_ms: cred.nonce_ttl_ms(&cfg.schemes),
        });

        let body = cred.check_body(view)?;
        let Some(api) = api else {
            return Err(Deny::new(
                DenyCode::ApiNotFound,
                "no API matches this request",
            ));
        };
        if api.body_digest_required && !matches!(body, BodyCheck::Verified) {
            let why = match body {
                BodyCheck::NotAvailable => {
                    "the API requires a verified body digest, but the body was not sent to keygate"
                }
                _ => "the API requires the signature to cover the body",
            };
            return Err(Deny::new(DenyCode::BodyDigestMissing, why));
        }
        if !accepts(api, cred.kind()) {
            return Err(Deny::new(
                DenyCode::SchemeNotAllowed,
                format!(
                    "API {} does not accept the {} scheme",
                    api.id,
                    cred.kind().as_str()
                ),
            ));
        }
        check_grant(snap, &who.app.id, api, stage, now_ms)?;

        let mut headers_to_set = vec![
            ("x-keygate-app-id".to_owned(), who.app.id.clone()),
            ("x-keygate-api-id".to_owned(), api.id.clone()),
            ("x-keygate-stage".to_owned(), stage.to_owned()),
            (
                "x-keygate-scheme".to_owned(),
                cred.kind().as_str().to_owned(),
            ),
        ];
        let mut headers_to_remove = cred.headers_to_remove();
        let (body_state, digest_header) = match body {
            BodyCheck::Verified => ("verified", None),
            BodyCheck::NotCovered => ("unsigned", None),
            BodyCheck::NotAvailable => ("unverified", cred.body_digest_header(view)),
        };
        headers_to_set.push((BODY_HEADER.to_owned(), body_state.to_owned()));
        match digest_header {
            Some(h) => headers_to_set.push((BODY_DIGEST_HEADER.to_owned(), h.to_owned())),
            None => headers_to_remove.push(BODY_DIGEST_HEADER.to_owned()),
        }
        match who.key {
            Some(k) => headers_to_set.push(("x-keygate-app-key".to_owned(), k.app_key.clone())),
            None => headers_to_remove.push("x-keygate-app-key".to_owned()),
        }
        if who.app.extend_info.is_empty() {
            headers_to_remove.push(cfg.extend_info_header.clone());
        } else {
            headers_to_set.push((cfg.extend_info_header.clone(), who.app.extend_info.clone()));
        }
        forged_identity_headers(view, cfg, &headers_to_set, &mut headers_to_remove);
        let allow = Allow {
            app_id: who.app.id.clone(),
            app_key: who.key.map(|k| k.app_key.clone()).unwrap_or_default(),
            api_id: api.id.clone(),
            stage: stage.to_owned(),
            scheme: cred.kind().as_str(),
            headers_to_set,
            headers_to_remove,
            query_params_to_remove: cred.query_params_to_remove(),
            sealed: decision::Sealed(()),
        };
        Ok(match claim {
            None => Verdict::Decided(Decision::Allow(allow)),
            Some(claim) => Verdict::Claim(Pending {
                allow,
                claim,
                scheme: cred.kind(),
            }),
        })
    };
    authorized().map_err(|d| d.for_app(&who.app.id))
}

/// Finds the credential's key (or app) and verifies the signature.
fn authenticate<'s>(
    view: &RequestView,
    snap: &'s Snapshot,
    now_ms: i64,
    cfg: &DecideConfig,
    cred: &Credential,
    opts: &ApiSchemeOptions,
) -> Result<Identity<'s>, Deny> {
    match cred.id() {
        CredentialId::AppKey(k) => {
            let key = snap
                .key(k)
                .ok_or_else(|| Deny::new(DenyCode::UnknownAppKey, "unknown AppKey"))?;
            let app = snap
                .app(&key.app_id)
                .ok_or_else(|| Deny::new(DenyCode::UnknownAppKey, "unknown AppKey"))?;
            verify_with_key(view, cfg, cred, opts, key, now_ms)?;
            Ok(Identity {
                app,
                key: Some(key),
            })
        }
        CredentialId::AppCode(code) => {
            let app = snap
                .app_by_code(code)
                .ok_or_else(|| Deny::new(DenyCode::UnknownAppCode, "unknown AppCode"))?;
            Ok(Identity { app, key: None })
        }
        CredentialId::BkAppCode(app_id) => {
            let app = snap
                .app(app_id)
                .ok_or_else(|| Deny::new(DenyCode::UnknownAppKey, "app not found"))?;
            // Any live key of the app may match; report the first mismatch otherwise.
            let mut first_err = None;
            for key in snap.keys_of_app(&app.id) {
                if !key.enabled || key.expires_ms.is_some_and(|e| now_ms >= e) {
                    continue;
                }
                match verify_with_key(view, cfg, cred, opts, key, now_ms) {
                    Ok(()) => {
                        return Ok(Identity {
                            app,
                            key: Some(key),
                        });
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            Err(first_err.unwrap_or_else(|| {
                Deny::new(
                    DenyCode::SignatureMismatch,
                    "no usable key pair for this app",
                )
            }))
        }
    }
}

/// Verifies with the key's secret, then with its previous secret inside the grace period.
fn verify_with_key(
    view: &RequestView,
    cfg: &DecideConfig,
    cred: &Credential,
    opts: &ApiSchemeOptions,
    key: &KeyPair,
    now_ms: i64,
) -> Result<(), Deny> {
    let first = match cred.verify(view, &cfg.schemes, opts, key.secret.expose().as_bytes()) {
        Ok(()) => return Ok(()),
        Err(d) => d,
    };
    if first.code != DenyCode::SignatureMismatch {
        return Err(first);
    }
    if let Some(prev) = key.previous.as_ref().filter(|p| now_ms < p.until_ms)
        && cred
            .verify(view, &cfg.schemes, opts, prev.secret.expose().as_bytes())
            .is_ok()
    {
        return Ok(());
    }
    Err(first)
}

fn check_grant(
    snap: &Snapshot,
    app_id: &str,
    api: &Api,
    stage: &str,
    now_ms: i64,
) -> Result<(), Deny> {
    let on_api = snap.grants(app_id, &api.id);
    let on_group = api
        .group_id
        .as_deref()
        .map_or(&[][..], |g| snap.grants(app_id, g));
    let mut expired = false;
    for g in on_api.iter().chain(on_group) {
        if !g.covers_stage(stage) {
            continue;
        }
        if g.expired_at(now_ms) {
            expired = true;
            continue;
        }
        return Ok(());
    }
    if expired {
        return Err(Deny::new(
            DenyCode::GrantExpired,
            format!("the app's grant on API {} has expired", api.id),
        ));
    }
    Err(Deny::new(
        DenyCode::NoGrant,
        format!("the app has no grant on API {} in stage {stage}", api.id),
    ))
}

fn allow_anonymous(view: &RequestView, api: &Api, stage: String, cfg: &DecideConfig) -> Decision {
    let mut headers_to_remove: Vec<String> = ["x-keygate-app-id", "x-keygate-app-key"]
        .map(str::to_owned)
        .to_vec();
    headers_to_remove.push(cfg.extend_info_header.clone());
    headers_to_remove.push(BODY_DIGEST_HEADER.to_owned());
    let headers_to_set = vec![
        ("x-keygate-api-id".to_owned(), api.id.clone()),
        ("x-keygate-stage".to_owned(), stage.clone()),
        ("x-keygate-scheme".to_owned(), "anonymous".to_owned()),
        // Nothing was signed, so nothing about the body was checked.
        (BODY_HEADER.to_owned(), "unsigned".to_owned()),
    ];
    forged_identity_headers(view, cfg, &headers_to_set, &mut headers_to_remove);
    Decision::Allow(Allow {
        app_id: String::new(),
        app_key: String::new(),
        api_id: api.id.clone(),
        headers_to_set,
        stage,
        scheme: "anonymous",
        headers_to_remove,
        query_params_to_remove: Vec::new(),
        sealed: decision::Sealed(()),
    })
}

#[cfg(test)]
mod tests;
