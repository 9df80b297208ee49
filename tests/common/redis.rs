//! A real `redis-server` (Debian's package) on a free loopback port, for the shared
//! nonce store tests: started with the persistence flags a test names, stopped by PID
//! (SIGTERM, SIGKILL or SIGSTOP/SIGCONT), restarted on the same port and directory.

use super::*;

pub struct Redis {
    dir: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

fn redis_server() -> Option<PathBuf> {
    system_binary("redis-server", "apt-get install redis-server")
}

impl Redis {
    /// Starts redis-server with `args` (e.g. `["--appendonly", "yes"]`); `None` where
    /// it is not installed outside CI.
    pub fn start(args: &[&str]) -> Option<Self> {
        redis_server()?;
        let mut r = Self {
            dir: tempfile::Builder::new()
                .prefix("keygate-redis-")
                .tempdir()
                .expect("temp dir"),
            port: free_port(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        r.spawn();
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let path = redis_server().expect("redis-server");
        let log = File::create(self.dir.path().join("redis.log")).expect("log");
        let child = Command::new(path)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--maxmemory-policy", "noeviction"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let started = Instant::now();
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                started.elapsed() < DEADLINE,
                "redis-server did not answer PING; its log:\n{}",
                fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Runs one command through `redis-cli`; its output, or `None` if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// SIGSTOP: the server holds its connections but answers nothing (a hung Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL, waiting for the exit.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("redis running");
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERM (Redis writes its AOF and exits), waiting for the exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        let mut c = self.child.take().expect("redis running");
        let _ = c.wait();
    }

    /// Starts it again on the same port and directory (so it reloads what it kept).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill it first");
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
