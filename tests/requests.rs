//! The BlueKing permission-request flow through the real binary: a developer applies
//! for two APIs at once; the provider approves one (shortening the validity) and
//! rejects the other; Check allows the one and denies the other; the grant expires
//! and Check denies; a renewal request is approved and the same grant is extended;
//! a withdrawn request cannot be approved; the records show every step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::granted::{Granted, check_client, deny_code, signed_check};
use common::{Admin, Keygate, now_ms};
use keygate::pb::admin as pb;
use tonic::Code;

async fn principal(kg: &Keygate, admin: &mut Admin, name: &str, role: &str, owner: &str) -> Admin {
    let token = admin
        .create_principal(pb::CreatePrincipalRequest {
            principal: Some(pb::Principal {
                name: name.into(),
                role: role.into(),
                owner: owner.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    kg.admin_with_token(&token).await
}

async fn api(prov: &mut Admin, name: &str) -> String {
    prov.create_api(pb::CreateApiRequest {
        api: Some(pb::Api {
            name: name.into(),
            owner: "shop".into(),
            path: format!("/{name}/{{*rest}}"),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .id
}

fn target(i: &pb::PermissionItem) -> &str {
    match &i.target {
        Some(pb::permission_item::Target::ApiId(a)) => a,
        Some(pb::permission_item::Target::GroupId(g)) => g,
        None => "",
    }
}

fn decide(id: &str, target: &str, comment: &str) -> pb::DecidePermissionRequestRequest {
    pb::DecidePermissionRequestRequest {
        id: id.into(),
        target_ids: vec![target.into()],
        comment: comment.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn apply_approve_reject_expire_renew_withdraw() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let mut dev = principal(&kg, &mut admin, "partner-dev", "developer", "partner").await;
    let mut prov = principal(&kg, &mut admin, "shop-provider", "provider", "shop").await;
    let mut rival = principal(&kg, &mut admin, "rival", "provider", "rival").await;
    let a = api(&mut prov, "alpha").await;
    let b = api(&mut prov, "beta").await;
    let created = dev
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: "partner-app".into(),
                owner: "partner".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (app, key) = (created.app.unwrap(), created.key_pair.unwrap());
    let granted = |prefix: &str| Granted {
        app_id: app.id.clone(),
        app_key: key.app_key.clone(),
        app_secret: key.app_secret.clone(),
        app_code: String::new(),
        prefix: prefix.into(),
    };
    let (ga, gb) = (granted("/alpha"), granted("/beta"));
    let mut check = check_client(kg.check_addr()).await;
    let mut code = async |g: &Granted| {
        let r = check
            .check(signed_check(g, &g.app_secret, "/x"))
            .await
            .unwrap()
            .into_inner();
        deny_code(&r)
    };

    // Apply for both at once, for 180 days.
    let req = dev
        .create_permission_request(pb::CreatePermissionRequestRequest {
            app_id: app.id.clone(),
            api_ids: vec![a.clone(), b.clone()],
            stages: vec!["RELEASE".into()],
            reason: "order sync".into(),
            valid_days: 180,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(req.status, "pending");
    assert_eq!(req.requested_by, "partner-dev");
    let pending = prov
        .list_permission_requests(pb::ListPermissionRequestsRequest {
            api_id: a.clone(),
            status: "pending".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(pending.len(), 1);
    // Neither the developer nor another tenant's provider may decide.
    for who in [&mut dev, &mut rival] {
        let e = who
            .approve_permission_request(decide(&req.id, &a, "me"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    // Approval may shorten the validity, never lengthen it.
    let mut too_long = decide(&req.id, &a, "");
    too_long.expires_at = Some(prost_types::Timestamp {
        seconds: (now_ms() + 400 * 86_400_000) / 1000,
        nanos: 0,
    });
    let e = prov.approve_permission_request(too_long).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let soon = now_ms() + 2_500;
    let mut approve = decide(&req.id, &a, "ok for a trial");
    approve.expires_at = Some(prost_types::Timestamp {
        seconds: soon / 1000,
        nanos: ((soon % 1000) * 1_000_000) as i32,
    });
    prov.approve_permission_request(approve).await.unwrap();
    let decided = prov
        .reject_permission_request(decide(&req.id, &b, "beta is internal"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decided.status, "decided");
    let item = |r: &pb::PermissionRequest, t: &str| {
        r.items.iter().find(|i| target(i) == t).cloned().unwrap()
    };
    let (ia, ib) = (item(&decided, &a), item(&decided, &b));
    assert_eq!(
        (ia.status.as_str(), ib.status.as_str()),
        ("approved", "rejected")
    );
    assert_eq!(ia.decided_by, "shop-provider");
    assert!(ia.decide_time.is_some() && !ia.grant_id.is_empty());
    assert_eq!(ia.granted_stages, ["RELEASE"]);
    assert_eq!(ib.comment, "beta is internal");

    assert_eq!(code(&ga).await, None, "the approved API");
    assert_eq!(
        code(&gb).await.as_deref(),
        Some("NoGrant"),
        "the rejected API"
    );

    // The grant expires.
    let wait = (soon - now_ms()).max(0) as u64 + 300;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(code(&ga).await.as_deref(), Some("GrantExpired"));

    // Renewal: a new request, approved as asked; the same grant is extended.
    let renewal = dev
        .create_permission_request(pb::CreatePermissionRequestRequest {
            app_id: app.id.clone(),
            api_ids: vec![a.clone()],
            reason: "renewal".into(),
            valid_days: 360,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let renewed = prov
        .approve_permission_request(pb::DecidePermissionRequestRequest {
            id: renewal.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ir = item(&renewed, &a);
    assert_eq!(
        ir.grant_id, ia.grant_id,
        "a renewal extends the app's one grant"
    );
    let until = ir.granted_expires_at.unwrap().seconds * 1000;
    assert!(until > now_ms() + 359 * 86_400_000, "{until}");
    assert_eq!(code(&ga).await, None, "allowed again");

    // A withdrawn request cannot be approved.
    let third = dev
        .create_permission_request(pb::CreatePermissionRequestRequest {
            app_id: app.id.clone(),
            api_ids: vec![b.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let withdrawn = dev
        .withdraw_permission_request(pb::WithdrawPermissionRequestRequest {
            id: third.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(withdrawn.status, "withdrawn");
    let e = prov
        .approve_permission_request(decide(&third.id, &b, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // The records: every request of the app, and the audit trail.
    let all = dev
        .list_permission_requests(pb::ListPermissionRequestsRequest {
            app_id: app.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(all.len(), 3);
    let actions: Vec<String> = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .filter(|e| e.resource_type == "permission_request")
        .map(|e| format!("{} {}", e.actor, e.action))
        .collect();
    assert_eq!(
        actions,
        [
            "partner-dev CreatePermissionRequest",
            "shop-provider ApprovePermissionRequest",
            "shop-provider RejectPermissionRequest",
            "partner-dev CreatePermissionRequest",
            "shop-provider ApprovePermissionRequest",
            "partner-dev CreatePermissionRequest",
            "partner-dev WithdrawPermissionRequest",
        ]
    );
}

#[tokio::test]
async fn the_cli_applies_and_decides() {
    use common::cli::run_env;
    let kg = Keygate::start();
    let admin = kg.admin().await;
    let addr = kg.admin_addr().to_string();
    let token = |name: &str, role: &str, owner: &str| {
        let mut admin = admin.clone();
        let (name, role, owner) = (name.to_owned(), role.to_owned(), owner.to_owned());
        async move {
            admin
                .create_principal(pb::CreatePrincipalRequest {
                    principal: Some(pb::Principal {
                        name,
                        role,
                        owner,
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner()
                .token
        }
    };
    let dev = token("d", "developer", "partner").await;
    let prov = token("p", "provider", "shop").await;
    let mut p = kg.admin_with_token(&prov).await;
    let a = api(&mut p, "cli-api").await;
    let as_ = |t: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--output", "json", "--admin-addr", &addr]);
        run_env(&all, &[("KEYGATE_ADMIN_TOKEN", t)]).json()
    };
    let app = as_(
        &dev,
        &["app", "create", "--name", "cli-app", "--owner", "partner"],
    );
    let app_id = app["app"]["id"].as_str().unwrap().to_owned();
    let req = as_(
        &dev,
        &[
            "request",
            "create",
            "--app",
            &app_id,
            "--api",
            &a,
            "--reason",
            "please",
            "--valid-days",
            "180",
        ],
    );
    assert_eq!(req["status"], "pending", "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    let pending = as_(
        &prov,
        &["request", "list", "--api", &a, "--status", "pending"],
    );
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    let approved = as_(&prov, &["request", "approve", &id, "--comment", "ok"]);
    assert_eq!(approved["items"][0]["status"], "approved", "{approved}");
    assert!(
        approved["items"][0]["granted_expires_at"].is_string(),
        "{approved}"
    );
    let perms = as_(&dev, &["grant", "permissions", "--app", &app_id]);
    assert_eq!(perms.as_array().unwrap().len(), 1, "{perms}");
}
