//! The canonicalisers alone: the strings-to-sign the verifier rebuilds for every
//! request, without the HMAC, the lookups or the rest of the pipeline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::scheme::{SchemeKind, aliyun, sigv4};
use support::{T0_MS, signed_view};

fn canonical(c: &mut Criterion) {
    let mut g = c.benchmark_group("canonical");

    let view = signed_view(SchemeKind::Aliyun, 1, T0_MS, "bench-nonce");
    let list = view
        .headers
        .get("x-ca-signature-headers")
        .expect("signed header list")
        .to_owned();
    g.bench_function("aliyun/string_to_sign", |b| {
        b.iter(|| {
            aliyun::string_to_sign(
                black_box(&view),
                Some(black_box(&list)),
                aliyun::Variant::default(),
            )
        })
    });

    let view = signed_view(SchemeKind::SigV4, 1, T0_MS, "bench-nonce");
    let signed: Vec<String> = ["host", "x-amz-content-sha256", "x-amz-date"]
        .map(String::from)
        .to_vec();
    let payload = view
        .headers
        .get("x-amz-content-sha256")
        .unwrap_or("UNSIGNED-PAYLOAD")
        .to_owned();
    g.bench_function("sigv4/canonical_request", |b| {
        b.iter(|| {
            let v = black_box(&view);
            let uri = sigv4::canonical_uri(&v.path, sigv4::UriMode::DoubleEncoded);
            let query = sigv4::canonical_query(v.query.as_deref(), false, false);
            sigv4::canonical_request(v, &uri, &query, &signed, &payload)
        })
    });
    g.finish();
}

criterion_group!(benches, canonical);
criterion_main!(benches);
