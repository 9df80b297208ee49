//! Who may call what: one table from admin RPC to rule, and the one check.
//!
//! Owns: `TABLE` and `check`. Handlers only say whose resource a call touches (the
//! owner of the app, and of the group, API or grant target, as stored, or as the
//! request names it on create); whether the caller may is decided here, from the
//! table, and a refusal is `PERMISSION_DENIED` naming what was needed. The role
//! matrix test iterates this same table.
//!
//! - `admin`: everything.
//! - `viewer`: every read (never a secret: reads return none), not Backup (it holds
//!   the sealed secrets) nor Apply.
//! - `provider` of an owner: that owner's groups, APIs and the grants on them; any
//!   app looked up by id, shown as id, name and owner only (partner authorization).
//! - `developer` of an owner: that owner's apps and their key pairs; the grants of
//!   those apps and what they may call.

use tonic::Status;

use crate::model::{Principal, Role};

/// How far a scoped role reaches on one RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Not at all.
    No,
    /// Only what its owner owns: the app's owner for a developer, the group's,
    /// API's or grant target's owner for a provider.
    Own,
    /// Whatever the owner, with a limited view (a provider finding an app by id).
    AnyLimited,
}

#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub rpc: &'static str,
    pub viewer: bool,
    pub provider: Scope,
    pub developer: Scope,
}

const fn r(rpc: &'static str, viewer: bool, provider: Scope, developer: Scope) -> Rule {
    Rule {
        rpc,
        viewer,
        provider,
        developer,
    }
}

use Scope::{AnyLimited, No, Own};

/// Every admin RPC. An RPC missing here is refused to everyone but admin.
pub const TABLE: &[Rule] = &[
    r("CreateApp", false, No, Own),
    r("GetApp", true, AnyLimited, Own),
    r("ListApps", true, No, Own),
    r("UpdateApp", false, No, Own),
    r("DeleteApp", false, No, Own),
    r("EnableApp", false, No, Own),
    r("DisableApp", false, No, Own),
    r("ResetAppCode", false, No, Own),
    r("CreateKeyPair", false, No, Own),
    r("GetKeyPair", true, No, Own),
    r("ListKeyPairs", true, No, Own),
    r("UpdateKeyPair", false, No, Own),
    r("DeleteKeyPair", false, No, Own),
    r("ResetKeyPairSecret", false, No, Own),
    r("EnableKeyPair", false, No, Own),
    r("DisableKeyPair", false, No, Own),
    r("CreateGroup", false, Own, No),
    r("GetGroup", true, Own, No),
    r("ListGroups", true, Own, No),
    r("UpdateGroup", false, Own, No),
    r("DeleteGroup", false, Own, No),
    r("CreateApi", false, Own, No),
    r("GetApi", true, Own, No),
    r("ListApis", true, Own, No),
    r("UpdateApi", false, Own, No),
    r("DeleteApi", false, Own, No),
    r("CreateGrant", false, Own, No),
    r("GetGrant", true, Own, Own),
    r("ListGrants", true, Own, Own),
    r("DeleteGrant", false, Own, No),
    r("UpdateGrant", false, Own, No),
    r("BatchCreateGrants", false, Own, No),
    r("BatchDeleteGrants", false, Own, No),
    r("ListAppPermissions", true, No, Own),
    r("ListApiCallers", true, Own, No),
    r("CreatePermissionRequest", false, No, Own),
    r("GetPermissionRequest", true, Own, Own),
    r("ListPermissionRequests", true, Own, Own),
    r("ApprovePermissionRequest", false, Own, No),
    r("RejectPermissionRequest", false, Own, No),
    r("WithdrawPermissionRequest", false, No, Own),
    r("SetOwnerStages", false, Own, No),
    r("GetOwnerStages", true, Own, Own),
    r("ListAuditEvents", true, No, No),
    r("Backup", false, No, No),
    r("Export", true, No, No),
    r("Apply", false, No, No),
    r("Explain", true, No, No),
    r("CreatePrincipal", false, No, No),
    r("GetPrincipal", true, No, No),
    r("ListPrincipals", true, No, No),
    r("DeletePrincipal", false, No, No),
    r("RotatePrincipalToken", false, No, No),
    r("WhoAmI", true, AnyLimited, AnyLimited),
];

pub fn rule(rpc: &str) -> Option<&'static Rule> {
    TABLE.iter().find(|r| r.rpc == rpc)
}

/// Whose resource a call touches: the app's owner (developers' side) and the
/// group's, API's or grant target's owner (providers' side). `None`: the call names
/// none (a list without an owner, a call on nothing in particular).
#[derive(Clone, Debug, Default)]
pub struct Owners<'a> {
    pub app: Option<&'a str>,
    pub resource: Option<&'a str>,
}

