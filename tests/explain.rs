//! `Explain` through the real binary: for each deny code the pipeline produces, the
//! answer names that code and the step that failed; an allow shows every step passed
//! and what goes upstream; explaining never records a nonce, and no answer holds a
//! secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use keygate::pb::admin as pb;
use keygate::scheme::SchemeKind;

struct World {
    kg: Keygate,
    admin: Admin,
    app_id: String,
    key: String,
    secret: String,
    app_code: String,
    disabled_app_key: (String, String),
    disabled_key: (String, String),
    expiring_key: (String, String),
    /// When the expiring key and the expiring grant lapse.
    lapse_ms: i64,
}

async fn api(admin: &mut Admin, name: &str, f: impl FnOnce(&mut pb::Api)) -> String {
    let mut a = pb::Api {
        name: name.into(),
        owner: "ex".into(),
        path: format!("/{name}/{{*rest}}"),
        auth_schemes: vec![
            pb::AuthScheme::Aliyun as i32,
            pb::AuthScheme::Appcode as i32,
            pb::AuthScheme::Tencent as i32,
        ],
        ..Default::default()
    };
    f(&mut a);
    admin
        .create_api(pb::CreateApiRequest { api: Some(a) })
        .await
        .expect("CreateApi")
        .into_inner()
        .id
}

async fn grant(admin: &mut Admin, app: &str, api: &str, f: impl FnOnce(&mut pb::Grant)) {
    let mut g = pb::Grant {
        app_id: app.into(),
        target: Some(pb::grant::Target::ApiId(api.into())),
        ..Default::default()
    };
    f(&mut g);
    admin
        .create_grant(pb::CreateGrantRequest { grant: Some(g) })
        .await
        .expect("CreateGrant");
}

async fn app(admin: &mut Admin, name: &str) -> pb::CreateAppResponse {
    admin
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: name.into(),
                owner: "ex".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("CreateApp")
        .into_inner()
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

async fn world() -> World {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let main = app(&mut admin, "explained").await;
    let (a, k) = (main.app.expect("app"), main.key_pair.expect("key"));
    let lapse_ms = now_ms() + 60_000;

    let open = api(&mut admin, "open", |_| {}).await;
    let once = api(&mut admin, "once", |a| a.replay_protection = true).await;
    let body = api(&mut admin, "body", |a| a.body_digest_required = true).await;
    let sigv4 = api(&mut admin, "sigv4", |a| {
        a.auth_schemes = vec![pb::AuthScheme::Sigv4 as i32]
    })
    .await;
    let _ungranted = api(&mut admin, "ungranted", |_| {}).await;
    let staged = api(&mut admin, "staged", |_| {}).await;
    let lapsing = api(&mut admin, "lapsing", |_| {}).await;
    for id in [&open, &once, &body, &sigv4] {
        grant(&mut admin, &a.id, id, |_| {}).await;
    }
    grant(&mut admin, &a.id, &staged, |g| {
        g.stages = vec!["TEST".into()]
    })
    .await;
    grant(&mut admin, &a.id, &lapsing, |g| {
        g.expires_at = Some(ts(lapse_ms))
    })
    .await;

    let off = app(&mut admin, "switched-off").await;
    let (off_app, off_key) = (off.app.expect("app"), off.key_pair.expect("key"));
    grant(&mut admin, &off_app.id, &open, |_| {}).await;
    admin
        .disable_app(pb::DisableAppRequest {
            id: off_app.id.clone(),
        })
        .await
        .expect("DisableApp");

    let key = |r: pb::KeyPair| (r.app_key, r.app_secret);
    let disabled = key(admin
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: a.id.clone(),
            ..Default::default()
        })
        .await
        .expect("CreateKeyPair")
        .into_inner());
    admin
        .disable_key_pair(pb::DisableKeyPairRequest {
            app_key: disabled.0.clone(),
        })
        .await
        .expect("DisableKeyPair");
    let expiring = key(admin
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: a.id.clone(),
            expires_at: Some(ts(lapse_ms)),
            ..Default::default()
        })
        .await
        .expect("CreateKeyPair")
        .into_inner());

    World {
        kg,
        admin,
        app_id: a.id,
        app_code: a.app_code,
        key: k.app_key,
        secret: k.app_secret,
        disabled_app_key: (off_key.app_key, off_key.app_secret),
        disabled_key: disabled,
        expiring_key: expiring,
        lapse_ms,
    }
}

