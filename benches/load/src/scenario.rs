//! `keygate-bench load`: sets up the target (a keygate it starts, or one already
//! running), the data set and the no-op baseline, runs the plan (repeats of keygate
//! then no-op, back to back; then an optional sweep of fixed rates), prints each run
//! and writes the report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keygate::scheme::SchemeKind;

use crate::dataset::{self, Caller, Spec};
use crate::error::{Context, Result, fail};
use crate::load::{self, Front, Mode, Plan};
use crate::report::{self, Row};
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
    /// Front doors to drive (repeat the flag for both).
    #[arg(long, value_enum, default_values_t = [Front::Grpc])]
    pub front: Vec<Front>,
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
    /// The server's process, when the bench started it (for its CPU time).
    pid: Option<u32>,
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
    let work = TempDir::new("load")?;
    let mut setup = vec![format!(
        "scheme {}, fronts {:?}, {} workers over {} connections, warm-up {} s, {} s measured, {} repeat(s)",
        args.scheme,
        args.front,
        args.concurrency,
        args.connections,
        args.warmup,
        args.duration,
        args.repeat
    )];
    // --- keygate and the data set ---
    let (_keygate, keygate, callers): (Option<Server>, Targets, Vec<Caller>) = match args.target {
        Some(check) => {
            let (Some(admin), Some(token)) = (args.admin, args.admin_token.as_deref()) else {
                return fail("--target needs --admin and --admin-token to create the data set");
            };
            eprintln!("creating the data set through the admin API at {admin}");
            let client = dataset::admin_client(admin, token).await?;
            let callers = dataset::via_admin(&client, &args.spec).await?;
            setup.push(format!("target: running keygate at {check}"));
            (
                None,
                Targets {
                    check,
                    http: args.http_target,
                    pid: None,
                },
                callers,
            )
        }
        None => {
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
            let nonces = args.repeat.max(1)
                * args.front.len().max(1)
                * args.max_requests
                * (1 + args.sweep.len());
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
                pid: Some(server.pid()),
            };
            (Some(server), t, callers)
        }
    };
    setup.push(format!(
        "data set: {} callers; spec {} apps × {} keys, {} APIs, {} grants/app",
        callers.len(),
        args.spec.apps,
        args.spec.keys_per_app,
        args.spec.apis,
        args.spec.grants_per_app
    ));
    if args.front.contains(&Front::Http) && keygate.http.is_none() {
        return fail("--front http needs --http-target for a running keygate");
    }
    // --- the no-op baseline ---
    let noop = if args.baseline {
        let s = spawn::noop(work.path())?;
        eprintln!("no-op baseline serving (check {})", s.addrs.check);
        Some(s)
    } else {
        None
    };
    let noop_targets = noop.as_ref().map(|s| Targets {
        check: s.addrs.check,
        http: s.addrs.http,
        pid: Some(s.pid()),
    });

    let plan = |front, mode| Plan {
        front,
        mode,
        connections: args.connections,
        concurrency: args.concurrency,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let mut rows: Vec<Row> = Vec::new();
    let mode = args.rate.map_or(Mode::Closed, Mode::Rate);
    for rep in 1..=args.repeat {
        for &front in &args.front {
            let mut servers = vec![("keygate", &keygate)];
            if let Some(n) = &noop_targets {
                servers.push(("no-op", n));
            }
            for (name, t) in servers {
                let row = one(&args, &callers, name, t, plan(front, mode), rep).await?;
                rows.push(row);
            }
        }
    }
    // --- latency against load: fractions of keygate's closed-loop maximum ---
    if !args.sweep.is_empty() {
        for &front in &args.front {
            let max = report::median(
                report::closed(&rows, "keygate", front)
                    .into_iter()
                    .map(|x| x.1)
                    .collect(),
            )
            .ctx("--sweep needs closed-loop runs (leave out --rate)")?;
            for pct in &args.sweep {
                let rate = max * pct / 100.0;
                let mut servers = vec![("keygate", &keygate)];
                if let Some(n) = &noop_targets {
                    servers.push(("no-op", n));
                }
                for (name, t) in servers {
                    let row =
                        one(&args, &callers, name, t, plan(front, Mode::Rate(rate)), 1).await?;
                    rows.push(row);
                }
            }
        }
    }

    for front in [Front::Grpc, Front::Http] {
        let rs = report::ratios(&rows, front);
        if let Some(m) = report::median(rs.clone()) {
            println!(
                "{front}: keygate ÷ no-op throughput = {m:.3} (median of {:?})",
                rs.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>()
            );
        }
    }
    if let Some(dir) = &args.report_dir {
        report::write(
            dir,
            "keygate-bench: Check latency and throughput",
            &setup,
            &rows,
        )?;
        println!("report written to {}", dir.join("report.md").display());
    }
    if let Some(n) = noop {
        n.stop();
    }
    Ok(())
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
    };
    let pool = sign_pool(callers, args.scheme, plan.pool_size(args.max_requests))?;
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
    let cpu_before = t.pid.and_then(spawn::cpu_time);
    let outcome = load::run(addr, plan, pool, &label).await?;
    let cpu = match (cpu_before, t.pid.and_then(spawn::cpu_time)) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
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
    Ok(row)
}
