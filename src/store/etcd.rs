//! The etcd engine: the store's source of truth in etcd, shared by every replica, with
//! a local sled copy of it (the *view*) that every read, and the check path's index,
//! is served from.
//!
//! Owns: the key layout in etcd (`<prefix>/<tree>/<key>` per record, `<prefix>/meta/…`
//! for the schema version and master-key check, `<prefix>/rev`), following etcd into the
//! view (list at a revision, watch from the next one, resume from the last applied
//! revision, relist and apply only the differences when history is compacted or etcd
//! was reset), the periodic anti-entropy comparison, and committing writes.
//!
//! A write runs the store's usual transaction closure against the view, staged and
//! rolled back locally, and sends what it would have written to etcd as one txn that
//! also rewrites `<prefix>/rev` and compares its mod revision with the one the view had:
//! so a txn commits only if no other replica wrote since the view the closure read, and
//! every invariant the closure checked (unique AppKey, names, routes, parents, cascades)
//! holds in etcd as it did in the view; audit ids stay dense and ordered (`rev` holds the
//! last one). A lost race waits for the view to catch up and runs the closure again.
//! The write returns once the view has applied its revision, so a replica reads its
//! own writes.
//!
//! Every revision the view applies is reported as `Change`s (`changes`), which feed the
//! index on every replica, the one that wrote included.
//!
//! When etcd is unreachable the view and the index keep serving checks; writes fail
//! with `Unavailable` after the time limit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, WatchOptions,
};
use sled::Transactional;
use tokio::sync::{mpsc, watch};

use super::schema::{self, Tree};
use super::seal::Sealer;
use super::{Change, Engine, StagedOp as Op, StoreError};

mod reach;

/// How `--store etcd` reaches etcd. `Debug` leaves the password out.
#[derive(Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// Every key keygate writes starts with it (`/keygate/v1`).
    pub prefix: String,
    /// `(user, password)` for etcd's authentication.
    pub user: Option<(String, String)>,
    /// PEM CA bundle that etcd's certificate must chain to (enables TLS).
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Time limit of one request to etcd (a write, a page of a list).
    pub timeout: Duration,
    /// The cluster's `--max-txn-ops`: what one write may hold (`Store::grants_per_write`).
    pub max_txn_ops: usize,
    /// How often the view is compared with a fresh list of etcd (0: never).
    pub anti_entropy: Duration,
}

impl EtcdSettings {
    /// `--etcd-user` with its password, which only `KEYGATE_ETCD_PASSWORD` carries.
    pub fn user_from_env(user: Option<String>) -> Option<(String, String)> {
        user.map(|u| {
            (
                u,
                std::env::var("KEYGATE_ETCD_PASSWORD").unwrap_or_default(),
            )
        })
    }
}

impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("timeout", &self.timeout)
            .field("anti_entropy", &self.anti_entropy)
            .finish()
    }
}

/// Counters for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct EtcdMetrics {
    pub watch_restarts: AtomicU64,
    pub relists: AtomicU64,
    /// Records the anti-entropy comparison found different and repaired.
    pub repairs: AtomicU64,
    /// Writes that lost a race with another replica and ran again.
    pub write_retries: AtomicU64,
    /// Transactions that committed admin writes, and the writes they carried.
    pub write_batches: AtomicU64,
    pub batched_writes: AtomicU64,
}

/// The meta keys of the view that say where it stands.
const VIEW_REVISION: &[u8] = b"etcd_applied_revision";
const VIEW_REV_MOD: &[u8] = b"etcd_rev_mod_revision";
const VIEW_PREFIX: &[u8] = b"etcd_prefix";

/// One key's change in a watched revision.
struct Event {
    key: Vec<u8>,
    /// `None`: deleted.
    value: Option<Vec<u8>>,
    mod_revision: i64,
}

pub struct Remote {
    client: Client,
    prefix: Vec<u8>,
    settings: EtcdSettings,
    /// The revision the view has applied.
    applied: watch::Sender<i64>,
    /// The mod revision of `<prefix>/rev` in the view (0: absent): what a write compares.
    rev_mod: AtomicI64,
    last_contact_ms: AtomicI64,
    /// Applying a watched revision and applying a relist never interleave.
    apply_lock: StdMutex<()>,
    changes: mpsc::UnboundedSender<Vec<Change>>,
    pub(crate) metrics: EtcdMetrics,
}

