//! Secrets never leak: the real binary with debug logging (keygate's own modules at
//! trace), driven through the allow and deny paths of every scheme (wrong signature,
//! unknown key, replay) and the admin calls that create, reset, read and list key
//! pairs and AppCodes, including refused ones. Then every secret, AppCode, the admin
//! token and the master key, raw and in Base64 (standard and URL-safe) and hex (both
//! cases), is searched for in: the process's stdout and stderr, every Check response,
//! every admin read, list, audit event and error message, `/metrics` and `/readyz`,
//! and (after a graceful stop) every file of the data dir. None may appear. The only
//! place a secret may travel is the response of the call that creates or resets it.
//!
//! Controls make the search meaningful: the debug lines of the check path and the
//! public AppKeys are found in the same haystacks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{CheckClient, Keygate};
use keygate::pb::admin as pb;
use keygate::scheme::SchemeKind;
use tonic::Code;

const APP_ID: &str = "secret-app";
const URL: &str = "http://secrets.example.com/v1/items?x=1";

/// Everything that must never be seen, with a label for the failure message.
#[derive(Default)]
struct Needles(Vec<(String, String)>);

impl Needles {
    fn add(&mut self, label: &str, secret: &str) {
        assert!(!secret.is_empty(), "{label} is empty");
        let b = secret.as_bytes();
        let forms = [
            ("raw", secret.to_owned()),
            (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(b),
            ),
            (
                "base64url",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
            ),
            ("hex", hex::encode(b)),
            ("HEX", hex::encode_upper(b)),
        ];
        for (form, text) in forms {
            self.0.push((format!("{label} ({form})"), text));
        }
    }

    /// Panics naming every needle found in `hay`.
    #[track_caller]
    fn assert_absent(&self, what: &str, hay: &[u8]) {
        let found: Vec<&str> = self
            .0
            .iter()
            .filter(|(_, n)| common::contains_bytes(hay, n.as_bytes()))
            .map(|(l, _)| l.as_str())
            .collect();
        assert!(found.is_empty(), "{what} contains {found:?}");
    }
}

/// What the test saw besides the process output: responses, errors, reads.
#[derive(Default)]
struct Seen(Vec<u8>);

impl Seen {
    fn push(&mut self, x: impl std::fmt::Debug) {
        self.0.extend(format!("{x:?}\n").into_bytes());
    }
}

async fn check_all(
    check: &mut CheckClient,
    seen: &mut Seen,
    req: envoy_types::pb::envoy::service::auth::v3::CheckRequest,
) -> common::Verdict {
    let resp = check.check(req).await.unwrap().into_inner();
    seen.push(&resp);
    common::verdict(&resp)
}

