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


def launch_keygate(tmp: Path, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, Server]:
    """Starts the keygate binary on port 0 with its data dir in `tmp` and waits for its
    ready file; fails the test (stopping the process) if it exits or hangs first."""
    binary = keygate_bin()
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
                *extra_args,
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
    except BaseException:
        stop_keygate(proc)
        raise
    # Written to a temp file and renamed by the server: complete once it exists.
    addrs = json.loads(ready.read_text())
    return proc, Server(
        check=addrs["check"],
        http=addrs["http"],
        admin=addrs["admin"],
        token=TOKEN,
        data_dir=tmp / "data",
        stderr_path=stderr_path,
    )


def stop_keygate(proc: subprocess.Popen) -> None:
    """SIGTERM by PID, SIGKILL if it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def keygate():
    """One keygate process for the session, on port 0, with a temporary data dir."""
    with tempfile.TemporaryDirectory(prefix="keygate-py-") as tmp:
        proc, server = launch_keygate(Path(tmp))
        try:
            yield server
        finally:
            stop_keygate(proc)


# === shared by the client and check tests: the admin client generated from proto/ ===

RPC_TIMEOUT_S = 10
TOOL_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """Generates the Python client from proto/ with grpc_tools.protoc and imports it:
    (resources_pb2, service_pb2, service_pb2_grpc)."""
    import importlib

    need_module("grpc", "grpcio")
    need_module("grpc_tools", "grpcio-tools")
    out = tmp_path_factory.mktemp("generated")
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "keygate/admin/v1/resources.proto",
        "keygate/admin/v1/service.proto",
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert r.returncode == 0, f"protoc failed:\n{r.stdout}\n{r.stderr}"
    sys.path.insert(0, str(out))
    try:
        resources = importlib.import_module("keygate.admin.v1.resources_pb2")
        service = importlib.import_module("keygate.admin.v1.service_pb2")
        service_grpc = importlib.import_module("keygate.admin.v1.service_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return resources, service, service_grpc


class Admin:
    """The generated admin client with the token and a timeout on every call:
    `admin.CreateApp(admin.svc.CreateAppRequest(...))`. `admin.res` holds the resource
    messages, `admin.svc` the request messages."""

    def __init__(self, stub, resources, service, auth):
        self._stub = stub
        self._auth = auth
        self.res = resources
        self.svc = service

    def __getattr__(self, rpc: str):
        method = getattr(self._stub, rpc)
        return lambda request: method(request, metadata=self._auth, timeout=RPC_TIMEOUT_S)


@pytest.fixture(scope="session")
def admin(keygate, generated):
    import grpc

    resources, service, service_grpc = generated
    with grpc.insecure_channel(keygate.admin) as channel:
        yield Admin(service_grpc.AdminStub(channel), resources, service, keygate.auth)


# === the Envoy Check front door, driven with the envoy-data-plane client ===

GRPC_OK = 0
GRPC_INVALID_ARGUMENT = 3
GRPC_PERMISSION_DENIED = 7
GRPC_UNAUTHENTICATED = 16


class Checker:
    """Sends `envoy.service.auth.v3.Authorization/Check` with envoy-data-plane's
    grpclib stub (it takes a deadline; the sync stub cannot)."""

    def __init__(self, addr: str):
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)

    def __call__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        *,
        authority: str = "api.example.com",
        body: bytes | None = None,
        context_extensions: dict[str, str] | None = None,
        pack_as_bytes: bool = True,
        partial: bool = False,
    ):
        """Asks keygate about one request as Envoy would describe it: lower-case header
        keys, the pseudo-headers, the raw path with its query, and (when `body` is given)
        the body in raw_body (or, without `pack_as_bytes`, in the string field `body`)
        with `x-envoy-auth-partial-body` set to `partial`."""
        import asyncio

        from envoy_data_plane.envoy.service.auth.v3 import (
            AttributeContext,
            AttributeContextHttpRequest,
            AttributeContextRequest,
            AuthorizationAsyncStub,
            CheckRequest,
        )
        from grpclib.client import Channel

        hdrs = {k.lower(): v for k, v in headers.items()}
        hdrs.update({":authority": authority, ":method": method, ":path": target, ":scheme": "http"})
        if body is not None:
            hdrs["x-envoy-auth-partial-body"] = "true" if partial else "false"
            hdrs.setdefault("content-length", str(len(body)))
        http = AttributeContextHttpRequest(
            method=method,
            path=target,
            host=authority,
            scheme="http",
            protocol="HTTP/1.1",
            headers=hdrs,
            raw_body=(body or b"") if pack_as_bytes else b"",
            body="" if pack_as_bytes or body is None else body.decode(),
        )
        req = CheckRequest(
            attributes=AttributeContext(
                request=AttributeContextRequest(http=http),
                context_extensions=context_extensions or {},
            )
        )

        async def call():
            async with Channel(self.host, self.port) as ch:
                return await AuthorizationAsyncStub(ch).check(req, timeout=RPC_TIMEOUT_S)

        return asyncio.run(call())


@pytest.fixture(scope="session")
def check(keygate):
    need_module("envoy_data_plane", "envoy-data-plane")
    need_module("grpclib", "grpclib")
    return Checker(keygate.check)


def header_values(options) -> dict[str, str]:
    """HeaderValueOption list → {lower-case name: value}."""
    return {o.header.key.lower(): o.header.value for o in options}


def assert_allowed(resp):
    """An allow: gRPC OK and an ok_response; returns the ok_response."""
    # `status` must be present on the wire (an unset status is an allow by accident).
    assert resp.status is not None, f"status left unset: {resp}"
    code = resp.status.code
    denied = resp.denied_response
    assert code == GRPC_OK and resp.ok_response is not None, (
        f"expected an allow, got status {code} {resp.status.message!r}; "
        f"headers {header_values(denied.headers) if denied else None}; "
        f"body {denied.body if denied else None}"
    )
    return resp.ok_response


def assert_denied(resp, code: str, http: int, grpc_code: int) -> dict[str, str]:
    """A deny with the stable `code` on every channel: the gRPC status, the HTTP status,
    the x-keygate-error header and the JSON body. Returns the deny headers."""
    import json as _json

    assert resp.ok_response is None, f"expected {code}, got an allow: {resp.ok_response}"
    denied = resp.denied_response
    assert denied is not None and resp.status is not None, resp
    headers = header_values(denied.headers)
    got = (resp.status.code, int(denied.status.code), headers.get("x-keygate-error"))
    assert got == (grpc_code, http, code), (
        f"expected ({grpc_code}, {http}, {code}), got {got}: {resp.status.message!r} {headers}"
    )
    assert resp.status.message.startswith(f"{code}: "), resp.status.message
    body = _json.loads(denied.body)
    assert body["code"] == code, body
    assert body["request_id"] == headers["x-keygate-request-id"], (body, headers)
    return headers


# === building scenarios through the admin API ===


def unique(prefix: str) -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def timestamp_ms(ms: int):
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromMilliseconds(ms)
    return t


def now_ms() -> int:
    return int(time.time() * 1000)


def create_api(admin: Admin, path: str, **fields):
    """An API with a unique name (owner "e2e") on `path`; `fields` as in the Api message."""
    return admin.CreateApi(
        admin.svc.CreateApiRequest(
            api=admin.res.Api(name=unique("api"), owner="e2e", path=path, **fields)
        )
    )


@dataclass
class Caller:
    app: object
    key: object
    grant: object | None

    @property
    def app_key(self) -> str:
        return self.key.app_key

    @property
    def secret(self) -> str:
        return self.key.app_secret


def create_caller(
    admin: Admin,
    api=None,
    *,
    stages=("RELEASE",),
    grant_expires_ms: int | None = None,
    extend_info: str = "",
) -> Caller:
    """A new app (with its default key pair) and, when `api` is given, a grant on it."""
    created = admin.CreateApp(
        admin.svc.CreateAppRequest(
            app=admin.res.App(name=unique("app"), owner="e2e", extend_info=extend_info)
        )
    )
    grant = None
    if api is not None:
        g = admin.res.Grant(app_id=created.app.id, api_id=api.id, stages=list(stages))
        if grant_expires_ms is not None:
            g.expires_at.CopyFrom(timestamp_ms(grant_expires_ms))
        grant = admin.CreateGrant(admin.svc.CreateGrantRequest(grant=g))
    return Caller(app=created.app, key=created.key_pair, grant=grant)


def pytest_configure(config):
    # envoy-data-plane 2.2.0's generated code trips a pydantic 2.12 deprecation on import.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Using `@model_validator` with mode='after' on a classmethod:DeprecationWarning",
    )
