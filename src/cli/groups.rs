//! `keygate group <verb>`: CreateGroup, GetGroup, ListGroups, UpdateGroup and
//! DeleteGroup.

use prost_types::FieldMask;

use super::{CliError, Common, Ctx, Paging};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct GroupCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: GroupVerb,
}

#[derive(clap::Subcommand, Debug)]
pub enum GroupVerb {
    /// Create a group (add APIs to it with `api create|update --group ID`).
    Create {
        /// Unique per owner.
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one group.
    Get { id: String },
    /// List groups.
    List {
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Change the fields given (at least one).
    Update {
        id: String,
        #[command(flatten)]
        fields: GroupFields,
    },
    /// Delete a group.
    Delete { id: String },
}

/// The fields `group update` may change: the update mask is exactly the flags given.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = true)]
pub struct GroupFields {
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
}

pub async fn run(mut ctx: Ctx, verb: GroupVerb) -> Result<(), CliError> {
    match verb {
        GroupVerb::Create {
            name,
            owner,
            description,
        } => {
            let req = pb::CreateGroupRequest {
                group: Some(pb::Group {
                    name,
                    owner,
                    description,
                    ..Default::default()
                }),
            };
            let g = ctx.client().await?.create_group(req).await?.into_inner();
            ctx.one(&g)
        }
        GroupVerb::Get { id } => {
            let g = ctx
                .client()
                .await?
                .get_group(pb::GetGroupRequest { id })
                .await?
                .into_inner();
            ctx.one(&g)
        }
        GroupVerb::List { owner, paging } => {
            let owner = owner.unwrap_or_default();
            ctx.list(&paging, |mut c, page_size, page_token| {
                let req = pb::ListGroupsRequest {
                    page_size,
                    page_token,
                    owner: owner.clone(),
                };
                async move {
                    let r = c.list_groups(req).await?.into_inner();
                    Ok((r.groups, r.next_page_token))
                }
            })
            .await
        }
        GroupVerb::Update { id, fields } => {
            let mut group = pb::Group {
                id,
                ..Default::default()
            };
            let mut paths = Vec::new();
            if let Some(v) = fields.name {
                group.name = v;
                paths.push("name".to_owned());
            }
            if let Some(v) = fields.description {
                group.description = v;
                paths.push("description".to_owned());
            }
            let req = pb::UpdateGroupRequest {
                group: Some(group),
                update_mask: Some(FieldMask { paths }),
            };
            let g = ctx.client().await?.update_group(req).await?.into_inner();
            ctx.one(&g)
        }
        GroupVerb::Delete { id } => {
            ctx.client()
                .await?
                .delete_group(pb::DeleteGroupRequest { id: id.clone() })
                .await?;
            ctx.deleted("group", &id)
        }
    }
}
