//! The nonce stores against the real binary: a captured request is accepted once,
//! whatever restarts in between.
//!
//! Single node (`--nonce-store local`, the default): a replay after a graceful restart
//! and after `kill -9` is refused, and every nonce acknowledged just before the kill is
//! still refused after it; `--nonce-store memory` forgets them (the contrast).
//!
//! Several replicas (`--nonce-store redis`, a real `redis-server`): two keygates with
//! the same data share one Redis; the same signed request sent to A then B is refused
//! by B, also when both get it at once. Redis hung (SIGSTOP), killed and restarted, or
//! stopped: nonce-carrying requests are denied `ReplayUnavailable` (others still pass)
//! and recover by themselves, and with `appendfsync always` nothing is forgotten.
//! Redis that forgot (FLUSHALL, a restart without persistence): every replica refuses
//! every nonce, the captured ones included, instead of accepting a replay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Keygate;
use common::granted::{
    Granted, appcode_check, check_client, deny_code, explain_of, grant_app, signed_check,
};
use common::redis::Redis;
use envoy_types::pb::envoy::service::auth::v3 as authz;

async fn code(kg: &Keygate, req: &authz::CheckRequest) -> Option<String> {
    let mut c = check_client(kg.check_addr()).await;
    let resp = c.check(req.clone()).await.expect("Check").into_inner();
    deny_code(&resp)
}

