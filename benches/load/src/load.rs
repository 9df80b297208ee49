//! Driving load: a fixed concurrency (closed loop: each worker sends its next request
//! when the previous one answered) or a fixed rate (open loop: request k is due at
//! start + k / rate, whoever is free sends it), over C connections, to the gRPC Check,
//! the Envoy HTTP front door, or a real Envoy in front of an upstream.
//!
//! Owns: the send loops, the latency and schedule-lag histograms (HDR, nanoseconds),
//! allow/deny/error counts and the progress line. Latency is measured from the moment
//! a request is handed to the client to the moment its answer is read. In rate mode
//! the lag of each send behind its due time is recorded too: tokio's timer ticks in
//! milliseconds, so a lag under a couple of ms is the generator's, while a growing lag
//! means the workers could not keep up (the run is then over capacity and reported so).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Context, Result, fail};
use crate::requests::{Signed, to_check, to_envoy, to_http};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Front {
    /// Envoy ext_authz gRPC `Authorization/Check`.
    Grpc,
    /// Envoy ext_authz HTTP mode: `GET /envoy/<path>` on the HTTP listener.
    Http,
    /// Through a real Envoy (one worker) asking the server over gRPC ext_authz, in
    /// front of a no-op upstream: `GET <path>` to Envoy's listener.
    Envoy,
}

impl Front {
    /// Every front, in the order reports list them.
    pub const ALL: [Front; 3] = [Front::Grpc, Front::Envoy, Front::Http];
}

impl std::fmt::Display for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Front::Grpc => "grpc",
            Front::Http => "http",
            Front::Envoy => "envoy",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// This many requests in flight at all times.
    Closed,
    /// This many requests per second, due on a fixed schedule.
    Rate(f64),
}

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub front: Front,
    pub mode: Mode,
    /// gRPC: HTTP/2 connections the workers share. HTTP/1.1: one per worker.
    pub connections: usize,
    /// Workers, i.e. the most requests in flight.
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl Plan {
    /// Requests to sign so the run cannot run dry: the rate's worth, or a generous
    /// ceiling for a closed loop.
    pub fn pool_size(&self, closed_ceiling: usize) -> usize {
        let secs = (self.warmup + self.duration).as_secs_f64();
        match self.mode {
            Mode::Rate(r) => (r * secs * 1.05) as usize + self.concurrency + 16,
            Mode::Closed => closed_ceiling,
        }
    }
}

