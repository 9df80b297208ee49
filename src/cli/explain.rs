//! `keygate explain`: why Check would allow or deny a request, step by step.
//!
//! Owns: the curl-like description of a request on the command line (`-X`, a URL,
//! `-H`, `--data`), the route's stage and API as the proxy would name them, and
//! printing the server's trace. Nothing is recorded: the nonce is looked up, not
//! spent.

use std::io::Write as _;
use std::path::PathBuf;

use prost_types::Timestamp;
use serde_json::json;

use super::time::parse_ts;
use super::{CliError, Common, Ctx};
use crate::cli::output::{self, Output};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct ExplainCmd {
    #[command(flatten)]
    pub common: Common,
    /// The URL as the client sent it: https://host/path?query (or /path?query with
    /// a Host header).
    pub url: String,
    /// The method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// A request header, `Name: value` (repeatable, in the order sent).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The body, as the proxy passes it to keygate.
    #[arg(long, short = 'd', conflicts_with = "data_file")]
    pub data: Option<String>,
    /// The body, read from a file.
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
    /// The stage the proxy's route names (Envoy context_extensions `stage`).
    #[arg(long)]
    pub stage: Option<String>,
    /// The API the proxy's route names (id or name).
    #[arg(long)]
    pub api: Option<String>,
    /// Decide as of this time (RFC 3339), e.g. when the request was logged.
    #[arg(long, value_name = "RFC3339", value_parser = parse_ts)]
    pub at: Option<Timestamp>,
}

fn header(h: &str) -> Result<pb::HttpHeader, CliError> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| CliError::Usage(format!("--header '{h}' is not 'Name: value'")))?;
    Ok(pb::HttpHeader {
        name: name.trim().to_owned(),
        value: value.trim_start().to_owned(),
    })
}

pub async fn run(mut ctx: Ctx, cmd: ExplainCmd) -> Result<(), CliError> {
    let body = match (&cmd.data, &cmd.data_file) {
        (Some(d), _) => Some(d.clone().into_bytes()),
        (None, Some(p)) => {
            Some(std::fs::read(p).map_err(|e| CliError::Usage(format!("{}: {e}", p.display())))?)
        }
        (None, None) => None,
    };
    let req = pb::ExplainRequest {
        method: cmd.method.clone(),
        url: cmd.url.clone(),
        headers: cmd
            .headers
            .iter()
            .map(|h| header(h))
            .collect::<Result<_, _>>()?,
        body,
        stage: cmd.stage.clone().unwrap_or_default(),
        api: cmd.api.clone().unwrap_or_default(),
        at: cmd.at,
        ..Default::default()
    };
    let e = ctx.client().await?.explain(req).await?.into_inner();
    let mut out = std::io::stdout().lock();
    match ctx.output() {
        Output::Json => {
            let steps: Vec<serde_json::Value> = e
                .steps
                .iter()
                .map(|s| json!({"step": s.step, "outcome": s.outcome, "detail": s.detail}))
                .collect();
            let set: Vec<serde_json::Value> = e
                .headers_to_set
                .iter()
                .map(|h| json!({"name": h.name, "value": h.value}))
                .collect();
            output::json_out(
                &mut out,
                &json!({
                    "allowed": e.allowed,
                    "code": e.code,
                    "message": e.message,
                    "app_id": e.app_id,
                    "app_key": e.app_key,
                    "api_id": e.api_id,
                    "stage": e.stage,
                    "scheme": e.scheme,
                    "steps": steps,
                    "headers_to_set": set,
                    "headers_to_remove": e.headers_to_remove,
                }),
            )?;
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = e
                .steps
                .iter()
                .map(|s| vec![s.outcome.clone(), s.step.clone(), s.detail.clone()])
                .collect();
            output::table(&mut out, &["OUTCOME", "STEP", "DETAIL"], &rows)?;
            if e.allowed {
                writeln!(
                    out,
                    "ALLOWED: app {} (key {}) calls API {} in stage {} ({})",
                    e.app_id, e.app_key, e.api_id, e.stage, e.scheme
                )?;
                for h in &e.headers_to_set {
                    writeln!(out, "  upstream header {}: {}", h.name, h.value)?;
                }
            } else {
                writeln!(out, "DENIED: {}: {}", e.code, e.message)?;
            }
        }
    }
    Ok(out.flush()?)
}
