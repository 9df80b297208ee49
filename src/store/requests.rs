//! Permission requests (BlueKing's "apply for permission"): a developer applies for
//! APIs or groups for an app, with stages, a reason and a validity; the providers of
//! those targets approve or reject their items; the developer may withdraw while
//! pending.
//!
//! Owns: the request records and their indexes, and the rule that approving is one
//! write with the grant: an approved item creates the app's grant on the target, or,
//! when one exists (a renewal), updates it in place, since an app has one grant per
//! target. Who may decide which item is the admin API's (`access`); the store
//! decides only items whose target the `decider` owner owns (`None`: every item).

use super::codec::{GrantRecord, PermissionItemRecord, PermissionRequestRecord, join};
use super::convert::*;
use super::grants::not_past;
use super::ops::{Page, audit, insert_grant_tx, new_id};
use super::schema::Tree;
use super::{Change, Store, StoreError, abort};
use crate::model::{Grant, GrantTarget};

/// Longest validity one may ask for, in days.
pub const MAX_VALID_DAYS: u32 = 3650;

pub const PENDING: &str = "pending";
pub const APPROVED: &str = "approved";
pub const REJECTED: &str = "rejected";
pub const WITHDRAWN: &str = "withdrawn";
/// A request none of whose items is pending any more.
pub const DECIDED: &str = "decided";

/// What a developer applies for.
#[derive(Clone, Debug, Default)]
pub struct NewRequest {
    pub app_id: String,
    pub targets: Vec<GrantTarget>,
    pub stages: Vec<String>,
    pub reason: String,
    /// Validity from approval, in days; with neither this nor `valid_until_ms`, the
    /// grant is permanent.
    pub valid_days: Option<u32>,
    pub valid_until_ms: Option<i64>,
}

/// A decision on some items of a request.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    pub approve: bool,
    /// The items (by target id); empty: every pending item the decider may decide.
    pub target_ids: Vec<String>,
    pub comment: String,
    /// Approve only: stages within those requested (empty: as requested).
    pub stages: Vec<String>,
    /// Approve only: an expiry no later than the requested validity.
    pub expires_ms: Option<i64>,
}

/// Which requests `list_requests` returns.
#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    pub app_id: Option<String>,
    pub target_id: Option<String>,
    pub status: Option<String>,
}

/// The API or group a request item is for.
pub fn item_target(i: &PermissionItemRecord) -> GrantTarget {
    if i.api_id.is_empty() {
        GrantTarget::Group(i.group_id.clone())
    } else {
        GrantTarget::Api(i.api_id.clone())
    }
}

fn target_id(i: &PermissionItemRecord) -> &str {
    if i.api_id.is_empty() {
        &i.group_id
    } else {
        &i.api_id
    }
}

/// `pending` while any item is, `withdrawn` when all were, else `decided`.
pub fn overall(r: &PermissionRequestRecord) -> &'static str {
    if r.items.iter().any(|i| i.status == PENDING) {
        PENDING
    } else if r.items.iter().all(|i| i.status == WITHDRAWN) {
        WITHDRAWN
    } else {
        DECIDED
    }
}

fn decode_request(v: &[u8]) -> Result<PermissionRequestRecord, StoreError> {
    super::codec::decode(v).map_err(|e| StoreError::corrupt("permission_requests", e.to_string()))
}

