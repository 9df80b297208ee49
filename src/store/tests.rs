//! Store tests: CRUD rules, cascades, paging, schema checks, secrets at rest.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::model::{Api, Grant, GrantTarget};

const KEY: [u8; 32] = [42u8; 32];

fn open(dir: &Path) -> Store {
    Store::open(dir, &KEY, Arc::new(ManualClock::new(1_700_000_000_000))).unwrap()
}

/// A fresh store on one engine, with what keeps that engine alive.
struct OnEngine {
    store: Store,
    _dir: tempfile::TempDir,
    #[cfg(feature = "etcd")]
    _etcd: Option<etcd_member::Member>,
}

/// A fresh store on every engine: sled, and with the `etcd` feature a one-member
/// etcd started for the test (the same suite runs on both).
async fn engines_with(clock: Arc<ManualClock>) -> Vec<OnEngine> {
    let dir = tempfile::tempdir().unwrap();
    #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
    let mut out = vec![OnEngine {
        store: Store::open(dir.path(), &KEY, clock.clone()).unwrap(),
        _dir: dir,
        #[cfg(feature = "etcd")]
        _etcd: None,
    }];
    #[cfg(feature = "etcd")]
    if let Some(member) = etcd_member::Member::start() {
        let dir = tempfile::tempdir().unwrap();
        let store = member.open(dir.path(), clock).await;
        out.push(OnEngine {
            store,
            _dir: dir,
            _etcd: Some(member),
        });
    }
    out
}

async fn engines() -> Vec<OnEngine> {
    engines_with(Arc::new(ManualClock::new(1_700_000_000_000))).await
}

/// A one-member etcd (Debian's `etcd-server`) on free loopback ports, killed on drop.
#[cfg(feature = "etcd")]
mod etcd_member {
    use super::*;

