//! `keygate export`, `keygate diff -f FILE` and `keygate apply -f FILE`.
//!
//! Owns: reading and writing configuration files (`file`) around the admin API's
//! `Export` and `Apply`, and printing a plan: `+ create`, `~ update`, `- delete`, one
//! line each. Apply shows the plan, then makes it true in one transaction on the
//! server; the secrets it generates are printed once.

use std::io::Write as _;
use std::path::PathBuf;

use serde_json::json;

use super::file::{self, file_error};
use super::{CliError, Common, Ctx, warn_shown_once};
use crate::cli::output::{self, Output};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct ExportCmd {
    #[command(flatten)]
    pub common: Common,
    /// Write to this file (it must not exist) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ApplyCmd {
    #[command(flatten)]
    pub common: Common,
    /// The configuration file (`-`: standard input).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// Also delete what the file does not describe.
    #[arg(long)]
    pub prune: bool,
    /// Show what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args, Debug)]
pub struct DiffCmd {
    #[command(flatten)]
    pub common: Common,
    /// The configuration file (`-`: standard input).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// Include what `apply --prune` would delete.
    #[arg(long)]
    pub prune: bool,
}

pub async fn export(mut ctx: Ctx, cmd: ExportCmd) -> Result<(), CliError> {
    let config = ctx
        .client()
        .await?
        .export(pb::ExportRequest {})
        .await?
        .into_inner();
    let text = file::render(&file::from_config(&config))?;
    match &cmd.out {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            Ok(out.flush()?)
        }
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
            f.write_all(text.as_bytes())?;
            eprintln!(
                "keygate: wrote {} apps, {} key pairs, {} groups, {} APIs, {} grants to {}",
                config.apps.len(),
                config.key_pairs.len(),
                config.groups.len(),
                config.apis.len(),
                config.grants.len(),
                path.display()
            );
            Ok(())
        }
    }
}

/// The file as a `Config`, with errors pointing at its lines; and its text, to
/// point the server's errors at their lines too.
fn read(path: &PathBuf) -> Result<(pb::Config, String, String), CliError> {
    let name = path.display().to_string();
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CliError::Usage(format!("standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("{name}: {e}")))?
    };
    let parsed = file::parse(&name, &text)?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let config = file::to_config(&name, &text, &parsed, &base)?;
    Ok((config, text, name))
}

async fn call(
    ctx: &mut Ctx,
    req: pb::ApplyRequest,
    text: &str,
    name: &str,
) -> Result<pb::ApplyResponse, CliError> {
    match ctx.client().await?.apply(req).await {
        Ok(r) => Ok(r.into_inner()),
        Err(s) if s.code() == tonic::Code::InvalidArgument => Err(file_error(
            name,
            file::locate_error(text, s.message()),
            s.message(),
        )),
        Err(s) => Err(s.into()),
    }
}

/// One line per change; `planned`: ids the server made up are only placeholders.
fn print_changes(
    out: &mut dyn std::io::Write,
    changes: &[pb::ApplyChange],
    planned: bool,
) -> std::io::Result<()> {
    if changes.is_empty() {
        return writeln!(out, "no changes: the store matches the file");
    }
    for c in changes {
        let mark = match c.action.as_str() {
            "create" => '+',
            "delete" => '-',
            _ => '~',
        };
        let id = if planned && c.new_id {
            "(new id)"
        } else {
            c.id.as_str()
        };
        writeln!(out, "{mark} {} {} {id}: {}", c.action, c.kind, c.detail)?;
    }
    Ok(())
}

fn changes_json(changes: &[pb::ApplyChange]) -> serde_json::Value {
    changes
        .iter()
        .map(|c| {
            json!({
                "action": c.action,
                "kind": c.kind,
                "id": c.id,
                "new_id": c.new_id,
                "detail": c.detail,
            })
        })
        .collect()
}

pub async fn diff(mut ctx: Ctx, cmd: DiffCmd) -> Result<(), CliError> {
    let (config, text, name) = read(&cmd.file)?;
    let req = pb::ApplyRequest {
        config: Some(config),
        prune: cmd.prune,
        dry_run: true,
    };
    let plan = call(&mut ctx, req, &text, &name).await?;
    let mut out = std::io::stdout().lock();
    match ctx.output() {
        Output::Json => {
            output::json_out(&mut out, &json!({"changes": changes_json(&plan.changes)}))?
        }
        Output::Table => print_changes(&mut out, &plan.changes, true)?,
    }
    Ok(out.flush()?)
}

pub async fn apply(mut ctx: Ctx, cmd: ApplyCmd) -> Result<(), CliError> {
    let (config, text, name) = read(&cmd.file)?;
    let json = ctx.output() == Output::Json;
    let mut req = pb::ApplyRequest {
        config: Some(config),
        prune: cmd.prune,
        dry_run: true,
    };
    if !json {
        // The plan first, so the operator reads what is about to change. The apply
        // below re-plans under the server's writer lock and reports what it did.
        let plan = call(&mut ctx, req.clone(), &text, &name).await?;
        let mut out = std::io::stdout().lock();
        print_changes(&mut out, &plan.changes, true)?;
        out.flush()?;
        if cmd.dry_run || plan.changes.is_empty() {
            if cmd.dry_run {
                eprintln!("keygate: dry run: nothing changed");
            }
            return Ok(());
        }
    }
    req.dry_run = cmd.dry_run;
    let done = call(&mut ctx, req, &text, &name).await?;
    let mut out = std::io::stdout().lock();
    if json {
        let secrets: Vec<serde_json::Value> = done
            .created_key_pairs
            .iter()
            .map(|k| json!({"app_key": k.app_key, "app_id": k.app_id, "app_secret": k.app_secret}))
            .collect();
        let codes: Vec<serde_json::Value> = done
            .created_apps
            .iter()
            .map(|a| json!({"app_id": a.id, "app_code": a.app_code}))
            .collect();
        output::json_out(
            &mut out,
            &json!({
                "applied": done.applied,
                "changes": changes_json(&done.changes),
                "created_key_pairs": secrets,
                "created_apps": codes,
            }),
        )?;
    } else {
        let count = |a: &str| done.changes.iter().filter(|c| c.action == a).count();
        writeln!(
            out,
            "applied: {} created, {} updated, {} deleted",
            count("create"),
            count("update"),
            count("delete")
        )?;
        for c in done.changes.iter().filter(|c| c.new_id) {
            writeln!(out, "created {} {}", c.kind, c.id)?;
        }
        for k in &done.created_key_pairs {
            writeln!(
                out,
                "key pair {} of app {}: AppSecret {}",
                k.app_key, k.app_id, k.app_secret
            )?;
        }
        for a in &done.created_apps {
            writeln!(out, "app {}: AppCode {}", a.id, a.app_code)?;
        }
    }
    out.flush()?;
    if !done.created_key_pairs.is_empty() || !done.created_apps.is_empty() {
        warn_shown_once("AppSecrets and AppCodes above are");
    }
    Ok(())
}
