//! Declarative apply: make the store hold a described set of entities, in one write.
//!
//! Owns: matching each desired entity to a stored one (by id, else by its natural key:
//! an app's or a group's owner and name, an API's name, a key pair's AppKey, a grant's
//! app and target), resolving the references between them (by id, or by a name that
//! is unique in the file), the plan of creates, updates and (with `prune`) deletes
//! that makes the store match, and running that whole plan as one transaction with one
//! audit record. Each step reuses the single-entity writes of `ops`, so the invariants
//! are the same; a step that breaks one aborts the whole plan and nothing is applied.
//!
//! Not described by a file, so never changed by it: secrets, AppCodes and times.
//! Owners, an API's or key pair's app, and which key pair is an app's default cannot
//! change (delete and re-create instead): a plan that would is refused.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::convert::*;
use super::ops::{
    AppPatch, GroupPatch, KeyPatch, delete_api_tx, delete_group_tx, delete_key_tx,
    generate_app_code, generate_secret, given_or, insert_app_tx, insert_grant_tx, insert_group_tx,
    insert_key_tx, new_id,
};
use super::schema::Tree;
use super::summary;
use super::{Change, Store, StoreError, Tx, TxResult};
use crate::model::{Api, App, Grant, GrantTarget, Group, KeyPair, Secret};

/// An app as a file describes it.
#[derive(Clone, Debug, Default)]
pub struct DesiredApp {
    pub id: Option<String>,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub extend_info: String,
    pub enabled: bool,
}

/// A key pair: `app` names its app (id, or a name unique in the file).
#[derive(Clone, Debug, Default)]
pub struct DesiredKey {
    pub app_key: String,
    pub app: String,
    pub is_default: bool,
    pub enabled: bool,
    pub expires_ms: Option<i64>,
    /// For a key pair the plan creates: its secret (else one is generated). Never
    /// changes an existing key pair's secret.
    pub secret: Option<String>,
    pub name: String,
    pub description: String,
}

#[derive(Clone, Debug, Default)]
pub struct DesiredGroup {
    pub id: Option<String>,
    pub name: String,
    pub owner: String,
    pub description: String,
}

/// An API: `api.id` may be empty; `api.group_id` names a group (id or name).
#[derive(Clone, Debug)]
pub struct DesiredApi {
    pub api: Api,
}

/// A grant: `app` and the target name them by id or by a name unique in the file.
#[derive(Clone, Debug)]
pub struct DesiredGrant {
    pub id: Option<String>,
    pub app: String,
    pub target: GrantTarget,
    pub stages: Vec<String>,
    pub expires_ms: Option<i64>,
}

