//! The store: typed operations over sled, the source of truth.
//!
//! Owns: every write (one sled transaction across all trees, the audit record inside
//! it, flushed before returning so an acknowledged write survives `kill -9`), every
//! admin read, id and credential generation, secret sealing, and recovery from a
//! storage error (the engine is taken out of service and reopened from disk, see
//! `Store::write`). Callers see model types, `StoreError` and `Change`s; sled's types
//! appear only in this module tree and in `StoreError::Db`.

pub mod backup;
pub mod codec;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod rotate;
pub mod schema;
pub mod seal;

pub mod apply;
#[cfg(feature = "etcd")]
mod batch;
mod cascade;
mod commit;
mod convert;
mod grants;
mod ops;
pub mod principals;
pub mod requests;
mod settings;
pub mod stages;
mod summary;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::clock::Clock;
use codec::CodecError;
use schema::Tree;
use seal::{SealError, Sealer};

pub use grants::{BatchGrants, GrantPatch, Reach};
pub use ops::{
    ApiPatch, AppFilter, AppPatch, GrantFilter, GroupPatch, KeyPatch, NewApp, NewKey, Page,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} '{id}' not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// The store's own check of who may decide what (a permission request's item
    /// of another owner's target).
    #[error("{0}")]
    PermissionDenied(String),
    /// A declarative apply whose file cannot be made true (`apply`): `field` is the
    /// entry's path in the file, e.g. `grants[3].api`.
    #[error("{field}: {message}")]
    Plan { field: String, message: String },
    #[error("storage: {0}")]
    Db(#[from] sled::Error),
    /// After a storage error, until the store has reopened from disk.
    #[error("storage: the store is reopening after a storage error; retry shortly")]
    Reopening,
    #[error("corrupt data in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error("the data dir was written with schema version {found}; this release reads {expected}")]
    SchemaMismatch { found: u32, expected: u32 },
    #[error("the master key does not open this data dir's secrets")]
    WrongMasterKey,
    #[error("secret sealing: {0}")]
    Seal(#[from] SealError),
    /// The shared store (etcd) did not answer, or the write's outcome is unknown.
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    pub(crate) fn corrupt(tree: &'static str, detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            tree,
            detail: detail.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_owned(),
        }
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Db(e),
        }
    }
}

/// What a committed write touched, so the in-memory index can reload exactly that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    App(String),
    Key(String),
    Group(String),
    Api(String),
    Grant(String),
}

/// Errors inside a transaction closure: aborts carry a `StoreError`.
type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// The tree of key pairs' last use (not one of `Tree::ALL`: not replicated, not in
/// backups; losing it loses only these times).
const KEY_USAGE: &str = "key_usage";

/// The audit id and time of one write, taken under the writer lock so that audit ids
/// follow commit order and are dense: the id is used up only by a write that committed
/// its audit record, so a gap in the log would mean a lost event, never a failed write.
pub(crate) struct Stamp {
    pub(crate) audit_id: u64,
    pub(crate) now_ms: i64,
}

/// What a write reads outside its transaction, for deciding whether it may join a
/// round with writes pending (etcd: `batch`); sled runs one write at a time.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) enum Reads<'a> {
    /// Nothing: every read goes through the transaction, which sees the round.
    Nothing,
    /// Keys of these trees under these ids (`join(&[id, ""])` prefixes).
    Under(&'a [(Tree, &'a str)]),
    /// Unknown: it must run with no write pending.
    Anything,
}

/// A write a transaction closure made, recorded to be sent to a shared engine (etcd).
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) enum StagedOp {
    Put(Tree, Vec<u8>, Vec<u8>),
    Del(Tree, Vec<u8>),
}

/// The transactional view of every tree, handed to write closures.
pub(crate) struct Tx<'a> {
    trees: &'a [TransactionalTree],
    pub(crate) stamp: &'a Stamp,
    /// With etcd: every write is also recorded here, to be sent to etcd (the local
    /// transaction is then rolled back; the view gets it back through the watch).
    staged: Option<&'a std::cell::RefCell<Vec<StagedOp>>>,
}

