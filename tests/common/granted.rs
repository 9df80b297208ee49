//! Signed Check requests for the server-feature tests (TLS, overload, degraded store):
//! an app granted on its own API, and requests it signs.

use super::*;

// === Check over gRPC with signed requests (security tests) ===

use envoy_types::pb::envoy::service::auth::v3 as authz;

/// An app, its default key pair and an API it is granted, created through the admin
/// API: what a signed Check needs to be allowed.
#[derive(Clone, Debug)]
pub struct Granted {
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
    /// The AppCode CreateApp generated.
    pub app_code: String,
    /// Requests under this prefix hit the granted API.
    pub prefix: String,
}

/// Creates an app, an API on `/<name>/{*rest}` (every signature scheme and APPCODE)
/// and a grant of the API to the app.
pub async fn grant_app<T>(c: &mut AdminClient<T>, name: &str) -> Granted
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    use keygate::pb::admin as pb;
    let created = c
        .create_app(pb::CreateAppRequest {
            app: Some(pb::App {
                name: name.into(),
                owner: "sec".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("CreateApp")
        .into_inner();
    let (app, key) = (created.app.expect("app"), created.key_pair.expect("key"));
    let api = c
        .create_api(pb::CreateApiRequest {
            api: Some(pb::Api {
                name: format!("{name}-api"),
                owner: "sec".into(),
                path: format!("/{name}/{{*rest}}"),
                auth_schemes: vec![
                    pb::AuthScheme::Aliyun as i32,
                    pb::AuthScheme::Appcode as i32,
                ],
                ..Default::default()
            }),
        })
        .await
        .expect("CreateApi")
        .into_inner();
    c.create_grant(pb::CreateGrantRequest {
        grant: Some(pb::Grant {
            app_id: app.id.clone(),
            target: Some(pb::grant::Target::ApiId(api.id)),
            ..Default::default()
        }),
    })
    .await
    .expect("CreateGrant");
    Granted {
        app_code: app.app_code,
        app_id: app.id,
        app_key: key.app_key,
        app_secret: key.app_secret,
        prefix: format!("/{name}/"),
    }
}

/// A CheckRequest as Envoy sends it for `method url` with `headers` (lower-cased).
pub fn check_request(method: &str, url: &str, headers: &[(String, String)]) -> authz::CheckRequest {
    let (authority, target) = url
        .split_once("://")
        .map(|(_, rest)| rest.split_at(rest.find('/').unwrap_or(rest.len())))
        .expect("absolute URL");
    let mut hdrs: std::collections::HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    hdrs.insert(":authority".into(), authority.into());
    hdrs.insert(":method".into(), method.into());
    hdrs.insert(":path".into(), target.into());
    authz::CheckRequest {
        attributes: Some(authz::AttributeContext {
            request: Some(authz::attribute_context::Request {
                http: Some(authz::attribute_context::HttpRequest {
                    method: method.into(),
                    path: target.into(),
                    host: authority.into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: hdrs,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A CheckRequest for `GET <prefix>rest`, signed with the app's secret (Alibaba
/// scheme, fresh nonce, current time).
pub fn signed_check(g: &Granted, secret: &str, rest: &str) -> authz::CheckRequest {
    use keygate::sign::{SignOptions, SignRequest, fresh_nonce, sign};
    let url = format!("http://api.example.com{}{rest}", g.prefix);
    let nonce = fresh_nonce().expect("nonce");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let req = SignRequest {
        method: "GET".into(),
        url: url.clone(),
        headers: vec![],
        body: None,
    };
    let opts = SignOptions::new(
        keygate::scheme::SchemeKind::Aliyun,
        &g.app_key,
        secret.as_bytes(),
        now_ms,
        &nonce,
    );
    let signed = sign(&req, &opts).expect("sign");
    check_request("GET", &signed.url, &signed.headers)
}

/// The deny code of a CheckResponse (`x-keygate-error`), or `None` for an allow.
/// Panics on a response that is neither a proper allow nor a proper deny.
pub fn deny_code(r: &authz::CheckResponse) -> Option<String> {
    use authz::check_response::HttpResponse;
    let status = r
        .status
        .as_ref()
        .expect("CheckResponse.status is always set");
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => {
            assert_eq!(status.code, 0, "an ok_response with a non-OK status: {r:?}");
            None
        }
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_ne!(status.code, 0, "a denied_response with status OK: {r:?}");
            let code = d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-keygate-error")
                .map(|h| h.value.clone())
                .unwrap_or_else(|| panic!("deny without x-keygate-error: {r:?}"));
            Some(code)
        }
        _ => panic!("CheckResponse without an ok or denied http_response: {r:?}"),
    }
}

/// The denied HTTP status of a CheckResponse.
pub fn denied_http_status(r: &authz::CheckResponse) -> Option<i32> {
    match &r.http_response {
        Some(authz::check_response::HttpResponse::DeniedResponse(d)) => {
            d.status.as_ref().map(|s| s.code)
        }
        _ => None,
    }
}

/// A Check client on a plaintext channel.
pub async fn check_client(
    addr: SocketAddr,
) -> authz::authorization_client::AuthorizationClient<Channel> {
    authz::authorization_client::AuthorizationClient::new(channel(addr).await)
}

/// A CheckRequest for `GET <prefix>rest` carrying the app's AppCode.
pub fn appcode_check(g: &Granted, code: &str, rest: &str) -> authz::CheckRequest {
    check_request(
        "GET",
        &format!("http://api.example.com{}{rest}", g.prefix),
        &[("authorization".into(), format!("APPCODE {code}"))],
    )
}

impl Keygate {
    /// Like `start_with_args`, with the data dir at `data_dir` (e.g. on a special
    /// filesystem) instead of inside the harness's temp dir.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        let mut kg = Self::unstarted(Some(data_dir), extra);
        kg.spawn();
        kg
    }
}

/// The `Explain` request describing the same request as an Envoy Check request.
pub fn explain_of(req: &authz::CheckRequest) -> keygate::pb::admin::ExplainRequest {
    let http = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .expect("an HTTP request");
    keygate::pb::admin::ExplainRequest {
        method: http.method.clone(),
        url: http.path.clone(),
        host: http.host.clone(),
        headers: http
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .map(|(name, value)| keygate::pb::admin::HttpHeader {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        ..Default::default()
    }
}
