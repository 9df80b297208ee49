"""A normalising echo upstream: what a real app behind the proxy does with a request.

Real upstreams (NGINX, a WSGI/CGI/PHP/Rack app, a Java servlet container) do not route
on the raw request target. Before they pick a handler they percent-decode the path,
resolve `.` and `..` segments, merge `//`, and some also treat `\\` as a separator and
drop `;params` from segments (servlet containers). Headers reach a CGI-style app as
`HTTP_<NAME>` with the name upper-cased and `-` turned into `_`, so `x-keygate-app-id`
and `X_Keygate_App_Id` are the same variable there.

This upstream does all of that at once (the union of what real ones do, so a test that
passes here passes against any of them) and answers every request 200 with JSON:

    {"served_path": <the path it would serve>, "raw_path": <as received>,
     "method": ..., "query": <raw query or "">, "host": <Host header or "">,
     "identity": {HTTP_X_KEYGATE_...: value, ...},   # every spelling, CGI-style
     "headers": [[name, value], ...]}                # as received

with `X-Echo: upstream` on the response, so a test can tell the upstream's answer from
the proxy's or keygate's. It speaks HTTP/1.1 with keep-alive (Envoy reuses upstream
connections) and records every request it served (`take()`).

Run it standalone with `python upstream.py [PORT]` (0 or nothing picks a free port; the
port is printed on the first line).
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from urllib.parse import unquote_to_bytes

IDENTITY_PREFIX = "HTTP_X_KEYGATE_"


def cgi_name(header: str) -> str:
    """The CGI/WSGI variable a header becomes: HTTP_ + upper-case, `-` -> `_`."""
    return "HTTP_" + header.upper().replace("-", "_")


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 over `/`-separated segments, with empty segments merged."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg in ("", "."):
            if last and out:
                # `/a/` and `/a/.` keep their trailing slash.
                out.append("")
            continue
        if seg == "..":
            if out and out[-1] == "":
                out.pop()
            if out:
                out.pop()
            if last:
                out.append("")
            continue
        if out and out[-1] == "":
            out.pop()
        out.append(seg)
    return "/" + "/".join(out)


def normalise_path(raw_path: str) -> str:
    """The path a real upstream serves for `raw_path` (no query): decode every %XX,
    `\\` -> `/`, drop `;params` from each segment, resolve dot segments, merge `//`."""
    decoded = unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape")
    decoded = decoded.replace("\\", "/")
    decoded = "/".join(seg.split(";", 1)[0] for seg in decoded.split("/"))
    return remove_dot_segments(decoded)


def split_target(target: str) -> tuple[str, str]:
    """(raw path, raw query) of a request target; absolute-form loses its authority."""
    for scheme in ("http://", "https://"):
        if target[: len(scheme)].lower() == scheme:
            rest = target[len(scheme):]
            cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
            target = rest[cut:] or "/"
            if not target.startswith("/"):
                target = "/" + target
            break
    path, _, query = target.partition("?")
    return path, query


class Upstream:
    """The echo upstream on 127.0.0.1, in a thread of this process."""

    def __init__(self, port: int = 0):
        self._lock = threading.Lock()
        self._seen: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # A stuck connection must not outlive the test.
            timeout = 30

            def _serve(self):
                length = self.headers.get("Content-Length")
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                else:
                    body = self.rfile.read(int(length)) if length else b""
                # The target as received: BaseHTTPRequestHandler may tidy self.path.
                words = self.requestline.split()
                target = words[1] if len(words) >= 2 else self.path
                raw_path, query = split_target(target)
                identity: dict[str, str] = {}
                for name, value in self.headers.items():
                    cgi = cgi_name(name)
                    if cgi.startswith(IDENTITY_PREFIX):
                        identity[cgi] = value if cgi not in identity else f"{identity[cgi]}, {value}"
                record = {
                    "served_path": normalise_path(raw_path),
                    "raw_path": raw_path,
                    "method": self.command,
                    "query": query,
                    "host": self.headers.get("Host", ""),
                    "identity": identity,
                    "headers": [[n, v] for n, v in self.headers.items()],
                    "body_length": len(body),
                }
                with outer._lock:
                    outer._seen.append(record)
                out = json.dumps(record).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.send_header("X-Echo", "upstream")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            def _read_chunked(self) -> bytes:
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.addr = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def take(self) -> list[dict]:
        """Every request served since the last take()."""
        with self._lock:
            seen, self._seen = self._seen, []
        return seen

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


def _selftest() -> None:
    cases = {
        "/v1/%61dmin/users": "/v1/admin/users",
        "/v1/x/../admin/users": "/v1/admin/users",
        "/v1//admin/users": "/v1/admin/users",
        "/v1/./admin/users": "/v1/admin/users",
        "/v1/%2e%2e/v1/admin/users": "/v1/admin/users",
        "/v1/x/%2E%2E/admin/users": "/v1/admin/users",
        "/v1/admin%2Fusers": "/v1/admin/users",
        "/v1/x/..%2Fadmin/users": "/v1/admin/users",
        "/v1/x;/../admin/users": "/v1/admin/users",
        "/v1/x/..%5Cadmin/users": "/v1/admin/users",
        "/healthz/../v1/admin/x": "/v1/admin/x",
        "/healthz//../v1/admin/x": "/v1/admin/x",
        "/static/../v1/admin/users": "/v1/admin/users",
        "/v2/users/%6de": "/v2/users/me",
        "/a/b/..": "/a/",
        "/../../x": "/x",
        "/": "/",
        "/a/": "/a/",
        "/V1/admin/users": "/V1/admin/users",
    }
    for raw, want in cases.items():
        got = normalise_path(raw)
        assert got == want, (raw, got, want)
    assert cgi_name("X_Keygate_App_Id") == cgi_name("x-keygate-app-id") == "HTTP_X_KEYGATE_APP_ID"


if __name__ == "__main__":
    _selftest()
    up = Upstream(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(up.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        up.close()
