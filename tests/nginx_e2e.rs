//! Real NGINX in front of an echo upstream, asking the real keygate binary about every
//! request through `auth_request`, configured with the shipped
//! `examples/nginx/nginx.conf` (only its three loopback ports rewritten).
//!
//! Needs Debian's `nginx` (`scripts/test.sh` installs it when run as root). Under
//! `CI=true` a missing nginx fails the test; elsewhere the test says so and returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Keygate;
use common::http::{Caller, DataSet, HttpResponse, Upstream, request, signed};
use keygate::scheme::SchemeKind;

const EXAMPLE: &str = include_str!("../examples/nginx/nginx.conf");

fn find_nginx() -> Option<PathBuf> {
    let candidates = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];
    if let Some(p) = candidates.iter().map(Path::new).find(|p| p.exists()) {
        return Some(p.to_path_buf());
    }
    let out = Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

/// The nginx binary, or `None` (outside CI) when it is missing.
fn nginx_or_skip() -> Option<PathBuf> {
    match find_nginx() {
        Some(p) => Some(p),
        None if common::in_ci() => panic!(
            "nginx is not installed: the NGINX end-to-end tests need Debian's nginx \
             (apt-get install nginx; scripts/test.sh does it when run as root)"
        ),
        None => {
            eprintln!("SKIPPED: nginx is not installed (these tests fail under CI=true)");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx with the example config, its ports pointed at this test's parts.
    fn start(bin: &Path, keygate_http: SocketAddr, upstream: SocketAddr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keygate-nginx-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("nginx-run")).unwrap();
        // nginx workers drop to `nobody` when started as root: let them in.
        let _ = Command::new("chmod")
            .args(["-R", "a+rwx"])
            .arg(dir.path())
            .status();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        for (from, what) in [
            ("127.0.0.1:8088", "listen"),
            ("127.0.0.1:8081", "keygate"),
            ("127.0.0.1:8080", "upstream"),
        ] {
            assert!(
                EXAMPLE.contains(from),
                "the example config no longer uses {from} for {what}"
            );
        }
        let conf = EXAMPLE
            .replace("127.0.0.1:8088", &addr.to_string())
            .replace("127.0.0.1:8081", &keygate_http.to_string())
            .replace("127.0.0.1:8080", &upstream.to_string());
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("nginx-run/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn nginx");
        let mut n = Self { child, dir, addr };
        n.wait_listening();
        n
    }

    fn logs(&self) -> String {
        let read = |p: &str| std::fs::read_to_string(self.dir.path().join(p)).unwrap_or_default();
        format!(
            "--- stderr ---\n{}\n--- error.log ---\n{}",
            read("stderr.log"),
            read("nginx-run/error.log")
        )
    }

    fn wait_listening(&mut self) {
        let started = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}) at start-up:\n{}", self.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nginx did not listen on {} in time:\n{}",
                self.addr,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// keygate + upstream + nginx, and a caller granted on `/v1/...`.
struct Stack {
    keygate: Keygate,
    upstream: Upstream,
    nginx: Nginx,
    caller: Caller,
}

impl Stack {
    async fn start() -> Option<Self> {
        let bin = nginx_or_skip()?;
        let keygate = Keygate::start();
        let caller = DataSet::create(&mut keygate.admin().await).await.caller;
        let upstream = Upstream::start().await;
        let nginx = Nginx::start(&bin, keygate.http_addr(), upstream.addr);
        Some(Self {
            keygate,
            upstream,
            nginx,
            caller,
        })
    }

    fn authority(&self) -> String {
        self.nginx.addr.to_string()
    }

    /// Sends through nginx (blocking I/O off the async workers).
    async fn send(
        &self,
        method: &str,
        target: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> HttpResponse {
        let (addr, method, target) = (self.nginx.addr, method.to_owned(), target.to_owned());
        tokio::task::spawn_blocking(move || request(addr, &method, &target, &headers, &body))
            .await
            .unwrap()
    }

    fn signed(
        &self,
        scheme: SchemeKind,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (String, Vec<(String, String)>) {
        signed(
            &self.caller,
            scheme,
            method,
            &self.authority(),
            target,
            extra,
            body,
        )
    }
}

const CREDENTIAL_HEADERS: [&str; 7] = [
    "authorization",
    "x-ca-signature",
    "x-ca-signature-headers",
    "x-ca-signature-method",
    "x-bkapi-authorization",
    "signature",
    "signature-input",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_of_every_scheme_reach_the_upstream_with_their_identity() {
    let Some(s) = Stack::start().await else {
        return;
    };
    for scheme in SchemeKind::ALL {
        let (target, headers) = s.signed(scheme, "GET", "/v1/items?b=2&a=1", &[], None);
        // A client trying to smuggle identity and body claims of its own: NGINX cannot
        // strip headers by prefix, so the NGINX door refuses the request outright
        // (before the signature is checked, so the nonce is not spent).
        for (k, v) in [
            ("X-Keygate-App-Id", "app_forged"),
            ("X-Keygate-App-Key", "key_forged"),
            ("X-Keygate-Body", "verified"),
            ("X-Keygate-Body-Digest", "x-forged"),
        ] {
            let mut forged = headers.clone();
            forged.push((k.to_owned(), v.to_owned()));
            let resp = s.send("GET", &target, forged, Vec::new()).await;
            assert_eq!(resp.status, 400, "{scheme:?} with {k}: {resp:?}");
            assert!(
                s.upstream.take().is_empty(),
                "{scheme:?}: {k} reached the upstream"
            );
        }
        let resp = s.send("GET", &target, headers, Vec::new()).await;
        assert_eq!(resp.status, 200, "{scheme:?}: {resp:?}\n{}", s.nginx.logs());
        assert_eq!(resp.body, b"upstream-ok");

        let seen = s.upstream.take();
        assert_eq!(seen.len(), 1, "{scheme:?}");
        let up = &seen[0];
        assert!(
            up.target.starts_with("/v1/items?"),
            "{scheme:?}: {}",
            up.target
        );
        let one = |name: &str| up.headers.iter().filter(|(n, _)| n == name).count();
        assert_eq!(
            up.header("x-keygate-app-id"),
            Some(s.caller.app_id.as_str()),
            "{scheme:?}"
        );
        assert_eq!(one("x-keygate-app-id"), 1, "{scheme:?}: {:?}", up.headers);
        assert_eq!(up.header("x-keygate-scheme"), Some(scheme.as_str()));
        assert_eq!(up.header("x-keygate-stage"), Some("RELEASE"));
        assert_eq!(up.header("x-keygate-app-extend-info"), Some("tier=gold"));
        // SigV4 always signs a payload hash, and keygate never saw the (empty) body: it
        // says so rather than assume. No other scheme signs a GET's body.
        let body = if scheme == SchemeKind::SigV4 {
            "unverified"
        } else {
            "unsigned"
        };
        assert_eq!(up.header("x-keygate-body"), Some(body), "{scheme:?}");
        assert_eq!(
            up.header("x-keygate-body-digest"),
            None,
            "forged digest leaked"
        );
        assert!(
            up.header("x-keygate-request-id")
                .is_some_and(|v| !v.is_empty())
        );
        match scheme {
            // An AppCode proves the app, not a key: the forged key must not survive.
            SchemeKind::AppCode => assert_eq!(up.header("x-keygate-app-key"), None),
            _ => assert_eq!(
                up.header("x-keygate-app-key"),
                Some(s.caller.app_key.as_str())
            ),
        }
        for h in CREDENTIAL_HEADERS {
            assert_eq!(
                up.header(h),
                None,
                "{scheme:?}: credential header {h} reached the upstream"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_body_passes_as_unverified_and_strict_apis_refuse_it() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let body = br#"{"sku":"A-1","qty":2}"#;
    let ct = [("Content-Type", "application/json")];
    let (target, headers) = s.signed(SchemeKind::Aliyun, "POST", "/v1/orders", &ct, Some(body));
    let resp = s
        .send("POST", &target, headers.clone(), body.to_vec())
        .await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", s.nginx.logs());
    let seen = s.upstream.take();
    let up = &seen[0];
    assert_eq!(up.method, "POST");
    assert_eq!(up.body, body, "the body reaches the upstream untouched");
    // keygate never saw the body: it says so, and names the digest to check.
    assert_eq!(up.header("x-keygate-body"), Some("unverified"));
    assert_eq!(up.header("x-keygate-body-digest"), Some("content-md5"));
    assert!(up.header("content-md5").is_some());

    // An API that requires a verified body digest cannot be served behind NGINX.
    let (target, headers) = s.signed(
        SchemeKind::Aliyun,
        "POST",
        "/strict/orders",
        &ct,
        Some(body),
    );
    let resp = s.send("POST", &target, headers, body.to_vec()).await;
    resp.assert_deny(400, "BodyDigestMissing");
    assert!(s.upstream.take().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_reach_the_client_with_keygate_status_headers_and_body() {
    let Some(s) = Stack::start().await else {
        return;
    };

    // Unknown key.
    let stranger = Caller {
        app_key: "no-such-key".into(),
        ..s.caller.clone()
    };
    let (target, headers) = signed(
        &stranger,
        SchemeKind::Aliyun,
        "GET",
        &s.authority(),
        "/v1/items",
        &[],
        None,
    );
    let resp = s.send("GET", &target, headers, Vec::new()).await;
    resp.assert_deny(401, "UnknownAppKey");
    assert_eq!(resp.header_count("x-keygate-error"), 1, "{resp:?}");

    // A proven caller without a grant.
    let (target, headers) = s.signed(SchemeKind::Aliyun, "GET", "/private/data", &[], None);
    let resp = s.send("GET", &target, headers, Vec::new()).await;
    resp.assert_deny(403, "NoGrant");

    // The query changed after signing.
    let (target, headers) = s.signed(SchemeKind::Aliyun, "GET", "/v1/items?amount=1", &[], None);
    let tampered = target.replace("amount=1", "amount=1000");
    let resp = s.send("GET", &tampered, headers, Vec::new()).await;
    resp.assert_deny(401, "SignatureMismatch");
    assert!(
        resp.header("x-ca-error-message").is_some(),
        "vendor header lost: {resp:?}"
    );

    // No credential at all; RFC 9421 denies also carry WWW-Authenticate, exactly once.
    let resp = s
        .send(
            "GET",
            "/v1/items",
            vec![("Host".into(), s.authority())],
            Vec::new(),
        )
        .await;
    resp.assert_deny(401, "MissingCredential");
    let (target, headers) = s.signed(SchemeKind::Rfc9421, "GET", "/v1/items?x=1", &[], None);
    let target = target.replace("x=1", "x=2");
    let resp = s.send("GET", &target, headers, Vec::new()).await;
    assert_eq!(resp.status, 401, "{resp:?}");
    assert_eq!(resp.header_count("www-authenticate"), 1, "{resp:?}");

    assert!(
        s.upstream.take().is_empty(),
        "a denied request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_fails_closed_when_keygate_is_down() {
    let Some(mut s) = Stack::start().await else {
        return;
    };
    let (target, headers) = s.signed(SchemeKind::Aliyun, "GET", "/v1/items", &[], None);
    s.keygate.stop().await;
    let resp = s.send("GET", &target, headers, Vec::new()).await;
    assert_eq!(resp.status, 500, "{resp:?}");
    assert!(
        s.upstream.take().is_empty(),
        "the upstream was reached without a decision"
    );
}
