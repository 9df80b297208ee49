//! Admin writes on etcd, batched: the writes that arrive while one etcd transaction is
//! in flight share the next one.
//!
//! Owns: the round (the writes staged for the next transaction), who may join it, and
//! the one task that commits it. Every write still runs its own closure against the
//! local view, in a transaction that first replays the round's pending operations, so
//! it checks its invariants (unique names, parents, cascades, dense audit ids) against
//! the state it will land in. The round commits as one txn guarded by `<prefix>/rev`,
//! as a single write does: if another replica wrote meanwhile, every write of the round
//! runs again on the newer view. Only one transaction is in flight per replica, and no
//! write stages while it is: the view is about to move.
//!
//! What may join a round that already holds writes: a write whose reads outside its
//! transaction (`prepare`, e.g. a cascade's range scan) are declared and untouched by
//! the pending operations. A write that reads anything else waits for an empty round,
//! so its reads are exact. A write refused (or with nothing to do) on top of pending
//! operations waits for them to commit before it answers, since it may have seen them:
//! if they did not commit, it runs again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sled::Transactional;
use sled::transaction::TransactionError;
use tokio::sync::{Mutex, watch};

use super::codec::join;
use super::etcd::Remote;
use super::schema::Tree;
use super::{Engine, Reads, StagedOp, Stamp, Store, StoreError, Tx, TxResult, abort};

#[derive(Clone, Debug)]
enum Outcome {
    Committed,
    /// Another replica wrote first: every write of the round runs again.
    Lost,
    Failed {
        precondition: bool,
        message: String,
        /// The round held several writes: a refusal of its size may be theirs together.
        shared: bool,
    },
}

impl Outcome {
    fn error(precondition: bool, message: String) -> StoreError {
        if precondition {
            StoreError::FailedPrecondition(message)
        } else {
            StoreError::Unavailable(message)
        }
    }
}

/// The writes staged for the next transaction.
struct Round {
    /// The `rev` mod revision of the view the round's first write read.
    base: i64,
    /// The audit id the next write of the round gets.
    next_audit: u64,
    ops: Vec<StagedOp>,
    writes: u64,
    /// Nobody else may join: a write that was refused for size in a shared round.
    solo: bool,
    done: watch::Sender<Option<Outcome>>,
}

#[derive(Default)]
struct State {
    round: Option<Round>,
    /// While a round's transaction is in flight: its outcome.
    committing: Option<watch::Receiver<Option<Outcome>>>,
}

/// The rounds of one store on etcd.
#[derive(Default)]
pub(crate) struct Batcher {
    state: Arc<Mutex<State>>,
    /// Writes waiting for an empty round: while there are any, nobody else starts one,
    /// or under steady load they would wait for ever. Outside the lock, with a guard,
    /// so a cancelled waiter cannot leave it counted.
    waiting_for_empty: std::sync::atomic::AtomicUsize,
}

/// Counts a write in `waiting_for_empty` until dropped.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether `ops` write any key `reads` declared.
fn touched(ops: &[StagedOp], reads: &[(Tree, &str)]) -> bool {
    reads.iter().any(|(tree, id)| {
        let prefix = join(&[id, ""]);
        ops.iter().any(|op| match op {
            StagedOp::Put(t, k, _) | StagedOp::Del(t, k) => t == tree && k.starts_with(&prefix),
        })
    })
}

