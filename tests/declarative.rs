//! Declarative configuration end to end, with the real binary as an operator runs it:
//! `keygate export` from one keygate, `keygate apply -f` into an empty one, export
//! again: identical. A second apply changes nothing (no audit record either);
//! `--dry-run` and `diff` change nothing; an apply is one change with one audit
//! record, `--prune` deletes what the file leaves out; a bad file is refused with its
//! line and field and changes nothing; a secret printed by apply (or read from
//! `secret_env`) signs an allowed request; `keygate explain` tells why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Keygate;
use common::cli::{Out, cli, json, run_env};
use common::granted::{Granted, check_client, deny_code, signed_check};
use keygate::pb::admin as pb;
use serde_json::Value;

/// A keygate holding one of everything, made through the admin API.
async fn populated() -> Keygate {
    let kg = Keygate::start();
    let mut a = kg.admin().await;
    let app = a
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                id: "billing".into(),
                name: "Billing".into(),
                owner: "acme".into(),
                description: "pays the bills".into(),
                tags: [("env".to_owned(), "prod".to_owned())].into(),
                extend_info: "tier=gold".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    a.create_key_pair(pb::CreateKeyPairRequest {
        app_id: app.id.clone(),
        app_key: "billing-ci".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let group = a
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                name: "payments".into(),
                owner: "acme".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    a.create_api(pb::CreateApiRequest {
        api: Some(pb::Api {
            name: "charge".into(),
            owner: "acme".into(),
            group_id: group.id.clone(),
            methods: vec!["POST".into()],
            path: "/pay/{*rest}".into(),
            auth_schemes: vec![pb::AuthScheme::Aliyun as i32, pb::AuthScheme::Sigv4 as i32],
            replay_protection: true,
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner();
    let status = a
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: "status".into(),
                owner: "acme".into(),
                host: "api.example.com".into(),
                path: "/status".into(),
                anonymous_allowed: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    for target in [
        pb::grant::Target::GroupId(group.id.clone()),
        pb::grant::Target::ApiId(status.id.clone()),
    ] {
        a.create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: app.id.clone(),
                target: Some(target),
                stages: vec!["RELEASE".into(), "TEST".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    }
    kg
}

fn export(kg: &Keygate) -> String {
    let out = cli(kg, &["export"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn audit_count(kg: &Keygate) -> usize {
    json(kg, &["audit", "list", "--all"])
        .as_array()
        .map_or(0, Vec::len)
}

#[track_caller]
fn ok(out: Out) -> Out {
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out
}

#[tokio::test]
async fn export_apply_export_is_identical_and_a_second_apply_changes_nothing() {
    let a = populated().await;
    let text = export(&a);
    assert!(text.contains("version: keygate/v1"), "{text}");
    assert!(text.contains("app_key: billing-ci"), "{text}");
    assert!(
        !text.contains("secret"),
        "a secret field in the export: {text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "keygate.yaml", &text);

    let b = Keygate::start();
    let out = ok(cli(&b, &["apply", "-f", &file]));
    assert!(
        out.stdout.contains("+ create app billing"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("AppSecret"), "{}", out.stdout);
    assert!(
        out.stderr.contains("shown only this once"),
        "{}",
        out.stderr
    );
    assert_eq!(export(&b), text, "export after apply differs");

    // One apply, one audit record.
    let events = json(&b, &["audit", "list", "--all"]);
    let applies: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "Apply")
        .collect();
    assert_eq!(applies.len(), 1, "{events}");

    let before = audit_count(&b);
    let again = ok(cli(&b, &["apply", "-f", &file]));
    assert!(again.stdout.contains("no changes"), "{}", again.stdout);
    assert_eq!(
        audit_count(&b),
        before,
        "a no-op apply left an audit record"
    );
    let diff = json(&b, &["diff", "-f", &file]);
    assert_eq!(diff["changes"], serde_json::json!([]), "{diff}");
}

#[tokio::test]
async fn dry_run_and_diff_change_nothing_and_prune_deletes() {
    let kg = populated().await;
    let original = export(&kg);
    let dir = tempfile::tempdir().unwrap();
    let edited = original
        .replace(
            "description: pays the bills",
            "description: pays every bill",
        )
        .replace("name: status", "name: health");
    let file = write(dir.path(), "edited.yaml", &edited);

    let dry = ok(cli(&kg, &["apply", "-f", &file, "--dry-run"]));
    assert!(
        dry.stdout.contains("~ update app billing"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("pays the bills → pays every bill"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("~ update api"), "{}", dry.stdout);
    let diff = json(&kg, &["diff", "-f", &file]);
    assert_eq!(diff["changes"].as_array().unwrap().len(), 2, "{diff}");
    assert_eq!(export(&kg), original, "dry run or diff changed the store");

    let applied = json(&kg, &["apply", "-f", &file]);
    assert_eq!(applied["applied"], true, "{applied}");
    assert_eq!(export(&kg), edited);

    // Without the status API and its grant, and without the extra key pair.
    let mut pruned = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&edited).unwrap();
    let drop =
        |v: &mut serde_yaml_ng::Value, list: &str, keep: &dyn Fn(&serde_yaml_ng::Value) -> bool| {
            let seq = v[list].as_sequence_mut().unwrap();
            seq.retain(|e| keep(e));
        };
    drop(&mut pruned, "apis", &|e| e["name"] != "health");
    drop(&mut pruned, "grants", &|e| e.get("api").is_none());
    drop(&mut pruned, "key_pairs", &|e| e["app_key"] != "billing-ci");
    let file = write(
        dir.path(),
        "pruned.yaml",
        &serde_yaml_ng::to_string(&pruned).unwrap(),
    );
    let without = ok(cli(&kg, &["apply", "-f", &file]));
    assert!(without.stdout.contains("no changes"), "{}", without.stdout);
    let plan = json(&kg, &["diff", "-f", &file, "--prune"]);
    let deletes: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["action"].as_str().unwrap(),
                c["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        deletes,
        ["delete grant", "delete key_pair", "delete api"],
        "{plan}"
    );
    ok(cli(&kg, &["apply", "-f", &file, "--prune"]));
    let after = export(&kg);
    assert!(
        !after.contains("name: health") && !after.contains("billing-ci"),
        "{after}"
    );
    assert!(after.contains("name: charge"), "{after}");
}

#[tokio::test]
async fn a_bad_file_names_line_and_field_and_changes_nothing() {
    let kg = Keygate::start();
    let dir = tempfile::tempdir().unwrap();
    let unknown = write(
        dir.path(),
        "unknown.yaml",
        "version: keygate/v1\napps:\n  - name: A\n    owner: o\n    colour: red\n",
    );
    let out = cli(&kg, &["apply", "-f", &unknown]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown.yaml:5:") && out.stderr.contains("colour"),
        "{}",
        out.stderr
    );

    // A good app and a bad API: all or nothing.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "version: keygate/v1\napps:\n  - id: good\n    name: Good\n    owner: o\napis:\n  - name: broken\n    owner: o\n    path: no-slash\n",
    );
    let out = cli(&kg, &["apply", "-f", &bad]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("bad.yaml:9:") && out.stderr.contains("apis[0].path"),
        "{}",
        out.stderr
    );
    // The store refuses the whole plan when one step breaks an invariant.
    let clash = write(
        dir.path(),
        "clash.yaml",
        "version: keygate/v1\napps:\n  - id: first\n    name: Same\n    owner: o\n  - id: second\n    name: Same\n    owner: o\n",
    );
    let out = cli(&kg, &["apply", "-f", &clash]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    let dangling = write(
        dir.path(),
        "dangling.yaml",
        "version: keygate/v1\ngrants:\n  - app: nobody\n    api: nothing\n",
    );
    let out = cli(&kg, &["apply", "-f", &dangling]);
    assert!(
        out.stderr.contains("dangling.yaml:3:") && out.stderr.contains("grants[0].app"),
        "{}",
        out.stderr
    );
    let empty = export(&kg);
    assert!(!empty.contains("apps:"), "something was applied: {empty}");
}

#[tokio::test]
async fn secrets_from_apply_sign_allowed_requests_and_explain_says_why() {
    let kg = Keygate::start();
    let dir = tempfile::tempdir().unwrap();
    let given = "a-secret-from-the-environment-0123";
    let file = write(
        dir.path(),
        "app.yaml",
        "version: keygate/v1\n\
         apps:\n  - id: shop\n    name: Shop\n    owner: acme\n\
         key_pairs:\n  - app_key: shop-default\n    app: Shop\n    default: true\n\
         \x20 - app_key: shop-env\n    app: shop\n    secret_env: SHOP_SECRET\n\
         apis:\n  - name: orders\n    owner: acme\n    path: /decl/{*rest}\n\
         grants:\n  - app: Shop\n    api: orders\n",
    );
    let out = run_env(
        &[
            "apply",
            "-f",
            &file,
            "--output",
            "json",
            "--admin-addr",
            &kg.admin_addr().to_string(),
        ],
        &[
            ("KEYGATE_ADMIN_TOKEN", common::TOKEN),
            ("SHOP_SECRET", given),
        ],
    );
    let done = out.json();
    let keys = done["created_key_pairs"].as_array().unwrap();
    let secret_of = |k: &str| {
        keys.iter()
            .find(|x| x["app_key"] == k)
            .and_then(|x| x["app_secret"].as_str())
            .unwrap_or_else(|| panic!("no secret for {k}: {done}"))
            .to_owned()
    };
    assert_eq!(secret_of("shop-env"), given);
    let generated = secret_of("shop-default");
    let mut check = check_client(kg.check_addr()).await;
    for (key, secret) in [("shop-default", generated), ("shop-env", given.to_owned())] {
        let g = Granted {
            app_id: "shop".into(),
            app_key: key.into(),
            app_secret: secret.clone(),
            app_code: String::new(),
            prefix: "/decl".into(),
        };
        let resp = check
            .check(signed_check(&g, &secret, "/x"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(deny_code(&resp), None, "{key}: {resp:?}");
    }

    // explain: allowed, and for an unsigned request the step that denies it.
    let e = json(
        &kg,
        &[
            "explain",
            "http://api.example.com/decl/x",
            "-H",
            "Accept: */*",
        ],
    );
    assert_eq!(e["allowed"], false, "{e}");
    assert_eq!(e["code"], "MissingCredential", "{e}");
    let table = ok(cli(&kg, &["explain", "http://api.example.com/nowhere"]));
    assert!(
        table.stdout.contains("DENIED: MissingCredential"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("no API matches"), "{}", table.stdout);
}

#[tokio::test]
async fn declared_stages_travel_with_the_file() {
    let a = populated().await;
    let mut admin = a.admin().await;
    admin
        .set_owner_stages(pb::SetOwnerStagesRequest {
            owner: "acme".into(),
            stages: vec!["RELEASE".into(), "TEST".into(), "CANARY".into()],
        })
        .await
        .unwrap();
    let grant = admin
        .list_grants(pb::ListGrantsRequest {
            app_id: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants
        .remove(0);
    admin
        .update_grant(pb::UpdateGrantRequest {
            grant: Some(pb::Grant {
                id: grant.id,
                stages: vec!["CANARY".into()],
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap();
    let text = export(&a);
    assert!(
        text.contains("owner_stages:") && text.contains("CANARY"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "staged.yaml", &text);
    let b = Keygate::start();
    ok(cli(&b, &["apply", "-f", &file]));
    assert_eq!(export(&b), text);
}
