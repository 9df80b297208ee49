"""User authentication on APIs with user_auth_required, with JWTs made by an
independent library (PyJWT, keys from `cryptography`): HS256, RS256 and ES256 are
accepted; expired, not yet valid, wrong audience, wrong issuer, wrong key and
`alg: none` tokens are denied (UserMissing, UserExpired or UserInvalid, as each
case is); a key rotated into the JWKS file
works without a restart; the user id goes upstream and a client-sent copy does not;
an app on the API's whitelist needs no token; the token may come in a cookie."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from conftest import (
    GRPC_UNAUTHENTICATED,
    Admin,
    Checker,
    assert_allowed,
    assert_denied,
    create_api,
    create_caller,
    header_values,
    launch_keygate,
    need_module,
    stop_keygate,
    unique,
)
from test_check import aliyun_sign

ISS = "https://login.example.com"
AUD = "keygate-e2e"
HS_SECRET = "an-hs256-secret-of-at-least-32-bytes!!"


def jwks_of(*keys):
    import jwt

    out = []
    for kid, public in keys:
        algo = jwt.algorithms.RSAAlgorithm if kid.startswith("rsa") else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algo.to_jwk(public))
        jwk["kid"] = kid
        out.append(jwk)
    return {"keys": out}


@pytest.fixture(scope="module")
def keys():
    need_module("jwt", "PyJWT")
    need_module("cryptography", "cryptography")
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    return {
        "rsa1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec1": ec.generate_private_key(ec.SECP256R1()),
    }


@pytest.fixture(scope="module")
def server(keys, generated):
    with tempfile.TemporaryDirectory(prefix="keygate-user-") as tmp:
        tmp = Path(tmp)
        (tmp / "hs.secret").write_text(HS_SECRET + "\n")
        jwks = tmp / "jwks.json"
        jwks.write_text(
            json.dumps(jwks_of(("rsa1", keys["rsa1"].public_key()), ("ec1", keys["ec1"].public_key())))
        )
        proc, srv = launch_keygate(
            tmp,
            (
                "--user-jwt-hs256-secret-file", str(tmp / "hs.secret"),
                "--user-jwks-file", str(jwks),
                "--user-jwt-issuer", ISS,
                "--user-jwt-audience", AUD,
                "--user-jwt-leeway-secs", "5",
                "--user-token-cookie", "bk_token",
            ),
        )
        resources, service, service_grpc = generated
        channel = grpc.insecure_channel(srv.admin)
        admin = Admin(service_grpc.AdminStub(channel), resources, service, srv.auth)
        try:
            yield srv, admin, jwks
        finally:
            channel.close()
            stop_keygate(proc)


@pytest.fixture(scope="module")
def setup(server):
    srv, admin, jwks = server
    prefix = f"/{unique('user')}"
    api = create_api(admin, f"{prefix}/{{*rest}}", user_auth_required=True)
    caller = create_caller(admin, api)
    exempt = create_caller(admin, api)
    api.user_auth_exempt_apps.append(exempt.app.id)
    from google.protobuf.field_mask_pb2 import FieldMask

    admin.UpdateApi(
        admin.svc.UpdateApiRequest(api=api, update_mask=FieldMask(paths=["user_auth_exempt_apps"]))
    )
    return Checker(srv.check), admin, jwks, prefix, caller, exempt


def token(key, alg, kid=None, **claims):
    import jwt

    now = int(time.time())
    body = {"sub": "alice", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 300}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": kid} if kid else None
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def ask(setup, who=None, user_token=None, cookie=None, extra=None):
    check, _admin, _jwks, prefix, caller, _exempt = setup
    who = who or caller
    target = f"{prefix}/orders"
    headers = dict(extra or {})
    if user_token is not None:
        headers["x-user-token"] = user_token
    if cookie is not None:
        headers["cookie"] = cookie
    sig = aliyun_sign(who.app_key, who.secret, "GET", target)
    return check("GET", target, {**headers, **sig})


def denied(resp, code="UserInvalid"):
    return assert_denied(resp, code, 401, GRPC_UNAUTHENTICATED)


def test_each_algorithm_is_accepted_and_names_the_user(setup, keys):
    for tok in [
        token(HS_SECRET, "HS256"),
        token(keys["rsa1"], "RS256", kid="rsa1"),
        token(keys["ec1"], "ES256", kid="ec1"),
        "Bearer " + token(keys["rsa1"], "RS256", kid="rsa1", sub="bob"),
    ]:
        ok = assert_allowed(ask(setup, user_token=tok))
        user = header_values(ok.headers).get("x-keygate-user-id")
        assert user in ("alice", "bob"), header_values(ok.headers)


def test_a_missing_or_bad_token_is_denied(setup, keys):
    import jwt

    now = int(time.time())
    other = keys["rsa2"]  # not in the JWKS
    bad = {
        "missing": None,
        "expired": token(keys["rsa1"], "RS256", kid="rsa1", exp=now - 60),
        "not yet valid": token(keys["rsa1"], "RS256", kid="rsa1", nbf=now + 120),
        "expired HS256": token(HS_SECRET, "HS256", exp=now - 60),
        "wrong audience": token(keys["rsa1"], "RS256", kid="rsa1", aud="someone-else"),
        "wrong issuer": token(keys["rsa1"], "RS256", kid="rsa1", iss="https://evil.example"),
        "no expiry": token(keys["rsa1"], "RS256", kid="rsa1", exp=None),
        "wrong key": token(other, "RS256", kid="rsa1"),
        "unknown kid": token(other, "RS256", kid="rsa9"),
        "wrong hs secret": token("another-secret-of-at-least-32-bytes!!", "HS256"),
        "alg none": jwt.encode({"sub": "alice", "iss": ISS, "aud": AUD, "exp": now + 300}, None, algorithm="none"),
        "garbage": "not.a.jwt",
    }
    codes = {"missing": "UserMissing", "expired": "UserExpired", "not yet valid": "UserExpired", "expired HS256": "UserExpired"}
    for what, tok in bad.items():
        resp = ask(setup, user_token=tok)
        assert resp.ok_response is None, f"{what}: allowed"
        denied(resp, codes.get(what, "UserInvalid"))


def test_the_whitelist_the_cookie_and_a_forged_user_header(setup, keys):
    _check, _admin, _jwks, _prefix, _caller, exempt = setup
    ok = assert_allowed(ask(setup, who=exempt, extra={"x-keygate-user-id": "mallory"}))
    assert "x-keygate-user-id" not in header_values(ok.headers)
    assert "x-keygate-user-id" in ok.headers_to_remove
    ok = assert_allowed(ask(setup, cookie=f"lang=en; bk_token={token(HS_SECRET, 'HS256', sub='carol')}"))
    assert header_values(ok.headers)["x-keygate-user-id"] == "carol"
    ok = assert_allowed(
        ask(setup, user_token=token(HS_SECRET, "HS256"), extra={"x-keygate-user-id": "mallory"})
    )
    assert header_values(ok.headers)["x-keygate-user-id"] == "alice"


def test_a_key_rotated_into_the_jwks_is_used_without_a_restart(setup, keys):
    _check, _admin, jwks, *_ = setup
    fresh = token(keys["rsa2"], "RS256", kid="rsa2")
    denied(ask(setup, user_token=fresh))
    jwks.write_text(json.dumps(jwks_of(("rsa2", keys["rsa2"].public_key()))))
    deadline = time.time() + 5
    while True:
        resp = ask(setup, user_token=fresh)
        if resp.ok_response is not None:
            break
        assert time.time() < deadline, "the rotated key was never used"
        time.sleep(0.2)
    # The retired key no longer verifies.
    denied(ask(setup, user_token=token(keys["rsa1"], "RS256", kid="rsa1")))
