//! Writes too large for one etcd transaction, done in parts.
//!
//! Owns: how many grants one write may touch on etcd (its `--max-txn-ops`, about three
//! operations per grant), deleting a cascade's grants ahead of the entity in writes of
//! their own, and splitting a batch of app × target pairs into writes that fit.
//!
//! Why the parts are safe: a cascade's grants go first, while the app, API or group
//! still exists, so no grant is ever left pointing at nothing and no id can be reused
//! under a grant that outlived its entity. Each part is an ordinary write (one audit
//! record, the invariants checked again). If the work stops half-way (keygate killed,
//! etcd lost), what is left is the entity with fewer grants — access only removed,
//! never added — and the same delete, repeated, finishes it. A batch in parts commits
//! pair by pair in the same way; its pairs already granted (or already revoked) are
//! skipped, so a repeated batch finishes a cut one. sled has no such limit: there every
//! cascade and batch stays one transaction.

use super::codec::GrantRecord;
use super::grants::BatchGrants;
use super::ops::{audit, delete_grant_tx};
use super::schema::Tree;
use super::{Store, StoreError, abort};
use crate::model::GrantTarget;

/// Operations a cascade's final write keeps for the entity itself, its indexes, its
/// key pairs' handful and the audit record.
#[cfg(feature = "etcd")]
const RESERVED_OPS: usize = 24;
/// Operations per grant written or deleted: the record and its two index entries.
const OPS_PER_GRANT: usize = 3;

impl Store {
    /// How many operations one write may stage; `None`: no limit (sled).
    fn staged_ops_budget(&self) -> Option<usize> {
        #[cfg(feature = "etcd")]
        if let Some(remote) = &self.remote {
            return Some(remote.max_staged_ops());
        }
        None
    }

    /// How many grants one write may create or delete; `None`: no limit (sled).
    pub(super) fn grants_per_write(&self) -> Option<usize> {
        #[cfg(feature = "etcd")]
        if let Some(remote) = &self.remote {
            let budget = remote.max_staged_ops().saturating_sub(RESERVED_OPS);
            return Some((budget / OPS_PER_GRANT).max(1));
        }
        None
    }

    /// Before deleting the `kind` `id` (record in `tree`) with its grants (`scan`):
    /// on etcd, deletes them in writes of their own, while the entity still exists,
    /// until the rest fits in the entity's own write. `fixed_ops` is what that write
    /// costs besides the grants (an app's key pairs: two each); when that alone is over
    /// the limit the delete is refused before any grant goes. `allowed` is the delete's
    /// own precondition, checked by every part, so a delete that would be refused
    /// removes nothing. Returns the grants deleted.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn shed_grants(
        &self,
        actor: &str,
        action: &str,
        kind: &'static str,
        tree: Tree,
        id: &str,
        scan: impl Fn() -> Result<Vec<String>, StoreError>,
        allowed: impl Fn() -> Result<(), StoreError>,
        fixed_ops: impl Fn() -> Result<usize, StoreError>,
    ) -> Result<Vec<String>, StoreError> {
        let (Some(budget), Some(per_part)) = (self.staged_ops_budget(), self.grants_per_write())
        else {
            return Ok(Vec::new());
        };
        let mut shed = Vec::new();
        loop {
            let ids = scan()?;
            let fixed = fixed_ops()?;
            if fixed + OPS_PER_GRANT * ids.len() <= budget {
                return Ok(shed);
            }
            if fixed > budget {
                return Err(StoreError::FailedPrecondition(format!(
                    "deleting {kind} '{id}' takes {fixed} etcd operations besides its grants \
                     (an app's key pairs take two each), over --etcd-max-txn-ops ({budget} \
                     staged): delete some of them first, or raise the limit"
                )));
            }
            let part: Vec<String> = ids.into_iter().take(per_part).collect();
            let done = self
                .write(
                    // In the write's reads: a lost race checks again on the newer view.
                    &allowed,
                    |tx, ()| {
                        // Gone meanwhile: stop, and let the delete say NotFound.
                        if !tx.exists(tree, id.as_bytes())? {
                            return abort(StoreError::not_found(kind, id));
                        }
                        let mut deleted = Vec::new();
                        for gid in &part {
                            let Some(rec) = tx.get::<GrantRecord>(Tree::Grants, gid.as_bytes())?
                            else {
                                continue;
                            };
                            // Only this entity's: an id may name a newer grant by now.
                            let owner = match kind {
                                "app" => &rec.app_id,
                                "api" => &rec.api_id,
                                _ => &rec.group_id,
                            };
                            if owner == id {
                                delete_grant_tx(tx, &rec)?;
                                deleted.push(gid.clone());
                            }
                        }
                        if deleted.is_empty() {
                            return Ok(deleted);
                        }
                        audit(
                            tx,
                            actor,
                            action,
                            kind,
                            id,
                            format!(
                                "in parts (over one etcd transaction): deleted {} of its grants \
                                 ({} so far) before the {kind} itself: {}",
                                deleted.len(),
                                shed.len() + deleted.len(),
                                deleted.join(", ")
                            ),
                        )?;
                        Ok(deleted)
                    },
                )
                .await?;
            if done.is_empty() {
                // Index entries without records: the entity's own write finds the rest.
                return Ok(shed);
            }
            shed.extend(done);
        }
    }

    /// Before a batch goes in parts: what would refuse a part (an app or target that
    /// does not exist, a stage its owner did not declare) refuses the whole batch, so
    /// a refusal never comes after earlier parts were written.
    pub(super) fn check_batch(
        &self,
        b: &BatchGrants,
        stages_field: &'static str,
    ) -> Result<(), StoreError> {
        for app in &b.app_ids {
            if !self.tree(Tree::Apps)?.contains_key(app.as_bytes())? {
                return Err(StoreError::not_found("app", app));
            }
        }
        for target in &b.targets {
            let owner = match target {
                GrantTarget::Api(id) => self.get_api(id)?.map(|a| a.owner),
                GrantTarget::Group(id) => self.get_group(id)?.map(|g| g.owner),
            };
            let Some(owner) = owner else {
                let kind = if matches!(target, GrantTarget::Api(_)) {
                    "api"
                } else {
                    "group"
                };
                return Err(StoreError::not_found(kind, target.id()));
            };
            let (declared, _) = self.owner_stages(&owner)?;
            if let Some(e) = super::stages::undeclared(&b.stages, &declared, &owner, stages_field) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// `b` as batches that each fit one write (just `b` where there is no limit):
    /// several apps with every target while they fit, else one app with a share of
    /// the targets.
    pub(super) fn batch_parts(&self, b: &BatchGrants) -> Vec<BatchGrants> {
        let pairs = b.app_ids.len() * b.targets.len();
        let Some(per_write) = self.grants_per_write().filter(|n| pairs > *n) else {
            return vec![b.clone()];
        };
        let part = |apps: &[String], targets: &[GrantTarget]| BatchGrants {
            app_ids: apps.to_vec(),
            targets: targets.to_vec(),
            stages: b.stages.clone(),
            expires_ms: b.expires_ms,
        };
        if b.targets.len() <= per_write {
            let apps_per_write = (per_write / b.targets.len().max(1)).max(1);
            b.app_ids
                .chunks(apps_per_write)
                .map(|apps| part(apps, &b.targets))
                .collect()
        } else {
            b.app_ids
                .iter()
                .flat_map(|app| {
                    b.targets
                        .chunks(per_write)
                        .map(move |targets| part(std::slice::from_ref(app), targets))
                })
                .collect()
        }
    }
}
