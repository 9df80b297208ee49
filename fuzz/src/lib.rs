//! Shared pieces of keygate's fuzz targets: a structured request input, the view it
//! becomes, a small world (one app, one key, an API that accepts every scheme, an
//! anonymous API) built through the real store and index, and the invariants every
//! decision must keep.
//!
//! Invariants, checked on every input (a violation aborts the fuzzer with the input):
//! * nothing panics (parsers, canonicalisers, the Envoy translation, `decide`);
//! * no signature verifies with a secret nobody signed with;
//! * an allow is either anonymous (only for the anonymous API and only when the request
//!   carries no credential at all), or by a bearer scheme (AppCode, BlueKing's header
//!   form) whose real secret the request carries; a signature scheme can never be
//!   allowed, as the fuzzer cannot compute an HMAC;
//! * a deny's response headers never contain CR, LF or NUL.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use keygate::clock::ManualClock;
use keygate::decide::{DecideConfig, Decision, DenyCode, decide};
use keygate::index::Index;
use keygate::model::{Api, Grant, GrantTarget};
use keygate::replay::ReplayGuard;
use keygate::request::RequestView;
use keygate::scheme::{ApiSchemeOptions, SchemeConfig, SchemeKind, detect};
use keygate::server::door;
use keygate::store::{NewApp, NewKey, Store};

/// The fixed clock of the world (2023-11-14T22:13:20Z).
pub const NOW: i64 = 1_700_000_000_000;
pub const APP: &str = "app1";
pub const KEY: &str = "K1";
pub const SECRET: &str = "fuzz-right-secret-0123456789";
pub const CODE: &str = "fuzz-app-code-0123456789abcdef";
const WRONG: &[u8] = b"fuzz-wrong-secret-0123456789";

/// A request, structured enough that the fuzzer reaches the parsers: headers are
/// picked from a list of names (by index) or named freely.
#[derive(Arbitrary, Debug)]
pub struct Req {
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: Option<String>,
    /// (index into the target's header names, value)
    pub headers: Vec<(u8, String)>,
    pub free_headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub partial: bool,
    pub stage_hint: Option<String>,
    pub api_hint: Option<String>,
}

/// Headers every scheme's target may also pick.
pub const COMMON: [&str; 8] = [
    "content-type",
    "content-md5",
    "content-length",
    "accept",
    "date",
    "host",
    "x-ca-stage",
    "x-envoy-auth-partial-body",
];

impl Req {
    /// The view of this request, header names taken from `names` then `COMMON`.
    pub fn view(&self, names: &[&str]) -> RequestView {
        self.view_prefixed(names, &[])
    }

    /// Like `view`, with `(name, prefix)` pairs: values of that header start with the
    /// prefix (e.g. `authorization` with `hmac `), so the fuzzer's effort goes into one
    /// scheme's parameters rather than into finding its marker.
    pub fn view_prefixed(&self, names: &[&str], prefixes: &[(&str, &str)]) -> RequestView {
        let mut v = RequestView {
            method: self.method.clone(),
            scheme: "https".into(),
            host: self.host.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            body: self.body.clone(),
            body_partial: self.partial,
            stage_hint: self.stage_hint.clone(),
            api_hint: self.api_hint.clone(),
            ..RequestView::default()
        };
        let all: Vec<&str> = names.iter().chain(COMMON.iter()).copied().collect();
        for (i, value) in &self.headers {
            let name = all[usize::from(*i) % all.len()];
            match prefixes.iter().find(|(n, _)| *n == name) {
                Some((_, prefix)) => v.headers.push(name, format!("{prefix}{value}")),
                None => v.headers.push(name, value.clone()),
            }
        }
        for (n, value) in &self.free_headers {
            v.headers.push(n, value.clone());
        }
        v
    }
}

