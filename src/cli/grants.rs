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