/// What one run measured.
pub struct Outcome {
    /// Requests answered inside the measured window.
    pub answered: u64,
    /// Requests answered in the whole run, warm-up included.
    pub answered_total: u64,
    pub allowed: u64,
    pub denied: u64,
    pub errors: u64,
    pub first_problem: Option<String>,
    pub window: Duration,
    pub latency: Histogram<u64>,
    pub lag: Histogram<u64>,
    /// True when the signed pool ran out before the window ended.
    pub ran_dry: bool,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.answered as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

fn histogram() -> Result<Histogram<u64>> {
    // 1 µs .. 60 s at three significant digits.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).ctx("histogram")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Shared by the workers of one run.
struct Run {
    plan: Plan,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// Rate mode: the next schedule slot.
    next_slot: AtomicU64,
    answered: AtomicU64,
    answered_total: AtomicU64,
    ran_dry: AtomicU64,
    first_problem: Mutex<Option<String>>,
}

/// Per-worker results, merged at the end.
struct Tally {
    allowed: u64,
    denied: u64,
    errors: u64,
    latency: Histogram<u64>,
    lag: Histogram<u64>,
}

enum Answer {
    Allowed,
    Denied(String),
    Error(String),
}

/// One worker's connection to the front door.
enum Client {
    Grpc(AuthorizationClient<Channel>),
    /// `proxied`: the answer comes from Envoy (the upstream's 200, or a deny or error
    /// of Envoy's), not from the authorizer's HTTP door.
    Http {
        send: hyper::client::conn::http1::SendRequest<axum::body::Body>,
        proxied: bool,
    },
}

// Built before the run and moved once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Item {
    Grpc(CheckRequest),
    Http(http::Request<axum::body::Body>),
}

impl Client {
    async fn send(&mut self, item: Item) -> Answer {
        match (self, item) {
            (Client::Grpc(c), Item::Grpc(req)) => match c.check(req).await {
                Ok(resp) => {
                    let status = resp.into_inner().status.unwrap_or_default();
                    if status.code == 0 {
                        Answer::Allowed
                    } else {
                        Answer::Denied(format!("gRPC deny {}: {}", status.code, status.message))
                    }
                }
                Err(e) => Answer::Error(format!("gRPC error: {e}")),
            },
            (Client::Http { send, proxied }, Item::Http(req)) => match send.send_request(req).await
            {
                Ok(resp) => {
                    let code = resp.status();
                    let reason = resp
                        .headers()
                        .get("x-keygate-error")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    // Read the body so the connection is ready for the next request.
                    let body =
                        axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 20)
                            .await;
                    match body {
                        Err(e) => Answer::Error(format!("HTTP body: {e}")),
                        Ok(_) if code == http::StatusCode::OK => Answer::Allowed,
                        // Through Envoy only keygate's own deny (its header passed on)
                        // counts as a deny; any other answer is Envoy's or the
                        // upstream's: an error of the set-up.
                        Ok(b) if *proxied && reason.is_empty() => Answer::Error(format!(
                            "HTTP {code} from Envoy, not a keygate deny: {}",
                            String::from_utf8_lossy(&b[..b.len().min(200)])
                        )),
                        Ok(_) => Answer::Denied(format!("HTTP {code} {reason}")),
                    }
                }
                Err(e) => Answer::Error(format!("HTTP error: {e}")),
            },
            _ => Answer::Error("request of the wrong front door".into()),
        }
    }
}

async fn grpc_channels(addr: SocketAddr, n: usize) -> Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .ctx("check address")?
            .tcp_nodelay(true)
            .connect()
            .await
            .ctx(format!("connect to the Check listener at {addr}"))?;
        out.push(ch);
    }
    Ok(out)
}

async fn http_client(addr: SocketAddr, proxied: bool) -> Result<Client> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .ctx(format!("connect to the HTTP listener at {addr}"))?;
    tcp.set_nodelay(true).ctx("nodelay")?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ctx("HTTP handshake")?;
    tokio::spawn(async move {
        // Ends when the worker drops its sender or the server closes.
        let _ = conn.await;
    });
    Ok(Client::Http { send, proxied })
}

