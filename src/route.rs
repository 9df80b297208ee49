//! Path templates and the route table that maps host + method + path to an API.
//!
//! Owns: template syntax (`/users/{id}`, `/files/{*rest}`), its validation and its
//! normal form (used by the store to refuse duplicate routes), and the matcher. Lookup
//! walks a segment trie, so its cost depends on the path's length, not on how many APIs
//! are registered.

use std::collections::HashMap;

/// One segment of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    CatchAll,
}

/// A validated path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("must start with '/'")]
    NoLeadingSlash,
    #[error("parameter '{0}' is not a valid name ([A-Za-z_][A-Za-z0-9_]*)")]
    BadParamName(String),
    #[error("'{{*{0}}}' must be the last segment")]
    CatchAllNotLast(String),
    #[error("segment '{0}' mixes literal text and braces")]
    MixedSegment(String),
    #[error("parameter '{0}' appears twice")]
    DuplicateParam(String),
    #[error("longer than 1024 bytes")]
    TooLong,
    /// The template is not a canonical path (`..`, `//`, escapes, `;`, `\\`...): no
    /// request that reaches routing could ever match it, or one spelling would.
    #[error("{0}")]
    NotCanonical(String),
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > 1024 {
            return Err(TemplateError::TooLong);
        }
        let rest = text
            .strip_prefix('/')
            .ok_or(TemplateError::NoLeadingSlash)?;
        // Requests are matched on their canonical path, so a template must be one too.
        crate::path::canonical(text, crate::path::PathMode::Strict)
            .map_err(|e| TemplateError::NotCanonical(e.to_string()))?;
        let raw: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, seg) in raw.iter().enumerate() {
            if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (name, catch_all) = match inner.strip_prefix('*') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if !valid_name(name) {
                    return Err(TemplateError::BadParamName(name.to_owned()));
                }
                if names.contains(&name) {
                    return Err(TemplateError::DuplicateParam(name.to_owned()));
                }
                names.push(name);
                if catch_all {
                    if i + 1 != raw.len() {
                        return Err(TemplateError::CatchAllNotLast(name.to_owned()));
                    }
                    segments.push(Segment::CatchAll);
                } else {
                    segments.push(Segment::Param);
                }
            } else if seg.contains('{') || seg.contains('}') {
                return Err(TemplateError::MixedSegment((*seg).to_owned()));
            } else {
                segments.push(Segment::Literal((*seg).to_owned()));
            }
        }
        Ok(Self { segments })
    }

    /// Whether a canonical request path matches this template (the same rules as the
    /// route table: a parameter is one non-empty segment, a catch-all starts with one).
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for seg in &self.segments {
            match seg {
                Segment::CatchAll => return parts.next().is_some_and(|p| !p.is_empty()),
                Segment::Param => {
                    if parts.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// The template with parameter names erased: `/users/{id}` and `/users/{uid}` are
    /// the same route.
    pub fn normal_form(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param => out.push_str("{}"),
                Segment::CatchAll => out.push_str("{*}"),
            }
        }
        out
    }
}

/// Which API answers each method at one trie node.
#[derive(Debug, Default)]
struct Endpoints {
    by_method: Vec<(String, String)>,
    any_method: Option<String>,
}

impl Endpoints {
    fn get(&self, method: &str) -> Option<&str> {
        self.by_method
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, id)| id.as_str())
            .or(self.any_method.as_deref())
    }

    fn set(&mut self, methods: &[String], api_id: &str) {
        if methods.is_empty() {
            self.any_method = Some(api_id.to_owned());
        }
        for m in methods {
            self.by_method.retain(|(x, _)| x != m);
            self.by_method.push((m.clone(), api_id.to_owned()));
        }
    }

    fn remove(&mut self, api_id: &str) {
        self.by_method.retain(|(_, id)| id != api_id);
        if self.any_method.as_deref() == Some(api_id) {
            self.any_method = None;
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<String, Node>,
    param: Option<Box<Node>>,
    catch_all: Endpoints,
    here: Endpoints,
}

impl Node {
    fn endpoints_mut(&mut self, segments: &[Segment]) -> &mut Endpoints {
        let mut node = self;
        for (i, seg) in segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => node = node.literal.entry(l.clone()).or_default(),
                Segment::Param => node = node.param.get_or_insert_with(Box::default),
                Segment::CatchAll => {
                    debug_assert_eq!(i + 1, segments.len());
                    return &mut node.catch_all;
                }
            }
        }
        &mut node.here
    }

    /// Depth-first match: literal beats parameter beats catch-all at every level.
    fn find<'a>(&'a self, segments: &[&str], method: &str) -> Option<&'a str> {
        let Some((first, rest)) = segments.split_first() else {
            return self.here.get(method);
        };
        if let Some(found) = self.literal.get(*first).and_then(|n| n.find(rest, method)) {
            return Some(found);
        }
        // A parameter or catch-all never matches an empty segment: `/users/` is not
        // `/users/{id}` with an empty id, and upstreams often serve it as a listing.
        if first.is_empty() {
            return None;
        }
        if let Some(found) = self.param.as_ref().and_then(|n| n.find(rest, method)) {
            return Some(found);
        }
        self.catch_all.get(method)
    }
}

