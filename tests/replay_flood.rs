//! The replay cache under a flood of unique, correctly signed nonces, against the real
//! binary with a small `--replay-capacity`.
//!
//! Measured, not assumed: the cache size reported by `/metrics` never exceeds its
//! capacity; once it is full, every fresh nonce-carrying request (each scheme that has
//! a nonce) is denied `ReplayCacheFull` (gRPC `RESOURCE_EXHAUSTED`, HTTP 503), while
//! every nonce it accepted is still refused as `NonceReplayed` (nothing was evicted to
//! make room); requests with a broken signature never take a slot; the process's
//! resident memory stops growing once the cache is full. The figures (requests, cache
//! entries, RSS before/full/after) are printed.
//!
//! Budget: capacity 2048 in CI; `KEYGATE_SOAK=1` uses 200 000 (or set
//! `KEYGATE_REPLAY_FLOOD_CAPACITY`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{CheckClient, Keygate, Verdict};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use keygate::pb::admin as pb;
use keygate::scheme::SchemeKind;
use tokio::task::JoinSet;

const APP_ID: &str = "flood-app";
const URL: &str = "http://flood.example.com/v1/items";
/// Concurrent Check clients during the flood.
const CLIENTS: usize = 4;

#[derive(Clone)]
struct Creds {
    app_key: String,
    secret: String,
}

fn nonce(i: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i >> 32,
        (i >> 16) & 0xffff,
        i & 0xfff,
        (i >> 12) & 0xfff,
        i
    )
}

/// A correctly signed request carrying nonce `i`.
fn signed(c: &Creds, scheme: SchemeKind, i: u64) -> CheckRequest {
    let (key, algorithm) = match scheme {
        SchemeKind::Bkapi => (APP_ID, Some("signature")),
        _ => (c.app_key.as_str(), None),
    };
    let n = nonce(i);
    let req = keygate::sign::SignRequest {
        method: "GET".into(),
        url: URL.into(),
        headers: Vec::new(),
        body: None,
    };
    let mut opts =
        keygate::sign::SignOptions::new(scheme, key, c.secret.as_bytes(), common::now_ms(), &n);
    opts.algorithm = algorithm;
    let s = keygate::sign::sign(&req, &opts).unwrap();
    let (authority, target) = common::split_url(&s.url);
    common::envoy_request("GET", authority, target, &s.headers, None)
}

async fn verdict(check: &mut CheckClient, req: CheckRequest) -> Verdict {
    common::verdict(&check.check(req).await.unwrap().into_inner())
}

fn capacity_wanted() -> usize {
    std::env::var("KEYGATE_REPLAY_FLOOD_CAPACITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var("KEYGATE_SOAK").is_ok_and(|v| v == "1") {
            200_000
        } else {
            2048
        })
}

#[derive(Default)]
struct Tally {
    allowed: AtomicU64,
    full: AtomicU64,
}