/// Runs every method of the credential `detect` finds in `v`.
pub fn exercise(v: &RequestView) {
    let Ok(c) = detect(v) else { return };
    let cfg = SchemeConfig::default();
    for api in [
        ApiSchemeOptions::default(),
        ApiSchemeOptions {
            tencent_strip_env_prefix: true,
            sigv4_region: Some("us-east-1".into()),
            sigv4_service: Some("svc".into()),
            require_timestamp_and_nonce: true,
        },
    ] {
        let verified = c.verify(v, &cfg, &api, WRONG).is_ok();
        // A bearer credential "verifies" when it presents that very secret.
        let presented = v
            .headers
            .iter()
            .any(|(_, x)| x.contains("fuzz-wrong-secret-0123456789"))
            || v.query
                .as_deref()
                .is_some_and(|q| q.contains("fuzz-wrong-secret"));
        assert!(
            !verified || (c.sends_secret() && presented),
            "{:?} verified with a secret nobody signed with: {v:?}",
            c.kind()
        );
        let _ = c.check_fresh(&cfg, &api, NOW);
        let _ = c.check_fresh(&cfg, &api, i64::MIN);
        let _ = c.check_fresh(&cfg, &api, i64::MAX);
    }
    let _ = c.id();
    let _ = c.nonce();
    let _ = c.nonce_ttl_ms(&cfg);
    let _ = c.check_body(v);
    let _ = c.headers_to_remove();
    let _ = c.query_params_to_remove();
    let _ = format!("{c:?}");
}

/// The world: app1 (key K1 with SECRET, AppCode CODE) granted api1 (`/v1/...`, every
/// scheme); `anon` (`/anon/...`) allows anonymous callers. Built once, through the
/// store and the index exactly as the service builds them.
pub fn world() -> &'static Index {
    static WORLD: OnceLock<(tempfile::TempDir, Index)> = OnceLock::new();
    &WORLD
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let store = Store::open(dir.path(), &[7u8; 32], Arc::new(ManualClock::new(NOW)))
                .expect("store");
            rt.block_on(async {
                store
                    .create_app(
                        "fuzz",
                        NewApp {
                            id: Some(APP.into()),
                            name: APP.into(),
                            owner: "acme".into(),
                            tags: BTreeMap::new(),
                            app_code: Some(CODE.into()),
                            ..NewApp::default()
                        },
                    )
                    .await
                    .expect("app");
                store
                    .create_key(
                        "fuzz",
                        NewKey {
                            app_id: APP.into(),
                            app_key: Some(KEY.into()),
                            app_secret: Some(SECRET.into()),
                            expires_ms: None,
                        },
                    )
                    .await
                    .expect("key");
                let (api, _) = store
                    .create_api(
                        "fuzz",
                        Api {
                            name: "api1".into(),
                            owner: "acme".into(),
                            path: "/v1/{*rest}".into(),
                            auth_schemes: SchemeKind::ALL
                                .iter()
                                .map(|k| k.as_str().to_owned())
                                .collect(),
                            ..Api::default()
                        },
                    )
                    .await
                    .expect("api");
                store
                    .create_api(
                        "fuzz",
                        Api {
                            name: "anon".into(),
                            owner: "acme".into(),
                            path: "/anon/{*rest}".into(),
                            anonymous_allowed: true,
                            ..Api::default()
                        },
                    )
                    .await
                    .expect("anonymous api");
                store
                    .create_grant(
                        "fuzz",
                        Grant {
                            id: String::new(),
                            app_id: APP.into(),
                            target: GrantTarget::Api(api.id),
                            stages: Vec::new(),
                            expires_ms: None,
                            created_by: String::new(),
                            create_ms: 0,
                        },
                    )
                    .await
                    .expect("grant");
            });
            let index = Index::load(&store).expect("index");
            (dir, index)
        })
        .1
}

/// Decides `v` in the world (fresh replay cache) and checks the invariants.
pub fn judge(v: &RequestView) -> Decision {
    let snap = world().read();
    let d = decide(
        v,
        &snap,
        &ReplayGuard::new(64, 64),
        NOW,
        &DecideConfig::default(),
    );
    match &d {
        Decision::Allow(a) => match a.scheme {
            "anonymous" => assert_eq!(
                detect(v).err().map(|d| d.code),
                Some(DenyCode::MissingCredential),
                "anonymous allow of a request with a credential: {v:?}"
            ),
            "appcode" | "bkapi" => {
                let carries = |s: &str| {
                    v.headers.iter().any(|(_, x)| x.contains(s))
                        || v.query.as_deref().is_some_and(|q| q.contains(s))
                };
                assert!(
                    carries(CODE) || carries(SECRET),
                    "{} allowed without its secret: {v:?}",
                    a.scheme
                );
            }
            other => panic!("{other} allowed without a valid signature: {v:?}"),
        },
        Decision::Deny(deny) => {
            for (n, val) in door::deny_headers(deny, "rid") {
                assert!(
                    !val.contains(['\r', '\n', '\0']),
                    "deny header {n} carries CR/LF/NUL: {val:?}"
                );
            }
        }
    }
    d
}
