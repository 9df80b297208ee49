//! `Explain`: an admin's description of a request in, the pipeline's trace out.
//!
//! Owns: turning an `ExplainRequest` (a curl-like request: method, URL, headers,
//! body, what the proxy names) into the `RequestView` a front door would build, with
//! the field named when it cannot, and the trace and decision back into the reply.
//! The deciding itself is `Shared::explain`, the same pipeline Check runs.

use super::convert::R;
use super::status::invalid;
use crate::decide::Decision;
use crate::decide::trace::Recorded;
use crate::pb::admin as pb;
use crate::request::{Headers, RequestView};

/// Headers and body beyond what any front door accepts are refused here too, so an
/// explain request cannot be made arbitrarily large.
const MAX_HEADERS: usize = 512;

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The request as a front door would see it.
pub fn view(r: &pb::ExplainRequest) -> R<RequestView> {
    if !token(&r.method) {
        return Err(invalid("method", "required: an HTTP method such as GET"));
    }
    let mut view = RequestView {
        method: r.method.to_ascii_uppercase(),
        ..RequestView::default()
    };
    let (authority, target) = split_url(&r.url)?;
    if let Some((scheme, _)) = r.url.split_once("://") {
        view.scheme = scheme.to_ascii_lowercase();
    }
    if r.headers.len() > MAX_HEADERS {
        return Err(invalid("headers", format!("at most {MAX_HEADERS} headers")));
    }
    let mut headers = Headers::new();
    for (i, h) in r.headers.iter().enumerate() {
        if !token(&h.name) || h.name.starts_with(':') {
            return Err(invalid(
                format!("headers[{i}].name"),
                "not an HTTP header name",
            ));
        }
        if h.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(invalid(
                format!("headers[{i}].value"),
                "contains CR, LF or NUL",
            ));
        }
        headers.push(&h.name, h.value.clone());
    }
    view.host = [r.host.as_str(), authority]
        .into_iter()
        .find(|h| !h.is_empty())
        .or_else(|| headers.get("host"))
        .ok_or_else(|| {
            invalid(
                "host",
                "required when url is a path and no Host header is given",
            )
        })?
        .to_owned();
    view.headers = headers;
    view.set_target(target);
    view.body = r.body.clone();
    view.stage_hint = (!r.stage.is_empty()).then(|| r.stage.clone());
    view.api_hint = (!r.api.is_empty()).then(|| r.api.clone());
    Ok(view)
}

/// `https://host:port/p?q` into (`host:port`, `/p?q`); `/p?q` into ("", `/p?q`).
fn split_url(url: &str) -> R<(&str, &str)> {
    if url.is_empty() {
        return Err(invalid(
            "url",
            "required: https://host/path?query or /path?query",
        ));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid("url", "contains spaces or control characters"));
    }
    if url.starts_with('/') {
        return Ok(("", url));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            "url",
            "neither absolute (https://host/path) nor a path (/path)",
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(invalid("url", "the scheme must be http or https"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(invalid("url", "needs a host (and no user info)"));
    }
    // An absolute URL with no path asks for `/` (RFC 9112 §3.2.1).
    Ok((authority, if target.is_empty() { "/" } else { target }))
}

pub fn out(steps: Vec<Recorded>, decision: &Decision) -> pb::ExplainResponse {
    let steps = steps
        .into_iter()
        .map(|s| pb::ExplainStep {
            step: s.step.as_str().to_owned(),
            outcome: s.outcome.as_str().to_owned(),
            detail: s.detail,
        })
        .collect();
    match decision {
        Decision::Allow(a) => pb::ExplainResponse {
            allowed: true,
            app_id: a.app_id.clone(),
            app_key: a.app_key.clone(),
            api_id: a.api_id.clone(),
            stage: a.stage.clone(),
            scheme: a.scheme.to_owned(),
            steps,
            headers_to_set: a
                .headers_to_set
                .iter()
                .map(|(name, value)| pb::HttpHeader {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            headers_to_remove: a.headers_to_remove.clone(),
            ..Default::default()
        },
        Decision::Deny(d) => pb::ExplainResponse {
            allowed: false,
            code: d.code.as_str().to_owned(),
            message: d.message.clone(),
            app_id: d.app_id.clone().unwrap_or_default(),
            scheme: d.scheme.unwrap_or_default().to_owned(),
            steps,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, url: &str) -> pb::ExplainRequest {
        pb::ExplainRequest {
            method: method.into(),
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn absolute_url_gives_host_path_and_query() {
        let v = view(&req("get", "https://Api.Example.com:8443/v1/a%2Fb?x=1&y")).unwrap();
        assert_eq!(v.method, "GET");
        assert_eq!(v.scheme, "https");
        assert_eq!(v.host, "Api.Example.com:8443");
        assert_eq!(v.path, "/v1/a%2Fb");
        assert_eq!(v.query.as_deref(), Some("x=1&y"));
        assert_eq!(view(&req("GET", "http://h")).unwrap().path, "/");
    }

    #[test]
    fn a_path_takes_its_host_from_the_field_or_the_host_header() {
        let mut r = req("GET", "/p");
        assert!(view(&r).unwrap_err().to_string().starts_with("host:"));
        r.headers.push(pb::HttpHeader {
            name: "Host".into(),
            value: "h.example".into(),
        });
        assert_eq!(view(&r).unwrap().host, "h.example");
        r.host = "other".into();
        assert_eq!(view(&r).unwrap().host, "other");
    }

    #[test]
    fn bad_fields_are_named() {
        for (r, field) in [
            (req("", "/p"), "method"),
            (req("G T", "/p"), "method"),
            (req("GET", ""), "url"),
            (req("GET", "ftp://h/p"), "url"),
            (req("GET", "h/p"), "url"),
            (req("GET", "http://u@h/p"), "url"),
            (req("GET", "/p q"), "url"),
        ] {
            let e = view(&r).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{field}:")), "{e}");
        }
        let mut r = req("GET", "http://h/");
        r.headers.push(pb::HttpHeader {
            name: "x-a".into(),
            value: "a\r\nb".into(),
        });
        assert!(
            view(&r)
                .unwrap_err()
                .to_string()
                .starts_with("headers[0].value:")
        );
    }
}