/// Everything a file describes, in file order (errors name `apps[2]` and so on).
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub apps: Vec<DesiredApp>,
    pub keys: Vec<DesiredKey>,
    pub groups: Vec<DesiredGroup>,
    pub apis: Vec<DesiredApi>,
    pub grants: Vec<DesiredGrant>,
    /// Owners' declared stages (`stages`); an owner the file leaves out keeps its own.
    pub owner_stages: Vec<(String, Vec<String>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One change of a plan, for the operator to read before it is applied.
#[derive(Clone, Debug)]
pub struct Planned {
    pub action: Action,
    /// `app`, `key_pair`, `group`, `api`, `grant`.
    pub kind: &'static str,
    pub id: String,
    /// The id was made up by this plan (the file gave none): a dry run's is only a
    /// placeholder, the apply makes its own.
    pub new_id: bool,
    /// What is created, or `field: before → after` (never a secret).
    pub detail: String,
}

/// What an apply did: the changes, and the credentials it created (shown once).
#[derive(Debug, Default)]
pub struct Applied {
    pub changes: Vec<Planned>,
    /// New apps, with their AppCode.
    pub apps: Vec<App>,
    /// New key pairs, with their secret.
    pub keys: Vec<KeyPair>,
}

/// The stored state a plan is made against.
struct Current {
    apps: Vec<App>,
    keys: Vec<KeyPair>,
    groups: Vec<Group>,
    apis: Vec<Api>,
    grants: Vec<Grant>,
    owner_stages: HashMap<String, Vec<String>>,
}

/// One step of a plan, in the order `Op::phase` gives.
#[derive(Clone)]
enum Op {
    DeleteGrant(String),
    DeleteKey(String),
    CreateGroup(Group),
    UpdateGroup(String, GroupPatch),
    DeleteApi(String),
    UpdateApi {
        old: Box<Api>,
        new: Box<Api>,
    },
    CreateApi(Box<Api>),
    DeleteGroup(String),
    DeleteApp {
        id: String,
        keys: Vec<String>,
    },
    UpdateApp(String, AppPatch),
    CreateApp {
        app: Box<App>,
        key: Box<KeyPair>,
    },
    UpdateKey(String, KeyPatch),
    CreateKey(KeyPair),
    /// With the ids of every grant its app has or gets in this plan (the one grant
    /// per app and target rule).
    CreateGrant(Grant, Vec<String>),
    /// Before any grant is written: grants are checked against these.
    SetStages(String, Vec<String>),
}

impl Op {
    /// Deletes free names and routes before creates take them; groups exist before
    /// APIs join them and are deleted once APIs left them; apps before their key pairs
    /// and grants.
    fn phase(&self) -> u8 {
        match self {
            Op::DeleteGrant(_) => 0,
            Op::DeleteKey(_) => 1,
            Op::CreateGroup(_) | Op::UpdateGroup(..) => 2,
            Op::DeleteApi(_) => 3,
            Op::UpdateApi { .. } => 4,
            Op::CreateApi(_) => 5,
            Op::DeleteGroup(_) => 6,
            Op::DeleteApp { .. } => 7,
            Op::UpdateApp(..) | Op::CreateApp { .. } => 8,
            Op::UpdateKey(..) | Op::CreateKey(_) => 9,
            Op::CreateGrant(..) => 10,
            Op::SetStages(..) => 0,
        }
    }
}

#[derive(Clone)]
struct Plan {
    ops: Vec<Op>,
    changes: Vec<Planned>,
}

fn invalid(field: String, message: impl Into<String>) -> StoreError {
    StoreError::Plan {
        field,
        message: message.into(),
    }
}

/// References to one kind of entity: the ids the plan leaves in the store, and the
/// names unique among the file's entries (`None`: the name is used twice).
#[derive(Default)]
struct Refs {
    ids: HashSet<String>,
    names: HashMap<String, Option<String>>,
}

impl Refs {
    fn add(&mut self, id: &str, name: &str) {
        self.ids.insert(id.to_owned());
        self.names
            .entry(name.to_owned())
            .and_modify(|v| *v = None)
            .or_insert_with(|| Some(id.to_owned()));
    }

    fn resolve(&self, field: String, kind: &str, r: &str) -> Result<String, StoreError> {
        if self.ids.contains(r) {
            return Ok(r.to_owned());
        }
        match self.names.get(r) {
            Some(Some(id)) => Ok(id.clone()),
            Some(None) => Err(invalid(
                field,
                format!("several {kind}s in the file are named '{r}': name it by id"),
            )),
            None => Err(invalid(
                field,
                format!("no {kind} '{r}' (by id, or by a name in the file)"),
            )),
        }
    }
}

/// Claims stored entities for file entries: two entries that are the same entity
/// are an error, not two updates.
fn claim(
    taken: &mut HashMap<String, usize>,
    id: &str,
    at: usize,
    kind: &str,
    list: &str,
) -> Result<(), StoreError> {
    if let Some(first) = taken.insert(id.to_owned(), at) {
        return Err(invalid(
            format!("{list}[{at}]"),
            format!("the same {kind} as {list}[{first}]"),
        ));
    }
    Ok(())
}

/// Stored owner-scoped entities by id and by owner and name.
struct Owned<'a, T> {
    by_id: HashMap<&'a str, &'a T>,
    by_name: HashMap<(&'a str, &'a str), &'a T>,
}

impl<'a, T> Owned<'a, T> {
    /// `key`: an entity's id, owner and name.
    fn new(items: &'a [T], key: impl Fn(&'a T) -> (&'a String, &'a String, &'a String)) -> Self {
        let mut by_id = HashMap::new();
        let mut by_name = HashMap::new();
        for t in items {
            let (id, owner, name) = key(t);
            by_id.insert(id.as_str(), t);
            by_name.insert((owner.as_str(), name.as_str()), t);
        }
        Self { by_id, by_name }
    }