/// Runs `f` against the view with `pending` applied first, rolled back; returns its
/// value and the operations it added.
fn stage<P, T>(
    engine: &Engine,
    pending: &[StagedOp],
    stamp: &Stamp,
    prepared: &P,
    f: &impl Fn(&Tx<'_>, &P) -> TxResult<T>,
) -> Result<(T, Vec<StagedOp>), StoreError> {
    let staged = std::cell::RefCell::new(Vec::new());
    let out = std::cell::RefCell::new(None);
    let run = engine.trees.as_slice().transaction(|trees| {
        for op in pending {
            match op {
                StagedOp::Put(t, k, v) => drop(trees[t.idx()].insert(k.as_slice(), v.as_slice())?),
                StagedOp::Del(t, k) => drop(trees[t.idx()].remove(k.as_slice())?),
            }
        }
        staged.borrow_mut().clear();
        let value = f(
            &Tx {
                trees,
                stamp,
                staged: Some(&staged),
            },
            prepared,
        )?;
        *out.borrow_mut() = Some(value);
        // Roll back: the view changes only through etcd's watch.
        abort::<()>(StoreError::Unavailable(String::new()))
    });
    match run {
        Err(TransactionError::Abort(StoreError::Unavailable(m))) if m.is_empty() => {}
        Err(e) => return Err(e.into()),
        Ok(_) => {
            return Err(StoreError::corrupt(
                "view",
                "a staged write committed locally",
            ));
        }
    }
    let value = out
        .into_inner()
        .ok_or_else(|| StoreError::corrupt("view", "a staged write left no result"))?;
    Ok((value, staged.into_inner()))
}

async fn outcome(mut rx: watch::Receiver<Option<Outcome>>, limit: Duration) -> Outcome {
    match tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await {
        Ok(Ok(o)) => o.clone().unwrap_or(Outcome::Lost),
        // The committer is gone or hung: the write may or may not have landed.
        _ => Outcome::Failed {
            shared: false,
            precondition: false,
            message: "etcd: the write's transaction did not finish in time; it may or may \
                      not have committed: read it back"
                .into(),
        },
    }
}

/// Seals `state`'s round once the writes ready to join it have, and commits it. A
/// task of its own, so a write whose caller went away cannot strand the others.
fn spawn_committer(state: Arc<Mutex<State>>, remote: Arc<Remote>) {
    tokio::spawn(async move {
        // Let writers already woken stage into this round first (the lock is fair).
        for _ in 0..2 {
            tokio::task::yield_now().await;
        }
        let round = {
            let mut st = state.lock().await;
            let Some(round) = st.round.take() else {
                return;
            };
            st.committing = Some(round.done.subscribe());
            round
        };
        let last_audit = round.next_audit.saturating_sub(1);
        let result = remote.commit(round.base, last_audit, &round.ops).await;
        let outcome = match result {
            Ok(true) => {
                remote.metrics.write_batches.fetch_add(1, Ordering::Relaxed);
                remote
                    .metrics
                    .batched_writes
                    .fetch_add(round.writes, Ordering::Relaxed);
                Outcome::Committed
            }
            Ok(false) => Outcome::Lost,
            Err(e) => Outcome::Failed {
                shared: round.writes > 1,
                precondition: matches!(e, StoreError::FailedPrecondition(_)),
                message: match e {
                    StoreError::FailedPrecondition(m) | StoreError::Unavailable(m) => m,
                    other => other.to_string(),
                },
            },
        };
        state.lock().await.committing = None;
        round.done.send_replace(Some(outcome));
    });
}

impl Store {
    /// A write on etcd: staged into the current round (see the module), committed with
    /// it, run again if the round lost a race, within the time limit.
    pub(super) async fn write_to_etcd<P, T>(
        &self,
        remote: &Arc<Remote>,
        reads: Reads<'_>,
        prepare: impl Fn() -> Result<P, StoreError>,
        f: impl Fn(&Tx<'_>, &P) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + remote.timeout();
        let wait = remote.timeout() * 2;
        let budget = remote.max_staged_ops();
        let mut attempt = 0u32;
        let mut alone = false;
        let mut waiting: Option<Waiting<'_>> = None;
        while tokio::time::Instant::now() < deadline {
            let mut st = self.batcher.state.lock().await;
            if let Some(rx) = st.committing.clone() {
                // The committer clears this before it answers; a sender gone with the
                // mark still set is a committer that died: clear it, or no write would
                // ever stage again.
                if rx.has_changed().is_err() {
                    st.committing = None;
                } else {
                    drop(st);
                    outcome(rx, wait).await;
                    continue;
                }
            }
            if let Some(round) = &st.round {
                let must_wait = alone
                    || round.solo
                    || match reads {
                        Reads::Nothing => false,
                        Reads::Under(r) => touched(&round.ops, r),
                        Reads::Anything => true,
                    }
                    || round.ops.len() >= budget;
                if must_wait {
                    let rx = round.done.subscribe();
                    drop(st);
                    if waiting.is_none() {
                        waiting = Some(Waiting::new(&self.batcher.waiting_for_empty));
                    }
                    outcome(rx, wait).await;
                    continue;
                }
            } else if waiting.is_none() && self.batcher.waiting_for_empty.load(Ordering::SeqCst) > 0
            {
                // A write waits for an empty round: let it start this one.
                drop(st);
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            // From here this write stages: it no longer waits for an empty round.
            waiting = None;
            attempt += 1;
            let engine = self.engine()?;
            let (base, next_audit, pending) = match &st.round {
                Some(r) => (r.base, r.next_audit, r.ops.as_slice()),
                // Read before anything the write reads: if the view moves on meanwhile,
                // the txn's compare fails and the write runs again on the newer view.
                None => (
                    remote.view_rev_mod(),
                    engine.next_audit_id.load(Ordering::Relaxed),
                    &[][..],
                ),
            };
            let stamp = Stamp {
                audit_id: next_audit,
                now_ms: self.now_ms(),
            };
            // Again on every attempt: a cascade's members may have changed.
            let staged = prepare().and_then(|p| stage(&engine, pending, &stamp, &p, &f));
            let (value, ops) = match staged {
                Ok((value, ops)) if !ops.is_empty() => (value, ops),
                // Nothing to write, or refused: final, unless it saw pending writes.
                done => match st.round.as_ref() {
                    None => return done.map(|(v, _)| v),
                    Some(round) => {
                        let rx = round.done.subscribe();
                        drop(st);
                        match outcome(rx, wait).await {
                            Outcome::Committed => return done.map(|(v, _)| v),
                            _ => continue,
                        }
                    }
                },
            };
            if st
                .round
                .as_ref()
                .is_some_and(|r| r.ops.len() + ops.len() > budget)
            {
                let rx = st.round.as_ref().map(|r| r.done.subscribe());
                drop(st);
                if let Some(rx) = rx {
                    outcome(rx, wait).await;
                }
                continue;
            }
            let audited = ops
                .iter()
                .any(|op| matches!(op, StagedOp::Put(Tree::Audit, ..)));
            let first = st.round.is_none();
            let round = st.round.get_or_insert_with(|| Round {
                base,
                next_audit,
                ops: Vec::new(),
                writes: 0,
                solo: alone,
                done: watch::Sender::new(None),
            });
            round.ops.extend(ops);
            round.writes += 1;
            if audited {
                round.next_audit = stamp.audit_id.saturating_add(1);
            }
            let rx = round.done.subscribe();
            drop(st);
            if first {
                spawn_committer(self.batcher.state.clone(), remote.clone());
            }
            match outcome(rx, wait).await {
                Outcome::Committed => return Ok(value),
                Outcome::Lost => {
                    remote.wait_past(base).await;
                    // The replica that won has its view first and would win again at
                    // once: a random pause, growing with the losses, lets the others in.
                    remote.back_off(attempt).await;
                }
                // Refused for its size with other writes: try again on its own, where
                // only its own size counts.
                Outcome::Failed {
                    precondition: true,
                    shared: true,
                    ..
                } if !alone => alone = true,
                Outcome::Failed {
                    precondition,
                    message,
                    ..
                } => return Err(Outcome::error(precondition, message)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "etcd: the write lost {attempt} races with other replicas within the time limit; retry"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_reads_meet_pending_writes_only_under_their_ids() {
        let ops = vec![
            StagedOp::Put(Tree::GrantsByApp, join(&["app1", "g1"]), vec![]),
            StagedOp::Del(Tree::Keys, b"K1".to_vec()),
        ];
        assert!(touched(&ops, &[(Tree::GrantsByApp, "app1")]));
        // Not another app whose id starts the same, nor another tree.
        assert!(!touched(&ops, &[(Tree::GrantsByApp, "app")]));
        assert!(!touched(&ops, &[(Tree::GrantsByTarget, "app1")]));
    }
}
