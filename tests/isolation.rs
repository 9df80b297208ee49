//! Admin isolation: the check and http listeners expose no admin operation, and the
//! admin listener refuses every call without the right token, logging and counting it.
//!
//! The list of admin methods comes from the service's own descriptor (the one the
//! server registers for reflection), so a method added later is covered without
//! touching this test. Each method is called raw (an empty message to
//! `/keygate.admin.v1.Admin/<Method>`):
//! * on the check listener, with and without the token: `UNIMPLEMENTED`;
//! * on the admin listener without a token and with a wrong one: `UNAUTHENTICATED`,
//!   every refusal counted in `keygate_admin_auth_failures_total` and logged;
//! * on the admin listener with the token: anything but `UNIMPLEMENTED` (the control
//!   that the path names a real method).
//!
//! Reflection on the check listener lists no admin service and cannot describe one;
//! the http listener answers 404 to admin-looking paths and does not speak gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::Keygate;
use prost::Message as _;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const ADMIN_SERVICE: &str = "keygate.admin.v1.Admin";

/// Every method of the admin service, from the compiled descriptor set.
fn admin_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(keygate::pb::ADMIN_DESCRIPTOR_SET)
        .expect("admin descriptor set");
    let methods: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "keygate.admin.v1")
        .flat_map(|f| f.service.iter())
        .filter(|s| s.name() == "Admin")
        .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
        .collect();
    // Guard against an empty loop: the API has over thirty methods.
    assert!(methods.len() >= 30, "admin methods: {methods:?}");
    methods
}

/// Calls `/<service>/<method>` with an empty message and `token` (if any); returns the
/// status code (`Ok` on success).
async fn raw_call(ch: &Channel, service: &str, method: &str, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.expect("channel ready");
    let path: http::uri::PathAndQuery = format!("/{service}/{method}").parse().unwrap();
    let mut req = tonic::Request::new(());
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
        req.metadata_mut().insert("authorization", v);
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(req, path, codec).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Services the reflection endpoint at `addr` lists, and whether it can describe
/// `symbol`.
async fn reflect(addr: SocketAddr, symbol: &str) -> (Vec<String>, bool) {
    let mut client = ServerReflectionClient::new(common::channel(addr).await);
    let reqs = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        },
    ];
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .expect("reflection call")
        .into_inner();
    let mut services = Vec::new();
    let mut described = false;
    loop {
        // tonic's reflection ends the stream with NOT_FOUND for an unknown symbol.
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(s) if s.code() == Code::NotFound => break,
            Err(s) => panic!("reflection: {s:?}"),
        };
        match msg.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                services.extend(l.service.into_iter().map(|s| s.name));
            }
            Some(MessageResponse::FileDescriptorResponse(f)) => {
                described = !f.file_descriptor_proto.is_empty();
            }
            Some(MessageResponse::ErrorResponse(_)) => {}
            other => panic!("unexpected reflection answer: {other:?}"),
        }
    }
    (services, described)
}

