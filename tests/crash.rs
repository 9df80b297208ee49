//! Crash safety: concurrent admin writes against the real binary, `kill -9` at a random
//! moment, restart, and prove that nothing acknowledged was lost and nothing was left
//! half-written.
//!
//! Each worker owns its resources (apps, keys, groups, APIs, grants of owner `w<N>`) and
//! keeps a model of them: the state after every acknowledged write (`ack`), plus the one
//! write that was in flight when the process died (`pending`). After the restart the
//! store, read back through the admin API, must equal either the model without the
//! pending write or the model with it, exactly: a lost acknowledged write, a partial
//! multi-tree write (an app without its default key, a grant whose API is gone, a key
//! without its app) or a half-applied cascade cannot match either. Secrets are checked
//! by signing a request with the model's secret and asking the check listener, so a
//! reset that was acknowledged but lost, or a sealed secret that no longer opens, fails
//! too. Across workers: the index sizes equal what the API lists (no orphan record in
//! any tree), every grant's app and target exist, and the audit log holds exactly one
//! event per committed write.
//!
//! Run on both engines: sled, and (feature `etcd`) a replica on a one-member etcd.
//!
//! Budget: `KEYGATE_CRASH_TRIALS` (default 20; `KEYGATE_SOAK=1` makes it 200).
//! `KEYGATE_CRASH_SEED` replays a run (the seed is printed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Admin, Keygate};
use keygate::pb::admin as pb;
use keygate::scheme::SchemeKind;
use prost_types::FieldMask;
use tonic::Status;

const WORKERS: usize = 4;

// === a small deterministic PRNG (no rand dependency; the seed is printed) ===

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    /// xorshift64*
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len()))
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// === the model ===

/// A grant's target, by name (server ids differ between a model and what a lost
/// response would have told us).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Api(String),
    Group(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct AppS {
    description: String,
    enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyS {
    app_id: String,
    enabled: bool,
    /// `None`: not known to the test (the default key of a create whose response was
    /// lost); matches any secret.
    secret: Option<String>,
}

/// What one worker's resources look like, by client-chosen names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Shape {
    /// app id -> state
    apps: BTreeMap<String, AppS>,
    /// custom AppKey, or `default:<app id>` for an app's default key
    keys: BTreeMap<String, KeyS>,
    /// group names
    groups: BTreeSet<String>,
    /// API name -> group name
    apis: BTreeMap<String, Option<String>>,
    /// (app id, target)
    grants: BTreeSet<(String, Target)>,
}

fn default_key_name(app: &str) -> String {
    format!("default:{app}")
}

/// One admin write, with everything the client chose.
#[derive(Clone, Debug)]
enum Op {
    CreateApp {
        id: String,
    },
    CreateKey {
        app: String,
        key: String,
        secret: String,
    },
    ResetSecret {
        key: String,
        secret: String,
    },
    Describe {
        app: String,
        description: String,
    },
    SetAppEnabled {
        app: String,
        on: bool,
    },
    SetKeyEnabled {
        key: String,
        on: bool,
    },
    CreateGroup {
        name: String,
    },
    CreateApi {
        name: String,
        group: Option<String>,
    },
    CreateGrant {
        app: String,
        target: Target,
    },
    DeleteGrant {
        app: String,
        target: Target,
    },
    DeleteKey {
        key: String,
    },
    DeleteApi {
        name: String,
    },
    DeleteGroup {
        name: String,
    },
    DeleteApp {
        app: String,
    },
}

impl Shape {
    /// The state after `op` committed. Cascades as the store documents them.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::CreateApp { id } => {
                self.apps.insert(
                    id.clone(),
                    AppS {
                        description: String::new(),
                        enabled: true,
                    },
                );
                self.keys.insert(
                    default_key_name(id),
                    KeyS {
                        app_id: id.clone(),
                        enabled: true,
                        secret: None,
                    },
                );
            }
            Op::CreateKey { app, key, secret } => {
                self.keys.insert(
                    key.clone(),
                    KeyS {
                        app_id: app.clone(),
                        enabled: true,
                        secret: Some(secret.clone()),
                    },
                );
            }
            Op::ResetSecret { key, secret } => {
                self.keys.get_mut(key).unwrap().secret = Some(secret.clone());
            }
            Op::Describe { app, description } => {
                self.apps.get_mut(app).unwrap().description = description.clone();
            }
            Op::SetAppEnabled { app, on } => self.apps.get_mut(app).unwrap().enabled = *on,
            Op::SetKeyEnabled { key, on } => self.keys.get_mut(key).unwrap().enabled = *on,
            Op::CreateGroup { name } => {
                self.groups.insert(name.clone());
            }
            Op::CreateApi { name, group } => {
                self.apis.insert(name.clone(), group.clone());
            }
            Op::CreateGrant { app, target } => {
                self.grants.insert((app.clone(), target.clone()));
            }
            Op::DeleteGrant { app, target } => {
                self.grants.remove(&(app.clone(), target.clone()));
            }
            Op::DeleteKey { key } => {
                self.keys.remove(key);
            }
            Op::DeleteApi { name } => {
                self.apis.remove(name);
                self.grants.retain(|(_, t)| *t != Target::Api(name.clone()));
            }
            Op::DeleteGroup { name } => {
                self.groups.remove(name);
                self.grants
                    .retain(|(_, t)| *t != Target::Group(name.clone()));
            }
            Op::DeleteApp { app } => {
                self.apps.remove(app);
                self.keys.retain(|_, k| k.app_id != *app);
                self.grants.retain(|(a, _)| a != app);
            }
        }
    }

    /// `self` is a model: does the store's `actual` state match it? Unknown secrets
    /// match anything.
    fn admits(&self, actual: &Shape) -> bool {
        let mut a = actual.clone();
        for (name, k) in &self.keys {
            if k.secret.is_none()
                && let Some(ak) = a.keys.get_mut(name)
            {
                ak.secret = None;
            }
        }
        *self == a
    }
}

