//! The report: one row per run, the keygate ÷ no-op ratios of runs made side by side,
//! a markdown file, the same data as JSON, and an SVG chart of latency against load.
//!
//! Owns: presentation only. Figures come from `load::Outcome`s; medians are taken
//! here, over repeats, because single runs on a shared machine are noisy.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Context, Result};
use crate::load::{Front, Outcome};

/// One run, as reported.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// `keygate` or `no-op`.
    pub server: String,
    pub front: Front,
    /// `closed` or `rate`.
    pub mode: String,
    pub repeat: usize,
    pub concurrency: usize,
    pub connections: usize,
    /// Rate runs: the requests per second asked for.
    pub offered: Option<f64>,
    pub throughput: f64,
    pub answered: u64,
    pub allowed: u64,
    pub denied: u64,
    pub errors: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Rate runs: 99th percentile of the send's lag behind its due time.
    pub lag_p99_us: Option<f64>,
    /// The server's CPU time (user + system) per answered request over the whole run,
    /// when the bench started the server (10 ms clock-tick resolution).
    pub server_cpu_us: Option<f64>,
    /// Through Envoy: Envoy's CPU time per answered request, measured the same way.
    pub proxy_cpu_us: Option<f64>,
    pub first_problem: Option<String>,
}

/// CPU time used by a process during a run (user + system), when it was measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// The server under test (keygate or the no-op).
    pub server: Option<std::time::Duration>,
    /// The Envoy in front of it, for the through-Envoy front.
    pub proxy: Option<std::time::Duration>,
}

