//! On-disk encodings: sled keys and versioned protobuf records.
//!
//! Owns: every byte the store writes. Values are `RECORD_V1` followed by a protobuf
//! record defined here (not the admin API messages, which may evolve independently).
//! Composite index keys join parts with `\0`, which no id, name or AppKey may contain.
//!
//! # Correctness
//! Changing a record's fields in an incompatible way, or the key layout, needs a new
//! version marker with a migration from the previous one, and a bump of
//! `schema::SCHEMA_VERSION` if old files can no longer be read.

use std::collections::BTreeMap;

use prost::Message;

/// Version marker of every value written by this release.
pub const RECORD_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    #[error("undecodable record: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Encodes a record with its version marker.
pub fn encode<M: Message>(record: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + record.encoded_len());
    out.push(RECORD_V1);
    record.encode_raw(&mut out);
    out
}

/// Decodes a record written by `encode`, refusing versions this release cannot read.
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        RECORD_V1 => Ok(M::decode(body)?),
        v => Err(CodecError::UnknownVersion(v)),
    }
}

/// `a\0b\0c`: a composite index key. Prefix scans use `join(&[a, ""])` = `a\0`.
pub fn join(parts: &[&str]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len() + 1).sum();
    let mut out = Vec::with_capacity(len);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// The last part of a composite key (the id an index entry points at).
pub fn last_part(key: &[u8]) -> String {
    let tail = key.rsplit(|&b| b == 0).next().unwrap_or(key);
    String::from_utf8_lossy(tail).into_owned()
}

#[derive(Clone, PartialEq, Message)]
pub struct AppRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub owner: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(btree_map = "string, string", tag = "5")]
    pub tags: BTreeMap<String, String>,
    #[prost(string, tag = "6")]
    pub extend_info: String,
    /// AppCode sealed under the master key; empty when the app has none.
    #[prost(bytes = "vec", tag = "7")]
    pub sealed_app_code: Vec<u8>,
    #[prost(bool, tag = "8")]
    pub enabled: bool,
    #[prost(int64, tag = "9")]
    pub create_ms: i64,
    #[prost(int64, tag = "10")]
    pub update_ms: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyRecord {
    #[prost(string, tag = "1")]
    pub app_key: String,
    #[prost(string, tag = "2")]
    pub app_id: String,
    #[prost(bytes = "vec", tag = "3")]
    pub sealed_secret: Vec<u8>,
    #[prost(bool, tag = "4")]
    pub is_default: bool,
    #[prost(bool, tag = "5")]
    pub enabled: bool,
    /// 0: never expires.
    #[prost(int64, tag = "6")]
    pub expires_ms: i64,
    /// Empty: no previous secret.
    #[prost(bytes = "vec", tag = "7")]
    pub sealed_previous_secret: Vec<u8>,
    #[prost(int64, tag = "8")]
    pub previous_until_ms: i64,
    #[prost(int64, tag = "9")]
    pub create_ms: i64,
    #[prost(int64, tag = "10")]
    pub update_ms: i64,
    #[prost(string, tag = "11")]
    pub name: String,
    #[prost(string, tag = "12")]
    pub description: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GroupRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub owner: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(int64, tag = "5")]
    pub create_ms: i64,
    #[prost(int64, tag = "6")]
    pub update_ms: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ApiRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub owner: String,
    #[prost(string, tag = "4")]
    pub group_id: String,
    #[prost(string, tag = "5")]
    pub description: String,
    #[prost(string, tag = "6")]
    pub host: String,
    #[prost(string, repeated, tag = "7")]
    pub methods: Vec<String>,
    #[prost(string, tag = "8")]
    pub path: String,
    #[prost(string, repeated, tag = "9")]
    pub auth_schemes: Vec<String>,
    #[prost(bool, tag = "10")]
    pub anonymous_allowed: bool,
    #[prost(bool, tag = "11")]
    pub body_digest_required: bool,
    #[prost(bool, tag = "12")]
    pub tencent_strip_env_prefix: bool,
    #[prost(string, tag = "13")]
    pub sigv4_region: String,
    #[prost(string, tag = "14")]
    pub sigv4_service: String,
    #[prost(bool, tag = "15")]
    pub replay_protection: bool,
    #[prost(int64, tag = "16")]
    pub create_ms: i64,
    #[prost(int64, tag = "17")]
    pub update_ms: i64,
    #[prost(bool, tag = "18")]
    pub user_auth_required: bool,
    #[prost(string, repeated, tag = "19")]
    pub user_auth_exempt_apps: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct GrantRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub app_id: String,
    /// Exactly one of api_id / group_id is set.
    #[prost(string, tag = "3")]
    pub api_id: String,
    #[prost(string, tag = "4")]
    pub group_id: String,
    #[prost(string, repeated, tag = "5")]
    pub stages: Vec<String>,
    #[prost(int64, tag = "6")]
    pub expires_ms: i64,
    #[prost(string, tag = "7")]
    pub created_by: String,
    #[prost(int64, tag = "8")]
    pub create_ms: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct AuditRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub time_ms: i64,
    #[prost(string, tag = "3")]
    pub actor: String,
    #[prost(string, tag = "4")]
    pub action: String,
    #[prost(string, tag = "5")]
    pub resource_type: String,
    #[prost(string, tag = "6")]
    pub resource_id: String,
    #[prost(string, tag = "7")]
    pub summary: String,
}

