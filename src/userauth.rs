//! User authentication on top of the app's: a login token (JWT) the request must also
//! carry on APIs with `user_auth_required` (BlueKing's user authentication).
//!
//! Owns: finding the token (a header, else a cookie), verifying it (HS256 with a
//! configured secret; RS256 or ES256 with a key of a JWKS, chosen by `kid`: a file
//! re-read when it changes, or a URL kept fresh by `remote`, so a rotated key is used
//! without a restart),
//! `exp` (required) and `nbf` with a leeway, the issuer and audience when
//! configured, and the user id claim. Only those three algorithms, each with its own
//! kind of key: `alg: none`, an HMAC signed with a public key and the like are
//! refused. The check path calls `verify`; it never waits on I/O but a `stat` of the
//! JWKS file at most once a second (a URL is fetched by a background task).

pub mod remote;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

fn invalid(why: impl Into<String>) -> Deny {
    Deny::new(DenyCode::UserInvalid, why.into())
}

/// How user tokens are found and checked (`--user-*` flags).
#[derive(Clone, Debug, Default)]
pub struct UserAuthConfig {
    /// Lower-case header holding the token (`Bearer ` prefix optional).
    pub header: String,
    /// Cookie holding the token when the header is absent.
    pub cookie: Option<String>,
    /// HS256 secret; `None`: HS256 tokens are refused.
    pub hs256_secret: Option<Vec<u8>>,
    /// JWKS file with the RS256 / ES256 public keys.
    pub jwks_file: Option<PathBuf>,
    /// ... or the URL serving them (an identity provider's `jwks_uri`).
    pub jwks_url: Option<String>,
    /// CA bundle to verify the JWKS URL's server with (default: the system's roots).
    pub jwks_ca_file: Option<PathBuf>,
    /// How often the URL is fetched again.
    pub jwks_refresh: std::time::Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    /// The claim holding the user id.
    pub user_claim: String,
}

pub struct UserAuth {
    cfg: UserAuthConfig,
    jwks: RwLock<(Option<SystemTime>, JwkSet)>,
    checked_ms: AtomicI64,
    remote: Option<remote::Remote>,
    /// Whether the URL's key set was fetched once (a file is read at start).
    loaded: AtomicBool,
}

impl std::fmt::Debug for UserAuth {
    /// Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAuth")
            .field("header", &self.cfg.header)
            .field("jwks_file", &self.cfg.jwks_file)
            .field("jwks_url", &self.cfg.jwks_url)
            .field("hs256", &self.cfg.hs256_secret.is_some())
            .finish()
    }
}

fn read_jwks(path: &PathBuf) -> Result<(Option<SystemTime>, JwkSet), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let set: JwkSet =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a JWKS: {e}", path.display()))?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((mtime, set))
}

impl UserAuth {
    /// Reads the JWKS file (an error names it), or checks the JWKS URL; its keys come
    /// with `remote::start`.
    pub fn open(cfg: UserAuthConfig) -> Result<Self, String> {
        let jwks = match &cfg.jwks_file {
            Some(p) => read_jwks(p)?,
            None => (None, JwkSet { keys: Vec::new() }),
        };
        let remote = cfg
            .jwks_url
            .as_deref()
            .map(|url| remote::Remote::new(url, cfg.jwks_ca_file.as_deref()))
            .transpose()?;
        Ok(Self {
            loaded: AtomicBool::new(remote.is_none()),
            cfg,
            jwks: RwLock::new(jwks),
            checked_ms: AtomicI64::new(0),
            remote,
        })
    }

    fn remote(&self) -> Option<&remote::Remote> {
        self.remote.as_ref()
    }

    /// Fetches the URL's key set once; a failure keeps the last good keys.
    async fn fetch_remote(&self, remote: &remote::Remote) -> bool {
        let url = self.cfg.jwks_url.as_deref().unwrap_or_default();
        match remote.fetch().await {
            Ok(set) => {
                let mut jwks = self.jwks.write().unwrap_or_else(PoisonError::into_inner);
                if jwks.1 != set || !self.loaded.load(Ordering::Relaxed) {
                    tracing::info!(
                        jwks_url = url,
                        keys = set.keys.len(),
                        "user token keys fetched"
                    );
                    jwks.1 = set;
                }
                self.loaded.store(true, Ordering::Relaxed);
                true
            }
            Err(error) => {
                tracing::warn!(
                    jwks_url = url,
                    %error,
                    "cannot fetch the user token keys; keeping the last ones"
                );
                false
            }
        }
    }

