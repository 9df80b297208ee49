"""The Envoy Check front door end to end: the real binary, set up through the generated
admin client, asked by envoy-data-plane's client exactly as Envoy would ask it.

Requests are signed by the Alibaba (X-Ca-*) signer below, written from
Alibaba Cloud API Gateway's "Use digest authentication to call an API" signature
rules with hmac/hashlib/base64 only, so every allow cross-checks
keygate's StringToSign against an implementation that shares no code with it (and that
signer is itself pinned to the spec's vendor vectors first)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from urllib.parse import unquote_plus

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from conftest import (
    GRPC_INVALID_ARGUMENT,
    GRPC_PERMISSION_DENIED,
    GRPC_UNAUTHENTICATED,
    assert_allowed,
    assert_denied,
    create_api,
    create_caller,
    header_values,
    now_ms,
    timestamp_ms,
    unique,
)

# === an independent Alibaba API Gateway signer (string-to-sign and signature) ===

# Headers with a fixed slot in the StringToSign (or that are the signature itself).
FIXED_SLOTS = ("accept", "content-md5", "content-type", "date")
NOT_IN_HEADER_BLOCK = {"x-ca-signature", "x-ca-signature-headers", *FIXED_SLOTS}
FORM = "application/x-www-form-urlencoded"


def _params(text: str) -> dict[str, str]:
    """Decoded parameters (`+` is a space), first value of a repeated key wins."""
    out: dict[str, str] = {}
    for part in text.split("&"):
        name, _, value = part.partition("=")
        name = unquote_plus(name)
        if name:
            out.setdefault(name, unquote_plus(value))
    return out


def aliyun_string_to_sign(
    method: str, target: str, headers: dict[str, str], body: bytes | None = None
) -> str:
    h = {k.lower(): v for k, v in headers.items()}
    sts = method.upper() + "\n"
    for slot in FIXED_SLOTS:
        sts += h.get(slot, "") + "\n"
    names: list[str] = []
    for name in h.get("x-ca-signature-headers", "").split(","):
        name = name.strip()
        if (
            name
            and name.lower() not in NOT_IN_HEADER_BLOCK
            and name.lower() not in (n.lower() for n in names)
        ):
            names.append(name)
    for name in sorted(names, key=lambda n: n.encode()):
        sts += f"{name}:{h.get(name.lower(), '')}\n"
    path, _, query = target.partition("?")
    params = _params(query)
    if body is not None and h.get("content-type", "").lower().startswith(FORM):
        params.update(_params(body.decode()))
    if not params:
        return sts + path
    pairs = sorted(params.items(), key=lambda kv: kv[0].encode())
    return sts + path + "?" + "&".join(k if v == "" else f"{k}={v}" for k, v in pairs)


def aliyun_signature(secret: str, sts: str, method: str = "HmacSHA256") -> str:
    digest = hashlib.sha1 if method == "HmacSHA1" else hashlib.sha256
    return base64.b64encode(hmac.new(secret.encode(), sts.encode(), digest).digest()).decode()


def aliyun_sign(
    key: str,
    secret: str,
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    accept: str = "application/json",
    timestamp: int | None = None,
    nonce: str | None = None,
    algorithm: str = "HmacSHA256",
    extra: dict[str, str] | None = None,
    signed_extra: dict[str, str] | None = None,
    list_case=str.lower,
) -> dict[str, str]:
    """The headers an Alibaba SDK sends: every X-Ca-* header (and `signed_extra`) signed,
    Content-MD5 for a non-form body. `list_case` spells the names in
    X-Ca-Signature-Headers (the SDKs' own spelling is kept in the StringToSign)."""
    h = {"Accept": accept}
    if content_type:
        h["Content-Type"] = content_type
    if body and not (content_type or "").lower().startswith(FORM):
        h["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    h.update(
        {
            "X-Ca-Key": key,
            "X-Ca-Nonce": nonce or str(uuid.uuid4()),
            "X-Ca-Timestamp": str(now_ms() if timestamp is None else timestamp),
            "X-Ca-Signature-Method": algorithm,
        }
    )
    h.update(extra or {})
    h.update(signed_extra or {})
    listed = [n for n in h if n.lower().startswith("x-ca-")] + list(signed_extra or {})
    h["X-Ca-Signature-Headers"] = ",".join(list_case(n) for n in listed)
    h["X-Ca-Signature"] = aliyun_signature(
        secret, aliyun_string_to_sign(method, target, h, body), algorithm
    )
    return h


def test_reference_signer_reproduces_the_spec_vectors():
    """The independent signer is right before it judges the server (the published vectors)."""
    list_ = "x-ca-key,x-ca-nonce,x-ca-timestamp"
    get = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "X-Ca-Timestamp": "1646365291734",
        "X-Ca-Nonce": "787dd0c2-7bd8-41cd-9c19-62c05ea524a2",
        "X-Ca-Key": "appKey",
        "X-Ca-Signature-Headers": list_,
    }
    sts = aliyun_string_to_sign("GET", "/Third/Tools/checkSign", get)
    assert sts == (
        "GET\napplication/json\n\napplication/json\n\n"
        "x-ca-key:appKey\nx-ca-nonce:787dd0c2-7bd8-41cd-9c19-62c05ea524a2\n"
        "x-ca-timestamp:1646365291734\n/Third/Tools/checkSign"
    )
    assert aliyun_signature("appSecret", sts) == "EdJSFAMOWyXZOpXhevZnjuS0ZafnwnCqaSk5hz+tXo8="

    form = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Ca-Timestamp": "1646646682418",
        "X-Ca-Nonce": "ca5a6753-b76c-4fff-a9d9-e5bb643e8cdf",
        "X-Ca-Key": "appKey",
        "X-Ca-Signature-Headers": list_,
        "Accept": "application/json",
    }
    body = b"nickname=nickname&room_id=6893&uuid=uuid&photo=photo"
    sts = aliyun_string_to_sign("POST", "/Third/User/getNyAccessToken", form, body)
    assert sts.endswith(
        "\n/Third/User/getNyAccessToken?nickname=nickname&photo=photo&room_id=6893&uuid=uuid"
    )
    assert aliyun_signature("appSecret", sts) == "gmf9xq0hc95Hmt+7G+OocS009ka3v1v0rvfshKzYc3w="

    own = {
        "Accept": "application/json",
        "X-Ca-Key": "24681357",
        "X-Ca-Nonce": "5b4c7a2e-1f0d-4c8e-9a77-3e2f1d0c9b8a",
        "X-Ca-Timestamp": "1700000000000",
        "X-Ca-Signature-Method": "HmacSHA1",
        "X-Ca-Stage": "RELEASE",
        "X-Ca-Signature-Headers": "x-ca-timestamp,x-ca-key,x-ca-nonce,x-ca-signature-method,x-ca-stage",
    }
    sts = aliyun_string_to_sign("GET", "/v1/items?b=2&a=&c=x%20y", own)
    assert sts.replace("\n", "#") == (
        "GET#application/json####x-ca-key:24681357#x-ca-nonce:5b4c7a2e-1f0d-4c8e-9a77-3e2f1d0c9b8a"
        "#x-ca-signature-method:HmacSHA1#x-ca-stage:RELEASE#x-ca-timestamp:1700000000000"
        "#/v1/items?a&b=2&c=x y"
    )
    assert aliyun_signature("exampleAppSecret", sts, "HmacSHA1") == "nuYDSdqobYauO0weF/dkfajgfwk="


