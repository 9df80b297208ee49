//! `keygate stages get|set`: the stages an owner's grants may name
//! (GetOwnerStages, SetOwnerStages).

use super::{CliError, Common, Ctx};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct StagesCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: StagesVerb,
}

#[derive(clap::Subcommand, Debug)]
pub enum StagesVerb {
    /// Show an owner's stages (the default set when it declared none).
    Get {
        #[arg(long)]
        owner: String,
    },
    /// Declare an owner's stages; grants naming any other are refused from now on.
    Set {
        #[arg(long)]
        owner: String,
        /// A stage (repeatable), e.g. RELEASE.
        #[arg(long = "stage", value_name = "STAGE", required = true)]
        stages: Vec<String>,
    },
}

pub async fn run(mut ctx: Ctx, verb: StagesVerb) -> Result<(), CliError> {
    let r = match verb {
        StagesVerb::Get { owner } => ctx
            .client()
            .await?
            .get_owner_stages(pb::GetOwnerStagesRequest { owner })
            .await?
            .into_inner(),
        StagesVerb::Set { owner, stages } => ctx
            .client()
            .await?
            .set_owner_stages(pb::SetOwnerStagesRequest { owner, stages })
            .await?
            .into_inner(),
    };
    ctx.one(&r)
}