impl Store {
    pub async fn create_request(
        &self,
        actor: &str,
        new: NewRequest,
    ) -> Result<(PermissionRequestRecord, Vec<Change>), StoreError> {
        let now = self.now_ms();
        not_past("valid_until", new.valid_until_ms, now)?;
        if new.targets.is_empty() {
            return Err(StoreError::InvalidArgument {
                field: "api_ids",
                message: "name at least one API or group".into(),
            });
        }
        let rec = PermissionRequestRecord {
            id: new_id("req", now)?,
            app_id: new.app_id.clone(),
            items: new
                .targets
                .iter()
                .map(|t| PermissionItemRecord {
                    api_id: match t {
                        GrantTarget::Api(a) => a.clone(),
                        GrantTarget::Group(_) => String::new(),
                    },
                    group_id: match t {
                        GrantTarget::Group(g) => g.clone(),
                        GrantTarget::Api(_) => String::new(),
                    },
                    status: PENDING.into(),
                    ..Default::default()
                })
                .collect(),
            stages: new.stages.clone(),
            reason: new.reason.clone(),
            valid_days: new.valid_days.unwrap_or(0),
            valid_until_ms: new.valid_until_ms.unwrap_or(0),
            requested_by: actor.to_owned(),
            create_ms: now,
            update_ms: now,
        };
        self.write_tx(|tx, ()| {
            if !tx.exists(Tree::Apps, rec.app_id.as_bytes())? {
                return abort(StoreError::not_found("app", &rec.app_id));
            }
            for i in &rec.items {
                let (tree, kind) = if i.api_id.is_empty() {
                    (Tree::Groups, "group")
                } else {
                    (Tree::Apis, "api")
                };
                if !tx.exists(tree, target_id(i).as_bytes())? {
                    return abort(StoreError::not_found(kind, target_id(i)));
                }
                super::stages::check_stages_tx(tx, &item_target(i), &rec.stages, "stages")?;
                tx.set(Tree::RequestsByTarget, &join(&[target_id(i), &rec.id]), b"")?;
            }
            tx.put(Tree::PermissionRequests, rec.id.as_bytes(), &rec)?;
            tx.set(Tree::RequestsByApp, &join(&[&rec.app_id, &rec.id]), b"")?;
            let targets: Vec<&str> = rec.items.iter().map(target_id).collect();
            audit(
                tx,
                actor,
                "CreatePermissionRequest",
                "permission_request",
                &rec.id,
                format!(
                    "app={} targets=[{}] stages=[{}] validity={} reason={}",
                    rec.app_id,
                    targets.join(", "),
                    rec.stages.join(", "),
                    validity_text(&rec),
                    rec.reason
                ),
            )
        })
        .await?;
        Ok((rec, Vec::new()))
    }

    pub fn get_request(&self, id: &str) -> Result<Option<PermissionRequestRecord>, StoreError> {
        match self.tree(Tree::PermissionRequests)?.get(id.as_bytes())? {
            Some(v) => decode_request(&v).map(Some),
            None => Ok(None),
        }
    }

    pub fn list_requests(
        &self,
        page: &Page,
        f: &RequestFilter,
    ) -> Result<(Vec<PermissionRequestRecord>, String), StoreError> {
        let keep = |r: PermissionRequestRecord| {
            f.status
                .as_deref()
                .is_none_or(|s| overall(&r) == s || r.items.iter().any(|i| i.status == s))
                .then_some(r)
        };
        let by_index = |tree: Tree, id: &str| {
            self.page(tree, &join(&[id, ""]), page, |k, _| {
                Ok(self
                    .get_request(&super::codec::last_part(k))?
                    .and_then(keep))
            })
        };
        match (&f.app_id, &f.target_id) {
            (Some(app), None) => by_index(Tree::RequestsByApp, app),
            (None, Some(t)) => by_index(Tree::RequestsByTarget, t),
            (None, None) => self.page(Tree::PermissionRequests, b"", page, |_, v| {
                Ok(keep(decode_request(v)?))
            }),
            _ => Err(StoreError::InvalidArgument {
                field: "app_id",
                message: "set at most one of app_id, api_id, group_id".into(),
            }),
        }
    }

