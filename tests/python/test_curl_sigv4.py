"""Real `curl --aws-sigv4` against keygate: curl signs and sends to a capture server
run by the test, and the captured request (method, raw path and query, headers, body)
goes to the Check listener the way Envoy would describe it.

curl 7.88 signs the path and query exactly as on the wire, unsorted (AWS's canonical
request sorts them), so the unsorted query below is allowed only because keygate also
tries the raw query, as its SigV4 verifier does for such clients."""

from __future__ import annotations

import http.server
import subprocess
import threading
import uuid
from dataclasses import dataclass, field

import pytest

from conftest import (
    GRPC_UNAUTHENTICATED,
    TOOL_TIMEOUT_S,
    assert_allowed,
    assert_denied,
    create_api,
    create_caller,
    header_values,
    tool,
    unique,
)

REGION, SERVICE = "us-east-1", "execute-api"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
QUERY = "b=2&a=1&c=x%20y"


@dataclass
class Captured:
    method: str
    target: str  # raw request target, path?query as on the wire
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class CaptureServer:
    """HTTP/1.1 server on 127.0.0.1:0 that records every request and answers 200."""

    def __init__(self):
        self.requests: dict[str, Captured] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.requests[self.path.split("?", 1)[0]] = Captured(
                    self.command, self.path, list(self.headers.items()), body
                )
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = do_PUT = _record

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def capture():
    server = CaptureServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def curl():
    return tool("curl")


@pytest.fixture(scope="module")
def prefix():
    return "/" + unique("curl")


@pytest.fixture(scope="module", params=["listed", "default"])
def setup(request, admin, prefix):
    """An API accepting SigV4 (listed with its region/service, or by the default empty
    list), an app granted on it, and a custom AKIDEXAMPLE-style key pair of that app."""
    if request.param == "listed":
        api = create_api(
            admin, f"{prefix}/listed/v1/items", auth_schemes=[admin.res.SIGV4],
            sigv4_region=REGION, sigv4_service=SERVICE,
        )
    else:
        api = create_api(admin, f"{prefix}/default/v1/items")
    who = create_caller(admin, api)
    key = admin.CreateKeyPair(
        admin.svc.CreateKeyPairRequest(
            app_id=who.app.id,
            app_key="AKIDEXAMPLE" + uuid.uuid4().hex[:12].upper(),
            app_secret=SECRET,
        )
    )
    assert key.app_secret == SECRET and not key.is_default
    return api, who, key


def send_with_curl(curl, capture, key, path: str, post: bool) -> Captured:
    url = f"http://127.0.0.1:{capture.port}{path}?{QUERY}"
    cmd = [curl, "-sS", "--fail", "--max-time", "10",
           "--aws-sigv4", f"aws:amz:{REGION}:{SERVICE}", "--user", f"{key.app_key}:{SECRET}"]
    if post:
        cmd += ["-H", "Content-Type: application/json", "-d", '{"hello":"world"}']
    r = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert r.returncode == 0 and r.stdout == "ok", f"curl failed ({r.returncode}):\n{r.stderr}"
    got = capture.requests.pop(path)
    assert got.target == f"{path}?{QUERY}", "curl sent the query as given"
    names = {n.lower() for n, _ in got.headers}
    assert {"authorization", "x-amz-date", "host"} <= names, got.headers
    return got


def as_envoy(got: Captured) -> tuple[str, dict[str, str]]:
    """Envoy's view of an HTTP/1.1 request: Host becomes :authority, names lower-case."""
    headers = {n.lower(): v for n, v in got.headers}
    return headers.pop("host"), headers


@pytest.mark.parametrize("post", [False, True], ids=["GET-unsorted-query", "POST-json"])
def test_curl_aws_sigv4_request_is_allowed(check, capture, curl, setup, post):
    api, who, key = setup
    got = send_with_curl(curl, capture, key, api.path, post)
    authority, headers = as_envoy(got)
    assert headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={key.app_key}/"
    ), headers["authorization"]
    if post:
        assert got.body == b'{"hello":"world"}'
        assert "content-type" in headers["authorization"].split("SignedHeaders=")[1]
    resp = check(got.method, got.target, headers, authority=authority,
                 body=got.body if post else None)
    ok = assert_allowed(resp)
    ids = header_values(ok.headers)
    assert ids["x-keygate-app-id"] == who.app.id
    assert ids["x-keygate-app-key"] == key.app_key
    assert ids["x-keygate-api-id"] == api.id
    assert ids["x-keygate-scheme"] == "sigv4"
    assert "authorization" in ok.headers_to_remove


@pytest.mark.parametrize("part", ["query", "body", "secret"])
def test_curl_request_altered_after_signing_is_denied(check, capture, curl, setup, part):
    api, _, key = setup
    got = send_with_curl(curl, capture, key, api.path, post=True)
    authority, headers = as_envoy(got)
    target, body = got.target, got.body
    if part == "query":
        target = target.replace("a=1", "a=2", 1)
    elif part == "body":
        body = body.replace(b"world", b"worle")
    else:
        # A request signed by someone who knows the key id but not the secret.
        sig = headers["authorization"].rsplit("Signature=", 1)[1]
        headers["authorization"] = headers["authorization"].replace(sig, "0" * len(sig))
    resp = check(got.method, target, headers, authority=authority, body=body)
    assert_denied(resp, "SignatureMismatch", 401, GRPC_UNAUTHENTICATED)
