//! The management API (`keygate.admin.v1.Admin`): validates, writes through the store,
//! refreshes the index, answers.
//!
//! Owns: the RPC surface only. Field rules live in `convert`, error codes in `status`,
//! authentication in `auth` (an interceptor in front of this service), persistence in
//! the store. Every write follows: convert -> store (one transaction, flushed) ->
//! index refresh -> reply, so the next Check sees the change.

pub mod access;
pub mod auth;
pub mod calls;
pub mod convert;
pub mod declarative;
pub mod explain;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::{Request, Response, Status};

use crate::index::Index;
use crate::pb::admin as pb;
use crate::pb::admin::admin_server::Admin;
use crate::server::Shared;
use crate::store::{Change, GrantFilter, GroupPatch, Store};
use access::{Owners, View};
use auth::Caller;
use convert::*;
use status::{AdminError, invalid};

type Res<T> = Result<Response<T>, Status>;

pub struct AdminService {
    store: Arc<Store>,
    index: Arc<Index>,
    /// Committed writes, for `/metrics`.
    writes: Arc<AtomicU64>,
    /// The check pipeline, for `Explain`.
    shared: Arc<Shared>,
}

impl AdminService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            store: shared.store.clone(),
            index: shared.index.clone(),
            writes: shared.metrics.admin_writes.clone(),
            shared,
        }
    }

    /// Makes a committed write visible to the check path, then hands back its result.
    fn commit<T>(&self, (out, changes): (T, Vec<Change>)) -> T {
        self.index.refresh(&self.store, &changes);
        self.writes.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// The one permission check of every call (`access`): refused calls are counted.
    fn allow(&self, c: &Caller, rpc: &str, owners: Owners<'_>) -> Result<View, Status> {
        access::check(&c.principal, rpc, &owners).inspect_err(|_| {
            self.shared
                .metrics
                .admin_denied
                .fetch_add(1, Ordering::Relaxed);
        })
    }

    /// A call on one app (or its key pairs): the app's owner decides.
    fn allow_app(&self, c: &Caller, rpc: &str, app_id: &str) -> Result<View, Status> {
        let owner = self.app_owner(app_id)?;
        self.allow(
            c,
            rpc,
            Owners {
                app: owner.as_deref(),
                resource: None,
            },
        )
    }

    fn allow_key(&self, c: &Caller, rpc: &str, app_key: &str) -> Result<View, Status> {
        let owner = self.key_app_owner(app_key)?;
        self.allow(
            c,
            rpc,
            Owners {
                app: owner.as_deref(),
                resource: None,
            },
        )
    }

    /// A call on a group, an API or a grant's target: its owner decides.
    fn allow_resource(&self, c: &Caller, rpc: &str, owner: Option<String>) -> Result<View, Status> {
        self.allow(
            c,
            rpc,
            Owners {
                app: None,
                resource: owner.as_deref(),
            },
        )
    }

    /// The owner a request is checked against on the providers' side: the caller's
    /// own when one of the request's targets is its owner's (so each provider sees
    /// and decides its part), else the first target's.
    fn request_owner(
        &self,
        c: &Caller,
        r: &crate::store::codec::PermissionRequestRecord,
    ) -> Result<Option<String>, Status> {
        let mut first = None;
        for i in &r.items {
            let owner = self.target_owner(&crate::store::requests::item_target(i))?;
            if owner.as_deref() == Some(c.principal.owner.as_str()) {
                return Ok(owner);
            }
            first = first.or(owner);
        }
        Ok(first)
    }

    async fn decide(
        &self,
        req: Request<pb::DecidePermissionRequestRequest>,
        approve: bool,
    ) -> Res<pb::PermissionRequest> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let d = decision_in(&r, approve)?;
        let rpc = if approve {
            "ApprovePermissionRequest"
        } else {
            "RejectPermissionRequest"
        };
        let resource = match self.store.get_request(&r.id).map_err(AdminError::from)? {
            Some(rec) => self.request_owner(&c, &rec)?,
            None => None,
        };
        self.allow_resource(&c, rpc, resource)?;
        // A provider decides only its owner's items; admin decides any.
        let decider = c
            .principal
            .role
            .scoped()
            .then_some(c.principal.owner.as_str());
        let rec = self.commit(
            self.store
                .decide_request(&c.actor, &r.id, decider, &d)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(request_out(&rec)))
    }

    fn app_owner(&self, id: &str) -> Result<Option<String>, Status> {
        Ok(self
            .store
            .get_app(id)
            .map_err(AdminError::from)?
            .map(|a| a.owner))
    }

    fn key_app_owner(&self, app_key: &str) -> Result<Option<String>, Status> {
        match self.store.get_key(app_key).map_err(AdminError::from)? {
            Some(k) => self.app_owner(&k.app_id),
            None => Ok(None),
        }
    }

    fn group_owner(&self, id: &str) -> Result<Option<String>, Status> {
        Ok(self
            .store
            .get_group(id)
            .map_err(AdminError::from)?
            .map(|g| g.owner))
    }

    fn api_owner(&self, id: &str) -> Result<Option<String>, Status> {
        Ok(self
            .store
            .get_api(id)
            .map_err(AdminError::from)?
            .map(|a| a.owner))
    }

    fn target_owner(&self, t: &crate::model::GrantTarget) -> Result<Option<String>, Status> {
        match t {
            crate::model::GrantTarget::Api(id) => self.api_owner(id),
            crate::model::GrantTarget::Group(id) => self.group_owner(id),
        }
    }

    /// A grant's app owner and target owner.
    fn grant_owners(&self, id: &str) -> Result<(Option<String>, Option<String>), Status> {
        match self.store.get_grant(id).map_err(AdminError::from)? {
            Some(g) => Ok((self.app_owner(&g.app_id)?, self.target_owner(&g.target)?)),
            None => Ok((None, None)),
        }
    }

    /// Adds when the key pair was last used: this process's record, else the store's
    /// (written every `usage::FLUSH_EVERY`). A time before the pair was created
    /// belongs to an earlier pair with the same AppKey and is not shown.
    fn with_last_use(&self, mut k: pb::KeyPair, create_ms: i64) -> pb::KeyPair {
        let stored = self.store.key_last_used(&k.app_key).ok().flatten();
        let last = self.shared.usage.last_used(&k.app_key).max(stored);
        k.last_used_at = opt_ts(last.filter(|t| *t >= create_ms));
        k
    }

    fn committed(&self, changes: Vec<Change>) -> Response<()> {
        self.commit(((), changes));
        Response::new(())
    }
}

