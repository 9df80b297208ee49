//! `keygate key <verb>`: CreateKeyPair, GetKeyPair, ListKeyPairs, UpdateKeyPair,
//! DeleteKeyPair, ResetKeyPairSecret, EnableKeyPair and DisableKeyPair.

use prost_types::{FieldMask, Timestamp};

use super::time::{parse_duration, parse_ts};
use super::{CliError, Common, Ctx, Paging, SecretSource, warn_shown_once};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct KeyCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: KeyVerb,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyVerb {
    /// Add a key pair to an app; prints it with its AppSecret, shown only this once.
    Create {
        /// The app's id.
        #[arg(long)]
        app: String,
        /// Custom AppKey ([A-Za-z0-9._-], 4 to 64; default: generated).
        #[arg(long)]
        app_key: Option<String>,
        #[command(flatten)]
        secret: SecretSource,
        /// When the pair stops verifying (RFC 3339; default: never).
        #[arg(long, value_name = "RFC3339", value_parser = parse_ts)]
        expires_at: Option<Timestamp>,
        /// Which pair this is, for people ("ci", "laptop").
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one key pair (never its secret).
    Get { app_key: String },
    /// List an app's key pairs.
    List {
        /// The app's id.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Change the fields given (at least one).
    Update {
        app_key: String,
        #[command(flatten)]
        fields: KeyFields,
    },
    /// Delete a key pair (not the app's default one: reset that instead).
    Delete { app_key: String },
    /// Replace the secret; prints the new one, shown only this once.
    ResetSecret {
        app_key: String,
        /// How long the previous secret keeps verifying (e.g. 30m, 1h, 2d; default:
        /// not at all).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<prost_types::Duration>,
        /// Also give the pair this new AppKey; the old one stops verifying at once.
        #[arg(long, conflicts_with = "grace")]
        new_app_key: Option<String>,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// Let the key pair verify again.
    Enable { app_key: String },
    /// Stop the key pair verifying (kept; enable it again at any time).
    Disable { app_key: String },
}

/// The fields `key update` may change: the update mask is exactly the flags given.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = true)]
pub struct KeyFields {
    /// New expiry (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_ts, conflicts_with = "no_expiry")]
    expires_at: Option<Timestamp>,
    /// Never expire.
    #[arg(long)]
    no_expiry: bool,
    #[arg(long, value_name = "true|false")]
    enabled: Option<bool>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
}

impl KeyFields {
    fn request(self, app_key: String) -> pb::UpdateKeyPairRequest {
        let mut paths = Vec::new();
        if self.expires_at.is_some() || self.no_expiry {
            paths.push("expires_at".to_owned());
        }
        if self.enabled.is_some() {
            paths.push("enabled".to_owned());
        }
        if self.name.is_some() {
            paths.push("name".to_owned());
        }
        if self.description.is_some() {
            paths.push("description".to_owned());
        }
        pb::UpdateKeyPairRequest {
            key_pair: Some(pb::KeyPair {
                app_key,
                expires_at: self.expires_at,
                enabled: self.enabled.unwrap_or_default(),
                name: self.name.unwrap_or_default(),
                description: self.description.unwrap_or_default(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths }),
        }
    }
}

pub async fn run(mut ctx: Ctx, verb: KeyVerb) -> Result<(), CliError> {
    match verb {
        KeyVerb::Create {
            app,
            app_key,
            secret,
            expires_at,
            name,
            description,
        } => {
            let req = pb::CreateKeyPairRequest {
                app_id: app,
                app_key: app_key.unwrap_or_default(),
                app_secret: secret.read()?.to_string(),
                expires_at,
                name,
                description,
            };
            let key = ctx.client().await?.create_key_pair(req).await?.into_inner();
            ctx.one(&key)?;
            warn_shown_once("AppSecret is");
            Ok(())
        }
        KeyVerb::Get { app_key } => {
            let key = ctx
                .client()
                .await?
                .get_key_pair(pb::GetKeyPairRequest { app_key })
                .await?
                .into_inner();
            ctx.one(&key)
        }
        KeyVerb::List { app, paging } => {
            ctx.list(&paging, |mut c, page_size, page_token| {
                let req = pb::ListKeyPairsRequest {
                    app_id: app.clone(),
                    page_size,
                    page_token,
                };
                async move {
                    let r = c.list_key_pairs(req).await?.into_inner();
                    Ok((r.key_pairs, r.next_page_token))
                }
            })
            .await
        }
        KeyVerb::Update { app_key, fields } => {
            let key = ctx
                .client()
                .await?
                .update_key_pair(fields.request(app_key))
                .await?
                .into_inner();
            ctx.one(&key)
        }
        KeyVerb::Delete { app_key } => {
            ctx.client()
                .await?
                .delete_key_pair(pb::DeleteKeyPairRequest {
                    app_key: app_key.clone(),
                })
                .await?;
            ctx.deleted("key pair", &app_key)
        }
        KeyVerb::ResetSecret {
            app_key,
            grace,
            new_app_key,
            secret,
        } => {
            let req = pb::ResetKeyPairSecretRequest {
                app_key,
                grace_period: grace,
                app_secret: secret.read()?.to_string(),
                new_app_key: new_app_key.unwrap_or_default(),
            };
            let key = ctx
                .client()
                .await?
                .reset_key_pair_secret(req)
                .await?
                .into_inner();
            ctx.one(&key)?;
            warn_shown_once("AppSecret is");
            Ok(())
        }
        KeyVerb::Enable { app_key } => {
            let key = ctx
                .client()
                .await?
                .enable_key_pair(pb::EnableKeyPairRequest { app_key })
                .await?
                .into_inner();
            ctx.one(&key)
        }
        KeyVerb::Disable { app_key } => {
            let key = ctx
                .client()
                .await?
                .disable_key_pair(pb::DisableKeyPairRequest { app_key })
                .await?
                .into_inner();
            ctx.one(&key)
        }
    }
}
