//! Tree names, the schema version and the checks run when the store opens.
//!
//! Owns: which sled trees exist (`Tree`), what the meta tree holds, and the refusal to
//! open files written by an incompatible release or under another master key.

use super::StoreError;
use super::seal::Sealer;

/// On-disk schema version. Bump it (with a migration) when the key layout or a record
/// changes incompatibly; see `codec`.
pub const SCHEMA_VERSION: u32 = 1;

pub(super) const META_SCHEMA: &[u8] = b"schema_version";
pub(super) const META_KEY_CHECK: &[u8] = b"master_key_check";
pub(super) const KEY_CHECK_PLAINTEXT: &[u8] = b"keygate master key check";

/// Every data tree; the discriminant is the position in `Store::trees`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    Apps,
    /// owner \0 name -> app id
    AppNames,
    /// SHA-256(AppCode) -> app id
    AppCodes,
    /// AppKey -> key record
    Keys,
    /// app id \0 AppKey -> ()
    KeysByApp,
    Groups,
    /// owner \0 name -> group id
    GroupNames,
    Apis,
    /// name -> api id (API names are global: an Envoy route may name an API)
    ApiNames,
    /// host \0 METHOD|* \0 normal form -> api id
    ApiRoutes,
    /// group id \0 api id -> ()
    ApisByGroup,
    Grants,
    /// app id \0 grant id -> ()
    GrantsByApp,
    /// api-or-group id \0 grant id -> ()
    GrantsByTarget,
    /// big-endian u64 sequence -> audit record
    Audit,
    /// principal name -> principal record (admin API identities)
    Principals,
    /// SHA-256(token) -> principal name
    PrincipalTokens,
    /// request id -> permission request record
    PermissionRequests,
    /// app id \0 request id -> ()
    RequestsByApp,
    /// api-or-group id \0 request id -> ()
    RequestsByTarget,
    /// owner -> the stages it declared
    OwnerStages,
    /// name -> value: what the replicas share that is no admin resource (the Redis
    /// nonce store's epoch)
    Settings,
}

impl Tree {
    pub const ALL: [Tree; 22] = [
        Tree::Apps,
        Tree::AppNames,
        Tree::AppCodes,
        Tree::Keys,
        Tree::KeysByApp,
        Tree::Groups,
        Tree::GroupNames,
        Tree::Apis,
        Tree::ApiNames,
        Tree::ApiRoutes,
        Tree::ApisByGroup,
        Tree::Grants,
        Tree::GrantsByApp,
        Tree::GrantsByTarget,
        Tree::Audit,
        Tree::Principals,
        Tree::PrincipalTokens,
        Tree::PermissionRequests,
        Tree::RequestsByApp,
        Tree::RequestsByTarget,
        Tree::OwnerStages,
        Tree::Settings,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Apps => "apps",
            Tree::AppNames => "app_names",
            Tree::AppCodes => "app_codes",
            Tree::Keys => "keys",
            Tree::KeysByApp => "keys_by_app",
            Tree::Groups => "groups",
            Tree::GroupNames => "group_names",
            Tree::Apis => "apis",
            Tree::ApiNames => "api_names",
            Tree::ApiRoutes => "api_routes",
            Tree::ApisByGroup => "apis_by_group",
            Tree::Grants => "grants",
            Tree::GrantsByApp => "grants_by_app",
            Tree::GrantsByTarget => "grants_by_target",
            Tree::Audit => "audit",
            Tree::Principals => "principals",
            Tree::PrincipalTokens => "principal_tokens",
            Tree::PermissionRequests => "permission_requests",
            Tree::RequestsByApp => "requests_by_app",
            Tree::RequestsByTarget => "requests_by_target",
            Tree::OwnerStages => "owner_stages",
            Tree::Settings => "settings",
        }
    }

    pub fn idx(self) -> usize {
        self as usize
    }
}

/// Checks (or, on a fresh store, writes) the schema version and the master-key check.
pub fn check_meta(meta: &sled::Tree, sealer: &Sealer, fresh: bool) -> Result<(), StoreError> {
    match meta.get(META_SCHEMA)? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::corrupt("meta", "schema_version is not 4 bytes"))?;
            if found != SCHEMA_VERSION {
                return Err(StoreError::SchemaMismatch {
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        None if fresh => {
            meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
        }
        None => {
            return Err(StoreError::corrupt(
                "meta",
                "schema_version missing from a non-empty store",
            ));
        }
    }
    match meta.get(META_KEY_CHECK)? {
        Some(sealed) => {
            let plain = sealer
                .open(&sealed, META_KEY_CHECK)
                .map_err(|_| StoreError::WrongMasterKey)?;
            if plain.as_slice() != KEY_CHECK_PLAINTEXT {
                return Err(StoreError::WrongMasterKey);
            }
        }
        None => {
            let sealed = sealer.seal(KEY_CHECK_PLAINTEXT, META_KEY_CHECK)?;
            meta.insert(META_KEY_CHECK, sealed)?;
        }
    }
    Ok(())
}
