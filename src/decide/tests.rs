//! Pipeline tests: every deny code the pipeline itself produces, and the allow.
//! Requests are signed here with an independent Alibaba-style signer written from the
//! spec, so these tests also cross-check the scheme implementation.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;
use crate::model::{GrantTarget, PreviousSecret, Secret};
use crate::request::Headers;
use crate::testkit::{api, app, grant, key};

const NOW: i64 = 1_700_000_000_000;
const SECRET: &str = "test-secret-0123456789";

/// app1 (key K1) granted api1 in RELEASE; api2 in group g1 granted to app1 via the group.
fn world() -> Snapshot {
    let mut s = Snapshot::default();
    s.put_app(app("app1"));
    s.put_key(key("K1", "app1", SECRET));
    s.put_api(api("api1", "/v1/items/{id}"));
    let mut a2 = api("api2", "/v1/grouped");
    a2.group_id = Some("g1".into());
    s.put_api(a2);
    s.put_grant(grant(
        "gr1",
        "app1",
        GrantTarget::Api("api1".into()),
        &["RELEASE"],
        None,
    ));
    s.put_grant(grant(
        "gr2",
        "app1",
        GrantTarget::Group("g1".into()),
        &[],
        None,
    ));
    s
}

/// Signs like an Alibaba SDK: x-ca-key, x-ca-nonce, x-ca-timestamp signed, HmacSHA256.
fn signed(
    method: &str,
    target: &str,
    app_key: &str,
    secret: &str,
    nonce: &str,
    ts: i64,
    body: Option<&[u8]>,
) -> RequestView {
    let mut v = RequestView {
        method: method.into(),
        host: "api.example.com".into(),
        ..Default::default()
    };
    v.set_target(target);
    let mut params: Vec<(String, String)> = v
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, val)) => (k.to_owned(), val.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    params.sort();
    let mut path_params = v.path.clone();
    if !params.is_empty() {
        let joined: Vec<String> = params
            .iter()
            .map(|(k, val)| {
                if val.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={val}")
                }
            })
            .collect();
        path_params = format!("{path_params}?{}", joined.join("&"));
    }
    let md5 = body
        .map(|b| {
            base64::engine::general_purpose::STANDARD.encode(<md5::Md5 as md5::Digest>::digest(b))
        })
        .unwrap_or_default();
    let sts = format!(
        "{method}\napplication/json\n{md5}\napplication/json\n\nx-ca-key:{app_key}\nx-ca-nonce:{nonce}\nx-ca-timestamp:{ts}\n{path_params}"
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut h = Headers::new();
    h.push("accept", "application/json");
    h.push("content-type", "application/json");
    if body.is_some() {
        h.push("content-md5", md5);
    }
    h.push("x-ca-key", app_key);
    h.push("x-ca-nonce", nonce);
    h.push("x-ca-timestamp", ts.to_string());
    h.push("x-ca-signature-method", "HmacSHA256");
    h.push(
        "x-ca-signature-headers",
        "x-ca-key,x-ca-nonce,x-ca-timestamp",
    );
    h.push("x-ca-signature", sig);
    v.headers = h;
    v.body = Some(body.unwrap_or_default().to_vec());
    v
}

fn run(snap: &Snapshot, v: &RequestView) -> Decision {
    decide(
        v,
        snap,
        &ReplayGuard::new(1000, 1000),
        NOW,
        &DecideConfig::default(),
    )
}

fn code(d: &Decision) -> Option<DenyCode> {
    d.deny_code()
}

