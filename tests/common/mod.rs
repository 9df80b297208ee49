//! Test harness: runs the real `keygate` binary on port 0 with a temporary data dir.
//!
//! Owns: starting the process (a known admin token, the child's stderr captured to a
//! file per run), waiting for its ready file, the addresses it bound, an authenticated
//! admin client, and ending the process: `kill9` (SIGKILL), `stop` (SIGTERM, graceful),
//! `restart` (same data dir) and, on drop, a SIGKILL so no test leaves a server behind.
//!
//! Waiting is polling with a deadline, never a fixed sleep: a deadline that passes is a
//! hang guard with a message that includes the server's stderr, not a timing assertion.

// Each test crate uses a different part of the harness.
#![allow(dead_code)]

pub mod cli;
pub mod etcd;
pub mod granted;
pub mod http;
pub mod redis;

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use keygate::pb::admin::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The admin token every harness server is started with (via `KEYGATE_ADMIN_TOKEN`).
pub const TOKEN: &str = "e2e-admin-token-0123456789abcdef";

/// How long a start (or a graceful stop) may take before the harness gives up. Generous:
/// a debug binary on a busy 2-core machine. Only a hang ever reaches it.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// Whether this is a CI run (`CI` is `1`, `true` or `yes`, as `tests/python/conftest.py`
/// reads it): a missing prerequisite then fails the test instead of skipping it.
/// A server binary from Debian's packages, or `None` (with a message) where it is
/// missing; under `CI=true` a missing one fails the test.
pub fn system_binary(name: &str, install: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{name} is not installed ({install}); CI must run the tests that need it"
        );
        eprintln!("skipping: {name} is not installed ({install})");
    }
    found
}

/// A loopback port free right now (for servers that cannot bind port 0 themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keygate")
}

/// The three listeners' addresses, read from the ready file.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub check: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

/// An admin client that sends `authorization: Bearer <token>` on every call.
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(
            format!("Bearer {token}")
                .parse()
                .expect("token is a valid header value"),
        )
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A plaintext gRPC channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// A running (or stopped) keygate process and its data dir.
pub struct Keygate {
    /// Holds the data dir, the ready files and the stderr logs; removed on drop.
    tmp: tempfile::TempDir,
    data_dir: PathBuf,
    child: Option<Child>,
    addrs: Addrs,
    /// Runs started so far; names this run's ready file and stderr log.
    run: u32,
    extra_args: Vec<String>,
    /// When set, the process runs under this open-file limit (soft and hard), through
    /// util-linux `prlimit`.
    fd_limit: Option<u64>,
}

impl Keygate {
    /// Starts keygate on port 0 with a fresh data dir and waits until it serves.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like `start_with_args`, under an open-file limit of `fd_limit` (soft and hard).
    pub fn start_with_fd_limit(fd_limit: u64, extra: &[&str]) -> Self {
        let mut kg = Self::unstarted(None, extra);
        kg.fd_limit = Some(fd_limit);
        kg.spawn();
        kg
    }

    /// Like `start`, with extra `serve` flags.
    pub fn start_with_args(extra: &[&str]) -> Self {
        let mut kg = Self::unstarted(None, extra);
        kg.spawn();
        kg
    }

    /// A harness around a fresh temp dir (logs, ready files) and `data_dir` (default:
    /// inside the temp dir), not yet running.
    fn unstarted(data_dir: Option<&Path>, extra: &[&str]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("keygate-e2e-")
            .tempdir()
            .expect("temp dir");
        let data_dir = data_dir.map_or_else(|| tmp.path().join("data"), Path::to_owned);
        Self {
            tmp,
            data_dir,
            child: None,
            addrs: Addrs {
                check: ([0, 0, 0, 0], 0).into(),
                http: ([0, 0, 0, 0], 0).into(),
                admin: ([0, 0, 0, 0], 0).into(),
            },
            run: 0,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            fd_limit: None,
        }
    }

    fn ready_file(&self) -> PathBuf {
        self.tmp.path().join(format!("ready.{}.json", self.run))
    }

