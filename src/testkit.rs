//! Fixtures shared by the unit tests, the benches and the fuzz targets (feature
//! `test-util`; always on in this crate's own tests): the view keygate builds from a
//! request signed with `crate::sign`, and a synthetic data set built straight into a
//! `Snapshot`.
//!
//! Owns: the shape of that data set (N apps, one key and an AppCode each, `APIS` APIs
//! accepting every scheme, one grant per app) and the ids, secrets and paths in it. A
//! test oracle that must not share code with the signer (decide's hand-written Alibaba
//! signer) stays with its tests.

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;

use crate::index::Snapshot;
use crate::model::{Api, App, Grant, GrantTarget, KeyPair, Secret};
use crate::request::RequestView;
use crate::scheme::SchemeKind;
use crate::sign::{SignOptions, SignRequest, Signed, sign};

/// The view keygate builds for `req` sent with `signed` applied: method, scheme, host
/// and target from the signed URL, the caller's headers then the signer's, the body.
pub fn received(req: &SignRequest, signed: &Signed) -> RequestView {
    let (scheme, rest) = signed
        .url
        .split_once("://")
        .unwrap_or(("https", &signed.url));
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, target) = rest.split_at(split);
    let mut v = RequestView {
        method: req.method.to_ascii_uppercase(),
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        body: req.body.clone(),
        ..RequestView::default()
    };
    v.set_target(if target.is_empty() { "/" } else { target });
    for (n, val) in req.headers.iter().chain(&signed.headers) {
        v.headers.push(n, val.as_str());
    }
    v
}

// === records ===
//
// One of each kind, for tests that build a `Snapshot` by hand.

/// An enabled app of owner "acme", with an AppCode and extend info.
pub fn app(id: &str) -> App {
    App {
        id: id.into(),
        name: id.into(),
        owner: "acme".into(),
        description: String::new(),
        tags: BTreeMap::new(),
        extend_info: "tier=gold".into(),
        app_code: Some(Secret::new("code-0123456789abcdef")),
        enabled: true,
        create_ms: 0,
        update_ms: 0,
    }
}

/// An enabled default key pair of `app_id`, with no expiry and no previous secret.
pub fn key(app_key: &str, app_id: &str, secret: &str) -> KeyPair {
    KeyPair {
        name: Default::default(),
        description: Default::default(),
        app_key: app_key.into(),
        app_id: app_id.into(),
        secret: Secret::new(secret),
        is_default: true,
        enabled: true,
        expires_ms: None,
        previous: None,
        create_ms: 0,
        update_ms: 0,
    }
}

/// An API serving GET and POST on `path`, every scheme its default.
pub fn api(id: &str, path: &str) -> Api {
    Api {
        id: id.into(),
        name: id.into(),
        owner: "acme".into(),
        path: path.into(),
        methods: vec!["GET".into(), "POST".into()],
        ..Default::default()
    }
}

/// A grant of `app` on `target` in `stages` (empty: any stage), until `expires_ms`.
pub fn grant(
    id: &str,
    app: &str,
    target: GrantTarget,
    stages: &[&str],
    expires_ms: Option<i64>,
) -> Grant {
    Grant {
        id: id.into(),
        app_id: app.into(),
        target,
        stages: stages.iter().map(|s| (*s).to_owned()).collect(),
        expires_ms,
        created_by: "t".into(),
        create_ms: 0,
    }
}

/// APIs in every data set; app `i` is granted API `i % APIS`.
pub const APIS: usize = 10;
/// Start of the bench clock (any fixed instant works: decide takes `now` as input).
pub const T0_MS: i64 = 1_700_000_000_000;
pub const HOST: &str = "api.example.com";
pub const REGION: &str = "us-east-1";
pub const SERVICE: &str = "execute-api";

pub fn app_id(i: usize) -> String {
    format!("app{i:08}")
}

pub fn app_key(i: usize) -> String {
    format!("KG{i:018}")
}

/// 40 characters, like the store's generated secrets.
pub fn secret(i: usize) -> String {
    format!("s{i:039}")
}

pub fn app_code(i: usize) -> String {
    format!("{i:032x}")
}

pub fn api_id(j: usize) -> String {
    format!("api{j:02}")
}

/// The path app `i` calls (its granted API), with a per-request item id.
pub fn path_for(i: usize, item: u64) -> String {
    format!("/v1/svc{:02}/items/{item}", i % APIS)
}

/// A snapshot holding `n` apps (each with its default key and an AppCode), `APIS`
/// APIs accepting every scheme, and one grant per app.
pub fn snapshot(n: usize) -> Snapshot {
    let mut s = Snapshot::default();
    for j in 0..APIS {
        s.put_api(Api {
            name: format!("svc{j:02}"),
            owner: "bench".into(),
            auth_schemes: SchemeKind::ALL.iter().map(|k| k.as_str().into()).collect(),
            ..api(&api_id(j), &format!("/v1/svc{j:02}/items/{{id}}"))
        });
    }
    for i in 0..n {
        s.put_app(App {
            owner: "bench".into(),
            app_code: Some(Secret::new(app_code(i))),
            ..app(&app_id(i))
        });
        s.put_key(key(&app_key(i), &app_id(i), &secret(i)));
        s.put_grant(Grant {
            created_by: "bench".into(),
            ..grant(
                &format!("grt{i:08}"),
                &app_id(i),
                GrantTarget::Api(api_id(i % APIS)),
                &[],
                None,
            )
        });
    }
    s
}

/// A request of app `i` signed with `scheme` at `now_ms` with `nonce`, as the view a
/// front door builds from what goes on the wire.
pub fn signed_view(scheme: SchemeKind, i: usize, now_ms: i64, nonce: &str) -> RequestView {
    let req = SignRequest {
        method: "GET".into(),
        url: format!("http://{HOST}{}?b=2&a=1", path_for(i, now_ms as u64 % 1000)),
        headers: vec![("User-Agent".into(), "keygate-testkit".into())],
        body: None,
    };
    let (key, secret) = match scheme {
        SchemeKind::AppCode => (String::new(), app_code(i)),
        // BlueKing names the app, not a key; any of its secrets may match.
        SchemeKind::Bkapi => (app_id(i), secret(i)),
        _ => (app_key(i), secret(i)),
    };
    let mut opts = SignOptions::new(scheme, &key, secret.as_bytes(), now_ms, nonce);
    if scheme == SchemeKind::SigV4 {
        opts.region = Some(REGION);
        opts.service = Some(SERVICE);
    }
    let signed = sign(&req, &opts).expect("a data-set request signs");
    let mut view = received(&req, &signed);
    // What the gRPC door builds for a GET: a body that is there and empty.
    view.body = Some(Vec::new());
    view
}