    /// Approves or rejects pending items; an approval creates (or, on a renewal,
    /// updates) the app's grant on each approved target in the same write.
    /// `decider`: the owner whose targets the caller may decide (`None`: all).
    pub async fn decide_request(
        &self,
        actor: &str,
        id: &str,
        decider: Option<&str>,
        d: &Decision,
    ) -> Result<(PermissionRequestRecord, Vec<Change>), StoreError> {
        let now = self.now_ms();
        not_past("expires_at", d.expires_ms, now)?;
        let (rec, changes) = self
            .write(
                || {
                    let Some(r) = self.get_request(id)? else {
                        return Err(StoreError::not_found("permission request", id));
                    };
                    let siblings = self.scan_ids(Tree::GrantsByApp, &r.app_id)?;
                    let mut ids = Vec::new();
                    for _ in &r.items {
                        ids.push(new_id("grt", now)?);
                    }
                    Ok((siblings, ids))
                },
                |tx, (siblings, new_ids)| {
                    let Some(mut r) =
                        tx.get::<PermissionRequestRecord>(Tree::PermissionRequests, id.as_bytes())?
                    else {
                        return abort(StoreError::not_found("permission request", id));
                    };
                    let mut changes = Vec::new();
                    let mut decided = Vec::new();
                    let mut new_ids = new_ids.iter();
                    let requested_until = requested_expiry(&r, tx.stamp.now_ms);
                    for item in r.items.iter_mut() {
                        let tid = target_id(item).to_owned();
                        let named = d.target_ids.is_empty() || d.target_ids.contains(&tid);
                        if !named || item.status != PENDING {
                            if named && !d.target_ids.is_empty() {
                                return abort(StoreError::FailedPrecondition(format!(
                                    "item {tid} of request '{id}' is {}, not pending",
                                    item.status
                                )));
                            }
                            continue;
                        }
                        let owner = target_owner(tx, item)?;
                        if decider.is_some_and(|o| o != owner) {
                            if d.target_ids.is_empty() {
                                continue;
                            }
                            return abort(StoreError::PermissionDenied(format!(
                                "{tid} belongs to owner '{owner}'"
                            )));
                        }
                        item.decided_by = actor.to_owned();
                        item.decide_ms = tx.stamp.now_ms;
                        item.comment = d.comment.clone();
                        if !d.approve {
                            item.status = REJECTED.into();
                            decided.push(format!("{tid} rejected"));
                            continue;
                        }
                        let stages = if d.stages.is_empty() {
                            r.stages.clone()
                        } else {
                            if !r.stages.is_empty()
                                && let Some(s) = d.stages.iter().find(|s| !r.stages.contains(s))
                            {
                                return abort(StoreError::InvalidArgument {
                                    field: "stages",
                                    message: format!(
                                        "{s} was not requested; approve within [{}]",
                                        r.stages.join(", ")
                                    ),
                                });
                            }
                            d.stages.clone()
                        };
                        let expires = match (d.expires_ms, requested_until) {
                            (Some(e), Some(max)) if e > max => {
                                return abort(StoreError::InvalidArgument {
                                    field: "expires_at",
                                    message: "later than the validity requested; approval may only shorten it".into(),
                                });
                            }
                            (Some(e), _) => Some(e),
                            (None, max) => max,
                        };
                        let target = item_target(item);
                        let existing = find_grant(tx, siblings, &r.app_id, &target)?;
                        let grant_id = match existing {
                            // A renewal: the app's one grant on the target, extended.
                            Some(mut g) => {
                                super::stages::check_stages_tx(tx, &target, &stages, "stages")?;
                                g.stages = stages.clone();
                                g.expires_ms = expires.unwrap_or(0);
                                tx.put(Tree::Grants, g.id.as_bytes(), &g)?;
                                g.id
                            }
                            None => {
                                let grant = Grant {
                                    id: new_ids.next().cloned().unwrap_or_default(),
                                    app_id: r.app_id.clone(),
                                    target,
                                    stages: stages.clone(),
                                    expires_ms: expires,
                                    created_by: actor.to_owned(),
                                    create_ms: tx.stamp.now_ms,
                                };
                                insert_grant_tx(tx, &grant, &grant_to_record(&grant), siblings)?;
                                grant.id
                            }
                        };
                        item.status = APPROVED.into();
                        item.grant_id = grant_id.clone();
                        item.granted_stages = stages;
                        item.granted_expires_ms = expires.unwrap_or(0);
                        decided.push(format!("{tid} approved as grant {grant_id}"));
                        changes.push(Change::Grant(grant_id));
                    }
                    if decided.is_empty() {
                        return abort(StoreError::FailedPrecondition(format!(
                            "request '{id}' has no pending item this caller may decide"
                        )));
                    }
                    r.update_ms = tx.stamp.now_ms;
                    tx.put(Tree::PermissionRequests, id.as_bytes(), &r)?;
                    audit(
                        tx,
                        actor,
                        if d.approve {
                            "ApprovePermissionRequest"
                        } else {
                            "RejectPermissionRequest"
                        },
                        "permission_request",
                        id,
                        format!("{}; comment={}", decided.join(", "), d.comment),
                    )?;
                    Ok((r, changes))
                },
            )
            .await?;
        Ok((rec, changes))
    }

