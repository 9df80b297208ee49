//! Envoy front door: `envoy.service.auth.v3.Authorization/Check` on the check listener.
//!
//! Owns: translation only. `CheckRequest` -> `RequestView`, `Decision` ->
//! `CheckResponse`. Holds no policy. A deny is always an RPC success with `status` set
//! (an `Err` or an unset status would let Envoy treat it as an error or an allow, and
//! `failure_mode_allow` could then let the request through).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use tonic::body::Body;
use tonic::codegen::{Body as HttpBody, BoxFuture, Bytes, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Response, Status};

use super::check_wire as wire;
use super::{Door, deny_headers, deny_json, request_id};
use crate::decide::{Allow, Decision};
use crate::deny::{Deny, DenyCode};
use crate::request::{Headers, RequestView};
use crate::server::shared::Shared;
use crate::server::shed::{InFlight, Slot};

/// The one method this service serves.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `envoy.service.auth.v3.Authorization` on the check listener, in place of the
/// generated server: the same gRPC framing (tonic's `Grpc::unary`), with `check_wire`'s
/// messages, and each call counted against the listener's in-flight bound.
///
/// The slot is taken in `call`, which the connection runs as it reads the request's
/// headers, before the call's own task is scheduled: so calls waiting for a worker,
/// and calls still receiving their body, hold slots, and the count is the real
/// backlog.
#[derive(Clone)]
pub struct CheckServer {
    shared: Arc<Shared>,
    in_flight: Arc<InFlight>,
    max_message_bytes: usize,
}

impl CheckServer {
    pub fn new(shared: Arc<Shared>, in_flight: Arc<InFlight>, max_message_bytes: usize) -> Self {
        Self {
            shared,
            in_flight,
            max_message_bytes,
        }
    }
}

impl NamedService for CheckServer {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> tower::Service<http::Request<B>> for CheckServer
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(unimplemented()) });
        }
        let slot = self.in_flight.try_acquire();
        let method = CheckMethod {
            shared: self.shared.clone(),
            overloaded_at: slot.is_none().then(|| self.in_flight.max()),
        };
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(wire::CheckCodec)
                .apply_max_message_size_config(Some(max), None);
            let response = grpc.unary(method, req).await;
            drop::<Option<Slot>>(slot);
            Ok(response)
        })
    }
}

