//! Envoy front door: `envoy.service.auth.v3.Authorization/Check` on the check listener.
//!
//! Owns: translation only. `CheckRequest` -> `RequestView`, `Decision` ->
//! `CheckResponse`. Holds no policy. A deny is always an RPC success with `status` set
//! (an `Err` or an unset status would let Envoy treat it as an error or an allow, and
//! `failure_mode_allow` could then let the request through).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::{Door, deny_headers, deny_json, request_id};
use crate::decide::{Allow, Decision};
use crate::deny::{Deny, DenyCode};
use crate::request::{Headers, RequestView};
use crate::server::shared::Shared;
use crate::server::shed;

pub struct CheckService {
    shared: Arc<Shared>,
}

impl CheckService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Envoy's request attributes as a `RequestView` (copies them; the Check handler
/// hands its request over to `into_view` instead).
pub fn view_from_envoy(req: &CheckRequest) -> RequestView {
    into_view(req.clone())
}

/// Envoy's request attributes as a `RequestView`, moving the strings out of the
/// request rather than copying them: this runs on every Check.
pub fn into_view(req: CheckRequest) -> RequestView {
    let mut attrs = req.attributes.unwrap_or_default();
    let mut http: HttpRequest = attrs
        .request
        .take()
        .and_then(|r| r.http)
        .unwrap_or_default();
    let mut view = RequestView::default();
    let mut headers = Headers::new();
    let mut pseudo: HashMap<&str, String> = HashMap::new();
    if !http.headers.is_empty() {
        headers.reserve(http.headers.len());
        for (k, v) in std::mem::take(&mut http.headers) {
            match k.strip_prefix(':') {
                Some(p) => {
                    pseudo.insert(
                        match p {
                            "path" => "path",
                            "authority" => "authority",
                            "method" => "method",
                            "scheme" => "scheme",
                            _ => "other",
                        },
                        v,
                    );
                }
                None => headers.push_owned(k, v),
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
                Some("path") => {
                    pseudo.insert("path", v);
                }
                Some("authority") => {
                    pseudo.insert("authority", v);
                }
                Some(_) => {}
                None => headers.push_owned(h.key, v),
            }
        }
    }
    let mut method = if http.method.is_empty() {
        pseudo.remove("method").unwrap_or_default()
    } else {
        std::mem::take(&mut http.method)
    };
    method.make_ascii_uppercase();
    view.method = method;
    view.scheme = std::mem::take(&mut http.scheme);
    view.host = if http.host.is_empty() {
        pseudo.remove("authority").unwrap_or_default()
    } else {
        std::mem::take(&mut http.host)
    };
    let target = if http.path.is_empty() {
        pseudo.remove("path").unwrap_or_default()
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
    view.stage_hint = attrs.context_extensions.remove("stage");
    view.api_hint = attrs.context_extensions.remove("api");
    view.peer = attrs
        .source
        .and_then(|p| p.address)
        .and_then(|a| match a.address {
            Some(Address::SocketAddress(s)) => Some(match s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => format!("{}:{p}", s.address),
                _ => s.address,
            }),
            _ => None,
        });
    view
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        // `append` (deprecated) stays unset: `append_action` overwrites on every Envoy
        // version that has it (envoy.config.core.v3.HeaderValueOption), so a client can
        // never smuggle its own copy of an identity header past us.
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn allow_response(a: &Allow) -> CheckResponse {
    let ok = OkHttpResponse {
        headers: a.headers_to_set.iter().map(|(k, v)| header(k, v)).collect(),
        headers_to_remove: a.headers_to_remove.clone(),
        query_parameters_to_remove: a.query_params_to_remove.clone(),
        ..Default::default()
    };
    let metadata = Struct {
        fields: [
            ("app_id", &a.app_id),
            ("app_key", &a.app_key),
            ("api_id", &a.api_id),
            ("stage", &a.stage),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), string_value(v)))
        .chain(std::iter::once((
            "scheme".to_owned(),
            string_value(a.scheme),
        )))
        .collect(),
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::Ok as i32,
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::OkResponse(ok)),
        dynamic_metadata: Some(metadata),
    }
}

fn deny_response(d: &Deny, request_id: &str) -> CheckResponse {
    let status = d.code.status();
    let http = Door::Grpc.http_status(d.code);
    let mut headers: Vec<HeaderValueOption> = deny_headers(d, request_id)
        .iter()
        .map(|(k, v)| header(k, v))
        .collect();
    headers.shrink_to_fit();
    let denied = DeniedHttpResponse {
        status: Some(HttpStatus {
            code: i32::from(http),
        }),
        headers,
        body: deny_json(d, request_id),
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: status.grpc as i32,
            message: format!("{}: {}", d.code, d.message),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
        dynamic_metadata: Some(deny_metadata(d, request_id)),
    }
}

/// What a deny tells Envoy's access log (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:...)%`,
/// emitted for denied checks as for allowed ones): the code, the request id, the scheme
/// of the credential and, once its signature verified, the app. Never a secret.
fn deny_metadata(d: &Deny, request_id: &str) -> Struct {
    let fields = [
        ("deny_code", Some(d.code.as_str())),
        ("request_id", Some(request_id)),
        ("scheme", d.scheme),
        ("app_id", d.app_id.as_deref()),
    ];
    Struct {
        fields: fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), string_value(v?))))
            .collect(),
    }
}

/// The answer to a call that arrived while the listener was at its in-flight limit:
/// a deny (never an RPC error, which `failure_mode_allow` could turn into an allow),
/// produced without translating the request or running the pipeline.
fn overloaded(shared: &Shared, req: &CheckRequest, limit: usize) -> CheckResponse {
    let deny = Deny::new(
        DenyCode::Overloaded,
        format!("the check listener is at its limit of {limit} calls in progress"),
    );
    let sent_id = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .and_then(|h| h.headers.get("x-request-id"))
        .cloned();
    let mut view = RequestView::default();
    if let Some(id) = sent_id {
        view.headers.push("x-request-id", id);
    }
    let request_id = request_id(&view);
    let response = deny_response(&deny, &request_id);
    super::record_early_deny(shared, &deny, &request_id);
    response
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        if let Some(o) = req.extensions().get::<shed::Overloaded>() {
            return Ok(Response::new(overloaded(
                &self.shared,
                req.get_ref(),
                o.limit,
            )));
        }
        let view = into_view(req.into_inner());
        let request_id = request_id(&view);
        let decision = self.shared.decide(&view, &request_id).await;
        let resp = match &decision {
            Decision::Allow(a) => allow_response(a),
            Decision::Deny(d) => deny_response(d, &request_id),
        };
        Ok(Response::new(resp))
    }
}