/// What the caller may see of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Full,
    /// Only identifying fields (a provider's view of another tenant's app).
    Limited,
}

/// The one check: may `p` call `rpc` on what `owners` names?
pub fn check(p: &Principal, rpc: &str, owners: &Owners<'_>) -> Result<View, Status> {
    let Some(rule) = rule(rpc) else {
        return if p.role == Role::Admin {
            Ok(View::Full)
        } else {
            Err(denied(p, rpc, "role admin"))
        };
    };
    let (scope, owner) = match p.role {
        Role::Admin => return Ok(View::Full),
        Role::Viewer if rule.viewer => return Ok(View::Full),
        Role::Viewer => return Err(denied(p, rpc, &needed(rule))),
        Role::Provider => (rule.provider, owners.resource),
        Role::Developer => (rule.developer, owners.app),
    };
    match scope {
        Scope::No => Err(denied(p, rpc, &needed(rule))),
        Scope::AnyLimited => Ok(if owner == Some(p.owner.as_str()) {
            View::Full
        } else {
            View::Limited
        }),
        Scope::Own if owner == Some(p.owner.as_str()) => Ok(View::Full),
        Scope::Own => Err(denied(
            p,
            rpc,
            &format!(
                "{}; this names {}",
                needed(rule),
                owner.map_or("no owner (name one of yours)".to_owned(), |o| {
                    format!("owner '{o}'")
                })
            ),
        )),
    }
}

/// The roles that may call `rule.rpc`, for the refusal's text.
fn needed(rule: &Rule) -> String {
    let mut who = vec!["admin".to_owned()];
    if rule.viewer {
        who.push("viewer".into());
    }
    for (role, scope) in [("provider", rule.provider), ("developer", rule.developer)] {
        match scope {
            Scope::No => {}
            Scope::Own => who.push(format!("{role} of the owner")),
            Scope::AnyLimited => who.push(role.into()),
        }
    }
    format!("role {}", who.join(" or "))
}

fn denied(p: &Principal, rpc: &str, need: &str) -> Status {
    let you = if p.role.scoped() {
        format!("{} of '{}'", p.role.as_str(), p.owner)
    } else {
        p.role.as_str().to_owned()
    };
    Status::permission_denied(format!(
        "{rpc} needs {need}; principal '{}' is {you}",
        p.name
    ))
}

/// For a scoped principal, the owner a list is limited to: its own (a filter naming
/// another owner is refused by `check`).
pub fn list_owner<'a>(p: &'a Principal, asked: &'a str) -> Option<&'a str> {
    match (p.role.scoped(), asked.is_empty()) {
        (true, true) => Some(p.owner.as_str()),
        (_, false) => Some(asked),
        (false, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, owner: &str) -> Principal {
        Principal {
            name: "p".into(),
            role,
            owner: owner.into(),
            description: String::new(),
            cert_subject: String::new(),
            create_ms: 0,
            update_ms: 0,
        }
    }

    #[test]
    fn the_table_decides() {
        let mine = Owners {
            app: Some("acme"),
            resource: Some("acme"),
        };
        let theirs = Owners {
            app: Some("other"),
            resource: Some("other"),
        };
        let dev = who(Role::Developer, "acme");
        assert_eq!(check(&dev, "CreateApp", &mine).unwrap(), View::Full);
        let e = check(&dev, "CreateApp", &theirs).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("developer of the owner"), "{e:?}");
        assert!(check(&dev, "CreateApi", &mine).is_err());
        let prov = who(Role::Provider, "acme");
        assert_eq!(check(&prov, "GetApp", &theirs).unwrap(), View::Limited);
        assert!(check(&prov, "ListApps", &mine).is_err());
        let viewer = who(Role::Viewer, "");
        assert!(check(&viewer, "GetApp", &theirs).is_ok());
        assert!(check(&viewer, "CreateApp", &theirs).is_err());
        assert!(check(&viewer, "Backup", &Owners::default()).is_err());
        assert!(check(&who(Role::Admin, ""), "NotInTheTable", &theirs).is_ok());
        assert!(check(&viewer, "NotInTheTable", &theirs).is_err());
    }

    #[test]
    fn every_rpc_of_the_service_is_in_the_table() {
        use prost::Message as _;
        let fds = prost_types::FileDescriptorSet::decode(crate::pb::ADMIN_DESCRIPTOR_SET)
            .expect("descriptor set");
        let methods: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .filter(|s| s.name() == "Admin")
            .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
            .collect();
        assert!(methods.len() > 40, "{methods:?}");
        for m in &methods {
            assert!(rule(m).is_some(), "{m} is not in access::TABLE");
        }
        for r in TABLE {
            assert!(
                methods.iter().any(|m| m == r.rpc),
                "{} is not an RPC",
                r.rpc
            );
        }
    }
}
