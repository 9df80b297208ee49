//! Grants beyond create and delete: one grant per app and target, no expiry in the
//! past, updates in place, many apps on many targets in one write, and what an app
//! may call (or who may call an API) resolved through groups.
//!
//! Owns: those rules and operations. The single grant's index entries are
//! `ops::insert_grant_tx` / `delete_grant_tx`, shared with `apply`.

use std::collections::{BTreeSet, HashMap};

use super::codec::GrantRecord;
use super::convert::*;
use super::ops::{audit, delete_grant_tx, insert_grant_tx, new_id};
use super::schema::Tree;
use super::summary;
use super::{Change, Store, StoreError, abort};
use crate::model::{Api, Grant, GrantTarget};

/// Most app × target pairs one batch may hold: it is one transaction.
pub const MAX_BATCH: usize = 1000;

/// `GrantPatch`: `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct GrantPatch {
    pub stages: Option<Vec<String>>,
    /// `Some(None)` removes the expiry.
    pub expires_ms: Option<Option<i64>>,
}

/// Many apps on many targets (`BatchCreateGrants`, `BatchDeleteGrants`).
#[derive(Clone, Debug, Default)]
pub struct BatchGrants {
    pub app_ids: Vec<String>,
    pub targets: Vec<GrantTarget>,
    pub stages: Vec<String>,
    pub expires_ms: Option<i64>,
}

/// One API an app may call, and the grant that lets it (`ListAppPermissions`), or
/// one app that may call an API (`ListApiCallers`).
#[derive(Clone, Debug)]
pub struct Reach {
    pub app_id: String,
    pub api: Api,
    pub grant: Grant,
    /// The grant has expired (listed so an operator sees what lapsed).
    pub expired: bool,
}

/// An expiry must lie ahead: a grant or key pair dead on arrival is a mistake.
pub(super) fn not_past(
    field: &'static str,
    expires_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    match expires_ms {
        Some(e) if e <= now_ms => Err(StoreError::InvalidArgument {
            field,
            message: "is in the past".into(),
        }),
        _ => Ok(()),
    }
}

fn target_of(r: &GrantRecord) -> &str {
    if r.api_id.is_empty() {
        &r.group_id
    } else {
        &r.api_id
    }
}

impl Store {
    pub async fn create_grant(
        &self,
        actor: &str,
        mut grant: Grant,
    ) -> Result<(Grant, Vec<Change>), StoreError> {
        let now = self.now_ms();
        not_past("Grant.expires_at", grant.expires_ms, now)?;
        grant.id = new_id("grt", now)?;
        grant.created_by = actor.to_owned();
        grant.create_ms = now;
        let rec = grant_to_record(&grant);
        self.write_reading(
            &[(Tree::GrantsByApp, &grant.app_id)],
            || self.scan_ids(Tree::GrantsByApp, &grant.app_id),
            |tx, siblings| {
                insert_grant_tx(tx, &grant, &rec, siblings)?;
                audit(
                    tx,
                    actor,
                    "CreateGrant",
                    "grant",
                    &grant.id,
                    summary::describe(&grant),
                )
            },
        )
        .await?;
        let changes = vec![Change::Grant(grant.id.clone())];
        Ok((grant, changes))
    }

    /// Changes a grant's stages or expiry in place (its id, app and target stay).
    pub async fn update_grant(
        &self,
        actor: &str,
        id: &str,
        patch: GrantPatch,
    ) -> Result<(Grant, Vec<Change>), StoreError> {
        if let Some(e) = patch.expires_ms {
            not_past("Grant.expires_at", e, self.now_ms())?;
        }
        let grant = self
            .write_tx(|tx, ()| {
                let r: GrantRecord = match tx.get(Tree::Grants, id.as_bytes())? {
                    Some(r) => r,
                    None => return abort(StoreError::not_found("grant", id)),
                };
                let before = grant_from_record(r).map_err(tx_abort)?;
                let mut after = before.clone();
                if let Some(s) = &patch.stages {
                    super::stages::check_stages_tx(tx, &after.target, s, "Grant.stages")?;
                    after.stages = s.clone();
                }
                if let Some(e) = patch.expires_ms {
                    after.expires_ms = e;
                }
                tx.put(Tree::Grants, id.as_bytes(), &grant_to_record(&after))?;
                audit(
                    tx,
                    actor,
                    "UpdateGrant",
                    "grant",
                    id,
                    summary::diff(&before, &after),
                )?;
                Ok(after)
            })
            .await?;
        Ok((grant, vec![Change::Grant(id.to_owned())]))
    }

