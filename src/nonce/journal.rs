//! The durable single-node nonce store: the in-memory replay cache, with every accepted
//! nonce appended to a journal in the data dir before the request is allowed.
//!
//! Owns: the journal file (`nonces.journal`), its reading at start, its compaction, and
//! the rules for what a stop can lose:
//!
//! - **Graceful stop**: every record is synced and a clean-close record written. Nothing
//!   is lost.
//! - **`kill -9`, a panic, the OOM killer**: each record is written (`write(2)`) before
//!   its request is allowed, so it is in the kernel's page cache, which outlives the
//!   process. Nothing is lost. Recognised by the same boot id in the journal.
//! - **OS crash or power loss**: records since the last sync (at most ~100 ms, the
//!   flusher's period) may be gone. Recognised at start by an unclean journal written
//!   under another boot id; then every claim is refused (`Fenced`) until the longest
//!   nonce lifetime has passed since the start, because any lost nonce would have
//!   expired by then. The fence itself is journaled, so a restart inside it keeps it.
//!
//! A journal deleted by hand (or a data dir from before the journal existed) cannot be
//! told from a first start: its nonces are forgotten once.
//!
//! Format: a 24-byte header (`KGNONCE1` and the cache's 16-byte salt, so restored
//! entries are charged to the same keys), then fixed 33-byte records (a tag and 32
//! bytes), so a torn tail is recognised by its length or a zero tag and dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{ClaimError, NonceClaim, NonceMetrics, fence_left};
use crate::replay::{Entry, ReplayGuard};

const FILE: &str = "nonces.journal";
const MAGIC: &[u8; 8] = b"KGNONCE1";
const HEADER: usize = 8 + 16;
const RECORD: usize = 33;
/// How often the flusher syncs the journal: what an OS crash may lose.
const SYNC_EVERY: Duration = Duration::from_millis(100);
/// Compact once this many records were appended since the last compaction, and more
/// than twice as many as were live then.
const COMPACT_AFTER: u64 = 100_000;

const TAG_NONCE: u8 = 1;
const TAG_OPEN: u8 = 2;
const TAG_CLOSE: u8 = 3;
const TAG_FENCE: u8 = 4;

#[derive(Debug, thiserror::Error)]
#[error("nonce journal {path}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// What a journal said at start.
#[derive(Debug, Default)]
struct Read {
    salt: Option<[u8; 16]>,
    entries: Vec<Entry>,
    last_boot: Option<[u8; 16]>,
    clean: bool,
    fenced_until_ms: Option<i64>,
    /// The file existed but its header was not a journal's.
    unreadable: bool,
}

fn record(tag: u8, body: &[u8]) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0] = tag;
    r[1..1 + body.len()].copy_from_slice(body);
    r
}

fn nonce_record(e: &Entry) -> [u8; RECORD] {
    let mut body = [0u8; 32];
    body[..16].copy_from_slice(&e.digest);
    body[16..24].copy_from_slice(&e.expires_ms.to_be_bytes());
    body[24..].copy_from_slice(&e.scope.to_be_bytes());
    record(TAG_NONCE, &body)
}

fn instant_record(tag: u8, at_ms: i64, boot: Option<[u8; 16]>) -> [u8; RECORD] {
    let mut body = [0u8; 32];
    if let Some(b) = boot {
        body[..16].copy_from_slice(&b);
    }
    body[16..24].copy_from_slice(&at_ms.to_be_bytes());
    record(tag, &body)
}

fn i64_at(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

fn parse(bytes: &[u8]) -> Read {
    let mut r = Read::default();
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        r.unreadable = true;
        return r;
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&bytes[8..HEADER]);
    r.salt = Some(salt);
    for rec in bytes[HEADER..].chunks_exact(RECORD) {
        let body = &rec[1..];
        match rec[0] {
            TAG_NONCE => {
                let mut digest = [0u8; 16];
                digest.copy_from_slice(&body[..16]);
                let mut scope = [0u8; 8];
                scope.copy_from_slice(&body[24..32]);
                r.entries.push(Entry {
                    digest,
                    expires_ms: i64_at(&body[16..]),
                    scope: u64::from_be_bytes(scope),
                });
                r.clean = false;
            }
            TAG_OPEN => {
                let mut boot = [0u8; 16];
                boot.copy_from_slice(&body[..16]);
                r.last_boot = Some(boot);
                r.clean = false;
            }
            TAG_CLOSE => r.clean = true,
            TAG_FENCE => {
                let until = i64_at(&body[16..]);
                r.fenced_until_ms = Some(r.fenced_until_ms.map_or(until, |f| f.max(until)));
            }
            // A zero or unknown tag: the torn tail of a write cut by a crash.
            _ => break,
        }
    }
    r
}

