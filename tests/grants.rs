//! The grant lifecycle through the real binary: one grant per app and target, no
//! expiry in the past, updates in place, batches of apps × targets in one write,
//! what an app may call and who may call an API, the API rules that keep route hints
//! and groups inside their tenant, and BlueKing app codes as long as keygate issues.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::granted::{Granted, check_client, deny_code, explain_of, grant_app, signed_check};
use common::{Admin, Keygate, audit_len, now_ms};
use keygate::pb::admin as pb;
use tonic::Code;

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: 0,
    }
}

async fn allowed(kg: &Keygate, g: &Granted, rest: &str) -> Option<String> {
    let mut c = check_client(kg.check_addr()).await;
    let r = c
        .check(signed_check(g, &g.app_secret, rest))
        .await
        .unwrap()
        .into_inner();
    deny_code(&r)
}

/// The grant `grant_app` made.
async fn only_grant(admin: &mut Admin, app: &str) -> pb::Grant {
    let mut grants = admin
        .list_grants(pb::ListGrantsRequest {
            app_id: app.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(grants.len(), 1, "{grants:?}");
    grants.remove(0)
}

#[tokio::test]
async fn one_grant_per_target_no_past_expiry_and_updates_in_place() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "life").await;
    let grant = only_grant(&mut admin, &g.app_id).await;
    let again = admin
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: g.app_id.clone(),
                target: grant.target.clone(),
                stages: vec!["TEST".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert!(again.message().contains(&grant.id), "{again:?}");

    let past = Some(ts(now_ms() - 60_000));
    let e = admin
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: g.app_id.clone(),
                target: Some(pb::grant::Target::GroupId("nope".into())),
                expires_at: past,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("Grant.expires_at:"), "{e:?}");
    let e = admin
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: g.app_id.clone(),
            expires_at: past,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("expires_at:"), "{e:?}");
    let e = admin
        .update_key_pair(pb::UpdateKeyPairRequest {
            key_pair: Some(pb::KeyPair {
                app_key: g.app_key.clone(),
                expires_at: past,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["expires_at".into()],
            }),
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("KeyPair.expires_at:"), "{e:?}");

    // Stages and expiry change in place; the id stays.
    let explain = |stage: &str| {
        let mut r = explain_of(&signed_check(&g, &g.app_secret, "x"));
        r.stage = stage.into();
        r
    };
    let e = admin.explain(explain("TEST")).await.unwrap().into_inner();
    assert!(e.allowed, "{e:?}"); // any stage
    let later = now_ms() + 3_600_000;
    let updated = admin
        .update_grant(pb::UpdateGrantRequest {
            grant: Some(pb::Grant {
                id: grant.id.clone(),
                stages: vec!["release".into()],
                expires_at: Some(ts(later)),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.id, grant.id);
    assert_eq!(updated.stages, ["RELEASE"]);
    assert_eq!(updated.expires_at.map(|t| t.seconds), Some(later / 1000));
    let e = admin.explain(explain("TEST")).await.unwrap().into_inner();
    assert_eq!(e.code, "NoGrant", "{e:?}");
    assert_eq!(allowed(&kg, &g, "x").await, None);
    let e = admin
        .update_grant(pb::UpdateGrantRequest {
            grant: Some(pb::Grant {
                id: grant.id.clone(),
                expires_at: past,
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("Grant.expires_at:"), "{e:?}");
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            resource_id: grant.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let update = events.iter().find(|e| e.action == "UpdateGrant").unwrap();
    assert!(
        update.summary.contains("stages: [] → [RELEASE]"),
        "{update:?}"
    );

    // With one grant per target, deleting it removes the access.
    admin
        .delete_grant(pb::DeleteGrantRequest { id: grant.id })
        .await
        .unwrap();
    assert_eq!(allowed(&kg, &g, "x").await.as_deref(), Some("NoGrant"));
}

#[tokio::test]
async fn batches_are_one_write_and_views_resolve_groups() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let mut apps = Vec::new();
    for i in 0..3 {
        apps.push(grant_app(&mut admin, &format!("batch{i}")).await);
    }
    let group = admin
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                name: "bundle".into(),
                owner: "sec".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let in_group = admin
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: "bundled".into(),
                owner: "sec".into(),
                group_id: group.id.clone(),
                path: "/bundled/{*rest}".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let solo = admin
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: "solo".into(),
                owner: "sec".into(),
                path: "/solo/{*rest}".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let app_ids: Vec<String> = apps.iter().map(|a| a.app_id.clone()).collect();
    let batch = pb::BatchCreateGrantsRequest {
        app_ids: app_ids.clone(),
        api_ids: vec![solo.id.clone()],
        group_ids: vec![group.id.clone()],
        stages: vec!["RELEASE".into()],
        ..Default::default()
    };
    let audit_before = audit_len(&mut admin).await;
    let r = admin
        .batch_create_grants(batch.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.created.len(), r.unchanged.len()), (6, 0));
    assert_eq!(
        audit_len(&mut admin).await,
        audit_before + 1,
        "one audit record"
    );
    let r = admin
        .batch_create_grants(batch.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.created.len(), r.unchanged.len()), (0, 6));

    let mut with_missing = batch.clone();
    with_missing.app_ids.push("no-such-app".into());
    with_missing.api_ids = vec![in_group.id.clone()];
    with_missing.group_ids.clear();
    let e = admin.batch_create_grants(with_missing).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let direct = admin
        .list_grants(pb::ListGrantsRequest {
            api_id: in_group.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(
        direct.is_empty(),
        "a failed batch granted something: {direct:?}"
    );

    // What app 0 may call: its own API, solo, and bundled through the group.
    let perms = admin
        .list_app_permissions(pb::ListAppPermissionsRequest {
            app_id: app_ids[0].clone(),
            stage: "release".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .permissions;
    let names: Vec<&str> = perms.iter().map(|p| p.api_name.as_str()).collect();
    assert_eq!(names, ["batch0-api", "bundled", "solo"], "{perms:?}");
    let via_group = perms.iter().find(|p| p.api_name == "bundled").unwrap();
    assert_eq!(
        via_group.grant.as_ref().unwrap().target,
        Some(pb::grant::Target::GroupId(group.id.clone()))
    );
    let callers = admin
        .list_api_callers(pb::ListApiCallersRequest {
            api_id: in_group.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .permissions;
    let mut who: Vec<&str> = callers.iter().map(|p| p.app_id.as_str()).collect();
    who.sort();
    let mut expected: Vec<&str> = app_ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(who, expected);

    let deleted = admin
        .batch_delete_grants(pb::BatchDeleteGrantsRequest {
            app_ids: app_ids.clone(),
            api_ids: vec![solo.id.clone()],
            group_ids: vec![group.id.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted.len(), 6);
    let left = admin
        .list_app_permissions(pb::ListAppPermissionsRequest {
            app_id: app_ids[1].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .permissions;
    assert_eq!(left.len(), 1, "only its own API stays: {left:?}");
}

#[tokio::test]
async fn apis_keep_to_their_tenant_and_names_never_shadow_ids() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let theirs = admin
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                name: "theirs".into(),
                owner: "other-tenant".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let api = |name: &str, path: &str, group: &str| pb::CreateApiRequest {
        api: Some(pb::Api {
            name: name.into(),
            owner: "me".into(),
            path: path.into(),
            group_id: group.into(),
            ..Default::default()
        }),
    };
    let e = admin
        .create_api(api("sneaky", "/sneaky", &theirs.id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("Api.group_id:"), "{e:?}");
    let first = admin
        .create_api(api("first", "/first", ""))
        .await
        .unwrap()
        .into_inner();
    let e = admin
        .create_api(api(&first.id, "/second", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("id of another API"), "{e:?}");
}

#[tokio::test]
async fn blueking_app_codes_as_long_as_keygate_issues_verify() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let id = "a".repeat(64);
    admin
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                id: id.clone(),
                name: "long".into(),
                owner: "bk".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let key = admin
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: id.clone(),
            app_secret: "s".repeat(256),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let api = admin
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: "bk-api".into(),
                owner: "bk".into(),
                path: "/bk/{*rest}".into(),
                auth_schemes: vec![pb::AuthScheme::Bkapi as i32],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: id.clone(),
                target: Some(pb::grant::Target::ApiId(api.id)),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut check = check_client(kg.check_addr()).await;
    let req = common::signed_check(
        keygate::scheme::SchemeKind::Bkapi,
        &id,
        key.app_secret.as_bytes(),
        "GET",
        "http://api.example.com/bk/x",
        &[],
        None,
        now_ms(),
        &keygate::sign::fresh_nonce().unwrap(),
    );
    let r = check.check(req).await.unwrap().into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");
}

#[tokio::test]
async fn the_cli_updates_batches_and_resolves() {
    use common::cli::{cli, json};
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let a = grant_app(&mut admin, "clia").await;
    let b = grant_app(&mut admin, "clib").await;
    let grant = only_grant(&mut admin, &a.app_id).await;
    let updated = json(&kg, &["grant", "update", &grant.id, "--stage", "TEST"]);
    assert_eq!(updated["stages"], serde_json::json!(["TEST"]), "{updated}");
    let api_b = match only_grant(&mut admin, &b.app_id).await.target {
        Some(pb::grant::Target::ApiId(id)) => id,
        other => panic!("{other:?}"),
    };
    let created = json(
        &kg,
        &[
            "grant",
            "batch-create",
            "--app",
            &a.app_id,
            "--api",
            &api_b,
            "--stage",
            "RELEASE",
        ],
    );
    assert_eq!(created.as_array().unwrap().len(), 1, "{created}");
    let perms = json(&kg, &["grant", "permissions", "--app", &a.app_id]);
    assert_eq!(perms.as_array().unwrap().len(), 2, "{perms}");
    let callers = cli(&kg, &["grant", "callers", "--api", &api_b]);
    assert_eq!(callers.code, 0, "{}", callers.stderr);
    assert!(
        callers.stdout.contains(&a.app_id) && callers.stdout.contains(&b.app_id),
        "{}",
        callers.stdout
    );
    let none = cli(&kg, &["grant", "update", &grant.id]);
    assert_eq!(none.code, 2, "an update without flags is a usage error");
    let deleted = json(
        &kg,
        &["grant", "batch-delete", "--app", &a.app_id, "--api", &api_b],
    );
    assert_eq!(deleted.as_array().unwrap().len(), 1, "{deleted}");
}

#[tokio::test]
async fn grants_name_only_the_stages_their_owner_declared() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "staged").await;
    let grant = only_grant(&mut admin, &g.app_id).await;
    let with_stage = |s: &str| pb::UpdateGrantRequest {
        grant: Some(pb::Grant {
            id: grant.id.clone(),
            stages: vec![s.into()],
            ..Default::default()
        }),
        update_mask: None,
    };
    // The default set, where the owner declared none: a typo is an error.
    let e = admin.update_grant(with_stage("RELASE")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with("Grant.stages:")
            && e.message().contains("RELEASE, PRE, PREPUB, TEST"),
        "{e:?}"
    );
    admin.update_grant(with_stage("TEST")).await.unwrap();
    let got = admin
        .get_owner_stages(pb::GetOwnerStagesRequest {
            owner: "sec".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.declared);

    let set = admin
        .set_owner_stages(pb::SetOwnerStagesRequest {
            owner: "sec".into(),
            stages: vec!["release".into(), "canary".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.stages, ["RELEASE", "CANARY"]);
    admin.update_grant(with_stage("CANARY")).await.unwrap();
    let e = admin.update_grant(with_stage("TEST")).await.unwrap_err();
    assert!(e.message().contains("RELEASE, CANARY"), "{e:?}");
    let e = admin
        .batch_create_grants(pb::BatchCreateGrantsRequest {
            app_ids: vec![g.app_id.clone()],
            group_ids: vec![],
            api_ids: vec![match &grant.target {
                Some(pb::grant::Target::ApiId(id)) => id.clone(),
                other => panic!("{other:?}"),
            }],
            stages: vec!["PREPUB".into()],
            ..Default::default()
        })
        .await;
    // The pair is granted already: nothing new, so no stage is checked...
    assert!(e.is_ok(), "{e:?}");
    // ...but a new app on the same API is.
    let other = admin
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: "newcomer".into(),
                owner: "sec".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    let api_id = match grant.target {
        Some(pb::grant::Target::ApiId(id)) => id,
        other => panic!("{other:?}"),
    };
    let e = admin
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: other.id,
                target: Some(pb::grant::Target::ApiId(api_id)),
                stages: vec!["PREPUB".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

/// One rule on an anonymous API: an unsigned request passes, and so does a validly
/// signed one from an app without a grant (named upstream), while a credential that
/// does not verify is denied, never treated as no credential.
#[tokio::test]
async fn on_an_anonymous_api_a_verified_app_needs_no_grant() {
    use common::granted::check_request;
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "open").await;
    let grant = only_grant(&mut admin, &g.app_id).await;
    let Some(pb::grant::Target::ApiId(api_id)) = grant.target.clone() else {
        panic!("{grant:?}")
    };
    admin
        .update_api(pb::UpdateApiRequest {
            api: Some(pb::Api {
                id: api_id,
                anonymous_allowed: true,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["anonymous_allowed".into()],
            }),
        })
        .await
        .unwrap();
    admin
        .delete_grant(pb::DeleteGrantRequest {
            id: grant.id.clone(),
        })
        .await
        .unwrap();

    let mut c = check_client(kg.check_addr()).await;
    let unsigned = check_request("GET", "http://api.example.com/open/x", &[]);
    let r = c.check(unsigned).await.unwrap().into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");

    let r = c
        .check(signed_check(&g, &g.app_secret, "x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");
    let Some(authz_ok) = ok_headers(&r) else {
        panic!("{r:?}")
    };
    assert_eq!(
        authz_ok.get("x-keygate-app-id"),
        Some(&g.app_id),
        "{authz_ok:?}"
    );
    assert_eq!(
        allowed(&kg, &g, "x").await,
        None,
        "the same app again, fresh nonce"
    );
    let r = c
        .check(signed_check(&g, "not-the-secret", "x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r).as_deref(), Some("SignatureMismatch"));
    let e = admin
        .explain(explain_of(&signed_check(&g, &g.app_secret, "x")))
        .await
        .unwrap()
        .into_inner();
    assert!(e.allowed, "{e:#?}");
    let grant_step = e
        .steps
        .iter()
        .find(|s| s.step == "grant")
        .expect("a grant step");
    assert!(
        grant_step.detail.contains("needs no grant"),
        "{grant_step:?}"
    );
}

/// The headers an allow sets upstream.
fn ok_headers(
    r: &envoy_types::pb::envoy::service::auth::v3::CheckResponse,
) -> Option<std::collections::HashMap<String, String>> {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => Some(
            ok.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
        ),
        _ => None,
    }
}

/// Alibaba's custom AccessKey: an app created with its default pair's own AppKey and
/// secret signs with them; ResetKeyPairSecret with a new AppKey switches at once (the
/// old AppKey is unknown with the same write), and the pair stays the default one.
#[tokio::test]
async fn a_default_pair_takes_a_custom_app_key_and_changes_it_at_once() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "custom").await;
    let grant = only_grant(&mut admin, &g.app_id).await;
    let secret = "a-custom-secret-of-32-characters";
    let created = admin
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: "partner".into(),
                owner: "sec".into(),
                ..Default::default()
            }),
            app_key: "partner-key-1".into(),
            app_secret: secret.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (app, key) = (created.app.unwrap(), created.key_pair.unwrap());
    assert_eq!(
        (
            key.app_key.as_str(),
            key.app_secret.as_str(),
            key.is_default
        ),
        ("partner-key-1", secret, true)
    );
    admin
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: app.id.clone(),
                target: grant.target.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let partner = Granted {
        app_id: app.id.clone(),
        app_key: key.app_key.clone(),
        app_secret: secret.into(),
        app_code: String::new(),
        prefix: g.prefix.clone(),
    };
    assert_eq!(allowed(&kg, &partner, "x").await, None);

    // Bad values name their field; a taken AppKey is refused.
    for (req, field) in [
        (
            pb::CreateAppRequest {
                app: Some(pb::App {
                    name: "p2".into(),
                    owner: "sec".into(),
                    ..Default::default()
                }),
                app_key: "no spaces".into(),
                ..Default::default()
            },
            "app_key:",
        ),
        (
            pb::CreateAppRequest {
                app: Some(pb::App {
                    name: "p3".into(),
                    owner: "sec".into(),
                    ..Default::default()
                }),
                app_secret: "short".into(),
                ..Default::default()
            },
            "app_secret:",
        ),
    ] {
        let e = admin.create_app(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(field), "{e:?}");
    }
    let taken = pb::CreateAppRequest {
        app: Some(pb::App {
            name: "p4".into(),
            owner: "sec".into(),
            ..Default::default()
        }),
        app_key: g.app_key.clone(),
        ..Default::default()
    };
    let e = admin.create_app(taken).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    let rename = |new: &str, grace: i64| pb::ResetKeyPairSecretRequest {
        app_key: "partner-key-1".into(),
        new_app_key: new.into(),
        grace_period: (grace > 0).then_some(prost_types::Duration {
            seconds: grace,
            nanos: 0,
        }),
        ..Default::default()
    };
    let e = admin
        .reset_key_pair_secret(rename("partner-key-2", 60))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("grace_period:"), "{e:?}");
    let e = admin
        .reset_key_pair_secret(rename(&g.app_key, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert_eq!(
        allowed(&kg, &partner, "x").await,
        None,
        "a refused rename changes nothing"
    );

    let renamed = admin
        .reset_key_pair_secret(rename("partner-key-2", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.app_key, "partner-key-2");
    assert!(
        renamed.is_default && renamed.name == "default",
        "{renamed:?}"
    );
    assert_ne!(renamed.app_secret, secret);
    // At once, on the write's return: the old AppKey is unknown, the new one signs.
    assert_eq!(
        allowed(&kg, &partner, "x").await.as_deref(),
        Some("UnknownAppKey")
    );
    let now = Granted {
        app_key: renamed.app_key.clone(),
        app_secret: renamed.app_secret.clone(),
        ..partner.clone()
    };
    assert_eq!(allowed(&kg, &now, "x").await, None);
    let e = admin
        .get_key_pair(pb::GetKeyPairRequest {
            app_key: "partner-key-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let keys = admin
        .list_key_pairs(pb::ListKeyPairsRequest {
            app_id: app.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_pairs;
    assert_eq!(
        keys.iter().map(|k| k.app_key.as_str()).collect::<Vec<_>>(),
        ["partner-key-2"]
    );
}