/// Runs `plan` against `addr` with `pool` (consumed). `label` names the progress line.
pub async fn run(addr: SocketAddr, plan: Plan, pool: Vec<Signed>, label: &str) -> Result<Outcome> {
    if plan.concurrency == 0 || plan.connections == 0 {
        return fail("--concurrency and --connections must be at least 1");
    }
    // Each worker owns its share of the pool, already in wire form.
    let workers = plan.concurrency;
    let mut shares: Vec<Vec<Item>> = (0..workers).map(|_| Vec::new()).collect();
    for (k, s) in pool.iter().enumerate() {
        let item = match plan.front {
            Front::Grpc => Item::Grpc(to_check(s)),
            Front::Http => Item::Http(to_http(s)?),
            Front::Envoy => Item::Http(to_envoy(s)?),
        };
        shares[k % workers].push(item);
    }
    drop(pool);
    let mut clients = Vec::with_capacity(workers);
    match plan.front {
        Front::Grpc => {
            let channels = grpc_channels(addr, plan.connections.min(workers)).await?;
            for w in 0..workers {
                clients.push(Client::Grpc(AuthorizationClient::new(
                    channels[w % channels.len()].clone(),
                )));
            }
        }
        Front::Http | Front::Envoy => {
            for _ in 0..workers {
                clients.push(http_client(addr, plan.front == Front::Envoy).await?);
            }
        }
    }

    let start = Instant::now();
    let run = Arc::new(Run {
        plan,
        start,
        measure_from: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
        next_slot: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        answered_total: AtomicU64::new(0),
        ran_dry: AtomicU64::new(0),
        first_problem: Mutex::new(None),
    });
    let progress = tokio::spawn(progress(run.clone(), label.to_owned()));
    let mut tasks = tokio::task::JoinSet::new();
    for (client, share) in clients.into_iter().zip(shares) {
        tasks.spawn(worker(run.clone(), client, share));
    }
    let mut total = Tally {
        allowed: 0,
        denied: 0,
        errors: 0,
        latency: histogram()?,
        lag: histogram()?,
    };
    while let Some(t) = tasks.join_next().await {
        let t = t.ctx("load worker")??;
        total.allowed += t.allowed;
        total.denied += t.denied;
        total.errors += t.errors;
        total.latency.add(&t.latency).ctx("merge histograms")?;
        total.lag.add(&t.lag).ctx("merge histograms")?;
    }
    progress.abort();
    // A pool that ran dry ends the window early.
    let window = Instant::now()
        .min(run.end)
        .saturating_duration_since(run.measure_from);
    if window.is_zero() {
        return fail(format!(
            "{label}: the signed requests ran out before the measured window began; raise --max-requests"
        ));
    }
    let first_problem = run.first_problem.lock().await.clone();
    Ok(Outcome {
        answered: run.answered.load(Ordering::Relaxed),
        answered_total: run.answered_total.load(Ordering::Relaxed),
        allowed: total.allowed,
        denied: total.denied,
        errors: total.errors,
        first_problem,
        window,
        latency: total.latency,
        lag: total.lag,
        ran_dry: run.ran_dry.load(Ordering::Relaxed) > 0,
    })
}

async fn worker(run: Arc<Run>, mut client: Client, share: Vec<Item>) -> Result<Tally> {
    let mut t = Tally {
        allowed: 0,
        denied: 0,
        errors: 0,
        latency: histogram()?,
        lag: histogram()?,
    };
    let mut items = share.into_iter();
    loop {
        let due = match run.plan.mode {
            Mode::Closed => None,
            Mode::Rate(rate) => {
                let k = run.next_slot.fetch_add(1, Ordering::Relaxed);
                Some(run.start + Duration::from_secs_f64(k as f64 / rate))
            }
        };
        if let Some(due) = due {
            if due >= run.end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = Instant::now();
        if sent >= run.end {
            break;
        }
        let Some(item) = items.next() else {
            run.ran_dry.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let answer = client.send(item).await;
        let done = Instant::now();
        run.answered_total.fetch_add(1, Ordering::Relaxed);
        if sent < run.measure_from {
            continue;
        }
        run.answered.fetch_add(1, Ordering::Relaxed);
        let _ = t.latency.record(nanos(done - sent).max(1_000));
        if let Some(due) = due {
            let _ = t
                .lag
                .record(nanos(sent.saturating_duration_since(due)).max(1_000));
        }
        match answer {
            Answer::Allowed => t.allowed += 1,
            Answer::Denied(why) => {
                t.denied += 1;
                note(&run, why).await;
            }
            Answer::Error(why) => {
                t.errors += 1;
                note(&run, why).await;
            }
        }
    }
    Ok(t)
}

async fn note(run: &Run, why: String) {
    let mut first = run.first_problem.lock().await;
    if first.is_none() {
        *first = Some(why);
    }
}

async fn progress(run: Arc<Run>, label: String) {
    let mut last = 0;
    let mut tick = tokio::time::interval_at(
        (run.measure_from + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    loop {
        tick.tick().await;
        let now = run.answered.load(Ordering::Relaxed);
        eprintln!(
            "    {label}: {:>4.0} s  {:>9.0} req/s",
            run.measure_from.elapsed().as_secs_f64(),
            (now - last) as f64
        );
        last = now;
    }
}