    /// The entity an entry is: by its id when it has one, else by owner and name.
    fn find(&self, id: Option<&str>, owner: &str, name: &str) -> Option<&'a T> {
        match id {
            Some(id) => self.by_id.get(id).copied(),
            None => self.by_name.get(&(owner, name)).copied(),
        }
    }
}

/// Owners are tenants: an entry cannot move an entity to another one.
fn same_owner(stored: &str, wanted: &str, list: &str, i: usize) -> Result<(), StoreError> {
    if stored == wanted {
        return Ok(());
    }
    Err(invalid(
        format!("{list}[{i}].owner"),
        format!("the owner cannot change from '{stored}' (delete and re-create instead)"),
    ))
}

fn same_stages(a: &[String], b: &[String]) -> bool {
    let norm = |s: &[String]| {
        let mut v: Vec<String> = s.iter().map(|x| x.to_ascii_uppercase()).collect();
        v.sort();
        v.dedup();
        v
    };
    norm(a) == norm(b)
}

fn make_plan(cur: &Current, want: &Desired, prune: bool, now_ms: i64) -> Result<Plan, StoreError> {
    let mut ops = Vec::new();
    let mut changes = Vec::new();
    let mut note = |action, kind, id: &str, detail: String| {
        changes.push(Planned {
            action,
            kind,
            id: id.to_owned(),
            new_id: false,
            detail,
        });
    };
    // Ids this plan makes up, to mark their changes.
    let mut made: HashSet<String> = HashSet::new();

    // --- owners' stages ---
    let mut seen_owners = HashSet::new();
    for (i, (owner, stages)) in want.owner_stages.iter().enumerate() {
        if !seen_owners.insert(owner.clone()) {
            return Err(invalid(
                format!("owner_stages[{i}]"),
                format!("owner '{owner}' is declared twice"),
            ));
        }
        if cur.owner_stages.get(owner) != Some(stages) {
            note(
                Action::Update,
                "owner_stages",
                owner,
                format!(
                    "stages: [{}] → [{}]",
                    cur.owner_stages
                        .get(owner)
                        .map_or(String::new(), |s| s.join(", ")),
                    stages.join(", ")
                ),
            );
            ops.push(Op::SetStages(owner.clone(), stages.clone()));
        }
    }

    // --- groups ---
    let stored = Owned::new(&cur.groups, |g| (&g.id, &g.owner, &g.name));
    let mut groups = Refs::default();
    let mut taken = HashMap::new();
    for (i, d) in want.groups.iter().enumerate() {
        let found = stored.find(d.id.as_deref(), &d.owner, &d.name);
        let id = match found {
            Some(old) => {
                claim(&mut taken, &old.id, i, "group", "groups")?;
                same_owner(&old.owner, &d.owner, "groups", i)?;
                let patch = GroupPatch {
                    name: (old.name != d.name).then(|| d.name.clone()),
                    description: (old.description != d.description).then(|| d.description.clone()),
                };
                if patch.name.is_some() || patch.description.is_some() {
                    let after = Group {
                        name: d.name.clone(),
                        description: d.description.clone(),
                        ..(*old).clone()
                    };
                    note(Action::Update, "group", &old.id, summary::diff(old, &after));
                    ops.push(Op::UpdateGroup(old.id.clone(), patch));
                }
                old.id.clone()
            }
            None => {
                let g = Group {
                    id: match &d.id {
                        Some(id) => id.clone(),
                        None => made_id(&mut made, "grp", now_ms)?,
                    },
                    name: d.name.clone(),
                    owner: d.owner.clone(),
                    description: d.description.clone(),
                    create_ms: now_ms,
                    update_ms: now_ms,
                };
                claim(&mut taken, &g.id, i, "group", "groups")?;
                note(Action::Create, "group", &g.id, summary::describe(&g));
                let id = g.id.clone();
                ops.push(Op::CreateGroup(g));
                id
            }
        };
        groups.add(&id, &d.name);
    }
    let pruned_groups: Vec<&Group> = cur
        .groups
        .iter()
        .filter(|g| !taken.contains_key(&g.id))
        .collect();
    if !prune {
        for g in &pruned_groups {
            groups.ids.insert(g.id.clone());
        }
    }

    // --- APIs ---
    let by_id: HashMap<&str, &Api> = cur.apis.iter().map(|a| (a.id.as_str(), a)).collect();
    let by_name: HashMap<&str, &Api> = cur.apis.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut apis = Refs::default();
    let mut taken = HashMap::new();
    for (i, d) in want.apis.iter().enumerate() {
        let mut api = d.api.clone();
        api.group_id = api
            .group_id
            .as_deref()
            .map(|g| groups.resolve(format!("apis[{i}].group_id"), "group", g))
            .transpose()?;
        let found = if api.id.is_empty() {
            by_name.get(api.name.as_str())
        } else {
            by_id.get(api.id.as_str())
        };
        match found {
            Some(old) => {
                claim(&mut taken, &old.id, i, "API", "apis")?;
                same_owner(&old.owner, &api.owner, "apis", i)?;
                api.id = old.id.clone();
                api.create_ms = old.create_ms;
                api.update_ms = old.update_ms;
                if api != **old {
                    note(Action::Update, "api", &api.id, summary::diff(*old, &api));
                    api.update_ms = now_ms;
                    ops.push(Op::UpdateApi {
                        old: Box::new((*old).clone()),
                        new: Box::new(api.clone()),
                    });
                }
            }
            None => {
                if api.id.is_empty() {
                    api.id = made_id(&mut made, "api", now_ms)?;
                }
                api.create_ms = now_ms;
                api.update_ms = now_ms;
                claim(&mut taken, &api.id, i, "API", "apis")?;
                note(Action::Create, "api", &api.id, summary::describe(&api));
                ops.push(Op::CreateApi(Box::new(api.clone())));
            }
        }
        apis.add(&api.id, &api.name);
    }
    let pruned_apis: Vec<&Api> = cur
        .apis
        .iter()
        .filter(|a| !taken.contains_key(&a.id))
        .collect();
    if !prune {
        for a in &pruned_apis {
            apis.ids.insert(a.id.clone());
        }
    }

    // --- apps ---
    let stored = Owned::new(&cur.apps, |a| (&a.id, &a.owner, &a.name));
    let mut apps = Refs::default();
    let mut taken = HashMap::new();
    let mut new_apps: HashMap<String, App> = HashMap::new();
    let mut new_app_order = Vec::new();
    for (i, d) in want.apps.iter().enumerate() {
        let found = stored.find(d.id.as_deref(), &d.owner, &d.name);
        let id = match found {
            Some(old) => {
                claim(&mut taken, &old.id, i, "app", "apps")?;
                same_owner(&old.owner, &d.owner, "apps", i)?;
                let patch = AppPatch {
                    name: (old.name != d.name).then(|| d.name.clone()),
                    description: (old.description != d.description).then(|| d.description.clone()),
                    tags: (old.tags != d.tags).then(|| d.tags.clone()),
                    extend_info: (old.extend_info != d.extend_info).then(|| d.extend_info.clone()),
                    enabled: (old.enabled != d.enabled).then_some(d.enabled),
                };
                let after = App {
                    name: d.name.clone(),
                    description: d.description.clone(),
                    tags: d.tags.clone(),
                    extend_info: d.extend_info.clone(),
                    enabled: d.enabled,
                    ..(*old).clone()
                };
                if after != *old {
                    note(Action::Update, "app", &old.id, summary::diff(old, &after));
                    ops.push(Op::UpdateApp(old.id.clone(), patch));
                }
                old.id.clone()
            }
            None => {
                let app = App {
                    id: match &d.id {
                        Some(id) => id.clone(),
                        None => made_id(&mut made, "app", now_ms)?,
                    },
                    name: d.name.clone(),
                    owner: d.owner.clone(),
                    description: d.description.clone(),
                    tags: d.tags.clone(),
                    extend_info: d.extend_info.clone(),
                    app_code: Some(Secret::new(generate_app_code()?)),
                    enabled: d.enabled,
                    create_ms: now_ms,
                    update_ms: now_ms,
                };
                claim(&mut taken, &app.id, i, "app", "apps")?;
                note(Action::Create, "app", &app.id, summary::describe(&app));
                new_app_order.push(app.id.clone());
                let id = app.id.clone();
                new_apps.insert(id.clone(), app);
                id
            }
        };
        apps.add(&id, &d.name);
    }
    let pruned_apps: Vec<&App> = cur
        .apps
        .iter()
        .filter(|a| !taken.contains_key(&a.id))
        .collect();
    if !prune {
        for a in &pruned_apps {
            apps.ids.insert(a.id.clone());
        }
    }

    // --- key pairs ---
    let by_key: HashMap<&str, &KeyPair> =
        cur.keys.iter().map(|k| (k.app_key.as_str(), k)).collect();
    let mut taken = HashMap::new();
    let mut defaults: HashMap<String, KeyPair> = HashMap::new();
    for (i, d) in want.keys.iter().enumerate() {
        let app_id = apps.resolve(format!("key_pairs[{i}].app"), "app", &d.app)?;
        claim(&mut taken, &d.app_key, i, "key pair", "key_pairs")?;
        match by_key.get(d.app_key.as_str()) {
            Some(old) => {
                if old.app_id != app_id {
                    return Err(invalid(
                        format!("key_pairs[{i}].app"),
                        format!("key pair '{}' belongs to app '{}'", old.app_key, old.app_id),
                    ));
                }
                if old.is_default != d.is_default {
                    return Err(invalid(
                        format!("key_pairs[{i}].default"),
                        "which key pair is an app's default cannot change",
                    ));
                }
                let after = KeyPair {
                    enabled: d.enabled,
                    expires_ms: d.expires_ms,
                    name: d.name.clone(),
                    description: d.description.clone(),
                    ..(*old).clone()
                };
                if after.expires_ms != old.expires_ms {
                    ahead(format!("key_pairs[{i}].expires_at"), d.expires_ms, now_ms)?;
                }
                if after != **old {
                    note(
                        Action::Update,
                        "key_pair",
                        &old.app_key,
                        summary::diff(*old, &after),
                    );
                    ops.push(Op::UpdateKey(
                        old.app_key.clone(),
                        KeyPatch {
                            expires_ms: (old.expires_ms != d.expires_ms).then_some(d.expires_ms),
                            enabled: (old.enabled != d.enabled).then_some(d.enabled),
                            name: (old.name != d.name).then(|| d.name.clone()),
                            description: (old.description != d.description)
                                .then(|| d.description.clone()),
                        },
                    ));
                }
            }
            None => {
                ahead(format!("key_pairs[{i}].expires_at"), d.expires_ms, now_ms)?;
                let key = KeyPair {
                    app_key: d.app_key.clone(),
                    app_id: app_id.clone(),
                    name: d.name.clone(),
                    description: d.description.clone(),
                    secret: given_or(d.secret.clone(), generate_secret)?,
                    is_default: d.is_default,
                    enabled: d.enabled,
                    expires_ms: d.expires_ms,
                    previous: None,
                    create_ms: now_ms,
                    update_ms: now_ms,
                };
                note(
                    Action::Create,
                    "key_pair",
                    &key.app_key,
                    summary::describe(&key),
                );
                if !d.is_default {
                    ops.push(Op::CreateKey(key));
                } else if !new_apps.contains_key(&app_id) {
                    return Err(invalid(
                        format!("key_pairs[{i}].default"),
                        format!("app '{app_id}' exists and keeps its default key pair"),
                    ));
                } else if defaults.insert(app_id.clone(), key).is_some() {
                    return Err(invalid(
                        format!("key_pairs[{i}].default"),
                        format!("app '{app_id}' has another default key pair in the file"),
                    ));
                }
            }
        }
    }
    for id in new_app_order {
        let Some(app) = new_apps.remove(&id) else {
            continue;
        };
        let key = match defaults.remove(&id) {
            Some(k) => k,
            None => {
                // Every app has a default key pair: one the file did not describe.
                let k = KeyPair {
                    app_key: {
                        let k = super::ops::generate_app_key()?;
                        made.insert(k.clone());
                        k
                    },
                    app_id: id.clone(),
                    name: "default".into(),
                    description: String::new(),
                    secret: Secret::new(generate_secret()?),
                    is_default: true,
                    enabled: true,
                    expires_ms: None,
                    previous: None,
                    create_ms: now_ms,
                    update_ms: now_ms,
                };
                note(
                    Action::Create,
                    "key_pair",
                    &k.app_key,
                    summary::describe(&k),
                );
                k
            }
        };
        ops.push(Op::CreateApp {
            app: Box::new(app),
            key: Box::new(key),
        });
    }

    // --- grants ---
    let mut taken: HashMap<String, usize> = HashMap::new();
    for (i, d) in want.grants.iter().enumerate() {
        let app_id = apps.resolve(format!("grants[{i}].app"), "app", &d.app)?;
        let target = match &d.target {
            GrantTarget::Api(r) => {
                GrantTarget::Api(apis.resolve(format!("grants[{i}].api"), "API", r)?)
            }
            GrantTarget::Group(r) => {
                GrantTarget::Group(groups.resolve(format!("grants[{i}].group"), "group", r)?)
            }
        };
        let found = cur.grants.iter().find(|g| match &d.id {
            Some(id) => &g.id == id,
            None => g.app_id == app_id && g.target == target && !taken.contains_key(&g.id),
        });
        let mut grant = Grant {
            id: String::new(),
            app_id,
            target,
            stages: d.stages.iter().map(|s| s.to_ascii_uppercase()).collect(),
            expires_ms: d.expires_ms,
            created_by: String::new(),
            create_ms: now_ms,
        };
        match found {
            Some(old) => {
                claim(&mut taken, &old.id, i, "grant", "grants")?;
                grant.id = old.id.clone();
                // Shown unchanged; the re-created grant is the applier's (`run_op`).
                grant.created_by = old.created_by.clone();
                grant.create_ms = old.create_ms;
                if old.expires_ms != grant.expires_ms {
                    ahead(format!("grants[{i}].expires_at"), grant.expires_ms, now_ms)?;
                }
                let same = old.app_id == grant.app_id
                    && old.target == grant.target
                    && same_stages(&old.stages, &grant.stages)
                    && old.expires_ms == grant.expires_ms;
                if !same {
                    // A grant has no update of its own: it is replaced under its id.
                    note(Action::Update, "grant", &old.id, summary::diff(old, &grant));
                    ops.push(Op::DeleteGrant(old.id.clone()));
                    ops.push(Op::CreateGrant(grant, Vec::new()));
                }
            }
            None => {
                ahead(format!("grants[{i}].expires_at"), grant.expires_ms, now_ms)?;
                grant.id = match &d.id {
                    Some(id) => id.clone(),
                    None => made_id(&mut made, "grt", now_ms)?,
                };
                claim(&mut taken, &grant.id, i, "grant", "grants")?;
                note(
                    Action::Create,
                    "grant",
                    &grant.id,
                    summary::describe(&grant),
                );
                ops.push(Op::CreateGrant(grant, Vec::new()));
            }
        }
    }

    // --- prune: what the file does not describe ---
    if prune {
        let gone_apps: HashSet<&str> = pruned_apps.iter().map(|a| a.id.as_str()).collect();
        for g in cur.grants.iter().filter(|g| !taken.contains_key(&g.id)) {
            note(Action::Delete, "grant", &g.id, summary::describe(g));
            ops.push(Op::DeleteGrant(g.id.clone()));
        }
        let described: HashSet<&str> = want.keys.iter().map(|k| k.app_key.as_str()).collect();
        for k in &cur.keys {
            if described.contains(k.app_key.as_str()) || gone_apps.contains(k.app_id.as_str()) {
                continue;
            }
            if k.is_default {
                // Kept: a default key pair goes only with its app.
                continue;
            }
            note(
                Action::Delete,
                "key_pair",
                &k.app_key,
                format!("app={}", k.app_id),
            );
            ops.push(Op::DeleteKey(k.app_key.clone()));
        }
        for a in &pruned_apis {
            note(Action::Delete, "api", &a.id, format!("name={}", a.name));
            ops.push(Op::DeleteApi(a.id.clone()));
        }
        for g in &pruned_groups {
            note(Action::Delete, "group", &g.id, format!("name={}", g.name));
            ops.push(Op::DeleteGroup(g.id.clone()));
        }
        for a in &pruned_apps {
            let keys: Vec<String> = cur
                .keys
                .iter()
                .filter(|k| k.app_id == a.id)
                .map(|k| k.app_key.clone())
                .collect();
            note(
                Action::Delete,
                "app",
                &a.id,
                format!("name={} keys={}", a.name, keys.len()),
            );
            ops.push(Op::DeleteApp {
                id: a.id.clone(),
                keys,
            });
        }
    }
    let mut by_app: HashMap<String, Vec<String>> = HashMap::new();
    for g in &cur.grants {
        by_app
            .entry(g.app_id.clone())
            .or_default()
            .push(g.id.clone());
    }
    for op in &ops {
        if let Op::CreateGrant(g, _) = op {
            by_app
                .entry(g.app_id.clone())
                .or_default()
                .push(g.id.clone());
        }
    }
    for op in &mut ops {
        if let Op::CreateGrant(g, siblings) = op {
            *siblings = by_app.get(&g.app_id).cloned().unwrap_or_default();
        }
    }
    // Stable: within a phase, file order (and a grant's delete before its re-create).
    ops.sort_by_key(Op::phase);
    for c in &mut changes {
        c.new_id = made.contains(&c.id);
    }
    Ok(Plan { ops, changes })
}

