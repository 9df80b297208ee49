//! The nonce store: where a verified request's nonce is claimed, once.
//!
//! Owns: the seam between the pipeline and the places nonces can live, and the one
//! rule they share: a nonce that could still pass the freshness check is never
//! forgotten; when a store cannot be sure (it lost its memory, it cannot be reached),
//! the claim fails closed.
//!
//! - [`NonceStore::Memory`]: this process's [`ReplayGuard`]; a restart forgets it.
//! - [`NonceStore::Local`] (`local`, the default): the same cache, journaled in the
//!   data dir so neither a graceful restart nor a `kill -9` reopens a replay (see
//!   `journal` for what only an OS crash can lose and the fence that closes it).
//! - [`NonceStore::Redis`]: one `SET NX` with an expiry per nonce, shared by every
//!   replica (see `redis` for Redis restarts and flushes).
//!
//! The claim runs after `decide` has allowed the request, outside the index lock: it
//! is the pipeline's only step that may wait on I/O.

pub mod journal;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::replay::{ReplayError, ReplayGuard};

/// What a request asks the nonce store for: remember `token` in `scope` for `ttl_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonceClaim {
    /// Scheme and credential (`aliyun/<AppKey>`): the same nonce may be used by others.
    pub scope: String,
    /// The nonce, or for SigV4 on a replay-protected API its signature.
    pub token: String,
    /// How long the request could still pass the freshness check.
    pub ttl_ms: i64,
}

/// Why a claim failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("nonce already used")]
    Replayed,
    #[error("the replay cache is full")]
    Full,
    #[error("this key holds its whole share of the replay cache")]
    KeyFull,
    /// The store cannot answer (down, timed out, a write failed): refuse, since
    /// accepting could accept a replay.
    #[error("the nonce store is unavailable: {0}")]
    Unavailable(String),
    /// The store lost nonces that may still be live; every claim is refused until
    /// they would have expired.
    #[error("the nonce store lost its memory; nonces are refused for {remaining_ms} ms more")]
    Fenced { remaining_ms: i64 },
}

impl From<ReplayError> for ClaimError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => ClaimError::Replayed,
            ReplayError::Full => ClaimError::Full,
            ReplayError::KeyFull => ClaimError::KeyFull,
        }
    }
}

/// Which store `--nonce-store` names.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum NonceStoreKind {
    /// In this process only: a restart forgets every nonce.
    Memory,
    /// In this process, journaled in the data dir: survives restarts.
    #[default]
    Local,
    /// In Redis, shared by every replica.
    Redis,
}

impl NonceStoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NonceStoreKind::Memory => "memory",
            NonceStoreKind::Local => "local",
            NonceStoreKind::Redis => "redis",
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct NonceMetrics {
    /// Claims refused because the store could not answer.
    pub unavailable: AtomicU64,
    /// Claims refused because the store lost its memory (fenced).
    pub fenced: AtomicU64,
    /// Times the store was found to have lost its memory.
    pub losses: AtomicU64,
}

pub enum NonceStore {
    Memory(ReplayGuard),
    Local(journal::Journaled),
    Redis(redis::RedisNonces),
}

impl NonceStore {
    pub fn kind(&self) -> NonceStoreKind {
        match self {
            NonceStore::Memory(_) => NonceStoreKind::Memory,
            NonceStore::Local(_) => NonceStoreKind::Local,
            NonceStore::Redis(_) => NonceStoreKind::Redis,
        }
    }

    /// Claims `c` at `now_ms`: `Ok` only if no live claim of the same nonce exists
    /// and this one is now remembered where every later claim will see it.
    pub async fn claim(&self, c: &NonceClaim, now_ms: i64) -> Result<(), ClaimError> {
        let result = match self {
            NonceStore::Memory(g) => g
                .claim(&c.scope, &c.token, now_ms, c.ttl_ms)
                .map(|_| ())
                .map_err(ClaimError::from),
            NonceStore::Local(j) => j.claim(c, now_ms),
            NonceStore::Redis(r) => r.claim(c, now_ms).await,
        };
        if let Err(e) = &result {
            let m = self.metrics();
            match e {
                ClaimError::Unavailable(_) => m.unavailable.fetch_add(1, Ordering::Relaxed),
                ClaimError::Fenced { .. } => m.fenced.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        result
    }

    /// Whether `c` is already claimed, changing nothing (`explain`); an error when
    /// the store cannot say.
    pub async fn seen(&self, c: &NonceClaim, now_ms: i64) -> Result<bool, String> {
        match self {
            NonceStore::Memory(g) => Ok(g.is_live(&c.scope, &c.token, now_ms)),
            NonceStore::Local(j) => Ok(j.guard().is_live(&c.scope, &c.token, now_ms)),
            NonceStore::Redis(r) => r.seen(c).await,
        }
    }

    /// The in-process cache, for the memory and local stores (`/metrics`).
    pub fn cache(&self) -> Option<&ReplayGuard> {
        match self {
            NonceStore::Memory(g) => Some(g),
            NonceStore::Local(j) => Some(j.guard()),
            NonceStore::Redis(_) => None,
        }
    }

    pub fn metrics(&self) -> &NonceMetrics {
        static NONE: NonceMetrics = NonceMetrics {
            unavailable: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
            losses: AtomicU64::new(0),
        };
        match self {
            NonceStore::Memory(_) => &NONE,
            NonceStore::Local(j) => j.metrics(),
            NonceStore::Redis(r) => r.metrics(),
        }
    }

    /// Whether claims are answered right now (for `/readyz`), and why not.
    pub fn health(&self, now_ms: i64) -> Result<(), String> {
        match self {
            NonceStore::Memory(_) => Ok(()),
            NonceStore::Local(j) => j.health(now_ms),
            NonceStore::Redis(r) => r.health(now_ms),
        }
    }

    /// On shutdown: makes every claim durable and marks the stop as clean.
    pub fn close(&self, now_ms: i64) {
        if let NonceStore::Local(j) = self {
            j.close(now_ms);
        }
    }
}

/// The fence after a loss: until every nonce that may have been lost would have
/// expired, no claim is accepted.
pub(crate) fn fence_left(fenced_until_ms: i64, now_ms: i64) -> Option<i64> {
    (now_ms <= fenced_until_ms).then(|| fenced_until_ms - now_ms + 1)
}

/// The key under which other stores remember a claim: the cache's digest.
pub(crate) fn entry_key(c: &NonceClaim) -> [u8; 16] {
    ReplayGuard::digest(&c.scope, &c.token)
}
