//! The in-memory view the check path reads: keys by AppKey, apps, AppCodes, APIs with
//! their route table, and grants by app and target.
//!
//! Owns: answering lookups in constant time (hash maps and a segment trie; nothing
//! scans), and staying equal to the store. After every committed write the admin layer
//! calls `refresh` with the store's `Change`s; `refresh` re-reads exactly those entities
//! from the store, then installs them under the write lock (checks never wait for a
//! store read), one refresh at a time, so the last refresh always installs the latest
//! committed state, whatever order concurrent writers finish in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, mpsc};

use sha2::{Digest, Sha256};

use crate::model::{Api, App, Grant, KeyPair};
use crate::route::{Router, Template};
use crate::store::{Change, Store, StoreError};

/// Index sizes, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSizes {
    pub apps: usize,
    pub keys: usize,
    pub apis: usize,
    pub grants: usize,
}

/// One consistent state of the index. Readers hold it for the length of one decision.
#[derive(Default)]
pub struct Snapshot {
    apps: HashMap<String, Arc<App>>,
    /// SHA-256(AppCode) -> app id. Hashing keeps lookups independent of the code's
    /// length and keeps the codes themselves out of the map's keys.
    app_codes: HashMap<[u8; 32], String>,
    keys: HashMap<String, Arc<KeyPair>>,
    keys_by_app: HashMap<String, Vec<String>>,
    apis: HashMap<String, Arc<Api>>,
    api_names: HashMap<String, String>,
    router: Router,
    /// api id -> its parsed template, to check that a route hint's API serves the path.
    templates: HashMap<String, Template>,
    grants: HashMap<String, Arc<Grant>>,
    /// app id -> target (api or group) id -> grants
    grants_by_app: HashMap<String, HashMap<String, Vec<Arc<Grant>>>>,
}

fn code_hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

impl Snapshot {
    pub fn key(&self, app_key: &str) -> Option<&Arc<KeyPair>> {
        self.keys.get(app_key)
    }

    pub fn app(&self, id: &str) -> Option<&Arc<App>> {
        self.apps.get(id)
    }

    pub fn app_by_code(&self, code: &str) -> Option<&Arc<App>> {
        self.app_codes
            .get(&code_hash(code))
            .and_then(|id| self.apps.get(id))
    }

