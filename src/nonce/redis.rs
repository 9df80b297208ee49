//! The shared nonce store: one Redis for every replica, one atomic set-if-absent with
//! an expiry per nonce, so a request accepted by one replica is refused by all.
//!
//! Owns: the connection (kept by a background task; a claim never waits for a
//! reconnect: while Redis is unreachable claims fail at once, `Unavailable`), the
//! keys (`<prefix>n:<digest>` per nonce, a 16-byte digest of scope and nonce, so what
//! the client chose is never stored; `<prefix>epoch`, `<prefix>fence`, `<prefix>run`),
//! and the rules for when Redis forgets:
//!
//! - **Flush, or a restart without persistence**: the epoch key is gone. Every claim
//!   checks it in the same script that sets the nonce, so the first claim after the
//!   loss sees it, on any replica.
//! - **A restart, or a failover, that may have dropped recent writes** (no AOF with
//!   `appendfsync always`): the server's `run_id` changed since the run key was
//!   written. Checked on every new connection, before its first claim.
//!
//! Either way the replica that notices sets the fence key for the longest nonce
//! lifetime; every claim on every replica is refused (`Fenced`) while it lives, so no
//! nonce that Redis forgot can be replayed. A replica remembers the epoch it last saw
//! in its data dir, so a replica restarted during the loss notices it too; with a
//! shared store (etcd) the epoch is also kept there, so a replica that starts with an
//! empty data dir just after a flush knows the epoch the others used and fences as
//! well, instead of taking the flushed Redis for a new deployment.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{ClaimError, NonceClaim, NonceMetrics, entry_key};

/// Sets the nonce unless the epoch changed or a fence holds.
/// KEYS: nonce, epoch, fence. ARGV: expiry (ms since the epoch), our epoch.
const CLAIM: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {-1, 0} end
local left = redis.call('PTTL', KEYS[3])
if left > 0 then return {-2, left} end
if redis.call('SET', KEYS[1], '1', 'NX', 'PXAT', ARGV[1]) then return {1, 0} end
return {0, 0}
";

/// Adopts the store's epoch (creating one if there is none) and decides whether
/// nonces were lost; if so, raises the fence.
/// KEYS: epoch, fence, run. ARGV: a new epoch, the epoch the shared store recorded
/// ('' if none), the server's run_id, '1' if a restart may lose writes, the fence
/// length in ms, the epoch this replica last saw ('' if none). Redis's epoch is a
/// loss only if it is neither of the two known ones (one of them may lag).
const ADOPT: &str = r"
local epoch = redis.call('GET', KEYS[1])
local lost = 0
local known = ARGV[2] ~= '' or ARGV[6] ~= ''
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
  if known then lost = 1 end
elseif known and epoch ~= ARGV[2] and epoch ~= ARGV[6] then
  lost = 1
end
local run = redis.call('GET', KEYS[3])
if run and run ~= ARGV[3] and ARGV[4] == '1' then lost = 1 end
redis.call('SET', KEYS[3], ARGV[3])
if lost == 1 and redis.call('PTTL', KEYS[2]) < tonumber(ARGV[5]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
end
return {epoch, lost}
";

/// How `--nonce-store redis` reaches Redis.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    /// Key prefix, so several deployments can share one Redis.
    pub prefix: String,
    /// Time limit of one claim; past it the claim fails `Unavailable`.
    pub timeout: Duration,
    /// How long a fence lasts: the longest time a nonce must be remembered.
    pub max_ttl_ms: i64,
    /// Where this replica remembers the epoch it last saw.
    pub epoch_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("--redis-url: {0}")]
    Url(redis::RedisError),
}

struct Shared {
    settings: RedisSettings,
    /// The shared store that also remembers the epoch (several replicas on etcd).
    store: Option<Arc<crate::store::Store>>,
    client: redis::Client,
    conn: RwLock<Option<MultiplexedConnection>>,
    epoch: RwLock<String>,
    /// Wakes the keeper when a claim dropped the connection.
    lost_conn: tokio::sync::Notify,
    connected: AtomicBool,
    last_error: RwLock<String>,
    down_since_ms: AtomicI64,
    metrics: NonceMetrics,
    claim: redis::Script,
    adopt: redis::Script,
}

/// The Redis nonce store. Cheap to share; its keeper task ends with the runtime.
pub struct RedisNonces {
    shared: Arc<Shared>,
}

