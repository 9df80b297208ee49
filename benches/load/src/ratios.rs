//! `keygate-bench load --ratios`: in one go, the rows of issue 14's target table that
//! the load generator can measure, each keygate against the no-op side by side.
//!
//! Owns: which runs `--ratios` asks for (the fronts, the half-load rate) and the one
//! markdown table made from their rows. The runs themselves go through `load`'s plan
//! (`scenario`), like any other.

use std::fmt::Write as _;

use crate::load::Front;
use crate::report::{self, Row};

/// Closed-loop fronts: gRPC direct, through Envoy, Envoy's HTTP door.
pub const FRONTS: [Front; 3] = [Front::Grpc, Front::Envoy, Front::Http];
/// The latency row: gRPC (the table says so) at this percentage of keygate's median
/// closed-loop maximum.
pub const LATENCY_FRONT: Front = Front::Grpc;
pub const LATENCY_PCT: f64 = 50.0;

/// `measure | keygate | no-op | ratio per repeat | median`.
pub fn table(rows: &[Row]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Issue 14 ratios (keygate ÷ no-op, run side by side)\n"
    );
    let _ = writeln!(
        md,
        "| measure | keygate | no-op | ratio per repeat | median |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (front, measure) in [
        (Front::Grpc, "gRPC Check throughput, req/s"),
        (
            Front::Envoy,
            "through Envoy (one worker, gRPC ext_authz, no-op upstream), req/s",
        ),
        (Front::Http, "Envoy HTTP door (`GET /envoy/<path>`), req/s"),
    ] {
        let k = report::closed(rows, "keygate", front);
        let n = report::closed(rows, "no-op", front);
        line(&mut md, measure, &k, &n, &report::ratios(rows, front));
    }
    let rate = |server: &str| -> Vec<(usize, f64)> {
        rows.iter()
            .filter(|r| r.server == server && r.front == LATENCY_FRONT && r.mode == "rate")
            .map(|r| (r.repeat, r.p99_us))
            .collect()
    };
    let (k, n) = (rate("keygate"), rate("no-op"));
    let offered = rows
        .iter()
        .find(|r| r.front == LATENCY_FRONT && r.mode == "rate")
        .and_then(|r| r.offered);
    let ratios: Vec<f64> = k
        .iter()
        .filter_map(|(rep, kv)| {
            n.iter()
                .find(|(r, _)| r == rep)
                .filter(|(_, nv)| *nv > 0.0)
                .map(|(_, nv)| kv / nv)
        })
        .collect();
    let measure = format!(
        "gRPC Check p99 at {LATENCY_PCT:.0} % of keygate's gRPC maximum ({}), µs",
        offered.map_or_else(|| "not run".into(), |o| format!("{o:.0}/s"))
    );
    line(&mut md, &measure, &k, &n, &ratios);
    md
}

fn line(md: &mut String, measure: &str, k: &[(usize, f64)], n: &[(usize, f64)], r: &[f64]) {
    let _ = writeln!(
        md,
        "| {measure} | {} | {} | {} | {} |",
        values(k),
        values(n),
        if r.is_empty() {
            "-".into()
        } else {
            r.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        report::median(r.to_vec()).map_or_else(|| "-".into(), |m| format!("**{m:.3}**"))
    );
}

/// `a / b / c (median m)`, or `-` when nothing ran.
fn values(v: &[(usize, f64)]) -> String {
    let list = v
        .iter()
        .map(|(_, x)| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" / ");
    match (v.len(), report::median(v.iter().map(|x| x.1).collect())) {
        (0, _) | (_, None) => "-".into(),
        (1, _) => list,
        (_, Some(m)) => format!("{list} (median {m:.0})"),
    }
}
