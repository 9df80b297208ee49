//! `keygate app <verb>`: CreateApp, GetApp, ListApps, UpdateApp, DeleteApp,
//! EnableApp, DisableApp and ResetAppCode.

use std::collections::HashMap;

use prost_types::FieldMask;

use super::{CliError, Common, Ctx, Paging, SecretSource, parse_tag, warn_shown_once};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct AppCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: AppVerb,
}

#[derive(clap::Subcommand, Debug)]
pub enum AppVerb {
    /// Create an app and its default key pair; prints both, with the AppSecret and the
    /// AppCode, which are shown only this once.
    Create {
        /// Unique per owner.
        #[arg(long)]
        name: String,
        /// The tenant the app belongs to.
        #[arg(long)]
        owner: String,
        /// Custom id ([a-z0-9_-], at most 64; also the BlueKing bk_app_code).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// A tag (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Forwarded to the backend on every allowed request (CaAppExtendInfo).
        #[arg(long, default_value = "")]
        extend_info: String,
        /// Custom AppCode (default: generated).
        #[arg(long)]
        app_code: Option<String>,
        /// Custom AppKey of the default key pair (default: generated).
        #[arg(long)]
        app_key: Option<String>,
        /// The default key pair's custom AppSecret.
        #[command(flatten)]
        secret: SecretSource,
    },
    /// Show one app (its AppCode is never shown again, only whether it is set).
    Get { id: String },
    /// List apps, optionally filtered (the filters combine).
    List {
        #[arg(long)]
        owner: Option<String>,
        /// `key` (any value) or `key=value`.
        #[arg(long, value_name = "KEY[=VALUE]")]
        tag: Option<String>,
        /// Names starting with this, ignoring case.
        #[arg(long)]
        name_prefix: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Change the fields given (at least one); the others keep their values.
    Update {
        id: String,
        #[command(flatten)]
        fields: AppFields,
    },
    /// Delete an app with its key pairs and grants.
    Delete { id: String },
    /// Let the app's requests pass again.
    Enable { id: String },
    /// Deny every request of the app (its key pairs and grants are kept).
    Disable { id: String },
    /// Replace the AppCode; prints the new one, shown only this once.
    ResetCode {
        id: String,
        /// Custom AppCode (default: generated).
        #[arg(long)]
        app_code: Option<String>,
    },
}

/// The fields `app update` may change: the update mask is exactly the flags given.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = true)]
pub struct AppFields {
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Replaces all tags with the ones given (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Remove every tag.
    #[arg(long, conflicts_with = "tags")]
    clear_tags: bool,
    #[arg(long)]
    extend_info: Option<String>,
}

impl AppFields {
    fn request(self, id: String) -> pb::UpdateAppRequest {
        let mut app = pb::App {
            id,
            ..Default::default()
        };
        let mut paths = Vec::new();
        if let Some(v) = self.name {
            app.name = v;
            paths.push("name");
        }
        if let Some(v) = self.description {
            app.description = v;
            paths.push("description");
        }
        if !self.tags.is_empty() || self.clear_tags {
            app.tags = self.tags.into_iter().collect();
            paths.push("tags");
        }
        if let Some(v) = self.extend_info {
            app.extend_info = v;
            paths.push("extend_info");
        }
        pb::UpdateAppRequest {
            app: Some(app),
            update_mask: Some(FieldMask {
                paths: paths.into_iter().map(str::to_owned).collect(),
            }),
        }
    }
}

pub async fn run(mut ctx: Ctx, verb: AppVerb) -> Result<(), CliError> {
    match verb {
        AppVerb::Create {
            name,
            owner,
            id,
            description,
            tags,
            extend_info,
            app_code,
            app_key,
            secret,
        } => {
            let req = pb::CreateAppRequest {
                app_key: app_key.unwrap_or_default(),
                app_secret: secret.read()?.to_string(),
                app: Some(pb::App {
                    id: id.unwrap_or_default(),
                    name,
                    owner,
                    description,
                    tags: tags.into_iter().collect::<HashMap<_, _>>(),
                    extend_info,
                    app_code: app_code.unwrap_or_default(),
                    ..Default::default()
                }),
            };
            let r = ctx.client().await?.create_app(req).await?.into_inner();
            let app = r.app.unwrap_or_default();
            let key = r.key_pair.unwrap_or_default();
            print_created(&ctx, &app, &key)?;
            warn_shown_once("AppSecret and the AppCode are");
            Ok(())
        }
        AppVerb::Get { id } => {
            let app = ctx
                .client()
                .await?
                .get_app(pb::GetAppRequest { id })
                .await?
                .into_inner();
            ctx.one(&app)
        }
        AppVerb::List {
            owner,
            tag,
            name_prefix,
            paging,
        } => {
            let base = pb::ListAppsRequest {
                owner: owner.unwrap_or_default(),
                tag: tag.unwrap_or_default(),
                name_prefix: name_prefix.unwrap_or_default(),
                ..Default::default()
            };
            ctx.list(&paging, |mut c, page_size, page_token| {
                let req = pb::ListAppsRequest {
                    page_size,
                    page_token,
                    ..base.clone()
                };
                async move {
                    let r = c.list_apps(req).await?.into_inner();
                    Ok((r.apps, r.next_page_token))
                }
            })
            .await
        }
        AppVerb::Update { id, fields } => {
            let app = ctx
                .client()
                .await?
                .update_app(fields.request(id))
                .await?
                .into_inner();
            ctx.one(&app)
        }
        AppVerb::Delete { id } => {
            ctx.client()
                .await?
                .delete_app(pb::DeleteAppRequest { id: id.clone() })
                .await?;
            ctx.deleted("app", &id)
        }
        AppVerb::Enable { id } => {
            let app = ctx
                .client()
                .await?
                .enable_app(pb::EnableAppRequest { id })
                .await?
                .into_inner();
            ctx.one(&app)
        }
        AppVerb::Disable { id } => {
            let app = ctx
                .client()
                .await?
                .disable_app(pb::DisableAppRequest { id })
                .await?
                .into_inner();
            ctx.one(&app)
        }
        AppVerb::ResetCode { id, app_code } => {
            let app = ctx
                .client()
                .await?
                .reset_app_code(pb::ResetAppCodeRequest {
                    id,
                    app_code: app_code.unwrap_or_default(),
                })
                .await?
                .into_inner();
            ctx.one(&app)?;
            warn_shown_once("AppCode is");
            Ok(())
        }
    }
}

/// CreateApp's response: `{"app":..., "key_pair":...}`, or both as field blocks.
fn print_created(ctx: &Ctx, app: &pb::App, key: &pb::KeyPair) -> Result<(), CliError> {
    use super::output::{Output, Printable, fields, json_out};
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match ctx.output() {
        Output::Json => json_out(
            &mut out,
            &serde_json::json!({ "app": app.json(), "key_pair": key.json() }),
        )?,
        Output::Table => {
            fields(&mut out, &app.fields())?;
            writeln!(out)?;
            writeln!(out, "default key pair:")?;
            fields(&mut out, &key.fields())?;
        }
    }
    Ok(out.flush()?)
}
