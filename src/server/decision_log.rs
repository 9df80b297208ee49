//! The decision log: one info-level line per decision (`target: keygate::decision`),
//! rate-limited.
//!
//! Owns: which decisions are logged (`--decision-log all|denies|off`), the fields of a
//! line, and the limit of `--decision-log-rate` lines per second. Past the limit lines
//! are counted instead, and the next line written says how many were left out
//! (`suppressed`), so a flood costs a bounded amount of disk and nothing is lost from
//! the count. A line holds the request id, the result, the deny code, the scheme, the
//! app, key, API and stage when known, the method, host and path (never the query,
//! which can carry an AppCode or a presigned signature), and the time taken. Never a
//! header, a body or a secret.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::config::DecisionLog as Mode;
use crate::decide::Decision;
use crate::request::RequestView;

pub struct DecisionLog {
    mode: Mode,
    per_second: u32,
    started: Instant,
    /// The second (since `started`) that `used` counts lines of.
    window: AtomicU64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl DecisionLog {
    pub fn new(mode: Mode, per_second: u32) -> Self {
        Self {
            mode,
            per_second: per_second.max(1),
            started: Instant::now(),
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Logs `decision` if the mode wants it and the rate allows. `view` is `None` for a
    /// deny a front door made before it had one (shed, timed out).
    pub fn record(
        &self,
        view: Option<&RequestView>,
        request_id: &str,
        decision: &Decision,
        elapsed_us: u64,
    ) {
        let wanted = match (self.mode, decision) {
            (Mode::Off, _) | (Mode::Denies, Decision::Allow(_)) => false,
            (Mode::All, _) | (Mode::Denies, Decision::Deny(_)) => true,
        };
        if !wanted {
            return;
        }
        let Some(suppressed) = self.admit_at(self.started.elapsed().as_secs()) else {
            return;
        };
        let (method, host, path) = view.map_or(("", "", ""), |v| {
            (v.method.as_str(), v.host.as_str(), v.path.as_str())
        });
        // One schema for every line (empty where a field does not apply), so a log
        // pipeline can index it without guessing.
        let (result, code, scheme, app_id, app_key, api_id, stage, reason) = match decision {
            Decision::Allow(a) => (
                "allow",
                "",
                a.scheme,
                a.app_id.as_str(),
                a.app_key.as_str(),
                a.api_id.as_str(),
                a.stage.as_str(),
                "",
            ),
            Decision::Deny(d) => (
                "deny",
                d.code.as_str(),
                d.scheme.unwrap_or("none"),
                d.app_id.as_deref().unwrap_or(""),
                "",
                "",
                "",
                d.message.as_str(),
            ),
        };
        tracing::info!(
            target: "keygate::decision",
            request_id,
            result,
            code,
            scheme,
            app_id,
            app_key,
            api_id,
            stage,
            reason,
            method,
            host,
            path,
            elapsed_us,
            suppressed,
            "decision"
        );
    }

    /// A slot in second `now`'s budget: `Some(lines left out since the last one
    /// written)`, or `None` (counted) when the budget is spent.
    fn admit_at(&self, now: u64) -> Option<u64> {
        let window = self.window.load(Relaxed);
        if window != now
            && self
                .window
                .compare_exchange(window, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.used.store(0, Relaxed);
        }
        if self.used.fetch_add(1, Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_rate_lines_are_counted_not_lost() {
        let log = DecisionLog::new(Mode::All, 3);
        let first: Vec<Option<u64>> = (0..10).map(|_| log.admit_at(0)).collect();
        assert_eq!(first.iter().filter(|a| a.is_some()).count(), 3, "{first:?}");
        // The next second's first line reports the seven left out, once.
        assert_eq!(log.admit_at(1), Some(7));
        assert_eq!(log.admit_at(1), Some(0));
    }
}
