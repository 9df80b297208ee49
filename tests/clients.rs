//! Runs the Python client tests (`tests/python`: a client generated from proto/, and
//! grpcurl through reflection) against the binary cargo just built, so `cargo test`
//! covers them too.
//!
//! The interpreter: `KEYGATE_PYTHON`, else `.venv/bin/python` (what scripts/test.sh
//! sets up), else `python3`. Without the Python packages the test fails under `CI=true`
//! and, on a bare developer machine, warns loudly and passes, so that `cargo test` still
//! works there; `./scripts/test.sh` is the command that runs everything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::in_ci;

fn python(root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("KEYGATE_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = root.join(".venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

#[test]
fn python_clients() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = python(root);

    let probe = Command::new(&py)
        .args(["-c", "import grpc, grpc_tools, pytest"])
        .output();
    let missing = match &probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned(),
        ),
        Err(e) => Some(format!("cannot run {}: {e}", py.display())),
    };
    if let Some(why) = missing {
        let msg = format!(
            "the Python client tests need grpcio, grpcio-tools and pytest in {} ({why}); \
             run ./scripts/test.sh, which sets up .venv (or point KEYGATE_PYTHON at a \
             Python that has them)",
            py.display()
        );
        if in_ci() {
            panic!("CI=true: {msg}");
        }
        eprintln!(
            "\n{bar}\nWARNING: SKIPPING the Python client tests: {msg}\n{bar}\n",
            bar = "!".repeat(78)
        );
        return;
    }

    let out = Command::new(&py)
        // Options (no cache dir, report skips) are in tests/python/pytest.ini.
        .args(["-m", "pytest", "-q", "tests/python"])
        .current_dir(root)
        .env("KEYGATE_BIN", env!("CARGO_BIN_EXE_keygate"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} -m pytest: {e}", py.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "pytest tests/python failed ({}):\n{text}",
        out.status
    );
}
