//! Admin authentication: `authorization: Bearer <token>` on every admin RPC.
//!
//! Owns: the token comparison (constant time, over SHA-256 digests so that the
//! comparison does not even depend on the presented token's length), the failure log
//! and counter, and the `Actor` recorded in the audit log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Who made an admin call, for the audit log.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

#[derive(Clone)]
pub struct AdminAuth {
    token_digest: [u8; 32],
    failures: Arc<AtomicU64>,
}

impl AdminAuth {
    pub fn new(token: &str, failures: Arc<AtomicU64>) -> Self {
        Self {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            failures,
        }
    }

    fn verify(&self, header: Option<&str>) -> bool {
        let Some(presented) = header.and_then(bearer) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.token_digest).into()
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Interceptor for AdminAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !self.verify(header) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(%peer, presented = header.is_some(), "admin call refused: missing or invalid bearer token");
            return Err(Status::unauthenticated(
                "missing or invalid admin token (authorization: Bearer <token>)",
            ));
        }
        let label = actor_label(req.metadata().as_ref());
        req.extensions_mut().insert(Actor(label));
        Ok(req)
    }
}

/// Who a call with a valid token is: `admin`, or `admin:<label>` with the optional,
/// unauthenticated `x-keygate-actor` label, so operators sharing the token can be
/// told apart in the audit log and the admin call log. Control characters are
/// refused so that a label cannot forge log lines.
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
    fn bearer_token_check() {
        let a = AdminAuth::new("s3cret-token-value", Arc::default());
        assert!(a.verify(Some("Bearer s3cret-token-value")));
        assert!(a.verify(Some("bearer  s3cret-token-value ")));
        assert!(!a.verify(Some("Bearer s3cret-token-valuf")));
        assert!(!a.verify(Some("Basic s3cret-token-value")));
        assert!(!a.verify(Some("s3cret-token-value")));
        assert!(!a.verify(None));
    }
}
