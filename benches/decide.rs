//! `decide` per request: one bench per signature scheme, and the same Alibaba request
//! with 10, 10k and 1M apps, keys and grants loaded, to show how the cost grows with
//! the data set: with callers spread over every app (each lookup a likely cache miss),
//! and with ten busy callers among them.
//!
//! What is measured: `keygate::decide::decide` on a `RequestView`, with the real index
//! `Snapshot` and the real replay cache. Not measured: signing (done in criterion's
//! per-batch set-up), the front door's translation, gRPC. Each request is signed fresh
//! for an app picked at random over the whole data set, with a unique nonce; the bench
//! clock moves one second per request, so the replay cache sits in its steady state (it
//! records every nonce and sweeps expired ones; about 1,800 live entries for the
//! default 15-minute window) and never fills or refuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::cell::{OnceCell, RefCell};
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use keygate::decide::{DecideConfig, Decision, decide};
use keygate::index::Snapshot;
use keygate::replay::ReplayGuard;
use keygate::request::RequestView;
use keygate::scheme::SchemeKind;
use support::{Picker, T0_MS, signed_view, snapshot};

/// What `decide` reads.
struct World {
    snap: Snapshot,
    replay: ReplayGuard,
    cfg: DecideConfig,
}

/// Where the next request comes from.
struct Requests {
    n: usize,
    picker: Picker,
    now_ms: i64,
    nonce: u64,
}

impl Requests {
    /// Another app, a unique nonce, signed at the time the decision runs.
    fn next(&mut self, scheme: SchemeKind) -> (RequestView, i64) {
        self.now_ms += 1_000;
        self.nonce += 1;
        let nonce = format!("bench-{:016x}", self.nonce);
        let i = self.picker.next(self.n);
        (signed_view(scheme, i, self.now_ms, &nonce), self.now_ms)
    }
}

fn world(n: usize) -> (World, Requests) {
    let world = World {
        snap: snapshot(n),
        // The service's default capacity.
        replay: ReplayGuard::new(1_000_000, 1_000_000),
        cfg: DecideConfig::default(),
    };
    let requests = Requests {
        n,
        picker: Picker::new(n as u64),
        now_ms: T0_MS,
        nonce: 0,
    };
    (world, requests)
}

/// Benches `scheme` on the world of `n` apps, with requests from `callers` of them
/// picked at random, the world built only if the bench is selected
/// (criterion calls the closure only then), so a filtered run skips the 1M build.
fn run(
    c: &mut Criterion,
    group: &str,
    id: BenchmarkId,
    scheme: SchemeKind,
    n: usize,
    callers: usize,
) {
    let state: OnceCell<(World, RefCell<Requests>)> = OnceCell::new();
    let mut g = c.benchmark_group(group);
    g.measurement_time(Duration::from_secs(4));
    g.bench_function(id, |b| {
        let (w, r) = state.get_or_init(|| {
            let (w, mut r) = world(n);
            // Requests come from the first `callers` apps only.
            r.n = callers.min(n);
            // A bench of denies would measure the wrong path: check the set-up first.
            let (view, now) = r.next(scheme);
            if let Decision::Deny(d) = decide(&view, &w.snap, &w.replay, now, &w.cfg) {
                panic!("{scheme} bench request denied: {:?} {}", d.code, d.message);
            }
            (w, RefCell::new(r))
        });
        b.iter_batched(
            || r.borrow_mut().next(scheme),
            |(view, now)| {
                let d = decide(black_box(&view), &w.snap, &w.replay, now, &w.cfg);
                if let Decision::Deny(d) = &d {
                    panic!("denied during the bench: {:?} {}", d.code, d.message);
                }
                // Returned, so dropping them is not timed.
                (view, d)
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn schemes(c: &mut Criterion) {
    for scheme in SchemeKind::ALL {
        let id = BenchmarkId::from_parameter(scheme);
        run(c, "decide/scheme", id, scheme, 10, 10);
    }
}

fn scale(c: &mut Criterion) {
    for n in [10, 10_000, 1_000_000] {
        let id = BenchmarkId::new("aliyun", n);
        run(c, "decide/keys", id, SchemeKind::Aliyun, n, n);
    }
    // The same ten callers whatever the size: what a few busy apps among many see.
    for n in [10, 1_000_000] {
        let id = BenchmarkId::new("aliyun-10-callers", n);
        run(c, "decide/keys", id, SchemeKind::Aliyun, n, 10);
    }
}

criterion_group!(benches, schemes, scale);
criterion_main!(benches);
