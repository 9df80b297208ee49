//! Principals and roles through the real binary.
//!
//! The role matrix: every admin RPC in `access::TABLE` × every role (admin, viewer,
//! and provider and developer of the resources' owner and of another owner), each
//! call made on fresh resources of owner `acme`; a call is `PERMISSION_DENIED` exactly
//! when the table the server enforces says so. Then partner authorization across two
//! tenants: the developer creates an app and reads its id, the provider grants it,
//! neither can list or change the other's resources, and the audit names each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::{Admin, Keygate, TOKEN};
use keygate::model::{Principal, Role};
use keygate::pb::admin as pb;
use keygate::server::admin::access::{self, Owners, TABLE};
use tonic::Code;

static N: AtomicU32 = AtomicU32::new(0);

/// Resources of owner `acme`, fresh for one call.
struct Fixture {
    app: String,
    key: String,
    group: String,
    api: String,
    grant: String,
    principal: String,
    request: String,
}

async fn fixture(admin: &mut Admin) -> Fixture {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let created = admin
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: format!("app{n}"),
                owner: "acme".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let key = admin
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: created.app.as_ref().unwrap().id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let group = admin
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                name: format!("group{n}"),
                owner: "acme".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let api = admin
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: format!("api{n}"),
                owner: "acme".into(),
                path: format!("/m{n}/{{*rest}}"),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let app = created.app.unwrap().id;
    let grant = admin
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: app.clone(),
                target: Some(pb::grant::Target::ApiId(api.id.clone())),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let request = admin
        .create_permission_request(pb::CreatePermissionRequestRequest {
            app_id: app.clone(),
            api_ids: vec![api.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let principal = format!("fx{n}");
    admin
        .create_principal(pb::CreatePrincipalRequest {
            principal: Some(pb::Principal {
                name: principal.clone(),
                role: "viewer".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    Fixture {
        app,
        key: key.app_key,
        group: group.id,
        api: api.id,
        grant: grant.id,
        principal,
        request,
    }
}

const ACME: Option<&str> = Some("acme");

fn app_side() -> Owners<'static> {
    Owners {
        app: ACME,
        resource: None,
    }
}

fn resource_side() -> Owners<'static> {
    Owners {
        app: None,
        resource: ACME,
    }
}

fn both() -> Owners<'static> {
    Owners {
        app: ACME,
        resource: ACME,
    }
}

/// Makes `rpc` on the fixture; returns whose resources it touched and the outcome.
async fn call(
    rpc: &str,
    c: &mut Admin,
    f: &Fixture,
) -> (Owners<'static>, Result<(), tonic::Status>) {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let id = |s: &String| s.clone();
    macro_rules! go {
        ($owners:expr, $e:expr) => {
            ($owners, $e.await.map(|_| ()))
        };
    }
    let mask = |p: &str| {
        Some(prost_types::FieldMask {
            paths: vec![p.into()],
        })
    };
    match rpc {
        "CreateApp" => go!(
            app_side(),
            c.create_app(pb::CreateAppRequest {
                app: Some(pb::App {
                    name: format!("new{n}"),
                    owner: "acme".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        ),
        "GetApp" => go!(app_side(), c.get_app(pb::GetAppRequest { id: id(&f.app) })),
        "ListApps" => go!(
            app_side(),
            c.list_apps(pb::ListAppsRequest {
                owner: "acme".into(),
                ..Default::default()
            })
        ),
        "UpdateApp" => go!(
            app_side(),
            c.update_app(pb::UpdateAppRequest {
                app: Some(pb::App {
                    id: id(&f.app),
                    description: "d".into(),
                    ..Default::default()
                }),
                update_mask: mask("description"),
            })
        ),
        "DeleteApp" => go!(
            app_side(),
            c.delete_app(pb::DeleteAppRequest { id: id(&f.app) })
        ),
        "EnableApp" => go!(
            app_side(),
            c.enable_app(pb::EnableAppRequest { id: id(&f.app) })
        ),
        "DisableApp" => go!(
            app_side(),
            c.disable_app(pb::DisableAppRequest { id: id(&f.app) })
        ),
        "ResetAppCode" => go!(
            app_side(),
            c.reset_app_code(pb::ResetAppCodeRequest {
                id: id(&f.app),
                ..Default::default()
            })
        ),
        "CreateKeyPair" => go!(
            app_side(),
            c.create_key_pair(pb::CreateKeyPairRequest {
                app_id: id(&f.app),
                ..Default::default()
            })
        ),
        "GetKeyPair" => go!(
            app_side(),
            c.get_key_pair(pb::GetKeyPairRequest {
                app_key: id(&f.key)
            })
        ),
        "ListKeyPairs" => go!(
            app_side(),
            c.list_key_pairs(pb::ListKeyPairsRequest {
                app_id: id(&f.app),
                ..Default::default()
            })
        ),
        "UpdateKeyPair" => go!(
            app_side(),
            c.update_key_pair(pb::UpdateKeyPairRequest {
                key_pair: Some(pb::KeyPair {
                    app_key: id(&f.key),
                    enabled: false,
                    ..Default::default()
                }),
                update_mask: mask("enabled"),
            })
        ),
        "DeleteKeyPair" => go!(
            app_side(),
            c.delete_key_pair(pb::DeleteKeyPairRequest {
                app_key: id(&f.key)
            })
        ),
        "ResetKeyPairSecret" => go!(
            app_side(),
            c.reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
                app_key: id(&f.key),
                ..Default::default()
            })
        ),
        "EnableKeyPair" => go!(
            app_side(),
            c.enable_key_pair(pb::EnableKeyPairRequest {
                app_key: id(&f.key)
            })
        ),
        "DisableKeyPair" => go!(
            app_side(),
            c.disable_key_pair(pb::DisableKeyPairRequest {
                app_key: id(&f.key)
            })
        ),
        "CreateGroup" => go!(
            resource_side(),
            c.create_group(pb::CreateGroupRequest {
                group: Some(pb::Group {
                    name: format!("ng{n}"),
                    owner: "acme".into(),
                    ..Default::default()
                }),
            })
        ),
        "GetGroup" => go!(
            resource_side(),
            c.get_group(pb::GetGroupRequest { id: id(&f.group) })
        ),
        "ListGroups" => go!(
            resource_side(),
            c.list_groups(pb::ListGroupsRequest {
                owner: "acme".into(),
                ..Default::default()
            })
        ),
        "UpdateGroup" => go!(
            resource_side(),
            c.update_group(pb::UpdateGroupRequest {
                group: Some(pb::Group {
                    id: id(&f.group),
                    description: "d".into(),
                    ..Default::default()
                }),
                update_mask: mask("description"),
            })
        ),
        "DeleteGroup" => go!(
            resource_side(),
            c.delete_group(pb::DeleteGroupRequest { id: id(&f.group) })
        ),
        "CreateApi" => go!(
            resource_side(),
            c.create_api(pb::CreateApiRequest {
                api: Some(pb::Api {
                    name: format!("na{n}"),
                    owner: "acme".into(),
                    path: format!("/n{n}"),
                    ..Default::default()
                }),
            })
        ),
        "GetApi" => go!(
            resource_side(),
            c.get_api(pb::GetApiRequest { id: id(&f.api) })
        ),
        "ListApis" => go!(
            resource_side(),
            c.list_apis(pb::ListApisRequest {
                owner: "acme".into(),
                ..Default::default()
            })
        ),
        "UpdateApi" => go!(
            resource_side(),
            c.update_api(pb::UpdateApiRequest {
                api: Some(pb::Api {
                    id: id(&f.api),
                    description: "d".into(),
                    ..Default::default()
                }),
                update_mask: mask("description"),
            })
        ),
        "DeleteApi" => go!(
            resource_side(),
            c.delete_api(pb::DeleteApiRequest { id: id(&f.api) })
        ),
        "CreateGrant" => go!(
            resource_side(),
            c.create_grant(pb::CreateGrantRequest {
                grant: Some(pb::Grant {
                    app_id: id(&f.app),
                    target: Some(pb::grant::Target::GroupId(id(&f.group))),
                    ..Default::default()
                }),
            })
        ),
        "GetGrant" => go!(
            both(),
            c.get_grant(pb::GetGrantRequest { id: id(&f.grant) })
        ),
        "ListGrants" => go!(
            app_side(),
            c.list_grants(pb::ListGrantsRequest {
                app_id: id(&f.app),
                ..Default::default()
            })
        ),
        "DeleteGrant" => go!(
            resource_side(),
            c.delete_grant(pb::DeleteGrantRequest { id: id(&f.grant) })
        ),
        "UpdateGrant" => go!(
            resource_side(),
            c.update_grant(pb::UpdateGrantRequest {
                grant: Some(pb::Grant {
                    id: id(&f.grant),
                    stages: vec!["TEST".into()],
                    ..Default::default()
                }),
                update_mask: None,
            })
        ),
        "BatchCreateGrants" => go!(
            resource_side(),
            c.batch_create_grants(pb::BatchCreateGrantsRequest {
                app_ids: vec![id(&f.app)],
                group_ids: vec![id(&f.group)],
                ..Default::default()
            })
        ),
        "BatchDeleteGrants" => go!(
            resource_side(),
            c.batch_delete_grants(pb::BatchDeleteGrantsRequest {
                app_ids: vec![id(&f.app)],
                api_ids: vec![id(&f.api)],
                ..Default::default()
            })
        ),
        "ListAppPermissions" => go!(
            app_side(),
            c.list_app_permissions(pb::ListAppPermissionsRequest {
                app_id: id(&f.app),
                ..Default::default()
            })
        ),
        "ListApiCallers" => go!(
            resource_side(),
            c.list_api_callers(pb::ListApiCallersRequest {
                api_id: id(&f.api),
                ..Default::default()
            })
        ),
        "CreatePermissionRequest" => go!(
            app_side(),
            c.create_permission_request(pb::CreatePermissionRequestRequest {
                app_id: id(&f.app),
                group_ids: vec![id(&f.group)],
                ..Default::default()
            })
        ),
        "GetPermissionRequest" => go!(
            both(),
            c.get_permission_request(pb::GetPermissionRequestRequest { id: id(&f.request) })
        ),
        "ListPermissionRequests" => go!(
            app_side(),
            c.list_permission_requests(pb::ListPermissionRequestsRequest {
                app_id: id(&f.app),
                ..Default::default()
            })
        ),
        "ApprovePermissionRequest" => go!(
            resource_side(),
            c.approve_permission_request(pb::DecidePermissionRequestRequest {
                id: id(&f.request),
                ..Default::default()
            })
        ),
        "RejectPermissionRequest" => go!(
            resource_side(),
            c.reject_permission_request(pb::DecidePermissionRequestRequest {
                id: id(&f.request),
                ..Default::default()
            })
        ),
        "WithdrawPermissionRequest" => go!(
            app_side(),
            c.withdraw_permission_request(pb::WithdrawPermissionRequestRequest {
                id: id(&f.request)
            })
        ),
        "SetOwnerStages" => go!(
            resource_side(),
            c.set_owner_stages(pb::SetOwnerStagesRequest {
                owner: "acme".into(),
                stages: vec!["RELEASE".into(), "TEST".into()]
            })
        ),
        "GetOwnerStages" => go!(
            both(),
            c.get_owner_stages(pb::GetOwnerStagesRequest {
                owner: "acme".into()
            })
        ),
        "ListAuditEvents" => go!(
            Owners::default(),
            c.list_audit_events(pb::ListAuditEventsRequest::default())
        ),
        "Backup" => go!(Owners::default(), c.backup(pb::BackupRequest {})),
        "Export" => go!(Owners::default(), c.export(pb::ExportRequest {})),
        "Apply" => go!(
            Owners::default(),
            c.apply(pb::ApplyRequest {
                config: Some(pb::Config::default()),
                dry_run: true,
                ..Default::default()
            })
        ),
        "Explain" => go!(
            Owners::default(),
            c.explain(pb::ExplainRequest {
                method: "GET".into(),
                url: "http://h/".into(),
                ..Default::default()
            })
        ),
        "CreatePrincipal" => go!(
            Owners::default(),
            c.create_principal(pb::CreatePrincipalRequest {
                principal: Some(pb::Principal {
                    name: format!("np{n}"),
                    role: "viewer".into(),
                    ..Default::default()
                }),
            })
        ),
        "GetPrincipal" => go!(
            Owners::default(),
            c.get_principal(pb::GetPrincipalRequest {
                name: id(&f.principal)
            })
        ),
        "ListPrincipals" => go!(
            Owners::default(),
            c.list_principals(pb::ListPrincipalsRequest::default())
        ),
        "DeletePrincipal" => go!(
            Owners::default(),
            c.delete_principal(pb::DeletePrincipalRequest {
                name: id(&f.principal)
            })
        ),
        "RotatePrincipalToken" => go!(
            Owners::default(),
            c.rotate_principal_token(pb::RotatePrincipalTokenRequest {
                name: id(&f.principal)
            })
        ),
        "WhoAmI" => go!(Owners::default(), c.who_am_i(pb::WhoAmIRequest {})),
        other => panic!("{other} is in access::TABLE but not in the role matrix: add it"),
    }
}

struct Who {
    principal: Principal,
    client: Admin,
}

async fn principal(kg: &Keygate, admin: &mut Admin, name: &str, role: Role, owner: &str) -> Who {
    let created = admin
        .create_principal(pb::CreatePrincipalRequest {
            principal: Some(pb::Principal {
                name: name.into(),
                role: role.as_str().into(),
                owner: owner.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.token.starts_with("kgp_"), "{created:?}");
    Who {
        principal: Principal {
            name: name.into(),
            role,
            owner: owner.into(),
            description: String::new(),
            cert_subject: String::new(),
            create_ms: 0,
            update_ms: 0,
        },
        client: kg.admin_with_token(&created.token).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_times_every_role_is_what_the_table_says() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let mut everyone = vec![Who {
        principal: keygate::server::admin::auth::bootstrap(),
        client: kg.admin_with_token(TOKEN).await,
    }];
    for (name, role, owner) in [
        ("v", Role::Viewer, ""),
        ("pa", Role::Provider, "acme"),
        ("da", Role::Developer, "acme"),
        ("po", Role::Provider, "other"),
        ("do", Role::Developer, "other"),
    ] {
        everyone.push(principal(&kg, &mut admin, name, role, owner).await);
    }
    let mut checked = 0;
    for rule in TABLE {
        for who in &mut everyone {
            let f = fixture(&mut admin).await;
            let (owners, outcome) = call(rule.rpc, &mut who.client, &f).await;
            let expected = access::check(&who.principal, rule.rpc, &owners);
            let denied = matches!(&outcome, Err(s) if s.code() == Code::PermissionDenied);
            assert_eq!(
                denied,
                expected.is_err(),
                "{} as {} ({} of {:?}): {outcome:?}",
                rule.rpc,
                who.principal.name,
                who.principal.role.as_str(),
                who.principal.owner
            );
            if let Err(s) = &outcome
                && denied
            {
                assert!(
                    s.message().contains(rule.rpc) && s.message().contains("needs"),
                    "{s:?}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, TABLE.len() * 6);
    let (_, metrics) = kg.http_get("/metrics");
    let refused = common::metric(&metrics, "keygate_admin_permission_denied_total").unwrap();
    assert!(refused > 50.0, "{refused}");
}

#[tokio::test]
async fn partner_authorization_across_two_tenants() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let mut dev = principal(&kg, &mut admin, "partner-dev", Role::Developer, "partner").await;
    let mut prov = principal(&kg, &mut admin, "shop-provider", Role::Provider, "shop").await;

    // The partner's developer creates an app and hands its id over.
    let app = dev
        .client
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: "partner-app".into(),
                owner: "partner".into(),
                description: "private to the partner".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let app_id = app.app.unwrap().id;
    let e = dev
        .client
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: "not-mine".into(),
                owner: "shop".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The provider publishes an API, finds the app by id (id, name, owner only) and
    // grants it.
    let api = prov
        .client
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: "orders".into(),
                owner: "shop".into(),
                path: "/orders/{*rest}".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let seen = prov
        .client
        .get_app(pb::GetAppRequest { id: app_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (seen.name.as_str(), seen.owner.as_str()),
        ("partner-app", "partner")
    );
    assert!(
        seen.description.is_empty() && seen.create_time.is_none(),
        "{seen:?}"
    );
    let grant = prov
        .client
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: app_id.clone(),
                target: Some(pb::grant::Target::ApiId(api.id.clone())),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grant.created_by, "shop-provider");

    // The developer sees what its app may call; neither lists the other's resources.
    let perms = dev
        .client
        .list_app_permissions(pb::ListAppPermissionsRequest {
            app_id: app_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .permissions;
    assert_eq!(perms.len(), 1);
    let own = dev
        .client
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(own.len(), 1, "a developer lists only its owner's apps");
    for e in [
        dev.client
            .list_apis(pb::ListApisRequest::default())
            .await
            .unwrap_err(),
        dev.client
            .delete_api(pb::DeleteApiRequest { id: api.id.clone() })
            .await
            .unwrap_err(),
        prov.client
            .list_apps(pb::ListAppsRequest::default())
            .await
            .unwrap_err(),
        prov.client
            .delete_app(pb::DeleteAppRequest { id: app_id.clone() })
            .await
            .unwrap_err(),
        prov.client
            .list_key_pairs(pb::ListKeyPairsRequest {
                app_id: app_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        prov.client
            .list_apis(pb::ListApisRequest {
                owner: "partner".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }

    // The audit names the principals; a rotated token stops working at once.
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let actor_of = |action: &str| {
        events
            .iter()
            .find(|e| e.action == action && e.actor != "admin")
            .map(|e| e.actor.clone())
    };
    assert_eq!(actor_of("CreateApp").as_deref(), Some("partner-dev"));
    assert_eq!(actor_of("CreateGrant").as_deref(), Some("shop-provider"));
    let rotated = admin
        .rotate_principal_token(pb::RotatePrincipalTokenRequest {
            name: "partner-dev".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = dev.client.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut again = kg.admin_with_token(&rotated.token).await;
    let me = again
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (me.name.as_str(), me.role.as_str(), me.owner.as_str()),
        ("partner-dev", "developer", "partner")
    );
}

#[tokio::test]
async fn the_cli_creates_principals_whose_tokens_work() {
    use common::cli::{cli, json, run_env};
    let kg = Keygate::start();
    let created = json(
        &kg,
        &[
            "principal",
            "create",
            "--name",
            "ci-viewer",
            "--role",
            "viewer",
        ],
    );
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created["principal"]["role"], "viewer");
    let addr = kg.admin_addr().to_string();
    let me = run_env(
        &["whoami", "--output", "json", "--admin-addr", &addr],
        &[("KEYGATE_ADMIN_TOKEN", &token)],
    )
    .json();
    assert_eq!(me["name"], "ci-viewer");
    let refused = run_env(
        &[
            "app",
            "create",
            "--name",
            "x",
            "--owner",
            "o",
            "--admin-addr",
            &addr,
        ],
        &[("KEYGATE_ADMIN_TOKEN", &token)],
    );
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("PERMISSION_DENIED"),
        "{}",
        refused.stderr
    );
    let bad = cli(
        &kg,
        &["principal", "create", "--name", "p", "--role", "developer"],
    );
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("Principal.owner"), "{}", bad.stderr);
    let listed = json(&kg, &["principal", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}
