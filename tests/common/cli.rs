//! The `keygate` binary run as an operator runs its admin verbs: a subprocess with
//! the token in the environment, its output and exit code captured.

use std::process::Stdio;

use serde_json::Value;

use super::{Keygate, TOKEN, command};

/// What one CLI run printed.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "failed: {}{}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// `keygate <args>` with the token in the environment, as an operator would run it.
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = command()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run keygate");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `keygate <args> --admin-addr ADDR` (the connection flag after the verb, where the
/// global options may go too).
pub fn cli(kg: &Keygate, args: &[&str]) -> Out {
    let addr = kg.admin_addr().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--admin-addr", &addr]);
    run_env(&all, &[("KEYGATE_ADMIN_TOKEN", TOKEN)])
}

/// `cli` with `--output json`, expecting success.
#[track_caller]
pub fn json(kg: &Keygate, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    cli(kg, &all).json()
}
