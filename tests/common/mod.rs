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

pub mod http;

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
}

impl Keygate {
    /// Starts keygate on port 0 with a fresh data dir and waits until it serves.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like `start`, with extra `serve` flags.
    pub fn start_with_args(extra: &[&str]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("keygate-e2e-")
            .tempdir()
            .expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut kg = Self {
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
        };
        kg.spawn();
        kg
    }

    fn ready_file(&self) -> PathBuf {
        self.tmp.path().join(format!("ready.{}.json", self.run))
    }

    fn stderr_file(&self) -> PathBuf {
        self.tmp.path().join(format!("stderr.{}.log", self.run))
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "keygate is already running");
        self.run += 1;
        let ready = self.ready_file();
        let log = File::create(self.stderr_file()).expect("stderr log file");
        let mut cmd = command();
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
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

// === Check over gRPC with signed requests (security tests) ===

use envoy_types::pb::envoy::service::auth::v3 as authz;

/// An app, its default key pair and an API it is granted, created through the admin
/// API: what a signed Check needs to be allowed.
#[derive(Clone, Debug)]
pub struct Granted {
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
    /// The AppCode CreateApp generated.
    pub app_code: String,
    /// Requests under this prefix hit the granted API.
    pub prefix: String,
}

/// Creates an app, an API on `/<name>/{*rest}` (every signature scheme and APPCODE)
/// and a grant of the API to the app.
pub async fn grant_app<T>(c: &mut AdminClient<T>, name: &str) -> Granted
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    use keygate::pb::admin as pb;
    let created = c
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: name.into(),
                owner: "sec".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("CreateApp")
        .into_inner();
    let (app, key) = (created.app.expect("app"), created.key_pair.expect("key"));
    let api = c
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: format!("{name}-api"),
                owner: "sec".into(),
                path: format!("/{name}/{{*rest}}"),
                auth_schemes: vec![
                    pb::AuthScheme::Aliyun as i32,
                    pb::AuthScheme::Appcode as i32,
                ],
                ..Default::default()
            }),
        })
        .await
        .expect("CreateApi")
        .into_inner();
    c.create_grant(pb::CreateGrantRequest {
        grant: Some(pb::Grant {
            app_id: app.id.clone(),
            target: Some(pb::grant::Target::ApiId(api.id)),
            ..Default::default()
        }),
    })
    .await
    .expect("CreateGrant");
    Granted {
        app_code: app.app_code,
        app_id: app.id,
        app_key: key.app_key,
        app_secret: key.app_secret,
        prefix: format!("/{name}/"),
    }
}

/// A CheckRequest as Envoy sends it for `method url` with `headers` (lower-cased).
pub fn check_request(method: &str, url: &str, headers: &[(String, String)]) -> authz::CheckRequest {
    let (authority, target) = url
        .split_once("://")
        .map(|(_, rest)| rest.split_at(rest.find('/').unwrap_or(rest.len())))
        .expect("absolute URL");
    let mut hdrs: std::collections::HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    hdrs.insert(":authority".into(), authority.into());
    hdrs.insert(":method".into(), method.into());
    hdrs.insert(":path".into(), target.into());
    authz::CheckRequest {
        attributes: Some(authz::AttributeContext {
            request: Some(authz::attribute_context::Request {
                http: Some(authz::attribute_context::HttpRequest {
                    method: method.into(),
                    path: target.into(),
                    host: authority.into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: hdrs,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A CheckRequest for `GET <prefix>rest`, signed with the app's secret (Alibaba
/// scheme, fresh nonce, current time).
pub fn signed_check(g: &Granted, secret: &str, rest: &str) -> authz::CheckRequest {
    use keygate::sign::{SignOptions, SignRequest, fresh_nonce, sign};
    let url = format!("http://api.example.com{}{rest}", g.prefix);
    let nonce = fresh_nonce().expect("nonce");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let req = SignRequest {
        method: "GET".into(),
        url: url.clone(),
        headers: vec![],
        body: None,
    };
    let opts = SignOptions::new(
        keygate::scheme::SchemeKind::Aliyun,
        &g.app_key,
        secret.as_bytes(),
        now_ms,
        &nonce,
    );
    let signed = sign(&req, &opts).expect("sign");
    check_request("GET", &signed.url, &signed.headers)
}

/// The deny code of a CheckResponse (`x-keygate-error`), or `None` for an allow.
/// Panics on a response that is neither a proper allow nor a proper deny.
pub fn deny_code(r: &authz::CheckResponse) -> Option<String> {
    use authz::check_response::HttpResponse;
    let status = r
        .status
        .as_ref()
        .expect("CheckResponse.status is always set");
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => {
            assert_eq!(status.code, 0, "an ok_response with a non-OK status: {r:?}");
            None
        }
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_ne!(status.code, 0, "a denied_response with status OK: {r:?}");
            let code = d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-keygate-error")
                .map(|h| h.value.clone())
                .unwrap_or_else(|| panic!("deny without x-keygate-error: {r:?}"));
            Some(code)
        }
        _ => panic!("CheckResponse without an ok or denied http_response: {r:?}"),
    }
}

/// The denied HTTP status of a CheckResponse.
pub fn denied_http_status(r: &authz::CheckResponse) -> Option<i32> {
    match &r.http_response {
        Some(authz::check_response::HttpResponse::DeniedResponse(d)) => {
            d.status.as_ref().map(|s| s.code)
        }
        _ => None,
    }
}

/// A Check client on a plaintext channel.
pub async fn check_client(
    addr: SocketAddr,
) -> authz::authorization_client::AuthorizationClient<Channel> {
    authz::authorization_client::AuthorizationClient::new(channel(addr).await)
}

/// A CheckRequest for `GET <prefix>rest` carrying the app's AppCode.
pub fn appcode_check(g: &Granted, code: &str, rest: &str) -> authz::CheckRequest {
    check_request(
        "GET",
        &format!("http://api.example.com{}{rest}", g.prefix),
        &[("authorization".into(), format!("APPCODE {code}"))],
    )
}

impl Keygate {
    /// Like `start_with_args`, with the data dir at `data_dir` (e.g. on a special
    /// filesystem) instead of inside the harness's temp dir.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("keygate-e2e-")
            .tempdir()
            .expect("temp dir");
        let mut kg = Self {
            tmp,
            data_dir: data_dir.to_owned(),
            child: None,
            addrs: Addrs {
                check: ([0, 0, 0, 0], 0).into(),
                http: ([0, 0, 0, 0], 0).into(),
                admin: ([0, 0, 0, 0], 0).into(),
            },
            run: 0,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        kg.spawn();
        kg
    }
}