/// Sends `count` fresh aliyun requests (nonces `from..from+count`) over `CLIENTS`
/// connections; returns the nonces that were allowed.
async fn flood(kg: &Keygate, c: &Creds, from: u64, count: u64, tally: &Arc<Tally>) -> Vec<u64> {
    let mut set = JoinSet::new();
    for w in 0..CLIENTS as u64 {
        let mut check = common::check_client(kg.check_addr()).await;
        let c = c.clone();
        let tally = tally.clone();
        set.spawn(async move {
            let mut allowed = Vec::new();
            let mut i = from + w;
            while i < from + count {
                match verdict(&mut check, signed(&c, SchemeKind::Aliyun, i)).await {
                    Verdict::Allow => {
                        allowed.push(i);
                        tally.allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Deny {
                        code, grpc, http, ..
                    } => {
                        assert_eq!(code, "ReplayCacheFull", "nonce {i}");
                        assert_eq!((grpc, http), (8, 503), "ReplayCacheFull wire status");
                        tally.full.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += CLIENTS as u64;
            }
            allowed
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("flood client"));
    }
    all
}

/// The flood app (its default key), an API taking every scheme, and a grant.
async fn provision(kg: &Keygate) -> Creds {
    let mut admin = kg.admin().await;
    let r = admin
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                id: APP_ID.into(),
                name: "flood".into(),
                owner: "acme".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let key = r.key_pair.unwrap();
    let api = admin
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: "flood-api".into(),
                owner: "acme".into(),
                path: "/v1/items".into(),
                auth_schemes: (1..=6).collect(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                app_id: APP_ID.into(),
                target: Some(pb::grant::Target::ApiId(api.id)),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    Creds {
        app_key: key.app_key,
        secret: key.app_secret,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_cache_stays_bounded_and_refuses_when_full() {
    let wanted = capacity_wanted();
    // One key fills the whole cache here: its share is the whole capacity (the
    // per-key share has its own test below).
    let kg = Keygate::start_with_args(&[
        "--replay-capacity",
        &wanted.to_string(),
        "--replay-per-key-capacity",
        &wanted.to_string(),
    ]);
    let creds = provision(&kg).await;
    let capacity = common::scrape(&kg, "keygate_replay_cache_capacity") as u64;
    assert!(
        capacity >= wanted as u64,
        "capacity {capacity} < configured {wanted}"
    );
    let entries = || common::scrape(&kg, "keygate_replay_cache_entries") as u64;
    let mut check = common::check_client(kg.check_addr()).await;

    // Control: a nonce is accepted once, then refused as a replay.
    assert_eq!(
        verdict(&mut check, signed(&creds, SchemeKind::Aliyun, 0)).await,
        Verdict::Allow
    );
    let replay = verdict(&mut check, signed(&creds, SchemeKind::Aliyun, 0)).await;
    assert_eq!(replay.code(), Some("NonceReplayed"));

    // Broken signatures never take a slot, however many unique nonces they carry.
    let before = entries();
    let bad = Creds {
        secret: "not-the-secret-0123456789".into(),
        ..creds.clone()
    };
    for i in 0..500 {
        let v = verdict(
            &mut check,
            signed(&bad, SchemeKind::Aliyun, 1_000_000_000 + i),
        )
        .await;
        assert_eq!(v.code(), Some("SignatureMismatch"));
    }
    assert_eq!(entries(), before, "unverified requests took replay slots");

    // Flood until every slot is taken, watching the size after every batch.
    let rss_before = common::rss_bytes(kg.pid());
    let tally = Arc::new(Tally::default());
    let mut accepted = vec![0u64];
    let mut next = 1u64;
    let batch = (capacity / 4).max(256);
    let mut max_seen = 0;
    while entries() < capacity {
        assert!(
            next < capacity * 20,
            "the cache did not fill after {next} unique nonces: {} of {capacity}",
            entries()
        );
        accepted.extend(flood(&kg, &creds, next, batch, &tally).await);
        next += batch;
        let e = entries();
        max_seen = max_seen.max(e);
        assert!(
            e <= capacity,
            "replay cache holds {e} > capacity {capacity}"
        );
    }
    let rss_full = common::rss_bytes(kg.pid());
    assert_eq!(
        accepted.len() as u64,
        capacity,
        "every slot holds one accepted nonce"
    );

    // Full: fresh nonces are refused, by every scheme that carries one, and the cache
    // does not grow.
    let more = flood(&kg, &creds, next, capacity.max(1000), &tally).await;
    assert!(
        more.is_empty(),
        "{} fresh nonces accepted into a full cache",
        more.len()
    );
    next += capacity.max(1000);
    for scheme in [SchemeKind::Tencent, SchemeKind::Bkapi, SchemeKind::Rfc9421] {
        for k in 0..20 {
            let v = verdict(&mut check, signed(&creds, scheme, next + k)).await;
            assert_eq!(v.code(), Some("ReplayCacheFull"), "{scheme}: {v:?}");
        }
        next += 20;
    }
    // Schemes without a nonce do not touch the cache and keep working.
    for scheme in [SchemeKind::SigV4] {
        let v = verdict(&mut check, signed(&creds, scheme, next)).await;
        assert_eq!(v, Verdict::Allow, "{scheme} with a full replay cache");
    }
    assert_eq!(entries(), capacity);
    let rss_after = common::rss_bytes(kg.pid());

    // Nothing was forgotten to make room: every accepted nonce is still a replay.
    let step = (accepted.len() / 500).max(1);
    for &i in accepted.iter().step_by(step) {
        let v = verdict(&mut check, signed(&creds, SchemeKind::Aliyun, i)).await;
        assert_eq!(v.code(), Some("NonceReplayed"), "nonce {i} was forgotten");
    }

    let full_denies = tally.full.load(Ordering::Relaxed);
    let grown = rss_full.saturating_sub(rss_before);
    println!(
        "replay flood: capacity={capacity} unique_signed_nonces={} accepted={} \
         refused_full={full_denies} max_entries_seen={max_seen} \
         rss_before={rss_before} rss_full={rss_full} rss_after_more={rss_after} \
         grown_to_full={grown} (~{} bytes/entry incl. allocator noise)",
        next - 1,
        accepted.len(),
        grown / capacity
    );
    // Once full, more traffic is refused, not stored: memory stays where it was, give
    // or take allocator and connection buffers.
    assert!(
        rss_after <= rss_full + 16 * 1024 * 1024,
        "RSS grew from {rss_full} to {rss_after} while the cache was full"
    );
    let log = kg.stderr();
    assert!(!log.contains("panicked"), "{log}");
}

/// One key at its share of the replay cache is refused (`ReplayCacheFull`) while
/// another key keeps being served: no caller can fill the cache for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_its_share_does_not_refuse_another_key() {
    const SHARE: u64 = 64;
    let kg = Keygate::start_with_args(&[
        "--replay-capacity",
        "4096",
        "--replay-per-key-capacity",
        &SHARE.to_string(),
    ]);
    let flooder = provision(&kg).await;
    let other = kg
        .admin()
        .await
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: APP_ID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let other = Creds {
        app_key: other.app_key,
        secret: other.app_secret,
    };
    let tally = Arc::new(Tally::default());
    let allowed = flood(&kg, &flooder, 1, 4 * SHARE, &tally).await;
    assert_eq!(
        allowed.len() as u64,
        SHARE,
        "the flooding key got more than its share"
    );
    assert_eq!(tally.full.load(Ordering::Relaxed), 3 * SHARE);
    let mut check = common::check_client(kg.check_addr()).await;
    for i in 0..SHARE / 2 {
        let v = verdict(
            &mut check,
            signed(&other, SchemeKind::Aliyun, 10_000_000 + i),
        )
        .await;
        assert!(
            matches!(v, Verdict::Allow),
            "the other key was refused: {v:?}"
        );
    }
    assert_eq!(common::scrape(&kg, "keygate_replay_keys_full"), 1.0);
}