/// A worker's model plus the server ids it learnt.
#[derive(Clone, Debug, Default)]
struct World {
    shape: Shape,
    group_ids: BTreeMap<String, String>,
    api_ids: BTreeMap<String, String>,
    grant_ids: BTreeMap<(String, Target), String>,
    /// key name -> AppKey (identity for custom keys; the server's for default keys)
    app_keys: BTreeMap<String, String>,
    /// Names handed out so far (never reused, even for a create that was lost).
    next: u64,
}

impl World {
    fn fresh(&mut self, w: usize, kind: &str) -> String {
        self.next += 1;
        format!("w{w}-{kind}{}", self.next)
    }

    fn target_id(&self, t: &Target) -> String {
        match t {
            Target::Api(n) => self.api_ids[n].clone(),
            Target::Group(n) => self.group_ids[n].clone(),
        }
    }

    /// A random write that the store must accept in this state.
    fn choose(&mut self, w: usize, rng: &mut Rng) -> Op {
        let apps: Vec<String> = self.shape.apps.keys().cloned().collect();
        let keys: Vec<String> = self.shape.keys.keys().cloned().collect();
        let custom: Vec<String> = keys
            .iter()
            .filter(|k| !k.starts_with("default:"))
            .cloned()
            .collect();
        let groups: Vec<String> = self.shape.groups.iter().cloned().collect();
        let apis: Vec<String> = self.shape.apis.keys().cloned().collect();
        let grants: Vec<(String, Target)> = self.shape.grants.iter().cloned().collect();
        let empty_groups: Vec<String> = groups
            .iter()
            .filter(|g| !self.shape.apis.values().any(|v| v.as_ref() == Some(*g)))
            .cloned()
            .collect();
        if apps.len() < 2 {
            return Op::CreateApp {
                id: self.fresh(w, "a"),
            };
        }
        loop {
            let op = match rng.below(14) {
                0 if apps.len() < 6 => Op::CreateApp {
                    id: self.fresh(w, "a"),
                },
                1 if keys.len() < 16 => {
                    let app = rng.pick(&apps).unwrap().clone();
                    let key = self.fresh(w, "k");
                    let secret = format!("crash-secret-{key}-{:016x}", rng.next());
                    Op::CreateKey { app, key, secret }
                }
                2 => {
                    let key = rng.pick(&keys).unwrap().clone();
                    let secret = format!("crash-reset-{key}-{:016x}", rng.next());
                    Op::ResetSecret { key, secret }
                }
                3 => {
                    let app = rng.pick(&apps).unwrap().clone();
                    let description = self.fresh(w, "rev");
                    Op::Describe { app, description }
                }
                4 => {
                    let app = rng.pick(&apps).unwrap().clone();
                    let on = !self.shape.apps[&app].enabled;
                    Op::SetAppEnabled { app, on }
                }
                5 => {
                    let key = rng.pick(&keys).unwrap().clone();
                    let on = !self.shape.keys[&key].enabled;
                    Op::SetKeyEnabled { key, on }
                }
                6 if groups.len() < 4 => Op::CreateGroup {
                    name: self.fresh(w, "g"),
                },
                7 if apis.len() < 8 => {
                    let group = if rng.below(2) == 0 {
                        rng.pick(&groups).cloned()
                    } else {
                        None
                    };
                    Op::CreateApi {
                        name: self.fresh(w, "api"),
                        group,
                    }
                }
                8 if !apis.is_empty() || !groups.is_empty() => {
                    let app = rng.pick(&apps).unwrap().clone();
                    let target = if !groups.is_empty() && (apis.is_empty() || rng.below(3) == 0) {
                        Target::Group(rng.pick(&groups).unwrap().clone())
                    } else {
                        Target::Api(rng.pick(&apis).unwrap().clone())
                    };
                    if self.shape.grants.contains(&(app.clone(), target.clone())) {
                        continue;
                    }
                    Op::CreateGrant { app, target }
                }
                9 if !grants.is_empty() => {
                    let (app, target) = rng.pick(&grants).unwrap().clone();
                    Op::DeleteGrant { app, target }
                }
                10 if !custom.is_empty() => Op::DeleteKey {
                    key: rng.pick(&custom).unwrap().clone(),
                },
                11 if !apis.is_empty() && rng.below(2) == 0 => Op::DeleteApi {
                    name: rng.pick(&apis).unwrap().clone(),
                },
                12 if !empty_groups.is_empty() && rng.below(2) == 0 => Op::DeleteGroup {
                    name: rng.pick(&empty_groups).unwrap().clone(),
                },
                13 if apps.len() > 3 => Op::DeleteApp {
                    app: rng.pick(&apps).unwrap().clone(),
                },
                _ => continue,
            };
            return op;
        }
    }