    fn stderr_file(&self) -> PathBuf {
        self.tmp.path().join(format!("stderr.{}.log", self.run))
    }

    fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// Starts the process with extra environment (it overrides the harness's own,
    /// e.g. `KEYGATE_LOG`); stdout and stderr both go to this run's log.
    fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "keygate is already running");
        self.run += 1;
        let ready = self.ready_file();
        let log = File::create(self.stderr_file()).expect("stderr log file");
        let mut cmd = match self.fd_limit {
            None => command(),
            Some(n) => {
                let mut c = command();
                let mut wrapped = Command::new("prlimit");
                wrapped
                    .arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(bin());
                for (k, v) in c.get_envs() {
                    match v {
                        Some(v) => wrapped.env(k, v),
                        None => wrapped.env_remove(k),
                    };
                }
                c = wrapped;
                c
            }
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--check-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(&self.extra_args)
            .env("KEYGATE_ADMIN_TOKEN", TOKEN)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            // A test searching "the output" sees both streams.
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()));
        self.child = Some(child);
        self.addrs = self.wait_ready(&ready);
    }

    /// Polls for the ready file; panics with the server's stderr if the process exits
    /// first or the deadline passes.
    fn wait_ready(&mut self, ready: &Path) -> Addrs {
        let started = Instant::now();
        loop {
            // The server writes a temp file and renames it: a file that exists is whole.
            if let Ok(text) = fs::read_to_string(ready) {
                return parse_ready(&text)
                    .unwrap_or_else(|| panic!("unexpected ready file content: {text}"));
            }
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                panic!(
                    "keygate exited ({status}) before it was ready; its stderr:\n{}",
                    self.stderr()
                );
            }
            if started.elapsed() > DEADLINE {
                panic!(
                    "keygate did not write its ready file {} within {DEADLINE:?}; its stderr:\n{}",
                    ready.display(),
                    self.stderr()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.addrs.admin
    }

    pub fn check_addr(&self) -> SocketAddr {
        self.addrs.check
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.addrs.http
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("keygate is not running").id()
    }

    /// An admin client with the right token.
    pub async fn admin(&self) -> Admin {
        self.admin_with_token(TOKEN).await
    }

    /// An admin client that sends `token` (to test refusals).
    pub async fn admin_with_token(&self, token: &str) -> Admin {
        AdminClient::with_interceptor(channel(self.addrs.admin).await, Bearer::new(token))
    }

    /// An admin client that sends no token at all.
    pub async fn admin_without_token(&self) -> AdminClient<Channel> {
        AdminClient::new(channel(self.addrs.admin).await)
    }

    /// This run's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.stderr_file()).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs. Returns once the process is gone.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("keygate is not running");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// SIGTERM (graceful shutdown), then waits for the exit and returns its status.
    ///
    /// Async on purpose: while it waits, the test's runtime keeps driving the test's
    /// open client connections, which must answer the server's HTTP/2 GOAWAY/PING for
    /// it to close them. A blocking wait would starve them and the server would sit out
    /// its whole grace period.
    pub async fn stop(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keygate did not exit within {DEADLINE:?} of SIGTERM; its stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts keygate again on the same data dir (stopping it gracefully first if it
    /// still runs). The new process binds new ports: use `addrs()` and new clients.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        self.spawn();
    }

    /// GET `path` on the HTTP listener; returns (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.addrs.http, path)
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `keygate` command whose environment holds no `KEYGATE_*` variable of the caller
/// (a developer's shell must not change what the tests see) and logs at info.
pub fn command() -> Command {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KEYGATE_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG").env("KEYGATE_LOG", "info");
    cmd
}

/// Runs `keygate <args>` expecting it to exit by itself (a start-up failure); returns
/// its status and stderr. Panics if it is still running at the deadline.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("stderr.log");
    let log = File::create(&log_path).expect("log file");
    let mut child = command()
        .args(args)
        .env("KEYGATE_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn keygate");
    let status = wait_exit(&mut child, DEADLINE);
    let stderr = fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Some(s) => (s, stderr),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keygate {args:?} was expected to exit but still ran; its stderr:\n{stderr}")
        }
    }
}

fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if started.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn parse_ready(text: &str) -> Option<Addrs> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let addr = |name: &str| v.get(name)?.as_str()?.parse::<SocketAddr>().ok();
    Some(Addrs {
        check: addr("check")?,
        http: addr("http")?,
        admin: addr("admin")?,
    })
}

/// A minimal HTTP/1.1 GET (the HTTP listener's probes), so no HTTP client crate is
/// needed. Returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to http listener");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw}"));
    (code, body.to_owned())
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read_dir").flatten() {
            let p = entry.path();
            let ty = entry.file_type().expect("file type");
            if ty.is_dir() {
                stack.push(p);
            } else if ty.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// True if `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

// === appended for the security suite (crash, hostile, secrets, isolation, replay) ===

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

/// An Envoy ext_authz client on the check listener.
pub type CheckClient = AuthorizationClient<Channel>;

/// A Check client with no message size limit of its own (hostile tests send huge
/// requests: the server's limit is what is under test, not the client's).
pub async fn check_client(addr: SocketAddr) -> CheckClient {
    AuthorizationClient::new(channel(addr).await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// One request as Envoy would describe it (the shape of tests/python/conftest.py):
/// lower-case header keys plus the pseudo-headers in the `headers` map, the raw target,
/// and, when a body is given, `raw_body` with `x-envoy-auth-partial-body: false`.
pub fn envoy_request(
    method: &str,
    authority: &str,
    target: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> CheckRequest {
    let mut map: std::collections::HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    for (k, v) in [
        (":authority", authority),
        (":method", method),
        (":path", target),
        (":scheme", "http"),
    ] {
        map.insert(k.to_owned(), v.to_owned());
    }
    if let Some(b) = body {
        map.insert("x-envoy-auth-partial-body".into(), "false".into());
        map.entry("content-length".into())
            .or_insert_with(|| b.len().to_string());
    }
    let http = HttpRequest {
        method: method.to_owned(),
        host: authority.to_owned(),
        path: target.to_owned(),
        scheme: "http".into(),
        protocol: "HTTP/1.1".into(),
        headers: map,
        raw_body: body.map(<[u8]>::to_vec).unwrap_or_default(),
        ..Default::default()
    };
    wrap_http(http)
}

/// Like `envoy_request` but with Envoy's `encode_raw_headers` form: an ordered
/// `header_map` whose values are raw bytes (duplicates kept, any bytes allowed).
pub fn envoy_request_raw(
    method: &str,
    authority: &str,
    target: &str,
    headers: &[(String, Vec<u8>)],
    body: Option<&[u8]>,
) -> CheckRequest {
    let mut list: Vec<HeaderValue> = [
        (":authority", authority),
        (":method", method),
        (":path", target),
        (":scheme", "http"),
    ]
    .into_iter()
    .map(|(k, v)| HeaderValue {
        key: k.to_owned(),
        value: String::new(),
        raw_value: v.as_bytes().to_vec(),
    })
    .collect();
    list.extend(headers.iter().map(|(k, v)| HeaderValue {
        key: k.to_ascii_lowercase(),
        value: String::new(),
        raw_value: v.clone(),
    }));
    if body.is_some() {
        list.push(HeaderValue {
            key: "x-envoy-auth-partial-body".into(),
            value: String::new(),
            raw_value: b"false".to_vec(),
        });
    }
    let http = HttpRequest {
        method: method.to_owned(),
        host: authority.to_owned(),
        path: target.to_owned(),
        scheme: "http".into(),
        protocol: "HTTP/1.1".into(),
        header_map: Some(HeaderMap { headers: list }),
        raw_body: body.map(<[u8]>::to_vec).unwrap_or_default(),
        ..Default::default()
    };
    wrap_http(http)
}

fn wrap_http(http: HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// What a `CheckResponse` said, checked for internal consistency: an allow is gRPC OK
/// with an ok_response; a deny is a non-OK status with a denied_response carrying
/// `x-keygate-error` (the panics name the inconsistency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny {
        /// `x-keygate-error`.
        code: String,
        grpc: i32,
        http: i32,
        body: String,
    },
}

impl Verdict {
    /// The deny code, or `None` for an allow.
    pub fn code(&self) -> Option<&str> {
        match self {
            Verdict::Allow => None,
            Verdict::Deny { code, .. } => Some(code),
        }
    }
}

#[track_caller]
pub fn verdict(resp: &CheckResponse) -> Verdict {
    let status = resp
        .status
        .as_ref()
        .unwrap_or_else(|| panic!("CheckResponse without a status: {resp:?}"));
    match &resp.http_response {
        Some(HttpResponse::OkResponse(_)) => {
            assert_eq!(status.code, 0, "ok_response with a non-OK status: {resp:?}");
            Verdict::Allow
        }
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_ne!(status.code, 0, "denied_response with status OK: {resp:?}");
            let code = d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key.eq_ignore_ascii_case("x-keygate-error"))
                .map(|h| h.value.clone())
                .unwrap_or_else(|| panic!("deny without x-keygate-error: {resp:?}"));
            assert!(!code.is_empty(), "empty x-keygate-error: {resp:?}");
            Verdict::Deny {
                code,
                grpc: status.code,
                http: d.status.as_ref().map_or(0, |s| s.code),
                body: d.body.clone(),
            }
        }
        other => panic!("CheckResponse without an ok or denied response ({other:?}): {resp:?}"),
    }
}

