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
//! 7. a live grant on the API or its group for the stage, except on an API that allows
//!    anonymous calls: there a caller with a credential is checked in full (steps 2-6)
//!    but needs no grant, since it could otherwise drop its signature and pass;
//! 8. the user token, on APIs that require one (unless the app is exempt).

pub mod decision;
pub mod trace;

use std::borrow::Cow;
use std::sync::Arc;

pub use crate::deny::{Deny, DenyCode, DenyStatus};
pub use decision::{Allow, Decision};
use trace::{NoTrace, Outcome, Step, Trace};

use crate::index::Snapshot;
use crate::model::{Api, App, Grant, GrantTarget, KeyPair};
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
    /// User tokens, for APIs with `user_auth_required`; `None`: none configured
    /// (such APIs then deny every request: fail closed).
    pub user_auth: Option<Arc<crate::userauth::UserAuth>>,
    /// Upstream header carrying the verified user id (lower-case).
    pub user_id_header: String,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            default_stage: "RELEASE".into(),
            schemes: SchemeConfig::default(),
            extend_info_header: "x-keygate-app-extend-info".into(),
            path_mode: PathMode::Strict,
            trust_client_stage: false,
            user_auth: None,
            user_id_header: "x-keygate-user-id".into(),
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

/// Who named the stage, for `explain`.
fn stage_source(view: &RequestView, cfg: &DecideConfig) -> &'static str {
    if view.stage_hint.is_some() {
        "named by the proxy"
    } else if cfg.trust_client_stage && view.headers.get("x-ca-stage").is_some() {
        "from the client's X-Ca-Stage (--trust-client-stage)"
    } else {
        "the default stage"
    }
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
    // The configured identity headers too, whatever their names: they need not
    // start with x-keygate-.
    let configured = [cfg.extend_info_header.as_str(), cfg.user_id_header.as_str()];
    for (name, _) in view.headers.iter() {
        let identity = spelled_like(name, "x-keygate-")
            || configured
                .iter()
                .any(|h| name.len() == h.len() && spelled_like(name, h));
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
    evaluate_traced(view, snap, now_ms, cfg, &mut NoTrace)
}

