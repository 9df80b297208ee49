//! `RequestView`: the one shape every front door translates its input into.
//!
//! Owns: the normalised view of an incoming request (method, authority, raw path and
//! query, lower-cased headers, optional body, routing hints). It holds no policy and
//! never rejects anything: front doors build it, `decide` reads it.

/// Header a proxy sets on the HTTP doors' authorization request to pin the stage
/// (NGINX: `proxy_set_header` in the auth location; Envoy HTTP mode:
/// `authorization_request.headers_to_add`). The gRPC door uses
/// `context_extensions.stage` instead and never reads this header: there it would be
/// the client's.
pub const ROUTE_STAGE_HEADER: &str = "x-keygate-route-stage";

/// Whether a lower-case header name is `prefix` (lower-case, with `-`) or starts with it
/// in a spelling upstreams read as the same header: CGI, WSGI, PHP and Rack turn both
/// `x-keygate-app-id` and `x_keygate_app_id` into `HTTP_X_KEYGATE_APP_ID`.
pub fn spelled_like(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// Request headers with lower-cased names, in arrival order.
///
/// Repeated headers stay separate entries; `get` returns the first, `get_all` every one.
/// A linear scan is faster than hashing for the few dozen headers a request carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Adds a header; the name is lower-cased here so callers cannot forget.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    /// `push` for a name the caller already owns: lower-cased in place, no copy (the
    /// gRPC door moves Envoy's header map in this way on every Check).
    pub fn push_owned(&mut self, mut name: String, value: String) {
        name.make_ascii_lowercase();
        self.0.push((name, value));
    }

    /// Room for `n` more headers.
    pub fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    /// First value of `name` (which must be given lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (lower-case), in arrival order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many values `name` has; credential headers must not be ambiguous.
    pub fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|(n, _)| n == name).count()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.push(n.as_ref(), v);
        }
        h
    }
}

/// The request as the proxy saw it, independent of how the proxy described it.
#[derive(Clone, Debug, Default)]
pub struct RequestView {
    /// Upper-case HTTP method (`GET`, `POST`, ...).
    pub method: String,
    /// `http` or `https`; empty when the front door does not know.
    pub scheme: String,
    /// Authority exactly as sent (`Host` / `:authority`), port included when present.
    pub host: String,
    /// Raw path before `?`, still percent-encoded as on the wire.
    pub path: String,
    /// Raw query after `?`, still encoded; `None` when the target had no `?`.
    pub query: Option<String>,
    /// All request headers, names lower-cased. Pseudo-headers (`:path`, ...) excluded.
    pub headers: Headers,
    /// The body when the proxy sent it; `None` means "not available", not "empty".
    pub body: Option<Vec<u8>>,
    /// The proxy says the body was cut at its buffer limit.
    pub body_partial: bool,
    /// Stage from the route (Envoy `context_extensions["stage"]`), if any.
    pub stage_hint: Option<String>,
    /// API id or name from the route (Envoy `context_extensions["api"]`), if any.
    pub api_hint: Option<String>,
    /// Downstream peer address, for logs only.
    pub peer: Option<String>,
}

impl RequestView {
    /// Splits a raw request target (`/p/a?x=1`) into path and query.
    pub fn set_target(&mut self, target: &str) {
        match target.split_once('?') {
            Some((p, q)) => {
                self.path = p.to_owned();
                self.query = Some(q.to_owned());
            }
            None => {
                self.path = target.to_owned();
                self.query = None;
            }
        }
    }

    /// The raw target (`path?query`) as it was on the wire.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}