#[test]
fn signed_request_is_allowed_with_identity_headers() {
    let s = world();
    let d = run(
        &s,
        &signed("GET", "/v1/items/42?b=2&a=1", "K1", SECRET, "n1", NOW, None),
    );
    let Decision::Allow(a) = d else {
        panic!("{d:?}")
    };
    assert_eq!(
        (
            a.app_id.as_str(),
            a.api_id.as_str(),
            a.stage.as_str(),
            a.scheme
        ),
        ("app1", "api1", "RELEASE", "aliyun")
    );
    let set: BTreeMap<_, _> = a.headers_to_set.iter().cloned().collect();
    assert_eq!(set["x-keygate-app-id"], "app1");
    assert_eq!(set["x-keygate-app-key"], "K1");
    assert_eq!(set["x-keygate-api-id"], "api1");
    assert_eq!(set["x-keygate-app-extend-info"], "tier=gold");
    assert!(a.headers_to_remove.iter().any(|h| h == "x-ca-signature"));
}

#[test]
fn identity_and_signature_denies() {
    let s = world();
    assert_eq!(
        code(&run(
            &s,
            &signed("GET", "/v1/items/1", "NOPE", SECRET, "n", NOW, None)
        )),
        Some(DenyCode::UnknownAppKey)
    );
    assert_eq!(
        code(&run(
            &s,
            &signed(
                "GET",
                "/v1/items/1",
                "K1",
                "wrong-secret-value",
                "n",
                NOW,
                None
            )
        )),
        Some(DenyCode::SignatureMismatch)
    );
    let mut tampered = signed("GET", "/v1/items/1?a=1", "K1", SECRET, "n", NOW, None);
    tampered.set_target("/v1/items/1?a=2");
    assert_eq!(code(&run(&s, &tampered)), Some(DenyCode::SignatureMismatch));
    let none = RequestView {
        method: "GET".into(),
        path: "/v1/items/1".into(),
        ..Default::default()
    };
    assert_eq!(code(&run(&s, &none)), Some(DenyCode::MissingCredential));
}

#[test]
fn state_denies() {
    let mut s = world();
    let mut disabled = app("app1");
    disabled.enabled = false;
    s.put_app(disabled);
    assert_eq!(
        code(&run(
            &s,
            &signed("GET", "/v1/items/1", "K1", SECRET, "n", NOW, None)
        )),
        Some(DenyCode::AppDisabled)
    );

    let mut s = world();
    let mut k = key("K1", "app1", SECRET);
    k.enabled = false;
    s.put_key(k);
    assert_eq!(
        code(&run(
            &s,
            &signed("GET", "/v1/items/1", "K1", SECRET, "n", NOW, None)
        )),
        Some(DenyCode::KeyDisabled)
    );

    let mut s = world();
    let mut k = key("K1", "app1", SECRET);
    k.expires_ms = Some(NOW);
    s.put_key(k);
    assert_eq!(
        code(&run(
            &s,
            &signed("GET", "/v1/items/1", "K1", SECRET, "n", NOW, None)
        )),
        Some(DenyCode::KeyExpired)
    );
}

#[test]
fn freshness_and_replay() {
    let s = world();
    let stale = signed(
        "GET",
        "/v1/items/1",
        "K1",
        SECRET,
        "n",
        NOW - 16 * 60_000,
        None,
    );
    assert_eq!(code(&run(&s, &stale)), Some(DenyCode::TimestampExpired));
    let replay = ReplayGuard::new(1000, 1000);
    let cfg = DecideConfig::default();
    let v = signed("GET", "/v1/items/1", "K1", SECRET, "once", NOW, None);
    assert!(decide(&v, &s, &replay, NOW, &cfg).is_allow());
    assert_eq!(
        decide(&v, &s, &replay, NOW + 1, &cfg).deny_code(),
        Some(DenyCode::NonceReplayed)
    );
    // A forged request with a fresh nonce but a bad signature must not consume a slot.
    let forged = signed(
        "GET",
        "/v1/items/1",
        "K1",
        "wrong-secret-value",
        "other",
        NOW,
        None,
    );
    assert_eq!(
        decide(&forged, &s, &replay, NOW, &cfg).deny_code(),
        Some(DenyCode::SignatureMismatch)
    );
    assert_eq!(replay.len(), 1);
}