/// An expiry the file creates or changes must lie ahead (one it keeps may have
/// passed: a file exported earlier still applies).
fn ahead(field: String, expires_ms: Option<i64>, now_ms: i64) -> Result<(), StoreError> {
    match expires_ms {
        Some(e) if e <= now_ms => Err(invalid(field, "is in the past")),
        _ => Ok(()),
    }
}

fn made_id(made: &mut HashSet<String>, prefix: &str, now_ms: i64) -> Result<String, StoreError> {
    let id = new_id(prefix, now_ms)?;
    made.insert(id.clone());
    Ok(id)
}

/// The audit summary of a whole apply, bounded: a large apply lists its first changes
/// and counts the rest.
fn audit_summary(changes: &[Planned]) -> String {
    const MAX: usize = 16 * 1024;
    let count = |a: Action| changes.iter().filter(|c| c.action == a).count();
    let mut out = format!(
        "created {}, updated {}, deleted {}",
        count(Action::Create),
        count(Action::Update),
        count(Action::Delete)
    );
    for (n, c) in changes.iter().enumerate() {
        let line = format!("; {} {} {}: {}", c.action.as_str(), c.kind, c.id, c.detail);
        if out.len() + line.len() > MAX {
            out.push_str(&format!("; … and {} more", changes.len() - n));
            break;
        }
        out.push_str(&line);
    }
    out
}

