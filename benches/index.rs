//! Index lookups with 10, 10k and 1M apps, keys and grants loaded: the check path's
//! four reads (key by AppKey, its app, the API by host + method + path, the app's
//! grants on that API) for an app picked at random over the whole data set, so a large
//! index is not served from a few hot cache lines. The cost must stay flat.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use support::{HOST, Picker, app_key, path_for, snapshot};

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("index/lookup");
    g.measurement_time(Duration::from_secs(3));
    for n in [10, 10_000, 1_000_000] {
        // Built only when this bench is selected (criterion calls the closure then).
        let snap = std::cell::OnceCell::new();
        let mut picker = Picker::new(n as u64);
        let mut item = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let snap = snap.get_or_init(|| snapshot(n));
            b.iter_batched(
                || {
                    item += 1;
                    let i = picker.next(n);
                    (app_key(i), path_for(i, item % 1000))
                },
                |(key, path)| {
                    let k = snap.key(black_box(&key)).expect("key");
                    let app = snap.app(&k.app_id).expect("app");
                    let api = snap.route(HOST, "GET", black_box(&path)).expect("api");
                    let grants = snap.grants(&app.id, &api.id);
                    assert_eq!(grants.len(), 1, "one grant per app");
                    (key, path)
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