    /// The token the request carries, if any.
    pub fn token<'v>(&self, view: &'v RequestView) -> Option<&'v str> {
        if let Some(v) = view.headers.get(&self.cfg.header) {
            let v = v.trim();
            let v = v
                .get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map_or(v, |_| v[7..].trim());
            return (!v.is_empty()).then_some(v);
        }
        let name = self.cfg.cookie.as_deref()?;
        view.headers
            .get_all("cookie")
            .flat_map(|c| c.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Re-reads the JWKS file when it changed, at most once a second; a file that
    /// no longer parses keeps the last good keys (and is logged).
    fn refresh(&self, now_ms: i64) {
        let Some(path) = &self.cfg.jwks_file else {
            return;
        };
        let last = self.checked_ms.load(Ordering::Relaxed);
        if now_ms - last < 1000
            || self
                .checked_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let known = self.jwks.read().unwrap_or_else(PoisonError::into_inner).0;
        if mtime == known {
            return;
        }
        match read_jwks(path) {
            Ok(fresh) => {
                *self.jwks.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                tracing::info!(jwks_file = %path.display(), "user token keys re-read");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot re-read the user token keys; keeping the last ones")
            }
        }
    }

    /// The user id of a valid token, or why it is not: `UserExpired` for a token
    /// outside its validity, `UserInvalid` for anything else.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<String, Deny> {
        self.refresh(now_ms);
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            invalid(format!(
                "not a signed JWT ({e}); alg none is never accepted"
            ))
        })?;
        let key = match header.alg {
            Algorithm::HS256 => {
                DecodingKey::from_secret(self.cfg.hs256_secret.as_deref().ok_or_else(|| {
                    invalid("HS256 tokens are not accepted here (no secret configured)")
                })?)
            }
            Algorithm::RS256 | Algorithm::ES256 => self
                .jwk_key(header.alg, header.kid.as_deref())
                .map_err(invalid)?,
            other => {
                return Err(invalid(format!(
                    "alg {other:?} is not accepted (HS256, RS256, ES256)"
                )));
            }
        };
        let mut v = Validation::new(header.alg);
        v.leeway = self.cfg.leeway_secs;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        if let Some(i) = &self.cfg.issuer {
            v.set_issuer(&[i]);
        }
        match &self.cfg.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => {
                    Deny::new(DenyCode::UserExpired, "the user token has expired")
                }
                ErrorKind::ImmatureSignature => Deny::new(
                    DenyCode::UserExpired,
                    "the user token is not valid yet (nbf)",
                ),
                _ => invalid(format!("invalid user token: {e}")),
            }
        })?;
        match data.claims.get(&self.cfg.user_claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 256 => {
                if s.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "claim {} holds control characters",
                        self.cfg.user_claim
                    )));
                }
                Ok(s.clone())
            }
            _ => Err(invalid(format!(
                "the token has no {} claim naming the user",
                self.cfg.user_claim
            ))),
        }
    }

    /// The JWKS key for `alg`: the one named by `kid`, else the only key of that kind.
    fn jwk_key(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, String> {
        let jwks = self.jwks.read().unwrap_or_else(PoisonError::into_inner);
        let fits = |k: &&jsonwebtoken::jwk::Jwk| {
            matches!(
                (&k.algorithm, alg),
                (AlgorithmParameters::RSA(_), Algorithm::RS256)
                    | (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256)
            )
        };
        if !self.loaded.load(Ordering::Relaxed) {
            // A provider back after an outage is fetched at the next token (rate-limited
            // by the refresh loop), not at the end of the backoff.
            if let Some(r) = &self.remote {
                r.nudge.notify_one();
            }
            return Err("the user token keys have not been fetched from the JWKS URL yet".into());
        }
        let jwk = match kid {
            Some(kid) => jwks.1.find(kid).ok_or_else(|| {
                // Perhaps a rotation the provider published since the last fetch.
                if let Some(r) = &self.remote {
                    r.nudge.notify_one();
                }
                format!("no key '{kid}' in the JWKS")
            })?,
            None => {
                let mut of_kind = jwks.1.keys.iter().filter(fits);
                match (of_kind.next(), of_kind.next()) {
                    (Some(k), None) => k,
                    _ => return Err(
                        "the token names no key (kid) and the JWKS has not exactly one of its kind"
                            .into(),
                    ),
                }
            }
        };
        if !fits(&jwk) {
            return Err(format!(
                "key '{}' is not a {alg:?} key",
                kid.unwrap_or_default()
            ));
        }
        DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWKS key: {e}"))
    }
}