impl RedisNonces {
    /// Connects (once, with the claim time limit) and starts the task that keeps the
    /// connection. Serving starts even if Redis is down: nonce claims then fail closed
    /// until it is reachable, and `/readyz` says so.
    pub async fn start(
        settings: RedisSettings,
        store: Option<Arc<crate::store::Store>>,
    ) -> Result<Self, RedisSetupError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(RedisSetupError::Url)?;
        let known = std::fs::read_to_string(&settings.epoch_file)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            settings,
            store,
            client,
            conn: RwLock::new(None),
            epoch: RwLock::new(known),
            lost_conn: tokio::sync::Notify::new(),
            connected: AtomicBool::new(false),
            last_error: RwLock::new("not connected yet".into()),
            down_since_ms: AtomicI64::new(now_ms()),
            metrics: NonceMetrics::default(),
            claim: redis::Script::new(CLAIM),
            adopt: redis::Script::new(ADOPT),
        });
        if let Err(e) = shared.establish().await {
            tracing::warn!(error = %e, "Redis nonce store unreachable at start; nonce-carrying requests are refused until it is");
            shared.set_error(e);
        }
        tokio::spawn(keep(shared.clone()));
        Ok(Self { shared })
    }

    pub fn metrics(&self) -> &NonceMetrics {
        &self.shared.metrics
    }

    pub fn health(&self, now: i64) -> Result<(), String> {
        if self.shared.connected.load(Ordering::Relaxed) {
            return Ok(());
        }
        let since = self.shared.down_since_ms.load(Ordering::Relaxed);
        Err(format!(
            "Redis nonce store unreachable for {} s: {}",
            (now - since).max(0) / 1000,
            self.shared
                .last_error
                .read()
                .unwrap_or_else(PoisonError::into_inner)
        ))
    }

    /// Whether `c`'s key exists, changing nothing (`explain`).
    pub async fn seen(&self, c: &NonceClaim) -> Result<bool, String> {
        let s = &self.shared;
        let mut conn = s.connection().ok_or("Redis is not connected")?;
        let exists = redis::cmd("EXISTS").arg(s.nonce_key(c)).to_owned();
        match tokio::time::timeout(s.settings.timeout, exists.query_async::<i64>(&mut conn)).await {
            Ok(Ok(n)) => Ok(n > 0),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis timed out".into()),
        }
    }

    pub async fn claim(&self, c: &NonceClaim, now_ms: i64) -> Result<(), ClaimError> {
        let s = &self.shared;
        let Some(mut conn) = s.connection() else {
            return Err(ClaimError::Unavailable("Redis is not connected".into()));
        };
        let key = s.nonce_key(c);
        let epoch = s
            .epoch
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let expires = now_ms.saturating_add(c.ttl_ms.max(1));
        let mut inv = s.claim.prepare_invoke();
        inv.key(key)
            .key(s.key("epoch"))
            .key(s.key("fence"))
            .arg(expires)
            .arg(epoch);
        let answer = tokio::time::timeout(
            s.settings.timeout,
            inv.invoke_async::<(i64, i64)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok((1, _))) => Ok(()),
            Ok(Ok((0, _))) => Err(ClaimError::Replayed),
            Ok(Ok((-2, left))) => Err(ClaimError::Fenced { remaining_ms: left }),
            Ok(Ok((-1, _))) => {
                // The epoch is gone or new: Redis lost its nonces. Adopt (raising the
                // fence) before anything else is claimed.
                if let Err(e) = s.adopt_on(&mut conn).await {
                    s.drop_conn(e);
                }
                Err(ClaimError::Fenced {
                    remaining_ms: s.settings.max_ttl_ms,
                })
            }
            Ok(Ok(other)) => Err(ClaimError::Unavailable(format!(
                "unexpected answer from the claim script: {other:?}"
            ))),
            Ok(Err(e)) if e.code() == Some("OOM") => Err(ClaimError::Full),
            Ok(Err(e)) => {
                let msg = e.to_string();
                s.drop_conn(msg.clone());
                Err(ClaimError::Unavailable(msg))
            }
            Err(_) => {
                s.drop_conn(format!(
                    "a claim took over {} ms",
                    s.settings.timeout.as_millis()
                ));
                Err(ClaimError::Unavailable("Redis timed out".into()))
            }
        }
    }
}

fn now_ms() -> i64 {
    crate::clock::Clock::now_ms(&crate::clock::SystemClock)
}