/// A request signed the way a client would, as an `ExplainRequest`.
struct Req {
    scheme: SchemeKind,
    key: String,
    secret: String,
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    at_ms: i64,
    nonce: String,
    stage: String,
    /// Signed this long before `at_ms` (a stale request).
    signed_before_ms: i64,
}

impl Req {
    fn new(w: &World, path: &str) -> Self {
        Self {
            scheme: SchemeKind::Aliyun,
            key: w.key.clone(),
            secret: w.secret.clone(),
            method: "GET",
            url: format!("http://api.example.com{path}"),
            headers: Vec::new(),
            body: None,
            at_ms: now_ms(),
            nonce: keygate::sign::fresh_nonce().expect("nonce"),
            stage: String::new(),
            signed_before_ms: 0,
        }
    }

    fn signed(&self) -> (String, Vec<(String, String)>) {
        let req = keygate::sign::SignRequest {
            method: self.method.to_owned(),
            url: self.url.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
        };
        let opts = keygate::sign::SignOptions::new(
            self.scheme,
            &self.key,
            self.secret.as_bytes(),
            self.at_ms - self.signed_before_ms,
            &self.nonce,
        );
        let signed = keygate::sign::sign(&req, &opts).expect("sign");
        let mut headers = self.headers.clone();
        headers.extend(signed.headers);
        (signed.url, headers)
    }

    fn explain_request(&self, edit: impl FnOnce(&mut Vec<(String, String)>)) -> pb::ExplainRequest {
        let (url, mut headers) = self.signed();
        edit(&mut headers);
        pb::ExplainRequest {
            method: self.method.into(),
            url,
            headers: headers
                .into_iter()
                .map(|(name, value)| pb::HttpHeader { name, value })
                .collect(),
            body: self.body.clone(),
            stage: self.stage.clone(),
            at: Some(ts(self.at_ms)),
            ..Default::default()
        }
    }
}

async fn explain(w: &mut World, r: pb::ExplainRequest) -> pb::ExplainResponse {
    w.admin
        .explain(r)
        .await
        .expect("Explain answers")
        .into_inner()
}

/// The step that decided a deny: the last one that failed.
fn failed_step(e: &pb::ExplainResponse) -> &str {
    e.steps
        .iter()
        .rev()
        .find(|s| s.outcome == "fail")
        .map_or("", |s| s.step.as_str())
}

fn assert_secret_free(w: &World, e: &pb::ExplainResponse) {
    let text = format!("{e:?}");
    for secret in [
        &w.secret,
        &w.app_code,
        &w.disabled_key.1,
        &w.expiring_key.1,
        &w.disabled_app_key.1,
    ] {
        assert!(!text.contains(secret.as_str()), "a secret in {text}");
    }
}