/// etcd refuses a txn over its `--max-txn-ops` (128 by default) or `--max-request-bytes`:
/// the write can never succeed as it is, so it is not `Unavailable` (retry) but a
/// precondition the operator can change.
fn too_big(e: etcd_client::Error, ops: usize) -> StoreError {
    let text = e.to_string();
    if text.contains("too many operations in txn request") || text.contains("request is too large")
    {
        return StoreError::FailedPrecondition(format!(
            "this write is one etcd transaction of {ops} operations, over what etcd accepts \
             ({text}): keygate's --etcd-max-txn-ops must not exceed the cluster's \
             --max-txn-ops (cascades and batches are split to fit it, about three \
             operations per grant), and a write this large may need a larger \
             --max-request-bytes"
        ));
    }
    unavailable(e)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

fn now_ms() -> i64 {
    crate::clock::Clock::now_ms(&crate::clock::SystemClock)
}

fn i64_of(v: Option<sled::IVec>) -> i64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, i64::from_be_bytes)
}

/// The smallest key after every key starting with `p` (etcd's range end for a prefix).
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The entity a record key names, for the index (index trees carry none of their own).
fn change_of(tree: Tree, key: &[u8]) -> Option<Change> {
    let id = || String::from_utf8_lossy(key).into_owned();
    match tree {
        Tree::Apps => Some(Change::App(id())),
        Tree::Keys => Some(Change::Key(id())),
        Tree::Groups => Some(Change::Group(id())),
        Tree::Apis => Some(Change::Api(id())),
        Tree::Grants => Some(Change::Grant(id())),
        _ => None,
    }
}

/// A record whose view differs from etcd: its tree, key and etcd's value (`None`:
/// etcd has none).
type Difference = (Tree, Vec<u8>, Option<Vec<u8>>);

/// Where a key of ours belongs in the view.
enum Slot {
    Record(Tree, Vec<u8>),
    Meta,
    Rev,
}

