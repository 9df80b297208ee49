//! `Export` and `Apply`: a whole configuration as one proto `Config`.
//!
//! Owns: validating every entry of a `Config` with the same field rules as the
//! single-entity calls (errors name the entry: `apis[2].path`), turning it into the
//! store's `Desired`, and the store's entities and plans back into protos. Matching,
//! planning and the one transaction are the store's (`store::apply`).

use super::convert::*;
use super::status::{AdminError, invalid};
use crate::pb::admin as pb;
use crate::store::Store;
use crate::store::apply::{
    Applied, Desired, DesiredApi, DesiredApp, DesiredGrant, DesiredGroup, DesiredKey, Planned,
};

/// An error of entry `i` of `list`: `App.name` becomes `apps[3].name`.
fn at(list: &str, i: usize, e: AdminError) -> AdminError {
    match e {
        AdminError::Invalid { field, message } => {
            let rest = match field.split_once('.') {
                Some((kind, rest)) if kind.starts_with(|c: char| c.is_ascii_uppercase()) => rest,
                _ => &field,
            };
            invalid(format!("{list}[{i}].{rest}"), message)
        }
        other => other,
    }
}

fn id_of(field: &str, id: &str) -> R<Option<String>> {
    if id.is_empty() {
        return Ok(None);
    }
    app_id(field, id)?;
    Ok(Some(id.to_owned()))
}

/// A validated `Config` as the store's desired state.
pub fn desired(c: &pb::Config) -> R<Desired> {
    let mut d = Desired::default();
    for (i, a) in c.apps.iter().enumerate() {
        if !a.app_code.is_empty() {
            return Err(invalid(
                format!("apps[{i}].app_code"),
                "AppCodes are not part of a configuration (ResetAppCode sets one)",
            ));
        }
        let new = new_app(a).map_err(|e| at("apps", i, e))?;
        d.apps.push(DesiredApp {
            id: new.id,
            name: new.name,
            owner: new.owner,
            description: new.description,
            tags: new.tags,
            extend_info: new.extend_info,
            enabled: a.enabled,
        });
    }
    for (i, k) in c.key_pairs.iter().enumerate() {
        let new = new_key(&pb::CreateKeyPairRequest {
            app_id: k.app_id.clone(),
            app_key: k.app_key.clone(),
            app_secret: k.app_secret.clone(),
            expires_at: k.expires_at,
            name: k.name.clone(),
            description: k.description.clone(),
        })
        .map_err(|e| at("key_pairs", i, e))?;
        let Some(app_key) = new.app_key else {
            return Err(invalid(
                format!("key_pairs[{i}].app_key"),
                "required: a key pair is matched by its AppKey",
            ));
        };
        d.keys.push(DesiredKey {
            app_key,
            app: new.app_id,
            is_default: k.is_default,
            enabled: k.enabled,
            expires_ms: new.expires_ms,
            secret: new.app_secret,
            name: new.name,
            description: new.description,
        });
    }
    for (i, g) in c.groups.iter().enumerate() {
        let field = |f: &str| format!("groups[{i}].{f}");
        name(&field("name"), &g.name)?;
        name(&field("owner"), &g.owner)?;
        text(&field("description"), &g.description, 1024)?;
        d.groups.push(DesiredGroup {
            id: id_of(&field("id"), &g.id)?,
            name: g.name.clone(),
            owner: g.owner.clone(),
            description: g.description.clone(),
        });
    }
    for (i, a) in c.apis.iter().enumerate() {
        let mut api = api_in(a).map_err(|e| at("apis", i, e))?;
        api.id = id_of(&format!("apis[{i}].id"), &a.id)?.unwrap_or_default();
        d.apis.push(DesiredApi { api });
    }
    for (i, o) in c.owner_stages.iter().enumerate() {
        name(&format!("owner_stages[{i}].owner"), &o.owner)?;
        let stages = stage_list(&format!("owner_stages[{i}].stages"), &o.stages)?;
        if stages.is_empty() {
            return Err(invalid(
                format!("owner_stages[{i}].stages"),
                "declare at least one stage",
            ));
        }
        d.owner_stages.push((o.owner.clone(), stages));
    }
    for (i, g) in c.grants.iter().enumerate() {
        let grant = grant_in(g).map_err(|e| at("grants", i, e))?;
        d.grants.push(DesiredGrant {
            id: id_of(&format!("grants[{i}].id"), &g.id)?,
            app: grant.app_id,
            target: grant.target,
            stages: grant.stages,
            expires_ms: grant.expires_ms,
        });
    }
    Ok(d)
}

/// Every entity, secrets left out.
pub fn export(store: &Store) -> R<pb::Config> {
    fn all<T, U>(
        items: impl Iterator<Item = Result<T, crate::store::StoreError>>,
        out: impl Fn(&T) -> U,
    ) -> R<Vec<U>> {
        items
            .map(|r| r.map(|t| out(&t)).map_err(AdminError::from))
            .collect()
    }
    Ok(pb::Config {
        apps: all(store.all_apps(), |a| app_out(a, false))?,
        key_pairs: all(store.all_keys(), |k| key_out(k, false))?,
        groups: all(store.all_groups(), group_out)?,
        apis: all(store.all_apis(), api_out)?,
        grants: all(store.all_grants(), grant_out)?,
        owner_stages: store
            .all_owner_stages()
            .map_err(AdminError::from)?
            .into_iter()
            .map(|(owner, stages)| pb::OwnerStages {
                owner,
                stages,
                declared: true,
            })
            .collect(),
    })
}

fn change_out(c: &Planned) -> pb::ApplyChange {
    pb::ApplyChange {
        action: c.action.as_str().to_owned(),
        kind: c.kind.to_owned(),
        id: c.id.clone(),
        detail: c.detail.clone(),
        new_id: c.new_id,
    }
}

pub fn planned_out(changes: &[Planned]) -> pb::ApplyResponse {
    pb::ApplyResponse {
        changes: changes.iter().map(change_out).collect(),
        ..Default::default()
    }
}

pub fn applied_out(a: &Applied) -> pb::ApplyResponse {
    pb::ApplyResponse {
        changes: a.changes.iter().map(change_out).collect(),
        applied: !a.changes.is_empty(),
        created_apps: a.apps.iter().map(|x| app_out(x, true)).collect(),
        created_key_pairs: a.keys.iter().map(|k| key_out(k, true)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_entry() {
        let c = pb::Config {
            apis: vec![
                pb::Api {
                    name: "ok".into(),
                    owner: "o".into(),
                    path: "/a".into(),
                    ..Default::default()
                },
                pb::Api {
                    name: "bad".into(),
                    owner: "o".into(),
                    path: "no-slash".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let e = desired(&c).unwrap_err().to_string();
        assert!(e.starts_with("apis[1].path:"), "{e}");
        let c = pb::Config {
            key_pairs: vec![pb::KeyPair {
                app_id: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = desired(&c).unwrap_err().to_string();
        assert!(e.starts_with("key_pairs[0].app_key:"), "{e}");
        let c = pb::Config {
            groups: vec![pb::Group {
                id: "Bad Id".into(),
                name: "g".into(),
                owner: "o".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = desired(&c).unwrap_err().to_string();
        assert!(e.starts_with("groups[0].id:"), "{e}");
    }
}
