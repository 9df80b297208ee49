//! The no-op baseline: an Envoy `Authorization/Check` server on the same tonic stack as
//! keygate (and an HTTP listener on the same axum stack) that answers OK without
//! looking at the request. Run as a child process (`keygate-bench noop-server`) with
//! the same runtime keygate uses, so the ratio keygate ÷ no-op isolates keygate's work.

use std::path::Path;

use axum::serve::ListenerExt as _;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::google::rpc;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::error::{Context, Result};
use crate::spawn::write_ready;

struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(
        &self,
        _req: Request<CheckRequest>,
    ) -> std::result::Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: tonic::Code::Ok as i32,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        }))
    }
}

/// Serves until killed: gRPC Check on one port, HTTP 200-for-everything on another.
pub fn serve(ready_file: &Path) -> Result<()> {
    // keygate's runtime: `Runtime::new()`, one worker per core.
    let rt = tokio::runtime::Runtime::new().ctx("start the runtime")?;
    rt.block_on(async {
        let check = TcpListener::bind("127.0.0.1:0").await.ctx("bind check")?;
        let http = TcpListener::bind("127.0.0.1:0").await.ctx("bind http")?;
        let addrs = [
            ("check", check.local_addr().ctx("check address")?),
            ("http", http.local_addr().ctx("http address")?),
        ];
        let grpc = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Noop))
            // keygate's listeners: Nagle off on every accepted connection.
            .serve_with_incoming(TcpIncoming::from(check).with_nodelay(Some(true)));
        let router = axum::Router::new().fallback(|| async { "" });
        let http = axum::serve(
            http.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            router,
        );
        write_ready(ready_file, &addrs)?;
        let (g, h) = tokio::join!(grpc, async { http.await });
        g.ctx("no-op gRPC server")?;
        h.ctx("no-op HTTP server")
    })
}