impl Remote {
    fn key(&self, tree: Tree, k: &[u8]) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.push(b'/');
        out.extend_from_slice(tree.name().as_bytes());
        out.push(b'/');
        out.extend_from_slice(k);
        out
    }

    fn meta_key(&self, name: &[u8]) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.extend_from_slice(b"/meta/");
        out.extend_from_slice(name);
        out
    }

    fn rev_key(&self) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.extend_from_slice(b"/rev");
        out
    }

    fn range_start(&self) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.push(b'/');
        out
    }

    fn slot(&self, key: &[u8]) -> Option<Slot> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(b"/")?;
        if rest == b"rev" {
            return Some(Slot::Rev);
        }
        if rest.starts_with(b"meta/") {
            return Some(Slot::Meta);
        }
        let slash = rest.iter().position(|b| *b == b'/')?;
        let (name, k) = (&rest[..slash], &rest[slash + 1..]);
        let tree = Tree::ALL
            .into_iter()
            .find(|t| t.name().as_bytes() == name)?;
        Some(Slot::Record(tree, k.to_vec()))
    }

    fn new(client: Client, settings: EtcdSettings) -> (Self, mpsc::UnboundedReceiver<Vec<Change>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let remote = Remote {
            client,
            prefix: settings.prefix.trim_end_matches('/').as_bytes().to_vec(),
            settings,
            applied: watch::Sender::new(0),
            rev_mod: AtomicI64::new(0),
            last_contact_ms: AtomicI64::new(0),
            apply_lock: StdMutex::new(()),
            changes: tx,
            metrics: EtcdMetrics::default(),
        };
        (remote, rx)
    }

    fn contact(&self) {
        self.last_contact_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Connects, checks the schema and master key against etcd's copy (writing them on
    /// a fresh prefix), brings the view up to date and starts following etcd.
    pub(crate) async fn start(
        settings: EtcdSettings,
        engine: Arc<Engine>,
        sealer: &Sealer,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<Vec<Change>>), StoreError> {
        let client = connect(&settings).await?;
        let (remote, rx) = Remote::new(client, settings);
        let remote = Arc::new(remote);
        remote.check_view_prefix(&engine)?;
        remote.check_meta(&engine, sealer).await?;
        let applied = i64_of(engine.meta.get(VIEW_REVISION)?);
        remote
            .rev_mod
            .store(i64_of(engine.meta.get(VIEW_REV_MOD)?), Ordering::Relaxed);
        remote.applied.send_replace(applied);
        // A view from an earlier run resumes from its revision (the watch relists if
        // etcd compacted past it); an empty one lists everything first.
        if applied == 0 {
            remote.load_all(&engine).await?;
        }
        tokio::spawn(remote.clone().follow(engine.clone()));
        if applied != 0 {
            remote.catch_up(applied).await?;
        }
        if !remote.settings.anti_entropy.is_zero() {
            tokio::spawn(remote.clone().anti_entropy(engine));
        }
        Ok((remote, rx))
    }

    /// Before a resumed view serves: waits until it has every write etcd had when the
    /// replica started. A replica killed with `kill -9` may have acknowledged writes its
    /// view had not yet put on disk, and anything written while it was down is missing
    /// too; serving first would answer from the past (a revoked key still allowed).
    /// Every write moves `<prefix>/rev`, so its mod revision is the mark. Past the time
    /// limit the view serves as it is and says so (`/readyz` has its age).
    async fn catch_up(&self, applied: i64) -> Result<(), StoreError> {
        let r = self.get(self.rev_key(), None).await?;
        let latest = r.kvs().first().map_or(0, |kv| kv.mod_revision());
        if latest <= applied {
            return Ok(());
        }
        let mut rx = self.applied.subscribe();
        let limit = self.settings.timeout * 5;
        if tokio::time::timeout(limit, rx.wait_for(|a| *a >= latest))
            .await
            .is_err()
        {
            tracing::warn!(
                view_revision = *self.applied.borrow(),
                etcd_revision = latest,
                "the local view has not caught up with etcd within {} s; serving from it as it is",
                limit.as_secs()
            );
        } else {
            tracing::info!(
                from = applied,
                to = latest,
                "local view caught up with etcd"
            );
        }
        Ok(())
    }

    /// A view made for another prefix (or by a sled-mode store) is not this one's.
    fn check_view_prefix(&self, engine: &Engine) -> Result<(), StoreError> {
        match engine.meta.get(VIEW_PREFIX)? {
            Some(p) if p.as_ref() == self.prefix.as_slice() => Ok(()),
            Some(p) => Err(StoreError::FailedPrecondition(format!(
                "the local view in this data dir follows etcd prefix '{}', not '{}'; use another --data-dir",
                String::from_utf8_lossy(&p),
                String::from_utf8_lossy(&self.prefix)
            ))),
            None => {
                let empty = engine.trees.iter().all(|t| t.is_empty());
                if !empty {
                    return Err(StoreError::FailedPrecondition(
                        "this data dir holds a sled store; --store etcd needs its own --data-dir \
                         (copy a sled store into etcd with `keygate copy-store --direction to-etcd`)"
                            .into(),
                    ));
                }
                engine.meta.insert(VIEW_PREFIX, self.prefix.as_slice())?;
                Ok(())
            }
        }
    }

    /// The schema version and master-key check live in etcd; every replica checks its
    /// master key against them at start. The first replica on a fresh prefix writes them.
    async fn check_meta(&self, engine: &Engine, sealer: &Sealer) -> Result<(), StoreError> {
        let names: [&[u8]; 2] = [schema::META_SCHEMA, schema::META_KEY_CHECK];
        for attempt in 0..2 {
            let mut found = Vec::new();
            for name in names {
                let r = self.get(self.meta_key(name), None).await?;
                found.push(r.kvs().first().map(|kv| kv.value().to_vec()));
            }
            if found.iter().all(Option::is_some) {
                for (name, v) in names.iter().zip(&found) {
                    if let Some(v) = v {
                        engine.meta.insert(name, v.as_slice())?;
                    }
                }
                return schema::check_meta(&engine.meta, sealer, false);
            }
            if attempt == 1 {
                break;
            }
            // Fresh prefix: write ours, unless another replica just did.
            let _ = engine.meta.remove(schema::META_SCHEMA)?;
            let _ = engine.meta.remove(schema::META_KEY_CHECK)?;
            schema::check_meta(&engine.meta, sealer, true)?;
            let mut ops = Vec::new();
            for name in names {
                let v = engine
                    .meta
                    .get(name)?
                    .map(|v| v.to_vec())
                    .unwrap_or_default();
                ops.push(TxnOp::put(self.meta_key(name), v, None));
            }
            let txn = Txn::new()
                .when([Compare::create_revision(
                    self.meta_key(schema::META_SCHEMA),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(ops);
            // Guarded by "no schema yet", so a second application is refused, and the
            // read above, run again, tells what etcd holds.
            self.again(reach::passing, || {
                let (mut kv, txn) = (self.client.kv_client(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        }
        Err(StoreError::corrupt(
            "meta",
            "etcd holds only part of keygate's meta records",
        ))
    }

    /// Reads every key under the prefix at one revision (`at`, else the current one),
    /// page by page, handing each page to `each`; returns the revision read at.
    async fn for_each_page(
        &self,
        at: Option<i64>,
        mut each: impl FnMut(&[etcd_client::KeyValue]) -> Result<(), StoreError>,
    ) -> Result<i64, StoreError> {
        const PAGE: i64 = 5_000;
        let end = prefix_end(&self.prefix);
        let mut start = self.range_start();
        let mut revision = at.unwrap_or(0);
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let r = self.get(start.clone(), Some(opts)).await?;
            if revision == 0 {
                revision = r.header().map_or(0, |h| h.revision());
            }
            each(r.kvs())?;
            match r.kvs().last() {
                Some(last) if r.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(revision)
    }

    /// Every key under the prefix at one revision: (key, value, mod revision).
    async fn list(
        &self,
        at: Option<i64>,
    ) -> Result<(i64, Vec<(Vec<u8>, Vec<u8>, i64)>), StoreError> {
        let mut out = Vec::new();
        let revision = self
            .for_each_page(at, |kvs| {
                out.extend(
                    kvs.iter()
                        .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision())),
                );
                Ok(())
            })
            .await?;
        Ok((revision, out))
    }

    /// Fills an empty view from etcd, page by page as they arrive (a first start: no
    /// differences to compute, and no copy of the whole data set in memory).
    async fn load_all(&self, engine: &Engine) -> Result<(), StoreError> {
        let mut rev_mod = 0;
        let revision = self
            .for_each_page(None, |kvs| {
                let mut batches: Vec<sled::Batch> =
                    Tree::ALL.iter().map(|_| sled::Batch::default()).collect();
                for kv in kvs {
                    match self.slot(kv.key()) {
                        Some(Slot::Record(tree, k)) => batches[tree.idx()].insert(k, kv.value()),
                        Some(Slot::Rev) => rev_mod = kv.mod_revision(),
                        Some(Slot::Meta) | None => {}
                    }
                }
                for (tree, batch) in Tree::ALL.into_iter().zip(batches) {
                    engine.trees[tree.idx()].apply_batch(batch)?;
                }
                Ok(())
            })
            .await?;
        self.metrics.relists.fetch_add(1, Ordering::Relaxed);
        engine.meta.insert(VIEW_REV_MOD, &rev_mod.to_be_bytes())?;
        engine.meta.insert(VIEW_REVISION, &revision.to_be_bytes())?;
        self.advanced(engine, revision, rev_mod, Vec::new())
    }

    /// Lists etcd and makes the view equal to it, applying only the differences;
    /// returns how many records differed. For a first start, a compacted watch, an etcd
    /// restored from backup, and anti-entropy.
    ///
    /// The list is read at the revision the view had applied (or the current one when
    /// that is compacted), without holding up the watch. If the watch applied more
    /// meanwhile, the records that differ are read again at the view's new revision
    /// before anything is applied, so a relist never takes the view back in time.
    async fn relist(&self, engine: &Engine) -> Result<usize, StoreError> {
        const ROUNDS: usize = 5;
        self.metrics.relists.fetch_add(1, Ordering::Relaxed);
        let at = *self.applied.borrow();
        let (mut revision, kvs) = match self.list((at > 0).then_some(at)).await {
            Ok(listed) => listed,
            // Compacted past the view (or etcd was reset): the current state.
            Err(_) if at > 0 => self.list(None).await?,
            Err(e) => return Err(e),
        };
        let mut want: Vec<BTreeMap<Vec<u8>, Vec<u8>>> =
            Tree::ALL.iter().map(|_| BTreeMap::new()).collect();
        let mut rev_mod = 0;
        for (key, value, mod_revision) in kvs {
            match self.slot(&key) {
                Some(Slot::Record(tree, k)) => {
                    want[tree.idx()].insert(k, value);
                }
                Some(Slot::Rev) => rev_mod = mod_revision,
                Some(Slot::Meta) | None => {}
            }
        }
        for _ in 0..ROUNDS {
            let differing = {
                let _apply = self
                    .apply_lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let differing = self.differences(engine, &want)?;
                let now = *self.applied.borrow();
                if now <= revision {
                    return self.install(engine, differing, revision, rev_mod);
                }
                revision = now;
                differing
            };
            // The watch moved on: read what differs as of the view's revision.
            for (tree, k, _) in &differing {
                let r = self
                    .get(
                        self.key(*tree, k),
                        Some(GetOptions::new().with_revision(revision)),
                    )
                    .await?;
                match r.kvs().first() {
                    Some(found) => want[tree.idx()].insert(k.clone(), found.value().to_vec()),
                    None => want[tree.idx()].remove(k),
                };
            }
            let r = self
                .get(
                    self.rev_key(),
                    Some(GetOptions::new().with_revision(revision)),
                )
                .await?;
            rev_mod = r.kvs().first().map_or(0, |kv| kv.mod_revision());
        }
        Err(unavailable(
            "the view kept moving during a relist; will retry",
        ))
    }

    /// What the view holds that `want` does not: (tree, key, the wanted value).
    fn differences(
        &self,
        engine: &Engine,
        want: &[BTreeMap<Vec<u8>, Vec<u8>>],
    ) -> Result<Vec<Difference>, StoreError> {
        let mut out = Vec::new();
        for tree in Tree::ALL {
            let local = &engine.trees[tree.idx()];
            let wanted = &want[tree.idx()];
            for item in local.iter() {
                let (k, v) = item?;
                match wanted.get(k.as_ref()) {
                    Some(w) if w.as_slice() == v.as_ref() => {}
                    w => out.push((tree, k.to_vec(), w.cloned())),
                }
            }
            for (k, w) in wanted {
                if !local.contains_key(k)? {
                    out.push((tree, k.clone(), Some(w.clone())));
                }
            }
        }
        Ok(out)
    }

    /// Applies a relist's differences and its revision (the apply lock held).
    fn install(
        &self,
        engine: &Engine,
        differing: Vec<Difference>,
        revision: i64,
        rev_mod: i64,
    ) -> Result<usize, StoreError> {
        let mut changes = Vec::new();
        let mut batches: Vec<sled::Batch> =
            Tree::ALL.iter().map(|_| sled::Batch::default()).collect();
        let count = differing.len();
        for (tree, k, w) in differing {
            changes.extend(change_of(tree, &k));
            match w {
                Some(v) => batches[tree.idx()].insert(k, v),
                None => batches[tree.idx()].remove(k),
            }
        }
        for (tree, batch) in Tree::ALL.into_iter().zip(batches) {
            engine.trees[tree.idx()].apply_batch(batch)?;
        }
        engine.meta.insert(VIEW_REV_MOD, &rev_mod.to_be_bytes())?;
        engine.meta.insert(VIEW_REVISION, &revision.to_be_bytes())?;
        self.advanced(engine, revision, rev_mod, changes)?;
        Ok(count)
    }

    /// Applies one watched revision (or several, in order) to the view atomically.
    fn apply(&self, engine: &Engine, events: &[Event]) -> Result<(), StoreError> {
        let Some(last) = events.last().map(|e| e.mod_revision) else {
            return Ok(());
        };
        let _apply = self
            .apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let applied = *self.applied.borrow();
        if last <= applied {
            return Ok(());
        }
        let mut changes = Vec::new();
        let mut rev_mod = self.rev_mod.load(Ordering::SeqCst);
        for e in events.iter().filter(|e| e.mod_revision > applied) {
            if matches!(self.slot(&e.key), Some(Slot::Rev)) {
                rev_mod = if e.value.is_some() { e.mod_revision } else { 0 };
            }
        }
        let mut all: Vec<sled::Tree> = engine.trees.clone();
        all.push(engine.meta.clone());
        let meta_idx = all.len() - 1;
        all.as_slice()
            .transaction(|t| {
                for e in events.iter().filter(|e| e.mod_revision > applied) {
                    match self.slot(&e.key) {
                        Some(Slot::Record(tree, k)) => {
                            match &e.value {
                                Some(v) => t[tree.idx()].insert(k.as_slice(), v.as_slice())?,
                                None => t[tree.idx()].remove(k.as_slice())?,
                            };
                        }
                        Some(Slot::Rev) => {
                            t[meta_idx].insert(VIEW_REV_MOD, &rev_mod.to_be_bytes())?;
                        }
                        Some(Slot::Meta) | None => {}
                    }
                }
                t[meta_idx].insert(VIEW_REVISION, &last.to_be_bytes())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::corrupt("view", "applying a watched revision aborted")
                }
            })?;
        for e in events.iter().filter(|e| e.mod_revision > applied) {
            if let Some(Slot::Record(tree, k)) = self.slot(&e.key) {
                changes.extend(change_of(tree, &k));
            }
        }
        self.advanced(engine, last, rev_mod, changes)
    }

    /// After the view durably holds `revision` (its meta records written): the next
    /// audit id, the `rev` a write compares, waiters on the revision, and the index.
    fn advanced(
        &self,
        engine: &Engine,
        revision: i64,
        rev_mod: i64,
        changes: Vec<Change>,
    ) -> Result<(), StoreError> {
        engine.refresh_audit_id()?;
        self.rev_mod.store(rev_mod, Ordering::SeqCst);
        self.applied.send_replace(revision);
        if !changes.is_empty() {
            let _ = self.changes.send(changes);
        }
        Ok(())
    }

    /// Follows etcd for as long as the process runs: watch from the revision after the
    /// last applied one; on a compacted or cancelled watch, relist; on an error, watch
    /// again (backing off from 100 ms to 2 s). Never from a revision read elsewhere.
    async fn follow(self: Arc<Self>, engine: Arc<Engine>) {
        let mut pause = Duration::from_millis(100);
        loop {
            let from = *self.applied.borrow() + 1;
            let opts = WatchOptions::new().with_prefix().with_start_revision(from);
            let mut watch_client = self.client.watch_client();
            match watch_client.watch(self.range_start(), Some(opts)).await {
                Ok(mut stream) => {
                    self.contact();
                    let mut progress = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tokio::select! {
                            _ = progress.tick() => {
                                if stream.request_progress().await.is_err() {
                                    break;
                                }
                            }
                            msg = stream.message() => match msg {
                                Ok(Some(resp)) => {
                                    self.contact();
                                    pause = Duration::from_millis(100);
                                    if resp.compact_revision() > 0 || resp.canceled() {
                                        tracing::warn!(compact_revision = resp.compact_revision(), reason = resp.cancel_reason(), "etcd watch cancelled (history compacted?); relisting");
                                        if let Err(error) = self.relist(&engine).await {
                                            tracing::warn!(%error, "relist failed; will retry");
                                        }
                                        break;
                                    }
                                    let events: Vec<Event> = resp
                                        .events()
                                        .iter()
                                        .filter_map(|e| {
                                            let kv = e.kv()?;
                                            Some(Event {
                                                key: kv.key().to_vec(),
                                                value: (e.event_type() == EventType::Put)
                                                    .then(|| kv.value().to_vec()),
                                                mod_revision: kv.mod_revision(),
                                            })
                                        })
                                        .collect();
                                    if let Err(error) = self.apply(&engine, &events) {
                                        tracing::error!(%error, "cannot apply a watched revision to the local view; relisting");
                                        let _ = self.relist(&engine).await;
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(error) => {
                                    tracing::warn!(%error, "etcd watch broke; watching again from the last applied revision");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, from, "cannot watch etcd; retrying");
                }
            }
            self.metrics.watch_restarts.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Compares the view with a fresh list every `anti_entropy`, repairing and counting
    /// what differs: a resumed watch can miss a delete (etcd-io/etcd#18089, etcd 3.4).
    async fn anti_entropy(self: Arc<Self>, engine: Arc<Engine>) {
        let mut tick = tokio::time::interval(self.settings.anti_entropy);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.relist(&engine).await {
                Ok(0) => {}
                Ok(n) => {
                    self.metrics.repairs.fetch_add(n as u64, Ordering::Relaxed);
                    tracing::warn!(
                        records = n,
                        "anti-entropy: the local view differed from etcd; repaired"
                    );
                }
                Err(error) => tracing::warn!(%error, "anti-entropy: cannot list etcd"),
            }
        }
    }

    /// The mod revision of `<prefix>/rev` as the view has it: what a write compares.
    pub(crate) fn view_rev_mod(&self) -> i64 {
        self.rev_mod.load(Ordering::SeqCst)
    }

    /// Commits `ops` (plus the new `rev`) if no other write landed since the view a
    /// write's closure read (`base_rev_mod`). `Ok(false)`: it lost the race.
    pub(crate) async fn commit(
        &self,
        base_rev_mod: i64,
        last_audit_id: u64,
        ops: &[Op],
    ) -> Result<bool, StoreError> {
        // etcd refuses a txn that names a key twice ("duplicate key given in txn
        // request"); a route freed and retaken, or two writes of one batch on the same
        // record, do. The txn applies atomically, so only each key's last op matters.
        let mut last = std::collections::HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let (Op::Put(tree, k, _) | Op::Del(tree, k)) = op;
            last.insert((*tree, k.as_slice()), i);
        }
        let mut txn_ops: Vec<TxnOp> = ops
            .iter()
            .enumerate()
            .filter(|(i, op)| {
                let (Op::Put(tree, k, _) | Op::Del(tree, k)) = op;
                last.get(&(*tree, k.as_slice())) == Some(i)
            })
            .map(|(_, op)| op)
            .map(|op| match op {
                Op::Put(tree, k, v) => TxnOp::put(self.key(*tree, k), v.clone(), None),
                Op::Del(tree, k) => TxnOp::delete(self.key(*tree, k), None),
            })
            .collect();
        txn_ops.push(TxnOp::put(
            self.rev_key(),
            last_audit_id.to_be_bytes().to_vec(),
            None,
        ));
        let guard = if base_rev_mod == 0 {
            Compare::create_revision(self.rev_key(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(self.rev_key(), CompareOp::Equal, base_rev_mod)
        };
        let ops_in_txn = txn_ops.len();
        let txn = Txn::new().when([guard]).and_then(txn_ops);
        let r = tokio::time::timeout(self.settings.timeout, self.txn(txn))
            .await
            .map_err(|_| {
                unavailable("the write timed out; it may or may not have committed: read it back")
            })?
            .map_err(|e| too_big(e, ops_in_txn))?;
        self.contact();
        if !r.succeeded() {
            self.metrics.write_retries.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let revision = r.header().map_or(0, |h| h.revision());
        self.wait_applied(revision).await;
        Ok(true)
    }

    /// Waits until the view has applied `revision` (bounded: the write is committed
    /// either way; the watch will bring it).
    pub(crate) async fn wait_applied(&self, revision: i64) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(self.settings.timeout, rx.wait_for(|r| *r >= revision)).await;
    }

    /// After a lost race: waits until the view moves past what the closure read.
    pub(crate) async fn wait_past(&self, rev_mod: i64) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(
            self.settings.timeout,
            rx.wait_for(|_| self.rev_mod.load(Ordering::SeqCst) != rev_mod),
        )
        .await;
    }

    /// The time limit of one request, and of a write's retries.
    pub(crate) fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// How many operations one write may stage (the `rev` update takes one more).
    pub(crate) fn max_staged_ops(&self) -> usize {
        self.settings.max_txn_ops.saturating_sub(1)
    }

    /// A read, within the time limit of one request, sent again while it fails in
    /// passing (`reach::passing`: a member down or an election); reads are idempotent.
    async fn get(
        &self,
        key: Vec<u8>,
        opts: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        let r = self
            .again(reach::passing, || {
                let (mut kv, key, opts) = (self.client.kv_client(), key.clone(), opts.clone());
                async move { kv.get(key, opts).await }
            })
            .await?;
        self.contact();
        Ok(r)
    }

    /// A transaction, sent again only while it fails before reaching a member: one
    /// that reached a member may have been applied, and its caller must read it back.
    /// Not bounded in time here: the caller's limit covers its read-back too.
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        let mut kv = self.client.kv_client();
        let mut attempt = 0;
        loop {
            match kv.txn(txn.clone()).await {
                Err(e) if reach::never_sent(&e) && attempt < 8 => {
                    self.back_off(attempt).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// Runs `send` until it succeeds, fails in a way `retry` does not pass, or the time
    /// limit of one request runs out (then the last error, or a timeout, stands).
    async fn again<T, F>(
        &self,
        retry: fn(&etcd_client::Error) -> bool,
        mut send: impl FnMut() -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let mut attempt = 0;
        let mut last = None;
        loop {
            match tokio::time::timeout_at(deadline, send()).await {
                Err(_) => {
                    return Err(last
                        .map_or_else(|| unavailable("etcd did not answer in time"), unavailable));
                }
                Ok(Err(e)) if retry(&e) && tokio::time::Instant::now() < deadline => {
                    last = Some(e);
                    self.back_off(attempt).await;
                    attempt += 1;
                }
                Ok(r) => return r.map_err(unavailable),
            }
        }
    }

    /// A random pause after the `attempt`-th lost race: up to 1 ms × 2^attempt, at
    /// most 32 ms.
    pub(crate) async fn back_off(&self, attempt: u32) {
        let mut r = [0u8; 2];
        let _ = getrandom::getrandom(&mut r);
        let cap_us = 1000u64 << attempt.min(5);
        let us = u64::from(u16::from_le_bytes(r)) % cap_us;
        tokio::time::sleep(Duration::from_micros(us)).await;
    }

    /// The view's revision and how long ago etcd last answered (for `/readyz`).
    pub fn position(&self) -> (i64, Option<i64>) {
        let contact = self.last_contact_ms.load(Ordering::Relaxed);
        (
            *self.applied.borrow(),
            (contact > 0).then(|| now_ms() - contact),
        )
    }
}

/// A client for `settings`: every endpoint, the time limits, "require leader" (a member
/// cut off from the majority keeps a watch silent forever unless the client requires a
/// leader), keepalive pings every 5 s (they find a hung member), user and TLS.
async fn connect(settings: &EtcdSettings) -> Result<Client, StoreError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(settings.timeout)
        .with_timeout(settings.timeout)
        .with_require_leader(true)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if let Some((user, password)) = &settings.user {
        opts = opts.with_user(user.clone(), password.clone());
    }
    if settings.ca.is_some() || settings.client_cert.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &settings.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| StoreError::Unavailable(format!("etcd CA {}: {e}", ca.display())))?;
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &settings.client_cert {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| {
                    StoreError::Unavailable(format!("etcd client certificate {}: {e}", p.display()))
                })
            };
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(tls);
    }
    Client::connect(settings.endpoints.clone(), Some(opts))
        .await
        .map_err(unavailable)
}

/// `keygate copy-store --to-etcd`: copies a sled store (a data dir's `db`, its service
/// stopped) into an empty etcd prefix. Secrets stay sealed under the same master key,
/// which the replicas then need. The meta records go first and claim the prefix (a
/// second copy, or a replica started meanwhile, finds it taken); `rev` goes last.
/// Start the replicas once it has returned. Returns the records copied.
pub async fn copy_sled_to_etcd(
    store: &super::Store,
    settings: &EtcdSettings,
) -> Result<u64, StoreError> {
    const CHUNK: usize = 100;
    let engine = store.open_engine()?;
    let (remote, _changes) = Remote::new(connect(settings).await?, settings.clone());
    let taken = remote
        .get(
            remote.range_start(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    if taken.count() > 0 {
        return Err(StoreError::FailedPrecondition(format!(
            "etcd prefix {} already holds {} keys; copy into an empty prefix",
            settings.prefix,
            taken.count()
        )));
    }
    let meta_key = |name: &[u8]| remote.meta_key(name);
    let mut meta_ops = Vec::new();
    for name in [schema::META_SCHEMA, schema::META_KEY_CHECK] {
        let v = engine
            .meta
            .get(name)?
            .ok_or_else(|| StoreError::corrupt("meta", "the sled store has no meta records"))?;
        meta_ops.push(TxnOp::put(meta_key(name), v.to_vec(), None));
    }
    let claimed = remote
        .txn(
            Txn::new()
                .when([Compare::create_revision(
                    meta_key(schema::META_SCHEMA),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(meta_ops),
        )
        .await
        .map_err(unavailable)?;
    if !claimed.succeeded() {
        return Err(StoreError::FailedPrecondition(format!(
            "etcd prefix {} was claimed by someone else meanwhile",
            settings.prefix
        )));
    }
    let mut copied = 0u64;
    let mut ops = Vec::with_capacity(CHUNK);
    for tree in Tree::ALL {
        for item in engine.trees[tree.idx()].iter() {
            let (k, v) = item?;
            ops.push(TxnOp::put(remote.key(tree, &k), v.to_vec(), None));
            copied += 1;
            if ops.len() == CHUNK {
                remote
                    .txn(Txn::new().and_then(std::mem::take(&mut ops)))
                    .await
                    .map_err(unavailable)?;
            }
        }
    }
    ops.push(TxnOp::put(
        remote.rev_key(),
        engine.last_audit_id()?.to_be_bytes().to_vec(),
        None,
    ));
    remote
        .txn(Txn::new().and_then(ops))
        .await
        .map_err(unavailable)?;
    Ok(copied)
}

/// `keygate copy-store --from-etcd`: fills `store` (a fresh sled store, opened with the
/// master key the etcd data was sealed under) from etcd. The key is checked against
/// etcd's key-check record first. Returns the records copied.
pub async fn copy_etcd_to_sled(
    store: &super::Store,
    sealer: &Sealer,
    settings: &EtcdSettings,
) -> Result<u64, StoreError> {
    let engine = store.open_engine()?;
    if engine.trees.iter().any(|t| !t.is_empty()) {
        return Err(StoreError::FailedPrecondition(
            "the target data dir already holds a store; copy into an empty one".into(),
        ));
    }
    let (remote, _changes) = Remote::new(connect(settings).await?, settings.clone());
    let present = remote
        .get(remote.meta_key(schema::META_KEY_CHECK), None)
        .await?;
    if present.kvs().is_empty() {
        return Err(StoreError::FailedPrecondition(format!(
            "etcd prefix {} holds no keygate store",
            settings.prefix
        )));
    }
    remote.check_meta(&engine, sealer).await?;
    let (_, kvs) = remote.list(None).await?;
    let mut copied = 0u64;
    for (key, value, _) in kvs {
        if let Some(Slot::Record(tree, k)) = remote.slot(&key) {
            engine.trees[tree.idx()].insert(k, value)?;
            copied += 1;
        }
    }
    engine.refresh_audit_id()?;
    store.flush().await?;
    Ok(copied)
}
