//! `keygate principal <verb>` (CreatePrincipal, GetPrincipal, ListPrincipals,
//! DeletePrincipal, RotatePrincipalToken) and `keygate whoami` (WhoAmI).

use std::io::Write as _;

use super::output::{self, Output, Printable as _};
use super::{CliError, Common, Ctx, Paging, warn_shown_once};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct PrincipalCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: PrincipalVerb,
}

#[derive(clap::Subcommand, Debug)]
pub enum PrincipalVerb {
    /// Create a principal and print its token (shown only this once).
    Create {
        /// [a-z0-9_-], at most 64.
        #[arg(long)]
        name: String,
        /// admin, viewer, provider or developer.
        #[arg(long)]
        role: String,
        /// The owner a provider or developer acts for.
        #[arg(long, default_value = "")]
        owner: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A client-certificate subject that authenticates as this principal on an
        /// mTLS admin listener, without a token (e.g. "CN=ci-deployer,O=acme").
        #[arg(long, default_value = "")]
        cert_subject: String,
    },
    /// Show one principal.
    Get { name: String },
    /// List principals.
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Delete a principal: its token stops working.
    Delete { name: String },
    /// Give a principal a new token (printed once); the old one stops working.
    Rotate { name: String },
}

#[derive(clap::Args, Debug)]
pub struct WhoAmICmd {
    #[command(flatten)]
    pub common: Common,
}

fn print_token(ctx: &Ctx, r: pb::CreatePrincipalResponse) -> Result<(), CliError> {
    let p = r.principal.unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match ctx.output() {
        Output::Json => output::json_out(
            &mut out,
            &serde_json::json!({"principal": p.json(), "token": r.token}),
        )?,
        Output::Table => {
            let mut f = p.fields();
            f.push(("token", r.token.clone()));
            output::fields(&mut out, &f)?;
        }
    }
    out.flush()?;
    warn_shown_once("token is");
    Ok(())
}

pub async fn run(mut ctx: Ctx, verb: PrincipalVerb) -> Result<(), CliError> {
    match verb {
        PrincipalVerb::Create {
            name,
            role,
            owner,
            description,
            cert_subject,
        } => {
            let req = pb::CreatePrincipalRequest {
                principal: Some(pb::Principal {
                    name,
                    role,
                    owner,
                    description,
                    cert_subject,
                    ..Default::default()
                }),
            };
            let r = ctx
                .client()
                .await?
                .create_principal(req)
                .await?
                .into_inner();
            print_token(&ctx, r)
        }
        PrincipalVerb::Get { name } => {
            let p = ctx
                .client()
                .await?
                .get_principal(pb::GetPrincipalRequest { name })
                .await?
                .into_inner();
            ctx.one(&p)
        }
        PrincipalVerb::List { paging } => {
            ctx.list(&paging, |mut c, page_size, page_token| async move {
                let r = c
                    .list_principals(pb::ListPrincipalsRequest {
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.principals, r.next_page_token))
            })
            .await
        }
        PrincipalVerb::Delete { name } => {
            ctx.client()
                .await?
                .delete_principal(pb::DeletePrincipalRequest { name: name.clone() })
                .await?;
            ctx.deleted("principal", &name)
        }
        PrincipalVerb::Rotate { name } => {
            let r = ctx
                .client()
                .await?
                .rotate_principal_token(pb::RotatePrincipalTokenRequest { name })
                .await?
                .into_inner();
            print_token(&ctx, r)
        }
    }
}

pub async fn whoami(mut ctx: Ctx) -> Result<(), CliError> {
    let p = ctx
        .client()
        .await?
        .who_am_i(pb::WhoAmIRequest {})
        .await?
        .into_inner();
    ctx.one(&p)
}
