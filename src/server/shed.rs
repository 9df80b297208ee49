//! Load shedding on the check listener: a global bound on Check calls in progress.
//!
//! Owns: the in-flight count and the admission decision. `Shed<S>` wraps the Check
//! service as a tower service. A call takes its slot when its task first runs (before
//! its body is read) and keeps it until its response is produced or the call is
//! dropped. Right after taking the slot the call yields once, going to the back of
//! the runtime's queue: so when the workers are saturated, the calls admitted but not
//! yet decided hold slots, and the count measures the real backlog (calls waiting for
//! a worker, plus calls still receiving their body) instead of only the few running.
//! Tasks not yet polled at all are bounded per connection by HTTP/2
//! `max_concurrent_streams`.
//!
//! A call over the limit is not refused with a gRPC error: it is marked (`Overloaded`
//! in the request extensions) and the Check front door answers it at once with a
//! proper deny (`Overloaded`, HTTP 503, gRPC RESOURCE_EXHAUSTED) without running the
//! pipeline, so Envoy (with `failure_mode_allow: false`) denies the request and the
//! client sees why.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tower::Service;

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

/// Marker in a request's extensions: the listener was full when it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Overloaded {
    pub limit: usize,
}

/// A service whose calls are counted against `InFlight`.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    in_flight: Arc<InFlight>,
}

impl<S> Shed<S> {
    pub fn new(inner: S, in_flight: Arc<InFlight>) -> Self {
        Self { inner, in_flight }
    }
}

impl<S: NamedService> NamedService for Shed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let slot = self.in_flight.try_acquire();
        if slot.is_none() {
            req.extensions_mut().insert(Overloaded {
                limit: self.in_flight.max(),
            });
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            if slot.is_some() {
                // To the back of the queue holding the slot: see the module doc.
                tokio::task::yield_now().await;
            }
            let out = fut.await;
            drop(slot);
            out
        })
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