/// Polls `f` until it returns true; panics after `within`. A hang guard, not a timing
/// assertion: the store recovers by itself, and this waits for it.
async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `kg` accepts fresh nonces again (each try a new one, tagged `tag`).
async fn claims_recover(kg: &Keygate, g: &Granted, tag: &str, what: &str) {
    let mut n = 0;
    eventually(what, Duration::from_secs(15), || {
        n += 1;
        let req = signed_check(g, &g.app_secret, &format!("{tag}-{n}"));
        async move { code(kg, &req).await.is_none() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_restart_graceful_or_kill_9_reopens_a_replay() {
    let mut kg = Keygate::start();
    let g = grant_app(&mut kg.admin().await, "replay").await;
    let first = signed_check(&g, &g.app_secret, "first");
    assert_eq!(code(&kg, &first).await, None);
    assert_eq!(code(&kg, &first).await.as_deref(), Some("NonceReplayed"));

    kg.restart().await;
    assert_eq!(
        code(&kg, &first).await.as_deref(),
        Some("NonceReplayed"),
        "replay accepted after a graceful restart"
    );

    // Every nonce acknowledged up to the kill is refused after it.
    let acked: Vec<_> = (0..100)
        .map(|i| signed_check(&g, &g.app_secret, &format!("n{i}")))
        .collect();
    let mut c = check_client(kg.check_addr()).await;
    for r in &acked {
        let resp = c.check(r.clone()).await.expect("Check").into_inner();
        assert_eq!(deny_code(&resp), None);
    }
    kg.kill9();
    kg.restart().await;
    for (i, r) in acked.iter().enumerate() {
        assert_eq!(
            code(&kg, r).await.as_deref(),
            Some("NonceReplayed"),
            "nonce {i} acknowledged before kill -9 accepted again"
        );
    }
    assert_eq!(code(&kg, &first).await.as_deref(), Some("NonceReplayed"));
    // A kill on a running machine loses nothing, so nothing is fenced.
    assert_eq!(
        code(&kg, &signed_check(&g, &g.app_secret, "fresh")).await,
        None
    );
    assert!(
        kg.stderr().contains("no nonce lost"),
        "the start after kill -9 says what it concluded:\n{}",
        kg.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_forgets_on_restart() {
    let mut kg = Keygate::start_with_args(&["--nonce-store", "memory"]);
    let g = grant_app(&mut kg.admin().await, "forget").await;
    let r = signed_check(&g, &g.app_secret, "x");
    assert_eq!(code(&kg, &r).await, None);
    assert_eq!(code(&kg, &r).await.as_deref(), Some("NonceReplayed"));
    kg.restart().await;
    assert_eq!(code(&kg, &r).await, None, "memory is what it says");
}

/// Two replicas with the same data (B starts on a copy of A's data dir: same apps,
/// keys and master key) and one Redis.
struct Replicas {
    redis: Redis,
    a: Keygate,
    b: Keygate,
    g: Granted,
    _b_dir: tempfile::TempDir,
}

async fn replicas(redis_args: &[&str]) -> Option<Replicas> {
    let redis = Redis::start(redis_args)?;
    let url = redis.url();
    let flags = ["--nonce-store", "redis", "--redis-url", url.as_str()];
    let mut a = Keygate::start_with_args(&flags);
    let g = grant_app(&mut a.admin().await, "shared").await;
    a.stop().await;
    let b_dir = tempfile::tempdir().expect("temp dir");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", a.data_dir().display()))
        .arg(b_dir.path())
        .status()
        .expect("cp");
    assert!(copied.success());
    a.restart().await;
    let b = Keygate::start_in(b_dir.path(), &flags);
    Some(Replicas {
        redis,
        a,
        b,
        g,
        _b_dir: b_dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_accepted_by_one_replica_is_refused_by_the_other() {
    let Some(r) = replicas(&[]).await else { return };
    let req = signed_check(&r.g, &r.g.app_secret, "once");
    // Explain looks the nonce up in Redis without claiming it.
    let mut admin_b = r.b.admin().await;
    let explained = admin_b.explain(explain_of(&req)).await.expect("Explain");
    assert!(explained.get_ref().allowed, "{explained:?}");
    assert_eq!(code(&r.a, &req).await, None);
    let explained = admin_b.explain(explain_of(&req)).await.expect("Explain");
    assert_eq!(explained.get_ref().code, "NonceReplayed", "{explained:?}");
    assert_eq!(code(&r.b, &req).await.as_deref(), Some("NonceReplayed"));
    assert_eq!(code(&r.a, &req).await.as_deref(), Some("NonceReplayed"));

    // Both at once: exactly one of them accepts each request.
    let mut ca = check_client(r.a.check_addr()).await;
    let mut cb = check_client(r.b.check_addr()).await;
    for i in 0..30 {
        let req = signed_check(&r.g, &r.g.app_secret, &format!("race{i}"));
        let (x, y) = tokio::join!(ca.check(req.clone()), cb.check(req));
        let codes = [
            deny_code(&x.expect("A").into_inner()),
            deny_code(&y.expect("B").into_inner()),
        ];
        let allowed = codes.iter().filter(|c| c.is_none()).count();
        assert_eq!(allowed, 1, "request {i}: {codes:?}");
        assert!(codes.contains(&Some("NonceReplayed".into())), "{codes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_denies_nonces_and_recovers_by_itself() {
    let Some(mut r) = replicas(&["--appendonly", "yes", "--appendfsync", "always"]).await else {
        return;
    };
    let before = signed_check(&r.g, &r.g.app_secret, "before");
    assert_eq!(code(&r.a, &before).await, None);
    let fresh = |tag: &str| signed_check(&r.g, &r.g.app_secret, tag);
    let no_nonce = appcode_check(&r.g, &r.g.app_code, "appcode");

    // Hung: claims time out and are refused; requests without a nonce still pass.
    r.redis.pause();
    let mut c = check_client(r.b.check_addr()).await;
    let resp = c.check(fresh("hung")).await.expect("Check").into_inner();
    assert_eq!(deny_code(&resp).as_deref(), Some("ReplayUnavailable"));
    assert_eq!(
        common::granted::denied_http_status(&resp),
        Some(503),
        "ReplayUnavailable is a 503"
    );
    assert_eq!(code(&r.b, &no_nonce).await, None);
    eventually(
        "readyz reports the nonce store down",
        Duration::from_secs(10),
        || async {
            let (status, body) = r.b.http_get("/readyz");
            status == 200 && body.contains("unreachable")
        },
    )
    .await;
    r.redis.resume();
    claims_recover(
        &r.b,
        &r.g,
        "after-cont",
        "nonce claims recover after SIGCONT",
    )
    .await;
    assert_eq!(code(&r.b, &before).await.as_deref(), Some("NonceReplayed"));

    // Killed, then restarted from its AOF (appendfsync always): nothing forgotten, no
    // fence, and both replicas reconnect by themselves.
    r.redis.kill9();
    assert_eq!(
        code(&r.a, &fresh("while-dead")).await.as_deref(),
        Some("ReplayUnavailable")
    );
    r.redis.restart();
    for (kg, tag) in [(&r.a, "after-restart-a"), (&r.b, "after-restart-b")] {
        claims_recover(kg, &r.g, tag, "nonce claims recover after a restart").await;
        assert_eq!(code(kg, &before).await.as_deref(), Some("NonceReplayed"));
    }

    // Stopped gracefully and started again: the same.
    r.redis.stop();
    r.redis.restart();
    claims_recover(
        &r.a,
        &r.g,
        "after-stop",
        "nonce claims recover after a graceful restart",
    )
    .await;
    assert_eq!(code(&r.a, &before).await.as_deref(), Some("NonceReplayed"));
    assert_eq!(
        common::scrape(&r.a, "keygate_nonce_store_losses_total"),
        0.0,
        "a Redis that keeps every write never fences"
    );
    assert!(common::scrape(&r.a, "keygate_nonce_store_unavailable_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_forgot_fences_every_replica() {
    let Some(mut r) = replicas(&["--appendonly", "no"]).await else {
        return;
    };
    let captured = signed_check(&r.g, &r.g.app_secret, "captured");
    assert_eq!(code(&r.a, &captured).await, None);

    assert_eq!(r.redis.cli(&["FLUSHALL"]).as_deref(), Some("OK"));
    // The replay is refused on the replica that did not see it, and so is everything
    // else that carries a nonce, on both, until the forgotten nonces would have expired.
    assert_eq!(
        code(&r.b, &captured).await.as_deref(),
        Some("ReplayUnavailable")
    );
    assert_eq!(
        code(&r.a, &signed_check(&r.g, &r.g.app_secret, "new"))
            .await
            .as_deref(),
        Some("ReplayUnavailable")
    );
    assert_eq!(
        code(&r.a, &appcode_check(&r.g, &r.g.app_code, "x")).await,
        None
    );
    assert!(
        r.b.stderr().contains("Redis lost nonces"),
        "{}",
        r.b.stderr()
    );

    // A restart without persistence forgets the fence too; the replicas set it again.
    r.redis.kill9();
    r.redis.restart();
    for kg in [&r.a, &r.b] {
        eventually(
            "reconnected after the restart",
            Duration::from_secs(15),
            || async { common::scrape(kg, "keygate_nonce_store_up{store=\"redis\"}") == 1.0 },
        )
        .await;
        assert_eq!(
            code(kg, &captured).await.as_deref(),
            Some("ReplayUnavailable")
        );
    }
    assert!(common::scrape(&r.a, "keygate_nonce_store_losses_total") >= 1.0);
    assert!(common::scrape(&r.b, "keygate_nonce_store_losses_total") >= 1.0);
}