    /// Sends `op`; on success records it (and what the response told us).
    async fn exec(&mut self, c: &mut Admin, w: usize, op: &Op) -> Result<(), Status> {
        let mask = |p: &str| {
            Some(FieldMask {
                paths: vec![p.to_owned()],
            })
        };
        let mut secret_of_default = None;
        match op {
            Op::CreateApp { id } => {
                let r = c
                    .create_app(pb::CreateAppRequest {
                        app: Some(pb::App {
                            id: id.clone(),
                            name: id.clone(),
                            owner: format!("w{w}"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let k = r.key_pair.expect("default key in CreateApp response");
                self.app_keys.insert(default_key_name(id), k.app_key);
                secret_of_default = Some(k.app_secret);
            }
            Op::CreateKey { app, key, secret } => {
                c.create_key_pair(pb::CreateKeyPairRequest {
                    name: Default::default(),
                    description: Default::default(),
                    app_id: app.clone(),
                    app_key: key.clone(),
                    app_secret: secret.clone(),
                    expires_at: None,
                })
                .await?;
                self.app_keys.insert(key.clone(), key.clone());
            }
            Op::ResetSecret { key, secret } => {
                c.reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
                    app_key: self.app_keys[key].clone(),
                    grace_period: None,
                    app_secret: secret.clone(),
                    ..Default::default()
                })
                .await?;
            }
            Op::Describe { app, description } => {
                c.update_app(pb::UpdateAppRequest {
                    app: Some(pb::App {
                        id: app.clone(),
                        description: description.clone(),
                        ..Default::default()
                    }),
                    update_mask: mask("description"),
                })
                .await?;
            }
            Op::SetAppEnabled { app, on } => {
                let id = app.clone();
                if *on {
                    c.enable_app(pb::EnableAppRequest { id }).await?;
                } else {
                    c.disable_app(pb::DisableAppRequest { id }).await?;
                }
            }
            Op::SetKeyEnabled { key, on } => {
                let app_key = self.app_keys[key].clone();
                if *on {
                    c.enable_key_pair(pb::EnableKeyPairRequest { app_key })
                        .await?;
                } else {
                    c.disable_key_pair(pb::DisableKeyPairRequest { app_key })
                        .await?;
                }
            }
            Op::CreateGroup { name } => {
                let g = c
                    .create_group(pb::CreateGroupRequest {
                        group: Some(pb::Group {
                            name: name.clone(),
                            owner: format!("w{w}"),
                            ..Default::default()
                        }),
                    })
                    .await?
                    .into_inner();
                self.group_ids.insert(name.clone(), g.id);
            }
            Op::CreateApi { name, group } => {
                let a = c
                    .create_api(pb::CreateApiRequest {
                        api: Some(pb::Api {
                            name: name.clone(),
                            owner: format!("w{w}"),
                            path: format!("/crash/{name}/{{id}}"),
                            group_id: group
                                .as_ref()
                                .map(|g| self.group_ids[g].clone())
                                .unwrap_or_default(),
                            ..Default::default()
                        }),
                    })
                    .await?
                    .into_inner();
                self.api_ids.insert(name.clone(), a.id);
            }
            Op::CreateGrant { app, target } => {
                let id = self.target_id(target);
                let t = match target {
                    Target::Api(_) => pb::grant::Target::ApiId(id),
                    Target::Group(_) => pb::grant::Target::GroupId(id),
                };
                let g = c
                    .create_grant(pb::CreateGrantRequest {
                        grant: Some(pb::Grant {
                            app_id: app.clone(),
                            target: Some(t),
                            ..Default::default()
                        }),
                    })
                    .await?
                    .into_inner();
                self.grant_ids.insert((app.clone(), target.clone()), g.id);
            }
            Op::DeleteGrant { app, target } => {
                let id = self.grant_ids[&(app.clone(), target.clone())].clone();
                c.delete_grant(pb::DeleteGrantRequest { id }).await?;
            }
            Op::DeleteKey { key } => {
                let app_key = self.app_keys[key].clone();
                c.delete_key_pair(pb::DeleteKeyPairRequest { app_key })
                    .await?;
            }
            Op::DeleteApi { name } => {
                let id = self.api_ids[name].clone();
                c.delete_api(pb::DeleteApiRequest { id }).await?;
            }
            Op::DeleteGroup { name } => {
                let id = self.group_ids[name].clone();
                c.delete_group(pb::DeleteGroupRequest { id }).await?;
            }
            Op::DeleteApp { app } => {
                c.delete_app(pb::DeleteAppRequest { id: app.clone() })
                    .await?;
            }
        }
        self.shape.apply(op);
        if let (Op::CreateApp { id }, Some(s)) = (op, secret_of_default) {
            self.shape
                .keys
                .get_mut(&default_key_name(id))
                .unwrap()
                .secret = Some(s);
        }
        Ok(())
    }
}

/// What one worker ended a trial with.
struct Outcome {
    world: World,
    pending: Option<Op>,
    acked: u64,
}

/// Writes until the server dies. An error before the kill is a failure.
async fn worker(
    w: usize,
    mut world: World,
    mut c: Admin,
    mut rng: Rng,
    killed: Arc<AtomicBool>,
    acked_total: Arc<AtomicU64>,
) -> Outcome {
    let mut acked = 0;
    loop {
        let op = world.choose(w, &mut rng);
        match world.exec(&mut c, w, &op).await {
            Ok(()) => {
                acked += 1;
                acked_total.fetch_add(1, Ordering::SeqCst);
            }
            Err(status) => {
                assert!(
                    killed.load(Ordering::SeqCst),
                    "worker {w}: {op:?} failed while the server was up: {status:?}"
                );
                return Outcome {
                    world,
                    pending: Some(op),
                    acked,
                };
            }
        }
    }
}

// === reading the store back ===

/// Everything of owner `w<N>` as the admin API shows it, with the server ids.
struct Actual {
    shape: Shape,
    group_ids: BTreeMap<String, String>,
    api_ids: BTreeMap<String, String>,
    grant_ids: BTreeMap<(String, Target), String>,
    app_keys: BTreeMap<String, String>,
}

async fn read_owner(c: &mut Admin, w: usize) -> Actual {
    let owner = format!("w{w}");
    let mut shape = Shape::default();
    let mut app_keys = BTreeMap::new();

    let apps = c
        .list_apps(pb::ListAppsRequest {
            page_size: 1000,
            owner: owner.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(apps.next_page_token.is_empty(), "more apps than one page");
    for a in &apps.apps {
        shape.apps.insert(
            a.id.clone(),
            AppS {
                description: a.description.clone(),
                enabled: a.enabled,
            },
        );
        let keys = c
            .list_key_pairs(pb::ListKeyPairsRequest {
                app_id: a.id.clone(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("keys of app {}: {e:?}", a.id))
            .into_inner();
        let defaults = keys.key_pairs.iter().filter(|k| k.is_default).count();
        assert_eq!(
            defaults, 1,
            "app {} has {defaults} default keys (must be exactly 1): {:?}",
            a.id, keys.key_pairs
        );
        for k in keys.key_pairs {
            assert_eq!(k.app_id, a.id, "key listed under the wrong app: {k:?}");
            assert!(k.app_secret.is_empty(), "ListKeyPairs returned a secret");
            let name = if k.is_default {
                default_key_name(&a.id)
            } else {
                k.app_key.clone()
            };
            app_keys.insert(name.clone(), k.app_key.clone());
            shape.keys.insert(
                name,
                KeyS {
                    app_id: a.id.clone(),
                    enabled: k.enabled,
                    secret: None,
                },
            );
        }
    }

    let groups = c
        .list_groups(pb::ListGroupsRequest {
            page_size: 1000,
            owner: owner.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut group_ids = BTreeMap::new();
    let mut group_names = BTreeMap::new();
    for g in groups.groups {
        shape.groups.insert(g.name.clone());
        group_names.insert(g.id.clone(), g.name.clone());
        group_ids.insert(g.name, g.id);
    }
    let apis = c
        .list_apis(pb::ListApisRequest {
            page_size: 1000,
            owner: owner.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut api_ids = BTreeMap::new();
    let mut api_names = BTreeMap::new();
    for a in apis.apis {
        let group = (!a.group_id.is_empty()).then(|| {
            group_names
                .get(&a.group_id)
                .unwrap_or_else(|| panic!("API {} is in a group that does not exist", a.name))
                .clone()
        });
        shape.apis.insert(a.name.clone(), group);
        api_names.insert(a.id.clone(), a.name.clone());
        api_ids.insert(a.name, a.id);
    }
    let mut grant_ids = BTreeMap::new();
    for app in shape.apps.keys() {
        let grants = c
            .list_grants(pb::ListGrantsRequest {
                page_size: 1000,
                app_id: app.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for g in grants.grants {
            let target = match g.target.expect("grant target") {
                pb::grant::Target::ApiId(id) => Target::Api(
                    api_names
                        .get(&id)
                        .unwrap_or_else(|| panic!("grant {} on a missing API {id}", g.id))
                        .clone(),
                ),
                pb::grant::Target::GroupId(id) => Target::Group(
                    group_names
                        .get(&id)
                        .unwrap_or_else(|| panic!("grant {} on a missing group {id}", g.id))
                        .clone(),
                ),
            };
            shape.grants.insert((app.clone(), target.clone()));
            grant_ids.insert((app.clone(), target), g.id);
        }
    }
    Actual {
        shape,
        group_ids,
        api_ids,
        grant_ids,
        app_keys,
    }
}

/// Asks the check listener which of `candidates` is `app_key`'s secret: a request
/// signed with the right one passes verification and is denied later, for the missing
/// API (or a disabled app or key); a wrong one is `SignatureMismatch`.
async fn which_secret(
    check: &mut common::CheckClient,
    app_key: &str,
    candidates: &[String],
) -> Option<String> {
    for s in candidates {
        let req = common::signed_check(
            SchemeKind::Aliyun,
            app_key,
            s.as_bytes(),
            "GET",
            "http://crash.test/no/such/api",
            &[],
            None,
            common::now_ms(),
            &format!("{:016x}-{}", rand_u64(), common::now_ms()),
        );
        let v = common::verdict(&check.check(req).await.unwrap().into_inner());
        match v.code() {
            Some("SignatureMismatch") => {}
            Some("ApiNotFound" | "AppDisabled" | "KeyDisabled") => return Some(s.clone()),
            other => panic!("key {app_key}: unexpected verdict {other:?}: {v:?}"),
        }
    }
    None
}

/// A fresh nonce per call.
fn rand_u64() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    N.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

/// Fills `actual`'s secrets from what the check listener accepts, trying the secrets
/// both models know for each key.
async fn observe_secrets(check: &mut common::CheckClient, actual: &mut Actual, models: &[&Shape]) {
    for (name, k) in actual.shape.keys.iter_mut() {
        let mut candidates: Vec<String> = models
            .iter()
            .filter_map(|m| m.keys.get(name).and_then(|k| k.secret.clone()))
            .collect();
        candidates.dedup();
        if candidates.is_empty() {
            continue;
        }
        k.secret = which_secret(check, &actual.app_keys[name], &candidates).await;
    }
}

// === the test ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_random_kill_9_under_concurrent_load() {
    trials("sled", Keygate::start()).await;
}

/// The same on etcd (a one-member cluster): the replica is what gets killed; an
/// acknowledged write is in etcd, and the restarted replica resumes from its view.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_random_kill_9_on_etcd() {
    let Some(etcd) = common::etcd::Etcd::start(1) else {
        return;
    };
    let eps = etcd.endpoints();
    trials(
        "etcd",
        Keygate::start_with_args(&["--store", "etcd", "--etcd-endpoints", &eps]),
    )
    .await;
}

async fn trials(engine: &str, mut kg: Keygate) {
    let trials = env_u64("KEYGATE_CRASH_TRIALS").unwrap_or(
        if std::env::var("KEYGATE_SOAK").is_ok_and(|v| v == "1") {
            200
        } else {
            20
        },
    );
    let seed = env_u64("KEYGATE_CRASH_SEED").unwrap_or_else(|| common::now_ms() as u64);
    println!(
        "crash ({engine}): {trials} trials, {WORKERS} workers, seed {seed} (KEYGATE_CRASH_SEED)"
    );
    let mut rng = Rng::new(seed);

    let mut worlds: Vec<World> = vec![World::default(); WORKERS];
    let mut acked_total = 0u64;
    let mut committed_in_flight = 0u64;
    let mut lost_in_flight = 0u64;
    // Audit events the store must hold: every acknowledged write plus every in-flight
    // write that turned out to have committed. Ambiguous in-flight writes (both models
    // equal) widen the range.
    let mut audit_min = 0u64;
    let mut audit_max = 0u64;

    for trial in 0..trials {
        let killed = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for (w, world) in worlds.drain(..).enumerate() {
            handles.push(tokio::spawn(worker(
                w,
                world,
                kg.admin().await,
                Rng::new(rng.next()),
                killed.clone(),
                acked.clone(),
            )));
        }
        // Kill after a random number of acknowledged writes, plus a random extra
        // delay, so the SIGKILL lands at a random point of some write.
        let target = 3 + rng.below(60) as u64;
        while acked.load(Ordering::SeqCst) < target {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tokio::time::sleep(std::time::Duration::from_micros(rng.below(5_000) as u64)).await;
        killed.store(true, Ordering::SeqCst);
        kg.kill9();
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.expect("worker panicked"));
        }

        kg.restart().await;
        let log = kg.stderr();
        assert!(
            log.contains("index loaded"),
            "trial {trial}: restart log:\n{log}"
        );
        assert!(
            !log.contains("ERROR") && !log.contains("panicked"),
            "trial {trial}: restart log:\n{log}"
        );
        let mut c = kg.admin().await;
        let mut check = common::check_client(kg.check_addr()).await;

        let mut total = Shape::default();
        for (w, o) in outcomes.into_iter().enumerate() {
            acked_total += o.acked;
            let ack = o.world.shape.clone();
            let mut with_pending = ack.clone();
            if let Some(op) = &o.pending {
                with_pending.apply(op);
            }
            let mut actual = read_owner(&mut c, w).await;
            observe_secrets(&mut check, &mut actual, &[&ack, &with_pending]).await;
            let is_ack = ack.admits(&actual.shape);
            let is_pending = with_pending.admits(&actual.shape);
            assert!(
                is_ack || is_pending,
                "trial {trial} worker {w}: the store matches neither the acknowledged \
                 state nor that plus the in-flight write {:?}\n\
                 acknowledged: {ack:#?}\nactual: {:#?}",
                o.pending,
                actual.shape
            );
            audit_min += o.acked;
            audit_max += o.acked;
            if is_pending && !is_ack {
                committed_in_flight += 1;
                audit_min += 1;
                audit_max += 1;
            } else if is_ack && !is_pending {
                lost_in_flight += 1;
            } else {
                audit_max += 1;
            }
            // Continue from what the store holds (ids of committed in-flight creates
            // come from there), keeping the secrets the model knows.
            let model = if is_pending && !is_ack {
                &with_pending
            } else {
                &ack
            };
            let mut next = o.world;
            next.shape = actual.shape.clone();
            for (name, k) in next.shape.keys.iter_mut() {
                k.secret = model.keys.get(name).and_then(|m| m.secret.clone());
            }
            next.group_ids = actual.group_ids;
            next.api_ids = actual.api_ids;
            next.grant_ids = actual.grant_ids;
            next.app_keys = actual.app_keys;
            total.apps.extend(next.shape.apps.clone());
            total.keys.extend(next.shape.keys.clone());
            total.apis.extend(next.shape.apis.clone());
            total.grants.extend(next.shape.grants.clone());
            worlds.push(next);
        }

        // The index is rebuilt from every record in every tree: an orphan key, grant or
        // API anywhere would make it larger than what the API lists.
        let (code, body) = kg.http_get("/readyz");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for (kind, n) in [
            ("apps", total.apps.len()),
            ("keys", total.keys.len()),
            ("apis", total.apis.len()),
            ("grants", total.grants.len()),
        ] {
            assert_eq!(v[kind], n, "trial {trial}: index {kind} vs listed: {body}");
        }
        check_all_grants(&mut c, &total).await;
        check_audit(&mut c, &total, audit_min, audit_max, trial).await;
    }
    kg.stop().await;
    println!(
        "crash ({engine}): trials={trials} acknowledged_writes={acked_total} lost=0 \
         in_flight_committed={committed_in_flight} in_flight_not_committed={lost_in_flight} \
         audit_events={audit_min}..={audit_max}"
    );
}

/// Every grant in the store (unfiltered) belongs to a live app and a live target.
async fn check_all_grants(c: &mut Admin, total: &Shape) {
    let mut token = String::new();
    let mut n = 0;
    loop {
        let r = c
            .list_grants(pb::ListGrantsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for g in &r.grants {
            assert!(
                total.apps.contains_key(&g.app_id),
                "grant {} of a missing app {}",
                g.id,
                g.app_id
            );
            match g.target.clone().expect("target") {
                pb::grant::Target::ApiId(id) => {
                    c.get_api(pb::GetApiRequest { id: id.clone() })
                        .await
                        .unwrap_or_else(|e| panic!("grant {} on missing API {id}: {e:?}", g.id));
                }
                pb::grant::Target::GroupId(id) => {
                    c.get_group(pb::GetGroupRequest { id: id.clone() })
                        .await
                        .unwrap_or_else(|e| panic!("grant {} on missing group {id}: {e:?}", g.id));
                }
            }
        }
        n += r.grants.len();
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(
        n,
        total.grants.len(),
        "grants listed vs grants of live apps"
    );
}

/// One audit event per committed write, with consecutive ids, and a CreateApp event
/// for every live app (the event and the app are one transaction).
async fn check_audit(c: &mut Admin, total: &Shape, min: u64, max: u64, trial: u64) {
    let mut token = String::new();
    let mut n = 0u64;
    let mut last = None;
    let mut created_apps = BTreeSet::new();
    loop {
        let r = c
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for e in &r.events {
            // Dense across kills too: the next id after a restart is one past the
            // last event on disk, and failed writes use none.
            assert!(
                last.is_none_or(|l| e.id == l + 1),
                "audit ids not consecutive: {last:?} then {}",
                e.id
            );
            last = Some(e.id);
            if e.action == "CreateApp" {
                created_apps.insert(e.resource_id.clone());
            }
        }
        n += r.events.len() as u64;
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert!(
        (min..=max).contains(&n),
        "trial {trial}: {n} audit events, expected {min}..={max} (one per committed write)"
    );
    for app in total.apps.keys() {
        assert!(
            created_apps.contains(app),
            "trial {trial}: app {app} exists without its CreateApp audit event"
        );
    }
}
