//! Stages an owner declares (`SetOwnerStages`), and the rule that a grant names only
//! declared ones, so a typo (`RELASE`) is an error instead of a grant that never
//! matches. An owner that declared none has the default set: the stages of the
//! gateways keygate follows (`DEFAULT_STAGES`).
//!
//! Owns: the declarations and `check_stages_tx`, which every grant write runs on the
//! target's owner (create, update, batches, apply, approved requests).

use super::codec::{ApiRecord, GroupRecord, OwnerStagesRecord};
use super::ops::audit;
use super::schema::Tree;
use super::{Change, Store, StoreError, Tx, TxResult, abort};
use crate::model::GrantTarget;

/// Alibaba's RELEASE / PRE / TEST and Tencent's release / prepub / test.
pub const DEFAULT_STAGES: [&str; 4] = ["RELEASE", "PRE", "PREPUB", "TEST"];

/// The stages `owner` may grant, as stored in `tx`.
fn declared_tx(tx: &Tx<'_>, owner: &str) -> TxResult<Vec<String>> {
    Ok(
        match tx.get::<OwnerStagesRecord>(Tree::OwnerStages, owner.as_bytes())? {
            Some(r) => r.stages,
            None => DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
        },
    )
}

/// Refuses stages the target's owner has not declared (no stage at all: any stage,
/// always allowed). `field` names the request field in the error.
pub(super) fn check_stages_tx(
    tx: &Tx<'_>,
    target: &GrantTarget,
    stages: &[String],
    field: &'static str,
) -> TxResult<()> {
    if stages.is_empty() {
        return Ok(());
    }
    let owner = match target {
        GrantTarget::Api(id) => tx
            .get::<ApiRecord>(Tree::Apis, id.as_bytes())?
            .map(|a| a.owner),
        GrantTarget::Group(id) => tx
            .get::<GroupRecord>(Tree::Groups, id.as_bytes())?
            .map(|g| g.owner),
    };
    // A missing target is the caller's own error, reported where it is looked up.
    let Some(owner) = owner else {
        return Ok(());
    };
    let declared = declared_tx(tx, &owner)?;
    undeclared(stages, &declared, &owner, field).map_or(Ok(()), abort)
}

/// The refusal of the first of `stages` that `owner` has not `declared`, if any.
pub(super) fn undeclared(
    stages: &[String],
    declared: &[String],
    owner: &str,
    field: &'static str,
) -> Option<StoreError> {
    let s = stages.iter().find(|s| !declared.contains(s))?;
    Some(StoreError::InvalidArgument {
        field,
        message: format!(
            "stage {s} is not one owner '{owner}' declared ({}); declare it with SetOwnerStages",
            declared.join(", ")
        ),
    })
}

impl Store {
    /// Every declaration, in owner order.
    pub fn all_owner_stages(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let mut out = Vec::new();
        for v in self.values(Tree::OwnerStages) {
            let r: OwnerStagesRecord = super::codec::decode(&v?)
                .map_err(|e| StoreError::corrupt("owner_stages", e.to_string()))?;
            out.push((r.owner, r.stages));
        }
        Ok(out)
    }

    /// The stages `owner` declared, or the default set; and whether declared.
    pub fn owner_stages(&self, owner: &str) -> Result<(Vec<String>, bool), StoreError> {
        match self.tree(Tree::OwnerStages)?.get(owner.as_bytes())? {
            Some(v) => {
                let r: OwnerStagesRecord = super::codec::decode(&v)
                    .map_err(|e| StoreError::corrupt("owner_stages", e.to_string()))?;
                Ok((r.stages, true))
            }
            None => Ok((
                DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
                false,
            )),
        }
    }

    /// Declares `owner`'s stages (upper-case, validated by the caller). Grants that
    /// already name a stage dropped here stay, and keep matching: only new grants are
    /// checked.
    pub async fn set_owner_stages(
        &self,
        actor: &str,
        owner: &str,
        stages: Vec<String>,
    ) -> Result<(Vec<String>, Vec<Change>), StoreError> {
        if stages.is_empty() {
            return Err(StoreError::InvalidArgument {
                field: "stages",
                message: "declare at least one stage".into(),
            });
        }
        let rec = OwnerStagesRecord {
            owner: owner.to_owned(),
            stages: stages.clone(),
        };
        self.write_tx(|tx, ()| {
            let before = declared_tx(tx, owner)?;
            tx.put(Tree::OwnerStages, owner.as_bytes(), &rec)?;
            audit(
                tx,
                actor,
                "SetOwnerStages",
                "owner",
                owner,
                format!("stages: [{}] → [{}]", before.join(", "), stages.join(", ")),
            )
        })
        .await?;
        Ok((rec.stages, Vec::new()))
    }
}
