//! The store's operations: one function per admin action, each a single transaction
//! with its audit record, plus the reads the admin API and the index need.

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::codec::{
    self, ApiRecord, AppRecord, AuditRecord, GrantRecord, GroupRecord, KeyRecord, join, last_part,
};
use super::convert::*;
use super::schema::Tree;
use super::summary;
use super::{Change, Store, StoreError, Tx, TxResult, abort};
use crate::model::{
    Api, App, AuditEvent, Grant, GrantTarget, Group, KeyPair, PreviousSecret, Secret,
};
use crate::route::Template;

/// A page request: at most `size` items after the opaque `token`.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub size: usize,
    pub token: String,
}

#[derive(Clone, Debug, Default)]
pub struct NewApp {
    pub id: Option<String>,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub extend_info: String,
    pub app_code: Option<String>,
    /// The default key pair's custom AppKey and secret; generated when `None`.
    pub app_key: Option<String>,
    pub app_secret: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct AppPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub extend_info: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct NewKey {
    pub app_id: String,
    pub name: String,
    pub description: String,
    pub app_key: Option<String>,
    pub app_secret: Option<String>,
    pub expires_ms: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct KeyPatch {
    /// `Some(None)` clears the expiry.
    pub expires_ms: Option<Option<i64>>,
    pub enabled: Option<bool>,
    pub name: Option<String>,
    pub description: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct GroupPatch {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// An update of an API: the caller applies its field mask to a copy.
pub type ApiPatch = Box<dyn Fn(&mut Api) + Send + Sync>;

/// Which apps `list_apps` returns; every filter set must match.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppFilter<'a> {
    pub owner: Option<&'a str>,
    /// `(key, None)`: the tag with any value; `(key, Some(v))`: with value `v`.
    pub tag: Option<(&'a str, Option<&'a str>)>,
    /// The name starts with this, ASCII case ignored.
    pub name_prefix: Option<&'a str>,
}

impl AppFilter<'_> {
    fn matches(&self, r: &AppRecord) -> bool {
        self.owner.is_none_or(|o| r.owner == o)
            && self.tag.is_none_or(|(k, val)| {
                r.tags
                    .get(k)
                    .is_some_and(|x| val.is_none_or(|val| x == val))
            })
            && self.name_prefix.is_none_or(|p| {
                r.name
                    .get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p))
            })
    }
}

#[derive(Clone, Debug, Default)]
pub struct GrantFilter {
    pub app_id: Option<String>,
    pub api_id: Option<String>,
    pub group_id: Option<String>,
}

pub(super) const APP_CODE_PURPOSE: &str = "app-code";

// === credentials and ids ===

fn random<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b)
        .map_err(|e| StoreError::Seal(super::seal::SealError::Random(e.to_string())))?;
    Ok(b)
}