impl Tx<'_> {
    fn t(&self, tree: Tree) -> &TransactionalTree {
        // Built from `Tree::ALL` in order, so every index is present.
        &self.trees[tree.idx()]
    }

    fn get<M: prost::Message + Default>(&self, tree: Tree, key: &[u8]) -> TxResult<Option<M>> {
        match self.t(tree).get(key)? {
            None => Ok(None),
            Some(v) => codec::decode(&v)
                .map(Some)
                .or_else(|e: CodecError| abort(StoreError::corrupt(tree.name(), e.to_string()))),
        }
    }

    fn put<M: prost::Message>(&self, tree: Tree, key: &[u8], record: &M) -> TxResult<()> {
        self.set(tree, key, &codec::encode(record))
    }

    fn exists(&self, tree: Tree, key: &[u8]) -> TxResult<bool> {
        Ok(self.t(tree).get(key)?.is_some())
    }

    fn get_str(&self, tree: Tree, key: &[u8]) -> TxResult<Option<String>> {
        Ok(self
            .t(tree)
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn set(&self, tree: Tree, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.t(tree).insert(key, value)?;
        if let Some(staged) = self.staged {
            staged
                .borrow_mut()
                .push(StagedOp::Put(tree, key.to_vec(), value.to_vec()));
        }
        Ok(())
    }

    fn del(&self, tree: Tree, key: &[u8]) -> TxResult<()> {
        self.t(tree).remove(key)?;
        if let Some(staged) = self.staged {
            staged.borrow_mut().push(StagedOp::Del(tree, key.to_vec()));
        }
        Ok(())
    }
}

/// The sled database under the store: handles to every tree and the flusher. Swapped
/// out whole when the store reopens after a storage error.
pub(crate) struct Engine {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    meta: sled::Tree,
    /// The next audit id: one past the last audit record on disk when opened, then
    /// advanced by each write that committed one (under the writer lock).
    next_audit_id: std::sync::atomic::AtomicU64,
    /// Flushes for every writer (group commit).
    flusher: commit::GroupCommit,
}

/// sled's page cache. Checks read the in-memory index, never sled; sled serves the
/// admin API's reads, the index's re-reads of what a write changed (just written, so
/// cached) and the walk at start, which reads each page once. sled's default, 1 GiB,
/// filled during that walk and held for nothing a check needs; the OS page cache
/// still holds the files.
const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl Engine {
    /// Opens sled in `dir` and checks the schema version and that `sealer`'s master
    /// key opens the store's secrets (writing both on a fresh store).
    fn open(dir: &Path, sealer: &Sealer) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let meta = db.open_tree("meta")?;
        let fresh = meta.is_empty() && trees.iter().all(|t| t.is_empty());
        schema::check_meta(&meta, sealer, fresh)?;
        db.flush()?;
        let next_audit_id = match trees[Tree::Audit.idx()].last()? {
            Some((k, _)) => <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::corrupt("audit", "an audit key is not 8 bytes"))?
                .saturating_add(1),
            None => 1,
        };
        Ok(Self {
            flusher: commit::GroupCommit::start(db.clone())?,
            db,
            trees,
            meta,
            next_audit_id: std::sync::atomic::AtomicU64::new(next_audit_id),
        })
    }

    /// One past the last audit record in the trees.
    fn last_audit_id(&self) -> Result<u64, StoreError> {
        match self.trees[Tree::Audit.idx()].last()? {
            Some((k, _)) => <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::corrupt("audit", "an audit key is not 8 bytes")),
            None => Ok(0),
        }
    }

    /// Re-reads the next audit id after records arrived from elsewhere (etcd's watch).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn refresh_audit_id(&self) -> Result<(), StoreError> {
        let next = self.last_audit_id()?.saturating_add(1);
        self.next_audit_id.store(next, Ordering::Relaxed);
        Ok(())
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        &self.trees[t.idx()]
    }
}