/// An admin API identity. Its token is kept only as a SHA-256 digest.
#[derive(Clone, PartialEq, Message)]
pub struct PrincipalRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    /// `admin`, `viewer`, `provider`, `developer`.
    #[prost(string, tag = "2")]
    pub role: String,
    /// The tenant a provider or developer acts for; empty for admin and viewer.
    #[prost(string, tag = "3")]
    pub owner: String,
    #[prost(bytes = "vec", tag = "4")]
    pub token_sha256: Vec<u8>,
    #[prost(string, tag = "5")]
    pub description: String,
    #[prost(int64, tag = "6")]
    pub create_ms: i64,
    #[prost(int64, tag = "7")]
    pub update_ms: i64,
    /// Canonical client-certificate subject; empty: none.
    #[prost(string, tag = "8")]
    pub cert_subject: String,
}

/// One target of a permission request and what became of it.
#[derive(Clone, PartialEq, Message)]
pub struct PermissionItemRecord {
    /// Exactly one of api_id / group_id is set.
    #[prost(string, tag = "1")]
    pub api_id: String,
    #[prost(string, tag = "2")]
    pub group_id: String,
    /// pending, approved, rejected, withdrawn.
    #[prost(string, tag = "3")]
    pub status: String,
    #[prost(string, tag = "4")]
    pub decided_by: String,
    #[prost(int64, tag = "5")]
    pub decide_ms: i64,
    #[prost(string, tag = "6")]
    pub comment: String,
    #[prost(string, tag = "7")]
    pub grant_id: String,
    #[prost(string, repeated, tag = "8")]
    pub granted_stages: Vec<String>,
    /// 0: the grant never expires.
    #[prost(int64, tag = "9")]
    pub granted_expires_ms: i64,
}

/// A developer's application for permissions (BlueKing), with every decision.
#[derive(Clone, PartialEq, Message)]
pub struct PermissionRequestRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub app_id: String,
    #[prost(message, repeated, tag = "3")]
    pub items: Vec<PermissionItemRecord>,
    #[prost(string, repeated, tag = "4")]
    pub stages: Vec<String>,
    #[prost(string, tag = "5")]
    pub reason: String,
    /// Validity from approval; 0 with no `valid_until_ms`: permanent.
    #[prost(uint32, tag = "6")]
    pub valid_days: u32,
    #[prost(int64, tag = "7")]
    pub valid_until_ms: i64,
    #[prost(string, tag = "8")]
    pub requested_by: String,
    #[prost(int64, tag = "9")]
    pub create_ms: i64,
    #[prost(int64, tag = "10")]
    pub update_ms: i64,
}

/// The stages an owner declared for its grants.
#[derive(Clone, PartialEq, Message)]
pub struct OwnerStagesRecord {
    #[prost(string, tag = "1")]
    pub owner: String,
    #[prost(string, repeated, tag = "2")]
    pub stages: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn app_record_round_trips(id in "[a-z0-9_]{1,20}", name in ".{0,30}", code in proptest::collection::vec(any::<u8>(), 0..40),
                                  tags in proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..4), enabled: bool, t: i64) {
            let r = AppRecord { id, name, owner: "o".into(), description: String::new(), tags, extend_info: "x".into(),
                                sealed_app_code: code, enabled, create_ms: t, update_ms: t };
            prop_assert_eq!(decode::<AppRecord>(&encode(&r)).unwrap(), r);
        }

        #[test]
        fn key_record_round_trips(k in "[A-Za-z0-9]{4,30}", s in proptest::collection::vec(any::<u8>(), 0..80), e: i64, d: bool) {
            let r = KeyRecord { app_key: k, app_id: "app".into(), sealed_secret: s.clone(), is_default: d, enabled: !d,
                                expires_ms: e, sealed_previous_secret: s, previous_until_ms: e, create_ms: 1, update_ms: 2,
                                name: "ci".into(), description: String::new() };
            prop_assert_eq!(decode::<KeyRecord>(&encode(&r)).unwrap(), r);
        }

        #[test]
        fn api_and_grant_records_round_trip(methods in proptest::collection::vec("[A-Z]{3,6}", 0..4), stages in proptest::collection::vec("[A-Z]{3,6}", 0..3), t: i64) {
            let a = ApiRecord { id: "api_1".into(), name: "n".into(), path: "/u/{id}".into(), methods, create_ms: t, ..Default::default() };
            prop_assert_eq!(decode::<ApiRecord>(&encode(&a)).unwrap(), a);
            let g = GrantRecord { id: "grt_1".into(), app_id: "app_1".into(), group_id: "grp".into(), stages, expires_ms: t, ..Default::default() };
            prop_assert_eq!(decode::<GrantRecord>(&encode(&g)).unwrap(), g);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<AppRecord>(&bytes);
            let _ = decode::<KeyRecord>(&bytes);
        }
    }

    /// Golden bytes: a change here means old data files no longer decode the same way.
    #[test]
    fn group_record_golden_bytes() {
        let g = GroupRecord {
            id: "g1".into(),
            name: "n".into(),
            owner: "o".into(),
            description: String::new(),
            create_ms: 1,
            update_ms: 2,
        };
        assert_eq!(
            encode(&g),
            vec![1, 10, 2, b'g', b'1', 18, 1, b'n', 26, 1, b'o', 40, 1, 48, 2]
        );
    }

    #[test]
    fn unknown_version_is_refused() {
        assert!(matches!(
            decode::<GroupRecord>(&[9, 1, 2]),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode::<GroupRecord>(&[]), Err(CodecError::Empty)));
    }

    #[test]
    fn composite_keys() {
        assert_eq!(join(&["a", "b"]), b"a\0b");
        assert_eq!(last_part(b"a\0b"), "b");
        assert_eq!(last_part(b"solo"), "solo");
    }
}
