//! A real etcd cluster (Debian's `etcd-server` 3.4) on free loopback ports, for the
//! multi-replica tests: N members started as processes, each stoppable by PID
//! (SIGKILL, SIGSTOP/SIGCONT) and restartable on its data dir; `etcdctl` for the
//! leader, compaction and raw reads. `--unsafe-no-fsync` and short election timeouts
//! keep it fast; never in production.

use super::*;

struct Member {
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }
}

pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    /// Extra flags for every member (e.g. `--max-txn-ops`).
    extra: Vec<String>,
}

fn etcd_server() -> Option<PathBuf> {
    system_binary("etcd", "apt-get install etcd-server etcd-client")
}

impl Etcd {
    /// Starts an `n`-member cluster and waits until it accepts a write.
    pub fn start(n: usize) -> Option<Self> {
        Self::start_with(n, &[])
    }

    /// Like `start`, with extra flags for every member.
    pub fn start_with(n: usize, extra: &[&str]) -> Option<Self> {
        etcd_server()?;
        let mut e = Self {
            dir: tempfile::Builder::new()
                .prefix("keygate-etcd-")
                .tempdir()
                .expect("temp dir"),
            members: (0..n)
                .map(|_| Member {
                    client: free_port(),
                    peer: free_port(),
                    child: None,
                })
                .collect(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for i in 0..n {
            e.spawn(i);
        }
        e.wait_writable();
        Some(e)
    }

    fn spawn(&mut self, i: usize) {
        let cluster: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .map(|(j, m)| format!("m{j}=http://127.0.0.1:{}", m.peer))
            .collect();
        let m = &self.members[i];
        let client = m.client_url();
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let log = File::create(self.dir.path().join(format!("m{i}.log"))).expect("log");
        let child = Command::new(etcd_server().expect("etcd"))
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{i}")))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "keygate-test",
            ])
            .args([
                "--unsafe-no-fsync",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until the cluster accepts a write and every member answers on its own: a
    /// quorum accepts writes while the last member is still starting, and a test that
    /// kills "another" member would otherwise leave fewer running than it thinks.
    fn wait_writable(&self) {
        let started = Instant::now();
        let healthy = |i: usize| {
            Self::ctl_at(&[self.members[i].client_url()], &["endpoint", "health"]).is_some()
        };
        while self.ctl(&["put", "/probe", "1"]).is_none() || !(0..self.members.len()).all(healthy) {
            assert!(
                started.elapsed() < DEADLINE,
                "etcd did not accept a write on every member; member logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every member's client URL, comma-separated (for `--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `etcdctl` (v3 API) against the members that are running; its output.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        let eps: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::client_url)
            .collect();
        Self::ctl_at(&eps, args)
    }

    /// Runs `etcdctl` (v3 API) against `eps`; its output.
    fn ctl_at(eps: &[String], args: &[&str]) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps.join(",")))
            .args(["--dial-timeout=1s", "--command-timeout=3s"])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The index of the current leader.
    pub fn leader(&self) -> usize {
        let text = self
            .ctl(&["endpoint", "status", "-w", "json"])
            .expect("etcdctl endpoint status");
        let v: serde_json::Value = serde_json::from_str(&text).expect("status json");
        for entry in v.as_array().expect("array") {
            let st = &entry["Status"];
            if st["header"]["member_id"] == st["leader"] {
                let ep = entry["Endpoint"].as_str().expect("endpoint");
                return self
                    .members
                    .iter()
                    .position(|m| ep.ends_with(&format!(":{}", m.client)))
                    .expect("leader is a member");
            }
        }
        panic!("no leader in {text}");
    }

    /// Compacts etcd's history up to its current revision.
    pub fn compact(&self) {
        let text = self
            .ctl(&["endpoint", "status", "-w", "json"])
            .expect("status");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let rev = v[0]["Status"]["header"]["revision"]
            .as_i64()
            .expect("revision");
        self.ctl(&["compaction", &rev.to_string()])
            .expect("etcdctl compaction");
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes member `i` (SIGSTOP): a hung member, its sockets open and silent.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a paused member run again (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].child.as_ref().expect("member running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// Starts member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}