fn signed(
    scheme: SchemeKind,
    key: &str,
    secret: &str,
    nonce: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let algorithm = (scheme == SchemeKind::Bkapi && !nonce.is_empty()).then_some("signature");
    let req = keygate::sign::SignRequest {
        method: "POST".into(),
        url: URL.into(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Some(b"{\"q\":1}".to_vec()),
    };
    let mut opts =
        keygate::sign::SignOptions::new(scheme, key, secret.as_bytes(), common::now_ms(), nonce);
    opts.algorithm = algorithm;
    let s = keygate::sign::sign(&req, &opts).unwrap();
    let (authority, target) = common::split_url(&s.url);
    let mut headers = req.headers.clone();
    headers.extend(s.headers);
    common::envoy_request("POST", authority, target, &headers, req.body.as_deref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_responses_or_files() {
    let mut kg = Keygate::start_with_env(&[], &[("KEYGATE_LOG", "debug,keygate=trace")]);
    let mut needles = Needles::default();
    let mut seen = Seen::default();
    needles.add("admin token", common::TOKEN);
    let master = std::fs::read_to_string(kg.data_dir().join("master.key")).unwrap();
    needles.add("master key", master.trim());
    let master_bytes = hex::decode(master.trim()).unwrap();
    needles.0.push((
        "master key (base64)".into(),
        base64::engine::general_purpose::STANDARD.encode(&master_bytes),
    ));

    let mut c = kg.admin().await;

    // --- admin: create, reset, read, list ---
    let r = c
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                id: APP_ID.into(),
                name: "secrets".into(),
                owner: "acme".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let app = r.app.unwrap();
    let default_key = r.key_pair.unwrap();
    needles.add("generated AppCode", &app.app_code);
    needles.add("default AppSecret", &default_key.app_secret);
    let custom_secret = "custom-Secret-0123456789-!#$%&()*+";
    let custom = c
        .create_key_pair(pb::CreateKeyPairRequest {
            name: Default::default(),
            description: Default::default(),
            app_id: APP_ID.into(),
            app_key: "custom-key-1".into(),
            app_secret: custom_secret.into(),
            expires_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    needles.add("custom AppSecret", custom_secret);
    assert_eq!(
        custom.app_secret, custom_secret,
        "the create call returns it"
    );
    let reset = c
        .reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
            app_key: default_key.app_key.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
            app_secret: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    needles.add("reset AppSecret", &reset.app_secret);
    let custom_code = "Custom_AppCode-0123456789abcdef";
    let recoded = c
        .reset_app_code(pb::ResetAppCodeRequest {
            id: APP_ID.into(),
            app_code: custom_code.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recoded.app_code, custom_code);
    needles.add("custom AppCode", custom_code);

    // Refused writes that carried a secret: the error must not echo it.
    let refused_secret = "refused-secret-0123456789-abcdef";
    let e = c
        .create_key_pair(pb::CreateKeyPairRequest {
            name: Default::default(),
            description: Default::default(),
            app_id: APP_ID.into(),
            app_key: "custom-key-1".into(), // taken
            app_secret: refused_secret.into(),
            expires_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    seen.push(&e);
    let short = "short-secret-15"; // one below the minimum
    let e = c
        .create_key_pair(pb::CreateKeyPairRequest {
            name: Default::default(),
            description: Default::default(),
            app_id: APP_ID.into(),
            app_key: String::new(),
            app_secret: short.into(),
            expires_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    seen.push(&e);
    let spaced = "secret with spaces 0123456789";
    let e = c
        .reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
            app_key: "custom-key-1".into(),
            grace_period: None,
            app_secret: spaced.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    seen.push(&e);
    let e = c
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: "code-thief".into(),
                owner: "acme".into(),
                app_code: custom_code.into(), // used by secret-app
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    seen.push(&e);
    let bad_code = "bad code with spaces 0123456789";
    let e = c
        .reset_app_code(pb::ResetAppCodeRequest {
            id: APP_ID.into(),
            app_code: bad_code.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    seen.push(&e);
    for s in [refused_secret, short, spaced, bad_code] {
        needles.add("refused secret", s);
    }

    // Reads and lists carry no secret.
    let got = c
        .get_key_pair(pb::GetKeyPairRequest {
            app_key: default_key.app_key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.app_secret.is_empty(), "GetKeyPair returned the secret");
    seen.push(&got);
    let list = c
        .list_key_pairs(pb::ListKeyPairsRequest {
            app_id: APP_ID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.key_pairs.len(), 2);
    assert!(list.key_pairs.iter().all(|k| k.app_secret.is_empty()));
    seen.push(&list);
    let a = c
        .get_app(pb::GetAppRequest { id: APP_ID.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(a.app_code.is_empty() && a.app_code_set, "GetApp: {a:?}");
    seen.push(&a);
    let apps = c
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(apps.apps.iter().all(|a| a.app_code.is_empty()));
    seen.push(&apps);

    // An API every scheme may use, granted to the app.
    let api = c
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: "secrets-api".into(),
                owner: "acme".into(),
                path: "/v1/items".into(),
                auth_schemes: (1..=6).collect(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    c.create_grant(pb::CreateGrantRequest {
        grant: Some(pb::Grant {
            app_id: APP_ID.into(),
            target: Some(pb::grant::Target::ApiId(api.id)),
            ..Default::default()
        }),
    })
    .await
    .unwrap();

    // --- the check path: allow, wrong signature, unknown key, replay; every scheme ---
    let mut check = common::check_client(kg.check_addr()).await;
    let wrong_code = "Wrong_AppCode-0123456789abcdef";
    let wrong_secret = "wrong-bk-secret-0123456789abcdef";
    needles.add("presented wrong AppCode", wrong_code);
    needles.add("presented wrong BlueKing secret", wrong_secret);
    let mut n = 0u32;
    let mut nonce = || {
        n += 1;
        format!("5f0c4b1e-7d3a-4c2b-9e8f-{n:012}")
    };
    let keys = [
        (default_key.app_key.as_str(), reset.app_secret.as_str()),
        (
            default_key.app_key.as_str(),
            default_key.app_secret.as_str(),
        ), // in grace
        ("custom-key-1", custom_secret),
    ];
    for scheme in SchemeKind::ALL {
        for (key, secret) in keys {
            let (key, secret) = match scheme {
                SchemeKind::AppCode => ("", custom_code),
                SchemeKind::Bkapi => (APP_ID, secret),
                _ => (key, secret),
            };
            // Allow, then the very same request again (a replay for nonce schemes).
            let req = signed(scheme, key, secret, &nonce());
            let v = check_all(&mut check, &mut seen, req.clone()).await;
            assert_eq!(v, common::Verdict::Allow, "{scheme} {key}");
            let v = check_all(&mut check, &mut seen, req).await;
            if matches!(
                scheme,
                SchemeKind::Aliyun | SchemeKind::Tencent | SchemeKind::Rfc9421 | SchemeKind::Bkapi
            ) {
                assert_eq!(v.code(), Some("NonceReplayed"), "{scheme}");
            }
        }
        // Wrong signature / wrong presented secret.
        let (key, secret) = match scheme {
            SchemeKind::AppCode => ("", wrong_code),
            SchemeKind::Bkapi => (APP_ID, wrong_secret),
            _ => ("custom-key-1", "a-wrong-secret-0123456789"),
        };
        let v = check_all(&mut check, &mut seen, signed(scheme, key, secret, &nonce())).await;
        assert!(v.code().is_some(), "{scheme}: wrong secret allowed");
        // The BlueKing header form too (the secret travels in it).
        if scheme == SchemeKind::Bkapi {
            let v = check_all(
                &mut check,
                &mut seen,
                signed(scheme, APP_ID, wrong_secret, ""),
            )
            .await;
            assert!(v.code().is_some());
            let v = check_all(
                &mut check,
                &mut seen,
                signed(scheme, APP_ID, custom_secret, ""),
            )
            .await;
            assert_eq!(v, common::Verdict::Allow, "bkapi header form");
        }
        // Unknown key.
        let (key, secret) = match scheme {
            SchemeKind::AppCode => ("", "Unknown_AppCode-0123456789abcd"),
            SchemeKind::Bkapi => ("no-such-app", custom_secret),
            _ => ("no-such-key", custom_secret),
        };
        let v = check_all(&mut check, &mut seen, signed(scheme, key, secret, &nonce())).await;
        assert!(v.code().is_some(), "{scheme}: unknown key allowed");
    }

    // Audit log, metrics, readiness.
    let audit = c
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(audit.events.len() >= 6);
    seen.push(&audit);
    let (_, metrics) = kg.http_get("/metrics");
    let (_, ready) = kg.http_get("/readyz");
    seen.push(&metrics);
    seen.push(&ready);

    // --- search ---
    let log = kg.stderr();
    // Controls: debug logging is on and reached the check path; the haystacks hold
    // the public identifiers next to where a leak would be.
    assert!(log.contains("DEBUG"), "debug logging is off:\n{log}");
    assert!(
        log.contains("result=\"deny\"") || log.contains("result=deny"),
        "no check debug lines:\n{log}"
    );
    assert!(log.contains("SignatureMismatch") && log.contains("NonceReplayed"));
    assert!(common::contains_bytes(
        &seen.0,
        default_key.app_key.as_bytes()
    ));
    assert!(common::contains_bytes(&seen.0, b"custom-key-1"));

    needles.assert_absent("keygate's stdout/stderr", log.as_bytes());
    needles.assert_absent("responses, errors, reads, audit, metrics", &seen.0);

    // At rest: nothing in clear in any file once the store is flushed.
    let status = kg.stop().await;
    assert!(status.success());
    let stop_log = kg.stderr();
    needles.assert_absent("keygate's output up to its exit", stop_log.as_bytes());
    let files = common::files_under(kg.data_dir());
    let mut saw_key = false;
    for f in &files {
        // The master key file holds the master key by design (mode 0600).
        if f.file_name().is_some_and(|n| n == "master.key") {
            continue;
        }
        let bytes = std::fs::read(f).unwrap();
        saw_key |= common::contains_bytes(&bytes, b"custom-key-1");
        needles.assert_absent(&f.display().to_string(), &bytes);
    }
    assert!(saw_key, "the scan does not see the records: {files:?}");
    println!(
        "secrets: {} needles (secrets x forms) searched in {} bytes of output, {} bytes of responses and {} data files: none found",
        needles.0.len(),
        log.len(),
        seen.0.len(),
        files.len()
    );
}

/// A master key generated inside the data dir is a loud warning (a copy of the data
/// dir opens every secret); one kept elsewhere is not.
#[test]
fn a_master_key_inside_the_data_dir_is_warned_about() {
    let kg = Keygate::start();
    assert!(
        kg.stderr()
            .contains("the master key lives inside the data dir"),
        "{}",
        kg.stderr()
    );
    drop(kg);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let kg = Keygate::start_with_args(&["--master-key-file", key.to_str().unwrap()]);
    assert!(
        !kg.stderr()
            .contains("the master key lives inside the data dir"),
        "{}",
        kg.stderr()
    );
}