/// The persistent store of apps, keys, groups, APIs, grants and the audit log.
pub struct Store {
    dir: PathBuf,
    /// `None` after a storage error until `recover` has reopened the database: sled's
    /// memory may then hold a write its log never got, so nothing may be read from it.
    engine: std::sync::RwLock<Option<Arc<Engine>>>,
    sealer: Sealer,
    clock: Arc<dyn Clock>,
    /// Serialises writers (see `write`).
    write_lock: tokio::sync::Mutex<()>,
    /// True from a storage error in a write (disk full, I/O error) until `recover`
    /// has reopened the store from disk. The in-memory index is unaffected.
    degraded: tokio::sync::watch::Sender<bool>,
    /// Whether each write is flushed before it returns. Only an offline bulk import
    /// (`open_for_import`) turns this off, and then flushes once at the end.
    durable_writes: bool,
    /// With `--store etcd`: the source of truth; the engine is then its local view.
    #[cfg(feature = "etcd")]
    remote: Option<Arc<etcd::Remote>>,
    /// With etcd: the writes waiting for the next transaction.
    #[cfg(feature = "etcd")]
    batcher: batch::Batcher,
}

impl Store {
    /// Opens (or creates) the store in `dir`, checking the schema version and that
    /// `master_key` opens its secrets.
    pub fn open(
        dir: &Path,
        master_key: &[u8; seal::MASTER_KEY_LEN],
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Self::open_with(dir, master_key, clock, true)
    }

    /// Opens the store for an offline bulk import (tools that fill a data dir no
    /// server is using; sled locks the directory, so none can be): writes are not
    /// flushed one by one, and nothing is durable until [`Store::flush`] returns.
    /// A service must use [`Store::open`].
    pub fn open_for_import(
        dir: &Path,
        master_key: &[u8; seal::MASTER_KEY_LEN],
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Self::open_with(dir, master_key, clock, false)
    }

    fn open_with(
        dir: &Path,
        master_key: &[u8; seal::MASTER_KEY_LEN],
        clock: Arc<dyn Clock>,
        durable_writes: bool,
    ) -> Result<Self, StoreError> {
        let sealer = Sealer::new(master_key);
        let engine = Engine::open(dir, &sealer)?;
        Ok(Self {
            dir: dir.to_owned(),
            engine: std::sync::RwLock::new(Some(Arc::new(engine))),
            sealer,
            clock,
            write_lock: tokio::sync::Mutex::new(()),
            degraded: tokio::sync::watch::Sender::new(false),
            durable_writes,
            #[cfg(feature = "etcd")]
            remote: None,
            #[cfg(feature = "etcd")]
            batcher: batch::Batcher::default(),
        })
    }

    /// Opens the store on etcd, with its local view in `dir`: checks the master key
    /// against etcd's, brings the view up to date and follows etcd from then on. The
    /// receiver yields the `Change`s of every revision the view applies (from any
    /// replica), for the index.
    #[cfg(feature = "etcd")]
    pub async fn open_etcd(
        dir: &Path,
        master_key: &[u8; seal::MASTER_KEY_LEN],
        clock: Arc<dyn Clock>,
        settings: etcd::EtcdSettings,
    ) -> Result<(Self, tokio::sync::mpsc::UnboundedReceiver<Vec<Change>>), StoreError> {
        let mut store = Self::open_with(dir, master_key, clock, true)?;
        let engine = store.open_engine()?;
        let (remote, changes) = etcd::Remote::start(settings, engine, &store.sealer).await?;
        store.remote = Some(remote);
        Ok((store, changes))
    }

