//! Who uses what, kept cheaply on the check path: each key pair's last allowed
//! request, and decision counts per API and per app for `/metrics`.
//!
//! Owns: the in-memory records and their bounds. A Check touches one map entry per
//! record, under a read lock, and writes a key's time only when it moved by a second
//! or more, so a busy key costs an atomic load. The times are written to the store
//! in batches (`take_unflushed`, every `FLUSH_EVERY` and at shutdown), so after a
//! crash up to that much use is not remembered. Per-API and per-app counts stop
//! taking new labels at `LABELS` each (the rest are counted under `_other`), so
//! the metrics' cardinality is bounded whatever the callers do.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::decide::Decision;

/// How often last-use times go to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Distinct APIs (and apps) counted by name in `/metrics`.
pub const LABELS: usize = 200;

/// A key's time is rewritten only when it moved by this much.
const RESOLUTION_MS: i64 = 1000;

#[derive(Default)]
struct KeyUse {
    last_ms: AtomicI64,
    flushed_ms: AtomicI64,
}

/// Allow and deny counts per label, at most `cap` labels.
struct Bounded {
    cap: usize,
    map: RwLock<HashMap<String, [AtomicU64; 2]>>,
    other: [AtomicU64; 2],
}

impl Bounded {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            map: RwLock::default(),
            other: Default::default(),
        }
    }

    fn count(&self, label: &str, allowed: bool) {
        let i = usize::from(!allowed);
        if let Some(c) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(label)
        {
            c[i].fetch_add(1, Relaxed);
            return;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.cap && !map.contains_key(label) {
            self.other[i].fetch_add(1, Relaxed);
            return;
        }
        map.entry(label.to_owned()).or_default()[i].fetch_add(1, Relaxed);
    }

    fn render(&self, o: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} counter");
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<(&str, &[AtomicU64; 2])> =
            map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        rows.sort_by_key(|(k, _)| *k);
        rows.push(("_other", &self.other));
        for (value, counts) in rows {
            // Ids are [a-z0-9_-]; escaped anyway, a label must not break the format.
            let value = value.replace('\\', "\\\\").replace('"', "\\\"");
            for (i, result) in ["allow", "deny"].iter().enumerate() {
                let _ = writeln!(
                    o,
                    "{name}{{{label}=\"{value}\",result=\"{result}\"}} {}",
                    counts[i].load(Relaxed)
                );
            }
        }
    }
}

pub struct Usage {
    keys: RwLock<HashMap<String, KeyUse>>,
    apis: Bounded,
    apps: Bounded,
}

impl Default for Usage {
    fn default() -> Self {
        Self::new(LABELS)
    }
}

impl Usage {
    pub fn new(labels: usize) -> Self {
        Self {
            keys: RwLock::default(),
            apis: Bounded::new(labels),
            apps: Bounded::new(labels),
        }
    }

    /// Records one decision made at `now_ms`.
    pub fn record(&self, decision: &Decision, now_ms: i64) {
        match decision {
            Decision::Allow(a) => {
                if !a.app_key.is_empty() {
                    self.touch(&a.app_key, now_ms);
                }
                self.apis.count(&a.api_id, true);
                if !a.app_id.is_empty() {
                    self.apps.count(&a.app_id, true);
                }
            }
            // Only a caller that proved who it is is counted under its app.
            Decision::Deny(d) => {
                if let Some(app) = &d.app_id {
                    self.apps.count(app, false);
                }
            }
        }
    }

    fn touch(&self, app_key: &str, now_ms: i64) {
        if let Some(u) = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(app_key)
        {
            if now_ms - u.last_ms.load(Relaxed) >= RESOLUTION_MS {
                u.last_ms.fetch_max(now_ms, Relaxed);
            }
            return;
        }
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(app_key.to_owned())
            .or_default()
            .last_ms
            .fetch_max(now_ms, Relaxed);
    }

    /// The last allowed request with `app_key` this process saw, if any.
    pub fn last_used(&self, app_key: &str) -> Option<i64> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(app_key)
            .map(|u| u.last_ms.load(Relaxed))
            .filter(|ms| *ms > 0)
    }

    /// The times not yet written to the store, marked written. If writing them
    /// fails, `unflush` puts them back.
    pub fn take_unflushed(&self) -> Vec<(String, i64)> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter()
            .filter_map(|(k, u)| {
                let last = u.last_ms.load(Relaxed);
                (last > u.flushed_ms.swap(last, Relaxed)).then(|| (k.clone(), last))
            })
            .collect()
    }

    pub fn unflush(&self, batch: &[(String, i64)]) {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        for (k, _) in batch {
            if let Some(u) = keys.get(k) {
                u.flushed_ms.store(0, Relaxed);
            }
        }
    }

    /// Forgets key pairs that no longer exist (`exists` says which do).
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| exists(k));
    }

    pub fn render(&self, o: &mut String) {
        self.apis.render(
            o,
            "keygate_decisions_by_api_total",
            "api",
            "Allowed Check decisions by API id (at most 200 APIs; the rest under _other).",
        );
        self.apps.render(
            o,
            "keygate_decisions_by_app_total",
            "app",
            "Check decisions by app id, for callers whose signature verified (at most 200 apps; the rest under _other).",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let b = Bounded::new(2);
        for l in ["a", "b", "c", "d", "a"] {
            b.count(l, true);
        }
        let mut o = String::new();
        b.render(&mut o, "m", "api", "h");
        assert!(o.contains("m{api=\"a\",result=\"allow\"} 2"), "{o}");
        assert!(o.contains("m{api=\"_other\",result=\"allow\"} 2"), "{o}");
        assert!(!o.contains("api=\"c\""), "{o}");
    }

    #[test]
    fn key_times_move_by_the_second_and_flush_once() {
        let u = Usage::new(10);
        u.touch("k", 10_000);
        u.touch("k", 10_500);
        assert_eq!(u.last_used("k"), Some(10_000));
        u.touch("k", 11_000);
        assert_eq!(u.last_used("k"), Some(11_000));
        assert_eq!(u.take_unflushed(), vec![("k".to_owned(), 11_000)]);
        assert!(u.take_unflushed().is_empty());
        u.touch("k", 20_000);
        let batch = u.take_unflushed();
        u.unflush(&batch);
        assert_eq!(u.take_unflushed(), batch);
        u.retain(|_| false);
        assert_eq!(u.last_used("k"), None);
    }
}