impl Store {
    fn current(&self) -> Result<Current, StoreError> {
        Ok(Current {
            apps: self.all_apps().collect::<Result<_, _>>()?,
            keys: self.all_keys().collect::<Result<_, _>>()?,
            groups: self.all_groups().collect::<Result<_, _>>()?,
            apis: self.all_apis().collect::<Result<_, _>>()?,
            grants: self.all_grants().collect::<Result<_, _>>()?,
            owner_stages: self.all_owner_stages()?.into_iter().collect(),
        })
    }

    /// What `apply` would change, changing nothing.
    pub fn plan(&self, want: &Desired, prune: bool) -> Result<Vec<Planned>, StoreError> {
        Ok(make_plan(&self.current()?, want, prune, self.now_ms())?.changes)
    }

    /// Makes the store match `want` in one transaction with one audit record
    /// (`Apply`); nothing at all when it already does.
    pub async fn apply(
        &self,
        actor: &str,
        want: &Desired,
        prune: bool,
    ) -> Result<(Applied, Vec<Change>), StoreError> {
        let plan = self
            .write(
                || make_plan(&self.current()?, want, prune, self.now_ms()),
                |tx, plan| {
                    // Nothing to do writes nothing, not even an audit record: a second
                    // apply of the same file leaves no trace.
                    if plan.ops.is_empty() {
                        return Ok(plan.clone());
                    }
                    for op in &plan.ops {
                        self.run_op(tx, op, actor)?;
                    }
                    super::ops::audit(
                        tx,
                        actor,
                        "Apply",
                        "config",
                        "",
                        audit_summary(&plan.changes),
                    )?;
                    Ok(plan.clone())
                },
            )
            .await?;
        let mut applied = Applied::default();
        let mut changes = Vec::new();
        for op in plan.ops {
            match op {
                Op::DeleteGrant(id) => changes.push(Change::Grant(id)),
                Op::CreateGrant(g, _) => changes.push(Change::Grant(g.id)),
                Op::SetStages(..) => {}
                Op::DeleteKey(k) | Op::UpdateKey(k, _) => changes.push(Change::Key(k)),
                Op::CreateKey(k) => {
                    changes.push(Change::Key(k.app_key.clone()));
                    applied.keys.push(k);
                }
                Op::CreateGroup(g) => changes.push(Change::Group(g.id)),
                Op::UpdateGroup(id, _) | Op::DeleteGroup(id) => changes.push(Change::Group(id)),
                Op::DeleteApi(id) => changes.push(Change::Api(id)),
                Op::UpdateApi { new, .. } => changes.push(Change::Api(new.id)),
                Op::CreateApi(a) => changes.push(Change::Api(a.id)),
                Op::DeleteApp { id, keys } => {
                    changes.push(Change::App(id));
                    changes.extend(keys.into_iter().map(Change::Key));
                }
                Op::UpdateApp(id, _) => changes.push(Change::App(id)),
                Op::CreateApp { app, key } => {
                    changes.push(Change::App(app.id.clone()));
                    changes.push(Change::Key(key.app_key.clone()));
                    applied.apps.push(*app);
                    applied.keys.push(*key);
                }
            }
        }
        applied.changes = plan.changes;
        Ok((applied, changes))
    }

