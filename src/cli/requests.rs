//! `keygate request <verb>`: the permission-request workflow (CreatePermissionRequest,
//! GetPermissionRequest, ListPermissionRequests, Approve-, Reject- and
//! WithdrawPermissionRequest).

use prost_types::Timestamp;

use super::time::parse_ts;
use super::{CliError, Common, Ctx, Paging};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct RequestCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: RequestVerb,
}

#[derive(clap::Subcommand, Debug)]
pub enum RequestVerb {
    /// Apply for APIs or groups for an app (a developer of the app's owner).
    Create {
        #[arg(long, value_name = "APP_ID")]
        app: String,
        /// An API's id (repeatable).
        #[arg(long = "api", value_name = "API_ID")]
        apis: Vec<String>,
        /// A group's id (repeatable).
        #[arg(long = "group", value_name = "GROUP_ID")]
        groups: Vec<String>,
        /// A stage asked for (repeatable; default: any stage).
        #[arg(long = "stage", value_name = "STAGE")]
        stages: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
        /// Validity from approval in days (e.g. 180, 360); default: permanent.
        #[arg(long, conflicts_with = "valid_until")]
        valid_days: Option<i32>,
        /// Validity until this time (RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_ts)]
        valid_until: Option<Timestamp>,
    },
    /// Show one request with every item's decision.
    Get { id: String },
    /// List requests: of an app, on an API or group, by status.
    List {
        #[arg(long, value_name = "APP_ID")]
        app: Option<String>,
        #[arg(long, value_name = "API_ID")]
        api: Option<String>,
        #[arg(long, value_name = "GROUP_ID")]
        group: Option<String>,
        /// pending, decided, withdrawn, approved or rejected.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Approve items (a provider of their owner): the grants are made in the same write.
    Approve {
        id: String,
        #[command(flatten)]
        decision: DecisionArgs,
        /// Narrow the stages, within those requested (repeatable).
        #[arg(long = "stage", value_name = "STAGE")]
        stages: Vec<String>,
        /// Shorten the validity: the grants expire then (RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_ts)]
        expires_at: Option<Timestamp>,
    },
    /// Reject items, with a comment.
    Reject {
        id: String,
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Withdraw a request's pending items.
    Withdraw { id: String },
}

#[derive(clap::Args, Debug)]
pub struct DecisionArgs {
    /// An item to decide, by API or group id (repeatable; default: every pending item
    /// you may decide).
    #[arg(long = "target", value_name = "ID")]
    targets: Vec<String>,
    #[arg(long, default_value = "")]
    comment: String,
}

pub async fn run(mut ctx: Ctx, verb: RequestVerb) -> Result<(), CliError> {
    let r = match verb {
        RequestVerb::Create {
            app,
            apis,
            groups,
            stages,
            reason,
            valid_days,
            valid_until,
        } => {
            let req = pb::CreatePermissionRequestRequest {
                app_id: app,
                api_ids: apis,
                group_ids: groups,
                stages,
                reason,
                valid_days: valid_days.unwrap_or(0),
                valid_until,
            };
            ctx.client()
                .await?
                .create_permission_request(req)
                .await?
                .into_inner()
        }
        RequestVerb::Get { id } => ctx
            .client()
            .await?
            .get_permission_request(pb::GetPermissionRequestRequest { id })
            .await?
            .into_inner(),
        RequestVerb::List {
            app,
            api,
            group,
            status,
            paging,
        } => {
            let base = pb::ListPermissionRequestsRequest {
                app_id: app.unwrap_or_default(),
                api_id: api.unwrap_or_default(),
                group_id: group.unwrap_or_default(),
                status: status.unwrap_or_default(),
                ..Default::default()
            };
            return ctx
                .list(&paging, |mut c, page_size, page_token| {
                    let req = pb::ListPermissionRequestsRequest {
                        page_size,
                        page_token,
                        ..base.clone()
                    };
                    async move {
                        let r = c.list_permission_requests(req).await?.into_inner();
                        Ok((r.requests, r.next_page_token))
                    }
                })
                .await;
        }
        RequestVerb::Approve {
            id,
            decision,
            stages,
            expires_at,
        } => {
            let req = pb::DecidePermissionRequestRequest {
                id,
                target_ids: decision.targets,
                comment: decision.comment,
                stages,
                expires_at,
            };
            ctx.client()
                .await?
                .approve_permission_request(req)
                .await?
                .into_inner()
        }
        RequestVerb::Reject { id, decision } => {
            let req = pb::DecidePermissionRequestRequest {
                id,
                target_ids: decision.targets,
                comment: decision.comment,
                ..Default::default()
            };
            ctx.client()
                .await?
                .reject_permission_request(req)
                .await?
                .into_inner()
        }
        RequestVerb::Withdraw { id } => ctx
            .client()
            .await?
            .withdraw_permission_request(pb::WithdrawPermissionRequestRequest { id })
            .await?
            .into_inner(),
    };
    ctx.one(&r)
}