#[test]
fn grant_rules() {
    let s = world();
    // Group grant, any stage.
    assert!(
        run(
            &s,
            &signed("GET", "/v1/grouped", "K1", SECRET, "n", NOW, None)
        )
        .is_allow()
    );
    // Stage not granted.
    let mut test_stage = signed("GET", "/v1/items/1", "K1", SECRET, "n", NOW, None);
    test_stage.stage_hint = Some("TEST".into());
    assert_eq!(code(&run(&s, &test_stage)), Some(DenyCode::NoGrant));
    // Unrouted.
    assert_eq!(
        code(&run(
            &s,
            &signed("GET", "/nowhere", "K1", SECRET, "n", NOW, None)
        )),
        Some(DenyCode::ApiNotFound)
    );
    // Expired grant.
    let mut s2 = world();
    s2.put_api(api("api3", "/v1/old"));
    s2.put_grant(grant(
        "gr3",
        "app1",
        GrantTarget::Api("api3".into()),
        &[],
        Some(NOW - 1),
    ));
    assert_eq!(
        code(&run(
            &s2,
            &signed("GET", "/v1/old", "K1", SECRET, "n", NOW, None)
        )),
        Some(DenyCode::GrantExpired)
    );
    // A route hint narrows: the API it names must still serve the path.
    let mut hinted = signed("GET", "/nowhere", "K1", SECRET, "n", NOW, None);
    hinted.api_hint = Some("api1".into());
    assert_eq!(code(&run(&s, &hinted)), Some(DenyCode::ApiNotFound));
}