    /// Grants every app on every target in one write with one audit record. Pairs
    /// already granted stay as they are and are returned second; any other failure
    /// (an app or target missing) grants nothing.
    /// Grants these apps these targets: one write, or on etcd as many as its
    /// transaction limit needs (`cascade`). Returns (created, already granted).
    pub async fn batch_create_grants(
        &self,
        actor: &str,
        b: &BatchGrants,
    ) -> Result<((Vec<Grant>, Vec<Grant>), Vec<Change>), StoreError> {
        not_past("expires_at", b.expires_ms, self.now_ms())?;
        check_size(b)?;
        let (mut created, mut kept, mut changes) = (Vec::new(), Vec::new(), Vec::new());
        let parts = self.batch_parts(b);
        if parts.len() > 1 {
            self.check_batch(b, "Grant.stages")?;
        }
        for part in parts {
            let ((c, k), ch) = self.batch_create_part(actor, &part).await?;
            created.extend(c);
            kept.extend(k);
            changes.extend(ch);
        }
        Ok(((created, kept), changes))
    }

    async fn batch_create_part(
        &self,
        actor: &str,
        b: &BatchGrants,
    ) -> Result<((Vec<Grant>, Vec<Grant>), Vec<Change>), StoreError> {
        let now = self.now_ms();
        let reads: Vec<(Tree, &str)> = b
            .app_ids
            .iter()
            .map(|a| (Tree::GrantsByApp, a.as_str()))
            .collect();
        let (created, kept) = self
            .write_reading(
                &reads,
                || {
                    let mut by_app = HashMap::new();
                    for app in &b.app_ids {
                        by_app.insert(app.clone(), self.scan_ids(Tree::GrantsByApp, app)?);
                    }
                    let mut ids = Vec::new();
                    for _ in 0..b.app_ids.len() * b.targets.len() {
                        ids.push(new_id("grt", now)?);
                    }
                    Ok((by_app, ids))
                },
                |tx, (by_app, ids)| {
                    let mut ids = ids.iter();
                    let (mut created, mut kept) = (Vec::new(), Vec::new());
                    for app in &b.app_ids {
                        let siblings = by_app.get(app).map_or(&[][..], Vec::as_slice);
                        'targets: for target in &b.targets {
                            for sid in siblings {
                                if let Some(r) =
                                    tx.get::<GrantRecord>(Tree::Grants, sid.as_bytes())?
                                    && target_of(&r) == target.id()
                                    && r.api_id.is_empty()
                                        == matches!(target, GrantTarget::Group(_))
                                {
                                    kept.push(grant_from_record(r).map_err(tx_abort)?);
                                    continue 'targets;
                                }
                            }
                            let grant = Grant {
                                id: ids.next().cloned().unwrap_or_default(),
                                app_id: app.clone(),
                                target: target.clone(),
                                stages: b.stages.clone(),
                                expires_ms: b.expires_ms,
                                created_by: actor.to_owned(),
                                create_ms: now,
                            };
                            let mut all = siblings.to_vec();
                            all.extend(
                                created
                                    .iter()
                                    .filter(|g: &&Grant| g.app_id == *app)
                                    .map(|g| g.id.clone()),
                            );
                            insert_grant_tx(tx, &grant, &grant_to_record(&grant), &all)?;
                            created.push(grant);
                        }
                    }
                    if !created.is_empty() {
                        audit(
                            tx,
                            actor,
                            "BatchCreateGrants",
                            "grant",
                            "",
                            batch_summary("granted", &created),
                        )?;
                    }
                    Ok((created, kept))
                },
            )
            .await?;
        let changes = created
            .iter()
            .map(|g| Change::Grant(g.id.clone()))
            .collect();
        Ok(((created, kept), changes))
    }

    /// Deletes the grants of these apps on these targets: one write, or on etcd as
    /// many as its transaction limit needs (`cascade`).
    pub async fn batch_delete_grants(
        &self,
        actor: &str,
        b: &BatchGrants,
    ) -> Result<(Vec<Grant>, Vec<Change>), StoreError> {
        check_size(b)?;
        let (mut deleted, mut changes) = (Vec::new(), Vec::new());
        let parts = self.batch_parts(b);
        if parts.len() > 1 {
            self.check_batch(
                &BatchGrants {
                    stages: Vec::new(),
                    ..b.clone()
                },
                "Grant.stages",
            )?;
        }
        for part in parts {
            let (d, ch) = self.batch_delete_part(actor, &part).await?;
            deleted.extend(d);
            changes.extend(ch);
        }
        Ok((deleted, changes))
    }

    async fn batch_delete_part(
        &self,
        actor: &str,
        b: &BatchGrants,
    ) -> Result<(Vec<Grant>, Vec<Change>), StoreError> {
        let reads: Vec<(Tree, &str)> = b
            .app_ids
            .iter()
            .map(|a| (Tree::GrantsByApp, a.as_str()))
            .collect();
        let deleted = self
            .write_reading(
                &reads,
                || {
                    let mut ids = Vec::new();
                    for app in &b.app_ids {
                        ids.extend(self.scan_ids(Tree::GrantsByApp, app)?);
                    }
                    Ok(ids)
                },
                |tx, ids| {
                    let mut deleted = Vec::new();
                    for id in ids {
                        let Some(r) = tx.get::<GrantRecord>(Tree::Grants, id.as_bytes())? else {
                            continue;
                        };
                        let hit = b.targets.iter().any(|t| {
                            target_of(&r) == t.id()
                                && r.api_id.is_empty() == matches!(t, GrantTarget::Group(_))
                        });
                        if hit {
                            delete_grant_tx(tx, &r)?;
                            deleted.push(grant_from_record(r).map_err(tx_abort)?);
                        }
                    }
                    if !deleted.is_empty() {
                        audit(
                            tx,
                            actor,
                            "BatchDeleteGrants",
                            "grant",
                            "",
                            batch_summary("revoked", &deleted),
                        )?;
                    }
                    Ok(deleted)
                },
            )
            .await?;
        let changes = deleted
            .iter()
            .map(|g| Change::Grant(g.id.clone()))
            .collect();
        Ok((deleted, changes))
    }

    /// The APIs `app_id` may call: those granted directly and every API of a granted
    /// group, each with the grant that allows it, optionally only in `stage`.
    pub fn app_permissions(
        &self,
        app_id: &str,
        stage: Option<&str>,
    ) -> Result<Vec<Reach>, StoreError> {
        if self.get_app(app_id)?.is_none() {
            return Err(StoreError::not_found("app", app_id));
        }
        let now = self.now_ms();
        let mut out = Vec::new();
        for id in self.scan_ids(Tree::GrantsByApp, app_id)? {
            let Some(grant) = self.get_grant(&id)? else {
                continue;
            };
            if stage.is_some_and(|s| !grant.covers_stage(s)) {
                continue;
            }
            let apis = match &grant.target {
                GrantTarget::Api(a) => vec![a.clone()],
                GrantTarget::Group(g) => self.scan_ids(Tree::ApisByGroup, g)?,
            };
            for api_id in apis {
                if let Some(api) = self.get_api(&api_id)? {
                    out.push(Reach {
                        app_id: app_id.to_owned(),
                        api,
                        expired: grant.expired_at(now),
                        grant: grant.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.api.name, &a.grant.id).cmp(&(&b.api.name, &b.grant.id)));
        Ok(out)
    }

    /// The apps that may call `api_id`: granted on it or on its group.
    pub fn api_callers(&self, api_id: &str, stage: Option<&str>) -> Result<Vec<Reach>, StoreError> {
        let api = self
            .get_api(api_id)?
            .ok_or_else(|| StoreError::not_found("api", api_id))?;
        let now = self.now_ms();
        let mut ids = self.scan_ids(Tree::GrantsByTarget, api_id)?;
        if let Some(g) = &api.group_id {
            ids.extend(self.scan_ids(Tree::GrantsByTarget, g)?);
        }
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for id in ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(grant) = self.get_grant(&id)? else {
                continue;
            };
            if stage.is_some_and(|s| !grant.covers_stage(s)) {
                continue;
            }
            out.push(Reach {
                app_id: grant.app_id.clone(),
                api: api.clone(),
                expired: grant.expired_at(now),
                grant,
            });
        }
        out.sort_by(|a, b| (&a.app_id, &a.grant.id).cmp(&(&b.app_id, &b.grant.id)));
        Ok(out)
    }
}

fn check_size(b: &BatchGrants) -> Result<(), StoreError> {
    let pairs = b.app_ids.len() * b.targets.len();
    if pairs == 0 {
        return Err(StoreError::InvalidArgument {
            field: "app_ids",
            message: "name at least one app and one API or group".into(),
        });
    }
    if pairs > MAX_BATCH {
        return Err(StoreError::InvalidArgument {
            field: "app_ids",
            message: format!("{pairs} app × target pairs; at most {MAX_BATCH} in one batch"),
        });
    }
    Ok(())
}

fn batch_summary(verb: &str, grants: &[Grant]) -> String {
    const SHOWN: usize = 50;
    let mut s = format!("{verb} {}:", grants.len());
    for g in grants.iter().take(SHOWN) {
        s.push_str(&format!(" {}={}→{}", g.id, g.app_id, g.target.id()));
    }
    if grants.len() > SHOWN {
        s.push_str(&format!(" … and {} more", grants.len() - SHOWN));
    }
    s
}

fn tx_abort(e: StoreError) -> sled::transaction::ConflictableTransactionError<StoreError> {
    sled::transaction::ConflictableTransactionError::Abort(e)
}
