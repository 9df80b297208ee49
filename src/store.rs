//! The store: typed operations over sled, the source of truth.
//!
//! Owns: every write (one sled transaction across all trees, the audit record inside
//! it, flushed before returning so an acknowledged write survives `kill -9`), every
//! admin read, id and credential generation, and secret sealing. sled never leaks out
//! of this module tree: callers see model types, `StoreError` and `Change`s, so the
//! engine can be replaced (garage dropped sled later; etcd may come).

pub mod codec;
pub mod rotate;
pub mod schema;
pub mod seal;

mod commit;
mod convert;
mod ops;

use std::path::Path;
use std::sync::Arc;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::clock::Clock;
use codec::CodecError;
use schema::Tree;
use seal::{SealError, Sealer};

pub use ops::{ApiPatch, AppPatch, GrantFilter, GroupPatch, KeyPatch, NewApp, NewKey, Page};

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
    #[error("storage: {0}")]
    Db(#[from] sled::Error),
    #[error("corrupt data in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error("the data dir was written with schema version {found}; this release reads {expected}")]
    SchemaMismatch { found: u32, expected: u32 },
    #[error("the master key does not open this data dir's secrets")]
    WrongMasterKey,
    #[error("secret sealing: {0}")]
    Seal(#[from] SealError),
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

/// The audit id and time of one write, taken under the writer lock so that audit ids
/// follow commit order (a reader paging the log by id never skips an event).
pub(crate) struct Stamp {
    pub(crate) audit_id: u64,
    pub(crate) now_ms: i64,
}

/// The transactional view of every tree, handed to write closures.
pub(crate) struct Tx<'a> {
    trees: &'a [TransactionalTree],
    pub(crate) stamp: &'a Stamp,
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
        self.t(tree).insert(key, codec::encode(record))?;
        Ok(())
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
        Ok(())
    }

    fn del(&self, tree: Tree, key: &[u8]) -> TxResult<()> {
        self.t(tree).remove(key)?;
        Ok(())
    }
}

/// The persistent store of apps, keys, groups, APIs, grants and the audit log.
pub struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    sealer: Sealer,
    clock: Arc<dyn Clock>,
    /// Serialises writers (see `write`).
    write_lock: tokio::sync::Mutex<()>,
    /// True while the storage engine refuses writes (disk full, I/O error): set by a
    /// write that failed in sled, cleared by one that succeeded. Reads and the
    /// in-memory index are unaffected.
    degraded: tokio::sync::watch::Sender<bool>,
    /// Whether each write is flushed before it returns. Only an offline bulk import
    /// (`open_for_import`) turns this off, and then flushes once at the end.
    durable_writes: bool,
    /// Flushes for every writer (group commit). Declared last: dropped after `db`
    /// handles above it are no longer used.
    flusher: commit::GroupCommit,
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
        let db = sled::Config::new().path(dir).open()?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let sealer = Sealer::new(master_key);
        let meta = db.open_tree("meta")?;
        let fresh = meta.is_empty() && trees.iter().all(|t| t.is_empty());
        schema::check_meta(&meta, &sealer, fresh)?;
        db.flush()?;
        Ok(Self {
            flusher: commit::GroupCommit::start(db.clone())?,
            db,
            trees,
            sealer,
            clock,
            write_lock: tokio::sync::Mutex::new(()),
            degraded: tokio::sync::watch::Sender::new(false),
            durable_writes,
        })
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        &self.trees[t.idx()]
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
    async fn write<P, T>(
        &self,
        prepare: impl FnOnce() -> Result<P, StoreError>,
        f: impl Fn(&Tx<'_>, &P) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let result = self.write_and_flush(prepare, f).await;
        match &result {
            Err(StoreError::Db(e)) => {
                let was_degraded = self.degraded.send_replace(true);
                if !was_degraded {
                    tracing::error!(error = %e, "store degraded: writes fail; checks keep serving from memory");
                }
            }
            Ok(_) if *self.degraded.borrow() => {
                self.degraded.send_replace(false);
                tracing::info!("store recovered: a write succeeded");
            }
            _ => {}
        }
        result
    }

    /// Whether writes currently fail in the storage engine, and its changes.
    pub fn degraded(&self) -> tokio::sync::watch::Receiver<bool> {
        self.degraded.subscribe()
    }

    async fn write_and_flush<P, T>(
        &self,
        prepare: impl FnOnce() -> Result<P, StoreError>,
        f: impl Fn(&Tx<'_>, &P) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let out = {
            let _writer = self.write_lock.lock().await;
            let stamp = Stamp {
                audit_id: self.db.generate_id()?,
                now_ms: self.now_ms(),
            };
            let prepared = prepare()?;
            self.trees.as_slice().transaction(|trees| {
                f(
                    &Tx {
                        trees,
                        stamp: &stamp,
                    },
                    &prepared,
                )
            })?
        };
        if self.durable_writes {
            self.flusher.flush().await?;
        }
        Ok(out)
    }

    /// Flushes everything; called on shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await
    }

    /// Total size of the data files, for metrics and start-up logs.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
