//! The admin CLI: `keygate app|key|group|api|grant|audit <verb>`, one verb per admin
//! RPC (Backup has its own `keygate backup`), and `keygate completions`.
//!
//! Owns: the clap types shared by every family (connection and `--output`, paging,
//! tags, secrets read from a file or the environment), the dispatch, and the exit
//! codes. Each family's verbs live in their own file; `output` prints, `connect`
//! reaches the listener, `time` reads and writes times.

use std::io::{Read as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use zeroize::Zeroizing;

use crate::cli::connect::{Admin, AdminConn, ConnError, status_line};
use crate::cli::output::{Output, Printable};

pub mod apis;
pub mod apps;
pub mod connect;
pub mod declarative;
pub mod explain;
pub mod file;
pub mod grants;
pub mod groups;
pub mod keys;
pub mod output;
pub mod principals;
pub mod requests;
pub mod stages;
pub mod time;

/// The `--help` text every family ends with.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the server refused the call; stderr has one line with the gRPC code and the
     server's message, which names the field (INVALID_ARGUMENT: App.name: ...),
     also NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, UNAUTHENTICATED
  2  usage error: bad or missing flags, no admin token, an unreadable file
  3  the admin listener could not be reached (connection refused, TLS, address)

The token is read from KEYGATE_ADMIN_TOKEN, else from --admin-token-file
(KEYGATE_ADMIN_TOKEN_FILE); a fresh data dir keeps it in keygate-data/admin.token.";

/// The admin verbs, flattened into the binary's top-level commands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Apps: identities that call APIs, each created with a default key pair.
    #[command(after_long_help = EXIT_CODES)]
    App(apps::AppCmd),
    /// Key pairs (AppKey and AppSecret) of an app.
    #[command(after_long_help = EXIT_CODES)]
    Key(keys::KeyCmd),
    /// Groups: sets of APIs granted together.
    #[command(after_long_help = EXIT_CODES)]
    Group(groups::GroupCmd),
    /// APIs: the operations behind the proxy (route, accepted schemes, checks).
    #[command(after_long_help = EXIT_CODES)]
    Api(apis::ApiCmd),
    /// Grants: an app may call an API, or every API of a group.
    #[command(after_long_help = EXIT_CODES)]
    Grant(grants::GrantCmd),
    /// The audit log of admin writes.
    #[command(after_long_help = EXIT_CODES)]
    Audit(grants::AuditCmd),
    /// Write every app, key pair, group, API and grant as a configuration file
    /// (YAML, `version: keygate/v1`; never a secret).
    #[command(after_long_help = EXIT_CODES)]
    Export(declarative::ExportCmd),
    /// Make the store match a configuration file, in one all-or-nothing change:
    /// shows the changes, then applies them (`--prune` also deletes, `--dry-run`
    /// changes nothing). A second apply of the same file changes nothing.
    #[command(after_long_help = EXIT_CODES)]
    Apply(declarative::ApplyCmd),
    /// Show what `apply` would change.
    #[command(after_long_help = EXIT_CODES)]
    Diff(declarative::DiffCmd),
    /// Why Check would allow or deny a request: every step of the pipeline.
    #[command(after_long_help = EXIT_CODES)]
    Explain(explain::ExplainCmd),
    /// Permission requests: a developer applies, a provider approves or rejects.
    #[command(after_long_help = EXIT_CODES)]
    Request(requests::RequestCmd),
    /// The stages an owner's grants may name.
    #[command(after_long_help = EXIT_CODES)]
    Stages(stages::StagesCmd),
    /// Admin principals: named identities with a role and their own token.
    #[command(after_long_help = EXIT_CODES)]
    Principal(principals::PrincipalCmd),
    /// Who the admin token in use belongs to.
    #[command(name = "whoami", after_long_help = EXIT_CODES)]
    WhoAmI(principals::WhoAmICmd),
}

/// Options of every admin verb; `global` so they may come before or after the verb.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    #[command(flatten)]
    pub conn: AdminConn,
    /// How to print the result: aligned columns, or the proto messages as JSON.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// Paging of a list verb.
#[derive(clap::Args, Debug, Clone)]
pub struct Paging {
    /// Items per page (at most 1000; the server's default is 100).
    #[arg(long, value_name = "N")]
    pub page_size: Option<i32>,
    /// Continue a previous list from its next-page token.
    #[arg(long, value_name = "TOKEN", conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Follow the next-page tokens and print every item.
    #[arg(long)]
    pub all: bool,
}

/// `keygate completions SHELL`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// bash, zsh, fish (also elvish, powershell).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// A custom secret for a key pair, from a file or a variable: never a flag's value,
/// which would sit in the shell history and in `ps`.
#[derive(clap::Args, Debug, Clone)]
pub struct SecretSource {
    /// Read the AppSecret from this file (`-`: standard input); one trailing newline
    /// is removed. Default: the server generates one.
    #[arg(long, value_name = "PATH", conflicts_with = "secret_env")]
    pub secret_file: Option<PathBuf>,
    /// Read the AppSecret from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
}

impl SecretSource {
    /// The secret, or empty when none was given (the server then generates one).
    pub fn read(&self) -> Result<Zeroizing<String>, CliError> {
        let mut text = Zeroizing::new(String::new());
        if let Some(path) = &self.secret_file {
            let io = |e: std::io::Error| CliError::Usage(format!("{}: {e}", path.display()));
            if path.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text).map_err(io)?;
            } else {
                text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
            }
        } else if let Some(var) = &self.secret_env {
            text = Zeroizing::new(std::env::var(var).map_err(|_| {
                CliError::Usage(format!("the environment variable {var} is not set"))
            })?);
        } else {
            return Ok(text);
        }
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        let secret = Zeroizing::new(trimmed.to_owned());
        if secret.is_empty() {
            return Err(CliError::Usage("the secret given is empty".into()));
        }
        Ok(secret)
    }
}