    fn run_op(&self, tx: &Tx<'_>, op: &Op, actor: &str) -> TxResult<()> {
        let abort = super::ops::ConflictAbort::from;
        match op {
            Op::DeleteGrant(id) => {
                super::ops::delete_grants_by_id_tx(tx, std::slice::from_ref(id))?
            }
            Op::DeleteKey(k) => {
                delete_key_tx(tx, k)?;
            }
            Op::CreateGroup(g) => insert_group_tx(tx, g)?,
            Op::UpdateGroup(id, patch) => {
                super::ops::update_group_tx(tx, id, patch)?;
            }
            Op::DeleteApi(id) => {
                delete_api_tx(tx, id, &[])?;
            }
            Op::UpdateApi { old, new } => Store::put_api_tx(tx, new, Some(old))?,
            Op::CreateApi(a) => {
                if tx.exists(Tree::Apis, a.id.as_bytes())? {
                    return Err(abort(StoreError::AlreadyExists(format!(
                        "Api.id '{}' already exists",
                        a.id
                    ))));
                }
                Store::put_api_tx(tx, a, None)?;
            }
            Op::DeleteGroup(id) => {
                delete_group_tx(tx, id, &[], &[])?;
            }
            Op::DeleteApp { id, keys } => {
                self.delete_app_tx(tx, id, keys, &[])?;
            }
            Op::UpdateApp(id, patch) => {
                self.update_app_tx(tx, id, patch)?;
            }
            Op::CreateApp { app, key } => {
                let code = app
                    .app_code
                    .as_ref()
                    .map(|c| c.expose())
                    .unwrap_or_default();
                let fp = self.app_code_fingerprint(code);
                let app_rec = app_to_record(&self.sealer, app).map_err(abort)?;
                let key_rec = key_to_record(&self.sealer, key).map_err(abort)?;
                insert_app_tx(tx, app, &app_rec, &fp, key, &key_rec)?;
            }
            Op::UpdateKey(k, patch) => {
                self.update_key_tx(tx, k, patch)?;
            }
            Op::CreateKey(k) => {
                let rec = key_to_record(&self.sealer, k).map_err(abort)?;
                insert_key_tx(tx, k, &rec)?;
            }
            Op::SetStages(owner, stages) => {
                tx.put(
                    Tree::OwnerStages,
                    owner.as_bytes(),
                    &super::codec::OwnerStagesRecord {
                        owner: owner.clone(),
                        stages: stages.clone(),
                    },
                )?;
            }
            Op::CreateGrant(g, siblings) => {
                let g = Grant {
                    created_by: actor.to_owned(),
                    ..g.clone()
                };
                insert_grant_tx(tx, &g, &grant_to_record(&g), siblings)?;
            }
        }
        Ok(())
    }
}