/// [`evaluate`], reporting each step to `t` (`explain`; the check path passes
/// `NoTrace`, which compiles away).
pub fn evaluate_traced<T: Trace>(
    view: &RequestView,
    snap: &Snapshot,
    now_ms: i64,
    cfg: &DecideConfig,
    t: &mut T,
) -> Verdict {
    let decided = |d: Decision| Verdict::Decided(d);
    let stage = stage_of(view, cfg);
    t.result(Step::Stage, &stage, |s| {
        format!("{s} ({})", stage_source(view, cfg))
    });
    let stage = match stage {
        Ok(s) => s,
        Err(d) => return decided(d.into()),
    };
    let target = target_of(view, cfg);
    t.result(Step::Target, &target, |tg| {
        format!("host {:?}, path {:?}", tg.host, tg.path)
    });
    let target = match target {
        Ok(tg) => tg,
        Err(d) => return decided(d.into()),
    };
    let api = resolve_api(view, &target, snap);
    t.step(
        Step::Route,
        if api.is_some() {
            Outcome::Pass
        } else {
            Outcome::Skip
        },
        || describe_route(view, &target, snap, api),
    );
    let cred = scheme::detect(view);
    t.result(Step::Scheme, &cred, |c| {
        format!("{} credential, {}", c.kind().as_str(), describe_id(c))
    });
    let cred = match cred {
        Ok(c) => c,
        Err(deny) => {
            return decided(match api {
                Some(api) if deny.code == DenyCode::MissingCredential && api.anonymous_allowed => {
                    t.step(Step::Api, Outcome::Pass, || {
                        format!("API {} allows anonymous calls", api.id)
                    });
                    // An anonymous caller has no app to be whitelisted: a user token
                    // is all it can prove, and on such an API it must.
                    match check_user(view, cfg, api, "", now_ms) {
                        Ok(user) => allow_anonymous(view, api, stage, cfg, user),
                        Err(d) => d.into(),
                    }
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
        t,
    ) {
        Ok(v) => v,
        Err(deny) => decided(Decision::Deny(cred.decorate_deny(deny))),
    }
}

/// The credential's id, never a secret: an AppCode is a bearer secret.
fn describe_id(c: &Credential) -> String {
    match c.id() {
        CredentialId::AppKey(k) => format!("AppKey {k:?}"),
        CredentialId::AppCode(_) => "an AppCode (not shown: it is a secret)".to_owned(),
        CredentialId::BkAppCode(a) => format!("bk_app_code {a:?}"),
    }
}

fn describe_route(
    view: &RequestView,
    target: &Target<'_>,
    snap: &Snapshot,
    api: Option<&Arc<Api>>,
) -> String {
    let how = match &view.api_hint {
        Some(h) => format!("route hint {h:?}"),
        None => "the route table".to_owned(),
    };
    if let Some(api) = api {
        return format!(
            "API {} ({}) by {how}: {} {}",
            api.id,
            api.name,
            if api.methods.is_empty() {
                "any method".to_owned()
            } else {
                api.methods.join(",")
            },
            api.path
        );
    }
    let mut out = format!(
        "no API matches {} {}{} by {how}",
        view.method, target.host, target.path
    );
    if let Some(named) = view.api_hint.as_deref().and_then(|h| snap.api_by_hint(h)) {
        out.push_str(&format!(
            "; the hinted API {} does not serve this method, host and path",
            named.id
        ));
    }
    let near: Vec<String> = snap
        .near_misses(&target.host, &view.method, &target.path)
        .into_iter()
        .map(|(a, why)| format!("{} ({}): {why}", a.id, a.name))
        .collect();
    if !near.is_empty() {
        out.push_str("; nearest: ");
        out.push_str(&near.join("; "));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn decide_signed<T: Trace>(
    view: &RequestView,
    snap: &Snapshot,
    now_ms: i64,
    cfg: &DecideConfig,
    cred: &Credential,
    api: Option<&Api>,
    stage: &str,
    t: &mut T,
) -> Result<Verdict, Deny> {
    let opts = api_options(api);
    let who = authenticate(view, snap, now_ms, cfg, cred, &opts, t)?;
    // From here on the caller has proven who it is: a deny names its app (for the
    // proxy's access log), which a deny before the signature verified never does.
    let mut authorized = || -> Result<Verdict, Deny> {
        let app_ok = if who.app.enabled {
            Ok(())
        } else {
            Err(Deny::new(
                DenyCode::AppDisabled,
                format!("app {} is disabled", who.app.id),
            ))
        };
        t.result(Step::App, &app_ok, |()| {
            format!("app {} ({}) is enabled", who.app.id, who.app.name)
        });
        app_ok?;
        if let Some(key) = who.key {
            let key_ok = if !key.enabled {
                Err(Deny::new(
                    DenyCode::KeyDisabled,
                    format!("key {} is disabled", key.app_key),
                ))
            } else if key.expires_ms.is_some_and(|e| now_ms >= e) {
                Err(Deny::new(
                    DenyCode::KeyExpired,
                    format!("key {} has expired", key.app_key),
                ))
            } else {
                Ok(())
            };
            t.result(Step::Key, &key_ok, |()| match key.expires_ms {
                Some(e) => format!("key {} is enabled, expires at {e} ms", key.app_key),
                None => format!("key {} is enabled and never expires", key.app_key),
            });
            key_ok?;
        }

        let fresh = cred.check_fresh(&cfg.schemes, &opts, now_ms);
        t.result(Step::Freshness, &fresh, |()| {
            "timestamp within the window, or the scheme has none".to_owned()
        });
        fresh?;
        // Claimed only once everything else passed, by the caller, outside the index
        // lock: the one step that may wait on I/O (`crate::nonce`).
        let token = replay_token(cred, api);
        match &token {
            Ok(Some(_)) => {}
            Ok(None) => t.step(Step::Nonce, Outcome::Skip, || {
                "no nonce, and the API does not require replay protection".to_owned()
            }),
            Err(d) => t.step(Step::Nonce, Outcome::Fail, || {
                format!("{}: {}", d.code.as_str(), d.message)
            }),
        }
        let claim = token?.map(|token| NonceClaim {
            scope: format!(
                "{}/{}",
                cred.kind().as_str(),
                who.key.map_or(who.app.id.as_str(), |k| k.app_key.as_str())
            ),
            token: token.into_owned(),
            ttl_ms: cred.nonce_ttl_ms(&cfg.schemes),
        });

        let body = cred.check_body(view);
        t.result(Step::Body, &body, |b| {
            match b {
                BodyCheck::Verified => "the body matches the signed digest",
                BodyCheck::NotCovered => "the signature does not cover the body",
                BodyCheck::NotAvailable => {
                    "the signature covers the body, which the proxy did not send"
                }
            }
            .to_owned()
        });
        let body = body?;
        let api_ok = check_api(api, &body, cred.kind());
        t.result(Step::Api, &api_ok, |api| {
            format!("API {} accepts the {} scheme", api.id, cred.kind().as_str())
        });
        let api = api_ok?;
        let grant = check_grant(snap, &who.app.id, api, stage, now_ms);
        match &grant {
            Ok(g) => t.step(Step::Grant, Outcome::Pass, || describe_grant(g)),
            // The one rule for anonymous APIs: a grant only adds rights, so an app that
            // proves who it is never has fewer than a caller that proves nothing (it
            // could drop its signature). A credential it presents is still checked in
            // full above: a bad or replayed one is a deny, never a fall-through.
            Err(d) if api.anonymous_allowed => t.step(Step::Grant, Outcome::Pass, || {
                format!(
                    "{}: {}; the API allows anonymous calls, so app {} needs no grant",
                    d.code.as_str(),
                    d.message,
                    who.app.id
                )
            }),
            Err(d) => t.step(Step::Grant, Outcome::Fail, || {
                format!(
                    "{}: {}; {}",
                    d.code.as_str(),
                    d.message,
                    describe_grants(snap, &who.app.id, api, stage, now_ms)
                )
            }),
        }
        // The user-token whitelist is a right that comes with a grant: an app allowed
        // only because the API is anonymous proves a user like an anonymous caller.
        let exempt_as = if grant.is_ok() {
            who.app.id.as_str()
        } else {
            ""
        };
        if !api.anonymous_allowed {
            grant?;
        }
        let user = check_user(view, cfg, api, exempt_as, now_ms);
        match &user {
            Ok(Some(u)) => t.step(Step::User, Outcome::Pass, || format!("user {u:?}")),
            Ok(None) => t.step(Step::User, Outcome::Skip, || {
                if api.user_auth_required {
                    format!("app {} needs no user token on this API", who.app.id)
                } else {
                    "the API does not require user authentication".to_owned()
                }
            }),
            Err(d) => t.step(Step::User, Outcome::Fail, || {
                format!("{}: {}", d.code.as_str(), d.message)
            }),
        }
        let user = user?;

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
        match user {
            Some(u) => headers_to_set.push((cfg.user_id_header.clone(), u)),
            None => headers_to_remove.push(cfg.user_id_header.clone()),
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

/// The user a request also proves, on an API that requires one (unless the app is on
/// its whitelist): `Ok(None)` when none is needed.
fn check_user(
    view: &RequestView,
    cfg: &DecideConfig,
    api: &Api,
    app_id: &str,
    now_ms: i64,
) -> Result<Option<String>, Deny> {
    if !api.user_auth_required || api.user_auth_exempt_apps.iter().any(|a| a == app_id) {
        return Ok(None);
    }
    let Some(ua) = &cfg.user_auth else {
        // Fail closed on a configuration gap: nothing could verify a token.
        return Err(Deny::new(
            DenyCode::UserInvalid,
            "the API requires a user token, and keygate has no user token keys configured",
        ));
    };
    let token = ua.token(view).ok_or_else(|| {
        Deny::new(
            DenyCode::UserMissing,
            "the API requires a user token; the request carries none",
        )
    })?;
    ua.verify(token, now_ms).map(Some)
}

/// The matched API, if it takes this request: exists, body rules met, scheme accepted.
fn check_api<'a>(
    api: Option<&'a Api>,
    body: &BodyCheck,
    kind: SchemeKind,
) -> Result<&'a Api, Deny> {
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
    if !accepts(api, kind) {
        return Err(Deny::new(
            DenyCode::SchemeNotAllowed,
            format!(
                "API {} does not accept the {} scheme",
                api.id,
                kind.as_str()
            ),
        ));
    }
    Ok(api)
}

/// Finds the credential's key (or app) and verifies the signature.
fn authenticate<'s, T: Trace>(
    view: &RequestView,
    snap: &'s Snapshot,
    now_ms: i64,
    cfg: &DecideConfig,
    cred: &Credential,
    opts: &ApiSchemeOptions,
    t: &mut T,
) -> Result<Identity<'s>, Deny> {
    let found = find_identity(snap, cred);
    t.result(Step::Credential, &found, |(app, key)| match key {
        Some(k) => format!("key {} of app {} ({})", k.app_key, app.id, app.name),
        None => format!("app {} ({})", app.id, app.name),
    });
    let (app, key) = found?;
    let verified = match (key, cred.id()) {
        (Some(key), _) => {
            verify_with_key(view, cfg, cred, opts, key, now_ms).map(|how| (Some(key), how))
        }
        // The AppCode was looked up by its fingerprint: finding the app verified it.
        (None, CredentialId::AppCode(_)) => Ok((None, "the app's AppCode")),
        (None, _) => verify_any_key(view, snap, app, now_ms, cfg, cred, opts),
    };
    match &verified {
        Ok((_, how)) => t.step(Step::Signature, Outcome::Pass, || {
            match cred.string_to_sign(view, opts) {
                Some(sts) => format!("verified with {how}; server string-to-sign: {sts:?}"),
                None => format!("verified with {how}; this credential signs nothing"),
            }
        }),
        Err(d) => t.step(Step::Signature, Outcome::Fail, || {
            let mut out = format!("{}: {}", d.code.as_str(), d.message);
            if d.code == DenyCode::SignatureMismatch
                && let Some(sts) = cred.string_to_sign(view, opts)
            {
                out.push_str(&format!("; server string-to-sign: {sts:?}"));
            }
            out
        }),
    }
    let (key, _) = verified?;
    Ok(Identity { app, key })
}

/// The app (and key) a credential names, before anything is verified.
type Named<'s> = (&'s Arc<App>, Option<&'s Arc<KeyPair>>);

fn find_identity<'s>(snap: &'s Snapshot, cred: &Credential) -> Result<Named<'s>, Deny> {
    match cred.id() {
        CredentialId::AppKey(k) => {
            let key = snap
                .key(k)
                .ok_or_else(|| Deny::new(DenyCode::UnknownAppKey, "unknown AppKey"))?;
            let app = snap
                .app(&key.app_id)
                .ok_or_else(|| Deny::new(DenyCode::UnknownAppKey, "unknown AppKey"))?;
            Ok((app, Some(key)))
        }
        CredentialId::AppCode(code) => {
            let app = snap
                .app_by_code(code)
                .ok_or_else(|| Deny::new(DenyCode::UnknownAppCode, "unknown AppCode"))?;
            Ok((app, None))
        }
        CredentialId::BkAppCode(app_id) => {
            let app = snap
                .app(app_id)
                .ok_or_else(|| Deny::new(DenyCode::UnknownAppKey, "app not found"))?;
            Ok((app, None))
        }
    }
}

/// BlueKing names an app, not a key: any live key of the app may match; the first
/// mismatch is reported otherwise.
fn verify_any_key<'s>(
    view: &RequestView,
    snap: &'s Snapshot,
    app: &App,
    now_ms: i64,
    cfg: &DecideConfig,
    cred: &Credential,
    opts: &ApiSchemeOptions,
) -> Result<(Option<&'s Arc<KeyPair>>, &'static str), Deny> {
    let mut first_err = None;
    for key in snap.keys_of_app(&app.id) {
        if !key.enabled || key.expires_ms.is_some_and(|e| now_ms >= e) {
            continue;
        }
        match verify_with_key(view, cfg, cred, opts, key, now_ms) {
            Ok(how) => return Ok((Some(key), how)),
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

/// Verifies with the key's secret, then with its previous secret inside the grace
/// period; says which one verified.
fn verify_with_key(
    view: &RequestView,
    cfg: &DecideConfig,
    cred: &Credential,
    opts: &ApiSchemeOptions,
    key: &KeyPair,
    now_ms: i64,
) -> Result<&'static str, Deny> {
    let first = match cred.verify(view, &cfg.schemes, opts, key.secret.expose().as_bytes()) {
        Ok(()) => return Ok("the key's secret"),
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
        return Ok("the key's previous secret, inside its grace period");
    }
    Err(first)
}

fn describe_grant(g: &Grant) -> String {
    format!(
        "grant {} on {} {} ({}; {})",
        g.id,
        match g.target {
            GrantTarget::Api(_) => "API",
            GrantTarget::Group(_) => "group",
        },
        g.target.id(),
        if g.stages.is_empty() {
            "any stage".to_owned()
        } else {
            format!("stages {}", g.stages.join(","))
        },
        g.expires_ms
            .map_or("no expiry".to_owned(), |e| format!("expires at {e} ms"))
    )
}

/// The app's grants on the API and on its group: the ones that may let it in.
fn candidate_grants<'s>(
    snap: &'s Snapshot,
    app_id: &str,
    api: &Api,
) -> impl Iterator<Item = &'s Arc<Grant>> {
    let on_group = api
        .group_id
        .as_deref()
        .map_or(&[][..], |g| snap.grants(app_id, g));
    snap.grants(app_id, &api.id).iter().chain(on_group)
}

/// Every grant of the app on the API or its group, and why none applies.
fn describe_grants(snap: &Snapshot, app_id: &str, api: &Api, stage: &str, now_ms: i64) -> String {
    let seen: Vec<String> = candidate_grants(snap, app_id, api)
        .map(|g| {
            let why = if !g.covers_stage(stage) {
                format!("its stages {} do not include {stage}", g.stages.join(","))
            } else if g.expired_at(now_ms) {
                format!("expired at {} ms", g.expires_ms.unwrap_or_default())
            } else {
                "applies".to_owned()
            };
            format!("grant {} on {}: {why}", g.id, g.target.id())
        })
        .collect();
    if seen.is_empty() {
        return format!(
            "app {app_id} has no grant on API {}{}",
            api.id,
            api.group_id
                .as_deref()
                .map_or(String::new(), |g| format!(" or on its group {g}"))
        );
    }
    seen.join("; ")
}

/// The live grant that lets the app call `api` in `stage`.
fn check_grant<'s>(
    snap: &'s Snapshot,
    app_id: &str,
    api: &Api,
    stage: &str,
    now_ms: i64,
) -> Result<&'s Arc<Grant>, Deny> {
    let mut expired = false;
    for g in candidate_grants(snap, app_id, api) {
        if !g.covers_stage(stage) {
            continue;
        }
        if g.expired_at(now_ms) {
            expired = true;
            continue;
        }
        return Ok(g);
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

fn allow_anonymous(
    view: &RequestView,
    api: &Api,
    stage: String,
    cfg: &DecideConfig,
    user: Option<String>,
) -> Decision {
    let mut headers_to_remove: Vec<String> = ["x-keygate-app-id", "x-keygate-app-key"]
        .map(str::to_owned)
        .to_vec();
    headers_to_remove.push(cfg.extend_info_header.clone());
    headers_to_remove.push(BODY_DIGEST_HEADER.to_owned());
    let mut headers_to_set = vec![
        ("x-keygate-api-id".to_owned(), api.id.clone()),
        ("x-keygate-stage".to_owned(), stage.clone()),
        ("x-keygate-scheme".to_owned(), "anonymous".to_owned()),
        // Nothing was signed, so nothing about the body was checked.
        (BODY_HEADER.to_owned(), "unsigned".to_owned()),
    ];
    match user {
        Some(u) => headers_to_set.push((cfg.user_id_header.clone(), u)),
        None => headers_to_remove.push(cfg.user_id_header.clone()),
    }
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