    /// Every key pair of an app (BlueKing: any of the app's secrets may match).
    pub fn keys_of_app<'a>(&'a self, app_id: &str) -> impl Iterator<Item = &'a Arc<KeyPair>> + 'a {
        self.keys_by_app
            .get(app_id)
            .into_iter()
            .flatten()
            .filter_map(|k| self.keys.get(k))
    }

    /// An API named by a route hint: its id, else its name.
    pub fn api_by_hint(&self, hint: &str) -> Option<&Arc<Api>> {
        self.apis
            .get(hint)
            .or_else(|| self.api_names.get(hint).and_then(|id| self.apis.get(id)))
    }

    /// Whether `api` answers this method, host and canonical path: a route hint names
    /// an API, and the request must still be one that API serves.
    pub fn api_serves(&self, api: &Api, host: &str, method: &str, path: &str) -> bool {
        (api.methods.is_empty() || api.methods.iter().any(|m| m == method))
            && api.host.as_deref().is_none_or(|h| h == host)
            && self.templates.get(&api.id).is_some_and(|t| t.matches(path))
    }

    /// The API for a request; `host` and `path` in canonical form (`crate::path`).
    pub fn route(&self, host: &str, method: &str, path: &str) -> Option<&Arc<Api>> {
        self.router
            .find(host, method, path)
            .and_then(|id| self.apis.get(id))
    }

    /// For `explain` when no API matched: APIs whose path template takes the path but
    /// whose method or host does not, else those sharing the path's first segment.
    /// Walks every API: an admin call, never the check path.
    pub fn near_misses(&self, host: &str, method: &str, path: &str) -> Vec<(&Arc<Api>, String)> {
        let first = |p: &str| {
            p.trim_start_matches('/')
                .split('/')
                .next()
                .map(str::to_owned)
        };
        let mut near: Vec<(&Arc<Api>, String)> = Vec::new();
        let mut same_start: Vec<(&Arc<Api>, String)> = Vec::new();
        for api in self.apis.values() {
            if self.templates.get(&api.id).is_some_and(|t| t.matches(path)) {
                let mut why = Vec::new();
                if !(api.methods.is_empty() || api.methods.iter().any(|m| m == method)) {
                    why.push(format!("serves {} only", api.methods.join(",")));
                }
                if let Some(h) = api.host.as_deref().filter(|h| *h != host) {
                    why.push(format!("serves host {h} only"));
                }
                near.push((api, why.join(", ")));
            } else if first(&api.path) == first(path) {
                same_start.push((api, format!("its path {} does not match", api.path)));
            }
        }
        if near.is_empty() {
            near = same_start;
        }
        near.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        near.truncate(5);
        near
    }

    /// Grants of `app_id` whose target is `target_id` (an API or a group).
    pub fn grants(&self, app_id: &str, target_id: &str) -> &[Arc<Grant>] {
        self.grants_by_app
            .get(app_id)
            .and_then(|by_target| by_target.get(target_id))
            .map_or(&[], Vec::as_slice)
    }

    pub fn sizes(&self) -> IndexSizes {
        IndexSizes {
            apps: self.apps.len(),
            keys: self.keys.len(),
            apis: self.apis.len(),
            grants: self.grants.len(),
        }
    }

    // === building ===
    //
    // Public so a snapshot can be built without a store (benchmarks, tools). The live
    // index hands out read guards only, so this cannot change what checks see.

    pub fn put_app(&mut self, app: App) {
        if let Some(code) = &app.app_code {
            self.app_codes
                .insert(code_hash(code.expose()), app.id.clone());
        }
        self.apps.insert(app.id.clone(), Arc::new(app));
    }

    fn drop_app(&mut self, id: &str) {
        if let Some(old) = self.apps.remove(id)
            && let Some(code) = &old.app_code
        {
            self.app_codes.remove(&code_hash(code.expose()));
        }
    }

    pub fn put_key(&mut self, key: KeyPair) {
        self.keys_by_app
            .entry(key.app_id.clone())
            .or_default()
            .push(key.app_key.clone());
        self.keys.insert(key.app_key.clone(), Arc::new(key));
    }

    fn drop_key(&mut self, app_key: &str) {
        if let Some(old) = self.keys.remove(app_key)
            && let Some(list) = self.keys_by_app.get_mut(&old.app_id)
        {
            list.retain(|k| k != app_key);
            if list.is_empty() {
                self.keys_by_app.remove(&old.app_id);
            }
        }
    }

    pub fn put_api(&mut self, api: Api) {
        // The store validated the template; an invalid one here means a corrupt record,
        // and an API the router cannot match simply denies (ApiNotFound).
        if let Ok(t) = Template::parse(&api.path) {
            self.router
                .insert(&api.id, api.host.as_deref(), &api.methods, &t);
            self.templates.insert(api.id.clone(), t);
        }
        self.api_names.insert(api.name.clone(), api.id.clone());
        self.apis.insert(api.id.clone(), Arc::new(api));
    }

    fn drop_api(&mut self, id: &str) {
        if let Some(old) = self.apis.remove(id) {
            self.templates.remove(id);
            if let Ok(t) = Template::parse(&old.path) {
                self.router.remove(id, old.host.as_deref(), &t);
            }
            if self.api_names.get(&old.name).is_some_and(|x| x == id) {
                self.api_names.remove(&old.name);
            }
        }
    }

    pub fn put_grant(&mut self, grant: Grant) {
        let grant = Arc::new(grant);
        self.grants_by_app
            .entry(grant.app_id.clone())
            .or_default()
            .entry(grant.target.id().to_owned())
            .or_default()
            .push(grant.clone());
        self.grants.insert(grant.id.clone(), grant);
    }

    fn drop_grant(&mut self, id: &str) {
        if let Some(old) = self.grants.remove(id)
            && let Some(by_target) = self.grants_by_app.get_mut(&old.app_id)
        {
            if let Some(list) = by_target.get_mut(old.target.id()) {
                list.retain(|g| g.id != id);
                if list.is_empty() {
                    by_target.remove(old.target.id());
                }
            }
            if by_target.is_empty() {
                self.grants_by_app.remove(&old.app_id);
            }
        }
    }
}

/// Records read by one loader thread (see `Index::load`).
enum Batch {
    Apps(Vec<App>),
    Keys(Vec<KeyPair>),
    Grants(Vec<Grant>),
}

/// Sends `items` in batches of `BATCH`; stops at the first error, after sending it,
/// or when the receiver is gone (it failed first).
fn send_batches<T>(
    tx: &mpsc::SyncSender<Result<Batch, StoreError>>,
    items: impl Iterator<Item = Result<T, StoreError>>,
    wrap: fn(Vec<T>) -> Batch,
) {
    const BATCH: usize = 4096;
    let mut buf = Vec::with_capacity(BATCH);
    for item in items {
        match item {
            Ok(x) => buf.push(x),
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
        if buf.len() == BATCH
            && tx
                .send(Ok(wrap(std::mem::replace(
                    &mut buf,
                    Vec::with_capacity(BATCH),
                ))))
                .is_err()
        {
            return;
        }
    }
    if !buf.is_empty() {
        let _ = tx.send(Ok(wrap(buf)));
    }
}

/// The shared, updatable index.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Snapshot>,
    /// Held by `refresh` and `reload` so that they install in the order they read.
    refreshing: Mutex<()>,
}

