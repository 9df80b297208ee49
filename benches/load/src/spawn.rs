//! Child processes: a `keygate serve` on port 0, and the no-op server (this same
//! binary's hidden `noop-server` command), started as the no-op baseline and, for the
//! through-Envoy scenario, once more as Envoy's upstream.
//!
//! Owns: starting them with a ready file, waiting for it (polling with a deadline, the
//! deadline only a hang guard), their addresses, their memory (RSS from /proc), and
//! killing them on drop so a failed run leaves nothing behind.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Context, Result, fail};

const READY_DEADLINE: Duration = Duration::from_secs(120);

/// A temporary directory removed on drop (the binary has no tempfile dependency).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "keygate-bench-{what}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&p).ctx(format!("create {}", p.display()))?;
        Ok(Self(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The addresses a server wrote to its ready file.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub check: SocketAddr,
    pub http: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A running child server; SIGKILLed on drop.
pub struct Server {
    child: Child,
    pub addrs: Addrs,
    /// From spawn to ready file.
    pub startup: Duration,
    log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident and peak resident memory in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        memory_kib(self.pid())
    }

    /// Ends the child gracefully (SIGTERM), waiting a few seconds before SIGKILL.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 20)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `n` lines of a log file (empty if it cannot be read).
pub fn tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU time (user + system) the process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(std::time::Duration::from_millis(ticks * 10))
}

pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The `keygate` binary: `--keygate-bin`, else the one next to this executable.
pub fn keygate_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe().ctx("locate this executable")?;
    let sibling = me.with_file_name("keygate");
    if sibling.exists() {
        return Ok(sibling);
    }
    fail(format!(
        "no keygate binary next to {}; build it (cargo build --release) or pass --keygate-bin",
        me.display()
    ))
}

/// Starts `keygate serve` on port 0 with `data_dir`, the admin token in its
/// environment, and waits until it serves.
pub fn keygate(
    bin: &Path,
    data_dir: &Path,
    token: &str,
    work: &Path,
    extra: &[String],
) -> Result<Server> {
    let ready = work.join("keygate.ready.json");
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KEYGATE_") {
            cmd.env_remove(&k);
        }
    }
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--check-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready)
        .args(extra)
        .env("KEYGATE_ADMIN_TOKEN", token)
        .env("KEYGATE_LOG", "warn");
    start(cmd, &ready, work.join("keygate.stderr.log"))
}

/// Starts a no-op server (this binary's `noop-server` command); `name` keeps the ready
/// file and log of each instance apart (`noop`, `upstream`).
pub fn noop(work: &Path, name: &str) -> Result<Server> {
    let ready = work.join(format!("{name}.ready.json"));
    let me = std::env::current_exe().ctx("locate this executable")?;
    let mut cmd = Command::new(me);
    cmd.arg("noop-server").arg("--ready-file").arg(&ready);
    start(cmd, &ready, work.join(format!("{name}.stderr.log")))
}

fn start(mut cmd: Command, ready: &Path, log: PathBuf) -> Result<Server> {
    let _ = fs::remove_file(ready);
    let log_file = fs::File::create(&log).ctx(format!("create {}", log.display()))?;
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .ctx(format!("start {:?}", cmd.get_program()))?;
    let mut server = Server {
        child,
        addrs: Addrs {
            check: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: None,
            admin: None,
        },
        startup: Duration::ZERO,
        log,
    };
    loop {
        // Servers write a temp file and rename it: a file that exists is whole.
        if let Ok(text) = fs::read_to_string(ready) {
            server.startup = started.elapsed();
            server.addrs = parse_ready(&text).ctx(format!("unexpected ready file: {text}"))?;
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return fail(format!(
                "{:?} exited ({status}) before it was ready:\n{}",
                cmd.get_program(),
                server.log_tail()
            ));
        }
        if started.elapsed() > READY_DEADLINE {
            return fail(format!(
                "{:?} not ready within {READY_DEADLINE:?}:\n{}",
                cmd.get_program(),
                server.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn parse_ready(text: &str) -> Option<Addrs> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let addr = |name: &str| v.get(name)?.as_str()?.parse::<SocketAddr>().ok();
    Some(Addrs {
        check: addr("check")?,
        http: addr("http"),
        admin: addr("admin"),
    })
}

/// Writes the ready file the way keygate does: temp file, then rename.
pub fn write_ready(path: &Path, pairs: &[(&str, SocketAddr)]) -> Result<()> {
    let body = serde_json::Value::Object(
        pairs
            .iter()
            .map(|(n, a)| ((*n).to_owned(), serde_json::Value::String(a.to_string())))
            .collect(),
    );
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, body.to_string())
        .and_then(|_| fs::rename(&tmp, path))
        .ctx(format!("write ready file {}", path.display()))
}
