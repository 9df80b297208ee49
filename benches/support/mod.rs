//! Shared set-up for the criterion benches: a synthetic data set built straight into a
//! `Snapshot` (the structure the check path reads), and requests signed with
//! `keygate::sign` exactly as a caller would sign them.
//!
//! Owns: the shape of the bench data (N apps, one key each, ten APIs, one grant per
//! app) and the conversion of a signed request into the `RequestView` a front door
//! would build. Every request is signed fresh, with a unique nonce and the timestamp
//! the decision runs at, so no measured decision is a replay.

// Each bench binary uses a different part of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use keygate::index::Snapshot;
use keygate::model::{Api, App, Grant, GrantTarget, KeyPair, Secret};
use keygate::request::{Headers, RequestView};
use keygate::scheme::SchemeKind;
use keygate::sign::{SignOptions, SignRequest, sign};

/// The allocator the `keygate` binary uses, so the benches measure what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn api_id(j: usize) -> String {
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
            id: api_id(j),
            name: format!("svc{j:02}"),
            owner: "bench".into(),
            methods: vec!["GET".into(), "POST".into()],
            path: format!("/v1/svc{j:02}/items/{{id}}"),
            auth_schemes: SchemeKind::ALL.iter().map(|k| k.as_str().into()).collect(),
            ..Default::default()
        });
    }
    for i in 0..n {
        s.put_app(App {
            id: app_id(i),
            name: app_id(i),
            owner: "bench".into(),
            description: String::new(),
            tags: BTreeMap::new(),
            extend_info: "tier=gold".into(),
            app_code: Some(Secret::new(app_code(i))),
            enabled: true,
            create_ms: 0,
            update_ms: 0,
        });
        s.put_key(KeyPair {
            app_key: app_key(i),
            app_id: app_id(i),
            secret: Secret::new(secret(i)),
            is_default: true,
            enabled: true,
            expires_ms: None,
            previous: None,
            create_ms: 0,
            update_ms: 0,
        });
        s.put_grant(Grant {
            id: format!("grt{i:08}"),
            app_id: app_id(i),
            target: GrantTarget::Api(api_id(i % APIS)),
            stages: Vec::new(),
            expires_ms: None,
            created_by: "bench".into(),
            create_ms: 0,
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
        headers: vec![("User-Agent".into(), "keygate-bench".into())],
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
    let signed = sign(&req, &opts).expect("bench request signs");
    view_of(
        &req.method,
        &signed.url,
        req.headers.iter().chain(&signed.headers),
    )
}

/// What a front door builds from a URL and the headers on the wire.
pub fn view_of<'a>(
    method: &str,
    url: &str,
    headers: impl Iterator<Item = &'a (String, String)>,
) -> RequestView {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let split = rest.find('/').unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    let mut h = Headers::new();
    for (n, v) in headers {
        h.push(n, v.clone());
    }
    let mut view = RequestView {
        method: method.into(),
        scheme: "http".into(),
        host: authority.into(),
        headers: h,
        body: Some(Vec::new()),
        ..Default::default()
    };
    view.set_target(target);
    view
}

/// A cheap deterministic sequence (SplitMix64) to pick apps all over the key space,
/// so lookups in a large index are not served from a hot cache line.
pub struct Picker(u64);

impl Picker {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n as u64) as usize
    }
}
