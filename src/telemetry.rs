//! Metrics: atomic counters on the hot path, rendered as Prometheus text on demand.
//!
//! Owns: what is counted (decisions by result, deny code and scheme; check latency;
//! admin auth failures, admin writes; connections per listener) and the exposition
//! format. Incrementing is a relaxed atomic
//! add: no lock and no allocation per request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::decide::Decision;
use crate::deny::DenyCode;
use crate::index::IndexSizes;
use crate::scheme::SchemeKind;

/// Latency bucket upper bounds, microseconds.
const BUCKETS_US: [u64; 10] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
];
/// Scheme labels: every `SchemeKind`, then an anonymous allow, then a decision made
/// before any credential was found.
const SCHEME_LABELS: usize = SchemeKind::ALL.len() + 2;

fn scheme_label(i: usize) -> &'static str {
    match SchemeKind::ALL.get(i) {
        Some(k) => k.as_str(),
        None if i == SchemeKind::ALL.len() => "anonymous",
        None => "none",
    }
}

fn scheme_index(label: Option<&str>) -> usize {
    label
        .and_then(|l| (0..SCHEME_LABELS - 1).find(|&i| scheme_label(i) == l))
        .unwrap_or(SCHEME_LABELS - 1)
}

#[derive(Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: [AtomicU64; DenyCode::ALL.len()],
    by_scheme: [AtomicU64; SCHEME_LABELS],
    latency_buckets: [AtomicU64; BUCKETS_US.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    pub admin_auth_failures: std::sync::Arc<AtomicU64>,
    pub admin_writes: std::sync::Arc<AtomicU64>,
    /// Admin calls refused for want of a role (PERMISSION_DENIED).
    pub admin_denied: AtomicU64,
    pub connections: Connections,
}

/// Connection counters of one listener, kept by `server::conn`.
#[derive(Default)]
pub struct ConnCounters {
    /// Connections admitted and not yet closed (TLS handshakes included).
    pub open: AtomicU64,
    /// Connections closed at once because the listener was at its cap.
    pub refused: AtomicU64,
    /// Connections closed for making no progress (first-read or idle timeout).
    pub timed_out: AtomicU64,
}

/// Per-listener connection counters.
#[derive(Default)]
pub struct Connections {
    pub check: std::sync::Arc<ConnCounters>,
    pub http: std::sync::Arc<ConnCounters>,
    pub admin: std::sync::Arc<ConnCounters>,
}