/// This boot of the OS, so a journal can tell a killed process (page cache intact)
/// from a crashed machine. `None` where the kernel does not say.
fn boot_id() -> Option<[u8; 16]> {
    let text = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    let mut id = [0u8; 16];
    hex::decode_to_slice(hex, &mut id).ok()?;
    Some(id)
}

struct Writer {
    file: Arc<File>,
    appended: u64,
    live_at_compaction: u64,
}

struct Inner {
    guard: ReplayGuard,
    dir: PathBuf,
    salt: [u8; 16],
    boot: Option<[u8; 16]>,
    writer: Mutex<Writer>,
    dirty: AtomicBool,
    stop: AtomicBool,
    closed: AtomicBool,
    /// Set while appends fail (disk full, I/O error): claims are then refused.
    failing: AtomicBool,
    fenced_until_ms: AtomicI64,
    metrics: NonceMetrics,
}

/// The replay cache with its journal. Syncs in a background thread; `close` on
/// shutdown.
pub struct Journaled {
    inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Journaled {
    /// Opens (or creates) the journal in `dir`, restores its live nonces into a cache
    /// of `capacity` (`per_key` per key), and decides whether the last stop may have
    /// lost any: then claims are fenced for `max_ttl_ms`.
    pub fn open(
        dir: &Path,
        capacity: usize,
        per_key: usize,
        max_ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Self, JournalError> {
        let path = dir.join(FILE);
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        let (existed, read) = match fs::read(&path) {
            Ok(bytes) => (true, parse(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (false, Read::default()),
            Err(e) => return Err(err(e)),
        };
        let boot = boot_id();
        let metrics = NonceMetrics::default();
        let lost = existed
            && (read.unreadable || (!read.clean && (boot.is_none() || read.last_boot != boot)));
        let mut fenced_until_ms = read.fenced_until_ms.unwrap_or(i64::MIN);
        if lost {
            fenced_until_ms = fenced_until_ms.max(now_ms.saturating_add(max_ttl_ms));
            metrics.losses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                journal = %path.display(),
                fenced_secs = (fenced_until_ms - now_ms) / 1000,
                "the last stop was an OS crash (or the journal is unreadable): nonces since its \
                 last sync may be lost, so every nonce is refused until they would have expired"
            );
        } else if existed && !read.clean {
            tracing::info!("the last stop was not clean, but the OS kept running: no nonce lost");
        }
        let salt = read.salt.unwrap_or_else(|| {
            let mut s = [0u8; 16];
            let _ = getrandom::getrandom(&mut s);
            s
        });
        let guard = ReplayGuard::with_salt(capacity, per_key, salt);
        for e in read.entries {
            guard.restore(e, now_ms);
        }
        let live = guard.live(now_ms);
        let file = rewrite(dir, salt, boot, fenced_until_ms, &live, now_ms).map_err(err)?;
        let inner = Inner {
            guard,
            dir: dir.to_owned(),
            salt,
            boot,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                appended: 0,
                live_at_compaction: live.len() as u64,
            }),
            dirty: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            fenced_until_ms: AtomicI64::new(fenced_until_ms),
            metrics,
        };
        tracing::info!(
            journal = %path.display(),
            restored = inner.guard.len(),
            "nonce journal open"
        );
        let inner = Arc::new(inner);
        let flusher = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("nonce-journal".into())
                .spawn(move || inner.flush_loop())
                .map_err(err)?
        };
        Ok(Self {
            inner,
            flusher: Mutex::new(Some(flusher)),
        })
    }