/// Picks `n` characters of `alphabet` uniformly (rejection sampling avoids modulo bias).
fn random_text(alphabet: &[u8], n: usize) -> Result<String, StoreError> {
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random::<64>()? {
            if (b as usize) < limit && out.len() < n {
                out.push(char::from(alphabet[b as usize % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Time-ordered ids, so listing by key lists by creation time.
pub(super) fn new_id(prefix: &str, now_ms: i64) -> Result<String, StoreError> {
    let r = random::<4>()?;
    Ok(format!("{prefix}_{:012x}{}", now_ms.max(0), hex::encode(r)))
}

/// AppKey: `KG` + 18 base32 characters; safe in every scheme's header syntax.
pub fn generate_app_key() -> Result<String, StoreError> {
    Ok(format!("KG{}", random_text(BASE32, 18)?))
}

/// AppSecret: 40 alphanumeric characters (about 238 bits).
pub fn generate_secret() -> Result<String, StoreError> {
    random_text(ALNUM, 40)
}

/// AppCode: 32 lower-case hex characters, like the vendor's.
pub fn generate_app_code() -> Result<String, StoreError> {
    Ok(hex::encode(random::<16>()?))
}

/// The caller's secret (or AppCode), else a new one from `generate`.
pub(super) fn given_or(
    given: Option<String>,
    generate: fn() -> Result<String, StoreError>,
) -> Result<Secret, StoreError> {
    Ok(Secret::new(match given {
        Some(s) => s,
        None => generate()?,
    }))
}

// === transaction helpers ===

/// Appends the audit record of the write in progress. Its id and time come from the
/// transaction's stamp, taken under the writer lock, so ids follow commit order.
pub(super) fn audit(
    tx: &Tx<'_>,
    actor: &str,
    action: &str,
    rtype: &str,
    rid: &str,
    summary: String,
) -> TxResult<()> {
    let rec = AuditRecord {
        id: tx.stamp.audit_id,
        time_ms: tx.stamp.now_ms,
        actor: actor.to_owned(),
        action: action.to_owned(),
        resource_type: rtype.to_owned(),
        resource_id: rid.to_owned(),
        summary,
    };
    tx.put(Tree::Audit, &tx.stamp.audit_id.to_be_bytes(), &rec)
}

fn require<M: prost::Message + Default>(
    tx: &Tx<'_>,
    tree: Tree,
    kind: &'static str,
    id: &str,
) -> TxResult<M> {
    match tx.get(tree, id.as_bytes())? {
        Some(r) => Ok(r),
        None => abort(StoreError::not_found(kind, id)),
    }
}

/// Renames an owner-scoped entity: moves its unique-name entry in `names` (refusing a
/// name the owner already uses) and updates `current`.
fn rename_tx(
    tx: &Tx<'_>,
    names: Tree,
    kind: &str,
    id: &str,
    owner: &str,
    current: &mut String,
    new: &str,
) -> TxResult<()> {
    if *current == new {
        return Ok(());
    }
    let new_key = join(&[owner, new]);
    if tx.exists(names, &new_key)? {
        return abort(StoreError::AlreadyExists(format!(
            "{kind}.name '{new}' already exists for owner '{owner}'"
        )));
    }
    tx.del(names, &join(&[owner, current]))?;
    tx.set(names, &new_key, id.as_bytes())?;
    *current = new.to_owned();
    Ok(())
}

fn route_keys(api: &Api) -> Result<Vec<Vec<u8>>, StoreError> {
    let template = Template::parse(&api.path).map_err(|e| StoreError::InvalidArgument {
        field: "Api.path",
        message: e.to_string(),
    })?;
    let normal = template.normal_form();
    let host = api.host.as_deref().unwrap_or("");
    let methods: Vec<&str> = if api.methods.is_empty() {
        vec!["*"]
    } else {
        api.methods.iter().map(String::as_str).collect()
    };
    Ok(methods.iter().map(|m| join(&[host, m, &normal])).collect())
}

fn route_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', " ")
}

/// Removes the grants with these ids (those still there) and their index entries:
/// the cascade of deleting an app, a group or an API.
pub(super) fn delete_grants_by_id_tx(tx: &Tx<'_>, ids: &[String]) -> TxResult<()> {
    for id in ids {
        if let Some(rec) = tx.get::<GrantRecord>(Tree::Grants, id.as_bytes())? {
            delete_grant_tx(tx, &rec)?;
        }
    }
    Ok(())
}

/// Removes a grant and its index entries.
pub(super) fn delete_grant_tx(tx: &Tx<'_>, g: &GrantRecord) -> TxResult<()> {
    let target = if g.api_id.is_empty() {
        &g.group_id
    } else {
        &g.api_id
    };
    tx.del(Tree::Grants, g.id.as_bytes())?;
    tx.del(Tree::GrantsByApp, &join(&[&g.app_id, &g.id]))?;
    tx.del(Tree::GrantsByTarget, &join(&[target, &g.id]))
}

// === one entity's writes, shared by the single-entity operations and `apply` ===

/// Inserts a new app with its default key pair, refusing a taken id, name, AppCode
/// or AppKey.
pub(super) fn insert_app_tx(
    tx: &Tx<'_>,
    app: &App,
    app_rec: &AppRecord,
    code_fp: &[u8; 32],
    key: &KeyPair,
    key_rec: &KeyRecord,
) -> TxResult<()> {
    let id = &app.id;
    if tx.exists(Tree::Apps, id.as_bytes())? {
        return abort(StoreError::AlreadyExists(format!(
            "App.id '{id}' already exists"
        )));
    }
    let name_key = join(&[&app.owner, &app.name]);
    if tx.exists(Tree::AppNames, &name_key)? {
        return abort(StoreError::AlreadyExists(format!(
            "App.name '{}' already exists for owner '{}'",
            app.name, app.owner
        )));
    }
    if tx.exists(Tree::AppCodes, code_fp)? {
        return abort(StoreError::AlreadyExists(
            "App.app_code is already used by another app".into(),
        ));
    }
    tx.put(Tree::Apps, id.as_bytes(), app_rec)?;
    tx.set(Tree::AppNames, &name_key, id.as_bytes())?;
    tx.set(Tree::AppCodes, code_fp, id.as_bytes())?;
    insert_key_tx(tx, key, key_rec)
}

/// Inserts a key pair of an existing app, refusing a taken AppKey.
pub(super) fn insert_key_tx(tx: &Tx<'_>, key: &KeyPair, rec: &KeyRecord) -> TxResult<()> {
    if !tx.exists(Tree::Apps, key.app_id.as_bytes())? {
        return abort(StoreError::not_found("app", &key.app_id));
    }
    if tx.exists(Tree::Keys, key.app_key.as_bytes())? {
        return abort(StoreError::AlreadyExists(format!(
            "KeyPair.app_key '{}' already exists",
            key.app_key
        )));
    }
    tx.put(Tree::Keys, key.app_key.as_bytes(), rec)?;
    tx.set(Tree::KeysByApp, &join(&[&key.app_id, &key.app_key]), b"")
}

/// Deletes a key pair that is not its app's default one.
pub(super) fn delete_key_tx(tx: &Tx<'_>, app_key: &str) -> TxResult<KeyRecord> {
    let r: KeyRecord = require(tx, Tree::Keys, "key pair", app_key)?;
    if r.is_default {
        return abort(StoreError::FailedPrecondition(format!(
            "key pair '{app_key}' is the app's default key pair: reset its secret instead of deleting it"
        )));
    }
    tx.del(Tree::Keys, app_key.as_bytes())?;
    tx.del(Tree::KeysByApp, &join(&[&r.app_id, app_key]))?;
    Ok(r)
}

/// Inserts a new group, refusing a taken id or a name its owner already uses.
pub(super) fn insert_group_tx(tx: &Tx<'_>, g: &Group) -> TxResult<()> {
    if tx.exists(Tree::Groups, g.id.as_bytes())? {
        return abort(StoreError::AlreadyExists(format!(
            "Group.id '{}' already exists",
            g.id
        )));
    }
    let name_key = join(&[&g.owner, &g.name]);
    if tx.exists(Tree::GroupNames, &name_key)? {
        return abort(StoreError::AlreadyExists(format!(
            "Group.name '{}' already exists for owner '{}'",
            g.name, g.owner
        )));
    }
    tx.put(Tree::Groups, g.id.as_bytes(), &group_to_record(g))?;
    tx.set(Tree::GroupNames, &name_key, g.id.as_bytes())
}

/// Applies `patch` to a group; returns the record and what changed.
pub(super) fn update_group_tx(
    tx: &Tx<'_>,
    id: &str,
    patch: &GroupPatch,
) -> TxResult<(GroupRecord, String)> {
    let mut r: GroupRecord = require(tx, Tree::Groups, "group", id)?;
    let before = group_from_record(r.clone());
    if let Some(name) = &patch.name {
        rename_tx(
            tx,
            Tree::GroupNames,
            "Group",
            id,
            &r.owner,
            &mut r.name,
            name,
        )?;
    }
    if let Some(d) = &patch.description {
        r.description = d.clone();
    }
    r.update_ms = tx.stamp.now_ms;
    tx.put(Tree::Groups, id.as_bytes(), &r)?;
    let diff = summary::diff(&before, &group_from_record(r.clone()));
    Ok((r, diff))
}

/// Deletes a group and the grants on it; refused while `apis` still belong to it.
fn group_not_empty(id: &str, apis: usize) -> StoreError {
    StoreError::FailedPrecondition(format!(
        "group '{id}' still has {apis} API(s); move or delete them first"
    ))
}

pub(super) fn delete_group_tx(
    tx: &Tx<'_>,
    id: &str,
    apis: &[String],
    grants: &[String],
) -> TxResult<GroupRecord> {
    let r: GroupRecord = require(tx, Tree::Groups, "group", id)?;
    if !apis.is_empty() {
        return abort(group_not_empty(id, apis.len()));
    }
    tx.del(Tree::Groups, id.as_bytes())?;
    tx.del(Tree::GroupNames, &join(&[&r.owner, &r.name]))?;
    delete_grants_by_id_tx(tx, grants)?;
    Ok(r)
}

/// Deletes an API, its name and routes, and the grants on it.
pub(super) fn delete_api_tx(tx: &Tx<'_>, id: &str, grants: &[String]) -> TxResult<Api> {
    let old = api_from_record(require(tx, Tree::Apis, "api", id)?);
    tx.del(Tree::Apis, id.as_bytes())?;
    tx.del(Tree::ApiNames, old.name.as_bytes())?;
    for k in route_keys(&old).map_err(ConflictAbort::from)? {
        tx.del(Tree::ApiRoutes, &k)?;
    }
    if let Some(g) = &old.group_id {
        tx.del(Tree::ApisByGroup, &join(&[g, id]))?;
    }
    delete_grants_by_id_tx(tx, grants)?;
    Ok(old)
}

/// Inserts a grant whose app and target exist, refusing a taken id and a second
/// grant of the same app on the same target (`siblings`: the ids of the app's grants,
/// read under the writer lock): two would make deleting one leave access in place.
pub(super) fn insert_grant_tx(
    tx: &Tx<'_>,
    grant: &Grant,
    rec: &GrantRecord,
    siblings: &[String],
) -> TxResult<()> {
    super::stages::check_stages_tx(tx, &grant.target, &grant.stages, "Grant.stages")?;
    for id in siblings {
        if let Some(other) = tx.get::<GrantRecord>(Tree::Grants, id.as_bytes())?
            && other.id != grant.id
            && other.app_id == rec.app_id
            && other.api_id == rec.api_id
            && other.group_id == rec.group_id
        {
            return abort(StoreError::AlreadyExists(format!(
                "app '{}' already has grant '{}' on {} '{}': update that one instead",
                grant.app_id,
                other.id,
                if rec.api_id.is_empty() {
                    "group"
                } else {
                    "API"
                },
                grant.target.id()
            )));
        }
    }
    if !tx.exists(Tree::Apps, grant.app_id.as_bytes())? {
        return abort(StoreError::not_found("app", &grant.app_id));
    }
    let (tree, kind) = match &grant.target {
        GrantTarget::Api(_) => (Tree::Apis, "api"),
        GrantTarget::Group(_) => (Tree::Groups, "group"),
    };
    let target = grant.target.id();
    if !tx.exists(tree, target.as_bytes())? {
        return abort(StoreError::not_found(kind, target));
    }
    if tx.exists(Tree::Grants, grant.id.as_bytes())? {
        return abort(StoreError::AlreadyExists(format!(
            "Grant.id '{}' already exists",
            grant.id
        )));
    }
    tx.put(Tree::Grants, grant.id.as_bytes(), rec)?;
    tx.set(Tree::GrantsByApp, &join(&[&grant.app_id, &grant.id]), b"")?;
    tx.set(Tree::GrantsByTarget, &join(&[target, &grant.id]), b"")
}

impl Store {
    /// Applies `patch` to an app; returns the record and what changed.
    pub(super) fn update_app_tx(
        &self,
        tx: &Tx<'_>,
        id: &str,
        patch: &AppPatch,
    ) -> TxResult<(AppRecord, String)> {
        let mut r: AppRecord = require(tx, Tree::Apps, "app", id)?;
        let before = app_from_record(&self.sealer, r.clone()).map_err(ConflictAbort::from)?;
        if let Some(name) = &patch.name {
            rename_tx(tx, Tree::AppNames, "App", id, &r.owner, &mut r.name, name)?;
        }
        if let Some(d) = &patch.description {
            r.description = d.clone();
        }
        if let Some(t) = &patch.tags {
            r.tags = t.clone();
        }
        if let Some(e) = &patch.extend_info {
            r.extend_info = e.clone();
        }
        if let Some(e) = patch.enabled {
            r.enabled = e;
        }
        r.update_ms = tx.stamp.now_ms;
        tx.put(Tree::Apps, id.as_bytes(), &r)?;
        let after = app_from_record(&self.sealer, r.clone()).map_err(ConflictAbort::from)?;
        Ok((r, summary::diff(&before, &after)))
    }

    /// Deletes an app with the key pairs and grants named (the app's, read under the
    /// writer lock).
    pub(super) fn delete_app_tx(
        &self,
        tx: &Tx<'_>,
        id: &str,
        keys: &[String],
        grants: &[String],
    ) -> TxResult<AppRecord> {
        let r: AppRecord = require(tx, Tree::Apps, "app", id)?;
        tx.del(Tree::Apps, id.as_bytes())?;
        tx.del(Tree::AppNames, &join(&[&r.owner, &r.name]))?;
        if let Some(fp) = self.old_code_fingerprint(&r).map_err(ConflictAbort::from)? {
            tx.del(Tree::AppCodes, &fp)?;
        }
        for k in keys {
            tx.del(Tree::Keys, k.as_bytes())?;
            tx.del(Tree::KeysByApp, &join(&[id, k]))?;
        }
        delete_grants_by_id_tx(tx, grants)?;
        Ok(r)
    }

    /// Applies `patch` to a key pair; returns the record and what changed.
    pub(super) fn update_key_tx(
        &self,
        tx: &Tx<'_>,
        app_key: &str,
        patch: &KeyPatch,
    ) -> TxResult<(KeyRecord, String)> {
        let mut r: KeyRecord = require(tx, Tree::Keys, "key pair", app_key)?;
        let before = key_from_record(&self.sealer, r.clone()).map_err(ConflictAbort::from)?;
        if let Some(e) = patch.expires_ms {
            r.expires_ms = e.unwrap_or(0);
        }
        if let Some(e) = patch.enabled {
            r.enabled = e;
        }
        if let Some(n) = &patch.name {
            r.name = n.clone();
        }
        if let Some(d) = &patch.description {
            r.description = d.clone();
        }
        r.update_ms = tx.stamp.now_ms;
        tx.put(Tree::Keys, app_key.as_bytes(), &r)?;
        let after = key_from_record(&self.sealer, r.clone()).map_err(ConflictAbort::from)?;
        Ok((r, summary::diff(&before, &after)))
    }
}

impl Store {
    // === generic reads ===

    fn read<M: prost::Message + Default>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<M>, StoreError> {
        match self.tree(tree)?.get(key)? {
            None => Ok(None),
            Some(v) => codec::decode(&v)
                .map(Some)
                .map_err(|e| StoreError::corrupt(tree.name(), e.to_string())),
        }
    }

    /// Ids named by the index entries under `prefix\0`.
    pub(super) fn scan_ids(&self, tree: Tree, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = join(&[prefix, ""]);
        self.tree(tree)?
            .scan_prefix(&p)
            .keys()
            .map(|k| k.map(|k| last_part(&k)).map_err(StoreError::from))
            .collect()
    }

    /// One page of `tree` under `prefix`: `keep` turns an entry into an item or skips it.
    pub(super) fn page<T>(
        &self,
        tree: Tree,
        prefix: &[u8],
        page: &Page,
        mut keep: impl FnMut(&[u8], &[u8]) -> Result<Option<T>, StoreError>,
    ) -> Result<(Vec<T>, String), StoreError> {
        let size = page.size.clamp(1, 1000);
        let start = if page.token.is_empty() {
            Bound::Included(prefix.to_vec())
        } else {
            let key = URL_SAFE_NO_PAD
                .decode(&page.token)
                .ok()
                .filter(|k| k.starts_with(prefix))
                .ok_or_else(|| StoreError::InvalidArgument {
                    field: "page_token",
                    message: "not a token this list returned".into(),
                })?;
            Bound::Excluded(key)
        };
        let mut items = Vec::new();
        let mut last_key = Vec::new();
        for entry in self
            .tree(tree)?
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            let (k, v) = entry?;
            if !k.starts_with(prefix) {
                break;
            }
            if let Some(item) = keep(&k, &v)? {
                if items.len() == size {
                    // One more item exists: the page is full and a next one is worth asking.
                    return Ok((items, URL_SAFE_NO_PAD.encode(&last_key)));
                }
                items.push(item);
                last_key = k.to_vec();
            }
        }
        Ok((items, String::new()))
    }

    fn decode_entry<M: prost::Message + Default>(tree: Tree, v: &[u8]) -> Result<M, StoreError> {
        codec::decode(v).map_err(|e| StoreError::corrupt(tree.name(), e.to_string()))
    }

    /// The fingerprint under which an AppCode is indexed.
    pub fn app_code_fingerprint(&self, code: &str) -> [u8; 32] {
        self.sealer.fingerprint(APP_CODE_PURPOSE, code)
    }

    // === apps ===

    pub async fn create_app(
        &self,
        actor: &str,
        new: NewApp,
    ) -> Result<((App, KeyPair), Vec<Change>), StoreError> {
        let now = self.now_ms();
        let id = match &new.id {
            Some(id) => id.clone(),
            None => new_id("app", now)?,
        };
        let code = given_or(new.app_code.clone(), generate_app_code)?;
        let app = App {
            id: id.clone(),
            name: new.name,
            owner: new.owner,
            description: new.description,
            tags: new.tags,
            extend_info: new.extend_info,
            app_code: Some(code.clone()),
            enabled: true,
            create_ms: now,
            update_ms: now,
        };
        let key = KeyPair {
            app_key: match new.app_key {
                Some(k) => k,
                None => generate_app_key()?,
            },
            app_id: id.clone(),
            name: "default".into(),
            description: String::new(),
            secret: given_or(new.app_secret, generate_secret)?,
            is_default: true,
            enabled: true,
            expires_ms: None,
            previous: None,
            create_ms: now,
            update_ms: now,
        };
        let app_rec = app_to_record(&self.sealer, &app)?;
        let key_rec = key_to_record(&self.sealer, &key)?;
        let fp = self.app_code_fingerprint(code.expose());
        self.write_tx(|tx, ()| {
            insert_app_tx(tx, &app, &app_rec, &fp, &key, &key_rec)?;
            audit(
                tx,
                actor,
                "CreateApp",
                "app",
                &id,
                format!(
                    "name={} owner={} default_key={}",
                    app.name, app.owner, key.app_key
                ),
            )
        })
        .await?;
        let changes = vec![Change::App(id), Change::Key(key.app_key.clone())];
        Ok(((app, key), changes))
    }

    pub fn get_app(&self, id: &str) -> Result<Option<App>, StoreError> {
        self.read::<AppRecord>(Tree::Apps, id.as_bytes())?
            .map(|r| app_from_record(&self.sealer, r))
            .transpose()
    }

    pub fn list_apps(
        &self,
        page: &Page,
        filter: AppFilter<'_>,
    ) -> Result<(Vec<App>, String), StoreError> {
        self.page(Tree::Apps, b"", page, |_, v| {
            let r: AppRecord = Self::decode_entry(Tree::Apps, v)?;
            if filter.matches(&r) {
                app_from_record(&self.sealer, r).map(Some)
            } else {
                Ok(None)
            }
        })
    }

    pub async fn update_app(
        &self,
        actor: &str,
        action: &str,
        id: &str,
        patch: AppPatch,
    ) -> Result<(App, Vec<Change>), StoreError> {
        let rec = self
            .write_tx(|tx, ()| {
                let (r, diff) = self.update_app_tx(tx, id, &patch)?;
                audit(tx, actor, action, "app", id, diff)?;
                Ok(r)
            })
            .await?;
        Ok((
            app_from_record(&self.sealer, rec)?,
            vec![Change::App(id.to_owned())],
        ))
    }

    pub async fn reset_app_code(
        &self,
        actor: &str,
        id: &str,
        code: Option<String>,
    ) -> Result<(App, Vec<Change>), StoreError> {
        let code = given_or(code, generate_app_code)?;
        let sealed = self
            .sealer
            .seal_secret(&code, &super::seal::app_code_aad(id))?;
        let fp = self.app_code_fingerprint(code.expose());
        let rec = self
            .write_tx(|tx, ()| {
                let mut r: AppRecord = require(tx, Tree::Apps, "app", id)?;
                if tx.exists(Tree::AppCodes, &fp)? {
                    return abort(StoreError::AlreadyExists(
                        "App.app_code is already used by an app".into(),
                    ));
                }
                if let Some(old) = self.old_code_fingerprint(&r).map_err(ConflictAbort::from)? {
                    tx.del(Tree::AppCodes, &old)?;
                }
                tx.set(Tree::AppCodes, &fp, id.as_bytes())?;
                r.sealed_app_code = sealed.clone();
                r.update_ms = tx.stamp.now_ms;
                tx.put(Tree::Apps, id.as_bytes(), &r)?;
                audit(
                    tx,
                    actor,
                    "ResetAppCode",
                    "app",
                    id,
                    "app_code reset".into(),
                )?;
                Ok(r)
            })
            .await?;
        Ok((
            app_from_record(&self.sealer, rec)?,
            vec![Change::App(id.to_owned())],
        ))
    }

    fn old_code_fingerprint(&self, r: &AppRecord) -> Result<Option<[u8; 32]>, StoreError> {
        if r.sealed_app_code.is_empty() {
            return Ok(None);
        }
        let code = self
            .sealer
            .open_secret(&r.sealed_app_code, &super::seal::app_code_aad(&r.id))?;
        Ok(Some(self.app_code_fingerprint(code.expose())))
    }

    /// Deletes an app with its key pairs and grants.
    pub async fn delete_app(&self, actor: &str, id: &str) -> Result<Vec<Change>, StoreError> {
        let shed = self
            .shed_grants(
                actor,
                "DeleteApp",
                "app",
                Tree::Apps,
                id,
                || self.scan_ids(Tree::GrantsByApp, id),
                || Ok(()),
                // The app, its name and AppCode entries, the audit record; two per key.
                || Ok(4 + 2 * self.scan_ids(Tree::KeysByApp, id)?.len()),
            )
            .await?;
        let (keys, grants) = self
            .write_reading(
                &[(Tree::KeysByApp, id), (Tree::GrantsByApp, id)],
                || {
                    Ok((
                        self.scan_ids(Tree::KeysByApp, id)?,
                        self.scan_ids(Tree::GrantsByApp, id)?,
                    ))
                },
                |tx, (keys, grants)| {
                    let r = self.delete_app_tx(tx, id, keys, grants)?;
                    audit(
                        tx,
                        actor,
                        "DeleteApp",
                        "app",
                        id,
                        format!(
                            "name={} keys={} grants={}",
                            r.name,
                            keys.len(),
                            grants.len()
                        ),
                    )?;
                    Ok((keys.clone(), grants.clone()))
                },
            )
            .await?;
        let mut changes = vec![Change::App(id.to_owned())];
        changes.extend(keys.into_iter().map(Change::Key));
        changes.extend(shed.into_iter().chain(grants).map(Change::Grant));
        Ok(changes)
    }

    /// The app an AppCode belongs to.
    pub fn app_id_by_code_fingerprint(&self, fp: &[u8; 32]) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree(Tree::AppCodes)?
            .get(fp)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    // === key pairs ===

    pub async fn create_key(
        &self,
        actor: &str,
        new: NewKey,
    ) -> Result<(KeyPair, Vec<Change>), StoreError> {
        let now = self.now_ms();
        super::grants::not_past("expires_at", new.expires_ms, now)?;
        let key = KeyPair {
            app_key: match &new.app_key {
                Some(k) => k.clone(),
                None => generate_app_key()?,
            },
            app_id: new.app_id.clone(),
            name: new.name.clone(),
            description: new.description.clone(),
            secret: given_or(new.app_secret.clone(), generate_secret)?,
            is_default: false,
            enabled: true,
            expires_ms: new.expires_ms,
            previous: None,
            create_ms: now,
            update_ms: now,
        };
        let rec = key_to_record(&self.sealer, &key)?;
        self.write_tx(|tx, ()| {
            insert_key_tx(tx, &key, &rec)?;
            audit(
                tx,
                actor,
                "CreateKeyPair",
                "key_pair",
                &key.app_key,
                format!("app={}", key.app_id),
            )
        })
        .await?;
        let changes = vec![Change::Key(key.app_key.clone())];
        Ok((key, changes))
    }

    pub fn get_key(&self, app_key: &str) -> Result<Option<KeyPair>, StoreError> {
        self.read::<KeyRecord>(Tree::Keys, app_key.as_bytes())?
            .map(|r| key_from_record(&self.sealer, r))
            .transpose()
    }

    pub fn list_keys(
        &self,
        app_id: &str,
        page: &Page,
    ) -> Result<(Vec<KeyPair>, String), StoreError> {
        if self.tree(Tree::Apps)?.get(app_id.as_bytes())?.is_none() {
            return Err(StoreError::not_found("app", app_id));
        }
        self.page(Tree::KeysByApp, &join(&[app_id, ""]), page, |k, _| {
            self.get_key(&last_part(k))
        })
    }

    pub async fn update_key(
        &self,
        actor: &str,
        action: &str,
        app_key: &str,
        patch: KeyPatch,
    ) -> Result<(KeyPair, Vec<Change>), StoreError> {
        if let Some(e) = patch.expires_ms {
            super::grants::not_past("KeyPair.expires_at", e, self.now_ms())?;
        }
        let rec = self
            .write_tx(|tx, ()| {
                let (r, diff) = self.update_key_tx(tx, app_key, &patch)?;
                audit(tx, actor, action, "key_pair", app_key, diff)?;
                Ok(r)
            })
            .await?;
        Ok((
            key_from_record(&self.sealer, rec)?,
            vec![Change::Key(app_key.to_owned())],
        ))
    }

    /// Replaces the secret; the previous one keeps verifying for `grace_ms`.
    pub async fn reset_secret(
        &self,
        actor: &str,
        app_key: &str,
        grace_ms: i64,
        new_secret: Option<String>,
    ) -> Result<(KeyPair, Vec<Change>), StoreError> {
        let secret = given_or(new_secret, generate_secret)?;
        let key = self
            .write_tx(|tx, ()| {
                let r: KeyRecord = require(tx, Tree::Keys, "key pair", app_key)?;
                let mut k = key_from_record(&self.sealer, r).map_err(ConflictAbort::from)?;
                k.previous = (grace_ms > 0).then(|| PreviousSecret {
                    secret: k.secret.clone(),
                    until_ms: tx.stamp.now_ms.saturating_add(grace_ms),
                });
                k.secret = secret.clone();
                k.update_ms = tx.stamp.now_ms;
                let rec = key_to_record(&self.sealer, &k).map_err(ConflictAbort::from)?;
                tx.put(Tree::Keys, app_key.as_bytes(), &rec)?;
                audit(
                    tx,
                    actor,
                    "ResetKeyPairSecret",
                    "key_pair",
                    app_key,
                    format!("grace_ms={grace_ms}"),
                )?;
                Ok(k)
            })
            .await?;
        Ok((key, vec![Change::Key(app_key.to_owned())]))
    }

    /// Gives a key pair a new AppKey and a new secret in one write (Alibaba's
    /// ResetAppSecret with NewAppKey): the old AppKey stops verifying at once, and no
    /// previous secret is kept, since a client still on the old AppKey holds the old
    /// secret too. Name, expiry, state and default-ness move with it.
    pub async fn rename_key(
        &self,
        actor: &str,
        app_key: &str,
        new_app_key: &str,
        new_secret: Option<String>,
    ) -> Result<(KeyPair, Vec<Change>), StoreError> {
        let secret = given_or(new_secret, generate_secret)?;
        let key = self
            .write_tx(|tx, ()| {
                let r: KeyRecord = require(tx, Tree::Keys, "key pair", app_key)?;
                if tx.exists(Tree::Keys, new_app_key.as_bytes())? {
                    return abort(StoreError::AlreadyExists(format!(
                        "new_app_key '{new_app_key}' is already used by a key pair"
                    )));
                }
                let mut k = key_from_record(&self.sealer, r).map_err(ConflictAbort::from)?;
                k.app_key = new_app_key.to_owned();
                k.secret = secret.clone();
                k.previous = None;
                k.update_ms = tx.stamp.now_ms;
                let rec = key_to_record(&self.sealer, &k).map_err(ConflictAbort::from)?;
                tx.del(Tree::Keys, app_key.as_bytes())?;
                tx.del(Tree::KeysByApp, &join(&[&k.app_id, app_key]))?;
                tx.put(Tree::Keys, new_app_key.as_bytes(), &rec)?;
                tx.set(Tree::KeysByApp, &join(&[&k.app_id, new_app_key]), b"")?;
                audit(
                    tx,
                    actor,
                    "ResetKeyPairSecret",
                    "key_pair",
                    app_key,
                    format!("app_key: {app_key} → {new_app_key}; new secret"),
                )?;
                Ok(k)
            })
            .await?;
        Ok((
            key,
            vec![
                Change::Key(app_key.to_owned()),
                Change::Key(new_app_key.to_owned()),
            ],
        ))
    }

    /// Key pairs whose previous secret's grace period has ended by `now_ms`, at most
    /// `limit` of them.
    pub fn expired_previous_secrets(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for v in self.values(Tree::Keys) {
            let r: KeyRecord = Self::decode_entry(Tree::Keys, &v?)?;
            if !r.sealed_previous_secret.is_empty() && r.previous_until_ms <= now_ms {
                out.push(r.app_key);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Drops `app_key`'s previous secret once its grace period has ended, so an old
    /// secret does not stay in the store (sealed) for ever. One write with its audit
    /// event; no change when there is nothing to drop (reset again meanwhile, deleted).
    pub async fn drop_expired_previous_secret(
        &self,
        actor: &str,
        app_key: &str,
    ) -> Result<Vec<Change>, StoreError> {
        let dropped = self
            .write_tx(|tx, ()| {
                let Some(mut r) = tx.get::<KeyRecord>(Tree::Keys, app_key.as_bytes())? else {
                    return Ok(false);
                };
                if r.sealed_previous_secret.is_empty() || r.previous_until_ms > tx.stamp.now_ms {
                    return Ok(false);
                }
                r.sealed_previous_secret = Vec::new();
                r.previous_until_ms = 0;
                tx.put(Tree::Keys, app_key.as_bytes(), &r)?;
                audit(
                    tx,
                    actor,
                    "ExpirePreviousSecret",
                    "key_pair",
                    app_key,
                    "the previous secret's grace period ended; it is deleted".into(),
                )?;
                Ok(true)
            })
            .await?;
        Ok(if dropped {
            vec![Change::Key(app_key.to_owned())]
        } else {
            Vec::new()
        })
    }

    pub async fn delete_key(&self, actor: &str, app_key: &str) -> Result<Vec<Change>, StoreError> {
        self.write_tx(|tx, ()| {
            let r = delete_key_tx(tx, app_key)?;
            audit(
                tx,
                actor,
                "DeleteKeyPair",
                "key_pair",
                app_key,
                format!("app={}", r.app_id),
            )
        })
        .await?;
        Ok(vec![Change::Key(app_key.to_owned())])
    }

    // === groups ===

    pub async fn create_group(
        &self,
        actor: &str,
        name: String,
        owner: String,
        description: String,
    ) -> Result<(Group, Vec<Change>), StoreError> {
        let now = self.now_ms();
        let g = Group {
            id: new_id("grp", now)?,
            name,
            owner,
            description,
            create_ms: now,
            update_ms: now,
        };
        self.write_tx(|tx, ()| {
            insert_group_tx(tx, &g)?;
            audit(
                tx,
                actor,
                "CreateGroup",
                "group",
                &g.id,
                format!("name={} owner={}", g.name, g.owner),
            )
        })
        .await?;
        let changes = vec![Change::Group(g.id.clone())];
        Ok((g, changes))
    }

    pub fn get_group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        Ok(self
            .read::<GroupRecord>(Tree::Groups, id.as_bytes())?
            .map(group_from_record))
    }

    pub fn list_groups(
        &self,
        page: &Page,
        owner: Option<&str>,
    ) -> Result<(Vec<Group>, String), StoreError> {
        self.page(Tree::Groups, b"", page, |_, v| {
            let r: GroupRecord = Self::decode_entry(Tree::Groups, v)?;
            Ok(owner
                .is_none_or(|o| r.owner == o)
                .then(|| group_from_record(r)))
        })
    }

    pub async fn update_group(
        &self,
        actor: &str,
        id: &str,
        patch: GroupPatch,
    ) -> Result<(Group, Vec<Change>), StoreError> {
        let rec = self
            .write_tx(|tx, ()| {
                let (r, diff) = update_group_tx(tx, id, &patch)?;
                audit(tx, actor, "UpdateGroup", "group", id, diff)?;
                Ok(r)
            })
            .await?;
        Ok((group_from_record(rec), vec![Change::Group(id.to_owned())]))
    }

    /// Deletes a group and the grants on it; refused while APIs still belong to it.
    pub async fn delete_group(&self, actor: &str, id: &str) -> Result<Vec<Change>, StoreError> {
        let shed = self
            .shed_grants(
                actor,
                "DeleteGroup",
                "group",
                Tree::Groups,
                id,
                || self.scan_ids(Tree::GrantsByTarget, id),
                || match self.scan_ids(Tree::ApisByGroup, id)?.len() {
                    0 => Ok(()),
                    n => Err(group_not_empty(id, n)),
                },
                || Ok(3),
            )
            .await?;
        let grants = self
            .write_reading(
                &[(Tree::ApisByGroup, id), (Tree::GrantsByTarget, id)],
                || {
                    Ok((
                        self.scan_ids(Tree::ApisByGroup, id)?,
                        self.scan_ids(Tree::GrantsByTarget, id)?,
                    ))
                },
                |tx, (apis, grants)| {
                    let r = delete_group_tx(tx, id, apis, grants)?;
                    audit(
                        tx,
                        actor,
                        "DeleteGroup",
                        "group",
                        id,
                        format!("name={} grants={}", r.name, grants.len()),
                    )?;
                    Ok(grants.clone())
                },
            )
            .await?;
        let mut changes = vec![Change::Group(id.to_owned())];
        changes.extend(shed.into_iter().chain(grants).map(Change::Grant));
        Ok(changes)
    }

    // === APIs ===

    pub(super) fn put_api_tx(tx: &Tx<'_>, api: &Api, old: Option<&Api>) -> TxResult<()> {
        if let Some(group) = &api.group_id {
            let Some(g) = tx.get::<GroupRecord>(Tree::Groups, group.as_bytes())? else {
                return abort(StoreError::NotFound {
                    kind: "group",
                    id: group.clone(),
                });
            };
            // Groups are granted whole: another tenant's API in one would be granted
            // by that group's owner.
            if g.owner != api.owner {
                return abort(StoreError::InvalidArgument {
                    field: "Api.group_id",
                    message: format!(
                        "group '{group}' belongs to owner '{}', the API to '{}'",
                        g.owner, api.owner
                    ),
                });
            }
        }
        // A route hint names an API by id or by name (id first): a name that is
        // another API's id, or an id that is another API's name, would let a hint
        // reach the wrong API.
        if api.name != api.id && tx.exists(Tree::Apis, api.name.as_bytes())? {
            return abort(StoreError::AlreadyExists(format!(
                "Api.name '{}' is the id of another API",
                api.name
            )));
        }
        if let Some(other) = tx.get_str(Tree::ApiNames, api.id.as_bytes())?
            && other != api.id
        {
            return abort(StoreError::AlreadyExists(format!(
                "Api.id '{}' is the name of API '{other}'",
                api.id
            )));
        }
        let new_routes = route_keys(api).map_err(ConflictAbort::from)?;
        if let Some(old) = old {
            tx.del(Tree::ApiNames, old.name.as_bytes())?;
            for k in route_keys(old).map_err(ConflictAbort::from)? {
                tx.del(Tree::ApiRoutes, &k)?;
            }
            if let Some(g) = &old.group_id {
                tx.del(Tree::ApisByGroup, &join(&[g, &old.id]))?;
            }
        }
        if let Some(other) = tx.get_str(Tree::ApiNames, api.name.as_bytes())? {
            return abort(StoreError::AlreadyExists(format!(
                "Api.name '{}' is already used by API '{other}'",
                api.name
            )));
        }
        for k in &new_routes {
            if let Some(other) = tx.get_str(Tree::ApiRoutes, k)? {
                return abort(StoreError::AlreadyExists(format!(
                    "route '{}' is already used by API '{other}'",
                    route_text(k)
                )));
            }
            tx.set(Tree::ApiRoutes, k, api.id.as_bytes())?;
        }
        tx.set(Tree::ApiNames, api.name.as_bytes(), api.id.as_bytes())?;
        if let Some(g) = &api.group_id {
            tx.set(Tree::ApisByGroup, &join(&[g, &api.id]), b"")?;
        }
        tx.put(Tree::Apis, api.id.as_bytes(), &api_to_record(api))
    }

    pub async fn create_api(
        &self,
        actor: &str,
        mut api: Api,
    ) -> Result<(Api, Vec<Change>), StoreError> {
        let now = self.now_ms();
        api.id = new_id("api", now)?;
        api.create_ms = now;
        api.update_ms = now;
        route_keys(&api)?;
        self.write_tx(|tx, ()| {
            Self::put_api_tx(tx, &api, None)?;
            audit(
                tx,
                actor,
                "CreateApi",
                "api",
                &api.id,
                summary::describe(&api),
            )
        })
        .await?;
        let changes = vec![Change::Api(api.id.clone())];
        Ok((api, changes))
    }

    pub fn get_api(&self, id: &str) -> Result<Option<Api>, StoreError> {
        Ok(self
            .read::<ApiRecord>(Tree::Apis, id.as_bytes())?
            .map(api_from_record))
    }

    pub fn api_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree(Tree::ApiNames)?
            .get(name.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn list_apis(
        &self,
        page: &Page,
        owner: Option<&str>,
        group_id: Option<&str>,
    ) -> Result<(Vec<Api>, String), StoreError> {
        self.page(Tree::Apis, b"", page, |_, v| {
            let r: ApiRecord = Self::decode_entry(Tree::Apis, v)?;
            let keep =
                owner.is_none_or(|o| r.owner == o) && group_id.is_none_or(|g| r.group_id == g);
            Ok(keep.then(|| api_from_record(r)))
        })
    }

    pub async fn update_api(
        &self,
        actor: &str,
        id: &str,
        patch: ApiPatch,
    ) -> Result<(Api, Vec<Change>), StoreError> {
        let api = self
            .write_tx(|tx, ()| {
                let old = api_from_record(require(tx, Tree::Apis, "api", id)?);
                let mut api = old.clone();
                patch(&mut api);
                api.id = old.id.clone();
                api.owner = old.owner.clone();
                api.create_ms = old.create_ms;
                api.update_ms = tx.stamp.now_ms;
                Self::put_api_tx(tx, &api, Some(&old))?;
                audit(tx, actor, "UpdateApi", "api", id, summary::diff(&old, &api))?;
                Ok(api)
            })
            .await?;
        Ok((api, vec![Change::Api(id.to_owned())]))
    }

    /// Deletes an API and the grants on it.
    pub async fn delete_api(&self, actor: &str, id: &str) -> Result<Vec<Change>, StoreError> {
        let shed = self
            .shed_grants(
                actor,
                "DeleteApi",
                "api",
                Tree::Apis,
                id,
                || self.scan_ids(Tree::GrantsByTarget, id),
                || Ok(()),
                // The API, its name, a route per method (at most 9), its group entry,
                // the audit record.
                || Ok(13),
            )
            .await?;
        let grants = self
            .write_reading(
                &[(Tree::GrantsByTarget, id)],
                || self.scan_ids(Tree::GrantsByTarget, id),
                |tx, grants| {
                    let old = delete_api_tx(tx, id, grants)?;
                    audit(
                        tx,
                        actor,
                        "DeleteApi",
                        "api",
                        id,
                        format!("name={} grants={}", old.name, grants.len()),
                    )?;
                    Ok(grants.clone())
                },
            )
            .await?;
        let mut changes = vec![Change::Api(id.to_owned())];
        changes.extend(shed.into_iter().chain(grants).map(Change::Grant));
        Ok(changes)
    }

    // === grants ===

    pub fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        self.read::<GrantRecord>(Tree::Grants, id.as_bytes())?
            .map(grant_from_record)
            .transpose()
    }

    pub fn list_grants(
        &self,
        page: &Page,
        filter: &GrantFilter,
    ) -> Result<(Vec<Grant>, String), StoreError> {
        let by_index = |tree: Tree, id: &str| {
            self.page(tree, &join(&[id, ""]), page, |k, _| {
                self.get_grant(&last_part(k))
            })
        };
        match (&filter.app_id, &filter.api_id, &filter.group_id) {
            (Some(app), None, None) => by_index(Tree::GrantsByApp, app),
            (None, Some(t), None) | (None, None, Some(t)) => by_index(Tree::GrantsByTarget, t),
            (None, None, None) => self.page(Tree::Grants, b"", page, |_, v| {
                grant_from_record(Self::decode_entry(Tree::Grants, v)?).map(Some)
            }),
            _ => Err(StoreError::InvalidArgument {
                field: "app_id",
                message: "set at most one of app_id, api_id, group_id".into(),
            }),
        }
    }

    pub async fn delete_grant(&self, actor: &str, id: &str) -> Result<Vec<Change>, StoreError> {
        self.write_tx(|tx, ()| {
            let r: GrantRecord = require(tx, Tree::Grants, "grant", id)?;
            delete_grant_tx(tx, &r)?;
            audit(
                tx,
                actor,
                "DeleteGrant",
                "grant",
                id,
                format!("app={}", r.app_id),
            )
        })
        .await?;
        Ok(vec![Change::Grant(id.to_owned())])
    }

    // === audit ===

    pub fn list_audit(
        &self,
        page: &Page,
        resource_id: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<(Vec<AuditEvent>, String), StoreError> {
        self.page(Tree::Audit, b"", page, |_, v| {
            let r: AuditRecord = Self::decode_entry(Tree::Audit, v)?;
            let keep = resource_id.is_none_or(|id| r.resource_id == id)
                && since_ms.is_none_or(|s| r.time_ms >= s);
            Ok(keep.then(|| audit_from_record(r)))
        })
    }

    // === bulk reads for the index ===

    pub fn all_apps(&self) -> impl Iterator<Item = Result<App, StoreError>> + '_ {
        self.values(Tree::Apps)
            .map(|v| app_from_record(&self.sealer, Self::decode_entry(Tree::Apps, &v?)?))
    }

    pub fn all_keys(&self) -> impl Iterator<Item = Result<KeyPair, StoreError>> + '_ {
        self.values(Tree::Keys)
            .map(|v| key_from_record(&self.sealer, Self::decode_entry(Tree::Keys, &v?)?))
    }

    pub fn all_groups(&self) -> impl Iterator<Item = Result<Group, StoreError>> + '_ {
        self.values(Tree::Groups)
            .map(|v| Ok(group_from_record(Self::decode_entry(Tree::Groups, &v?)?)))
    }

    pub fn all_apis(&self) -> impl Iterator<Item = Result<Api, StoreError>> + '_ {
        self.values(Tree::Apis)
            .map(|v| Ok(api_from_record(Self::decode_entry(Tree::Apis, &v?)?)))
    }

    pub fn all_grants(&self) -> impl Iterator<Item = Result<Grant, StoreError>> + '_ {
        self.values(Tree::Grants)
            .map(|v| grant_from_record(Self::decode_entry(Tree::Grants, &v?)?))
    }
}

/// Lifts a `StoreError` raised inside a transaction closure into an abort.
pub(super) struct ConflictAbort;

impl ConflictAbort {
    #[allow(clippy::new_ret_no_self)]
    pub(super) fn from(
        e: StoreError,
    ) -> sled::transaction::ConflictableTransactionError<StoreError> {
        sled::transaction::ConflictableTransactionError::Abort(e)
    }
}
