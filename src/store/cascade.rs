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

use super::grants::BatchGrants;
use super::ops::{audit, delete_grants_by_id_tx};
use super::schema::Tree;
use super::{Store, StoreError, abort};
use crate::model::GrantTarget;

/// Operations a cascade's final write keeps for the entity itself, its indexes, its
/// key pairs' handful and the audit record.
#[cfg(feature = "etcd")]
const RESERVED_OPS: usize = 24;
/// Operations per grant written or deleted: the record and its two index entries.
#[cfg(feature = "etcd")]
const OPS_PER_GRANT: usize = 3;

impl Store {
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
    /// until the rest fits in the entity's own write. `allowed` is the delete's own
    /// precondition, checked by every part, so a delete that would be refused removes
    /// nothing. Returns the grants deleted.
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
    ) -> Result<Vec<String>, StoreError> {
        let Some(per_write) = self.grants_per_write() else {
            return Ok(Vec::new());
        };
        let mut shed = Vec::new();
        loop {
            let ids = scan()?;
            if ids.len() <= per_write {
                return Ok(shed);
            }
            let part: Vec<String> = ids.into_iter().take(per_write).collect();
            let total = shed.len() + part.len();
            let done = self
                .write(
                    // In the write's reads: a lost race checks again on the newer view.
                    &allowed,
                    |tx, ()| {
                        // Gone meanwhile: stop, and let the delete say NotFound.
                        if !tx.exists(tree, id.as_bytes())? {
                            return abort(StoreError::not_found(kind, id));
                        }
                        delete_grants_by_id_tx(tx, &part)?;
                        audit(
                            tx,
                            actor,
                            action,
                            kind,
                            id,
                            format!(
                                "in parts (over one etcd transaction): deleted {} of its grants \
                                 ({total} so far) before the {kind} itself: {}",
                                part.len(),
                                part.join(", ")
                            ),
                        )?;
                        Ok(part.clone())
                    },
                )
                .await?;
            shed.extend(done);
        }
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