# === scenario ===


@pytest.fixture(scope="module")
def prefix():
    """A path prefix of this module's own, so its APIs never collide with other routes
    in the shared keygate process."""
    return "/" + unique("chk")


@pytest.fixture(scope="module")
def api(admin, prefix):
    return create_api(admin, f"{prefix}/orders/{{id}}", methods=["GET", "POST"])


@pytest.fixture
def caller(admin, api):
    return create_caller(admin, api, extend_info=f"tier=gold;{unique('x')}")


def call(check, who, method="GET", target=None, *, prefix_, body=None, content_type=None,
         context_extensions=None, **sign_kw):
    """Signs as `who` with the reference signer and asks keygate."""
    target = target or f"{prefix_}/orders/42?expand=items"
    headers = aliyun_sign(
        who.app_key, who.secret, method, target, body=body, content_type=content_type, **sign_kw
    )
    return check(method, target, headers, body=body, context_extensions=context_extensions)


# === allow ===


def metadata(resp) -> dict[str, str]:
    """Top-level dynamic_metadata (Envoy's envoy.filters.http.ext_authz namespace)."""
    assert resp.dynamic_metadata is not None, resp
    return {k: v.string_value for k, v in resp.dynamic_metadata.fields.items()}


def test_allow_sets_identity_headers_removes_the_signature_and_emits_metadata(
    check, caller, api, prefix
):
    target = f"{prefix}/orders/42?expand=items"
    headers = aliyun_sign(caller.app_key, caller.secret, "GET", target)
    # A client trying to smuggle its own identity headers.
    headers["X-Keygate-App-Id"] = "app_forged"
    headers["X-Keygate-Stage"] = "FORGED"
    resp = check("GET", target, headers)
    ok = assert_allowed(resp)

    by_name = {o.header.key.lower(): o for o in ok.headers}
    expected = {
        "x-keygate-app-id": caller.app.id,
        "x-keygate-app-key": caller.app_key,
        "x-keygate-api-id": api.id,
        "x-keygate-stage": "RELEASE",
        "x-keygate-scheme": "aliyun",
        "x-keygate-app-extend-info": caller.app.extend_info,
    }
    for name, value in expected.items():
        assert name in by_name, (name, header_values(ok.headers))
        opt = by_name[name]
        assert opt.header.value == value, (name, opt.header.value)
        # Overwrite, so the forged copies above never reach the upstream.
        assert opt.append_action.name == "OVERWRITE_IF_EXISTS_OR_ADD", (name, opt)
        assert opt.append is None, (name, opt.append)
    assert "x-ca-signature" in ok.headers_to_remove, ok.headers_to_remove
    assert metadata(resp)["app_id"] == caller.app.id