    pub fn guard(&self) -> &ReplayGuard {
        &self.inner.guard
    }

    pub fn metrics(&self) -> &NonceMetrics {
        &self.inner.metrics
    }

    pub fn claim(&self, c: &NonceClaim, now_ms: i64) -> Result<(), ClaimError> {
        let inner = &self.inner;
        if let Some(remaining_ms) =
            fence_left(inner.fenced_until_ms.load(Ordering::Relaxed), now_ms)
        {
            return Err(ClaimError::Fenced { remaining_ms });
        }
        let entry = inner.guard.claim(&c.scope, &c.token, now_ms, c.ttl_ms)?;
        let mut w = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.closed.load(Ordering::Relaxed) {
            return Err(ClaimError::Unavailable("shutting down".into()));
        }
        // The nonce stays in the cache even if the write fails: it is refused either way.
        match (&*w.file).write_all(&nonce_record(&entry)) {
            Ok(()) => {
                inner.failing.store(false, Ordering::Relaxed);
                w.appended += 1;
                inner.dirty.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                if !inner.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "cannot append to the nonce journal; nonce-carrying requests are refused");
                }
                Err(ClaimError::Unavailable(format!(
                    "journal write failed: {e}"
                )))
            }
        }
    }

    pub fn health(&self, _now_ms: i64) -> Result<(), String> {
        if self.inner.failing.load(Ordering::Relaxed) {
            return Err("nonce journal writes are failing".into());
        }
        Ok(())
    }

    /// Syncs, writes the clean-close record and stops the flusher. Later claims fail.
    pub fn close(&self, now_ms: i64) {
        let inner = &self.inner;
        inner.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .flusher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = h.join();
        }
        let w = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        let done = w
            .file
            .sync_data()
            .and_then(|()| (&*w.file).write_all(&instant_record(TAG_CLOSE, now_ms, inner.boot)))
            .and_then(|()| w.file.sync_data());
        match done {
            Ok(()) => tracing::info!("nonce journal synced and closed"),
            Err(error) => tracing::error!(%error, "cannot close the nonce journal cleanly"),
        }
    }
}

impl Inner {
    fn flush_loop(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(SYNC_EVERY);
            if self.dirty.swap(false, Ordering::AcqRel) {
                let file = self
                    .writer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .file
                    .clone();
                if let Err(error) = file.sync_data() {
                    tracing::error!(%error, "cannot sync the nonce journal");
                    self.dirty.store(true, Ordering::Relaxed);
                }
            }
            let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            if w.appended > COMPACT_AFTER.max(2 * w.live_at_compaction)
                && !self.closed.load(Ordering::Relaxed)
            {
                let now_ms = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
                if let Err(error) = self.compact(&mut w, now_ms) {
                    tracing::error!(%error, "cannot compact the nonce journal; appending to the old one");
                }
            }
        }
    }

    /// Rewrites the journal as its live entries (and the fence, if one holds), synced
    /// and renamed into place. Called with the writer held, so no append is lost: a
    /// claim cached after the copy was taken is appended to the new file.
    fn compact(&self, w: &mut Writer, now_ms: i64) -> io::Result<()> {
        let live = self.guard.live(now_ms);
        let fence = self.fenced_until_ms.load(Ordering::Relaxed);
        w.file = Arc::new(rewrite(
            &self.dir, self.salt, self.boot, fence, &live, now_ms,
        )?);
        w.appended = 0;
        w.live_at_compaction = live.len() as u64;
        Ok(())
    }
}

/// Writes a new journal holding `live` (and the fence, if it still holds), synced and
/// renamed into place, and opens it for appending.
fn rewrite(
    dir: &Path,
    salt: [u8; 16],
    boot: Option<[u8; 16]>,
    fenced_until_ms: i64,
    live: &[Entry],
    now_ms: i64,
) -> io::Result<File> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut buf = Vec::with_capacity(HEADER + RECORD * (live.len() + 2));
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&salt);
    buf.extend_from_slice(&instant_record(TAG_OPEN, now_ms, boot));
    if fenced_until_ms >= now_ms {
        buf.extend_from_slice(&instant_record(TAG_FENCE, fenced_until_ms, None));
    }
    for e in live {
        buf.extend_from_slice(&nonce_record(e));
    }
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    OpenOptions::new().append(true).open(&path)
}

