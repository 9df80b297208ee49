//! The canonical form of a request path and host: what routing and grants are decided on.
//!
//! Owns: the one reading of a path and a host that keygate shares with the proxies and
//! upstreams in front of and behind it (SECURITY.md §8).
//! Upstreams decode percent-escapes, resolve dot segments and merge slashes before they
//! route; if keygate matched the raw bytes instead, `/v1/x/../admin` would be authorized
//! as `/v1/{*rest}` and served as `/v1/admin`. So:
//!
//! * the canonical path has escapes of unreserved characters (RFC 3986 §2.3) decoded,
//!   `//` merged, `.`/`..` resolved (RFC 3986 §5.2.4), other escapes kept with upper-case
//!   hex;
//! * some spellings no canonical form can make safe, because upstreams disagree on them:
//!   an encoded `/` or `\`, a raw `\`, a `;` path parameter (Tomcat and Spring strip
//!   them), NUL or control bytes raw or encoded, bytes outside visible ASCII, broken
//!   escapes. These are always refused;
//! * in the default mode ([`PathMode::Strict`]) a path whose raw form differs from its
//!   canonical form is refused as well: a client that signs `/v1/%61dmin` means
//!   something no proxy agrees on. [`PathMode::Normalize`] routes such paths on their
//!   canonical form instead, for odd clients behind proxies that normalise the same way.
//!
//! Signatures are still verified over the bytes the client sent; only routing and
//! grants use this form. This module is vocabulary: it imports nothing of keygate's and
//! chooses no deny code.

use std::borrow::Cow;
use std::fmt;

/// How strictly a path must already be canonical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMode {
    /// Refuse any path that is not already in canonical form.
    #[default]
    Strict,
    /// Route on the canonical form of paths that merely need decoding of unreserved
    /// escapes, slash merging or dot-segment resolution.
    #[serde(alias = "normalise")]
    Normalize,
}

impl PathMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PathMode::Strict => "strict",
            PathMode::Normalize => "normalize",
        }
    }
}

impl std::str::FromStr for PathMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "strict" => Ok(PathMode::Strict),
            "normalize" | "normalise" => Ok(PathMode::Normalize),
            other => Err(format!(
                "unknown path mode {other:?} (expected strict or normalize)"
            )),
        }
    }
}