/// Route table: APIs by host (or any host), method and path template.
#[derive(Debug, Default)]
pub struct Router {
    by_host: HashMap<String, Node>,
    any_host: Node,
}

impl Router {
    pub fn insert(
        &mut self,
        api_id: &str,
        host: Option<&str>,
        methods: &[String],
        template: &Template,
    ) {
        let root = match host {
            Some(h) => self.by_host.entry(h.to_owned()).or_default(),
            None => &mut self.any_host,
        };
        root.endpoints_mut(&template.segments).set(methods, api_id);
    }

    pub fn remove(&mut self, api_id: &str, host: Option<&str>, template: &Template) {
        let root = match host {
            Some(h) => match self.by_host.get_mut(h) {
                Some(r) => r,
                None => return,
            },
            None => &mut self.any_host,
        };
        root.endpoints_mut(&template.segments).remove(api_id);
    }

    /// The API for a request: routes of its exact host first, then host-less routes.
    /// `path` is the raw path (no query); `host` is lower-case without port.
    pub fn find(&self, host: &str, method: &str, path: &str) -> Option<&str> {
        let rest = path.strip_prefix('/')?;
        // A fixed-size stack buffer would save this allocation; paths are short and the
        // split is cheaper than the HMAC that precedes it.
        let segments: Vec<&str> = rest.split('/').collect();
        self.by_host
            .get(host)
            .and_then(|n| n.find(&segments, method))
            .or_else(|| self.any_host.find(&segments, method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    #[test]
    fn template_validation() {
        assert!(Template::parse("users").is_err());
        assert_eq!(
            Template::parse("/a/{*r}/b"),
            Err(TemplateError::CatchAllNotLast("r".into()))
        );
        assert_eq!(
            Template::parse("/a/x{id}"),
            Err(TemplateError::MixedSegment("x{id}".into()))
        );
        assert_eq!(
            Template::parse("/a/{1x}"),
            Err(TemplateError::BadParamName("1x".into()))
        );
        assert_eq!(
            Template::parse("/{a}/{a}"),
            Err(TemplateError::DuplicateParam("a".into()))
        );
        assert_eq!(
            t("/users/{id}").normal_form(),
            t("/users/{uid}").normal_form()
        );
        assert_eq!(t("/files/{*rest}").normal_form(), "/files/{*}");
    }

    #[test]
    fn templates_must_be_canonical_paths() {
        for bad in [
            "/a/../b", "/a/./b", "/a//b", "/a/%2Fb", "/a/%61", "/a;x", "/a\\b", "/a/%2a",
        ] {
            assert!(
                matches!(Template::parse(bad), Err(TemplateError::NotCanonical(_))),
                "{bad}"
            );
        }
        assert!(Template::parse("/a/b%2A/{id}").is_ok());
    }

    #[test]
    fn a_template_matches_what_the_router_matches() {
        let tpl = ["/users/{id}", "/users/me", "/files/{*rest}", "/", "/a/b/"];
        let paths = [
            "/users/1",
            "/users/me",
            "/users/",
            "/users",
            "/users/1/x",
            "/files/a/b",
            "/files/",
            "/files",
            "/",
            "/a/b/",
            "/a/b",
        ];
        for tp in tpl {
            let mut r = Router::default();
            r.insert("x", None, &[], &t(tp));
            for p in paths {
                assert_eq!(
                    t(tp).matches(p),
                    r.find("h", "GET", p).is_some(),
                    "{tp} vs {p}"
                );
            }
        }
    }

    #[test]
    fn matching_priorities() {
        let mut r = Router::default();
        r.insert("user", None, &[], &t("/users/{id}"));
        r.insert("me", None, &["GET".into()], &t("/users/me"));
        r.insert("files", None, &[], &t("/files/{*rest}"));
        r.insert(
            "hosted",
            Some("api.example.com"),
            &["POST".into()],
            &t("/users/{id}"),
        );
        assert_eq!(r.find("x", "GET", "/users/42"), Some("user"));
        assert_eq!(r.find("x", "GET", "/users/me"), Some("me"));
        assert_eq!(r.find("x", "POST", "/users/me"), Some("user"));
        assert_eq!(
            r.find("api.example.com", "POST", "/users/1"),
            Some("hosted")
        );
        assert_eq!(r.find("api.example.com", "GET", "/users/1"), Some("user"));
        assert_eq!(r.find("x", "GET", "/files/a/b/c"), Some("files"));
        assert_eq!(r.find("x", "GET", "/files"), None);
        assert_eq!(r.find("x", "GET", "/users/1/extra"), None);
        assert_eq!(r.find("x", "GET", "no-slash"), None);
        assert_eq!(r.find("x", "GET", "/users/"), None);
        assert_eq!(r.find("x", "GET", "/files/"), None);
        r.remove("user", None, &t("/users/{id}"));
        assert_eq!(r.find("x", "GET", "/users/42"), None);
    }
}