/// An entity re-read for a refresh, before the write lock is taken.
enum Fresh {
    App(App),
    Key(KeyPair),
    Api(Api),
    Grant(Grant),
}

impl Index {
    /// Builds the index from everything in the store.
    ///
    /// Reading is most of the work (sled iteration, record decoding, opening sealed
    /// secrets), so apps, keys and grants are read on their own threads while this one
    /// inserts what they send in batches: start-up uses every core instead of one.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let mut s = Snapshot::default();
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Result<Batch, StoreError>>(64);
            let readers = [
                scope.spawn({
                    let tx = tx.clone();
                    move || send_batches(&tx, store.all_apps(), Batch::Apps)
                }),
                scope.spawn({
                    let tx = tx.clone();
                    move || send_batches(&tx, store.all_keys(), Batch::Keys)
                }),
                scope.spawn({
                    let tx = tx.clone();
                    move || send_batches(&tx, store.all_grants(), Batch::Grants)
                }),
            ];
            drop(tx);
            for api in store.all_apis() {
                s.put_api(api?);
            }
            // Ends when every reader has finished (or failed) and dropped its sender.
            for batch in rx {
                match batch? {
                    Batch::Apps(v) => v.into_iter().for_each(|a| s.put_app(a)),
                    Batch::Keys(v) => v.into_iter().for_each(|k| s.put_key(k)),
                    Batch::Grants(v) => v.into_iter().for_each(|g| s.put_grant(g)),
                }
            }
            for r in readers {
                r.join().map_err(|_| {
                    StoreError::corrupt("index", "a reader thread panicked while loading")
                })?;
            }
            Ok::<(), StoreError>(())
        })?;
        Ok(Self {
            inner: RwLock::new(s),
            refreshing: Mutex::new(()),
        })
    }

    /// A read view for one decision. A poisoned lock only means a writer panicked
    /// mid-refresh; the maps are still valid (each mutation is a single insert/remove).
    pub fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-reads the changed entities from the store. An entity the store no longer has,
    /// or cannot read, is removed: the check path then denies instead of using stale data.
    ///
    /// The store is read before the write lock is taken, so checks wait only for the
    /// map updates, never for store reads (a cascade delete of an app with many grants
    /// re-reads each one). Refreshes run one at a time: each reads after the writes it
    /// follows committed and installs what it read before the next one reads, so the
    /// last refresh always installs the latest committed state.
    pub fn refresh(&self, store: &Store, changes: &[Change]) {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let read: Vec<(&Change, Result<Option<Fresh>, StoreError>)> = changes
            .iter()
            .map(|change| {
                let fresh = match change {
                    Change::App(id) => store.get_app(id).map(|a| a.map(Fresh::App)),
                    Change::Key(k) => store.get_key(k).map(|k| k.map(Fresh::Key)),
                    Change::Api(id) => store.get_api(id).map(|a| a.map(Fresh::Api)),
                    Change::Grant(id) => store.get_grant(id).map(|g| g.map(Fresh::Grant)),
                    // Groups carry no data the check path needs: grants name them by id.
                    Change::Group(_) => Ok(None),
                };
                (change, fresh)
            })
            .collect();
        let mut s = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for (change, fresh) in read {
            match change {
                Change::App(id) => s.drop_app(id),
                Change::Key(k) => s.drop_key(k),
                Change::Api(id) => s.drop_api(id),
                Change::Grant(id) => s.drop_grant(id),
                Change::Group(_) => {}
            }
            match fresh {
                Ok(Some(Fresh::App(a))) => s.put_app(a),
                Ok(Some(Fresh::Key(k))) => s.put_key(k),
                Ok(Some(Fresh::Api(a))) => s.put_api(a),
                Ok(Some(Fresh::Grant(g))) => s.put_grant(g),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, ?change, "index refresh could not read the store; entity left out (denies)");
                }
            }
        }
    }

    /// Replaces the whole index with a fresh load from `store` (after the store has
    /// reopened from disk). Built aside first: checks wait only for the swap, and the
    /// old snapshot is freed after the lock is released.
    pub fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fresh = Index::load(store)?
            .inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(
            &mut *self.inner.write().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        drop(old);
        Ok(())
    }

    pub fn sizes(&self) -> IndexSizes {
        self.read().sizes()
    }
}
