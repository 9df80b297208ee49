//! The in-memory view the check path reads: keys by AppKey, apps, AppCodes, APIs with
//! their route table, and grants by app and target.
//!
//! Owns: answering lookups in constant time (hash maps and a segment trie; nothing
//! scans), and staying equal to the store. After every committed write the admin layer
//! calls `refresh` with the store's `Change`s; `refresh` re-reads exactly those entities
//! from the store, then installs them under the write lock (checks never wait for a
//! store read), one refresh at a time, so the last refresh always installs the latest
//! committed state, whatever order concurrent writers finish in.

use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, mpsc};

use hashbrown::{Equivalent, HashMap};

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
    /// SHA-256(AppCode) -> app (the same `Arc` as in `apps`). Hashing keeps lookups
    /// independent of the code's length and keeps the codes themselves out of the
    /// map's keys.
    app_codes: HashMap<[u8; 32], Arc<App>>,
    keys: HashMap<String, Arc<KeyPair>>,
    /// app id -> its key pairs (the same `Arc`s as in `keys`).
    keys_by_app: HashMap<String, Vec<Arc<KeyPair>>>,
    apis: HashMap<String, Arc<Api>>,
    api_names: HashMap<String, String>,
    router: Router,
    /// api id -> its parsed template, to check that a route hint's API serves the path.
    templates: HashMap<String, Template>,
    grants: HashMap<String, Arc<Grant>>,
    /// (app id, target id: an API or a group) -> grants. One map for every pair, not a
    /// map per app: an app's own table cost more memory than its grants, and one more
    /// dependent read per check.
    grants_by_pair: HashMap<PairKey, Vec<Arc<Grant>>>,
}

/// (app id, target id), owned.
type PairKey = (Box<str>, Box<str>);

/// A borrowed (app id, target id), to look up `grants_by_pair` without building a key.
/// It hashes as the owned pair does: a tuple hashes its fields in order, and a
/// `Box<str>` as the `str` it holds.
#[derive(Hash)]
struct Pair<'a>(&'a str, &'a str);

