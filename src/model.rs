//! Domain types: apps, key pairs, groups, APIs, grants, audit events, and `Secret`.
//!
//! Owns: the shapes the store persists and the index serves. No I/O, no wire types:
//! proto messages are converted at the admin edge, records are encoded in the store.

use std::collections::BTreeMap;
use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A secret string (AppSecret, AppCode). Redacted in `Debug`, no `Display`, zeroed on
/// drop, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }

    /// The secret's text, for signing and sealing only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality with bytes a caller presented.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(other).into()
    }
}

/// The inner `Zeroizing` wipes the text when a `Secret` (or any clone of it) is dropped;
/// the marker lets code and tests require that property by type.
impl zeroize::ZeroizeOnDrop for Secret {}

/// Serialised redacted, like `Debug`: what serialises a model (the audit log's
/// before/after summaries) can never write a secret.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub extend_info: String,
    pub app_code: Option<Secret>,
    pub enabled: bool,
    pub create_ms: i64,
    pub update_ms: i64,
}

/// A previous secret that still verifies until `until_ms` (after a reset with grace).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PreviousSecret {
    pub secret: Secret,
    pub until_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyPair {
    pub app_key: String,
    pub app_id: String,
    /// Which pair this is, for people ("ci", "laptop"); not unique.
    pub name: String,
    pub description: String,
    pub secret: Secret,
    pub is_default: bool,
    pub enabled: bool,
    pub expires_ms: Option<i64>,
    pub previous: Option<PreviousSecret>,
    pub create_ms: i64,
    pub update_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub create_ms: i64,
    pub update_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Api {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub group_id: Option<String>,
    pub description: String,
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    /// Upper-case methods; empty matches any.
    pub methods: Vec<String>,
    /// Path template (`/users/{id}`, `/files/{*rest}`), validated by `route::Template`.
    pub path: String,
    /// Scheme names (`aliyun`, `tencent`, ...); empty means every scheme whose secret
    /// never travels in the request.
    pub auth_schemes: Vec<String>,
    pub anonymous_allowed: bool,
    pub body_digest_required: bool,
    pub tencent_strip_env_prefix: bool,
    pub sigv4_region: Option<String>,
    pub sigv4_service: Option<String>,
    pub replay_protection: bool,
    /// The request must also carry a valid user token (`crate::userauth`).
    pub user_auth_required: bool,
    /// Apps that need no user token on this API (BlueKing's user-auth-free whitelist).
    pub user_auth_exempt_apps: Vec<String>,
    pub create_ms: i64,
    pub update_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum GrantTarget {
    Api(String),
    Group(String),
}

impl GrantTarget {
    pub fn id(&self) -> &str {
        match self {
            GrantTarget::Api(id) | GrantTarget::Group(id) => id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub id: String,
    pub app_id: String,
    pub target: GrantTarget,
    /// Upper-case stage names; empty means any stage.
    pub stages: Vec<String>,
    pub expires_ms: Option<i64>,
    pub created_by: String,
    pub create_ms: i64,
}

impl Grant {
    /// Whether this grant lets its app in for `stage` at `now_ms`.
    pub fn covers_stage(&self, stage: &str) -> bool {
        self.stages.is_empty() || self.stages.iter().any(|s| s.eq_ignore_ascii_case(stage))
    }

    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: u64,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub summary: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn secrets_are_redacted_in_debug_and_wiped_on_drop() {
        wipes_on_drop::<Secret>();
        let text = "s3cret-value-0123456789";
        let s = Secret::new(text);
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let key = KeyPair {
            name: Default::default(),
            description: Default::default(),
            app_key: "AK".into(),
            app_id: "app".into(),
            secret: s.clone(),
            is_default: true,
            enabled: true,
            expires_ms: None,
            previous: Some(PreviousSecret {
                secret: Secret::new("previous-s3cret-0123456789"),
                until_ms: 1,
            }),
            create_ms: 0,
            update_ms: 0,
        };
        let app = App {
            id: "app".into(),
            name: "n".into(),
            owner: "o".into(),
            description: String::new(),
            tags: BTreeMap::new(),
            extend_info: String::new(),
            app_code: Some(Secret::new("app-code-s3cret-0123456789")),
            enabled: true,
            create_ms: 0,
            update_ms: 0,
        };
        let shown = format!("{key:?} {key:#?} {app:?} {app:#?}");
        for secret in [text, "previous-s3cret", "app-code-s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("AK"), "the public parts are still shown");
        assert!(s.ct_eq(text.as_bytes()) && !s.ct_eq(b"s3cret-value-012345678"));
    }
}

/// What an admin principal may do (`server::admin::access` has the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything; the bootstrap token is one.
    Admin,
    /// Every read, never a secret.
    Viewer,
    /// An owner's groups, APIs and the grants on them.
    Provider,
    /// An owner's apps and their key pairs.
    Developer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Viewer, Role::Provider, Role::Developer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Provider => "provider",
            Role::Developer => "developer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role acts for one owner (a tenant).
    pub fn scoped(self) -> bool {
        matches!(self, Role::Provider | Role::Developer)
    }
}

/// An admin API identity, authenticated by a bearer token (kept as a digest).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The owner a provider or developer acts for; empty otherwise.
    pub owner: String,
    pub description: String,
    /// The canonical client-certificate subject (`crate::subject`) that authenticates
    /// as this principal on an mTLS admin listener; empty: its token only.
    pub cert_subject: String,
    pub create_ms: i64,
    pub update_ms: i64,
}