impl Metrics {
    /// Counts one decision by result, deny code and scheme (an allow's, or the scheme
    /// of the credential a deny was about: `none` only when there was none).
    pub fn record(&self, decision: &Decision, elapsed_us: u64) {
        let scheme = match decision {
            Decision::Allow(a) => {
                self.allowed.fetch_add(1, Relaxed);
                Some(a.scheme)
            }
            Decision::Deny(d) => {
                let i = DenyCode::ALL.iter().position(|c| *c == d.code).unwrap_or(0);
                self.denied[i].fetch_add(1, Relaxed);
                d.scheme
            }
        };
        self.by_scheme[scheme_index(scheme)].fetch_add(1, Relaxed);
        if let Some(b) = BUCKETS_US.iter().position(|&ub| elapsed_us <= ub) {
            self.latency_buckets[b].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(elapsed_us, Relaxed);
    }

    pub fn allowed(&self) -> u64 {
        self.allowed.load(Relaxed)
    }

    pub fn denied(&self, code: DenyCode) -> u64 {
        DenyCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.denied[i].load(Relaxed))
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn render(
        &self,
        sizes: IndexSizes,
        nonces: &crate::nonce::NonceStore,
        now_ms: i64,
    ) -> String {
        let mut o = String::with_capacity(4096);
        let _ = writeln!(
            o,
            "# HELP keygate_decisions_total Check decisions by result and deny code."
        );
        let _ = writeln!(o, "# TYPE keygate_decisions_total counter");
        let _ = writeln!(
            o,
            "keygate_decisions_total{{result=\"allow\",code=\"\"}} {}",
            self.allowed()
        );
        for (i, c) in DenyCode::ALL.iter().enumerate() {
            let _ = writeln!(
                o,
                "keygate_decisions_total{{result=\"deny\",code=\"{}\"}} {}",
                c.as_str(),
                self.denied[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP keygate_decisions_by_scheme_total Check decisions by signature scheme."
        );
        let _ = writeln!(o, "# TYPE keygate_decisions_by_scheme_total counter");
        for (i, n) in self.by_scheme.iter().enumerate() {
            let _ = writeln!(
                o,
                "keygate_decisions_by_scheme_total{{scheme=\"{}\"}} {}",
                scheme_label(i),
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP keygate_check_duration_seconds Time to decide one check."
        );
        let _ = writeln!(o, "# TYPE keygate_check_duration_seconds histogram");
        let mut cumulative = 0;
        for (i, ub) in BUCKETS_US.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(
                o,
                "keygate_check_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *ub as f64 / 1e6
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            o,
            "keygate_check_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "keygate_check_duration_seconds_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "keygate_check_duration_seconds_count {count}");
        let _ = writeln!(
            o,
            "# HELP keygate_index_entries Entities in the in-memory index."
        );
        let _ = writeln!(o, "# TYPE keygate_index_entries gauge");
        for (k, v) in [
            ("apps", sizes.apps),
            ("keys", sizes.keys),
            ("apis", sizes.apis),
            ("grants", sizes.grants),
        ] {
            let _ = writeln!(o, "keygate_index_entries{{kind=\"{k}\"}} {v}");
        }
        render_nonces(&mut o, nonces, now_ms);
        let _ = writeln!(
            o,
            "# HELP keygate_admin_auth_failures_total Admin calls refused for a missing or wrong token."
        );
        let _ = writeln!(o, "# TYPE keygate_admin_auth_failures_total counter");
        let _ = writeln!(
            o,
            "keygate_admin_auth_failures_total {}",
            self.admin_auth_failures.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP keygate_admin_permission_denied_total Admin calls refused for want of a role."
        );
        let _ = writeln!(o, "# TYPE keygate_admin_permission_denied_total counter");
        let _ = writeln!(
            o,
            "keygate_admin_permission_denied_total {}",
            self.admin_denied.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP keygate_admin_writes_total Admin writes committed (each one durable transaction)."
        );
        let _ = writeln!(o, "# TYPE keygate_admin_writes_total counter");
        let _ = writeln!(
            o,
            "keygate_admin_writes_total {}",
            self.admin_writes.load(Relaxed)
        );
        let listeners = [
            ("check", &self.connections.check),
            ("http", &self.connections.http),
            ("admin", &self.connections.admin),
        ];
        for (name, help, kind, get) in [
            (
                "keygate_connections",
                "Open connections per listener.",
                "gauge",
                (|c: &ConnCounters| c.open.load(Relaxed)) as fn(&ConnCounters) -> u64,
            ),
            (
                "keygate_connections_refused_total",
                "Connections closed at once: the listener was at its connection cap.",
                "counter",
                |c| c.refused.load(Relaxed),
            ),
            (
                "keygate_connections_timed_out_total",
                "Connections closed for making no progress (first-read or idle timeout).",
                "counter",
                |c| c.timed_out.load(Relaxed),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
            for (l, c) in listeners {
                let _ = writeln!(o, "{name}{{listener=\"{l}\"}} {}", get(c));
            }
        }
        o
    }
}

/// One gauge or counter with its help and type lines.
fn metric(o: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    let _ = writeln!(o, "{name} {value}");
}

/// The nonce store: whether it answers, what it refused and lost, and for the
/// in-process cache its fill (per-key pressure as counts of keys by fill level:
/// bounded labels, however many keys there are).
fn render_nonces(o: &mut String, nonces: &crate::nonce::NonceStore, now_ms: i64) {
    let store = nonces.kind().as_str();
    let _ = writeln!(
        o,
        "# HELP keygate_nonce_store_up Whether the nonce store answers claims (1) or not (0)."
    );
    let _ = writeln!(o, "# TYPE keygate_nonce_store_up gauge");
    let _ = writeln!(
        o,
        "keygate_nonce_store_up{{store=\"{store}\"}} {}",
        u8::from(nonces.health(now_ms).is_ok())
    );
    let m = nonces.metrics();
    for (name, help, v) in [
        (
            "keygate_nonce_store_unavailable_total",
            "Nonce claims refused because the store could not answer (ReplayUnavailable).",
            &m.unavailable,
        ),
        (
            "keygate_nonce_store_fenced_total",
            "Nonce claims refused because the store had lost nonces (ReplayUnavailable).",
            &m.fenced,
        ),
        (
            "keygate_nonce_store_losses_total",
            "Times the nonce store was found to have lost nonces (OS crash, Redis flush or lossy restart).",
            &m.losses,
        ),
    ] {
        metric(o, name, "counter", help, v.load(Relaxed));
    }
    let Some(cache) = nonces.cache() else {
        return;
    };
    let keys = cache.key_pressure();
    for (name, help, v) in [
        (
            "keygate_replay_cache_entries",
            "Nonces remembered.",
            cache.len(),
        ),
        (
            "keygate_replay_cache_capacity",
            "Most nonces the cache holds.",
            cache.capacity(),
        ),
        (
            "keygate_replay_per_key_capacity",
            "Most live nonces one key may hold.",
            cache.per_key(),
        ),
        (
            "keygate_replay_keys",
            "Keys holding live nonces.",
            keys.keys,
        ),
        (
            "keygate_replay_keys_half",
            "Keys at half their share or more.",
            keys.half,
        ),
        (
            "keygate_replay_keys_ninety",
            "Keys at 90% of their share or more.",
            keys.ninety,
        ),
        (
            "keygate_replay_keys_full",
            "Keys at their whole share: their nonce-carrying requests are refused.",
            keys.full,
        ),
    ] {
        metric(o, name, "gauge", help, v);
    }
}

#[cfg(feature = "etcd")]
/// The etcd view: its revision and age, and how often it had to watch again, relist,
/// repair or retry a write.
pub fn render_etcd(o: &mut String, etcd: &crate::store::etcd::Remote) {
    let (revision, age_ms) = etcd.position();
    metric(
        o,
        "keygate_store_view_revision",
        "gauge",
        "The etcd revision the local view has applied.",
        revision,
    );
    metric(
        o,
        "keygate_store_view_age_seconds",
        "gauge",
        "Seconds since etcd last answered (how stale the view may be).",
        age_ms.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0),
    );
    let m = &etcd.metrics;
    for (name, help, v) in [
        (
            "keygate_store_watch_restarts_total",
            "Times the etcd watch ended and was started again from the last applied revision.",
            &m.watch_restarts,
        ),
        (
            "keygate_store_relists_total",
            "Full lists of etcd applied to the view (first start, compaction, anti-entropy).",
            &m.relists,
        ),
        (
            "keygate_store_antientropy_repairs_total",
            "Records the periodic comparison found different from etcd and repaired.",
            &m.repairs,
        ),
        (
            "keygate_store_write_retries_total",
            "Admin writes that lost a race with another replica and ran again.",
            &m.write_retries,
        ),
        (
            "keygate_store_write_batches_total",
            "etcd transactions that committed admin writes (writes arriving together share one).",
            &m.write_batches,
        ),
        (
            "keygate_store_batched_writes_total",
            "Admin writes committed, counted per write (divide by the batches for the mean batch).",
            &m.batched_writes,
        ),
    ] {
        metric(o, name, "counter", help, v.load(Relaxed));
    }
}
