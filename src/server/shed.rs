//! Load shedding: a bound on check calls in progress on one listener.
//!
//! Owns: the in-flight count and the admission decision. A call takes a `Slot` when
//! it arrives and keeps it until its answer is produced or the call is dropped. On the
//! check listener the slot is taken as the connection reads the call's headers
//! (`door::grpc::CheckServer`), before the call's task is scheduled and before its
//! body is read, so the count measures the real backlog: calls waiting for a worker
//! plus calls still receiving their body. Streams not yet read at all are bounded per
//! connection by HTTP/2 `max_concurrent_streams`.
//!
//! A call over the limit is not refused with an error: the front door answers it at
//! once with a proper deny (`Overloaded`, HTTP 503, gRPC RESOURCE_EXHAUSTED) without
//! running the pipeline, so Envoy (with `failure_mode_allow: false`) denies the request
//! and the client sees why.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The in-flight count of one listener and its bound.
#[derive(Debug)]
pub struct InFlight {
    current: AtomicUsize,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            current: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot if one is free. Never waits.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut cur = self.current.load(Ordering::Relaxed);
        loop {
            if cur >= self.max {
                return None;
            }
            match self.current.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    /// Calls in progress now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// One admitted call; frees its slot on drop.
#[derive(Debug)]
pub struct Slot(Arc<InFlight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_returned() {
        let f = InFlight::new(2);
        let a = f.try_acquire().unwrap();
        let b = f.try_acquire().unwrap();
        assert!(f.try_acquire().is_none());
        assert_eq!(f.current(), 2);
        drop(a);
        let c = f.try_acquire().unwrap();
        assert!(f.try_acquire().is_none());
        drop((b, c));
        assert_eq!(f.current(), 0);
    }
}
