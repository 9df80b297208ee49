//! The data set: N apps (each with K key pairs and an AppCode), A APIs accepting every
//! scheme, and G grants per app, created through the admin API of a running keygate or
//! straight into a data dir (offline, for large sets).
//!
//! Owns: the shape of the data and the credentials the load needs afterwards
//! (`Caller`s). Data-dir mode uses the store's offline import (no flush per write,
//! one at the end); admin mode goes through the real management API.

use keygate::keyfile;
use keygate::store::seal::MASTER_KEY_LEN;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use keygate::clock::SystemClock;
use keygate::config::Config;
use keygate::model::{Api, Grant, GrantTarget};
use keygate::pb::admin as pb;
use keygate::pb::admin::admin_client::AdminClient;
use keygate::scheme::SchemeKind;
use keygate::store::{NewApp, NewKey, Store};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::{Context, Result, fail};

/// Sizes of the data set.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct Spec {
    /// Apps to create (each with a default key pair and an AppCode).
    #[arg(long, default_value_t = 100)]
    pub apps: usize,
    /// Key pairs per app (the default one included).
    #[arg(long, default_value_t = 1)]
    pub keys_per_app: usize,
    /// APIs to create (`/bench/svcNN/items/{id}`, every scheme accepted).
    #[arg(long, default_value_t = 10)]
    pub apis: usize,
    /// Grants per app, on consecutive APIs starting at the app's own (at most --apis).
    #[arg(long, default_value_t = 1)]
    pub grants_per_app: usize,
}

impl Spec {
    pub fn check(&self) -> Result<()> {
        if self.apps == 0 || self.apis == 0 || self.keys_per_app == 0 {
            return fail("--apps, --apis and --keys-per-app must be at least 1");
        }
        if !(1..=self.apis).contains(&self.grants_per_app) {
            return fail("--grants-per-app must be within 1..=--apis");
        }
        Ok(())
    }
}

/// What a load needs to sign as one app.
#[derive(Clone, Debug)]
pub struct Caller {
    pub app_id: String,
    pub app_code: String,
    /// (AppKey, secret) of every key pair of the app.
    pub keys: Vec<(String, String)>,
    /// The path of the app's first granted API, `{id}` still in it.
    pub path: String,
}

const OWNER: &str = "keygate-bench";

fn api_path(j: usize) -> String {
    format!("/bench/svc{j:03}/items/{{id}}")
}

fn api_model(j: usize) -> Api {
    Api {
        name: format!("bench-svc{j:03}"),
        owner: OWNER.into(),
        methods: vec!["GET".into(), "POST".into()],
        path: api_path(j),
        auth_schemes: SchemeKind::ALL.iter().map(|k| k.as_str().into()).collect(),
        ..Default::default()
    }
}