impl Drop for Journaled {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(n: &str) -> NonceClaim {
        NonceClaim {
            scope: "aliyun/k".into(),
            token: n.into(),
            ttl_ms: 60_000,
        }
    }

    fn open(dir: &Path, now: i64) -> Journaled {
        Journaled::open(dir, 1000, 1000, 60_000, now).unwrap()
    }

    #[test]
    fn a_clean_restart_remembers_every_live_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), 1_000);
        j.claim(&claim("a"), 1_000).unwrap();
        j.claim(&claim("b"), 1_000).unwrap();
        j.close(1_001);
        drop(j);
        let j = open(dir.path(), 2_000);
        assert_eq!(j.claim(&claim("a"), 2_000), Err(ClaimError::Replayed));
        assert_eq!(j.claim(&claim("b"), 2_000), Err(ClaimError::Replayed));
        assert_eq!(j.claim(&claim("c"), 2_000), Ok(()));
        // Expired ones are dropped at compaction and accepted again.
        j.close(2_001);
        drop(j);
        let j = open(dir.path(), 70_000);
        assert_eq!(j.guard().len(), 0);
        assert_eq!(j.claim(&claim("a"), 70_000), Ok(()));
    }

    #[test]
    fn a_killed_process_loses_nothing_and_is_not_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), 1_000);
        j.claim(&claim("a"), 1_000).unwrap();
        // No close: as after `kill -9` (same boot), the appended record is all there is.
        std::mem::forget(j);
        let j = open(dir.path(), 1_500);
        assert_eq!(j.claim(&claim("a"), 1_500), Err(ClaimError::Replayed));
        assert_eq!(j.claim(&claim("b"), 1_500), Ok(()));
    }

    #[test]
    fn an_unclean_stop_under_another_boot_fences_until_every_nonce_expired() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), 1_000);
        j.claim(&claim("a"), 1_000).unwrap();
        std::mem::forget(j);
        // Pretend the machine rebooted: rewrite the open record's boot id.
        let path = dir.path().join(FILE);
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(bytes[HEADER], TAG_OPEN);
        bytes[HEADER + 1] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let j = open(dir.path(), 2_000);
        assert!(matches!(
            j.claim(&claim("new"), 2_000),
            Err(ClaimError::Fenced { .. })
        ));
        assert_eq!(j.metrics().losses.load(Ordering::Relaxed), 1);
        // A graceful restart inside the fence keeps it.
        j.close(2_001);
        drop(j);
        let j = open(dir.path(), 30_000);
        assert!(matches!(
            j.claim(&claim("new"), 30_000),
            Err(ClaimError::Fenced {
                remaining_ms: 32_001
            })
        ));
        assert_eq!(j.claim(&claim("new"), 62_001), Ok(()));
    }

    #[test]
    fn a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), 1_000);
        j.claim(&claim("a"), 1_000).unwrap();
        std::mem::forget(j);
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[TAG_NONCE, 1, 2, 3]).unwrap();
        let j = open(dir.path(), 1_100);
        assert_eq!(j.claim(&claim("a"), 1_100), Err(ClaimError::Replayed));
    }

    #[test]
    fn compaction_keeps_live_nonces_only() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), 0);
        for i in 0..50 {
            j.claim(&claim(&format!("old{i}")), 0).unwrap();
        }
        j.claim(&claim("young"), 50_000).unwrap();
        {
            let mut w = j.inner.writer.lock().unwrap();
            j.inner.compact(&mut w, 60_001).unwrap();
        }
        let len = fs::metadata(dir.path().join(FILE)).unwrap().len() as usize;
        assert_eq!(len, HEADER + RECORD * 2, "open record plus one live nonce");
        j.claim(&claim("after"), 60_002).unwrap();
        std::mem::forget(j);
        let j = open(dir.path(), 60_003);
        assert_eq!(j.claim(&claim("young"), 60_003), Err(ClaimError::Replayed));
        assert_eq!(j.claim(&claim("after"), 60_003), Err(ClaimError::Replayed));
    }
}