/// Signs `method url` with `keygate::sign` and builds the Envoy Check request for it.
#[allow(clippy::too_many_arguments)]
pub fn signed_check(
    scheme: keygate::scheme::SchemeKind,
    key: &str,
    secret: &[u8],
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    now_ms: i64,
    nonce: &str,
) -> CheckRequest {
    let req = keygate::sign::SignRequest {
        method: method.to_owned(),
        url: url.to_owned(),
        headers: headers.to_vec(),
        body: body.map(<[u8]>::to_vec),
    };
    let opts = keygate::sign::SignOptions::new(scheme, key, secret, now_ms, nonce);
    let signed = keygate::sign::sign(&req, &opts)
        .unwrap_or_else(|e| panic!("sign {scheme} {method} {url}: {e}"));
    let (authority, target) = split_url(&signed.url);
    let mut all = headers.to_vec();
    all.extend(signed.headers);
    envoy_request(method, authority, target, &all, body)
}

/// `http://authority/target` -> (authority, target).
pub fn split_url(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The value of an unlabelled (or exactly labelled, e.g. `name{code="X"}`) sample in a
/// Prometheus text exposition.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok())?
    })
}

/// GET /metrics and read one sample; panics if it is absent.
#[track_caller]
pub fn scrape(kg: &Keygate, sample: &str) -> f64 {
    let (code, body) = kg.http_get("/metrics");
    assert_eq!(code, 200, "/metrics: {body}");
    metric(&body, sample).unwrap_or_else(|| panic!("no sample {sample} in /metrics:\n{body}"))
}

/// Resident set size of `pid` in bytes (Linux `/proc/<pid>/status` VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// Whether the process still runs (it has not exited, even as a zombie not yet reaped).
pub fn is_running(kg: &mut Keygate) -> bool {
    match kg.child.as_mut() {
        None => false,
        Some(c) => c.try_wait().expect("try_wait").is_none(),
    }
}

impl Keygate {
    /// Like `start_with_args`, with extra environment for the first run only (e.g.
    /// `KEYGATE_LOG=debug`; it overrides the harness's `info`). `restart` goes back to
    /// the harness's default environment.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut kg = Self::unstarted(None, extra);
        kg.spawn_with_env(env);
        kg
    }
}

/// Every audit event (up to 1000), oldest first.
pub async fn audit_events(admin: &mut Admin) -> Vec<keygate::pb::admin::AuditEvent> {
    admin
        .list_audit_events(keygate::pb::admin::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListAuditEvents")
        .into_inner()
        .events
}

/// How many audit events there are (up to 1000).
pub async fn audit_len(admin: &mut Admin) -> usize {
    audit_events(admin).await.len()
}