/// `key=value` of `--tag`.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not key=value")),
    }
}

/// Why a verb failed; each kind has its own exit code (see `EXIT_CODES`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{}", status_line(.0))]
    Refused(tonic::Status),
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Refused(s)
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) | CliError::Output(_) => 1,
            CliError::Usage(_) | CliError::Conn(ConnError::Usage(_) | ConnError::Io { .. }) => 2,
            CliError::Conn(ConnError::Connect { .. }) => 3,
        }
    }
}

/// What a verb works with: the options and a client made on first use (so a verb's
/// local checks fail as usage errors even when the listener is down).
pub struct Ctx {
    common: Common,
    client: Option<Admin>,
}

impl Ctx {
    pub fn new(common: Common) -> Self {
        Self {
            common,
            client: None,
        }
    }

    pub fn output(&self) -> Output {
        self.common.output
    }

    pub async fn client(&mut self) -> Result<Admin, CliError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = self.common.conn.connect().await?;
        self.client = Some(c.clone());
        Ok(c)
    }

    pub fn one<T: Printable>(&self, item: &T) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        output::one(&mut out, self.output(), item)?;
        Ok(out.flush()?)
    }

    pub fn many<T: Printable>(&self, items: &[T]) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        output::many(&mut out, self.output(), items)?;
        Ok(out.flush()?)
    }

    /// A delete's result: `{}` (google.protobuf.Empty) or a line saying what went.
    pub fn deleted(&self, kind: &str, id: &str) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        match self.output() {
            Output::Json => output::json_out(&mut out, &serde_json::json!({}))?,
            Output::Table => writeln!(out, "deleted {kind} {id}")?,
        }
        Ok(out.flush()?)
    }

    /// Prints every page (`--all`) or one, then where the next page starts.
    /// `fetch(client, page_size, page_token)` is one list call.
    pub async fn list<T, F, Fut>(&mut self, paging: &Paging, mut fetch: F) -> Result<(), CliError>
    where
        T: Printable,
        F: FnMut(Admin, i32, String) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
    {
        let client = self.client().await?;
        // --all wants every item: the largest page means the fewest calls.
        let size = paging
            .page_size
            .unwrap_or(if paging.all { 1000 } else { 0 });
        let mut token = paging.page_token.clone().unwrap_or_default();
        let mut items = Vec::new();
        loop {
            let (page, next) = fetch(client.clone(), size, token.clone()).await?;
            items.extend(page);
            // A token that does not move would loop forever.
            if !paging.all || next.is_empty() || next == token {
                token = next;
                break;
            }
            token = next;
        }
        self.many(&items)?;
        if !paging.all && !token.is_empty() {
            eprintln!("keygate: more items: add --page-token {token} (or --all)");
        }
        Ok(())
    }
}

/// A warning that a secret on stdout will not be shown again (`what` names it, with
/// its verb: "AppSecret is").
pub fn warn_shown_once(what: &str) {
    eprintln!("keygate: warning: the {what} shown only this once and cannot be read back later");
}

/// Runs one admin verb to completion and maps the outcome to an exit code.
pub fn run(cmd: AdminCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return report(&CliError::Output(e)),
    };
    let result = runtime.block_on(async move {
        match cmd {
            AdminCommand::App(a) => apps::run(Ctx::new(a.common), a.verb).await,
            AdminCommand::Key(k) => keys::run(Ctx::new(k.common), k.verb).await,
            AdminCommand::Group(g) => groups::run(Ctx::new(g.common), g.verb).await,
            AdminCommand::Api(a) => apis::run(Ctx::new(a.common), a.verb).await,
            AdminCommand::Grant(g) => grants::run_grant(Ctx::new(g.common), g.verb).await,
            AdminCommand::Audit(a) => grants::run_audit(Ctx::new(a.common), a.verb).await,
            AdminCommand::Export(e) => declarative::export(Ctx::new(e.common.clone()), e).await,
            AdminCommand::Apply(a) => declarative::apply(Ctx::new(a.common.clone()), a).await,
            AdminCommand::Diff(d) => declarative::diff(Ctx::new(d.common.clone()), d).await,
            AdminCommand::Explain(e) => explain::run(Ctx::new(e.common.clone()), e).await,
            AdminCommand::Request(r) => requests::run(Ctx::new(r.common), r.verb).await,
            AdminCommand::Stages(s) => stages::run(Ctx::new(s.common), s.verb).await,
            AdminCommand::Principal(p) => principals::run(Ctx::new(p.common), p.verb).await,
            AdminCommand::WhoAmI(w) => principals::whoami(Ctx::new(w.common)).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

fn report(e: &CliError) -> ExitCode {
    eprintln!("keygate: error: {e}");
    ExitCode::from(e.exit_code())
}

/// `keygate completions SHELL`: the completion script for the whole `cmd` tree.
pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "keygate", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&CliError::Output(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_need_a_key() {
        assert_eq!(
            parse_tag("env=prod").unwrap(),
            ("env".into(), "prod".into())
        );
        assert_eq!(parse_tag("k=").unwrap(), ("k".into(), String::new()));
        assert_eq!(parse_tag("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_tag("=v").is_err());
        assert!(parse_tag("novalue").is_err());
    }
}