def test_no_extend_info_means_a_forged_copy_is_removed(check, admin, api, prefix):
    who = create_caller(admin, api)  # no extend_info
    target = f"{prefix}/orders/42"
    headers = aliyun_sign(who.app_key, who.secret, "GET", target)
    headers["X-Keygate-App-Extend-Info"] = "tier=forged"
    ok = assert_allowed(check("GET", target, headers))
    assert "x-keygate-app-extend-info" not in header_values(ok.headers)
    assert "x-keygate-app-extend-info" in ok.headers_to_remove


def test_dynamic_metadata_carries_the_identity(check, caller, api, prefix):
    resp = call(check, caller, prefix_=prefix)
    assert_allowed(resp)
    md = metadata(resp)
    assert md["app_id"] == caller.app.id
    assert md["app_key"] == caller.app_key
    assert md["api_id"] == api.id
    assert md["stage"] == "RELEASE"
    assert md["scheme"] == "aliyun"


@pytest.mark.parametrize(
    "case",
    [
        "no-query", "unsorted-encoded-query", "bare-key-and-plus", "encoded-path",
        "json-body-md5", "form-body", "hmac-sha1", "x-ca-stage", "sdk-case-names",
        "custom-signed-header-and-date", "timestamp-in-seconds",
    ],
)
def test_allow_variants_agree_with_the_reference_signer(check, admin, api, prefix, case):
    """Each variant exercises a different part of §1.2 that both sides must agree on."""
    who = create_caller(admin, api, stages=["RELEASE", "TEST"])
    base = f"{prefix}/orders/9"
    kw: dict = {}
    method, target = "GET", base
    if case == "unsorted-encoded-query":
        target = base + "?b=2&a=&c=x%20y&d=%E4%BD%A0+z"
    elif case == "json-body-md5":
        method, kw = "POST", {"body": b'{"a":1,"b":[1,2]}', "content_type": "application/json"}
    elif case == "form-body":
        method = "POST"
        target = base + "?q=1"
        kw = {"body": b"z=last&m=mid+dle&a=%2Fslash", "content_type": FORM + "; charset=utf-8"}
    elif case == "hmac-sha1":
        kw = {"algorithm": "HmacSHA1"}
    elif case == "bare-key-and-plus":
        target = base + "?flag&p=1%2B1&s=a+b&e="
    elif case == "encoded-path":
        target = f"{prefix}/orders/a%20b%C3%A9?x=1"
    elif case == "x-ca-stage":
        kw = {"extra": {"X-Ca-Stage": "TEST"}}
    elif case == "sdk-case-names":
        kw = {"list_case": str}  # X-Ca-Key,X-Ca-Nonce,... as the Java SDK lists them
    elif case == "custom-signed-header-and-date":
        kw = {"signed_extra": {"X-Tenant": "acme", "X-Trace": ""},
              "extra": {"Date": "Sun, 22 Nov 2026 10:00:00 GMT"}}
    elif case == "timestamp-in-seconds":
        kw = {"timestamp": now_ms() // 1000}
    ok = assert_allowed(call(check, who, method, target, prefix_=prefix, **kw))
    # The client's X-Ca-Stage is signed but not honoured: the stage is the proxy's
    # (context_extensions.stage) or the default, unless --trust-client-stage.
    assert header_values(ok.headers)["x-keygate-stage"] == "RELEASE"


def test_a_repeated_query_parameter_is_malformed(check, admin, api, prefix):
    """Signed for both values, the string-to-sign cannot tell which one the client meant
    and which the upstream reads: `?to=alice&to=mallory` is refused, not "first wins"."""
    who = create_caller(admin, api)
    resp = call(check, who, "GET", f"{prefix}/orders/9?to=alice&amount=1&to=mallory", prefix_=prefix)
    assert_denied(resp, "Malformed", 400, GRPC_INVALID_ARGUMENT)


# === deny: app, key and grant state, each set up through the admin API ===


def test_disabled_app_is_denied(check, admin, caller, prefix):
    assert_allowed(call(check, caller, prefix_=prefix))
    admin.DisableApp(admin.svc.DisableAppRequest(id=caller.app.id))
    assert_denied(call(check, caller, prefix_=prefix), "AppDisabled", 403, GRPC_PERMISSION_DENIED)
    admin.EnableApp(admin.svc.EnableAppRequest(id=caller.app.id))
    assert_allowed(call(check, caller, prefix_=prefix))


def test_deleted_grant_is_no_grant(check, admin, caller, prefix):
    assert_allowed(call(check, caller, prefix_=prefix))
    admin.DeleteGrant(admin.svc.DeleteGrantRequest(id=caller.grant.id))
    assert_denied(call(check, caller, prefix_=prefix), "NoGrant", 403, GRPC_PERMISSION_DENIED)


def test_grant_for_another_stage_is_no_grant(check, admin, api, prefix):
    who = create_caller(admin, api, stages=["TEST"])
    assert_denied(call(check, who, prefix_=prefix), "NoGrant", 403, GRPC_PERMISSION_DENIED)


def test_grant_expired(check, admin, api, prefix):
    # An expiry in the past is refused when the grant is made: let one lapse instead.
    who = create_caller(admin, api, grant_expires_ms=now_ms() + 1_500)
    assert_allowed(call(check, who, prefix_=prefix))
    time.sleep(1.7)
    assert_denied(call(check, who, prefix_=prefix), "GrantExpired", 403, GRPC_PERMISSION_DENIED)


def test_expired_key(check, admin, caller, prefix):
    kp = admin.res.KeyPair(app_key=caller.app_key)
    kp.expires_at.CopyFrom(timestamp_ms(now_ms() + 1_500))
    admin.UpdateKeyPair(
        admin.svc.UpdateKeyPairRequest(key_pair=kp, update_mask=FieldMask(paths=["expires_at"]))
    )
    time.sleep(1.7)
    assert_denied(call(check, caller, prefix_=prefix), "KeyExpired", 401, GRPC_UNAUTHENTICATED)


def test_an_expiry_in_the_past_is_refused(admin, caller):
    kp = admin.res.KeyPair(app_key=caller.app_key)
    kp.expires_at.CopyFrom(timestamp_ms(now_ms() - 60_000))
    with pytest.raises(grpc.RpcError) as e:
        admin.UpdateKeyPair(
            admin.svc.UpdateKeyPairRequest(key_pair=kp, update_mask=FieldMask(paths=["expires_at"]))
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("KeyPair.expires_at:")


def test_disabled_key(check, admin, caller, prefix):
    admin.DisableKeyPair(admin.svc.DisableKeyPairRequest(app_key=caller.app_key))
    assert_denied(call(check, caller, prefix_=prefix), "KeyDisabled", 401, GRPC_UNAUTHENTICATED)


def test_reset_secret_without_grace_retires_the_old_secret(check, admin, caller, prefix):
    assert_allowed(call(check, caller, prefix_=prefix))
    new = admin.ResetKeyPairSecret(admin.svc.ResetKeyPairSecretRequest(app_key=caller.app_key))
    assert new.app_secret and new.app_secret != caller.secret
    assert_denied(
        call(check, caller, prefix_=prefix), "SignatureMismatch", 401, GRPC_UNAUTHENTICATED
    )
    rotated = type(caller)(app=caller.app, key=new, grant=caller.grant)
    assert_allowed(call(check, rotated, prefix_=prefix))


def test_reset_secret_with_grace_keeps_the_old_secret_working(check, admin, caller, prefix):
    new = admin.ResetKeyPairSecret(
        admin.svc.ResetKeyPairSecretRequest(
            app_key=caller.app_key, grace_period=Duration(seconds=300)
        )
    )
    assert new.previous_secret_expires_at.seconds > 0
    assert_allowed(call(check, caller, prefix_=prefix))
    rotated = type(caller)(app=caller.app, key=new, grant=caller.grant)
    assert_allowed(call(check, rotated, prefix_=prefix))


# === deny: the request itself ===


def test_replayed_nonce(check, caller, prefix):
    target = f"{prefix}/orders/42"
    headers = aliyun_sign(caller.app_key, caller.secret, "GET", target)
    assert_allowed(check("GET", target, headers))
    assert_denied(check("GET", target, headers), "NonceReplayed", 401, GRPC_UNAUTHENTICATED)


def _flip(s: str, old: str, new: str) -> str:
    assert old in s, (old, s)
    return s.replace(old, new, 1)


@pytest.mark.parametrize("part", ["path", "query", "signed-header", "accept-slot", "body"])
def test_tampering_is_detected(check, caller, prefix, part):
    target = f"{prefix}/orders/42?expand=items"
    body = b'{"amount":100}'
    headers = aliyun_sign(
        caller.app_key, caller.secret, "POST", target, body=body, content_type="application/json"
    )
    code, http, grpc_code = "SignatureMismatch", 401, GRPC_UNAUTHENTICATED
    if part == "path":
        target = _flip(target, "/orders/42", "/orders/43")
    elif part == "query":
        target = _flip(target, "expand=items", "expand=itemz")
    elif part == "signed-header":
        headers["X-Ca-Nonce"] = _flip(headers["X-Ca-Nonce"], headers["X-Ca-Nonce"][-1], "x")
    elif part == "accept-slot":
        headers["Accept"] = "application/jsoN"
    else:
        body = body.replace(b"100", b"900")
        code, http, grpc_code = "BodyDigestMismatch", 400, GRPC_INVALID_ARGUMENT
    assert_denied(check("POST", target, headers, body=body), code, http, grpc_code)


def test_body_as_proto_string_is_checked_too(check, caller, prefix):
    """Envoy without pack_as_bytes puts the body in the string field `body`."""
    target = f"{prefix}/orders/42"
    body = '{"name":"caf\u00e9"}'.encode()
    headers = aliyun_sign(
        caller.app_key, caller.secret, "POST", target, body=body, content_type="application/json"
    )
    assert_allowed(check("POST", target, headers, body=body, pack_as_bytes=False))
    headers = aliyun_sign(
        caller.app_key, caller.secret, "POST", target, body=body, content_type="application/json"
    )
    resp = check("POST", target, headers, body=body + b" ", pack_as_bytes=False)
    assert_denied(resp, "BodyDigestMismatch", 400, GRPC_INVALID_ARGUMENT)


def test_body_cut_by_the_proxy_is_incomplete(check, caller, prefix):
    target = f"{prefix}/orders/42"
    body = b'{"items":[1,2,3,4,5,6,7,8,9]}'
    headers = aliyun_sign(
        caller.app_key, caller.secret, "POST", target, body=body, content_type="application/json"
    )
    resp = check("POST", target, headers, body=body[:10], partial=True)
    assert_denied(resp, "BodyIncomplete", 400, GRPC_INVALID_ARGUMENT)


def test_a_rejected_signature_does_not_burn_the_nonce(check, caller, prefix):
    target = f"{prefix}/orders/42"
    headers = aliyun_sign(caller.app_key, caller.secret, "GET", target)
    forged = dict(headers, **{"X-Ca-Signature": aliyun_signature("not-the-secret", "x")})
    assert_denied(check("GET", target, forged), "SignatureMismatch", 401, GRPC_UNAUTHENTICATED)
    assert_allowed(check("GET", target, headers))


def test_signature_mismatch_echoes_the_string_to_sign_but_never_the_secret(check, caller, prefix):
    signed_target = f"{prefix}/orders/42?expand=items"
    sent_target = f"{prefix}/orders/42?expand=all"
    headers = aliyun_sign(caller.app_key, caller.secret, "GET", signed_target)
    deny = assert_denied(
        check("GET", sent_target, headers), "SignatureMismatch", 401, GRPC_UNAUTHENTICATED
    )
    message = deny["x-ca-error-message"]
    assert message.startswith("Invalid Signature, Server StringToSign:"), message
    assert caller.secret not in message
    assert headers["X-Ca-Signature"] not in message
    # The echo is the StringToSign of what the server received, `#` for line feeds:
    # exactly what the independent signer computes for the sent request.
    expected = aliyun_string_to_sign("GET", sent_target, headers).replace("\n", "#")
    assert message == f"Invalid Signature, Server StringToSign:`{expected}`"
    assert deny["x-ca-error-code"] == "A400IS"


@pytest.mark.parametrize("sign", [-1, +1], ids=["16-min-old", "16-min-ahead"])
def test_timestamp_outside_15_minutes_is_expired(check, caller, prefix, sign):
    resp = call(check, caller, prefix_=prefix, timestamp=now_ms() + sign * 16 * 60 * 1000)
    assert_denied(resp, "TimestampExpired", 401, GRPC_UNAUTHENTICATED)


def test_unknown_key(check, caller, prefix):
    target = f"{prefix}/orders/42"
    headers = aliyun_sign(unique("NOKEY"), caller.secret, "GET", target)
    assert_denied(check("GET", target, headers), "UnknownAppKey", 401, GRPC_UNAUTHENTICATED)


def test_no_credential(check, prefix):
    resp = check("GET", f"{prefix}/orders/42", {"accept": "application/json"})
    assert_denied(resp, "MissingCredential", 401, GRPC_UNAUTHENTICATED)


def test_path_matching_no_api(check, caller, prefix):
    resp = call(check, caller, "GET", f"{prefix}/nothing-here/42", prefix_=prefix)
    assert_denied(resp, "ApiNotFound", 403, GRPC_PERMISSION_DENIED)


# === routing hints from Envoy's per-route context_extensions ===


@pytest.mark.parametrize("by", ["name", "id"])
def test_context_extension_api_names_the_api_and_narrows(check, admin, prefix, by):
    other = create_api(admin, f"{prefix}/{unique('hinted')}")
    who = create_caller(admin, other)
    hint = other.name if by == "name" else other.id
    ok = assert_allowed(
        call(check, who, "GET", other.path + "?x=1", prefix_=prefix, context_extensions={"api": hint})
    )
    assert header_values(ok.headers)["x-keygate-api-id"] == other.id
    # A hint never widens: a path the API does not serve matches nothing.
    for target in ("/somewhere/unrelated?x=1", other.path + "-internal/x"):
        assert_denied(
            call(check, who, "GET", target, prefix_=prefix, context_extensions={"api": hint}),
            "ApiNotFound", 403, GRPC_PERMISSION_DENIED,
        )


def test_context_extension_stage_changes_the_stage(check, admin, api, prefix):
    who = create_caller(admin, api, stages=["TEST"])
    assert_denied(call(check, who, prefix_=prefix), "NoGrant", 403, GRPC_PERMISSION_DENIED)
    ok = assert_allowed(call(check, who, prefix_=prefix, context_extensions={"stage": "TEST"}))
    assert header_values(ok.headers)["x-keygate-stage"] == "TEST"
    # The route's stage wins over the caller's X-Ca-Stage.
    resp = call(
        check, who, prefix_=prefix,
        context_extensions={"stage": "RELEASE"}, extra={"X-Ca-Stage": "TEST"},
    )
    assert_denied(resp, "NoGrant", 403, GRPC_PERMISSION_DENIED)


# === AppCode ===


@pytest.fixture(scope="module")
def appcode_api(admin, prefix):
    return create_api(admin, f"{prefix}/appcode/{{*rest}}", auth_schemes=[admin.res.APPCODE])


def test_appcode_is_accepted_where_listed(check, admin, appcode_api, prefix):
    who = create_caller(admin, appcode_api)
    assert len(who.app.app_code) >= 16, "CreateApp shows the AppCode once"
    resp = check(
        "GET", f"{prefix}/appcode/a/b?x=1", {"Authorization": f"APPCODE {who.app.app_code}"}
    )
    ok = assert_allowed(resp)
    got = header_values(ok.headers)
    assert got["x-keygate-app-id"] == who.app.id
    assert got["x-keygate-scheme"] == "appcode"
    assert got["x-keygate-api-id"] == appcode_api.id
    assert "x-keygate-app-key" not in got
    # The code is a bearer secret: it must not travel upstream, nor a forged key header.
    assert "authorization" in ok.headers_to_remove
    assert "x-keygate-app-key" in ok.headers_to_remove


def test_unknown_appcode(check, admin, appcode_api, prefix):
    create_caller(admin, appcode_api)
    resp = check("GET", f"{prefix}/appcode/x", {"Authorization": f"APPCODE {uuid.uuid4().hex}"})
    assert_denied(resp, "UnknownAppCode", 401, GRPC_UNAUTHENTICATED)


@pytest.mark.parametrize("schemes", [[], ["ALIYUN", "SIGV4"]], ids=["default-list", "explicit-list"])
def test_appcode_is_refused_where_not_listed(check, admin, prefix, schemes):
    path = f"{prefix}/{unique('noappcode')}"
    other = create_api(
        admin, path, auth_schemes=[admin.res.AuthScheme.Value(s) for s in schemes]
    )
    who = create_caller(admin, other)
    resp = check("GET", path, {"Authorization": f"APPCODE {who.app.app_code}"})
    assert_denied(resp, "SchemeNotAllowed", 403, GRPC_PERMISSION_DENIED)
    # The same app, signing instead, is let in.
    assert_allowed(check("GET", path, aliyun_sign(who.app_key, who.secret, "GET", path)))