/// What any other path on this service gets: gRPC `UNIMPLEMENTED`.
fn unimplemented() -> http::Response<Body> {
    let mut response = http::Response::new(Body::default());
    let headers = response.headers_mut();
    headers.insert(
        Status::GRPC_STATUS,
        (tonic::Code::Unimplemented as i32).into(),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

/// One Check call, once its message is decoded.
struct CheckMethod {
    shared: Arc<Shared>,
    /// The listener's limit, when the call arrived with every slot taken.
    overloaded_at: Option<usize>,
}

impl UnaryService<wire::CheckRequest> for CheckMethod {
    type Response = wire::Encoded;
    type Future = BoxFuture<Response<wire::Encoded>, Status>;

    fn call(&mut self, req: tonic::Request<wire::CheckRequest>) -> Self::Future {
        let shared = self.shared.clone();
        let overloaded_at = self.overloaded_at;
        Box::pin(async move {
            let req = req.into_inner();
            if let Some(limit) = overloaded_at {
                return Ok(Response::new(overloaded(&shared, &req, limit)));
            }
            let view = into_view(req);
            let request_id = request_id(&view);
            let response = match shared.decide(&view, &request_id).await {
                Decision::Allow(a) => allow_response(&a),
                Decision::Deny(d) => deny_response(&d, &request_id),
            };
            Ok(Response::new(response))
        })
    }
}

/// Envoy's request attributes as a `RequestView`, from the generated message (tests,
/// fuzzing, tools): through the wire, so that it is the very translation a Check gets.
pub fn view_from_envoy(
    req: &envoy_types::pb::envoy::service::auth::v3::CheckRequest,
) -> RequestView {
    into_view(wire::CheckRequest::decode(req.encode_to_vec().as_slice()).unwrap_or_default())
}

/// A decoded `map<string, string>` in protobuf's map semantics: a key repeated on the
/// wire keeps its last value (at its last place). Envoy never repeats one; the rule is
/// kept so that this reads a map exactly as the generated types did.
fn map_entries(mut entries: Vec<wire::Entry>) -> Vec<wire::Entry> {
    let mut i = 0;
    while i < entries.len() {
        if entries[i + 1..].iter().any(|e| e.key == entries[i].key) {
            entries.remove(i);
        } else {
            i += 1;
        }
    }
    entries
}

/// Envoy's request attributes as a `RequestView`, moving the strings out of the
/// request rather than copying them: this runs on every Check.
pub fn into_view(req: wire::CheckRequest) -> RequestView {
    let attrs = req.attributes.unwrap_or_default();
    let mut http = attrs.request.and_then(|r| r.http).unwrap_or_default();
    let mut view = RequestView::default();
    let mut headers = Headers::new();
    let (mut path, mut authority, mut method) = (None, None, None);
    if !http.headers.is_empty() {
        let entries = map_entries(std::mem::take(&mut http.headers));
        headers.reserve(entries.len());
        for wire::Entry { key, value } in entries {
            match key.strip_prefix(':') {
                Some("path") => path = Some(value),
                Some("authority") => authority = Some(value),
                Some("method") => method = Some(value),
                Some(_) => {}
                None => headers.push_owned(key, value),
            }
        }
    } else if let Some(map) = http.header_map.take() {
        // encode_raw_headers: duplicates kept, values as raw bytes.
        for h in map.headers {
            let v = if h.raw_value.is_empty() {
                h.value
            } else {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            };
            match h.key.strip_prefix(':') {
                Some("path") => path = Some(v),
                Some("authority") => authority = Some(v),
                Some(_) => {}
                None => headers.push_owned(h.key, v),
            }
        }
    }
    let mut method = if http.method.is_empty() {
        method.unwrap_or_default()
    } else {
        std::mem::take(&mut http.method)
    };
    method.make_ascii_uppercase();
    view.method = method;
    view.scheme = std::mem::take(&mut http.scheme);
    view.host = if http.host.is_empty() {
        authority.unwrap_or_default()
    } else {
        std::mem::take(&mut http.host)
    };
    let target = if http.path.is_empty() {
        path.unwrap_or_default()
    } else {
        std::mem::take(&mut http.path)
    };
    view.set_target(&target);
    // Envoy marks every attached body with x-envoy-auth-partial-body; without it the
    // body was not sent to us, unless the request declares that it has none.
    match headers.get("x-envoy-auth-partial-body") {
        Some(partial) => {
            view.body_partial = partial.eq_ignore_ascii_case("true");
            view.body = Some(if http.raw_body.is_empty() {
                http.body.into_bytes()
            } else {
                http.raw_body
            });
        }
        None if !http.raw_body.is_empty() => view.body = Some(http.raw_body),
        None if !http.body.is_empty() => view.body = Some(http.body.into_bytes()),
        None => {
            let declares_empty = headers
                .get("content-length")
                .is_none_or(|l| l.trim() == "0")
                && !headers.contains("transfer-encoding");
            view.body = declares_empty.then(Vec::new);
        }
    }
    view.headers = headers;
    for e in attrs.context_extensions {
        match e.key.as_str() {
            "stage" => view.stage_hint = Some(e.value),
            "api" => view.api_hint = Some(e.value),
            _ => {}
        }
    }
    view.peer = attrs
        .source
        .and_then(|p| p.address)
        .and_then(|a| a.socket_address)
        .map(|s| match s.port_value {
            Some(p) => format!("{}:{p}", s.address),
            None => s.address,
        });
    view
}

/// An allow. Its dynamic metadata (read by Envoy's access log and later filters) names
/// the app, key, API, stage and scheme.
fn allow_response(a: &Allow) -> wire::Encoded {
    fn present(v: &str) -> Option<&str> {
        (!v.is_empty()).then_some(v)
    }
    let metadata = [
        ("app_id", present(&a.app_id)),
        ("app_key", present(&a.app_key)),
        ("api_id", present(&a.api_id)),
        ("stage", present(&a.stage)),
        ("scheme", present(a.scheme)),
    ];
    wire::Encoded(
        wire::Response {
            code: tonic::Code::Ok as i32,
            message: "",
            http: wire::Http::Ok {
                headers: &a.headers_to_set,
                headers_to_remove: &a.headers_to_remove,
                query_parameters_to_remove: &a.query_params_to_remove,
            },
            metadata: &metadata,
        }
        .encode(),
    )
}

/// A deny: the status, headers and JSON body the client gets, and for the access log
/// (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:...)%`, emitted for denied checks
/// as for allowed ones) the code, the request id, the scheme of the credential and,
/// once its signature verified, the app. Never a secret.
fn deny_response(d: &Deny, request_id: &str) -> wire::Encoded {
    let headers = deny_headers(d, request_id);
    let body = deny_json(d, request_id);
    let message = format!("{}: {}", d.code, d.message);
    let metadata = [
        ("deny_code", Some(d.code.as_str())),
        ("request_id", Some(request_id)),
        ("scheme", d.scheme),
        ("app_id", d.app_id.as_deref()),
    ];
    wire::Encoded(
        wire::Response {
            code: d.code.status().grpc as i32,
            message: &message,
            http: wire::Http::Denied {
                status: Door::Grpc.http_status(d.code),
                headers: &headers,
                body: &body,
            },
            metadata: &metadata,
        }
        .encode(),
    )
}

/// The answer to a call that arrived while the listener was at its in-flight limit:
/// a deny (never an RPC error, which `failure_mode_allow` could turn into an allow),
/// produced without translating the request or running the pipeline.
fn overloaded(shared: &Shared, req: &wire::CheckRequest, limit: usize) -> wire::Encoded {
    let deny = Deny::new(
        DenyCode::Overloaded,
        format!("the check listener is at its limit of {limit} calls in progress"),
    );
    let sent_id = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .and_then(|h| h.headers.iter().rev().find(|e| e.key == "x-request-id"));
    let mut view = RequestView::default();
    if let Some(id) = sent_id {
        view.headers.push("x-request-id", id.value.as_str());
    }
    let request_id = request_id(&view);
    let response = deny_response(&deny, &request_id);
    super::record_early_deny(shared, &deny, &request_id);
    response
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy::attribute_context::{HttpRequest, Peer, Request};
    use envoy::check_response::HttpResponse;
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    use envoy_types::pb::envoy::config::core::v3::{
        HeaderMap, HeaderValue, SocketAddress, socket_address::PortSpecifier,
    };
    use envoy_types::pb::envoy::service::auth::v3 as envoy;
    use envoy_types::pb::google::protobuf::value::Kind;

    use super::*;
    use crate::decide::{DecideConfig, Verdict, evaluate};
    use crate::scheme::SchemeKind;
    use crate::testkit;

    const NOW: i64 = 1_700_000_000_000;

    /// What Envoy would read: our bytes through the generated type.
    fn as_envoy(e: wire::Encoded) -> envoy::CheckResponse {
        envoy::CheckResponse::decode(e.0.as_slice()).expect("Envoy's type reads our answer")
    }

    fn metadata(r: &envoy::CheckResponse) -> HashMap<String, String> {
        let s = r.dynamic_metadata.as_ref().expect("metadata");
        s.fields
            .iter()
            .map(|(k, v)| match &v.kind {
                Some(Kind::StringValue(s)) => (k.clone(), s.clone()),
                other => panic!("{k} is not a string value: {other:?}"),
            })
            .collect()
    }

    fn allow() -> Allow {
        let snap = testkit::snapshot(1);
        let view = testkit::signed_view(SchemeKind::Aliyun, 0, NOW, "");
        match evaluate(&view, &snap, NOW, &DecideConfig::default()) {
            Verdict::Decided(Decision::Allow(a)) => a,
            other => panic!("expected an allow, got {other:?}"),
        }
    }

    #[test]
    fn an_allow_reads_back_through_envoys_types() {
        let mut a = allow();
        a.headers_to_remove = vec!["x-ca-signature".into(), String::new()];
        a.query_params_to_remove = vec!["X-Amz-Signature".into()];
        // Long enough that the enclosing lengths need two bytes.
        a.headers_to_set.push(("x-long".into(), "v".repeat(300)));
        let r = as_envoy(allow_response(&a));
        assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
            panic!("not an ok response: {r:?}")
        };
        let headers: Vec<(String, String, i32)> = ok
            .headers
            .iter()
            .map(|h| {
                let v = h.header.as_ref().expect("header");
                // `append` (deprecated) must stay unset: see `check_wire`'s headers.
                #[allow(deprecated)]
                let append = h.append;
                assert!(append.is_none() && !h.keep_empty_value);
                (v.key.clone(), v.value.clone(), h.append_action)
            })
            .collect();
        let want: Vec<(String, String, i32)> = a
            .headers_to_set
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), 2))
            .collect();
        assert_eq!(headers, want);
        assert!(headers.iter().any(|(k, _, _)| k == "x-keygate-app-id"));
        assert_eq!(ok.headers_to_remove, a.headers_to_remove);
        assert_eq!(ok.query_parameters_to_remove, a.query_params_to_remove);
        let m = metadata(&r);
        assert_eq!(m["app_id"], a.app_id);
        assert_eq!(m["app_key"], a.app_key);
        assert_eq!(m["api_id"], a.api_id);
        assert_eq!(m["scheme"], "aliyun");
        assert_eq!(m.len(), if a.stage.is_empty() { 4 } else { 5 });
    }

    #[test]
    fn a_deny_reads_back_through_envoys_types() {
        let d = Deny::new(
            DenyCode::SignatureMismatch,
            "the signature does not match ".repeat(8),
        )
        .for_scheme("aliyun");
        let r = as_envoy(deny_response(&d, "req-1"));
        let status = r.status.as_ref().expect("status");
        assert_eq!(status.code, d.code.status().grpc as i32);
        assert_eq!(status.message, format!("{}: {}", d.code, d.message));
        let Some(HttpResponse::DeniedResponse(denied)) = &r.http_response else {
            panic!("not a denied response: {r:?}")
        };
        assert_eq!(
            denied.status.as_ref().map(|s| s.code),
            Some(i32::from(Door::Grpc.http_status(d.code)))
        );
        assert_eq!(denied.body, deny_json(&d, "req-1"));
        let headers: Vec<(String, String)> = denied
            .headers
            .iter()
            .map(|h| {
                assert_eq!(h.append_action, 2);
                let v = h.header.as_ref().expect("header");
                (v.key.clone(), v.value.clone())
            })
            .collect();
        assert_eq!(headers, deny_headers(&d, "req-1"));
        let m = metadata(&r);
        assert_eq!(m["deny_code"], "SignatureMismatch");
        assert_eq!(m["request_id"], "req-1");
        assert_eq!(m["scheme"], "aliyun");
        assert!(!m.contains_key("app_id"));
    }

    fn envoy_request(http: HttpRequest) -> envoy::CheckRequest {
        envoy::CheckRequest {
            attributes: Some(envoy::AttributeContext {
                source: Some(Peer {
                    address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: "10.0.0.7".into(),
                            port_specifier: Some(PortSpecifier::PortValue(5123)),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions: [("stage".to_owned(), "RELEASE".to_owned())].into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_request_reads_as_the_generated_types_describe_it() {
        let http = HttpRequest {
            id: "ignored".into(),
            method: "post".into(),
            headers: [
                (":path", "/p/a?x=1"),
                (":authority", "api.example"),
                (":method", "POST"),
                ("X-Ca-Key", "k1"),
                ("content-length", "2"),
                ("x-envoy-auth-partial-body", "false"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            raw_body: b"{}".to_vec(),
            query: "ignored".into(),
            ..Default::default()
        };
        let v = view_from_envoy(&envoy_request(http));
        assert_eq!(v.method, "POST");
        assert_eq!((v.host.as_str(), v.path.as_str()), ("api.example", "/p/a"));
        assert_eq!(v.query.as_deref(), Some("x=1"));
        assert_eq!(v.headers.get("x-ca-key"), Some("k1"));
        assert_eq!(v.headers.len(), 3, "pseudo-headers are not headers");
        assert_eq!(v.body.as_deref(), Some(&b"{}"[..]));
        assert!(!v.body_partial);
        assert_eq!(v.stage_hint.as_deref(), Some("RELEASE"));
        assert_eq!(v.peer.as_deref(), Some("10.0.0.7:5123"));

        // encode_raw_headers: a header map, repeated names kept, raw values read.
        let raw = HttpRequest {
            method: "GET".into(),
            header_map: Some(HeaderMap {
                headers: [(":path", "/q"), (":authority", "h"), ("a", "1"), ("a", "2")]
                    .into_iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.into(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        };
        let v = view_from_envoy(&envoy_request(raw));
        assert_eq!((v.host.as_str(), v.path.as_str()), ("h", "/q"));
        assert_eq!(v.headers.get_all("a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(v.body.as_deref(), Some(&b""[..]), "no body declared: empty");
    }

    #[test]
    fn a_map_key_repeated_on_the_wire_keeps_its_last_value() {
        // Two entries of field 3 (headers) with the same key, as a protobuf map
        // allows; the generated types keep the last.
        let entry = |k: &str, v: &str| wire::Entry {
            key: k.into(),
            value: v.into(),
        };
        let req = wire::CheckRequest {
            attributes: Some(wire::AttributeContext {
                request: Some(wire::Request {
                    http: Some(wire::HttpRequest {
                        method: "GET".into(),
                        headers: vec![
                            entry("x-ca-key", "first"),
                            entry("b", "1"),
                            entry("x-ca-key", "last"),
                        ],
                        ..Default::default()
                    }),
                }),
                context_extensions: vec![entry("stage", "TEST"), entry("stage", "RELEASE")],
                ..Default::default()
            }),
        };
        let bytes = req.encode_to_vec();
        let generated = envoy::CheckRequest::decode(bytes.as_slice()).expect("decodes");
        let http = generated
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .expect("http");
        assert_eq!(http.headers["x-ca-key"], "last");
        let v = into_view(wire::CheckRequest::decode(bytes.as_slice()).expect("decodes"));
        assert_eq!(v.headers.get_all("x-ca-key").collect::<Vec<_>>(), ["last"]);
        assert_eq!(v.headers.len(), 2);
        assert_eq!(v.stage_hint.as_deref(), Some("RELEASE"));
    }
}
