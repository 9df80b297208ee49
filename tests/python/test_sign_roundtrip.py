"""`keygate sign` against the Check listener, for every scheme: what the real signer
command prints, sent the way Envoy would describe the request, is allowed; one flipped
byte in any part the scheme signs is denied with that part's code.

The signer and the verifier share their string-to-sign builders, so this proves the
wiring around them: the command's inputs and printed output, the admin records each
scheme looks up (AppKey, app id for BlueKing, AppCode), the API's scheme list and SigV4
region/service, and the Envoy translation (lower-cased headers, `:authority`, raw path,
raw_body)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import pytest

from conftest import (
    GRPC_INVALID_ARGUMENT,
    GRPC_UNAUTHENTICATED,
    TOOL_TIMEOUT_S,
    assert_allowed,
    assert_denied,
    create_api,
    create_caller,
    header_values,
    keygate_bin,
    unique,
)

AUTHORITY = "shop.example.com"
BODY = b'{"x":1}'
REGION, SERVICE = "us-east-1", "execute-api"

SIG = ("SignatureMismatch", 401, GRPC_UNAUTHENTICATED)
DIGEST = ("BodyDigestMismatch", 400, GRPC_INVALID_ARGUMENT)


@dataclass(frozen=True)
class Scheme:
    """How to sign with one scheme and what each tampered part must give."""

    cli: str  # --scheme
    schemes: tuple[str, ...]  # the API's auth_schemes (empty: keygate's default list)
    args: tuple[str, ...] = ()
    header: str | None = None  # a signed header to tamper with
    tampers: tuple[tuple[str, tuple], ...] = ()  # (part, expected deny)
    scheme_header: str = ""  # x-keygate-scheme on allow (default: cli)


SCHEMES = {
    "aliyun": Scheme(
        "aliyun", (), header="x-ca-nonce",
        tampers=(("path", SIG), ("query", SIG), ("header", SIG), ("body", DIGEST)),
    ),
    "tencent": Scheme(
        "tencent", (), header="x-apigw-nonce",
        tampers=(("path", SIG), ("query", SIG), ("header", SIG), ("body", DIGEST)),
    ),
    "sigv4": Scheme(
        "sigv4", (), args=("--region", REGION, "--service", SERVICE), header="content-type",
        # The payload hash is part of the canonical request.
        tampers=(("path", SIG), ("query", SIG), ("header", SIG), ("body", SIG)),
    ),
    "rfc9421": Scheme(
        "rfc9421", (), header="content-type",
        tampers=(("path", SIG), ("query", SIG), ("header", SIG), ("body", DIGEST)),
    ),
    # The secret travels in X-Bkapi-Authorization and nothing else is signed.
    "bkapi": Scheme("bkapi", ("BKAPI",), tampers=(("credential", SIG),)),
    # Legacy v1: bk_signature over method, path, query and (POST) the body.
    "bkapi-signature": Scheme(
        "bkapi", ("BKAPI",), args=("--algorithm", "signature"),
        tampers=(("path", SIG), ("query", SIG), ("body", SIG)), scheme_header="bkapi",
    ),
    # A bearer code: nothing is signed.
    "appcode": Scheme(
        "appcode", ("APPCODE",),
        tampers=(("credential", ("UnknownAppCode", 401, GRPC_UNAUTHENTICATED)),),
    ),
}


@pytest.fixture(scope="module")
def prefix():
    return "/" + unique("rt")


@pytest.fixture(scope="module")
def setups(admin, prefix):
    """Per scheme: an API (its own path) and a caller granted on it."""
    out = {}
    for name, s in SCHEMES.items():
        extra = {}
        if s.cli == "sigv4":
            extra = {"sigv4_region": REGION, "sigv4_service": SERVICE}
        api = create_api(
            admin,
            f"{prefix}/{name}/orders/{{id}}",
            methods=["GET", "POST"],
            auth_schemes=[admin.res.AuthScheme.Value(a) for a in s.schemes],
            **extra,
        )
        out[name] = (api, create_caller(admin, api))
    return out


def sign(tmp_path, scheme: Scheme, caller, url: str, post: bool) -> tuple[str, dict[str, str]]:
    """Runs `keygate sign`; returns the URL to call and the headers the request carries
    (the caller's own -H headers plus the printed ones)."""
    if scheme.cli == "appcode":
        key, secret = "", caller.app.app_code
    elif scheme.cli == "bkapi":
        key, secret = caller.app.id, caller.secret  # bk_app_code is the app id
    else:
        key, secret = caller.app_key, caller.secret
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    given = {"Content-Type": "application/json"} if post else {}
    cmd = [str(keygate_bin()), "sign", "--scheme", scheme.cli, "--key", key,
           "--secret-file", str(secret_file), *scheme.args]
    if post:
        cmd += ["-X", "POST", "-H", "Content-Type: application/json", "-d", BODY.decode()]
    r = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    assert secret not in r.stderr
    headers = dict(given)
    for line in r.stdout.splitlines():
        if line.startswith(("http://", "https://")):
            url = line  # the scheme signs in the query
            continue
        name, sep, value = line.partition(": ")
        assert sep and name and " " not in name, f"unexpected output line {line!r}"
        headers[name] = value
    return url, headers


def target_of(url: str) -> str:
    rest = url.split("://", 1)[1]
    assert rest.startswith(AUTHORITY + "/"), url
    return rest[len(AUTHORITY):]


def flip(s: str, old: str, new: str) -> str:
    assert old in s, (old, s)
    return s.replace(old, new, 1)


def flip_last(s: str) -> str:
    return s[:-1] + ("x" if s[-1] != "x" else "y")


@pytest.mark.parametrize("post", [False, True], ids=["GET", "POST"])
@pytest.mark.parametrize("name", list(SCHEMES))
def test_signed_request_is_allowed(check, setups, prefix, tmp_path, name, post):
    scheme = SCHEMES[name]
    api, caller = setups[name]
    url = f"http://{AUTHORITY}{prefix}/{name}/orders/42?expand=items&z=1"
    url, headers = sign(tmp_path, scheme, caller, url, post)
    method, body = ("POST", BODY) if post else ("GET", None)
    ok = assert_allowed(check(method, target_of(url), headers, authority=AUTHORITY, body=body))
    got = header_values(ok.headers)
    assert got["x-keygate-app-id"] == caller.app.id
    assert got["x-keygate-api-id"] == api.id
    assert got["x-keygate-scheme"] == (scheme.scheme_header or scheme.cli)
    if scheme.cli != "appcode":
        assert got["x-keygate-app-key"] == caller.app_key


@pytest.mark.parametrize(
    "name,part,expected",
    [(n, part, exp) for n, s in SCHEMES.items() for part, exp in s.tampers],
    ids=[f"{n}-{part}" for n, s in SCHEMES.items() for part, _ in s.tampers],
)
def test_one_flipped_byte_is_denied(check, setups, prefix, tmp_path, name, part, expected):
    scheme = SCHEMES[name]
    _, caller = setups[name]
    url = f"http://{AUTHORITY}{prefix}/{name}/orders/42?expand=items&z=1"
    url, headers = sign(tmp_path, scheme, caller, url, post=True)
    target, body = target_of(url), BODY
    headers = {k.lower(): v for k, v in headers.items()}
    if part == "path":
        target = flip(target, "/orders/42", "/orders/43")  # still routes to the API
    elif part == "query":
        target = flip(target, "expand=items", "expand=itemx")
    elif part == "header":
        headers[scheme.header] = flip_last(headers[scheme.header])
    elif part == "body":
        body = flip(body.decode(), '"x":1', '"x":2').encode()
    elif part == "credential":
        secret = caller.app.app_code if scheme.cli == "appcode" else caller.secret
        for k, v in headers.items():
            if secret in v:
                headers[k] = v.replace(secret, flip_last(secret))
                break
        else:
            pytest.fail(f"no header carries the secret: {headers}")
    resp = check("POST", target, headers, authority=AUTHORITY, body=body)
    assert_denied(resp, *expected)