#[tokio::test]
async fn each_deny_code_is_explained_at_its_step() {
    let mut w = world().await;
    let later = w.lapse_ms + 5_000;
    type Case = (
        &'static str,
        &'static str,
        Req,
        fn(&mut Vec<(String, String)>),
    );
    let keep: fn(&mut Vec<(String, String)>) = |_| {};
    let mut cases: Vec<Case> = Vec::new();

    let mut r = Req::new(&w, "/open/x");
    r.stage = "bad stage!".into();
    cases.push(("Malformed", "stage", r, keep));
    cases.push((
        "MissingCredential",
        "scheme",
        Req::new(&w, "/open/x"),
        |h| h.retain(|(n, _)| !n.to_ascii_lowercase().starts_with("x-ca-")),
    ));
    let mut r = Req::new(&w, "/open/x");
    r.key = "no-such-key".into();
    cases.push(("UnknownAppKey", "credential", r, keep));
    let mut r = Req::new(&w, "/open/x");
    r.scheme = SchemeKind::AppCode;
    r.secret = "0123456789abcdef0123456789abcdef".into();
    cases.push(("UnknownAppCode", "credential", r, keep));
    let mut r = Req::new(&w, "/open/x");
    r.secret = "not-the-secret-0123456789".into();
    cases.push(("SignatureMismatch", "signature", r, keep));
    cases.push((
        "UnsupportedAlgorithm",
        "signature",
        Req::new(&w, "/open/x"),
        |h| {
            for (n, v) in h.iter_mut() {
                if n.eq_ignore_ascii_case("x-ca-signature-method") {
                    *v = "HmacMD5".into();
                }
            }
        },
    ));
    let mut r = Req::new(&w, "/open/x");
    (r.key, r.secret) = w.disabled_app_key.clone();
    cases.push(("AppDisabled", "app", r, keep));
    let mut r = Req::new(&w, "/open/x");
    (r.key, r.secret) = w.disabled_key.clone();
    cases.push(("KeyDisabled", "key", r, keep));
    let mut r = Req::new(&w, "/open/x");
    (r.key, r.secret) = w.expiring_key.clone();
    r.at_ms = later;
    cases.push(("KeyExpired", "key", r, keep));
    let mut r = Req::new(&w, "/open/x");
    r.signed_before_ms = 3_600_000;
    cases.push(("TimestampExpired", "freshness", r, keep));
    let mut r = Req::new(&w, "/once/x");
    r.scheme = SchemeKind::Tencent;
    r.nonce = String::new();
    cases.push(("NonceMissing", "nonce", r, keep));
    let mut r = Req::new(&w, "/body/x");
    r.method = "POST";
    r.headers = vec![("Content-Type".into(), "application/json".into())];
    r.body = Some(b"{\"a\":1}".to_vec());
    let tampered = r;
    cases.push(("BodyDigestMissing", "api", Req::new(&w, "/body/x"), keep));
    cases.push(("SchemeNotAllowed", "api", Req::new(&w, "/sigv4/x"), keep));
    cases.push(("ApiNotFound", "api", Req::new(&w, "/nowhere/x"), keep));
    cases.push(("NoGrant", "grant", Req::new(&w, "/ungranted/x"), keep));
    cases.push(("NoGrant", "grant", Req::new(&w, "/staged/x"), keep));
    let mut r = Req::new(&w, "/lapsing/x");
    r.at_ms = later;
    cases.push(("GrantExpired", "grant", r, keep));
    cases.push(("HeadersTooLarge", "limits", Req::new(&w, "/open/x"), |h| {
        h.push(("x-padding".into(), "p".repeat(70 * 1024)));
    }));

    for (code, step, req, edit) in cases {
        let e = explain(&mut w, req.explain_request(edit)).await;
        assert!(!e.allowed, "{code}: allowed: {e:?}");
        assert_eq!(e.code, code, "{e:#?}");
        assert_eq!(failed_step(&e), step, "{code}: {e:#?}");
        assert_secret_free(&w, &e);
    }

    // The body the proxy passed on is not the one whose digest was signed.
    let mut r = tampered.explain_request(|_| {});
    r.body = Some(b"{\"a\":2}".to_vec());
    let e = explain(&mut w, r).await;
    assert_eq!(e.code, "BodyDigestMismatch", "{e:#?}");
    assert_eq!(failed_step(&e), "body");
}

#[tokio::test]
async fn an_allow_shows_every_step_and_a_failed_one_says_why() {
    let mut w = world().await;
    let ok = Req::new(&w, "/open/x").explain_request(|_| {});
    let e = explain(&mut w, ok).await;
    assert!(e.allowed, "{e:#?}");
    assert_eq!(e.app_id, w.app_id);
    assert_eq!(e.app_key, w.key);
    assert_eq!(e.stage, "RELEASE");
    assert_eq!(e.scheme, "aliyun");
    let steps: Vec<(&str, &str)> = e
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.outcome.as_str()))
        .collect();
    for step in [
        "limits",
        "stage",
        "target",
        "route",
        "scheme",
        "credential",
        "signature",
        "app",
        "key",
        "freshness",
        "body",
        "api",
        "grant",
    ] {
        assert!(
            steps.contains(&(step, "pass")),
            "{step} did not pass: {steps:?}"
        );
    }
    // Alibaba's signer always sends a nonce: it is looked up, not recorded.
    assert!(steps.contains(&("nonce", "pass")), "{steps:?}");
    let signature = e
        .steps
        .iter()
        .find(|s| s.step == "signature")
        .expect("signature");
    assert!(
        signature.detail.contains("string-to-sign") && signature.detail.contains("/open/x"),
        "{signature:?}"
    );
    assert!(
        e.headers_to_set
            .iter()
            .any(|h| h.name == "x-keygate-app-id" && h.value == w.app_id),
        "{e:?}"
    );
    assert_secret_free(&w, &e);

    // A mismatch shows the server's string-to-sign, to compare with the client's.
    let mut wrong = Req::new(&w, "/open/x");
    wrong.secret = "not-the-secret-0123456789".into();
    let e = explain(&mut w, wrong.explain_request(|_| {})).await;
    let signature = e
        .steps
        .iter()
        .find(|s| s.step == "signature")
        .expect("signature");
    assert!(
        signature.detail.contains("server string-to-sign"),
        "{signature:?}"
    );

    // No API matched: the nearest candidates are named.
    let mut post = Req::new(&w, "/sigv4/x");
    post.url = "http://api.example.com/sigv4".into();
    let e = explain(&mut w, post.explain_request(|_| {})).await;
    let route = e.steps.iter().find(|s| s.step == "route").expect("route");
    assert!(
        route.detail.contains("nearest") && route.detail.contains("sigv4"),
        "{route:?}"
    );

    // A grant in another stage is named with the reason it does not apply.
    let staged = Req::new(&w, "/staged/x").explain_request(|_| {});
    let e = explain(&mut w, staged).await;
    let g = e.steps.iter().find(|s| s.step == "grant").expect("grant");
    assert!(
        g.detail.contains("TEST") && g.detail.contains("RELEASE"),
        "{g:?}"
    );
}

