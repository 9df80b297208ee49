//! End-to-end tests of the admin side: the real `keygate` binary, started on port 0
//! with a temporary data dir, driven through the generated admin client.
//!
//! Covers the management API's contract (codes, secrets shown once, field masks,
//! cascades, paging, audit), bearer auth, durability across `kill -9`, graceful stop,
//! and start-up failures an operator meets (bad flags, a taken port, a bad data dir).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;

use common::{Admin, Keygate};
use keygate::pb::admin as pb;
use prost_types::{Duration, FieldMask, Timestamp};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

// === helpers ===

/// The error of `r`, which must have failed with `code`.
#[track_caller]
fn err<T: Debug>(r: Result<T, Status>, code: Code) -> Status {
    match r {
        Ok(ok) => panic!("expected {code:?}, got success: {ok:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}

fn app(name: &str, owner: &str) -> pb::App {
    pb::App {
        name: name.into(),
        owner: owner.into(),
        ..Default::default()
    }
}

async fn create_app(c: &mut Admin, a: pb::App) -> (pb::App, pb::KeyPair) {
    let r = c
        .create_app(pb::CreateAppRequest {
            app: Some(a),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (r.app.unwrap(), r.key_pair.unwrap())
}

async fn get_key(c: &mut Admin, app_key: &str) -> Result<pb::KeyPair, Status> {
    c.get_key_pair(pb::GetKeyPairRequest {
        app_key: app_key.into(),
    })
    .await
    .map(Response::into_inner)
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn ms(t: &Option<Timestamp>) -> i64 {
    let t = t.as_ref().expect("timestamp set");
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

/// A fixed point in the future, whole seconds (the API keeps milliseconds).
fn future(secs_from_2030: i64) -> Timestamp {
    Timestamp {
        seconds: 1_893_456_000 + secs_from_2030,
        nanos: 0,
    }
}

fn api(name: &str, owner: &str, path: &str) -> pb::Api {
    pb::Api {
        name: name.into(),
        owner: owner.into(),
        path: path.into(),
        ..Default::default()
    }
}

async fn create_api(c: &mut Admin, a: pb::Api) -> Result<pb::Api, Status> {
    c.create_api(pb::CreateApiRequest { api: Some(a) })
        .await
        .map(Response::into_inner)
}

async fn create_grant(
    c: &mut Admin,
    app_id: &str,
    target: pb::grant::Target,
    stages: &[&str],
) -> Result<pb::Grant, Status> {
    c.create_grant(pb::CreateGrantRequest {
        grant: Some(pb::Grant {
            app_id: app_id.into(),
            target: Some(target),
            stages: stages.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }),
    })
    .await
    .map(Response::into_inner)
}

async fn list_grants(c: &mut Admin, req: pb::ListGrantsRequest) -> Vec<String> {
    let mut ids: Vec<String> = c
        .list_grants(req)
        .await
        .unwrap()
        .into_inner()
        .grants
        .into_iter()
        .map(|g| g.id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// === apps and key pairs ===

#[tokio::test]
async fn create_app_shows_the_default_secret_once() {
    let kg = Keygate::start();
    let mut c = kg.admin().await;

    let mut a = app("billing", "acme");
    a.description = "pays the bills".into();
    a.tags = HashMap::from([("env".into(), "prod".into())]);
    a.extend_info = "{\"tier\":\"gold\"}".into();
    let (created, key) = create_app(&mut c, a).await;
    assert!(!created.id.is_empty());
    assert!(created.enabled);
    assert_eq!(created.name, "billing");
    assert_eq!(created.owner, "acme");
    assert!(created.create_time.is_some());
    assert!(
        !created.app_code.is_empty() && created.app_code_set,
        "CreateApp shows the AppCode it generated"
    );
    assert_eq!(key.app_id, created.id);
    assert!(key.is_default && key.enabled);
    assert!(!key.app_key.is_empty());
    assert!(
        key.app_secret.len() >= 16,
        "secret shown on create: {key:?}"
    );

    // Reads never show a secret (nor the AppCode).
    let got = c
        .get_app(pb::GetAppRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "billing");
    assert_eq!(got.description, "pays the bills");
    assert_eq!(got.tags.get("env").map(String::as_str), Some("prod"));
    assert_eq!(got.extend_info, "{\"tier\":\"gold\"}");
    assert!(got.app_code.is_empty() && got.app_code_set);
    let k = get_key(&mut c, &key.app_key).await.unwrap();
    assert_eq!(k.app_id, created.id);
    assert!(k.is_default);
    assert_eq!(k.app_secret, "", "GetKeyPair must not return the secret");

    // A second pair with a custom AppKey and secret.
    let custom = c
        .create_key_pair(pb::CreateKeyPairRequest {
            name: Default::default(),
            description: Default::default(),
            app_id: created.id.clone(),
            app_key: "billing-key.2".into(),
            app_secret: "a-custom-secret-0123456789".into(),
            expires_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(custom.app_key, "billing-key.2");
    assert_eq!(custom.app_secret, "a-custom-secret-0123456789");
    assert!(!custom.is_default);

    let list = c
        .list_key_pairs(pb::ListKeyPairsRequest {
            app_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut keys: Vec<&str> = list.key_pairs.iter().map(|k| k.app_key.as_str()).collect();
    keys.sort_unstable();
    let mut want = vec![key.app_key.as_str(), "billing-key.2"];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert!(
        list.key_pairs.iter().all(|k| k.app_secret.is_empty()),
        "ListKeyPairs must not return secrets: {list:?}"
    );

    // The AppKey is globally unique, also across apps.
    let (other, _) = create_app(&mut c, app("other", "acme")).await;
    let dup = c
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: other.id.clone(),
            app_key: "billing-key.2".into(),
            ..Default::default()
        })
        .await;
    err(dup, Code::AlreadyExists);

    // A too-short custom secret is refused, naming the field.
    let short = c
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: created.id.clone(),
            app_secret: "short".into(),
            ..Default::default()
        })
        .await;
    let s = err(short, Code::InvalidArgument);
    assert!(s.message().starts_with("KeyPair.app_secret"), "{s:?}");

    // The default pair cannot be deleted; another one can.
    let del = c
        .delete_key_pair(pb::DeleteKeyPairRequest {
            app_key: key.app_key.clone(),
        })
        .await;
    err(del, Code::FailedPrecondition);
    c.delete_key_pair(pb::DeleteKeyPairRequest {
        app_key: "billing-key.2".into(),
    })
    .await
    .unwrap();
    err(
        c.get_key_pair(pb::GetKeyPairRequest {
            app_key: "billing-key.2".into(),
        })
        .await,
        Code::NotFound,
    );
    assert!(get_key(&mut c, &key.app_key).await.is_ok());
}

#[tokio::test]
async fn key_pair_reset_enable_disable_and_expiry() {
    let kg = Keygate::start();
    let mut c = kg.admin().await;
    let (_, key) = create_app(&mut c, app("rotator", "acme")).await;

    // Reset without grace: a new secret, no previous one kept.
    let r1 = c
        .reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
            app_key: key.app_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r1.app_secret.is_empty());
    assert_ne!(r1.app_secret, key.app_secret);
    assert!(r1.previous_secret_expires_at.is_none(), "{r1:?}");

    // Reset with a grace period: the previous secret's deadline is reported.
    let r2 = c
        .reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
            app_key: key.app_key.clone(),
            grace_period: Some(Duration {
                seconds: 600,
                nanos: 0,
            }),
            app_secret: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r2.app_secret.is_empty());
    assert_ne!(r2.app_secret, r1.app_secret);
    assert_eq!(
        ms(&r2.previous_secret_expires_at) - ms(&r2.update_time),
        600_000,
        "previous secret verifies for the grace period after the reset: {r2:?}"
    );
    let got = get_key(&mut c, &key.app_key).await.unwrap();
    assert_eq!(got.app_secret, "");
    assert_eq!(
        got.previous_secret_expires_at,
        r2.previous_secret_expires_at
    );

    // A custom new secret is taken as given.
    let r3 = c
        .reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
            app_key: key.app_key.clone(),
            grace_period: None,
            app_secret: "rotated-secret-ABCDEFGHIJ".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r3.app_secret, "rotated-secret-ABCDEFGHIJ");

    // Disable and enable.
    let off = c
        .disable_key_pair(pb::DisableKeyPairRequest {
            app_key: key.app_key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!off.enabled);
    assert_eq!(off.app_secret, "");
    assert!(!get_key(&mut c, &key.app_key).await.unwrap().enabled);
    let on = c
        .enable_key_pair(pb::EnableKeyPairRequest {
            app_key: key.app_key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(on.enabled);

    // Set, then clear, the expiry through UpdateKeyPair and its mask.
    let when = future(0);
    let upd = c
        .update_key_pair(pb::UpdateKeyPairRequest {
            key_pair: Some(pb::KeyPair {
                app_key: key.app_key.clone(),
                expires_at: Some(when),
                ..Default::default()
            }),
            update_mask: mask(&["expires_at"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upd.expires_at, Some(when));
    assert!(upd.enabled, "a mask of expires_at leaves enabled alone");
    assert_eq!(
        get_key(&mut c, &key.app_key).await.unwrap().expires_at,
        Some(when)
    );
    let cleared = c
        .update_key_pair(pb::UpdateKeyPairRequest {
            key_pair: Some(pb::KeyPair {
                app_key: key.app_key.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["expires_at"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.expires_at, None);

    // The secret is not updatable through UpdateKeyPair.
    let bad = c
        .update_key_pair(pb::UpdateKeyPairRequest {
            key_pair: Some(pb::KeyPair {
                app_key: key.app_key.clone(),
                app_secret: "sneaky-secret-0123456789".into(),
                ..Default::default()
            }),
            update_mask: mask(&["app_secret"]),
        })
        .await;
    let s = err(bad, Code::InvalidArgument);
    assert!(s.message().starts_with("update_mask"), "{s:?}");
    err(
        c.reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
            app_key: "no-such-key".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn update_app_by_field_mask_and_not_found() {
    let kg = Keygate::start();
    let mut c = kg.admin().await;
    let mut a = app("orders", "acme");
    a.description = "d1".into();
    a.tags = HashMap::from([("team".into(), "x".into())]);
    let (created, _) = create_app(&mut c, a).await;
    create_app(&mut c, app("taken", "acme")).await;

    // Only the masked field changes, whatever else the message carries.
    let upd = c
        .update_app(pb::UpdateAppRequest {
            app: Some(pb::App {
                id: created.id.clone(),
                name: "ignored".into(),
                description: "d2".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upd.name, "orders");
    assert_eq!(upd.description, "d2");
    assert_eq!(upd.tags.get("team").map(String::as_str), Some("x"));
    assert_eq!(upd.app_code, "", "UpdateApp must not return the AppCode");

    let upd = c
        .update_app(pb::UpdateAppRequest {
            app: Some(pb::App {
                id: created.id.clone(),
                tags: HashMap::from([("env".into(), "test".into())]),
                enabled: false,
                ..Default::default()
            }),
            update_mask: mask(&["tags", "enabled"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upd.tags.len(), 1);
    assert_eq!(upd.tags.get("env").map(String::as_str), Some("test"));
    assert!(!upd.enabled);
    let got = c
        .get_app(pb::GetAppRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.description, "d2");
    assert!(!got.enabled);

    // Renaming onto another app's name (same owner) is a conflict.
    err(
        c.update_app(pb::UpdateAppRequest {
            app: Some(pb::App {
                id: created.id.clone(),
                name: "taken".into(),
                ..Default::default()
            }),
            update_mask: mask(&["name"]),
        })
        .await,
        Code::AlreadyExists,
    );

    // A path the mask may not name is refused, naming update_mask.
    for bad in ["owner", "no_such_field"] {
        let s = err(
            c.update_app(pb::UpdateAppRequest {
                app: Some(pb::App {
                    id: created.id.clone(),
                    owner: "someone-else".into(),
                    ..Default::default()
                }),
                update_mask: mask(&[bad]),
            })
            .await,
            Code::InvalidArgument,
        );
        assert!(s.message().starts_with("update_mask"), "{bad}: {s:?}");
        assert!(s.message().contains(bad), "{bad}: {s:?}");
    }

    // Unknown ids are NOT_FOUND on every kind of resource.
    let none = "app_doesnotexist";
    err(
        c.update_app(pb::UpdateAppRequest {
            app: Some(pb::App {
                id: none.into(),
                description: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await,
        Code::NotFound,
    );
    err(
        c.get_app(pb::GetAppRequest { id: none.into() }).await,
        Code::NotFound,
    );
    err(
        c.delete_app(pb::DeleteAppRequest { id: none.into() }).await,
        Code::NotFound,
    );
    err(
        c.disable_app(pb::DisableAppRequest { id: none.into() })
            .await,
        Code::NotFound,
    );
    err(
        c.get_group(pb::GetGroupRequest { id: none.into() }).await,
        Code::NotFound,
    );
    err(
        c.get_api(pb::GetApiRequest { id: none.into() }).await,
        Code::NotFound,
    );
    err(
        c.get_grant(pb::GetGrantRequest { id: none.into() }).await,
        Code::NotFound,
    );
    err(
        c.create_key_pair(pb::CreateKeyPairRequest {
            app_id: none.into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );

    // Names are unique per owner; ids are unique.
    err(
        c.create_app(pb::CreateAppRequest {
            app: Some(app("orders", "acme")),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
    );
    create_app(&mut c, app("orders", "globex")).await;
    let mut custom = app("custom-id", "acme");
    custom.id = "my-app-1".into();
    let (mine, _) = create_app(&mut c, custom.clone()).await;
    assert_eq!(mine.id, "my-app-1");
    custom.name = "custom-id-2".into();
    err(
        c.create_app(pb::CreateAppRequest {
            app: Some(custom),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
    );
    let s = err(
        c.create_app(pb::CreateAppRequest {
            app: Some(app("", "acme")),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(s.message().starts_with("App.name"), "{s:?}");
}

#[tokio::test]
async fn list_apps_filters_by_owner_and_tag_and_pages() {
    let kg = Keygate::start();
    let mut c = kg.admin().await;
    let mut all = Vec::new();
    for i in 0..7 {
        let owner = if i < 5 { "acme" } else { "globex" };
        let mut a = app(&format!("app-{i}"), owner);
        if i % 2 == 0 {
            a.tags.insert("env".into(), "prod".into());
        }
        if i == 1 {
            a.tags.insert("env".into(), "dev".into());
        }
        all.push(create_app(&mut c, a).await.0.id);
    }
    let ids = |apps: Vec<pb::App>| sorted(apps.into_iter().map(|a| a.id).collect());
    let list = |owner: &str, tag: &str| pb::ListAppsRequest {
        owner: owner.into(),
        tag: tag.into(),
        ..Default::default()
    };

    let acme = c.list_apps(list("acme", "")).await.unwrap().into_inner();
    assert_eq!(ids(acme.apps), sorted(all[..5].to_vec()));
    assert_eq!(acme.next_page_token, "");
    let globex = c.list_apps(list("globex", "")).await.unwrap().into_inner();
    assert_eq!(ids(globex.apps), sorted(all[5..].to_vec()));
    let nobody = c.list_apps(list("nobody", "")).await.unwrap().into_inner();
    assert!(nobody.apps.is_empty());

    // "key" matches any value, "key=value" that value only; filters combine.
    let env_any = c.list_apps(list("", "env")).await.unwrap().into_inner();
    let want: Vec<String> = [0, 1, 2, 4, 6].iter().map(|&i| all[i].clone()).collect();
    assert_eq!(ids(env_any.apps), sorted(want));
    let prod = c
        .list_apps(list("", "env=prod"))
        .await
        .unwrap()
        .into_inner();
    let want: Vec<String> = [0, 2, 4, 6].iter().map(|&i| all[i].clone()).collect();
    assert_eq!(ids(prod.apps), sorted(want));
    let acme_prod = c
        .list_apps(list("acme", "env=prod"))
        .await
        .unwrap()
        .into_inner();
    let want: Vec<String> = [0, 2, 4].iter().map(|&i| all[i].clone()).collect();
    assert_eq!(ids(acme_prod.apps), sorted(want));

    // Found by name: a prefix, case ignored, combined with the other filters.
    let by_name = |prefix: &str, owner: &str| pb::ListAppsRequest {
        name_prefix: prefix.into(),
        owner: owner.into(),
        ..Default::default()
    };
    let one = c
        .list_apps(by_name("APP-3", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(one.apps), vec![all[3].clone()]);
    let globex_named = c
        .list_apps(by_name("app-", "globex"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(globex_named.apps), sorted(all[5..].to_vec()));
    let none = c.list_apps(by_name("zzz", "")).await.unwrap().into_inner();
    assert!(none.apps.is_empty());

    // page_size=2 walks every app exactly once, unfiltered and filtered.
    for (owner, expected) in [("", all.clone()), ("acme", all[..5].to_vec())] {
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = c
                .list_apps(pb::ListAppsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    owner: owner.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.apps.len() <= 2, "page larger than page_size");
            assert!(!page.apps.is_empty(), "empty page {pages}");
            seen.extend(page.apps.into_iter().map(|a| a.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
            assert!(pages < 20, "paging does not end");
        }
        assert_eq!(pages, expected.len().div_ceil(2), "owner '{owner}'");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "an app was listed twice: {seen:?}"
        );
        assert_eq!(sorted(seen), sorted(expected), "owner '{owner}'");
    }

    let s = err(
        c.list_apps(pb::ListAppsRequest {
            page_token: "not-a-token!".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(s.message().starts_with("page_token"), "{s:?}");
    err(
        c.list_apps(pb::ListAppsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
}

// === groups, APIs, grants ===

#[tokio::test]
async fn groups_apis_and_grants() {
    let kg = Keygate::start();
    let mut c = kg.admin().await;

    let group = c
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                name: "users".into(),
                owner: "provider".into(),
                description: "user APIs".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!group.id.is_empty());
    err(
        c.create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                name: "users".into(),
                owner: "provider".into(),
                ..Default::default()
            }),
        })
        .await,
        Code::AlreadyExists,
    );
    let renamed = c
        .update_group(pb::UpdateGroupRequest {
            group: Some(pb::Group {
                id: group.id.clone(),
                description: "all user APIs".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "users");
    assert_eq!(renamed.description, "all user APIs");

    let mut get_user = api("get-user", "provider", "/users/{id}");
    get_user.group_id = group.id.clone();
    get_user.methods = vec!["get".into()];
    get_user.auth_schemes = vec![pb::AuthScheme::Aliyun as i32];
    let get_user = create_api(&mut c, get_user).await.unwrap();
    assert_eq!(get_user.methods, vec!["GET".to_owned()]);
    assert_eq!(get_user.group_id, group.id);
    let files = create_api(&mut c, api("files", "provider", "/files/{*rest}"))
        .await
        .unwrap();

    // An invalid template is refused, naming the field.
    let s = err(
        create_api(&mut c, api("bad", "provider", "/a/{*rest}/b")).await,
        Code::InvalidArgument,
    );
    assert!(s.message().starts_with("Api.path"), "{s:?}");
    let s = err(
        create_api(&mut c, api("bad2", "provider", "no-slash")).await,
        Code::InvalidArgument,
    );
    assert!(s.message().starts_with("Api.path"), "{s:?}");

    // The same route (host, method, template up to parameter names) is taken.
    let mut same_route = api("get-user-again", "provider", "/users/{uid}");
    same_route.methods = vec!["GET".into()];
    err(create_api(&mut c, same_route).await, Code::AlreadyExists);
    // Another method on the same path is another route.
    let mut put_user = api("put-user", "provider", "/users/{id}");
    put_user.methods = vec!["PUT".into()];
    let put_user = create_api(&mut c, put_user).await.unwrap();
    // API names are globally unique.
    err(
        create_api(&mut c, api("files", "other", "/other")).await,
        Code::AlreadyExists,
    );
    // An update that moves the path onto an invalid template is refused too.
    let s = err(
        c.update_api(pb::UpdateApiRequest {
            api: Some(pb::Api {
                id: put_user.id.clone(),
                path: "/users/{".into(),
                ..Default::default()
            }),
            update_mask: mask(&["path"]),
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(s.message().starts_with("Api.path"), "{s:?}");

    let in_group = c
        .list_apis(pb::ListApisRequest {
            group_id: group.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        in_group
            .apis
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        vec![get_user.id.as_str()]
    );
    let of_provider = c
        .list_apis(pb::ListApisRequest {
            owner: "provider".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(of_provider.apis.len(), 3);

    // Partner authorization: the provider grants its APIs to another owner's app.
    let (partner, _) = create_app(&mut c, app("partner-app", "partner")).await;
    assert_ne!(partner.owner, get_user.owner);
    let on_api = create_grant(
        &mut c,
        &partner.id,
        pb::grant::Target::ApiId(files.id.clone()),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(on_api.app_id, partner.id);
    assert_eq!(on_api.created_by, "admin");
    assert!(on_api.stages.is_empty(), "no stages means any stage");
    let on_group = create_grant(
        &mut c,
        &partner.id,
        pb::grant::Target::GroupId(group.id.clone()),
        &["release", "Test"],
    )
    .await
    .unwrap();
    assert_eq!(
        on_group.stages,
        vec!["RELEASE".to_owned(), "TEST".to_owned()]
    );
    let got = c
        .get_grant(pb::GetGrantRequest {
            id: on_group.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.target,
        Some(pb::grant::Target::GroupId(group.id.clone()))
    );

    // Another app, to prove the filters filter.
    let (other, _) = create_app(&mut c, app("other-app", "partner")).await;
    let other_grant = create_grant(
        &mut c,
        &other.id,
        pb::grant::Target::ApiId(get_user.id.clone()),
        &["TEST"],
    )
    .await
    .unwrap();

    let by = |app: &str, api: &str, group: &str| pb::ListGrantsRequest {
        app_id: app.into(),
        api_id: api.into(),
        group_id: group.into(),
        ..Default::default()
    };
    assert_eq!(
        list_grants(&mut c, by(&partner.id, "", "")).await,
        sorted(vec![on_api.id.clone(), on_group.id.clone()])
    );
    assert_eq!(
        list_grants(&mut c, by("", &files.id, "")).await,
        vec![on_api.id.clone()]
    );
    assert_eq!(
        list_grants(&mut c, by("", &get_user.id, "")).await,
        vec![other_grant.id.clone()]
    );
    assert_eq!(
        list_grants(&mut c, by("", "", &group.id)).await,
        vec![on_group.id.clone()]
    );
    assert_eq!(list_grants(&mut c, by("", "", "")).await.len(), 3);
    err(
        c.list_grants(by(&partner.id, &files.id, "")).await,
        Code::InvalidArgument,
    );

    // Grants need an existing app and target, and a target.
    err(
        create_grant(
            &mut c,
            &partner.id,
            pb::grant::Target::ApiId("api_nope".into()),
            &[],
        )
        .await,
        Code::NotFound,
    );
    err(
        create_grant(
            &mut c,
            "app_nope",
            pb::grant::Target::ApiId(files.id.clone()),
            &[],
        )
        .await,
        Code::NotFound,
    );
    let s = err(
        c.create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: partner.id.clone(),
                ..Default::default()
            }),
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(s.message().starts_with("Grant.target"), "{s:?}");

    // A group with APIs cannot be deleted; deleting an API removes its grants.
    err(
        c.delete_group(pb::DeleteGroupRequest {
            id: group.id.clone(),
        })
        .await,
        Code::FailedPrecondition,
    );
    c.delete_api(pb::DeleteApiRequest {
        id: files.id.clone(),
    })
    .await
    .unwrap();
    err(
        c.get_grant(pb::GetGrantRequest {
            id: on_api.id.clone(),
        })
        .await,
        Code::NotFound,
    );
    assert_eq!(
        list_grants(&mut c, by(&partner.id, "", "")).await,
        vec![on_group.id.clone()]
    );
    c.delete_grant(pb::DeleteGrantRequest {
        id: other_grant.id.clone(),
    })
    .await
    .unwrap();
    err(
        c.delete_grant(pb::DeleteGrantRequest {
            id: other_grant.id.clone(),
        })
        .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn delete_app_cascades_to_keys_and_grants() {
    let kg = Keygate::start();
    let mut c = kg.admin().await;
    let target = create_api(&mut c, api("ping", "provider", "/ping"))
        .await
        .unwrap();
    let (doomed, default_key) = create_app(&mut c, app("doomed", "acme")).await;
    let extra = c
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: doomed.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let grant = create_grant(
        &mut c,
        &doomed.id,
        pb::grant::Target::ApiId(target.id.clone()),
        &[],
    )
    .await
    .unwrap();
    // A bystander whose key and grant must survive.
    let (keeper, keeper_key) = create_app(&mut c, app("keeper", "acme")).await;
    let keeper_grant = create_grant(
        &mut c,
        &keeper.id,
        pb::grant::Target::ApiId(target.id.clone()),
        &[],
    )
    .await
    .unwrap();

    c.delete_app(pb::DeleteAppRequest {
        id: doomed.id.clone(),
    })
    .await
    .unwrap();

    err(
        c.get_app(pb::GetAppRequest {
            id: doomed.id.clone(),
        })
        .await,
        Code::NotFound,
    );
    for k in [&default_key.app_key, &extra.app_key] {
        assert_eq!(
            get_key(&mut c, k).await.unwrap_err().code(),
            Code::NotFound,
            "key {k} of a deleted app"
        );
    }
    err(
        c.get_grant(pb::GetGrantRequest {
            id: grant.id.clone(),
        })
        .await,
        Code::NotFound,
    );
    let left = list_grants(
        &mut c,
        pb::ListGrantsRequest {
            api_id: target.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(left, vec![keeper_grant.id.clone()]);
    assert!(get_key(&mut c, &keeper_key.app_key).await.is_ok());
    assert!(
        c.get_api(pb::GetApiRequest {
            id: target.id.clone()
        })
        .await
        .is_ok(),
        "the API is not the app's to delete"
    );
    // The name is free again.
    create_app(&mut c, app("doomed", "acme")).await;
    // The readiness probe counts what the index holds: keeper's and the new app's.
    let (code, body) = kg.http_get("/readyz");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["apps"], 2, "{body}");
    assert_eq!(v["keys"], 2, "{body}");
    assert_eq!(v["grants"], 1, "{body}");
}

// === audit ===

#[tokio::test]
async fn audit_log_lists_writes_in_order_without_secrets() {
    let kg = Keygate::start();
    let mut c = kg.admin().await;
    let mut secrets = Vec::new();

    let (a, k) = create_app(&mut c, app("audited", "acme")).await;
    secrets.push(k.app_secret.clone());
    secrets.push(a.app_code.clone());
    let mut req = Request::new(pb::CreateKeyPairRequest {
        name: Default::default(),
        description: Default::default(),
        app_id: a.id.clone(),
        app_key: "audited-key".into(),
        app_secret: "custom-secret-for-audit-0001".into(),
        expires_at: None,
    });
    req.metadata_mut()
        .insert("x-keygate-actor", "alice".parse().unwrap());
    let k2 = c.create_key_pair(req).await.unwrap().into_inner();
    secrets.push(k2.app_secret.clone());
    let r = c
        .reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
            app_key: k.app_key.clone(),
            grace_period: Some(Duration {
                seconds: 60,
                nanos: 0,
            }),
            app_secret: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    secrets.push(r.app_secret.clone());
    let code = c
        .reset_app_code(pb::ResetAppCodeRequest {
            id: a.id.clone(),
            app_code: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!code.app_code.is_empty());
    assert_ne!(code.app_code, a.app_code);
    secrets.push(code.app_code.clone());
    c.update_app(pb::UpdateAppRequest {
        app: Some(pb::App {
            id: a.id.clone(),
            description: "now audited".into(),
            ..Default::default()
        }),
        update_mask: mask(&["description"]),
    })
    .await
    .unwrap();
    c.disable_key_pair(pb::DisableKeyPairRequest {
        app_key: "audited-key".into(),
    })
    .await
    .unwrap();
    let g = c
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                name: "g".into(),
                owner: "acme".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let x = create_api(&mut c, api("x", "acme", "/x")).await.unwrap();
    let grant = create_grant(&mut c, &a.id, pb::grant::Target::ApiId(x.id.clone()), &[])
        .await
        .unwrap();
    c.delete_grant(pb::DeleteGrantRequest {
        id: grant.id.clone(),
    })
    .await
    .unwrap();
    c.delete_app(pb::DeleteAppRequest { id: a.id.clone() })
        .await
        .unwrap();
    // A refused write leaves no trace.
    err(
        c.delete_group(pb::DeleteGroupRequest {
            id: "grp_nope".into(),
        })
        .await,
        Code::NotFound,
    );

    let events = c
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let got: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.resource_type.as_str(),
                e.resource_id.as_str(),
            )
        })
        .collect();
    let want = vec![
        ("CreateApp", "app", a.id.as_str()),
        ("CreateKeyPair", "key_pair", "audited-key"),
        ("ResetKeyPairSecret", "key_pair", k.app_key.as_str()),
        ("ResetAppCode", "app", a.id.as_str()),
        ("UpdateApp", "app", a.id.as_str()),
        ("DisableKeyPair", "key_pair", "audited-key"),
        ("CreateGroup", "group", g.id.as_str()),
        ("CreateApi", "api", x.id.as_str()),
        ("CreateGrant", "grant", grant.id.as_str()),
        ("DeleteGrant", "grant", grant.id.as_str()),
        ("DeleteApp", "app", a.id.as_str()),
    ];
    assert_eq!(got, want, "audit events: {events:#?}");
    // Summaries say what changed, before and after, in words.
    let summary_of = |action: &str| {
        events
            .iter()
            .find(|e| e.action == action)
            .map(|e| e.summary.as_str())
            .unwrap_or_default()
    };
    assert_eq!(
        summary_of("UpdateApp"),
        "description: (empty) → now audited"
    );
    assert_eq!(summary_of("DisableKeyPair"), "enabled: true → false");
    assert!(
        summary_of("CreateApi").contains(&format!("path={}", x.path)),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e.summary.contains("Some(")),
        "debug text in a summary: {events:#?}"
    );
    // Dense: failed writes above (NotFound, refused) used no id.
    assert!(
        events.windows(2).all(|w| w[1].id == w[0].id + 1),
        "ids are consecutive: {events:#?}"
    );
    assert!(
        events.windows(2).all(|w| ms(&w[0].time) <= ms(&w[1].time)),
        "times do not go back: {events:#?}"
    );
    for e in &events {
        let want_actor = if e.action == "CreateKeyPair" {
            "admin:alice"
        } else {
            "admin"
        };
        assert_eq!(e.actor, want_actor, "{e:?}");
        for s in &secrets {
            assert!(
                !e.summary.contains(s.as_str()),
                "audit summary leaks a secret: {e:?}"
            );
        }
        assert!(!e.summary.contains(common::TOKEN), "{e:?}");
    }

    // Filter by resource, and page through.
    let of_key = c
        .list_audit_events(pb::ListAuditEventsRequest {
            resource_id: "audited-key".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = of_key.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["CreateKeyPair", "DisableKeyPair"]);
    let first = c
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.events.len(), 4);
    let rest = c
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 100,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.events.len(), want.len() - 4);
    assert_eq!(rest.events[0].id, events[4].id);
}

// === authentication and listeners ===

#[tokio::test]
async fn admin_calls_need_the_bearer_token_but_health_does_not() {
    let kg = Keygate::start();

    let mut anon = kg.admin_without_token().await;
    let s = err(
        anon.list_apps(pb::ListAppsRequest::default()).await,
        Code::Unauthenticated,
    );
    assert!(!s.message().contains(common::TOKEN));
    let mut wrong = kg.admin_with_token("not-the-token-0123456789").await;
    err(
        wrong.list_apps(pb::ListAppsRequest::default()).await,
        Code::Unauthenticated,
    );
    err(
        wrong
            .create_app(pb::CreateAppRequest {
                app: Some(app("sneaky", "x")),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
    );
    // The refused write did not happen.
    let mut c = kg.admin().await;
    assert!(
        c.list_apps(pb::ListAppsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .apps
            .is_empty()
    );
    assert!(
        kg.stderr().contains("admin call refused"),
        "refusals are logged"
    );
    assert!(
        !kg.stderr().contains(common::TOKEN),
        "the token is never logged"
    );

    // Health needs no token, on both gRPC listeners.
    for (name, addr, service) in [
        ("admin", kg.admin_addr(), ""),
        ("admin", kg.admin_addr(), "keygate.admin.v1.Admin"),
        ("check", kg.check_addr(), ""),
    ] {
        let mut h = HealthClient::new(common::channel(addr).await);
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health on {name} ({service:?}): {e:?}"))
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "{name} {service:?}"
        );
    }

    // The admin API is not served on the check listener, token or not.
    let mut on_check = keygate::pb::admin::admin_client::AdminClient::with_interceptor(
        common::channel(kg.check_addr()).await,
        common::Bearer::new(common::TOKEN),
    );
    err(
        on_check.list_apps(pb::ListAppsRequest::default()).await,
        Code::Unimplemented,
    );

    let (code, body) = kg.http_get("/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
}

// === durability and process lifecycle ===

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut kg = Keygate::start();
    // Everything written so far, to check after every restart.
    let mut apps = Vec::new();
    let mut keys: Vec<(String, bool)> = Vec::new(); // (app_key, has previous secret)
    let mut apis = Vec::new();
    let mut grants = Vec::new();
    let mut secrets = Vec::new();

    for round in 0..4 {
        let mut c = kg.admin().await;
        // Five writes, then SIGKILL the moment the last one is acknowledged.
        let (a, k) = create_app(&mut c, app(&format!("durable-{round}"), "acme")).await;
        secrets.push(k.app_secret.clone());
        secrets.push(a.app_code.clone());
        let custom_secret = format!("durable-custom-secret-{round}-0123456789");
        let k2 = c
            .create_key_pair(pb::CreateKeyPairRequest {
                name: Default::default(),
                description: Default::default(),
                app_id: a.id.clone(),
                app_key: format!("durable-key-{round}"),
                app_secret: custom_secret.clone(),
                expires_at: Some(future(round)),
            })
            .await
            .unwrap()
            .into_inner();
        secrets.push(custom_secret);
        let x = create_api(
            &mut c,
            api(
                &format!("durable-api-{round}"),
                "provider",
                &format!("/durable/{round}/{{id}}"),
            ),
        )
        .await
        .unwrap();
        let g = create_grant(&mut c, &a.id, pb::grant::Target::ApiId(x.id.clone()), &[])
            .await
            .unwrap();
        let reset = c
            .reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
                app_key: k.app_key.clone(),
                grace_period: Some(Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                app_secret: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        kg.kill9();
        secrets.push(reset.app_secret.clone());
        apps.push(a.id);
        keys.push((k.app_key, true));
        keys.push((k2.app_key, false));
        apis.push(x.id);
        grants.push(g.id);

        kg.restart().await;
        assert!(
            kg.stderr().contains("index loaded"),
            "restart {round}: {}",
            kg.stderr()
        );
        let mut c = kg.admin().await;
        for id in &apps {
            c.get_app(pb::GetAppRequest { id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("round {round}: app {id} lost: {e:?}"));
        }
        for (k, has_previous) in &keys {
            // Get opens the sealed secret, so this also proves it decrypts.
            let got = get_key(&mut c, k)
                .await
                .unwrap_or_else(|e| panic!("round {round}: key {k} lost: {e:?}"));
            assert_eq!(
                got.previous_secret_expires_at.is_some(),
                *has_previous,
                "round {round}: the reset of {k} was lost: {got:?}"
            );
        }
        for id in &apis {
            c.get_api(pb::GetApiRequest { id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("round {round}: api {id} lost: {e:?}"));
        }
        for id in &grants {
            c.get_grant(pb::GetGrantRequest { id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("round {round}: grant {id} lost: {e:?}"));
        }
        // The index (what the check path reads; it holds the opened secrets) was
        // rebuilt from disk with everything.
        let (code, body) = kg.http_get("/readyz");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["apps"], apps.len(), "round {round}: {body}");
        assert_eq!(v["keys"], keys.len(), "round {round}: {body}");
        assert_eq!(v["apis"], apis.len(), "round {round}: {body}");
        assert_eq!(v["grants"], grants.len(), "round {round}: {body}");
    }

    // No secret is written to disk in clear, anywhere in the data dir.
    let files = common::files_under(kg.data_dir());
    assert!(files.len() > 2, "data files: {files:?}");
    let contents: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    // Control: the records are readable in the files (a public AppKey is), so not
    // finding a secret means it is sealed, not that the scan saw nothing.
    assert!(
        contents
            .iter()
            .any(|b| common::contains_bytes(b, b"durable-key-0")),
        "the scan does not see the records: {files:?}"
    );
    for (f, bytes) in files.iter().zip(&contents) {
        for s in &secrets {
            assert!(
                !common::contains_bytes(bytes, s.as_bytes()),
                "{} holds a secret in clear",
                f.display()
            );
        }
    }
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_flushes() {
    let mut kg = Keygate::start();
    let mut c = kg.admin().await;
    let (a, _) = create_app(&mut c, app("before-stop", "acme")).await;

    // The client stays connected: an idle admin connection does not hold up the stop.
    let status = kg.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", kg.stderr());
    let log = kg.stderr();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("store flushed"), "{log}");
    assert!(
        !log.contains("grace period over"),
        "the server drained instead of abandoning calls: {log}"
    );
    assert!(!log.contains("ERROR"), "{log}");

    kg.restart().await;
    let mut c = kg.admin().await;
    let got = c
        .get_app(pb::GetAppRequest { id: a.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "before-stop");
}

// === start-up failures ===

fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn an_unknown_flag_fails_with_a_one_line_error() {
    let (status, stderr) = common::run_to_exit(&["serve", "--no-such-flag"]);
    assert!(!status.success(), "{stderr}");
    let first = lines(&stderr).first().copied().unwrap_or_default();
    assert!(
        first.starts_with("error:") && first.contains("--no-such-flag"),
        "the first line says what is wrong: {stderr}"
    );
    assert_eq!(
        lines(&stderr)
            .iter()
            .filter(|l| l.contains("error"))
            .count(),
        1,
        "{stderr}"
    );
}

#[test]
fn an_invalid_setting_fails_with_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (status, stderr) = common::run_to_exit(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--timestamp-window-secs",
        "0",
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        lines(&stderr),
        vec!["keygate: error: timestamp_window_secs 0 must be within 1..=86400"]
    );
    let (status, stderr) = common::run_to_exit(&["serve", "--check-addr", "not-an-address"]);
    assert!(!status.success(), "{stderr}");
    assert!(
        lines(&stderr)[0].starts_with("error:") && stderr.contains("--check-addr"),
        "{stderr}"
    );
}

#[test]
fn a_taken_admin_port_names_the_listener_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (status, stderr) = common::run_to_exit(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--check-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        &addr,
    ]);
    assert!(!status.success(), "{stderr}");
    let msg = lines(&stderr)
        .last()
        .copied()
        .unwrap_or_default()
        .to_owned();
    assert!(msg.contains("admin listener"), "{stderr}");
    assert!(msg.contains(&addr), "{stderr}");
    assert!(msg.to_lowercase().contains("in use"), "{stderr}");
    drop(taken);
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-regular-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = file.join("data");
    let (status, stderr) = common::run_to_exit(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--check-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    assert!(!status.success(), "{stderr}");
    let msg = lines(&stderr)
        .last()
        .copied()
        .unwrap_or_default()
        .to_owned();
    assert!(msg.starts_with("keygate: error:"), "{stderr}");
    assert!(msg.contains("data dir"), "{stderr}");
    assert!(msg.contains(data.to_str().unwrap()), "{stderr}");
}

#[test]
#[should_panic(expected = "keygate exited (exit status: 1) before it was ready")]
fn the_harness_reports_a_server_that_dies_at_start() {
    // An invalid setting: the server exits at start, and the harness must say so (with
    // the server's stderr) rather than wait for a ready file that never comes.
    let _ = Keygate::start_with_args(&["--timestamp-window-secs", "0"]);
}
