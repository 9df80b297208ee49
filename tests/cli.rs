//! The admin CLI end to end: a real keygate, and `keygate app|key|group|api|grant|audit`
//! run as subprocesses against its admin listener, their `--output json` parsed and
//! checked; errors (exit codes, one line naming the field), table output, completions,
//! and a request signed with a secret the CLI printed, allowed by Check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::cli::{cli, json, run_env};
use common::granted::{Granted, check_client, deny_code, signed_check};
use common::{Keygate, TOKEN};
use serde_json::Value;

/// A failure: its exit code and its stderr, which must be one line.
#[track_caller]
fn refused(kg: &Keygate, args: &[&str]) -> (i32, String) {
    let out = cli(kg, args);
    assert_ne!(out.code, 0, "succeeded: {}", out.stdout);
    let line = out.stderr.trim_end().to_owned();
    assert_eq!(line.lines().count(), 1, "not one line: {line:?}");
    (out.code, line)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn actions(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["action"]).to_owned())
        .collect()
}

#[test]
fn app_verbs_round_trip() {
    let kg = Keygate::start();
    let out = cli(
        &kg,
        &[
            "app",
            "create",
            "--name",
            "billing",
            "--owner",
            "acme",
            "--description",
            "invoices",
            "--tag",
            "env=prod",
            "--tag",
            "team=pay",
            "--extend-info",
            "tier=gold",
            "--output",
            "json",
        ],
    );
    let created = out.json();
    assert!(
        out.stderr.contains("shown only this once"),
        "no warning on stderr: {}",
        out.stderr
    );
    let app = &created["app"];
    let key = &created["key_pair"];
    let id = s(&app["id"]).to_owned();
    assert_eq!(app["name"], "billing");
    assert_eq!(app["owner"], "acme");
    assert_eq!(app["tags"]["env"], "prod");
    assert_eq!(app["extend_info"], "tier=gold");
    assert_eq!(app["enabled"], true);
    assert!(s(&app["app_code"]).len() >= 16, "{app}");
    assert!(s(&app["create_time"]).ends_with('Z'), "{app}");
    assert_eq!(key["app_id"], id.as_str());
    assert_eq!(key["is_default"], true);
    assert!(s(&key["app_secret"]).len() >= 16, "{key}");
    assert_eq!(key["expires_at"], Value::Null);

    // Reads never show the AppCode again.
    let got = json(&kg, &["app", "get", &id]);
    assert_eq!(got["name"], "billing");
    assert_eq!(got["app_code"], "");
    assert_eq!(got["app_code_set"], true);

    json(
        &kg,
        &["app", "create", "--name", "other", "--owner", "zeta"],
    );
    let listed = json(&kg, &["app", "list", "--owner", "acme"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    let by_prefix = json(&kg, &["app", "list", "--name-prefix", "BILL"]);
    assert_eq!(by_prefix.as_array().unwrap().len(), 1);
    // Paging: one item per page, and --all follows the tokens.
    let page = cli(
        &kg,
        &["app", "list", "--page-size", "1", "--output", "json"],
    );
    assert_eq!(page.json().as_array().unwrap().len(), 1);
    assert!(page.stderr.contains("--page-token"), "{}", page.stderr);
    let all = json(&kg, &["app", "list", "--page-size", "1", "--all"]);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");

    // Table output: a header and the app's row.
    let table = cli(&kg, &["app", "list"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let first = table.stdout.lines().next().unwrap();
    assert!(first.starts_with("ID") && first.contains("NAME"), "{first}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("billing") && l.contains(&id)),
        "{}",
        table.stdout
    );

    // Only the flags given change.
    let updated = json(
        &kg,
        &[
            "app",
            "update",
            &id,
            "--name",
            "billing-2",
            "--tag",
            "env=dev",
        ],
    );
    assert_eq!(updated["name"], "billing-2");
    assert_eq!(updated["tags"], serde_json::json!({"env": "dev"}));
    assert_eq!(updated["description"], "invoices");
    assert_eq!(updated["extend_info"], "tier=gold");
    let cleared = json(&kg, &["app", "update", &id, "--clear-tags"]);
    assert_eq!(cleared["tags"], serde_json::json!({}));
    assert_eq!(cleared["name"], "billing-2");

    // An update with no field is a usage error, not a call.
    let none = cli(&kg, &["app", "update", &id]);
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(none.stderr.contains("--name"), "{}", none.stderr);

    assert_eq!(json(&kg, &["app", "disable", &id])["enabled"], false);
    assert_eq!(json(&kg, &["app", "enable", &id])["enabled"], true);
    let out = cli(
        &kg,
        &[
            "app",
            "reset-code",
            &id,
            "--app-code",
            "custom-code-0123456789",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.json()["app_code"], "custom-code-0123456789");
    assert!(
        out.stderr.contains("shown only this once"),
        "{}",
        out.stderr
    );

    // A bad field: exit 1, one line with the code and the field.
    let (code, line) = refused(&kg, &["app", "create", "--name", "", "--owner", "acme"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("INVALID_ARGUMENT") && line.contains("App.name"),
        "{line}"
    );
    let (code, line) = refused(
        &kg,
        &[
            "app", "create", "--name", "x", "--owner", "o", "--id", "UPPER",
        ],
    );
    assert_eq!(code, 1);
    assert!(line.contains("App.id"), "{line}");

    let deleted = cli(&kg, &["app", "delete", &id]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert!(deleted.stdout.contains(&id), "{}", deleted.stdout);
    let (code, line) = refused(&kg, &["app", "get", &id]);
    assert_eq!(code, 1);
    assert!(line.contains("NOT_FOUND"), "{line}");

    let events = json(&kg, &["audit", "list", "--resource", &id, "--all"]);
    assert_eq!(
        actions(&events),
        [
            "CreateApp",
            "UpdateApp",
            "UpdateApp",
            "DisableApp",
            "EnableApp",
            "ResetAppCode",
            "DeleteApp"
        ],
        "{events}"
    );
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource_id"] == id.as_str() && s(&e["time"]).ends_with('Z'))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_verbs_and_a_printed_secret_signs_an_allowed_request() {
    let kg = Keygate::start();
    let created = json(
        &kg,
        &["app", "create", "--name", "signer", "--owner", "sec"],
    );
    let app_id = s(&created["app"]["id"]).to_owned();
    let api = json(
        &kg,
        &[
            "api",
            "create",
            "--name",
            "cli-api",
            "--owner",
            "sec",
            "--path",
            "/cli/{*rest}",
            "--scheme",
            "aliyun",
        ],
    );
    let grant = json(
        &kg,
        &["grant", "create", "--app", &app_id, "--api", s(&api["id"])],
    );
    assert_eq!(grant["api_id"], api["id"]);

    // A custom AppKey, the secret from a variable, an expiry.
    let addr = kg.admin_addr().to_string();
    let secret = "cli-secret-0123456789abcdef";
    let out = run_env(
        &[
            "key",
            "create",
            "--app",
            &app_id,
            "--app-key",
            "cli-key-1",
            "--secret-env",
            "CLI_TEST_SECRET",
            "--expires-at",
            "2099-01-02T03:04:05Z",
            "--admin-addr",
            &addr,
            "--output",
            "json",
        ],
        &[("KEYGATE_ADMIN_TOKEN", TOKEN), ("CLI_TEST_SECRET", secret)],
    );
    let key = out.json();
    assert!(
        out.stderr.contains("shown only this once"),
        "{}",
        out.stderr
    );
    assert_eq!(key["app_key"], "cli-key-1");
    assert_eq!(key["app_secret"], secret);
    assert_eq!(key["expires_at"], "2099-01-02T03:04:05Z");
    assert_eq!(key["is_default"], false);

    // A generated secret, as printed, verifies through the check listener.
    let generated = json(&kg, &["key", "create", "--app", &app_id]);
    let g = Granted {
        app_id: app_id.clone(),
        app_key: s(&generated["app_key"]).to_owned(),
        app_secret: s(&generated["app_secret"]).to_owned(),
        app_code: String::new(),
        prefix: "/cli/".into(),
    };
    let mut check = check_client(kg.check_addr()).await;
    let r = check
        .check(signed_check(&g, &g.app_secret, "orders"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");
    let custom = Granted {
        app_key: "cli-key-1".into(),
        app_secret: secret.into(),
        ..g.clone()
    };
    let r = check
        .check(signed_check(&custom, secret, "orders"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");

    let keys = json(&kg, &["key", "list", "--app", &app_id]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| k["app_secret"] == ""), "{keys:?}");
    assert_eq!(json(&kg, &["key", "get", "cli-key-1"])["app_secret"], "");

    let updated = json(&kg, &["key", "update", "cli-key-1", "--enabled", "false"]);
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["expires_at"], "2099-01-02T03:04:05Z");
    let updated = json(&kg, &["key", "update", "cli-key-1", "--no-expiry"]);
    assert_eq!(updated["expires_at"], Value::Null);
    assert_eq!(updated["enabled"], false);
    assert_eq!(json(&kg, &["key", "enable", "cli-key-1"])["enabled"], true);
    assert_eq!(
        json(&kg, &["key", "disable", "cli-key-1"])["enabled"],
        false
    );
    assert_eq!(cli(&kg, &["key", "update", "cli-key-1"]).code, 2);

    // A reset with a grace period: a new secret, the old one verifying for 1h more.
    let out = cli(
        &kg,
        &[
            "key",
            "reset-secret",
            &g.app_key,
            "--grace",
            "1h",
            "--output",
            "json",
        ],
    );
    let reset = out.json();
    assert!(
        out.stderr.contains("shown only this once"),
        "{}",
        out.stderr
    );
    let new_secret = s(&reset["app_secret"]).to_owned();
    assert_ne!(new_secret, g.app_secret);
    assert!(
        s(&reset["previous_secret_expires_at"]).ends_with('Z'),
        "{reset}"
    );
    for secret in [&new_secret, &g.app_secret] {
        let r = check
            .check(signed_check(&g, secret, "again"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(deny_code(&r), None, "{r:?}");
    }
    let bad = cli(&kg, &["key", "reset-secret", &g.app_key, "--grace", "2w"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);

    // A custom secret from a file: its one trailing newline is not part of it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
    let from_file = json(
        &kg,
        &[
            "key",
            "reset-secret",
            "cli-key-1",
            "--secret-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(from_file["app_secret"], "from-a-file-0123456789");
    assert_eq!(from_file["previous_secret_expires_at"], Value::Null);

    let del = cli(&kg, &["key", "delete", "cli-key-1", "--output", "json"]);
    assert_eq!(del.json(), serde_json::json!({}));
    assert_eq!(
        json(&kg, &["key", "list", "--app", &app_id])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The default pair cannot be deleted: the server's refusal, on one line.
    let default_key = s(&created["key_pair"]["app_key"]).to_owned();
    let (code, line) = refused(&kg, &["key", "delete", &default_key]);
    assert_eq!(code, 1);
    assert!(line.contains("FAILED_PRECONDITION"), "{line}");

    let events = json(&kg, &["audit", "list", "--resource", "cli-key-1"]);
    assert_eq!(
        actions(&events),
        [
            "CreateKeyPair",
            "UpdateKeyPair",
            "UpdateKeyPair",
            "EnableKeyPair",
            "DisableKeyPair",
            "ResetKeyPairSecret",
            "DeleteKeyPair"
        ],
        "{events}"
    );

    // The default pair takes a new AppKey (and secret) at once; an app may start
    // with a custom default pair.
    let renamed = json(
        &kg,
        &[
            "key",
            "reset-secret",
            &default_key,
            "--new-app-key",
            "cli-renamed",
        ],
    );
    assert_eq!(renamed["app_key"], "cli-renamed");
    assert_eq!(renamed["is_default"], true);
    let both = cli(
        &kg,
        &[
            "key",
            "reset-secret",
            "cli-renamed",
            "--new-app-key",
            "x-1",
            "--grace",
            "1h",
        ],
    );
    assert_eq!(both.code, 2, "{}", both.stderr);
    let out = run_env(
        &[
            "app",
            "create",
            "--name",
            "custom-default",
            "--owner",
            "sec",
            "--app-key",
            "cli-custom-default",
            "--secret-env",
            "CLI_TEST_SECRET",
            "--admin-addr",
            &addr,
            "--output",
            "json",
        ],
        &[("KEYGATE_ADMIN_TOKEN", TOKEN), ("CLI_TEST_SECRET", secret)],
    );
    let custom = out.json();
    assert_eq!(custom["key_pair"]["app_key"], "cli-custom-default");
    assert_eq!(custom["key_pair"]["app_secret"], secret);
}

#[test]
fn group_api_grant_and_audit_verbs() {
    let kg = Keygate::start();
    let since = json(&kg, &["audit", "list"]);
    assert_eq!(since, serde_json::json!([]));

    let group = json(
        &kg,
        &[
            "group",
            "create",
            "--name",
            "orders",
            "--owner",
            "shop",
            "--description",
            "order APIs",
        ],
    );
    let gid = s(&group["id"]).to_owned();
    assert_eq!(group["description"], "order APIs");
    assert_eq!(json(&kg, &["group", "get", &gid])["name"], "orders");
    let groups = json(&kg, &["group", "list", "--owner", "shop"]);
    assert_eq!(groups.as_array().unwrap().len(), 1);
    let g2 = json(
        &kg,
        &["group", "update", &gid, "--description", "all orders"],
    );
    assert_eq!(g2["description"], "all orders");
    assert_eq!(g2["name"], "orders");
    assert_eq!(cli(&kg, &["group", "update", &gid]).code, 2);

    let api = json(
        &kg,
        &[
            "api",
            "create",
            "--name",
            "get-order",
            "--owner",
            "shop",
            "--group",
            &gid,
            "--description",
            "one order",
            "--host",
            "api.example.com",
            "--method",
            "get",
            "--method",
            "POST",
            "--path",
            "/v1/orders/{id}",
            "--scheme",
            "aliyun",
            "--scheme",
            "sigv4",
            "--scheme",
            "appcode",
            "--body-digest-required",
            "--tencent-strip-env-prefix",
            "--sigv4-region",
            "eu-west-1",
            "--sigv4-service",
            "orders",
        ],
    );
    let api_id = s(&api["id"]).to_owned();
    assert_eq!(api["group_id"], gid.as_str());
    assert_eq!(api["host"], "api.example.com");
    assert_eq!(api["methods"], serde_json::json!(["GET", "POST"]));
    assert_eq!(api["path"], "/v1/orders/{id}");
    assert_eq!(
        api["auth_schemes"],
        serde_json::json!(["ALIYUN", "SIGV4", "APPCODE"])
    );
    assert_eq!(api["body_digest_required"], true);
    assert_eq!(api["tencent_strip_env_prefix"], true);
    assert_eq!(api["anonymous_allowed"], false);
    assert_eq!(api["replay_protection"], false);
    assert_eq!(api["sigv4_region"], "eu-west-1");
    assert_eq!(api["sigv4_service"], "orders");

    // One flag changes exactly one field.
    let updated = json(
        &kg,
        &["api", "update", &api_id, "--replay-protection", "true"],
    );
    assert_eq!(updated["replay_protection"], true);
    let strip = |mut v: Value| {
        let o = v.as_object_mut().unwrap();
        o.remove("replay_protection");
        o.remove("update_time");
        v
    };
    assert_eq!(strip(updated.clone()), strip(api.clone()));
    let updated = json(
        &kg,
        &[
            "api",
            "update",
            &api_id,
            "--clear-schemes",
            "--method",
            "PUT",
        ],
    );
    assert_eq!(updated["auth_schemes"], serde_json::json!([]));
    assert_eq!(updated["methods"], serde_json::json!(["PUT"]));
    assert_eq!(updated["replay_protection"], true);
    assert_eq!(
        json(&kg, &["api", "get", &api_id])["methods"],
        serde_json::json!(["PUT"])
    );
    assert_eq!(cli(&kg, &["api", "update", &api_id]).code, 2);
    let (code, line) = refused(&kg, &["api", "update", &api_id, "--path", "/a/{*r}/b"]);
    assert_eq!(code, 1);
    assert!(line.contains("INVALID_ARGUMENT: Api.path"), "{line}");
    let listed = json(&kg, &["api", "list", "--group", &gid]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let table = cli(&kg, &["api", "list"]);
    assert!(table.stdout.contains("/v1/orders/{id}"), "{}", table.stdout);

    let app = json(
        &kg,
        &["app", "create", "--name", "buyer", "--owner", "shop"],
    );
    let app_id = s(&app["app"]["id"]).to_owned();
    let on_group = json(
        &kg,
        &[
            "grant",
            "create",
            "--app",
            &app_id,
            "--group",
            &gid,
            "--stage",
            "RELEASE",
            "--stage",
            "TEST",
            "--expires-at",
            "2099-12-31T23:59:59+01:00",
        ],
    );
    assert_eq!(on_group["group_id"], gid.as_str());
    assert_eq!(on_group["api_id"], Value::Null);
    assert_eq!(on_group["stages"], serde_json::json!(["RELEASE", "TEST"]));
    assert_eq!(on_group["expires_at"], "2099-12-31T22:59:59Z");
    let on_api = json(
        &kg,
        &["grant", "create", "--app", &app_id, "--api", &api_id],
    );
    let grant_id = s(&on_api["id"]).to_owned();
    assert_eq!(
        json(&kg, &["grant", "get", &grant_id])["api_id"],
        api_id.as_str()
    );
    let of_app = json(&kg, &["grant", "list", "--app", &app_id]);
    assert_eq!(of_app.as_array().unwrap().len(), 2);
    let of_group = json(&kg, &["grant", "list", "--group", &gid]);
    assert_eq!(of_group.as_array().unwrap().len(), 1);
    assert_eq!(
        cli(&kg, &["grant", "list", "--app", &app_id, "--api", &api_id]).code,
        2
    );
    assert_eq!(cli(&kg, &["grant", "create", "--app", &app_id]).code, 2);
    assert_eq!(cli(&kg, &["grant", "delete", &grant_id]).code, 0);
    assert_eq!(
        json(&kg, &["grant", "list", "--api", &api_id]),
        serde_json::json!([])
    );

    assert_eq!(cli(&kg, &["api", "delete", &api_id]).code, 0);
    let (code, _) = refused(&kg, &["api", "get", &api_id]);
    assert_eq!(code, 1);
    let deleted = cli(&kg, &["group", "delete", &gid]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);

    let events = json(&kg, &["audit", "list", "--all", "--page-size", "2"]);
    let seen = actions(&events);
    for a in [
        "CreateGroup",
        "UpdateGroup",
        "CreateApi",
        "UpdateApi",
        "CreateApp",
        "CreateGrant",
        "DeleteGrant",
        "DeleteApi",
        "DeleteGroup",
    ] {
        assert!(seen.iter().any(|s| s == a), "no {a} in {seen:?}");
    }
    let ids: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    // --since in the future: nothing yet.
    assert_eq!(
        json(&kg, &["audit", "list", "--since", "2099-01-01T00:00:00Z"]),
        serde_json::json!([])
    );
    let table = cli(&kg, &["audit", "list"]);
    assert!(table.stdout.contains("CreateGrant"), "{}", table.stdout);
}

#[test]
fn token_file_connection_failure_and_completions() {
    let kg = Keygate::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let addr = kg.admin_addr().to_string();
    let out = run_env(
        &[
            "group",
            "list",
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--admin-addr",
            &addr,
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(out.json(), serde_json::json!([]));

    // A wrong token is the server's refusal.
    let out = run_env(
        &["app", "list", "--admin-addr", &addr],
        &[("KEYGATE_ADMIN_TOKEN", "wrong-token-0123456789")],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("UNAUTHENTICATED"), "{}", out.stderr);
    // No token at all: a usage error before any connection.
    let out = run_env(&["app", "list", "--admin-addr", &addr], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // Nothing listening: its own exit code.
    let closed = format!("127.0.0.1:{}", common::free_port());
    let out = run_env(
        &["app", "list", "--admin-addr", &closed],
        &[("KEYGATE_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);

    let help = run_env(&["app", "--help"], &[]);
    assert!(help.stdout.contains("Exit codes"), "{}", help.stdout);

    let bash = run_env(&["completions", "bash"], &[]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    assert!(bash.stdout.contains("keygate"), "{}", bash.stdout);
    assert!(
        bash.stdout.contains("reset-secret"),
        "no verbs in the script"
    );
    for shell in ["zsh", "fish"] {
        let out = run_env(&["completions", shell], &[]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains("keygate"));
    }
}

#[test]
fn key_pairs_have_a_name_and_description() {
    let kg = Keygate::start();
    let app = json(
        &kg,
        &["app", "create", "--name", "named-keys", "--owner", "acme"],
    );
    let app_id = s(&app["app"]["id"]).to_owned();
    assert_eq!(app["key_pair"]["name"], "default", "{app}");
    let key = json(
        &kg,
        &[
            "key",
            "create",
            "--app",
            &app_id,
            "--name",
            "ci",
            "--description",
            "the CI runner's",
        ],
    );
    assert_eq!(
        (key["name"].as_str(), key["description"].as_str()),
        (Some("ci"), Some("the CI runner's"))
    );
    let app_key = s(&key["app_key"]).to_owned();
    let updated = json(&kg, &["key", "update", &app_key, "--name", "ci-old"]);
    assert_eq!(updated["name"], "ci-old");
    assert_eq!(
        updated["description"], "the CI runner's",
        "only the name changed"
    );
    let listed = json(&kg, &["key", "list", "--app", &app_id]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"ci-old") && names.contains(&"default"),
        "{listed}"
    );
}
