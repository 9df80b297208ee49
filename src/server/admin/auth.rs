//! Admin authentication: `authorization: Bearer <token>` on every admin RPC, or, on an
//! mTLS admin listener, the subject of the client's verified certificate.
//!
//! Owns: finding who a token belongs to (the bootstrap token, compared in constant
//! time over SHA-256 digests so the comparison does not even depend on the presented
//! token's length; or a principal's, found by its digest), else which principal the
//! certificate subject names; the `Caller` handed to the handlers, and the failure
//! counter. A token, when sent, decides: a wrong one is refused even over a
//! certificate a principal names, so a bad token never silently falls back. The
//! bootstrap admin has no subject: it is only ever a token. `calls::Logged` runs it
//! on every call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::{Principal, Role};
use crate::store::Store;
use crate::store::principals::{subject_digest, token_digest};

/// Who made an admin call: the principal, and the actor the audit log records.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub actor: String,
}

#[derive(Clone)]
pub struct AdminAuth {
    token_digest: [u8; 32],
    store: Arc<Store>,
    pub failures: Arc<AtomicU64>,
}

impl AdminAuth {
    pub fn new(token: &str, store: Arc<Store>, failures: Arc<AtomicU64>) -> Self {
        Self {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            store,
            failures,
        }
    }

    /// The caller a request's token names, else the one its connection's verified
    /// client-certificate subject names, or `None` (counted).
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        cert_subject: Option<&str>,
    ) -> Option<Caller> {
        let caller = match headers.get("authorization") {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(bearer)
                .and_then(|token| self.lookup(token, headers)),
            None => cert_subject.and_then(|s| self.principal(&subject_digest(s))),
        };
        if caller.is_none() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        caller
    }

    fn lookup(&self, token: &str, headers: &http::HeaderMap) -> Option<Caller> {
        let digest = token_digest(token);
        if bool::from(digest.ct_eq(&self.token_digest)) {
            return Some(Caller {
                principal: bootstrap(),
                actor: actor_label(headers),
            });
        }
        // Only principal tokens are looked up: what else a header carries can never
        // meet another kind of credential in the index (see `subject_digest`).
        if !token.starts_with(crate::store::principals::TOKEN_PREFIX) {
            return None;
        }
        // A digest the attacker cannot choose: the lookup learns nothing from timing.
        self.principal(&digest)
    }

    fn principal(&self, digest: &[u8; 32]) -> Option<Caller> {
        match self.store.principal_by_token(digest) {
            Ok(Some(p)) => Some(Caller {
                actor: p.name.clone(),
                principal: p,
            }),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "cannot look up an admin token; refusing the call");
                None
            }
        }
    }
}

/// The bootstrap token's principal.
pub fn bootstrap() -> Principal {
    Principal {
        name: "admin".into(),
        role: Role::Admin,
        owner: String::new(),
        description: "the bootstrap token (--admin-token-file)".into(),
        cert_subject: String::new(),
        create_ms: 0,
        update_ms: 0,
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The bootstrap token's actor: `admin`, or `admin:<label>` with the optional,
/// unauthenticated `x-keygate-actor` label, so operators sharing that one token can
/// be told apart in the audit log (principals have names of their own). Control
/// characters are refused so that a label cannot forge log lines.
pub fn actor_label(headers: &http::HeaderMap) -> String {
    headers
        .get("x-keygate-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && !v.chars().any(char::is_control))
        .map(|v| format!("admin:{v}"))
        .unwrap_or_else(|| "admin".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }
}
