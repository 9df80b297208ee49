//! The decision log against the real binary: `--log-format json` makes every stderr line
//! a JSON object; each decision is one `keygate::decision` line with the fields an
//! operator greps for, never a secret or the query; past `--decision-log-rate` lines are
//! counted, and every decision is either written or counted in a later line's
//! `suppressed`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Keygate;
use common::granted::{check_client, deny_code, grant_app, signed_check};

#[tokio::test]
async fn json_decision_lines_hold_the_fields_and_no_secret() {
    let mut kg = Keygate::start_with_args(&[
        "--log-format",
        "json",
        "--decision-log",
        "all",
        "--decision-log-rate",
        "5",
    ]);
    let g = grant_app(&mut kg.admin().await, "logged").await;
    let mut check = check_client(kg.check_addr()).await;
    let r = check
        .check(signed_check(
            &g,
            &g.app_secret,
            "first?token=s3cr3t-in-query",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");
    let r = check
        .check(signed_check(&g, "wrong-secret", "second"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r).as_deref(), Some("SignatureMismatch"));
    // A burst past the rate, a pause past the one-second window, and one more: its line
    // reports what the burst left out.
    for i in 0..30 {
        check
            .check(signed_check(&g, &g.app_secret, &format!("burst{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    check
        .check(signed_check(&g, &g.app_secret, "last"))
        .await
        .unwrap();
    let total = 33u64;
    // Stop first, so every line is flushed.
    kg.stop().await;

    let log = kg.stderr();
    let mut decisions = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if v["target"] == "keygate::decision" {
            decisions.push(v);
        }
    }
    assert!(!log.contains(&g.app_secret), "a secret in the log");
    assert!(!log.contains("s3cr3t-in-query"), "a query in the log");

    let allow = decisions
        .iter()
        .find(|d| d["result"] == "allow")
        .expect("an allow line");
    assert_eq!(allow["level"], "INFO", "{allow}");
    assert_eq!(allow["app_id"], g.app_id.as_str(), "{allow}");
    assert_eq!(allow["app_key"], g.app_key.as_str(), "{allow}");
    assert_eq!(allow["scheme"], "aliyun", "{allow}");
    assert_eq!(allow["method"], "GET", "{allow}");
    assert!(
        allow["path"].as_str().unwrap().ends_with("/first"),
        "{allow}"
    );
    assert!(
        allow["api_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{allow}"
    );
    assert!(
        allow["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{allow}"
    );
    let deny = decisions
        .iter()
        .find(|d| d["result"] == "deny")
        .expect("a deny line");
    assert_eq!(deny["code"], "SignatureMismatch", "{deny}");
    assert_eq!(deny["scheme"], "aliyun", "{deny}");
    assert_eq!(deny["app_id"], "", "an unproven caller named: {deny}");

    let written = decisions.len() as u64;
    let counted: u64 = decisions
        .iter()
        .map(|d| d["suppressed"].as_u64().unwrap())
        .sum();
    eprintln!("{total} decisions: {written} lines, {counted} counted as suppressed");
    assert!(written < total, "the rate limit let every line through");
    assert_eq!(
        written + counted,
        total,
        "a decision was neither logged nor counted"
    );
}

/// Every admin call is one `keygate::admin` line with its principal, RPC, code and
/// latency; a refused token names no principal; no line holds a secret.
#[tokio::test]
async fn admin_calls_are_logged_with_their_principal() {
    let mut kg = Keygate::start_with_args(&["--log-format", "json"]);
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "audited").await;
    let mut labelled = tonic::Request::new(keygate::pb::admin::GetAppRequest {
        id: "no-such-app".into(),
    });
    labelled
        .metadata_mut()
        .insert("x-keygate-actor", "alice".parse().unwrap());
    let missing = admin.get_app(labelled).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut bare = kg.admin_without_token().await;
    bare.list_apps(keygate::pb::admin::ListAppsRequest::default())
        .await
        .unwrap_err();
    kg.stop().await;

    let log = kg.stderr();
    assert!(!log.contains(&g.app_secret), "a secret in the log");
    assert!(!log.contains(&g.app_code), "an AppCode in the log");
    let calls: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "keygate::admin")
        .collect();
    let find = |rpc: &str, code: &str| {
        calls
            .iter()
            .find(|c| c["rpc"] == rpc && c["code"] == code)
            .unwrap_or_else(|| panic!("no {rpc} {code} line in {calls:#?}"))
    };
    let created = find("CreateApp", "OK");
    assert_eq!(created["level"], "INFO");
    assert_eq!(created["principal"], "admin");
    assert!(created["latency_us"].as_u64().is_some(), "{created}");
    assert_eq!(find("GetApp", "NOT_FOUND")["principal"], "admin:alice");
    assert_eq!(find("ListApps", "UNAUTHENTICATED")["principal"], "-");
    assert!(
        calls.iter().any(|c| c["rpc"] == "CreateGrant"),
        "{calls:#?}"
    );
}