    /// With `--store etcd`: where the view stands (revision, ms since etcd answered)
    /// and its counters.
    #[cfg(feature = "etcd")]
    pub fn etcd(&self) -> Option<&etcd::Remote> {
        self.remote.as_deref()
    }

    /// The database for admin reads and writes: `Reopening` from a storage error
    /// until `recover` has reopened it *and* the index has been rebuilt from it, so an
    /// admin read never shows state the check path does not use yet.
    fn engine(&self) -> Result<Arc<Engine>, StoreError> {
        if *self.degraded.borrow() {
            return Err(StoreError::Reopening);
        }
        self.open_engine()
    }

    /// The database if one is open, degraded or not: for the bulk reads that rebuild
    /// the index during `recover`, and for flushing at shutdown.
    fn open_engine(&self) -> Result<Arc<Engine>, StoreError> {
        self.engine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Reopening)
    }

    /// A handle on one tree (cheap: sled trees are reference-counted).
    fn tree(&self, t: Tree) -> Result<sled::Tree, StoreError> {
        Ok(self.engine()?.tree(t).clone())
    }

    /// Every value of `t`, in key order (the index's bulk load); one error item when
    /// no database is open.
    fn values(&self, t: Tree) -> impl Iterator<Item = Result<sled::IVec, StoreError>> + use<> {
        let (values, error) = match self.open_engine().map(|e| e.tree(t).clone()) {
            Ok(tree) => (Some(tree.iter().values()), None),
            Err(e) => (None, Some(Err(e))),
        };
        error.into_iter().chain(
            values
                .into_iter()
                .flatten()
                .map(|v| v.map_err(StoreError::from)),
        )
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Runs `prepare` (range reads that transactions cannot do, e.g. a cascade's
    /// members) and then `f` as one transaction over every tree, under the writer lock,
    /// then flushes to disk before returning.
    ///
    /// The lock makes `prepare`'s reads consistent with the transaction. The flush is
    /// requested after the lock is released, so writers that commit while a flush runs
    /// share the next one (group commit, see `commit`): one fsync for many writes, and
    /// no write acknowledged before a flush that covers it.
    ///
    /// A storage error (in the transaction or the flush) takes the engine out of
    /// service at once (see `poison`): the write is then applied nowhere the service
    /// reads from, and `recover` later shows whatever the disk kept, as a restart would.
    async fn write<P, T>(
        &self,
        prepare: impl Fn() -> Result<P, StoreError>,
        f: impl Fn(&Tx<'_>, &P) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        self.write_with(Reads::Anything, prepare, f).await
    }

    /// A write whose every read goes through its transaction (see `write`).
    async fn write_tx<T>(&self, f: impl Fn(&Tx<'_>, &()) -> TxResult<T>) -> Result<T, StoreError> {
        self.write_with(Reads::Nothing, || Ok(()), f).await
    }

    /// A write whose `prepare` reads only the keys of these trees under these ids
    /// (see `write`): on etcd it may share a transaction with writes that touch none.
    async fn write_reading<P, T>(
        &self,
        reads: &[(Tree, &str)],
        prepare: impl Fn() -> Result<P, StoreError>,
        f: impl Fn(&Tx<'_>, &P) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        self.write_with(Reads::Under(reads), prepare, f).await
    }

    async fn write_with<P, T>(
        &self,
        reads: Reads<'_>,
        prepare: impl Fn() -> Result<P, StoreError>,
        f: impl Fn(&Tx<'_>, &P) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let result = self.write_and_flush(reads, prepare, f).await;
        if let Err(StoreError::Db(e)) = &result {
            self.poison(e);
        }
        result
    }

    /// Stops serving from the current engine after a storage error. Its handles close
    /// once the last reader lets go (on a blocking thread: closing joins sled's and the
    /// flusher's threads), which frees the data dir for `recover` to reopen.
    fn poison(&self, error: &sled::Error) {
        let old = self
            .engine
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if !self.degraded.send_replace(true) {
            tracing::error!(%error, "store degraded: a write failed in storage; admin reads and writes answer UNAVAILABLE until the store reopens from disk; checks keep serving from memory");
        }
        if let Some(old) = old {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(old))),
                Err(_) => drop(old),
            }
        }
    }

    /// After a storage error: reopens the database from disk, then runs `rebuild`
    /// (the server reloads its index from the reopened store) under the writer lock,
    /// so no write lands between the two, and clears the degraded state. The store
    /// then holds what a restart would: the failed write if the disk kept it, else
    /// not. Returns `false` when nothing needed recovering; an error leaves the store
    /// degraded, to be retried.
    pub async fn recover(
        &self,
        rebuild: impl FnOnce(&Store) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        if !*self.degraded.borrow() {
            return Ok(false);
        }
        let _writer = self.write_lock.lock().await;
        let missing = self
            .engine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none();
        if missing {
            // Fails (sled's directory lock) until the old engine's last handle is gone.
            let engine = Engine::open(&self.dir, &self.sealer)?;
            *self.engine.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(engine));
        }
        rebuild(self)?;
        self.degraded.send_replace(false);
        tracing::info!("store recovered: reopened from disk; writes are accepted again");
        Ok(true)
    }

    /// Whether writes currently fail in the storage engine, and its changes.
    pub fn degraded(&self) -> tokio::sync::watch::Receiver<bool> {
        self.degraded.subscribe()
    }

    async fn write_and_flush<P, T>(
        &self,
        #[cfg_attr(not(feature = "etcd"), allow(unused_variables))] reads: Reads<'_>,
        prepare: impl Fn() -> Result<P, StoreError>,
        f: impl Fn(&Tx<'_>, &P) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        #[cfg(feature = "etcd")]
        if let Some(remote) = &self.remote {
            return self.write_to_etcd(remote, reads, prepare, f).await;
        }
        let (out, engine) = {
            let _writer = self.write_lock.lock().await;
            let engine = self.engine()?;
            let stamp = Stamp {
                audit_id: engine.next_audit_id.load(Ordering::Relaxed),
                now_ms: self.now_ms(),
            };
            let prepared = prepare()?;
            let out = engine.trees.as_slice().transaction(|trees| {
                f(
                    &Tx {
                        trees,
                        stamp: &stamp,
                        staged: None,
                    },
                    &prepared,
                )
            })?;
            // Used up only if the write recorded its event (a write that found nothing
            // to do records none).
            if engine
                .tree(Tree::Audit)
                .contains_key(stamp.audit_id.to_be_bytes())?
            {
                engine
                    .next_audit_id
                    .store(stamp.audit_id.saturating_add(1), Ordering::Relaxed);
            }
            (out, engine)
        };
        if self.durable_writes {
            engine.flusher.flush().await?;
        }
        Ok(out)
    }

    /// Records key pairs' last use (`usage`): a local tree outside the replicated
    /// state, so it is never sent to etcd and holds this node's view only.
    pub fn record_key_use(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        let tree = self.open_engine()?.db.open_tree(KEY_USAGE)?;
        let mut b = sled::Batch::default();
        for (k, ms) in batch {
            b.insert(k.as_bytes(), &ms.to_be_bytes());
        }
        tree.apply_batch(b)?;
        Ok(())
    }

    /// When a request signed with `app_key` was last allowed, as last written.
    pub fn key_last_used(&self, app_key: &str) -> Result<Option<i64>, StoreError> {
        let tree = self.open_engine()?.db.open_tree(KEY_USAGE)?;
        Ok(tree
            .get(app_key.as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    /// Flushes everything; called on shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.open_engine()?.flusher.flush().await
    }

    /// Total size of the data files, for metrics and start-up logs.
    pub fn size_on_disk(&self) -> u64 {
        self.open_engine()
            .ok()
            .and_then(|e| e.db.size_on_disk().ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