/// Who called: set by `calls::Logged` on every call that reached a handler.
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

fn found<T>(
    kind: &'static str,
    id: &str,
    v: Result<Option<T>, crate::store::StoreError>,
) -> Result<T, Status> {
    v.map_err(AdminError::from)?
        .ok_or_else(|| AdminError::from(crate::store::StoreError::not_found(kind, id)).into())
}

fn need(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        return Err(invalid(field, "required").into());
    }
    Ok(())
}

fn filter(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

#[tonic::async_trait]
impl Admin for AdminService {
    // === apps ===

    async fn create_app(&self, req: Request<pb::CreateAppRequest>) -> Res<pb::CreateAppResponse> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let new = convert::create_app(&req.into_inner())?;
        self.allow(
            &c,
            "CreateApp",
            Owners {
                app: Some(&new.owner),
                resource: None,
            },
        )?;
        let (app, key) = self.commit(
            self.store
                .create_app(&who, new)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(pb::CreateAppResponse {
            app: Some(app_out(&app, true)),
            key_pair: Some(key_out(&key, true)),
        }))
    }

    async fn get_app(&self, req: Request<pb::GetAppRequest>) -> Res<pb::App> {
        let c = caller(&req)?;
        let id = req.into_inner().id;
        need("id", &id)?;
        let owner = self.app_owner(&id)?;
        let view = self.allow(
            &c,
            "GetApp",
            Owners {
                app: owner.as_deref(),
                resource: None,
            },
        )?;
        let app = found("app", &id, self.store.get_app(&id))?;
        let out = app_out(&app, false);
        Ok(Response::new(match view {
            View::Full => out,
            // Partner authorization: enough to grant the app, nothing of its tenant's.
            View::Limited => pb::App {
                id: out.id,
                name: out.name,
                owner: out.owner,
                ..Default::default()
            },
        }))
    }

    async fn list_apps(&self, req: Request<pb::ListAppsRequest>) -> Res<pb::ListAppsResponse> {
        let c = caller(&req)?;
        let mut r = req.into_inner();
        let owner = access::list_owner(&c.principal, &r.owner).map(str::to_owned);
        self.allow(
            &c,
            "ListApps",
            Owners {
                app: owner.as_deref(),
                resource: None,
            },
        )?;
        r.owner = owner.unwrap_or_default();
        let tag = filter(&r.tag).map(|t| match t.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (t, None),
        });
        let (apps, next) = self
            .store
            .list_apps(
                &page(r.page_size, &r.page_token)?,
                crate::store::AppFilter {
                    owner: filter(&r.owner),
                    tag,
                    name_prefix: filter(&r.name_prefix),
                },
            )
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListAppsResponse {
            apps: apps.iter().map(|a| app_out(a, false)).collect(),
            next_page_token: next,
        }))
    }

    async fn update_app(&self, req: Request<pb::UpdateAppRequest>) -> Res<pb::App> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        let app = r
            .app
            .ok_or_else(|| Status::from(invalid("app", "required")))?;
        need("App.id", &app.id)?;
        self.allow_app(&c, "UpdateApp", &app.id)?;
        let patch = app_patch(&app, r.update_mask.as_ref())?;
        let app = self.commit(
            self.store
                .update_app(&who, "UpdateApp", &app.id, patch)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(app_out(&app, false)))
    }

    async fn delete_app(&self, req: Request<pb::DeleteAppRequest>) -> Res<()> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let id = req.into_inner().id;
        need("id", &id)?;
        self.allow_app(&c, "DeleteApp", &id)?;
        Ok(self.committed(
            self.store
                .delete_app(&who, &id)
                .await
                .map_err(AdminError::from)?,
        ))
    }

    async fn enable_app(&self, req: Request<pb::EnableAppRequest>) -> Res<pb::App> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let id = req.into_inner().id;
        self.allow_app(&c, "EnableApp", &id)?;
        self.set_app_enabled(&who, "EnableApp", &id, true).await
    }

    async fn disable_app(&self, req: Request<pb::DisableAppRequest>) -> Res<pb::App> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let id = req.into_inner().id;
        self.allow_app(&c, "DisableApp", &id)?;
        self.set_app_enabled(&who, "DisableApp", &id, false).await
    }

    async fn reset_app_code(&self, req: Request<pb::ResetAppCodeRequest>) -> Res<pb::App> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        need("id", &r.id)?;
        self.allow_app(&c, "ResetAppCode", &r.id)?;
        if !r.app_code.is_empty() {
            app_code("app_code", &r.app_code)?;
        }
        let code = filter(&r.app_code).map(str::to_owned);
        let app = self.commit(
            self.store
                .reset_app_code(&who, &r.id, code)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(app_out(&app, true)))
    }

    // === key pairs ===

    async fn create_key_pair(&self, req: Request<pb::CreateKeyPairRequest>) -> Res<pb::KeyPair> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let new = new_key(&req.into_inner())?;
        self.allow_app(&c, "CreateKeyPair", &new.app_id)?;
        let key = self.commit(
            self.store
                .create_key(&who, new)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(key_out(&key, true)))
    }

    async fn get_key_pair(&self, req: Request<pb::GetKeyPairRequest>) -> Res<pb::KeyPair> {
        let c = caller(&req)?;
        let k = req.into_inner().app_key;
        need("app_key", &k)?;
        self.allow_key(&c, "GetKeyPair", &k)?;
        let key = found("key pair", &k, self.store.get_key(&k))?;
        Ok(Response::new(
            self.with_last_use(key_out(&key, false), key.create_ms),
        ))
    }

    async fn list_key_pairs(
        &self,
        req: Request<pb::ListKeyPairsRequest>,
    ) -> Res<pb::ListKeyPairsResponse> {
        let c = caller(&req)?;
        let r = req.into_inner();
        need("app_id", &r.app_id)?;
        self.allow_app(&c, "ListKeyPairs", &r.app_id)?;
        let (keys, next) = self
            .store
            .list_keys(&r.app_id, &page(r.page_size, &r.page_token)?)
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListKeyPairsResponse {
            key_pairs: keys
                .iter()
                .map(|k| self.with_last_use(key_out(k, false), k.create_ms))
                .collect(),
            next_page_token: next,
        }))
    }

    async fn update_key_pair(&self, req: Request<pb::UpdateKeyPairRequest>) -> Res<pb::KeyPair> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        let k = r
            .key_pair
            .ok_or_else(|| Status::from(invalid("key_pair", "required")))?;
        need("KeyPair.app_key", &k.app_key)?;
        self.allow_key(&c, "UpdateKeyPair", &k.app_key)?;
        let patch = key_patch(&k, r.update_mask.as_ref())?;
        let key = self.commit(
            self.store
                .update_key(&who, "UpdateKeyPair", &k.app_key, patch)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(key_out(&key, false)))
    }

    async fn delete_key_pair(&self, req: Request<pb::DeleteKeyPairRequest>) -> Res<()> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let k = req.into_inner().app_key;
        need("app_key", &k)?;
        self.allow_key(&c, "DeleteKeyPair", &k)?;
        Ok(self.committed(
            self.store
                .delete_key(&who, &k)
                .await
                .map_err(AdminError::from)?,
        ))
    }

    async fn reset_key_pair_secret(
        &self,
        req: Request<pb::ResetKeyPairSecretRequest>,
    ) -> Res<pb::KeyPair> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        need("app_key", &r.app_key)?;
        self.allow_key(&c, "ResetKeyPairSecret", &r.app_key)?;
        let grace = duration_ms("grace_period", r.grace_period.as_ref())?;
        if !r.app_secret.is_empty() {
            app_secret("app_secret", &r.app_secret)?;
        }
        let secret = filter(&r.app_secret).map(str::to_owned);
        let reset = if r.new_app_key.is_empty() {
            self.store
                .reset_secret(&who, &r.app_key, grace, secret)
                .await
        } else {
            app_key("new_app_key", &r.new_app_key)?;
            if grace > 0 {
                return Err(invalid(
                    "grace_period",
                    "cannot be combined with new_app_key: the old AppKey stops verifying at once",
                )
                .into());
            }
            if r.new_app_key == r.app_key {
                return Err(invalid("new_app_key", "is the pair's current AppKey").into());
            }
            self.store
                .rename_key(&who, &r.app_key, &r.new_app_key, secret)
                .await
        };
        let key = self.commit(reset.map_err(AdminError::from)?);
        Ok(Response::new(key_out(&key, true)))
    }

    async fn enable_key_pair(&self, req: Request<pb::EnableKeyPairRequest>) -> Res<pb::KeyPair> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let k = req.into_inner().app_key;
        self.allow_key(&c, "EnableKeyPair", &k)?;
        self.set_key_enabled(&who, "EnableKeyPair", &k, true).await
    }

    async fn disable_key_pair(&self, req: Request<pb::DisableKeyPairRequest>) -> Res<pb::KeyPair> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let k = req.into_inner().app_key;
        self.allow_key(&c, "DisableKeyPair", &k)?;
        self.set_key_enabled(&who, "DisableKeyPair", &k, false)
            .await
    }

    // === groups ===

    async fn create_group(&self, req: Request<pb::CreateGroupRequest>) -> Res<pb::Group> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let g = req
            .into_inner()
            .group
            .ok_or_else(|| Status::from(invalid("group", "required")))?;
        name("Group.name", &g.name)?;
        name("Group.owner", &g.owner)?;
        self.allow_resource(&c, "CreateGroup", Some(g.owner.clone()))?;
        text("Group.description", &g.description, 1024)?;
        let g = self.commit(
            self.store
                .create_group(&who, g.name, g.owner, g.description)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(group_out(&g)))
    }

    async fn get_group(&self, req: Request<pb::GetGroupRequest>) -> Res<pb::Group> {
        let c = caller(&req)?;
        let id = req.into_inner().id;
        need("id", &id)?;
        self.allow_resource(&c, "GetGroup", self.group_owner(&id)?)?;
        Ok(Response::new(group_out(&found(
            "group",
            &id,
            self.store.get_group(&id),
        )?)))
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Res<pb::ListGroupsResponse> {
        let c = caller(&req)?;
        let mut r = req.into_inner();
        let owner = access::list_owner(&c.principal, &r.owner).map(str::to_owned);
        self.allow_resource(&c, "ListGroups", owner.clone())?;
        r.owner = owner.unwrap_or_default();
        let (groups, next) = self
            .store
            .list_groups(&page(r.page_size, &r.page_token)?, filter(&r.owner))
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListGroupsResponse {
            groups: groups.iter().map(group_out).collect(),
            next_page_token: next,
        }))
    }

    async fn update_group(&self, req: Request<pb::UpdateGroupRequest>) -> Res<pb::Group> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        let g = r
            .group
            .ok_or_else(|| Status::from(invalid("group", "required")))?;
        need("Group.id", &g.id)?;
        self.allow_resource(&c, "UpdateGroup", self.group_owner(&g.id)?)?;
        let populated: Vec<&str> = [
            ("name", !g.name.is_empty()),
            ("description", !g.description.is_empty()),
        ]
        .into_iter()
        .filter_map(|(f, s)| s.then_some(f))
        .collect();
        let paths = mask_paths(r.update_mask.as_ref(), &["name", "description"], &populated)?;
        let mut patch = GroupPatch::default();
        for p in &paths {
            if p == "name" {
                name("Group.name", &g.name)?;
                patch.name = Some(g.name.clone());
            } else {
                text("Group.description", &g.description, 1024)?;
                patch.description = Some(g.description.clone());
            }
        }
        let g = self.commit(
            self.store
                .update_group(&who, &g.id, patch)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(group_out(&g)))
    }

    async fn delete_group(&self, req: Request<pb::DeleteGroupRequest>) -> Res<()> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let id = req.into_inner().id;
        need("id", &id)?;
        self.allow_resource(&c, "DeleteGroup", self.group_owner(&id)?)?;
        Ok(self.committed(
            self.store
                .delete_group(&who, &id)
                .await
                .map_err(AdminError::from)?,
        ))
    }

    // === APIs ===

    async fn create_api(&self, req: Request<pb::CreateApiRequest>) -> Res<pb::Api> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let a = req
            .into_inner()
            .api
            .ok_or_else(|| Status::from(invalid("api", "required")))?;
        let api = api_in(&a)?;
        self.allow_resource(&c, "CreateApi", Some(api.owner.clone()))?;
        let api = self.commit(
            self.store
                .create_api(&who, api)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(api_out(&api)))
    }

    async fn get_api(&self, req: Request<pb::GetApiRequest>) -> Res<pb::Api> {
        let c = caller(&req)?;
        let id = req.into_inner().id;
        need("id", &id)?;
        self.allow_resource(&c, "GetApi", self.api_owner(&id)?)?;
        Ok(Response::new(api_out(&found(
            "api",
            &id,
            self.store.get_api(&id),
        )?)))
    }

    async fn list_apis(&self, req: Request<pb::ListApisRequest>) -> Res<pb::ListApisResponse> {
        let c = caller(&req)?;
        let mut r = req.into_inner();
        let owner = access::list_owner(&c.principal, &r.owner).map(str::to_owned);
        self.allow_resource(&c, "ListApis", owner.clone())?;
        r.owner = owner.unwrap_or_default();
        let (apis, next) = self
            .store
            .list_apis(
                &page(r.page_size, &r.page_token)?,
                filter(&r.owner),
                filter(&r.group_id),
            )
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListApisResponse {
            apis: apis.iter().map(api_out).collect(),
            next_page_token: next,
        }))
    }

    async fn update_api(&self, req: Request<pb::UpdateApiRequest>) -> Res<pb::Api> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        let a = r
            .api
            .ok_or_else(|| Status::from(invalid("api", "required")))?;
        need("Api.id", &a.id)?;
        self.allow_resource(&c, "UpdateApi", self.api_owner(&a.id)?)?;
        let paths = api_mask(&a, r.update_mask.as_ref())?;
        // Validate the new values as a whole API: fill what the mask leaves out from the
        // current record so rules across fields (e.g. the template) are checked.
        let current = found("api", &a.id, self.store.get_api(&a.id))?;
        let mut merged = api_out(&current);
        let incoming = a.clone();
        for p in &paths {
            api_copy_masked(&mut merged, &incoming, p);
        }
        let validated = api_in(&merged)?;
        let patch: crate::store::ApiPatch = Box::new(move |dst| api_apply(dst, &validated, &paths));
        let api = self.commit(
            self.store
                .update_api(&who, &a.id, patch)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(api_out(&api)))
    }

    async fn delete_api(&self, req: Request<pb::DeleteApiRequest>) -> Res<()> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let id = req.into_inner().id;
        need("id", &id)?;
        self.allow_resource(&c, "DeleteApi", self.api_owner(&id)?)?;
        Ok(self.committed(
            self.store
                .delete_api(&who, &id)
                .await
                .map_err(AdminError::from)?,
        ))
    }

    // === grants ===

    async fn create_grant(&self, req: Request<pb::CreateGrantRequest>) -> Res<pb::Grant> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let g = req
            .into_inner()
            .grant
            .ok_or_else(|| Status::from(invalid("grant", "required")))?;
        let grant = grant_in(&g)?;
        self.allow_resource(&c, "CreateGrant", self.target_owner(&grant.target)?)?;
        let grant = self.commit(
            self.store
                .create_grant(&who, grant)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(grant_out(&grant)))
    }

    async fn get_grant(&self, req: Request<pb::GetGrantRequest>) -> Res<pb::Grant> {
        let c = caller(&req)?;
        let id = req.into_inner().id;
        need("id", &id)?;
        let (app, resource) = self.grant_owners(&id)?;
        self.allow(
            &c,
            "GetGrant",
            Owners {
                app: app.as_deref(),
                resource: resource.as_deref(),
            },
        )?;
        Ok(Response::new(grant_out(&found(
            "grant",
            &id,
            self.store.get_grant(&id),
        )?)))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Res<pb::ListGrantsResponse> {
        let c = caller(&req)?;
        let r = req.into_inner();
        // A scoped principal lists by one of its apps, APIs or groups: the filter is
        // what names the owner.
        let app = match filter(&r.app_id) {
            Some(id) => self.app_owner(id)?,
            None => None,
        };
        let resource = match (filter(&r.api_id), filter(&r.group_id)) {
            (Some(id), _) => self.api_owner(id)?,
            (None, Some(id)) => self.group_owner(id)?,
            (None, None) => None,
        };
        self.allow(
            &c,
            "ListGrants",
            Owners {
                app: app.as_deref(),
                resource: resource.as_deref(),
            },
        )?;
        let f = GrantFilter {
            app_id: filter(&r.app_id).map(str::to_owned),
            api_id: filter(&r.api_id).map(str::to_owned),
            group_id: filter(&r.group_id).map(str::to_owned),
        };
        let (grants, next) = self
            .store
            .list_grants(&page(r.page_size, &r.page_token)?, &f)
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: grants.iter().map(grant_out).collect(),
            next_page_token: next,
        }))
    }

    async fn delete_grant(&self, req: Request<pb::DeleteGrantRequest>) -> Res<()> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let id = req.into_inner().id;
        need("id", &id)?;
        self.allow_resource(&c, "DeleteGrant", self.grant_owners(&id)?.1)?;
        Ok(self.committed(
            self.store
                .delete_grant(&who, &id)
                .await
                .map_err(AdminError::from)?,
        ))
    }

    async fn update_grant(&self, req: Request<pb::UpdateGrantRequest>) -> Res<pb::Grant> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        let g = r
            .grant
            .ok_or_else(|| Status::from(invalid("grant", "required")))?;
        need("grant.id", &g.id)?;
        self.allow_resource(&c, "UpdateGrant", self.grant_owners(&g.id)?.1)?;
        let patch = grant_patch(&g, r.update_mask.as_ref())?;
        let grant = self.commit(
            self.store
                .update_grant(&who, &g.id, patch)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(grant_out(&grant)))
    }

    async fn batch_create_grants(
        &self,
        req: Request<pb::BatchCreateGrantsRequest>,
    ) -> Res<pb::BatchCreateGrantsResponse> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        let b = batch_in(
            &r.app_ids,
            &r.api_ids,
            &r.group_ids,
            &r.stages,
            r.expires_at.as_ref(),
        )?;
        for t in &b.targets {
            self.allow_resource(&c, "BatchCreateGrants", self.target_owner(t)?)?;
        }
        let (created, unchanged) = self.commit(
            self.store
                .batch_create_grants(&who, &b)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(pb::BatchCreateGrantsResponse {
            created: created.iter().map(grant_out).collect(),
            unchanged: unchanged.iter().map(grant_out).collect(),
        }))
    }

    async fn batch_delete_grants(
        &self,
        req: Request<pb::BatchDeleteGrantsRequest>,
    ) -> Res<pb::BatchDeleteGrantsResponse> {
        let c = caller(&req)?;
        let who = c.actor.clone();
        let r = req.into_inner();
        let b = batch_in(&r.app_ids, &r.api_ids, &r.group_ids, &[], None)?;
        for t in &b.targets {
            self.allow_resource(&c, "BatchDeleteGrants", self.target_owner(t)?)?;
        }
        let deleted = self.commit(
            self.store
                .batch_delete_grants(&who, &b)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(pb::BatchDeleteGrantsResponse {
            deleted: deleted.iter().map(grant_out).collect(),
        }))
    }

    async fn list_app_permissions(
        &self,
        req: Request<pb::ListAppPermissionsRequest>,
    ) -> Res<pb::ListPermissionsResponse> {
        let c = caller(&req)?;
        let r = req.into_inner();
        need("app_id", &r.app_id)?;
        self.allow_app(&c, "ListAppPermissions", &r.app_id)?;
        let stage = filter(&r.stage).map(str::to_ascii_uppercase);
        let reach = self
            .store
            .app_permissions(&r.app_id, stage.as_deref())
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListPermissionsResponse {
            permissions: reach.iter().map(permission_out).collect(),
        }))
    }

    async fn list_api_callers(
        &self,
        req: Request<pb::ListApiCallersRequest>,
    ) -> Res<pb::ListPermissionsResponse> {
        let c = caller(&req)?;
        let r = req.into_inner();
        need("api_id", &r.api_id)?;
        self.allow_resource(&c, "ListApiCallers", self.api_owner(&r.api_id)?)?;
        let stage = filter(&r.stage).map(str::to_ascii_uppercase);
        let reach = self
            .store
            .api_callers(&r.api_id, stage.as_deref())
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListPermissionsResponse {
            permissions: reach.iter().map(permission_out).collect(),
        }))
    }

    // === audit ===

    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Res<pb::ListAuditEventsResponse> {
        self.allow(&caller(&req)?, "ListAuditEvents", Owners::default())?;
        let r = req.into_inner();
        let since = opt_ms_of("since", r.since.as_ref())?;
        let (events, next) = self
            .store
            .list_audit(
                &page(r.page_size, &r.page_token)?,
                filter(&r.resource_id),
                since,
            )
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.iter().map(audit_out).collect(),
            next_page_token: next,
        }))
    }

    // === owner stages ===

    async fn set_owner_stages(
        &self,
        req: Request<pb::SetOwnerStagesRequest>,
    ) -> Res<pb::OwnerStages> {
        let c = caller(&req)?;
        let r = req.into_inner();
        name("owner", &r.owner)?;
        self.allow_resource(&c, "SetOwnerStages", Some(r.owner.clone()))?;
        let stages = stage_list("stages", &r.stages)?;
        let stages = self.commit(
            self.store
                .set_owner_stages(&c.actor, &r.owner, stages)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(pb::OwnerStages {
            owner: r.owner,
            stages,
            declared: true,
        }))
    }

    async fn get_owner_stages(
        &self,
        req: Request<pb::GetOwnerStagesRequest>,
    ) -> Res<pb::OwnerStages> {
        let c = caller(&req)?;
        let owner = req.into_inner().owner;
        need("owner", &owner)?;
        self.allow(
            &c,
            "GetOwnerStages",
            Owners {
                app: Some(&owner),
                resource: Some(&owner),
            },
        )?;
        let (stages, declared) = self.store.owner_stages(&owner).map_err(AdminError::from)?;
        Ok(Response::new(pb::OwnerStages {
            owner,
            stages,
            declared,
        }))
    }

    // === permission requests ===

    async fn create_permission_request(
        &self,
        req: Request<pb::CreatePermissionRequestRequest>,
    ) -> Res<pb::PermissionRequest> {
        let c = caller(&req)?;
        let new = request_in(&req.into_inner())?;
        self.allow_app(&c, "CreatePermissionRequest", &new.app_id)?;
        let rec = self.commit(
            self.store
                .create_request(&c.actor, new)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(request_out(&rec)))
    }

    async fn get_permission_request(
        &self,
        req: Request<pb::GetPermissionRequestRequest>,
    ) -> Res<pb::PermissionRequest> {
        let c = caller(&req)?;
        let id = req.into_inner().id;
        need("id", &id)?;
        let rec = self.store.get_request(&id).map_err(AdminError::from)?;
        let (app, resource) = match &rec {
            Some(r) => (self.app_owner(&r.app_id)?, self.request_owner(&c, r)?),
            None => (None, None),
        };
        self.allow(
            &c,
            "GetPermissionRequest",
            Owners {
                app: app.as_deref(),
                resource: resource.as_deref(),
            },
        )?;
        let rec = rec.ok_or_else(|| {
            Status::from(AdminError::from(crate::store::StoreError::not_found(
                "permission request",
                &id,
            )))
        })?;
        Ok(Response::new(request_out(&rec)))
    }

    async fn list_permission_requests(
        &self,
        req: Request<pb::ListPermissionRequestsRequest>,
    ) -> Res<pb::ListPermissionRequestsResponse> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let app = match filter(&r.app_id) {
            Some(id) => self.app_owner(id)?,
            None => None,
        };
        let target = filter(&r.api_id).or(filter(&r.group_id));
        let resource = match (filter(&r.api_id), filter(&r.group_id)) {
            (Some(id), _) => self.api_owner(id)?,
            (None, Some(id)) => self.group_owner(id)?,
            (None, None) => None,
        };
        self.allow(
            &c,
            "ListPermissionRequests",
            Owners {
                app: app.as_deref(),
                resource: resource.as_deref(),
            },
        )?;
        let f = crate::store::requests::RequestFilter {
            app_id: filter(&r.app_id).map(str::to_owned),
            target_id: target.map(str::to_owned),
            status: filter(&r.status).map(str::to_owned),
        };
        let (list, next) = self
            .store
            .list_requests(&page(r.page_size, &r.page_token)?, &f)
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListPermissionRequestsResponse {
            requests: list.iter().map(request_out).collect(),
            next_page_token: next,
        }))
    }

    async fn approve_permission_request(
        &self,
        req: Request<pb::DecidePermissionRequestRequest>,
    ) -> Res<pb::PermissionRequest> {
        self.decide(req, true).await
    }

    async fn reject_permission_request(
        &self,
        req: Request<pb::DecidePermissionRequestRequest>,
    ) -> Res<pb::PermissionRequest> {
        self.decide(req, false).await
    }

    async fn withdraw_permission_request(
        &self,
        req: Request<pb::WithdrawPermissionRequestRequest>,
    ) -> Res<pb::PermissionRequest> {
        let c = caller(&req)?;
        let id = req.into_inner().id;
        need("id", &id)?;
        let app = match self.store.get_request(&id).map_err(AdminError::from)? {
            Some(r) => self.app_owner(&r.app_id)?,
            None => None,
        };
        self.allow(
            &c,
            "WithdrawPermissionRequest",
            Owners {
                app: app.as_deref(),
                resource: None,
            },
        )?;
        let rec = self.commit(
            self.store
                .withdraw_request(&c.actor, &id)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(request_out(&rec)))
    }

    // === principals ===

    async fn create_principal(
        &self,
        req: Request<pb::CreatePrincipalRequest>,
    ) -> Res<pb::CreatePrincipalResponse> {
        let c = caller(&req)?;
        self.allow(&c, "CreatePrincipal", Owners::default())?;
        let p = req
            .into_inner()
            .principal
            .ok_or_else(|| Status::from(invalid("principal", "required")))?;
        let new = principal_in(&p)?;
        let (p, token) = self.commit(
            self.store
                .create_principal(&c.actor, new)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(pb::CreatePrincipalResponse {
            principal: Some(principal_out(&p)),
            token: token.to_string(),
        }))
    }

    async fn get_principal(&self, req: Request<pb::GetPrincipalRequest>) -> Res<pb::Principal> {
        self.allow(&caller(&req)?, "GetPrincipal", Owners::default())?;
        let name = req.into_inner().name;
        need("name", &name)?;
        let p = found("principal", &name, self.store.get_principal(&name))?;
        Ok(Response::new(principal_out(&p)))
    }

    async fn list_principals(
        &self,
        req: Request<pb::ListPrincipalsRequest>,
    ) -> Res<pb::ListPrincipalsResponse> {
        self.allow(&caller(&req)?, "ListPrincipals", Owners::default())?;
        let r = req.into_inner();
        let (list, next) = self
            .store
            .list_principals(&page(r.page_size, &r.page_token)?)
            .map_err(AdminError::from)?;
        Ok(Response::new(pb::ListPrincipalsResponse {
            principals: list.iter().map(principal_out).collect(),
            next_page_token: next,
        }))
    }

    async fn delete_principal(&self, req: Request<pb::DeletePrincipalRequest>) -> Res<()> {
        let c = caller(&req)?;
        self.allow(&c, "DeletePrincipal", Owners::default())?;
        let name = req.into_inner().name;
        need("name", &name)?;
        Ok(self.committed(
            self.store
                .delete_principal(&c.actor, &name)
                .await
                .map_err(AdminError::from)?,
        ))
    }

    async fn rotate_principal_token(
        &self,
        req: Request<pb::RotatePrincipalTokenRequest>,
    ) -> Res<pb::CreatePrincipalResponse> {
        let c = caller(&req)?;
        self.allow(&c, "RotatePrincipalToken", Owners::default())?;
        let name = req.into_inner().name;
        need("name", &name)?;
        let (p, token) = self.commit(
            self.store
                .rotate_principal_token(&c.actor, &name)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(pb::CreatePrincipalResponse {
            principal: Some(principal_out(&p)),
            token: token.to_string(),
        }))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Res<pb::Principal> {
        let c = caller(&req)?;
        self.allow(&c, "WhoAmI", Owners::default())?;
        Ok(Response::new(principal_out(&c.principal)))
    }

    async fn export(&self, req: Request<pb::ExportRequest>) -> Res<pb::Config> {
        self.allow(&caller(&req)?, "Export", Owners::default())?;
        Ok(Response::new(declarative::export(&self.store)?))
    }

    async fn apply(&self, req: Request<pb::ApplyRequest>) -> Res<pb::ApplyResponse> {
        let c = caller(&req)?;
        self.allow(&c, "Apply", Owners::default())?;
        let who = c.actor;
        let r = req.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::from(invalid("config", "required")))?;
        let want = declarative::desired(&config)?;
        if r.dry_run {
            let planned = self.store.plan(&want, r.prune).map_err(AdminError::from)?;
            return Ok(Response::new(declarative::planned_out(&planned)));
        }
        let applied = self.commit(
            self.store
                .apply(&who, &want, r.prune)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(declarative::applied_out(&applied)))
    }

    async fn explain(&self, req: Request<pb::ExplainRequest>) -> Res<pb::ExplainResponse> {
        self.allow(&caller(&req)?, "Explain", Owners::default())?;
        let r = req.into_inner();
        let view = explain::view(&r)?;
        let now_ms = match opt_ms_of("at", r.at.as_ref())? {
            Some(at) => at,
            None => self.shared.clock.now_ms(),
        };
        let (steps, decision) = self.shared.explain(&view, now_ms).await;
        Ok(Response::new(explain::out(steps, &decision)))
    }

    type BackupStream = tokio_stream::wrappers::ReceiverStream<Result<pb::BackupChunk, Status>>;

    /// Takes the backup into a temp file (writes wait only that long), then streams it
    /// in 64 KiB chunks and removes it, however the stream ends.
    async fn backup(&self, req: Request<pb::BackupRequest>) -> Res<Self::BackupStream> {
        let c = caller(&req)?;
        self.allow(&c, "Backup", Owners::default())?;
        let who = c.actor;
        let (path, stats) = self.store.backup_to_temp().await?;
        tracing::info!(actor = %who, records = stats.records, bytes = stats.bytes, "backup taken");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let sent = async {
                let mut file = tokio::fs::File::open(&path).await?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<(), std::io::Error>(());
                    }
                    let chunk = pb::BackupChunk {
                        data: buf.get(..n).unwrap_or_default().to_vec(),
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Ok(()); // the client went away
                    }
                }
            }
            .await;
            if let Err(e) = sent {
                let _ = tx
                    .send(Err(Status::internal(format!("reading the backup: {e}"))))
                    .await;
            }
            let _ = tokio::fs::remove_file(&path).await;
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

impl AdminService {
    async fn set_app_enabled(
        &self,
        who: &str,
        action: &str,
        id: &str,
        enabled: bool,
    ) -> Res<pb::App> {
        need("id", id)?;
        let patch = crate::store::AppPatch {
            enabled: Some(enabled),
            ..Default::default()
        };
        let app = self.commit(
            self.store
                .update_app(who, action, id, patch)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(app_out(&app, false)))
    }

    async fn set_key_enabled(
        &self,
        who: &str,
        action: &str,
        k: &str,
        enabled: bool,
    ) -> Res<pb::KeyPair> {
        need("app_key", k)?;
        let patch = crate::store::KeyPatch {
            enabled: Some(enabled),
            ..Default::default()
        };
        let key = self.commit(
            self.store
                .update_key(who, action, k, patch)
                .await
                .map_err(AdminError::from)?,
        );
        Ok(Response::new(key_out(&key, false)))
    }
}