    pub struct Member {
        child: std::process::Child,
        endpoint: String,
        _dir: tempfile::TempDir,
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    impl Member {
        /// `None` (the etcd half skipped, said on stderr) without an `etcd` binary,
        /// except under `CI=true`, where that fails the test.
        pub fn start() -> Option<Self> {
            let bin = std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("etcd"))
                    .find(|p| p.is_file())
            });
            let Some(bin) = bin else {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "the store suite needs etcd on PATH under CI (Debian package etcd-server)"
                );
                eprintln!("etcd not found: the store suite runs on sled only");
                return None;
            };
            let dir = tempfile::tempdir().unwrap();
            let (client, peer) = (free_port(), free_port());
            let endpoint = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = std::process::Command::new(bin)
                .args(["--name", "t", "--data-dir"])
                .arg(dir.path().join("etcd"))
                .args([
                    "--listen-client-urls",
                    &endpoint,
                    "--advertise-client-urls",
                    &endpoint,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("t={peer_url}")])
                .args([
                    "--unsafe-no-fsync",
                    "--logger",
                    "zap",
                    "--log-level",
                    "error",
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            Some(Self {
                child,
                endpoint,
                _dir: dir,
            })
        }

        /// A store on this etcd with its view in `dir`, once etcd answers.
        pub async fn open(&self, dir: &Path, clock: Arc<ManualClock>) -> Store {
            let settings = etcd::EtcdSettings {
                endpoints: vec![self.endpoint.clone()],
                prefix: "/keygate-test".into(),
                user: None,
                ca: None,
                client_cert: None,
                timeout: std::time::Duration::from_secs(2),
                max_txn_ops: 128,
                anti_entropy: std::time::Duration::ZERO,
            };
            let started = std::time::Instant::now();
            loop {
                match Store::open_etcd(dir, &KEY, clock.clone(), settings.clone()).await {
                    Ok((store, _changes)) => return store,
                    Err(e) if started.elapsed() < std::time::Duration::from_secs(20) => {
                        drop(e);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("etcd at {} never opened: {e}", self.endpoint),
                }
            }
        }
    }

    impl Drop for Member {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn new_app(name: &str) -> NewApp {
    NewApp {
        name: name.into(),
        owner: "acme".into(),
        ..Default::default()
    }
}

fn api(name: &str, path: &str) -> Api {
    Api {
        name: name.into(),
        owner: "acme".into(),
        path: path.into(),
        methods: vec!["GET".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn app_lifecycle_and_cascade() {
    for e in engines().await {
        let s = &e.store;
        let ((app, key), changes) = s.create_app("t", new_app("a1")).await.unwrap();
        assert!(key.is_default && key.secret.expose().len() == 40);
        assert_eq!(changes.len(), 2);
        assert!(
            matches!(s.create_app("t", new_app("a1")).await, Err(StoreError::AlreadyExists(m)) if m.contains("App.name"))
        );

        let (k2, _) = s
            .create_key(
                "t",
                NewKey {
                    app_id: app.id.clone(),
                    app_key: Some("custom-key".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(matches!(
            s.create_key("t", NewKey { app_id: app.id.clone(), app_key: Some("custom-key".into()), ..Default::default() }).await,
            Err(StoreError::AlreadyExists(m)) if m.contains("KeyPair.app_key")
        ));
        assert!(matches!(
            s.delete_key("t", &key.app_key).await,
            Err(StoreError::FailedPrecondition(_))
        ));
        let (keys, token) = s
            .list_keys(
                &app.id,
                &Page {
                    size: 10,
                    token: String::new(),
                },
            )
            .unwrap();
        assert_eq!(keys.len(), 2);
        assert!(token.is_empty());

        let (a, _) = s
            .create_api("t", api("users", "/users/{id}"))
            .await
            .unwrap();
        assert!(
            matches!(s.create_api("t", api("users2", "/users/{uid}")).await, Err(StoreError::AlreadyExists(m)) if m.contains("route"))
        );
        assert!(matches!(
            s.create_api("t", api("bad", "users")).await,
            Err(StoreError::InvalidArgument {
                field: "Api.path",
                ..
            })
        ));
        let (g, _) = s
            .create_grant(
                "t",
                Grant {
                    id: String::new(),
                    app_id: app.id.clone(),
                    target: GrantTarget::Api(a.id.clone()),
                    stages: vec![],
                    expires_ms: None,
                    created_by: String::new(),
                    create_ms: 0,
                },
            )
            .await
            .unwrap();
        assert_eq!(s.get_grant(&g.id).unwrap().unwrap().created_by, "t");

        let changes = s.delete_app("t", &app.id).await.unwrap();
        assert!(changes.contains(&Change::Key(k2.app_key.clone())));
        assert!(changes.contains(&Change::Grant(g.id.clone())));
        assert!(s.get_key(&k2.app_key).unwrap().is_none());
        assert!(s.get_grant(&g.id).unwrap().is_none());
        let (events, _) = s
            .list_audit(
                &Page {
                    size: 100,
                    token: String::new(),
                },
                None,
                None,
            )
            .unwrap();
        let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "CreateApp",
                "CreateKeyPair",
                "CreateApi",
                "CreateGrant",
                "DeleteApp"
            ]
        );
    }
}

#[tokio::test]
async fn reset_keeps_previous_secret_for_grace() {
    for e in engines().await {
        let s = &e.store;
        let ((_, key), _) = s.create_app("t", new_app("a")).await.unwrap();
        let (k, _) = s
            .reset_secret("t", &key.app_key, 60_000, None)
            .await
            .unwrap();
        assert_ne!(k.secret, key.secret);
        let prev = k.previous.unwrap();
        assert_eq!(prev.secret, key.secret);
        assert_eq!(prev.until_ms, 1_700_000_060_000);
        let (k, _) = s
            .reset_secret("t", &key.app_key, 0, Some("s".repeat(20)))
            .await
            .unwrap();
        assert!(k.previous.is_none());
        assert_eq!(
            s.get_key(&key.app_key).unwrap().unwrap().secret.expose(),
            "s".repeat(20)
        );
    }
}

#[tokio::test]
async fn paging_walks_everything_once() {
    for e in engines().await {
        let s = &e.store;
        for i in 0..7 {
            s.create_app("t", new_app(&format!("app{i}")))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (apps, next) = s
                .list_apps(&Page { size: 3, token }, AppFilter::default())
                .unwrap();
            seen.extend(apps.into_iter().map(|a| a.name));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        seen.sort();
        assert_eq!(seen.len(), 7);
        seen.dedup();
        assert_eq!(seen.len(), 7);
        assert!(matches!(
            s.list_apps(
                &Page {
                    size: 3,
                    token: "garbage!".into()
                },
                AppFilter::default()
            ),
            Err(StoreError::InvalidArgument {
                field: "page_token",
                ..
            })
        ));
    }
}

#[tokio::test]
async fn group_delete_refused_while_apis_remain() {
    for e in engines().await {
        let s = &e.store;
        let (g, _) = s
            .create_group("t", "g".into(), "acme".into(), String::new())
            .await
            .unwrap();
        let mut a = api("in-group", "/g/x");
        a.group_id = Some(g.id.clone());
        let (a, _) = s.create_api("t", a).await.unwrap();
        assert!(matches!(
            s.delete_group("t", &g.id).await,
            Err(StoreError::FailedPrecondition(_))
        ));
        s.delete_api("t", &a.id).await.unwrap();
        s.delete_group("t", &g.id).await.unwrap();
        let mut orphan = api("orphan", "/o");
        orphan.group_id = Some("grp_missing".into());
        assert!(matches!(
            s.create_api("t", orphan).await,
            Err(StoreError::NotFound { kind: "group", .. })
        ));
    }
}

#[tokio::test]
async fn reopen_checks_schema_and_master_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.create_app("t", new_app("a")).await.unwrap();
        s.flush().await.unwrap();
    }
    assert!(matches!(
        Store::open(dir.path(), &[1u8; 32], Arc::new(ManualClock::new(0))),
        Err(StoreError::WrongMasterKey)
    ));
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        Store::open(dir.path(), &KEY, Arc::new(ManualClock::new(0))),
        Err(StoreError::SchemaMismatch {
            found: 99,
            expected: 1
        })
    ));
}

#[tokio::test]
async fn secrets_are_not_in_the_files_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "VerySecretValue-0123456789abcdef";
    let code = "app-code-in-clear-0123456789";
    {
        let s = open(dir.path());
        let ((app, _), _) = s
            .create_app(
                "t",
                NewApp {
                    app_code: Some(code.into()),
                    ..new_app("a")
                },
            )
            .await
            .unwrap();
        s.create_key(
            "t",
            NewKey {
                app_id: app.id,
                app_secret: Some(secret.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
    }
    let mut found_any = false;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        found_any |= !bytes.is_empty();
        for needle in [secret.as_bytes(), code.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "clear secret in {}",
                entry.display()
            );
        }
    }
    assert!(found_any);
    let s = open(dir.path());
    let keys: Vec<_> = s.all_keys().collect::<Result<_, _>>().unwrap();
    assert!(keys.iter().any(|k| k.secret.expose() == secret));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// A previous secret is deleted once its grace period has ended, with an audit event,
/// and not before; a second sweep finds nothing.
#[tokio::test]
async fn expired_previous_secrets_are_deleted() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    for e in engines_with(clock.clone()).await {
        let s = &e.store;
        let ((_, key), _) = s.create_app("t", new_app("rot")).await.unwrap();
        let (reset, _) = s
            .reset_secret("t", &key.app_key, 1_000, None)
            .await
            .unwrap();
        assert!(s.get_key(&key.app_key).unwrap().unwrap().previous.is_some());

        clock.advance(999);
        assert!(
            s.expired_previous_secrets(clock.now_ms(), 10)
                .unwrap()
                .is_empty()
        );
        clock.advance(1);
        let due = s.expired_previous_secrets(clock.now_ms(), 10).unwrap();
        assert_eq!(due, vec![key.app_key.clone()]);
        let changes = s
            .drop_expired_previous_secret("keygate", &key.app_key)
            .await
            .unwrap();
        assert_eq!(changes, vec![Change::Key(key.app_key.clone())]);
        let after = s.get_key(&key.app_key).unwrap().unwrap();
        assert!(after.previous.is_none());
        assert_eq!(
            after.secret.expose(),
            reset.secret.expose(),
            "the current secret stays"
        );

        let (events, _) = s
            .list_audit(
                &Page {
                    size: 100,
                    token: String::new(),
                },
                Some(&key.app_key),
                None,
            )
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.action == "ExpirePreviousSecret" && e.actor == "keygate"),
            "{events:?}"
        );
        assert!(
            s.expired_previous_secrets(clock.now_ms(), 10)
                .unwrap()
                .is_empty()
        );
        assert!(
            s.drop_expired_previous_secret("keygate", &key.app_key)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

mod apply {
    use super::*;
    use crate::store::apply::{Desired, DesiredApi, DesiredApp, DesiredGrant, DesiredGroup};

    fn group(id: &str) -> DesiredGroup {
        DesiredGroup {
            id: Some(id.into()),
            name: id.into(),
            owner: "acme".into(),
            description: String::new(),
        }
    }

    fn api_in(name: &str, path: &str, group: &str) -> DesiredApi {
        let mut a = api(name, path);
        a.group_id = Some(group.into());
        DesiredApi { api: a }
    }

    fn app(id: &str) -> DesiredApp {
        DesiredApp {
            id: Some(id.into()),
            name: id.into(),
            owner: "acme".into(),
            enabled: true,
            ..Default::default()
        }
    }

    fn on_group(app: &str, group: &str, stages: &[&str]) -> DesiredGrant {
        DesiredGrant {
            id: None,
            app: app.into(),
            target: GrantTarget::Group(group.into()),
            stages: stages.iter().map(|s| (*s).to_owned()).collect(),
            expires_ms: None,
        }
    }

    /// One apply moves an API out of a group it prunes into a new one, takes over a
    /// route an API it deletes held, and replaces a changed grant under its id.
    #[tokio::test]
    async fn steps_run_in_an_order_that_keeps_every_invariant() {
        for e in engines().await {
            let s = &e.store;
            let first = Desired {
                apps: vec![app("a")],
                groups: vec![group("old")],
                apis: vec![
                    api_in("moving", "/m", "old"),
                    DesiredApi {
                        api: api("leaving", "/taken"),
                    },
                ],
                grants: vec![on_group("a", "old", &["TEST"])],
                ..Default::default()
            };
            s.apply("t", &first, true).await.unwrap();
            let grant_before: Vec<Grant> = s.all_grants().map(Result::unwrap).collect();

            let second = Desired {
                apps: vec![app("a")],
                groups: vec![group("new")],
                apis: vec![
                    api_in("moving", "/m", "new"),
                    DesiredApi {
                        api: api("arriving", "/taken"),
                    },
                ],
                grants: vec![on_group("a", "new", &["RELEASE"])],
                ..Default::default()
            };
            let ((applied, _), plan) = (
                s.apply("t", &second, true).await.unwrap(),
                s.plan(&second, true).unwrap(),
            );
            assert!(plan.is_empty(), "not idempotent: {plan:?}");
            let apis: Vec<Api> = s.all_apis().map(Result::unwrap).collect();
            assert_eq!(apis.len(), 2);
            assert!(
                apis.iter()
                    .any(|a| a.name == "moving" && a.group_id.as_deref() == Some("new"))
            );
            assert!(
                apis.iter()
                    .any(|a| a.name == "arriving" && a.path == "/taken")
            );
            let groups: Vec<_> = s.all_groups().map(Result::unwrap).collect();
            assert_eq!(groups.len(), 1);
            let grants: Vec<Grant> = s.all_grants().map(Result::unwrap).collect();
            assert_eq!(grants.len(), 1);
            assert_eq!(grants[0].stages, ["RELEASE"]);
            assert_ne!(
                grants[0].id, grant_before[0].id,
                "a grant on another target is new"
            );
            assert!(applied.changes.len() >= 5, "{:?}", applied.changes);

            // A failing step leaves nothing applied: a second API on a taken route.
            let mut third = second.clone();
            third.apps.push(app("b"));
            third.apis.push(DesiredApi {
                api: api("clash", "/taken"),
            });
            let err = s.apply("t", &third, false).await.unwrap_err();
            assert!(err.to_string().contains("already used"), "{err}");
            assert!(s.get_app("b").unwrap().is_none(), "partly applied");
        }
    }
}
