"""Fixtures for the client tests: a real keygate process and the tools the tests drive.

A missing tool (the binary, a Python package, grpcurl) skips the tests that need it on a
developer's machine, and fails them under CI=true: CI must never pass by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
TOKEN = "py-e2e-admin-token-0123456789abcdef"
# Hang guard for start and stop; only a hang ever reaches it.
DEADLINE_S = 30.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """A prerequisite is missing: fail under CI, skip elsewhere."""
    msg = f"{what} (run ./scripts/test.sh to set up .venv and the tools)"
    if in_ci():
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


def need_module(name: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is None:
        missing(f"Python module '{name}' (pip package {package}) is not installed")


def tool(name: str) -> str:
    """Path of a command-line tool, looked up next to this Python first (a venv's bin/
    is not on PATH when its python is run directly), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        missing(f"'{name}' is not installed")
    return found  # type: ignore[return-value]


@dataclass
class Server:
    check: str
    http: str
    admin: str
    token: str
    data_dir: Path
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]


def keygate_bin() -> Path:
    path = Path(os.environ.get("KEYGATE_BIN", ROOT / "target" / "debug" / "keygate"))
    if not path.is_file():
        missing(f"keygate binary {path} not found (cargo build, or set KEYGATE_BIN)")
    return path


@pytest.fixture(scope="session")
def keygate():
    """One keygate process for the session, on port 0, with a temporary data dir."""
    binary = keygate_bin()
    with tempfile.TemporaryDirectory(prefix="keygate-py-") as tmp:
        tmp = Path(tmp)
        ready = tmp / "ready.json"
        stderr_path = tmp / "stderr.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
        env.pop("RUST_LOG", None)
        env.update(KEYGATE_ADMIN_TOKEN=TOKEN, KEYGATE_LOG="info")
        with open(stderr_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    str(binary), "serve",
                    "--data-dir", str(tmp / "data"),
                    "--check-addr", "127.0.0.1:0",
                    "--http-addr", "127.0.0.1:0",
                    "--admin-addr", "127.0.0.1:0",
                    "--ready-file", str(ready),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        try:
            start = time.monotonic()
            while not ready.exists():
                if proc.poll() is not None:
                    pytest.fail(
                        f"keygate exited ({proc.returncode}) before it was ready:\n"
                        + stderr_path.read_text(errors="replace"),
                        pytrace=False,
                    )
                if time.monotonic() - start > DEADLINE_S:
                    pytest.fail(
                        "keygate wrote no ready file in time:\n"
                        + stderr_path.read_text(errors="replace"),
                        pytrace=False,
                    )
                time.sleep(0.01)
            # Written to a temp file and renamed by the server: complete once it exists.
            addrs = json.loads(ready.read_text())
            yield Server(
                check=addrs["check"],
                http=addrs["http"],
                admin=addrs["admin"],
                token=TOKEN,
                data_dir=tmp / "data",
                stderr_path=stderr_path,
            )
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=DEADLINE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