impl Shared {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.settings.prefix)
    }

    /// The live connection (a cheap clone of a multiplexed one), if the keeper has one.
    fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `<prefix>n:<digest>`: the nonce itself is never sent to Redis.
    fn nonce_key(&self, c: &NonceClaim) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.settings.prefix.len() + 18);
        key.extend_from_slice(self.settings.prefix.as_bytes());
        key.extend_from_slice(b"n:");
        key.extend_from_slice(&entry_key(c));
        key
    }

    fn set_error(&self, e: String) {
        *self
            .last_error
            .write()
            .unwrap_or_else(PoisonError::into_inner) = e;
    }

    fn drop_conn(&self, why: String) {
        let had = self
            .conn
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some();
        if had {
            self.connected.store(false, Ordering::Relaxed);
            self.down_since_ms.store(now_ms(), Ordering::Relaxed);
            tracing::warn!(error = %why, "Redis nonce store connection lost; nonce-carrying requests are refused until it is back");
            self.set_error(why);
            self.lost_conn.notify_one();
        }
    }

    /// Opens a connection, adopts the epoch (deciding whether nonces were lost) and
    /// only then lets claims use it.
    async fn establish(&self) -> Result<(), String> {
        let t = self.settings.timeout.max(Duration::from_millis(500));
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        self.adopt_on(&mut conn).await?;
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Some(conn);
        self.connected.store(true, Ordering::Relaxed);
        tracing::info!(epoch = %self.epoch.read().unwrap_or_else(PoisonError::into_inner), "Redis nonce store connected");
        Ok(())
    }

    async fn adopt_on(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        let lossy = !restart_keeps_every_write(conn).await;
        let mut candidate = [0u8; 16];
        let _ = getrandom::getrandom(&mut candidate);
        let recorded = self
            .store
            .as_ref()
            .and_then(|s| s.redis_epoch().ok().flatten());
        let mine = self
            .epoch
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut inv = self.adopt.prepare_invoke();
        inv.key(self.key("epoch"))
            .key(self.key("fence"))
            .key(self.key("run"))
            .arg(hex::encode(candidate))
            .arg(recorded.as_deref().unwrap_or_default())
            .arg(&run_id)
            .arg(if lossy { "1" } else { "0" })
            .arg(self.settings.max_ttl_ms.max(1))
            .arg(&mine);
        let (epoch, lost): (String, i64) =
            inv.invoke_async(conn).await.map_err(|e| e.to_string())?;
        if lost == 1 {
            self.metrics.losses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                fence_secs = self.settings.max_ttl_ms / 1000,
                "Redis lost nonces (flushed, or restarted without every write persisted): \
                 every nonce is refused until the lost ones would have expired"
            );
        }
        if let Some(store) = &self.store
            && recorded.as_deref() != Some(epoch.as_str())
        {
            // Not on the claim's path: the fence already holds if nonces were lost.
            // Retried, since a stale record would fence the next replica to start.
            let (store, e) = (store.clone(), epoch.clone());
            tokio::spawn(async move {
                for attempt in 0..10u32 {
                    match store.set_redis_epoch(&e).await {
                        Ok(()) => return,
                        Err(error) if attempt == 9 => {
                            tracing::warn!(%error, "cannot record the Redis epoch in the shared store");
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await
                        }
                    }
                }
            });
        }
        if epoch != mine {
            if let Err(error) = std::fs::write(&self.settings.epoch_file, &epoch) {
                tracing::warn!(%error, path = %self.settings.epoch_file.display(), "cannot remember the Redis epoch");
            }
            *self.epoch.write().unwrap_or_else(PoisonError::into_inner) = epoch;
        }
        Ok(())
    }
}

/// Whether a Redis restart keeps every acknowledged write: AOF with `appendfsync
/// always`. Unknown (CONFIG refused, as on some managed services) counts as no.
async fn restart_keeps_every_write(conn: &mut MultiplexedConnection) -> bool {
    async fn get(conn: &mut MultiplexedConnection, name: &str) -> Option<String> {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(conn)
            .await
            .ok()?;
        pair.get(1).cloned()
    }
    get(conn, "appendonly").await.as_deref() == Some("yes")
        && get(conn, "appendfsync").await.as_deref() == Some("always")
}

/// Keeps the connection: pings it every second, and reconnects (backing off from
/// 100 ms to 2 s) whenever it was lost.
async fn keep(s: Arc<Shared>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let current = s
            .conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(mut conn) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = s.lost_conn.notified() => continue,
                }
                let ping = tokio::time::timeout(
                    s.settings.timeout.max(Duration::from_millis(500)),
                    redis::cmd("PING").query_async::<String>(&mut conn),
                )
                .await;
                match ping {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => s.drop_conn(e.to_string()),
                    Err(_) => s.drop_conn("ping timed out".into()),
                }
            }
            None => match s.establish().await {
                Ok(()) => pause = Duration::from_millis(100),
                Err(e) => {
                    s.set_error(e);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            },
        }
    }
}