#[tokio::test]
async fn explaining_records_no_nonce_but_sees_a_used_one() {
    let mut w = world().await;
    let req = Req::new(&w, "/once/x");
    for _ in 0..2 {
        let e = explain(&mut w, req.explain_request(|_| {})).await;
        assert!(e.allowed, "explain must not spend the nonce: {e:#?}");
        let nonce = e.steps.iter().find(|s| s.step == "nonce").expect("nonce");
        assert_eq!(nonce.outcome, "pass", "{nonce:?}");
    }
    let mut check = check_client(w.kg.check_addr()).await;
    let (url, headers) = req.signed();
    let (authority, target) = split_url(&url);
    let resp = check
        .check(envoy_request("GET", authority, target, &headers, None))
        .await
        .expect("Check")
        .into_inner();
    assert!(matches!(verdict(&resp), Verdict::Allow), "{resp:?}");
    let e = explain(&mut w, req.explain_request(|_| {})).await;
    assert_eq!(e.code, "NonceReplayed", "{e:#?}");
    assert_eq!(failed_step(&e), "nonce");
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let mut w = world().await;
    for (r, field) in [
        (
            pb::ExplainRequest {
                url: "/p".into(),
                host: "h".into(),
                ..Default::default()
            },
            "method",
        ),
        (
            pb::ExplainRequest {
                method: "GET".into(),
                url: "/p".into(),
                ..Default::default()
            },
            "host",
        ),
        (
            pb::ExplainRequest {
                method: "GET".into(),
                url: "gopher://h/p".into(),
                ..Default::default()
            },
            "url",
        ),
    ] {
        let e = w.admin.explain(r).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(&format!("{field}:")), "{e:?}");
    }
    // Check traffic cannot reach it, and the admin token is needed.
    let mut bare = w.kg.admin_without_token().await;
    let e = bare
        .explain(pb::ExplainRequest::default())
        .await
        .expect_err("needs a token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_missing_user_token_is_explained_at_the_user_step() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs.secret");
    std::fs::write(&secret, "an-hs256-secret-of-at-least-32-bytes!!").unwrap();
    let kg = Keygate::start_with_args(&["--user-jwt-hs256-secret-file", secret.to_str().unwrap()]);
    let mut admin = kg.admin().await;
    let created = app(&mut admin, "with-user").await;
    let (a, k) = (created.app.unwrap(), created.key_pair.unwrap());
    let id = api(&mut admin, "users", |x| x.user_auth_required = true).await;
    grant(&mut admin, &a.id, &id, |_| {}).await;
    let w = World {
        kg,
        admin,
        app_id: a.id,
        key: k.app_key,
        secret: k.app_secret,
        app_code: a.app_code,
        disabled_app_key: Default::default(),
        disabled_key: Default::default(),
        expiring_key: Default::default(),
        lapse_ms: 0,
    };
    let req = Req::new(&w, "/users/x").explain_request(|_| {});
    let mut w = w;
    let e = explain(&mut w, req).await;
    assert_eq!(e.code, "UserMissing", "{e:#?}");
    assert_eq!(failed_step(&e), "user");
}