impl Equivalent<PairKey> for Pair<'_> {
    fn equivalent(&self, key: &PairKey) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
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
        self.app_codes.get(&code_hash(code))
    }

    /// Every key pair of an app (BlueKing: any of the app's secrets may match).
    pub fn keys_of_app<'a>(&'a self, app_id: &str) -> impl Iterator<Item = &'a Arc<KeyPair>> + 'a {
        self.keys_by_app.get(app_id).into_iter().flatten()
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
        self.grants_by_pair
            .get(&Pair(app_id, target_id))
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

    // Each `put_*` replaces what the snapshot held under the same id, side maps
    // included, so none keeps a stale copy (an old AppCode, an old secret) of a
    // record put twice. The replaced entry comes back from the main map's insert: no
    // extra lookup while the index loads. An API is dropped first instead: its old
    // route must leave the router before the new one enters.

    pub fn put_app(&mut self, app: App) {
        let app = Arc::new(app);
        if let Some(old) = self.apps.insert(app.id.clone(), app.clone()) {
            self.unlink_app(&old);
        }
        if let Some(code) = &app.app_code {
            self.app_codes.insert(code_hash(code.expose()), app);
        }
    }

    fn drop_app(&mut self, id: &str) {
        if let Some(old) = self.apps.remove(id) {
            self.unlink_app(&old);
        }
    }

    fn unlink_app(&mut self, old: &Arc<App>) {
        if let Some(code) = &old.app_code {
            let hash = code_hash(code.expose());
            if self
                .app_codes
                .get(&hash)
                .is_some_and(|a| Arc::ptr_eq(a, old))
            {
                self.app_codes.remove(&hash);
            }
        }
    }

    pub fn put_key(&mut self, key: KeyPair) {
        let key = Arc::new(key);
        if let Some(old) = self.keys.insert(key.app_key.clone(), key.clone()) {
            self.unlink_key(&old);
        }
        self.keys_by_app
            .entry_ref(key.app_id.as_str())
            .or_default()
            .push(key);
    }

    fn drop_key(&mut self, app_key: &str) {
        if let Some(old) = self.keys.remove(app_key) {
            self.unlink_key(&old);
        }
    }

    fn unlink_key(&mut self, old: &Arc<KeyPair>) {
        if let Some(list) = self.keys_by_app.get_mut(&old.app_id) {
            list.retain(|k| !Arc::ptr_eq(k, old));
            if list.is_empty() {
                self.keys_by_app.remove(&old.app_id);
            }
        }
    }

    pub fn put_api(&mut self, api: Api) {
        self.drop_api(&api.id);
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
        if let Some(old) = self.grants.insert(grant.id.clone(), grant.clone()) {
            self.unlink_grant(&old);
        }
        let pair = Pair(&grant.app_id, grant.target.id());
        match self.grants_by_pair.get_mut(&pair) {
            Some(list) => list.push(grant),
            None => {
                let key = (pair.0.into(), pair.1.into());
                self.grants_by_pair.insert(key, vec![grant]);
            }
        }
    }

    fn drop_grant(&mut self, id: &str) {
        if let Some(old) = self.grants.remove(id) {
            self.unlink_grant(&old);
        }
    }

    fn unlink_grant(&mut self, old: &Arc<Grant>) {
        let pair = Pair(&old.app_id, old.target.id());
        if let Some(list) = self.grants_by_pair.get_mut(&pair) {
            list.retain(|g| !Arc::ptr_eq(g, old));
            if list.is_empty() {
                self.grants_by_pair.remove(&pair);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GrantTarget, Secret};
    use crate::testkit;

    fn app(id: &str, code: Option<&str>) -> App {
        App {
            app_code: code.map(Secret::new),
            ..testkit::app(id)
        }
    }

    fn key(app_key: &str, app_id: &str) -> KeyPair {
        testkit::key(app_key, app_id, &format!("secret-of-{app_key}"))
    }

    fn grant(id: &str, app_id: &str, target: GrantTarget) -> Grant {
        testkit::grant(id, app_id, target, &[], None)
    }

    fn ids(grants: &[Arc<Grant>]) -> Vec<&str> {
        grants.iter().map(|g| g.id.as_str()).collect()
    }

    #[test]
    fn grants_are_found_by_app_and_target_and_leave_with_their_last_one() {
        let mut s = Snapshot::default();
        s.put_grant(grant("g1", "a", GrantTarget::Api("x".into())));
        s.put_grant(grant("g2", "a", GrantTarget::Api("x".into())));
        s.put_grant(grant("g3", "a", GrantTarget::Group("x".into())));
        s.put_grant(grant("g4", "b", GrantTarget::Api("x".into())));
        // An API and a group may share an id: a grant names the target, not its kind.
        assert_eq!(ids(s.grants("a", "x")), ["g1", "g2", "g3"]);
        assert_eq!(ids(s.grants("b", "x")), ["g4"]);
        // The pair is two fields, not a joined string: no id can be read across them.
        s.put_grant(grant("g5", "ab", GrantTarget::Api("c".into())));
        assert!(s.grants("a", "bc").is_empty());
        assert!(s.grants("x", "a").is_empty());
        s.drop_grant("g1");
        s.drop_grant("g3");
        assert_eq!(ids(s.grants("a", "x")), ["g2"]);
        s.drop_grant("g2");
        assert!(s.grants("a", "x").is_empty());
        assert_eq!(s.grants_by_pair.len(), 2, "an emptied pair is removed");
        s.drop_grant("g2");
        assert_eq!(ids(s.grants("b", "x")), ["g4"]);
    }

    #[test]
    fn an_apps_keys_and_code_follow_its_puts_and_drops() {
        let mut s = Snapshot::default();
        s.put_app(app("a", Some("code-one")));
        s.put_key(key("K1", "a"));
        s.put_key(key("K2", "a"));
        s.put_key(key("K3", "b"));
        let of = |s: &Snapshot, id: &str| -> Vec<String> {
            s.keys_of_app(id).map(|k| k.app_key.clone()).collect()
        };
        assert_eq!(of(&s, "a"), ["K1", "K2"]);
        s.drop_key("K1");
        assert_eq!(of(&s, "a"), ["K2"]);
        assert!(s.key("K1").is_none());
        s.drop_key("K2");
        assert!(of(&s, "a").is_empty());
        assert!(!s.keys_by_app.contains_key("a"));
        assert_eq!(of(&s, "b"), ["K3"]);

        assert_eq!(s.app_by_code("code-one").map(|a| a.id.as_str()), Some("a"));
        // A reset code: the refresh drops the app and puts it again.
        s.drop_app("a");
        s.put_app(app("a", Some("code-two")));
        assert!(
            s.app_by_code("code-one").is_none(),
            "the old code no longer opens"
        );
        assert_eq!(s.app_by_code("code-two").map(|a| a.id.as_str()), Some("a"));
        s.drop_app("a");
        assert!(s.app_by_code("code-two").is_none());
        assert!(s.app("a").is_none());
    }

    #[test]
    fn a_record_put_twice_leaves_no_stale_copy() {
        let mut s = Snapshot::default();
        s.put_app(app("a", Some("old-code")));
        s.put_app(app("a", Some("new-code")));
        assert!(
            s.app_by_code("old-code").is_none(),
            "the replaced code no longer opens"
        );
        assert!(s.app_by_code("new-code").is_some());
        let mut k = key("K1", "a");
        s.put_key(k.clone());
        k.secret = Secret::new("rotated");
        s.put_key(k);
        let secrets: Vec<&str> = s.keys_of_app("a").map(|k| k.secret.expose()).collect();
        assert_eq!(secrets, ["rotated"], "one key pair, the latest");
        s.put_grant(grant("g1", "a", GrantTarget::Api("x".into())));
        s.put_grant(grant("g1", "a", GrantTarget::Api("y".into())));
        assert!(
            s.grants("a", "x").is_empty(),
            "a grant moved off its old target"
        );
        assert_eq!(ids(s.grants("a", "y")), ["g1"]);
        assert_eq!(s.sizes().grants, 1);
    }
}