/// Why a path cannot be routed safely. The text names what was ambiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ambiguity {
    NoLeadingSlash,
    /// `%2F` or `%5C`: one upstream splits on it, another does not.
    EncodedSeparator(&'static str),
    /// A raw `\`, which some servers treat as `/`.
    Backslash,
    /// A `;` (raw or `%3B`): a path parameter some frameworks strip before routing.
    PathParameter,
    /// A NUL or control byte, raw or encoded.
    ControlByte,
    /// A byte outside visible ASCII; clients must percent-encode it.
    NonAscii,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `#` in a request path (a fragment is never sent).
    Fragment,
    /// The raw path is not in canonical form (strict mode only).
    NotCanonical {
        canonical: String,
    },
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ambiguity::NoLeadingSlash => f.write_str("the path must start with '/'"),
            Ambiguity::EncodedSeparator(what) => {
                write!(f, "the path carries an encoded separator ({what})")
            }
            Ambiguity::Backslash => f.write_str("the path carries a backslash"),
            Ambiguity::PathParameter => f.write_str("the path carries a ';' path parameter"),
            Ambiguity::ControlByte => f.write_str("the path carries a NUL or control byte"),
            Ambiguity::NonAscii => f.write_str("the path carries a byte that is not visible ASCII"),
            Ambiguity::BadEscape => f.write_str("the path carries a broken percent-escape"),
            Ambiguity::Fragment => f.write_str("the path carries a '#'"),
            Ambiguity::NotCanonical { canonical } => write!(
                f,
                "the path is not in canonical form (encoded unreserved characters, '//', '.' \
                 or '..' segments); its canonical form is {canonical}"
            ),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes unreserved escapes and checks every byte; returns the decoded path (still
/// with `//` and dot segments).
fn decode_checked(raw: &str) -> Result<String, Ambiguity> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(Ambiguity::BadEscape);
                };
                let v = h * 16 + l;
                match v {
                    b'/' => return Err(Ambiguity::EncodedSeparator("%2F")),
                    b'\\' => return Err(Ambiguity::EncodedSeparator("%5C")),
                    b';' => return Err(Ambiguity::PathParameter),
                    0x00..=0x1f | 0x7f => return Err(Ambiguity::ControlByte),
                    _ if unreserved(v) => out.push(char::from(v)),
                    _ => {
                        out.push('%');
                        out.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
                        out.push(char::from(HEX_UPPER[usize::from(v & 0xf)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(Ambiguity::Backslash),
            b';' => return Err(Ambiguity::PathParameter),
            b'#' => return Err(Ambiguity::Fragment),
            0x00..=0x1f | 0x7f => return Err(Ambiguity::ControlByte),
            0x80..=0xff | b' ' => return Err(Ambiguity::NonAscii),
            _ => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Merges empty segments and resolves `.` and `..` (never above the root). A trailing
/// slash, and a trailing dot segment, leave the path ending in `/`, as RFC 3986 does.
fn resolve(decoded: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let rest = decoded.strip_prefix('/').unwrap_or(decoded);
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, seg) in parts.into_iter().enumerate() {
        let is_last = i == last;
        match seg {
            "" | "." => trailing_slash = is_last,
            ".." => {
                segments.pop();
                trailing_slash = is_last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical form of a raw request path (no query), or why it cannot be routed.
/// Borrows when the path already is canonical, which is the common case.
pub fn canonical(raw: &str, mode: PathMode) -> Result<Cow<'_, str>, Ambiguity> {
    if !raw.starts_with('/') {
        return Err(Ambiguity::NoLeadingSlash);
    }
    let decoded = decode_checked(raw)?;
    let resolved = resolve(&decoded);
    if resolved == raw {
        return Ok(Cow::Borrowed(raw));
    }
    match mode {
        PathMode::Strict => Err(Ambiguity::NotCanonical {
            canonical: resolved,
        }),
        PathMode::Normalize => Ok(Cow::Owned(resolved)),
    }
}

/// Why a host cannot be routed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadHost(pub &'static str);

impl fmt::Display for BadHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid host: {}", self.0)
    }
}

/// The host a route is matched on: lower-case, without port, without the trailing dot
/// of a fully qualified name (`Admin.Example.com.:443` → `admin.example.com`). IPv6
/// literals keep their brackets' content. Empty stays empty (no host: host-less routes
/// only). Anything else that is not a plain host name or address is refused, so two
/// spellings of one host can never reach different routes.
pub fn canonical_host(raw: &str) -> Result<String, BadHost> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    let name = if let Some(rest) = raw.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or(BadHost("an IPv6 literal without ']'"))?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return Err(BadHost("text after an IPv6 literal"));
        }
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(BadHost("an IPv6 literal with other characters"));
        }
        return Ok(inner.to_ascii_lowercase());
    } else {
        match raw.split_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return Err(BadHost("a port that is not a number")),
            None => raw,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(BadHost("an empty or over-long name"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(BadHost("an empty or over-long label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BadHost("characters other than [A-Za-z0-9._-]"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(p: &str) -> Result<Cow<'_, str>, Ambiguity> {
        canonical(p, PathMode::Strict)
    }
    fn norm(p: &str) -> String {
        canonical(p, PathMode::Normalize).unwrap().into_owned()
    }

    #[test]
    fn canonical_paths_pass_and_borrow() {
        for p in [
            "/",
            "/v1/users",
            "/v1/users/",
            "/a/b%20c",
            "/files/a.txt",
            "/~x/-_.",
        ] {
            assert!(matches!(strict(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn every_ambiguous_spelling_is_refused_in_strict_mode() {
        for p in [
            "/v1/%61dmin/users",
            "/v1/x/../admin/users",
            "/v1//admin/users",
            "/v1/./admin/users",
            "/v1/%2e%2e/admin",
            "/v1/x/%2E%2E/admin",
            "/healthz/../v1/admin/x",
            "/static/../v1/admin/users",
            "/a/b%7e",
            "/a/..",
            "/a/.",
            "//",
            "/a/b%2f",
        ] {
            assert!(strict(p).is_err(), "{p} passed");
        }
    }

    #[test]
    fn some_spellings_are_refused_in_every_mode() {
        for (p, want) in [
            ("/v1/admin%2Fusers", Ambiguity::EncodedSeparator("%2F")),
            ("/v1/x/..%2fadmin", Ambiguity::EncodedSeparator("%2F")),
            ("/v1/x/..%5Cadmin", Ambiguity::EncodedSeparator("%5C")),
            ("/v1/x\\..\\admin", Ambiguity::Backslash),
            ("/v1/x;/../admin", Ambiguity::PathParameter),
            ("/v1/x%3b/admin", Ambiguity::PathParameter),
            ("/v1/x%00", Ambiguity::ControlByte),
            ("/v1/x\u{1}", Ambiguity::ControlByte),
            ("/v1/x%0A", Ambiguity::ControlByte),
            ("/v1/caf\u{e9}", Ambiguity::NonAscii),
            ("/v1/x%zz", Ambiguity::BadEscape),
            ("/v1/x%4", Ambiguity::BadEscape),
            ("/v1/x#y", Ambiguity::Fragment),
            ("v1/x", Ambiguity::NoLeadingSlash),
        ] {
            assert_eq!(canonical(p, PathMode::Normalize), Err(want.clone()), "{p}");
            assert_eq!(strict(p), Err(want), "{p}");
        }
    }

    #[test]
    fn normalize_mode_resolves_like_rfc3986() {
        assert_eq!(norm("/v1/%61dmin/users"), "/v1/admin/users");
        assert_eq!(norm("/v1/x/../admin/users"), "/v1/admin/users");
        assert_eq!(norm("/v1//admin/users"), "/v1/admin/users");
        assert_eq!(norm("/v1/./admin"), "/v1/admin");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/a/%2e%2e/b"), "/b");
        assert_eq!(norm("/a/b%2a"), "/a/b%2A");
        assert_eq!(norm("//"), "/");
    }

    #[test]
    fn hosts_fold_to_one_spelling() {
        for h in [
            "admin.example.com",
            "Admin.Example.COM",
            "admin.example.com.",
            "admin.example.com:443",
            "ADMIN.example.com.:8443",
        ] {
            assert_eq!(canonical_host(h).unwrap(), "admin.example.com", "{h}");
        }
        assert_eq!(canonical_host("[::1]:8080").unwrap(), "::1");
        assert_eq!(canonical_host("127.0.0.1:80").unwrap(), "127.0.0.1");
        assert_eq!(canonical_host("").unwrap(), "");
        for h in [
            "a..b", ".a", "a.b..", "a b", "a@b", "a/b", "a:b", "a:", "a%2eb", "[::1", "[::1]x",
            "[zz]", "x:1:2",
        ] {
            assert!(canonical_host(h).is_err(), "{h} passed");
        }
    }
}
