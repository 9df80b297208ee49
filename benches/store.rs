//! A durable store write: `Store::create_grant` (one sled transaction with its audit
//! record, flushed to disk before it returns), alone and with 16 concurrent writers.
//! The data dir lives in a temp dir (on this machine's disk, like a real data dir).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// For the allocator the `keygate` binary uses; the rest of it is not needed here.
#[allow(unused_imports)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keygate::clock::SystemClock;
use keygate::model::{Api, Grant, GrantTarget};
use keygate::store::{NewApp, Store};

fn grant(app: &str, api: &str) -> Grant {
    Grant {
        id: String::new(),
        app_id: app.into(),
        target: GrantTarget::Api(api.into()),
        stages: Vec::new(),
        expires_ms: None,
        created_by: String::new(),
        create_ms: 0,
    }
}

fn writes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &[7u8; 32], Arc::new(SystemClock)).unwrap());
    let (app, api) = rt.block_on(async {
        let ((app, _), _) = store
            .create_app(
                "bench",
                NewApp {
                    name: "bench".into(),
                    owner: "bench".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let (api, _) = store
            .create_api(
                "bench",
                Api {
                    name: "bench".into(),
                    owner: "bench".into(),
                    path: "/v1/items/{id}".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        (app.id, api.id)
    });

    let mut g = c.benchmark_group("store/create_grant");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    g.bench_function("1 writer", |b| {
        b.iter(|| {
            rt.block_on(store.create_grant("bench", grant(&app, &api)))
                .unwrap()
        })
    });
    const WRITERS: u64 = 16;
    g.throughput(Throughput::Elements(WRITERS));
    g.bench_function("16 writers", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            rt.block_on(async {
                let tasks: Vec<_> = (0..WRITERS)
                    .map(|_| {
                        let (store, app, api) = (store.clone(), app.clone(), api.clone());
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                store
                                    .create_grant("bench", grant(&app, &api))
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            started.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, writes);
criterion_main!(benches);