#[test]
fn scheme_and_body_rules() {
    let mut s = world();
    let mut only_tencent = api("api4", "/v1/tencent-only");
    only_tencent.auth_schemes = vec!["tencent".into()];
    s.put_api(only_tencent);
    s.put_grant(grant(
        "gr4",
        "app1",
        GrantTarget::Api("api4".into()),
        &[],
        None,
    ));
    assert_eq!(
        code(&run(
            &s,
            &signed("GET", "/v1/tencent-only", "K1", SECRET, "n", NOW, None)
        )),
        Some(DenyCode::SchemeNotAllowed)
    );

    let body = br#"{"a":1}"#;
    assert!(
        run(
            &s,
            &signed("POST", "/v1/items/1", "K1", SECRET, "b1", NOW, Some(body))
        )
        .is_allow()
    );
    let mut tampered = signed("POST", "/v1/items/1", "K1", SECRET, "b2", NOW, Some(body));
    tampered.body = Some(br#"{"a":2}"#.to_vec());
    assert_eq!(
        code(&run(&s, &tampered)),
        Some(DenyCode::BodyDigestMismatch)
    );

    let mut needs_digest = api("api5", "/v1/digest");
    needs_digest.body_digest_required = true;
    s.put_api(needs_digest);
    s.put_grant(grant(
        "gr5",
        "app1",
        GrantTarget::Api("api5".into()),
        &[],
        None,
    ));
    let mut no_body = signed("POST", "/v1/digest", "K1", SECRET, "b3", NOW, Some(body));
    no_body.body = None;
    assert_eq!(code(&run(&s, &no_body)), Some(DenyCode::BodyDigestMissing));
}

#[test]
fn previous_secret_verifies_only_during_grace() {
    let mut s = world();
    let mut k = key("K1", "app1", "new-secret-0123456789");
    k.previous = Some(PreviousSecret {
        secret: Secret::new(SECRET),
        until_ms: NOW + 1000,
    });
    s.put_key(k);
    let v = signed("GET", "/v1/items/1", "K1", SECRET, "g1", NOW, None);
    assert!(run(&s, &v).is_allow());
    let late = decide(
        &signed("GET", "/v1/items/1", "K1", SECRET, "g2", NOW, None),
        &s,
        &ReplayGuard::new(10, 10),
        NOW + 1000,
        &DecideConfig::default(),
    );
    assert_eq!(late.deny_code(), Some(DenyCode::SignatureMismatch));
}

#[test]
fn anonymous_only_where_allowed() {
    let mut s = world();
    let mut open = api("api6", "/public");
    open.anonymous_allowed = true;
    s.put_api(open);
    let v = RequestView {
        method: "GET".into(),
        path: "/public".into(),
        ..Default::default()
    };
    let Decision::Allow(a) = run(&s, &v) else {
        panic!()
    };
    assert!(a.app_id.is_empty());
    assert!(a.headers_to_remove.iter().any(|h| h == "x-keygate-app-id"));
}

/// One rule on an anonymous API: a caller that proves who it is needs no grant (it
/// could drop its signature and pass), but what it presents is checked in full.
#[test]
fn a_signed_caller_on_an_anonymous_api_needs_no_grant_but_a_valid_credential() {
    let mut s = world();
    let mut open = api("api6", "/public");
    open.anonymous_allowed = true;
    s.put_api(open);
    s.put_app(app("app2"));
    s.put_key(key("K2", "app2", "secret-of-app2"));
    let mut expired = grant(
        "gr9",
        "app2",
        GrantTarget::Api("api6".into()),
        &[],
        Some(NOW - 1),
    );
    expired.create_ms = NOW - 10;
    s.put_grant(expired);
    // app1 has no grant at all; app2's has expired.
    for (k, secret) in [("K1", SECRET), ("K2", "secret-of-app2")] {
        let d = run(&s, &signed("GET", "/public", k, secret, "n1", NOW, None));
        let Decision::Allow(a) = d else {
            panic!("{k}: {d:?}")
        };
        assert!(
            !a.app_id.is_empty(),
            "{k}: the verified app is named upstream"
        );
        assert_eq!(a.scheme, "aliyun");
    }
    let bad = run(
        &s,
        &signed("GET", "/public", "K1", "wrong", "n1", NOW, None),
    );
    assert_eq!(code(&bad), Some(DenyCode::SignatureMismatch));
    let stale = run(
        &s,
        &signed("GET", "/public", "K1", SECRET, "n1", NOW - 3_600_000, None),
    );
    assert_eq!(code(&stale), Some(DenyCode::TimestampExpired));
    let mut off = app("app1");
    off.enabled = false;
    s.put_app(off);
    let disabled = run(&s, &signed("GET", "/public", "K1", SECRET, "n1", NOW, None));
    assert_eq!(code(&disabled), Some(DenyCode::AppDisabled));
}

/// The user-token whitelist comes with a grant: on an anonymous API that also requires
/// a user, an exempt app without a grant must prove a user like anyone else.
#[test]
fn an_exempt_app_without_a_grant_still_needs_a_user_token_on_an_anonymous_api() {
    let mut s = world();
    let mut open = api("api7", "/open-users");
    open.anonymous_allowed = true;
    open.user_auth_required = true;
    open.user_auth_exempt_apps = vec!["app1".into()];
    s.put_api(open);
    let no_grant = run(
        &s,
        &signed("GET", "/open-users", "K1", SECRET, "n1", NOW, None),
    );
    assert_eq!(code(&no_grant), Some(DenyCode::UserInvalid), "{no_grant:?}");
    s.put_grant(grant(
        "gr7",
        "app1",
        GrantTarget::Api("api7".into()),
        &[],
        None,
    ));
    let granted = run(
        &s,
        &signed("GET", "/open-users", "K1", SECRET, "n2", NOW, None),
    );
    assert!(matches!(granted, Decision::Allow(_)), "{granted:?}");
}

// === request integrity (see crate::path and SECURITY.md §8) ===

/// api1 `/v1/items/{id}` granted; `admin` `/v1/items/admin` (literal, not granted) and a
/// host-specific `hosted` API on admin.example.com (not granted) beside a host-less one.
fn integrity_world() -> Snapshot {
    let mut s = world();
    s.put_api(api("admin", "/v1/items/admin"));
    let mut hosted = api("hosted", "/v1/hosted");
    hosted.host = Some("admin.example.com".into());
    s.put_api(hosted);
    s.put_api(api("open", "/v1/hosted"));
    s.put_grant(grant(
        "gr-open",
        "app1",
        GrantTarget::Api("open".into()),
        &[],
        None,
    ));
    s
}

#[test]
fn ambiguous_paths_are_malformed_not_routed() {
    let s = integrity_world();
    for target in [
        "/v1/items/%61dmin",
        "/v1/items/x/../admin",
        "/v1//items/admin",
        "/v1/items/./admin",
        "/v1/items/%2e%2e/items/admin",
        "/v1/items/admin%2F",
        "/v1/items/x;/../admin",
        "/v1/items/a%5Cb",
    ] {
        let d = run(&s, &signed("GET", target, "K1", SECRET, "n", NOW, None));
        assert_eq!(code(&d), Some(DenyCode::Malformed), "{target}: {d:?}");
    }
    // Literal beats parameter on the canonical path: the admin API is not granted.
    let d = run(
        &s,
        &signed("GET", "/v1/items/admin", "K1", SECRET, "n", NOW, None),
    );
    assert_eq!(code(&d), Some(DenyCode::NoGrant));
    // Normalize mode routes on the canonical form: still the admin API.
    let cfg = DecideConfig {
        path_mode: PathMode::Normalize,
        ..DecideConfig::default()
    };
    let v = signed(
        "GET",
        "/v1/items/x/../%61dmin",
        "K1",
        SECRET,
        "n",
        NOW,
        None,
    );
    let d = decide(&v, &s, &ReplayGuard::new(10, 10), NOW, &cfg);
    assert_eq!(code(&d), Some(DenyCode::NoGrant), "{d:?}");
}

#[test]
fn hosts_are_folded_before_routing() {
    let s = integrity_world();
    for host in [
        "admin.example.com.",
        "ADMIN.example.com:443",
        "Admin.Example.Com.:8443",
    ] {
        let mut v = signed("GET", "/v1/hosted", "K1", SECRET, "n", NOW, None);
        v.host = host.into();
        assert_eq!(code(&run(&s, &v)), Some(DenyCode::NoGrant), "{host}");
    }
    let mut v = signed("GET", "/v1/hosted", "K1", SECRET, "n", NOW, None);
    v.host = "a..b".into();
    assert_eq!(code(&run(&s, &v)), Some(DenyCode::Malformed));
    // Another host reaches the host-less API, which is granted.
    assert!(
        run(
            &s,
            &signed("GET", "/v1/hosted", "K1", SECRET, "n", NOW, None)
        )
        .is_allow()
    );
}

#[test]
fn the_client_does_not_choose_the_stage_unless_trusted() {
    let mut s = world();
    s.put_api(api("t", "/v1/test-only"));
    s.put_grant(grant(
        "gt",
        "app1",
        GrantTarget::Api("t".into()),
        &["TEST"],
        None,
    ));
    let mut v = signed("GET", "/v1/test-only", "K1", SECRET, "n", NOW, None);
    v.headers.push("x-ca-stage", "TEST");
    assert_eq!(code(&run(&s, &v)), Some(DenyCode::NoGrant));
    let trusted = DecideConfig {
        trust_client_stage: true,
        ..DecideConfig::default()
    };
    assert!(decide(&v, &s, &ReplayGuard::new(10, 10), NOW, &trusted).is_allow());
    // The proxy's stage wins over the client's, trusted or not.
    v.stage_hint = Some("RELEASE".into());
    let d = decide(&v, &s, &ReplayGuard::new(10, 10), NOW, &trusted);
    assert_eq!(code(&d), Some(DenyCode::NoGrant));
}

#[test]
fn a_route_hint_narrows_to_the_apis_methods_and_template() {
    let s = world();
    let hinted = |method: &str, target: &str| {
        let mut v = signed(method, target, "K1", SECRET, "n", NOW, None);
        v.api_hint = Some("api1".into());
        run(&s, &v)
    };
    assert!(hinted("GET", "/v1/items/7").is_allow());
    assert_eq!(
        code(&hinted("DELETE", "/v1/items/7")),
        Some(DenyCode::ApiNotFound)
    );
    assert_eq!(
        code(&hinted("GET", "/v1/items-internal/7")),
        Some(DenyCode::ApiNotFound)
    );
    assert_eq!(
        code(&hinted("GET", "/v1/items/")),
        Some(DenyCode::ApiNotFound)
    );
}

#[test]
fn forged_identity_headers_are_removed_in_every_spelling() {
    let s = world();
    let mut v = signed("GET", "/v1/items/7", "K1", SECRET, "n", NOW, None);
    for (n, val) in [
        ("x_keygate_app_id", "forged"),
        ("x-keygate_api-id", "forged"),
        ("x-keygate-app-id", "forged"),
        ("x-keygate-made-up", "forged"),
        ("x_keygate_app_extend_info", "forged"),
    ] {
        v.headers.push(n, val);
    }
    let Decision::Allow(a) = run(&s, &v) else {
        panic!("not allowed")
    };
    for n in [
        "x_keygate_app_id",
        "x-keygate_api-id",
        "x-keygate-made-up",
        "x_keygate_app_extend_info",
    ] {
        assert!(
            a.headers_to_remove.iter().any(|r| r == n),
            "{n} kept: {a:?}"
        );
    }
    // The exact names keygate sets are overwritten, not removed.
    assert!(
        a.headers_to_set
            .iter()
            .any(|(n, v)| n == "x-keygate-app-id" && v == "app1")
    );
    assert!(!a.headers_to_remove.iter().any(|r| r == "x-keygate-app-id"));
}

/// A configured user-id header outside the x-keygate- prefix is an identity header too:
/// a client's copy goes in every spelling.
#[test]
fn a_configured_user_header_is_removed_in_every_spelling() {
    let s = world();
    let mut v = signed("GET", "/v1/items/7", "K1", SECRET, "n", NOW, None);
    v.headers.push("X_User_Id", "mallory");
    let cfg = DecideConfig {
        user_id_header: "x-user-id".into(),
        ..DecideConfig::default()
    };
    let Decision::Allow(a) = decide(&v, &s, &ReplayGuard::new(1000, 1000), NOW, &cfg) else {
        panic!("not allowed")
    };
    assert!(
        a.headers_to_remove.iter().any(|r| r == "x_user_id"),
        "{a:?}"
    );
    assert!(a.headers_to_remove.iter().any(|r| r == "x-user-id"));
}

#[test]
fn a_key_at_its_replay_share_does_not_refuse_another_key() {
    let mut s = world();
    s.put_key(key("K2", "app1", SECRET));
    let replay = ReplayGuard::new(1_000, 3);
    let cfg = DecideConfig::default();
    for i in 0..3 {
        let v = signed(
            "GET",
            "/v1/items/7",
            "K1",
            SECRET,
            &format!("n{i}"),
            NOW,
            None,
        );
        assert!(decide(&v, &s, &replay, NOW, &cfg).is_allow());
    }
    let v = signed("GET", "/v1/items/7", "K1", SECRET, "n9", NOW, None);
    assert_eq!(
        code(&decide(&v, &s, &replay, NOW, &cfg)),
        Some(DenyCode::ReplayCacheFull)
    );
    let v = signed("GET", "/v1/items/7", "K2", SECRET, "n9", NOW, None);
    assert!(decide(&v, &s, &replay, NOW, &cfg).is_allow());
}
