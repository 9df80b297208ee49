//! `keygate-bench admin-writes`: durable admin writes per second with C concurrent
//! clients, each on its own connection, each sending `CreateGrant` as soon as the last
//! one was acknowledged. An acknowledged write is on disk (keygate flushes before it
//! answers), so this measures the write path as an operator's tools would see it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keygate::pb::admin as pb;

use crate::dataset::{Admin, admin_client};
use crate::error::{Context, Result, fail};
use crate::report::median;
use crate::spawn::{self, TempDir};

#[derive(clap::Args, Debug)]
pub struct AdminWritesArgs {
    /// Admin listener of a running keygate; without it keygate is started here.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[arg(long)]
    pub keygate_bin: Option<PathBuf>,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Where to write admin-writes.md and admin-writes.json.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
}

pub async fn run(args: AdminWritesArgs) -> Result<()> {
    let work = TempDir::new("admin")?;
    let (_server, admin, token) = match (args.admin, args.admin_token.clone()) {
        (Some(a), Some(t)) => (None, a, t),
        (Some(_), None) => return fail("--admin needs --admin-token"),
        _ => {
            let bin = spawn::keygate_bin(args.keygate_bin.as_deref())?;
            let mut raw = [0u8; 24];
            getrandom::getrandom(&mut raw).ctx("randomness")?;
            let token = hex::encode(raw);
            let s = spawn::keygate(&bin, &work.path().join("data"), &token, work.path(), &[])?;
            let a = s.addrs.admin.ctx("no admin address in the ready file")?;
            (Some(s), a, token)
        }
    };
    let mut c = admin_client(admin, &token).await?;
    // Unique per run and process, so runs against one shared store (several replicas,
    // one bench per replica) do not collide.
    let run_id = format!("{}-{}", keygate::clock::system_now_ms(), std::process::id());
    // An app has one grant per API: each writer creates an app, then grants it these
    // APIs one by one, and starts again with a new app.
    let mut apis = Vec::new();
    for i in 0..POOL {
        let api = c
            .create_api(pb::CreateApiRequest {
                api: Some(pb::Api {
                    name: format!("writes-{run_id}-{i}"),
                    owner: "keygate-bench".into(),
                    path: format!("/writes-{run_id}-{i}/{{id}}"),
                    ..Default::default()
                }),
            })
            .await
            .ctx("CreateApi")?
            .into_inner();
        apis.push(api.id);
    }
    let apis = std::sync::Arc::new(apis);
    let mut rates = Vec::new();
    let mut lines = Vec::new();
    for rep in 1..=args.repeat {
        let mut clients = Vec::new();
        for _ in 0..args.clients {
            clients.push(admin_client(admin, &token).await?);
        }
        let started = Instant::now();
        let from = started + Duration::from_secs_f64(args.warmup);
        let end = from + Duration::from_secs_f64(args.duration);
        let mut tasks = tokio::task::JoinSet::new();
        for (n, client) in clients.into_iter().enumerate() {
            let name = format!("writes-{run_id}-r{rep}-w{n}");
            tasks.spawn(writer(client, name, apis.clone(), from, end));
        }
        let mut hist =
            Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).ctx("histogram")?;
        let mut ok = 0u64;
        while let Some(r) = tasks.join_next().await {
            let (n, h) = r.ctx("writer task")??;
            ok += n;
            hist.add(&h).ctx("merge")?;
        }
        let rate = ok as f64 / args.duration;
        let q = |p: f64| hist.value_at_quantile(p) as f64 / 1_000.0;
        let line = format!(
            "| {rep} | {} | {ok} | {rate:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            args.clients,
            q(0.5),
            q(0.9),
            q(0.99),
            hist.max() as f64 / 1_000.0
        );
        println!(
            "repeat {rep}: {rate:.0} durable writes/s with {} clients (p50 {:.0} µs, p99 {:.0} µs)",
            args.clients,
            q(0.5),
            q(0.99)
        );
        rates.push(rate);
        lines.push(line);
    }
    let m = median(rates.clone()).unwrap_or(0.0);
    println!(
        "median: {m:.0} durable writes/s with {} clients",
        args.clients
    );
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir).ctx("create the report dir")?;
        let md = format!(
            "# keygate-bench: durable admin writes (CreateApp, then CreateGrant on each of 20 APIs)\n\n{} clients, {} s measured after {} s warm-up; median {m:.0} writes/s\n\n| repeat | clients | writes | writes/s | p50 µs | p90 µs | p99 µs | max µs |\n|---|---|---|---|---|---|---|---|\n{}\n",
            args.clients,
            args.duration,
            args.warmup,
            lines.join("\n")
        );
        std::fs::write(dir.join("admin-writes.md"), md).ctx("write admin-writes.md")?;
        let json = serde_json::json!({"clients": args.clients, "writes_per_s": rates, "median": m});
        std::fs::write(dir.join("admin-writes.json"), json.to_string())
            .ctx("write admin-writes.json")?;
    }
    Ok(())
}

/// Grants made per app before the writer moves to a new one.
const POOL: usize = 20;

/// Writes until `end`: CreateApp, then a CreateGrant per API of the pool, again and
/// again. Every write counts once it is acknowledged within the measured window.
async fn writer(
    mut c: Admin,
    name: String,
    apis: std::sync::Arc<Vec<String>>,
    from: Instant,
    end: Instant,
) -> Result<(u64, Histogram<u64>)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).ctx("histogram")?;
    let mut ok = 0;
    let mut count = |sent: Instant, hist: &mut Histogram<u64>| {
        let done = Instant::now();
        if sent >= from && done <= end {
            ok += 1;
            let _ = hist.record(
                u64::try_from((done - sent).as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1_000),
            );
        }
    };
    for round in 0.. {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let app = c
            .create_app(pb::CreateAppRequest {
                app: Some(pb::App {
                    name: format!("{name}-{round}"),
                    owner: "keygate-bench".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .ctx("CreateApp")?
            .into_inner()
            .app
            .ctx("no app")?;
        count(sent, &mut hist);
        for api in apis.iter() {
            let sent = Instant::now();
            if sent >= end {
                break;
            }
            c.create_grant(pb::CreateGrantRequest {
                grant: Some(pb::Grant {
                    app_id: app.id.clone(),
                    target: Some(pb::grant::Target::ApiId(api.clone())),
                    ..Default::default()
                }),
            })
            .await
            .ctx("CreateGrant")?;
            count(sent, &mut hist);
        }
    }
    Ok((ok, hist))
}