/// A raw HTTP/1.1 request; returns the status code.
fn http_request(addr: SocketAddr, head: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_operation_outside_the_admin_listener() {
    let kg = Keygate::start();
    let methods = admin_methods();
    let check = common::channel(kg.check_addr()).await;
    let admin = common::channel(kg.admin_addr()).await;
    let failures_before = common::scrape(&kg, "keygate_admin_auth_failures_total");

    let mut refused = 0u64;
    for m in &methods {
        for token in [None, Some(common::TOKEN)] {
            assert_eq!(
                raw_call(&check, ADMIN_SERVICE, m, token).await,
                Code::Unimplemented,
                "{m} on the check listener (token: {})",
                token.is_some()
            );
        }
        for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            assert_eq!(
                raw_call(&admin, ADMIN_SERVICE, m, token).await,
                Code::Unauthenticated,
                "{m} on the admin listener with token {token:?}"
            );
            refused += 1;
        }
        // Control: with the token the method exists (it may reject the empty message).
        let code = raw_call(&admin, ADMIN_SERVICE, m, Some(common::TOKEN)).await;
        assert_ne!(
            code,
            Code::Unimplemented,
            "{m} is not served on the admin listener"
        );
        assert_ne!(code, Code::Unauthenticated, "{m} refused the right token");
    }
    let failures_after = common::scrape(&kg, "keygate_admin_auth_failures_total");
    assert_eq!(
        failures_after - failures_before,
        refused as f64,
        "every refused admin call is counted"
    );
    let log = kg.stderr();
    assert!(
        log.matches("admin call refused").count() as u64 >= refused,
        "every refused admin call is logged"
    );
    assert!(!log.contains(common::TOKEN), "the token was logged");

    // The check listener's own services stay reachable, the Check service is not on
    // the admin listener either.
    let check_svc = "envoy.service.auth.v3.Authorization";
    assert_eq!(
        raw_call(&admin, check_svc, "Check", Some(common::TOKEN)).await,
        Code::Unimplemented,
        "Check is served on the admin listener"
    );

    // Reflection: the check listener knows nothing of the admin API; the admin one does.
    let (services, described) = reflect(kg.check_addr(), ADMIN_SERVICE).await;
    assert!(
        services.iter().any(|s| s == check_svc),
        "check reflection lists {services:?}"
    );
    assert!(
        !services.iter().any(|s| s.starts_with("keygate.admin")),
        "check reflection lists an admin service: {services:?}"
    );
    assert!(!described, "check reflection describes {ADMIN_SERVICE}");
    let (services, described) = reflect(kg.admin_addr(), ADMIN_SERVICE).await;
    assert!(services.iter().any(|s| s == ADMIN_SERVICE), "{services:?}");
    assert!(
        described,
        "admin reflection cannot describe {ADMIN_SERVICE}"
    );

    // The http listener: admin-looking paths are 404, gRPC is not spoken.
    let http = kg.http_addr();
    for path in [
        "/admin",
        "/admin/",
        "/keygate.admin.v1.Admin/ListApps",
        "/v1/apps",
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        assert_eq!(http_request(http, &head, b""), 404, "GET {path}");
    }
    for m in ["ListApps", "CreateApp", "DeleteApp", "ResetKeyPairSecret"] {
        // A gRPC-looking HTTP/1.1 POST (5-byte frame header of an empty message).
        let head = format!(
            "POST /{ADMIN_SERVICE}/{m} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/grpc\r\nTE: trailers\r\nAuthorization: Bearer {}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            common::TOKEN
        );
        assert_eq!(http_request(http, &head, &[0, 0, 0, 0, 0]), 404, "POST {m}");
    }
    // Through the Envoy HTTP door an admin path is just a request to check: a deny
    // (no credential), never an admin operation.
    for m in ["ListApps", "CreateApp"] {
        let head = format!(
            "POST /envoy/{ADMIN_SERVICE}/{m} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/grpc\r\nAuthorization: Bearer {}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            common::TOKEN
        );
        assert_eq!(
            http_request(http, &head, &[0, 0, 0, 0, 0]),
            401,
            "POST /envoy/.../{m}"
        );
    }
    // And over HTTP/2 as a real gRPC client would.
    if let Ok(ch) = Channel::from_shared(format!("http://{http}"))
        .unwrap()
        .connect()
        .await
    {
        for m in ["ListApps", "CreateApp"] {
            let code = raw_call(&ch, ADMIN_SERVICE, m, Some(common::TOKEN)).await;
            assert_ne!(code, Code::Ok, "{m} over gRPC on the http listener");
        }
    }
    // Nothing was created by any of it.
    let mut c = kg.admin().await;
    let apps = c
        .list_apps(keygate::pb::admin::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(apps.apps.is_empty(), "{:?}", apps.apps);
    println!(
        "isolation: {} admin methods x (check listener 2 ways, admin listener 3 refusals + control); {refused} refusals counted",
        methods.len()
    );
}
