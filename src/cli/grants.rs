//! `keygate grant <verb>` (CreateGrant, GetGrant, ListGrants, DeleteGrant) and
//! `keygate audit list` (ListAuditEvents).

use prost_types::Timestamp;

use super::time::parse_ts;
use super::{CliError, Common, Ctx, Paging};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct GrantCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: GrantVerb,
}

#[derive(clap::Subcommand, Debug)]
pub enum GrantVerb {
    /// Let an app call an API, or every API of a group.
    Create {
        /// The app's id.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        target: Target,
        /// A stage the grant covers, e.g. RELEASE (repeatable; default: any stage).
        #[arg(long = "stage", value_name = "STAGE")]
        stages: Vec<String>,
        /// When the grant ends (RFC 3339; default: never).
        #[arg(long, value_name = "RFC3339", value_parser = parse_ts)]
        expires_at: Option<Timestamp>,
    },
    /// Show one grant.
    Get { id: String },
    /// List grants: all, or those of one app, API or group.
    List {
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        paging: Paging,
    },
    /// Delete a grant.
    Delete { id: String },
    /// Change a grant's stages or expiry in place (at least one flag).
    Update {
        id: String,
        #[command(flatten)]
        fields: GrantFields,
    },
    /// Grant every app given on every API and group given, in one write (pairs
    /// already granted are left as they are).
    BatchCreate {
        #[command(flatten)]
        pairs: Pairs,
        /// A stage of every new grant (repeatable; default: any stage).
        #[arg(long = "stage", value_name = "STAGE")]
        stages: Vec<String>,
        #[arg(long, value_name = "RFC3339", value_parser = parse_ts)]
        expires_at: Option<Timestamp>,
    },
    /// Delete the grants of every app given on every API and group given.
    BatchDelete {
        #[command(flatten)]
        pairs: Pairs,
    },
    /// The APIs an app may call (directly and through groups) and the grant for each.
    Permissions {
        #[arg(long, value_name = "APP_ID")]
        app: String,
        /// Only in this stage.
        #[arg(long)]
        stage: Option<String>,
    },
    /// The apps that may call an API (directly and through its group).
    Callers {
        #[arg(long, value_name = "API_ID")]
        api: String,
        #[arg(long)]
        stage: Option<String>,
    },
}

/// What `grant update` changes: the update mask is exactly the flags given.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = true)]
pub struct GrantFields {
    /// The grant's stages from now on (repeatable).
    #[arg(long = "stage", value_name = "STAGE", conflicts_with = "any_stage")]
    stages: Vec<String>,
    /// Any stage.
    #[arg(long)]
    any_stage: bool,
    /// A new expiry (RFC 3339, in the future).
    #[arg(long, value_name = "RFC3339", value_parser = parse_ts, conflicts_with = "no_expiry")]
    expires_at: Option<Timestamp>,
    /// Never expire.
    #[arg(long)]
    no_expiry: bool,
}

/// Apps × targets of a batch.
#[derive(clap::Args, Debug)]
pub struct Pairs {
    /// An app's id (repeatable).
    #[arg(long = "app", value_name = "APP_ID", required = true)]
    apps: Vec<String>,
    /// An API's id (repeatable).
    #[arg(long = "api", value_name = "API_ID")]
    apis: Vec<String>,
    /// A group's id (repeatable).
    #[arg(long = "group", value_name = "GROUP_ID")]
    groups: Vec<String>,
}

/// What a grant covers: exactly one of an API and a group.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The API's id.
    #[arg(long, value_name = "API_ID")]
    api: Option<String>,
    /// The group's id (every API in it).
    #[arg(long, value_name = "GROUP_ID")]
    group: Option<String>,
}

/// At most one filter: the server takes exactly one or none.
#[derive(clap::Args, Debug)]
#[group(required = false, multiple = false)]
pub struct Filter {
    /// Only the grants of this app.
    #[arg(long, value_name = "APP_ID")]
    app: Option<String>,
    /// Only the grants on this API.
    #[arg(long, value_name = "API_ID")]
    api: Option<String>,
    /// Only the grants on this group.
    #[arg(long, value_name = "GROUP_ID")]
    group: Option<String>,
}

