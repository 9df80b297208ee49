//! HTTP-side test helpers: a raw HTTP/1.1 client, an echo upstream, a signer, and a
//! data set (app, APIs, grant) made through the admin API.
//!
//! The client writes requests byte for byte (no client library normalising paths or
//! headers) because signatures cover exactly what is sent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate::pb::admin as pb;
use keygate::scheme::SchemeKind;
use keygate::sign::{SignOptions, SignRequest, sign};

use super::Admin;

/// A response as it arrived.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} (status {}, headers {:?})",
                String::from_utf8_lossy(&self.body),
                self.status,
                self.headers
            )
        })
    }

    /// Asserts keygate's deny shape: status, `x-keygate-error`, and the JSON body with
    /// the same code and request id.
    pub fn assert_deny(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; response: {self:?}");
        assert_eq!(self.header("x-keygate-error"), Some(code), "{self:?}");
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(
            body["request_id"].as_str(),
            self.header("x-keygate-request-id"),
            "{body}"
        );
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole response.
/// `headers` are sent as given; `Host` must be among them.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut raw = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("Connection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> HttpResponse {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut rest = buf[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        rest = dechunk(&rest);
    }
    HttpResponse {
        status,
        headers,
        body: rest,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_line = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
}

/// What the echo upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An upstream that records every request it gets and answers 200 `upstream-ok`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                log.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    target: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body: body.to_vec(),
                });
                "upstream-ok"
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen }
    }

    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// An app with its default key pair and AppCode.
#[derive(Clone, Debug)]
pub struct Caller {
    pub app_id: String,
    pub app_key: String,
    pub secret: String,
    pub app_code: String,
}

/// The data set the front-door tests share: one caller granted on `/v1/...` (every
/// scheme accepted), an API `/private/...` it has no grant for, and `/strict/...` that
/// requires a verified body digest.
pub struct DataSet {
    pub caller: Caller,
}

pub async fn create_api(c: &mut Admin, name: &str, path: &str, body_required: bool) -> pb::Api {
    c.create_api(pb::CreateApiRequest {
        api: Some(pb::Api {
            name: name.into(),
            owner: "provider".into(),
            path: path.into(),
            auth_schemes: vec![
                pb::AuthScheme::Aliyun as i32,
                pb::AuthScheme::Appcode as i32,
                pb::AuthScheme::Tencent as i32,
                pb::AuthScheme::Bkapi as i32,
                pb::AuthScheme::Sigv4 as i32,
                pb::AuthScheme::Rfc9421 as i32,
            ],
            body_digest_required: body_required,
            sigv4_region: "us-east-1".into(),
            sigv4_service: "execute-api".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
}

impl DataSet {
    pub async fn create(c: &mut Admin) -> Self {
        let r = c
            .create_app(pb::CreateAppRequest {
                app: Some(pb::App {
                    name: "front-door-caller".into(),
                    owner: "tests".into(),
                    extend_info: "tier=gold".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let (app, key) = (r.app.unwrap(), r.key_pair.unwrap());
        let v1 = create_api(c, "v1", "/v1/{*rest}", false).await;
        create_api(c, "private", "/private/{*rest}", false).await;
        let strict = create_api(c, "strict", "/strict/{*rest}", true).await;
        for api in [&v1, &strict] {
            c.create_grant(pb::CreateGrantRequest {
                grant: Some(pb::Grant {
                    app_id: app.id.clone(),
                    target: Some(pb::grant::Target::ApiId(api.id.clone())),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        }
        Self {
            caller: Caller {
                app_id: app.id,
                app_key: key.app_key,
                secret: key.app_secret,
                app_code: app.app_code,
            },
        }
    }
}

/// Signs a request to `http://{authority}{target}` as a client of `scheme` would;
/// returns the target to send (query-signed forms change it) and every header to send,
/// `Host` first.
pub fn signed(
    caller: &Caller,
    scheme: SchemeKind,
    method: &str,
    authority: &str,
    target: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (String, Vec<(String, String)>) {
    let (key, secret) = match scheme {
        SchemeKind::AppCode => ("", caller.app_code.as_str()),
        SchemeKind::Bkapi => (caller.app_id.as_str(), caller.secret.as_str()),
        _ => (caller.app_key.as_str(), caller.secret.as_str()),
    };
    let url = format!("http://{authority}{target}");
    let req = SignRequest {
        method: method.into(),
        url: url.clone(),
        headers: extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.map(<[u8]>::to_vec),
    };
    let nonce = keygate::sign::fresh_nonce().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut opts = SignOptions::new(scheme, key, secret.as_bytes(), now_ms, &nonce);
    if scheme == SchemeKind::SigV4 {
        opts.region = Some("us-east-1");
        opts.service = Some("execute-api");
    }
    let out = sign(&req, &opts).unwrap_or_else(|e| panic!("sign {scheme:?}: {e}"));
    let target = out
        .url
        .strip_prefix(&format!("http://{authority}"))
        .unwrap_or(&out.url)
        .to_owned();
    let mut headers = vec![("Host".to_owned(), authority.to_owned())];
    headers.extend(req.headers);
    headers.extend(out.headers);
    (target, headers)
}
