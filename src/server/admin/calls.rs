//! The door of the admin service: authenticate every call, then log it.
//!
//! Owns: `Logged<S>`, a tower service around the admin service. It finds the caller
//! (`auth`), refuses a call without a valid token (UNAUTHENTICATED), hands the
//! `Caller` to the handlers in the request's extensions, and writes one info line per
//! call (`target: keygate::admin`): principal, RPC, outcome, time taken. The outcome
//! is the `grpc-status` of the response headers: every refusal and error of a unary
//! call is answered that way (trailers-only); a call whose headers carry none
//! succeeded (its OK travels in the trailers). Never a request field: they may hold
//! secrets.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tower::Service;

use super::auth::AdminAuth;

#[derive(Clone)]
pub struct Logged<S> {
    inner: S,
    auth: AdminAuth,
}

impl<S> Logged<S> {
    pub fn new(inner: S, auth: AdminAuth) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for Logged<S> {
    const NAME: &'static str = S::NAME;
}

/// The gRPC code name of a `grpc-status` value (none: OK).
fn code_name(status: Option<&http::HeaderValue>) -> &'static str {
    let code = status
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    crate::pb::code_name(code)
}

impl<S, B, R> Service<http::Request<B>> for Logged<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let rpc = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let info = req.extensions().get::<crate::server::conn::PeerInfo>();
        let peer = info.map(|i| i.remote_addr.to_string()).unwrap_or_default();
        let subject = info.and_then(|i| i.client_subject.clone());
        let started = std::time::Instant::now();
        let Some(caller) = self.auth.authenticate(req.headers(), subject.as_deref()) else {
            tracing::warn!(
                target: "keygate::admin",
                principal = "-",
                rpc = %rpc,
                code = "UNAUTHENTICATED",
                latency_us = 0u64,
                peer = %peer,
                "admin call refused: missing or invalid bearer token, and no principal's client certificate"
            );
            let refused = tonic::Status::unauthenticated(
                "missing or invalid admin token (authorization: Bearer <token>), and no principal has this client certificate's subject",
            )
            .into_http::<R>();
            return Box::pin(async move { Ok(refused) });
        };
        let principal = caller.actor.clone();
        req.extensions_mut().insert(caller);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let code = match &out {
                Ok(resp) => code_name(resp.headers().get("grpc-status")),
                Err(_) => "INTERNAL",
            };
            tracing::info!(
                target: "keygate::admin",
                principal = %principal,
                rpc = %rpc,
                code,
                latency_us,
                peer = %peer,
                "admin call"
            );
            out
        })
    }
}