pub async fn run_grant(mut ctx: Ctx, verb: GrantVerb) -> Result<(), CliError> {
    match verb {
        GrantVerb::Create {
            app,
            target,
            stages,
            expires_at,
        } => {
            let target = match (target.api, target.group) {
                (Some(api), _) => pb::grant::Target::ApiId(api),
                (None, Some(group)) => pb::grant::Target::GroupId(group),
                // clap's group requires one; kept as a usage error, not a panic.
                (None, None) => return Err(CliError::Usage("give --api or --group".into())),
            };
            let req = pb::CreateGrantRequest {
                grant: Some(pb::Grant {
                    app_id: app,
                    target: Some(target),
                    stages,
                    expires_at,
                    ..Default::default()
                }),
            };
            let g = ctx.client().await?.create_grant(req).await?.into_inner();
            ctx.one(&g)
        }
        GrantVerb::Get { id } => {
            let g = ctx
                .client()
                .await?
                .get_grant(pb::GetGrantRequest { id })
                .await?
                .into_inner();
            ctx.one(&g)
        }
        GrantVerb::List { filter, paging } => {
            let base = pb::ListGrantsRequest {
                app_id: filter.app.unwrap_or_default(),
                api_id: filter.api.unwrap_or_default(),
                group_id: filter.group.unwrap_or_default(),
                ..Default::default()
            };
            ctx.list(&paging, |mut c, page_size, page_token| {
                let req = pb::ListGrantsRequest {
                    page_size,
                    page_token,
                    ..base.clone()
                };
                async move {
                    let r = c.list_grants(req).await?.into_inner();
                    Ok((r.grants, r.next_page_token))
                }
            })
            .await
        }
        GrantVerb::Delete { id } => {
            ctx.client()
                .await?
                .delete_grant(pb::DeleteGrantRequest { id: id.clone() })
                .await?;
            ctx.deleted("grant", &id)
        }
        GrantVerb::Update { id, fields } => {
            let mut paths = Vec::new();
            if !fields.stages.is_empty() || fields.any_stage {
                paths.push("stages".to_owned());
            }
            if fields.expires_at.is_some() || fields.no_expiry {
                paths.push("expires_at".to_owned());
            }
            let req = pb::UpdateGrantRequest {
                grant: Some(pb::Grant {
                    id,
                    stages: fields.stages,
                    expires_at: fields.expires_at,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            };
            let g = ctx.client().await?.update_grant(req).await?.into_inner();
            ctx.one(&g)
        }
        GrantVerb::BatchCreate {
            pairs,
            stages,
            expires_at,
        } => {
            let req = pb::BatchCreateGrantsRequest {
                app_ids: pairs.apps,
                api_ids: pairs.apis,
                group_ids: pairs.groups,
                stages,
                expires_at,
            };
            let r = ctx
                .client()
                .await?
                .batch_create_grants(req)
                .await?
                .into_inner();
            if !r.unchanged.is_empty() {
                eprintln!(
                    "keygate: {} pairs were already granted and are unchanged",
                    r.unchanged.len()
                );
            }
            ctx.many(&r.created)
        }
        GrantVerb::BatchDelete { pairs } => {
            let req = pb::BatchDeleteGrantsRequest {
                app_ids: pairs.apps,
                api_ids: pairs.apis,
                group_ids: pairs.groups,
            };
            let r = ctx
                .client()
                .await?
                .batch_delete_grants(req)
                .await?
                .into_inner();
            ctx.many(&r.deleted)
        }
        GrantVerb::Permissions { app, stage } => {
            let req = pb::ListAppPermissionsRequest {
                app_id: app,
                stage: stage.unwrap_or_default(),
            };
            let r = ctx
                .client()
                .await?
                .list_app_permissions(req)
                .await?
                .into_inner();
            ctx.many(&r.permissions)
        }
        GrantVerb::Callers { api, stage } => {
            let req = pb::ListApiCallersRequest {
                api_id: api,
                stage: stage.unwrap_or_default(),
            };
            let r = ctx
                .client()
                .await?
                .list_api_callers(req)
                .await?
                .into_inner();
            ctx.many(&r.permissions)
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct AuditCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: AuditVerb,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditVerb {
    /// List audit events, oldest first.
    List {
        /// Only events on this resource id (an app id, an AppKey, an API id...).
        #[arg(long, value_name = "ID")]
        resource: Option<String>,
        /// Only events at or after this time (RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_ts)]
        since: Option<Timestamp>,
        #[command(flatten)]
        paging: Paging,
    },
}

pub async fn run_audit(mut ctx: Ctx, verb: AuditVerb) -> Result<(), CliError> {
    match verb {
        AuditVerb::List {
            resource,
            since,
            paging,
        } => {
            let base = pb::ListAuditEventsRequest {
                resource_id: resource.unwrap_or_default(),
                since,
                ..Default::default()
            };
            ctx.list(&paging, |mut c, page_size, page_token| {
                let req = pb::ListAuditEventsRequest {
                    page_size,
                    page_token,
                    ..base.clone()
                };
                async move {
                    let r = c.list_audit_events(req).await?.into_inner();
                    Ok((r.events, r.next_page_token))
                }
            })
            .await
        }
    }
}