    /// Withdraws every pending item.
    pub async fn withdraw_request(
        &self,
        actor: &str,
        id: &str,
    ) -> Result<(PermissionRequestRecord, Vec<Change>), StoreError> {
        let rec = self
            .write_tx(|tx, ()| {
                let Some(mut r) =
                    tx.get::<PermissionRequestRecord>(Tree::PermissionRequests, id.as_bytes())?
                else {
                    return abort(StoreError::not_found("permission request", id));
                };
                let mut n = 0;
                for item in r.items.iter_mut().filter(|i| i.status == PENDING) {
                    item.status = WITHDRAWN.into();
                    item.decided_by = actor.to_owned();
                    item.decide_ms = tx.stamp.now_ms;
                    n += 1;
                }
                if n == 0 {
                    return abort(StoreError::FailedPrecondition(format!(
                        "request '{id}' has no pending item to withdraw"
                    )));
                }
                r.update_ms = tx.stamp.now_ms;
                tx.put(Tree::PermissionRequests, id.as_bytes(), &r)?;
                audit(
                    tx,
                    actor,
                    "WithdrawPermissionRequest",
                    "permission_request",
                    id,
                    format!("{n} pending items withdrawn"),
                )?;
                Ok(r)
            })
            .await?;
        Ok((rec, Vec::new()))
    }
}

/// The expiry the request asks for, counted from `now_ms` (approval time).
fn requested_expiry(r: &PermissionRequestRecord, now_ms: i64) -> Option<i64> {
    if r.valid_until_ms > 0 {
        Some(r.valid_until_ms)
    } else if r.valid_days > 0 {
        Some(now_ms.saturating_add(i64::from(r.valid_days) * 86_400_000))
    } else {
        None
    }
}

fn validity_text(r: &PermissionRequestRecord) -> String {
    if r.valid_until_ms > 0 {
        format!("until {} ms", r.valid_until_ms)
    } else if r.valid_days > 0 {
        format!("{} days", r.valid_days)
    } else {
        "permanent".into()
    }
}

fn target_owner(tx: &super::Tx<'_>, item: &PermissionItemRecord) -> super::TxResult<String> {
    if item.api_id.is_empty() {
        match tx.get::<super::codec::GroupRecord>(Tree::Groups, item.group_id.as_bytes())? {
            Some(g) => Ok(g.owner),
            None => abort(StoreError::not_found("group", &item.group_id)),
        }
    } else {
        match tx.get::<super::codec::ApiRecord>(Tree::Apis, item.api_id.as_bytes())? {
            Some(a) => Ok(a.owner),
            None => abort(StoreError::not_found("api", &item.api_id)),
        }
    }
}

fn find_grant(
    tx: &super::Tx<'_>,
    siblings: &[String],
    app_id: &str,
    target: &GrantTarget,
) -> super::TxResult<Option<GrantRecord>> {
    for id in siblings {
        if let Some(g) = tx.get::<GrantRecord>(Tree::Grants, id.as_bytes())?
            && g.app_id == app_id
            && match target {
                GrantTarget::Api(a) => &g.api_id == a,
                GrantTarget::Group(x) => g.api_id.is_empty() && &g.group_id == x,
            }
        {
            return Ok(Some(g));
        }
    }
    Ok(None)
}