fn progress(what: &str, done: usize, total: usize, started: Instant) {
    if done == total || done.is_multiple_of(10_000) {
        eprintln!(
            "  {what}: {done}/{total} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Fills `data_dir` (as `keygate serve --data-dir` would use it: master key generated
/// there, database under `db/`). Must not be in use by a running keygate.
pub async fn into_data_dir(data_dir: &Path, spec: &Spec) -> Result<Vec<Caller>> {
    spec.check()?;
    let config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    keyfile::ensure_data_dir(&config.data_dir).ctx("data dir")?;
    let (master_key, _) =
        keyfile::master_key::<MASTER_KEY_LEN>(config.master_key_file.as_deref(), &config.data_dir)
            .ctx("master key")?;
    let store = Store::open_for_import(&data_dir.join("db"), &master_key, Arc::new(SystemClock))
        .ctx(format!("open the store in {}", data_dir.display()))?;
    let started = Instant::now();
    let mut api_ids = Vec::with_capacity(spec.apis);
    for j in 0..spec.apis {
        let (api, _) = store
            .create_api(OWNER, api_model(j))
            .await
            .ctx("create API")?;
        api_ids.push(api.id);
    }
    let mut callers = Vec::with_capacity(spec.apps);
    for i in 0..spec.apps {
        let ((app, key), _) = store
            .create_app(
                OWNER,
                NewApp {
                    name: format!("bench-app-{i:08}"),
                    owner: OWNER.into(),
                    extend_info: "tier=bench".into(),
                    ..Default::default()
                },
            )
            .await
            .ctx("create app")?;
        let mut keys = vec![(key.app_key.clone(), key.secret.expose().to_owned())];
        for _ in 1..spec.keys_per_app {
            let (k, _) = store
                .create_key(
                    OWNER,
                    NewKey {
                        app_id: app.id.clone(),
                        ..Default::default()
                    },
                )
                .await
                .ctx("create key pair")?;
            keys.push((k.app_key.clone(), k.secret.expose().to_owned()));
        }
        for g in 0..spec.grants_per_app {
            let api = &api_ids[(i + g) % spec.apis];
            store
                .create_grant(OWNER, grant(&app.id, api))
                .await
                .ctx("create grant")?;
        }
        callers.push(Caller {
            app_id: app.id.clone(),
            app_code: app
                .app_code
                .as_ref()
                .map(|c| c.expose().to_owned())
                .unwrap_or_default(),
            keys,
            path: api_path(i % spec.apis),
        });
        progress("apps", i + 1, spec.apps, started);
    }
    store.flush().await.ctx("flush the store")?;
    Ok(callers)
}

fn grant(app_id: &str, api_id: &str) -> Grant {
    Grant {
        id: String::new(),
        app_id: app_id.into(),
        target: GrantTarget::Api(api_id.into()),
        stages: Vec::new(),
        expires_ms: None,
        created_by: String::new(),
        create_ms: 0,
    }
}

/// Adds `authorization: Bearer <token>` to every admin call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Result<Self> {
        Ok(Self(
            format!("Bearer {token}")
                .parse()
                .ctx("the admin token is not a valid header value")?,
        ))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

pub async fn admin_client(addr: SocketAddr, token: &str) -> Result<Admin> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .ctx("admin address")?
        .connect()
        .await
        .ctx(format!("connect to the admin API at {addr}"))?;
    Ok(AdminClient::with_interceptor(channel, Bearer::new(token)?))
}

/// Creates the data set through the admin API (16 calls in flight).
pub async fn via_admin(admin: &Admin, spec: &Spec) -> Result<Vec<Caller>> {
    spec.check()?;
    let started = Instant::now();
    let run = keygate::clock::system_now_ms();
    let mut api_ids = Vec::with_capacity(spec.apis);
    for j in 0..spec.apis {
        let mut a = api_pb(j);
        // Names are unique per server: a second run against the same server adds more.
        a.name = format!("{}-{run}", a.name);
        let api = admin
            .clone()
            .create_api(pb::CreateApiRequest { api: Some(a) })
            .await
            .ctx("CreateApi")?
            .into_inner();
        api_ids.push(api.id);
    }
    let api_ids = Arc::new(api_ids);
    const IN_FLIGHT: usize = 16;
    let mut callers: Vec<Option<Caller>> = vec![None; spec.apps];
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT.min(spec.apps) {
        let (mut admin, api_ids, spec) = (admin.clone(), api_ids.clone(), *spec);
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (w..spec.apps).step_by(IN_FLIGHT) {
                out.push((i, create_caller(&mut admin, &api_ids, &spec, i, run).await?));
            }
            Ok::<_, crate::error::Error>(out)
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        for (i, c) in r.ctx("admin task")?? {
            callers[i] = Some(c);
            done += 1;
        }
        progress("apps", done, spec.apps, started);
    }
    callers
        .into_iter()
        .map(|c| c.ctx("an app was not created"))
        .collect()
}

fn api_pb(j: usize) -> pb::Api {
    let m = api_model(j);
    pb::Api {
        name: m.name,
        owner: m.owner,
        methods: m.methods,
        path: m.path,
        auth_schemes: vec![
            pb::AuthScheme::Aliyun as i32,
            pb::AuthScheme::Appcode as i32,
            pb::AuthScheme::Tencent as i32,
            pb::AuthScheme::Bkapi as i32,
            pb::AuthScheme::Sigv4 as i32,
            pb::AuthScheme::Rfc9421 as i32,
        ],
        ..Default::default()
    }
}

async fn create_caller(
    admin: &mut Admin,
    api_ids: &[String],
    spec: &Spec,
    i: usize,
    run: i64,
) -> Result<Caller> {
    let created = admin
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: format!("bench-app-{run}-{i:08}"),
                owner: OWNER.into(),
                extend_info: "tier=bench".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .ctx("CreateApp")?
        .into_inner();
    let app = created.app.ctx("CreateApp returned no app")?;
    let key = created.key_pair.ctx("CreateApp returned no key pair")?;
    let mut keys = vec![(key.app_key, key.app_secret)];
    for _ in 1..spec.keys_per_app {
        let k = admin
            .create_key_pair(pb::CreateKeyPairRequest {
                app_id: app.id.clone(),
                ..Default::default()
            })
            .await
            .ctx("CreateKeyPair")?
            .into_inner();
        keys.push((k.app_key, k.app_secret));
    }
    for g in 0..spec.grants_per_app {
        admin
            .create_grant(pb::CreateGrantRequest {
                grant: Some(pb::Grant {
                    app_id: app.id.clone(),
                    target: Some(pb::grant::Target::ApiId(
                        api_ids[(i + g) % spec.apis].clone(),
                    )),
                    ..Default::default()
                }),
            })
            .await
            .ctx("CreateGrant")?;
    }
    Ok(Caller {
        app_id: app.id,
        app_code: app.app_code,
        keys,
        path: api_path(i % spec.apis),
    })
}

/// The callers of a data dir filled earlier (`populate`): every app with a key pair
/// and a grant on an API. Opens the store, so no keygate may be running on it.
pub fn from_data_dir(data_dir: &Path, limit: usize) -> Result<Vec<Caller>> {
    use std::collections::HashMap;
    let config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    let (master_key, _) =
        keyfile::master_key::<MASTER_KEY_LEN>(config.master_key_file.as_deref(), &config.data_dir)
            .ctx("master key")?;
    let store = Store::open(&data_dir.join("db"), &master_key, Arc::new(SystemClock))
        .ctx(format!("open the store in {}", data_dir.display()))?;
    let paths: HashMap<String, String> = store
        .all_apis()
        .map(|a| a.map(|a| (a.id, a.path)))
        .collect::<std::result::Result<_, _>>()
        .ctx("read APIs")?;
    let mut path_of: HashMap<String, String> = HashMap::new();
    for g in store.all_grants() {
        let g = g.ctx("read grants")?;
        if let GrantTarget::Api(api) = &g.target
            && let Some(p) = paths.get(api)
        {
            path_of.entry(g.app_id.clone()).or_insert_with(|| p.clone());
        }
    }
    let mut keys: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for k in store.all_keys() {
        let k = k.ctx("read keys")?;
        if k.enabled {
            keys.entry(k.app_id.clone())
                .or_default()
                .push((k.app_key.clone(), k.secret.expose().to_owned()));
        }
    }
    let mut out = Vec::new();
    for a in store.all_apps() {
        let a = a.ctx("read apps")?;
        if out.len() >= limit {
            break;
        }
        let (Some(path), Some(k)) = (path_of.remove(&a.id), keys.remove(&a.id)) else {
            continue;
        };
        if a.enabled {
            out.push(Caller {
                app_code: a
                    .app_code
                    .as_ref()
                    .map(|c| c.expose().to_owned())
                    .unwrap_or_default(),
                app_id: a.id,
                keys: k,
                path,
            });
        }
    }
    if out.is_empty() {
        return fail(format!(
            "{} holds no app with a key and a grant: fill it with `keygate-bench populate`",
            data_dir.display()
        ));
    }
    Ok(out)
}