impl Row {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: &str,
        front: Front,
        offered: Option<f64>,
        repeat: usize,
        concurrency: usize,
        connections: usize,
        o: &Outcome,
        cpu: Cpu,
    ) -> Self {
        let q = |p: f64| o.latency.value_at_quantile(p) as f64 / 1_000.0;
        let per_request =
            |c: std::time::Duration| c.as_secs_f64() * 1e6 / o.answered_total.max(1) as f64;
        Self {
            server: server.into(),
            front,
            mode: if offered.is_some() { "rate" } else { "closed" }.into(),
            repeat,
            concurrency,
            connections,
            offered,
            throughput: o.throughput(),
            answered: o.answered,
            allowed: o.allowed,
            denied: o.denied,
            errors: o.errors,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: o.latency.max() as f64 / 1_000.0,
            lag_p99_us: offered.map(|_| o.lag.value_at_quantile(0.99) as f64 / 1_000.0),
            server_cpu_us: cpu.server.map(per_request),
            proxy_cpu_us: cpu.proxy.map(per_request),
            first_problem: o.first_problem.clone(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{:>8} {:>5} {:>6} {:>9} {:>10.0} req/s  p50 {:>7.0} µs  p90 {:>7.0}  p99 {:>7.0}  p99.9 {:>7.0}  allowed {}/{}{}{}",
            self.server,
            self.front,
            self.mode,
            self.offered.map_or_else(
                || format!("c={}", self.concurrency),
                |r| format!("{r:.0}/s")
            ),
            self.throughput,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.allowed,
            self.answered,
            if self.denied + self.errors > 0 {
                format!("  DENIED {}  ERRORS {}", self.denied, self.errors)
            } else {
                String::new()
            },
            self.lag_p99_us
                .map_or_else(String::new, |l| format!("  lag p99 {l:.0} µs")),
        ) + &self
            .server_cpu_us
            .map_or_else(String::new, |c| format!("  server CPU {c:.1} µs/req"))
            + &self
                .proxy_cpu_us
                .map_or_else(String::new, |c| format!("  Envoy CPU {c:.1} µs/req"))
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Closed-loop throughput of `server` on `front`, one value per repeat.
pub fn closed(rows: &[Row], server: &str, front: Front) -> Vec<(usize, f64)> {
    rows.iter()
        .filter(|r| r.server == server && r.front == front && r.mode == "closed")
        .map(|r| (r.repeat, r.throughput))
        .collect()
}

/// keygate ÷ no-op per repeat (runs made back to back), for one front.
pub fn ratios(rows: &[Row], front: Front) -> Vec<f64> {
    let noop = closed(rows, "no-op", front);
    closed(rows, "keygate", front)
        .into_iter()
        .filter_map(|(rep, k)| {
            noop.iter()
                .find(|(r, _)| *r == rep)
                .filter(|(_, n)| *n > 0.0)
                .map(|(_, n)| k / n)
        })
        .collect()
}

/// Writes `report.md`, `report.json` and `latency.svg` into `dir`; `extra` (markdown)
/// goes after the summary.
pub fn write(
    dir: &Path,
    title: &str,
    setup: &[String],
    rows: &[Row],
    extra: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    for s in setup {
        let _ = writeln!(md, "- {s}");
    }
    let _ = writeln!(md, "\n## Summary (medians over repeats)\n");
    let _ = writeln!(
        md,
        "| front | keygate req/s | no-op req/s | keygate ÷ no-op (median of per-repeat ratios) | ratios |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for front in Front::ALL {
        let k = median(
            closed(rows, "keygate", front)
                .into_iter()
                .map(|x| x.1)
                .collect(),
        );
        let Some(k) = k else { continue };
        let n = median(
            closed(rows, "no-op", front)
                .into_iter()
                .map(|x| x.1)
                .collect(),
        );
        let rs = ratios(rows, front);
        let _ = writeln!(
            md,
            "| {front} | {k:.0} | {} | {} | {} |",
            n.map_or("-".into(), |n| format!("{n:.0}")),
            median(rs.clone()).map_or("-".into(), |r| format!("{r:.3}")),
            rs.iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(extra) = extra {
        let _ = writeln!(md, "\n{extra}");
    }
    let _ = writeln!(md, "\n## Runs\n");
    let _ = writeln!(
        md,
        "| server | front | mode | load | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | lag p99 µs | server CPU µs/req | Envoy CPU µs/req | allowed | denied | errors |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.server,
            r.front,
            r.mode,
            r.offered.map_or_else(
                || format!("c={} conns={}", r.concurrency, r.connections),
                |o| format!("{o:.0}/s c={}", r.concurrency)
            ),
            r.throughput,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.lag_p99_us.map_or("-".into(), |l| format!("{l:.0}")),
            r.server_cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
            r.proxy_cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
            r.allowed,
            r.denied,
            r.errors
        );
    }
    let problems: Vec<&Row> = rows.iter().filter(|r| r.first_problem.is_some()).collect();
    if !problems.is_empty() {
        let _ = writeln!(md, "\n## First deny or error per run\n");
        for r in problems {
            let _ = writeln!(
                md,
                "- {} {} {}: {}",
                r.server,
                r.front,
                r.mode,
                r.first_problem.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(md, "\n![latency vs load](latency.svg)");
    std::fs::write(dir.join("report.md"), md).ctx("write report.md")?;
    let json = serde_json::to_string_pretty(
        &serde_json::json!({ "title": title, "setup": setup, "runs": rows }),
    )
    .ctx("encode report.json")?;
    std::fs::write(dir.join("report.json"), json).ctx("write report.json")?;
    std::fs::write(dir.join("latency.svg"), svg(title, rows)).ctx("write latency.svg")?;
    Ok(())
}

/// Latency (p50 dashed, p99 solid) against achieved throughput, one colour per
/// server and front; every run is a point, rate runs are joined in order of load.
fn svg(title: &str, rows: &[Row]) -> String {
    const W: f64 = 760.0;
    const H: f64 = 440.0;
    const L: f64 = 70.0; // left margin
    const B: f64 = 50.0; // bottom margin
    const T: f64 = 40.0; // top margin
    const R: f64 = 190.0; // right margin (legend)
    let max_x = rows.iter().map(|r| r.throughput).fold(1.0, f64::max) * 1.05;
    let max_y = rows.iter().map(|r| r.p99_us).fold(1.0, f64::max) * 1.1;
    let px = |x: f64| L + x / max_x * (W - L - R);
    let py = |y: f64| H - B - y / max_y * (H - B - T);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{L}" y="22" font-size="14">{}</text>"#,
        escape(title)
    );
    // Axes and grid.
    for i in 0..=5 {
        let fx = max_x * f64::from(i) / 5.0;
        let fy = max_y * f64::from(i) / 5.0;
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{T}" x2="{x}" y2="{b}" stroke="#eee"/><text x="{x}" y="{ty}" text-anchor="middle">{fx:.0}</text>"##,
            x = px(fx),
            b = H - B,
            ty = H - B + 16.0
        );
        let _ = write!(
            s,
            r##"<line x1="{L}" y1="{y}" x2="{r}" y2="{y}" stroke="#eee"/><text x="{tx}" y="{y}" text-anchor="end" dominant-baseline="middle">{fy:.0}</text>"##,
            y = py(fy),
            r = W - R,
            tx = L - 6.0
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{L}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{L}" y1="{T}" x2="{L}" y2="{b}" stroke="#333"/>"##,
        b = H - B,
        r = W - R
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">throughput (requests/s)</text>"#,
        (L + W - R) / 2.0,
        H - 12.0
    );
    let _ = write!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency (µs)</text>"#,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    ];
    let mut legend_y = T + 10.0;
    let mut c = 0;
    for front in Front::ALL {
        for server in ["keygate", "no-op"] {
            let mut pts: Vec<&Row> = rows
                .iter()
                .filter(|r| r.server == server && r.front == front)
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
            let colour = colours[c % colours.len()];
            c += 1;
            for (q, dash) in [(99, ""), (50, r#" stroke-dasharray="4 3""#)] {
                let y = |r: &Row| if q == 99 { r.p99_us } else { r.p50_us };
                let rate: Vec<String> = pts
                    .iter()
                    .filter(|r| r.mode == "rate")
                    .map(|r| format!("{:.1},{:.1}", px(r.throughput), py(y(r))))
                    .collect();
                if rate.len() > 1 {
                    let _ = write!(
                        s,
                        r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{}"/>"#,
                        rate.join(" ")
                    );
                }
                for r in &pts {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}" stroke="{colour}"/>"#,
                        px(r.throughput),
                        py(y(r)),
                        if q == 99 { colour } else { "white" }
                    );
                }
            }
            let _ = write!(
                s,
                r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/><text x="{tx}" y="{ty}">{server} {front}</text>"#,
                x = W - R + 16.0,
                y = legend_y,
                tx = W - R + 34.0,
                ty = legend_y + 10.0
            );
            legend_y += 20.0;
        }
    }
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}">● p99 (solid)</text><text x="{x}" y="{y2}">○ p50 (dashed)</text>"#,
        x = W - R + 16.0,
        y = legend_y + 14.0,
        y2 = legend_y + 32.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
