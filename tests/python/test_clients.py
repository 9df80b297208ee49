"""Clients other than our own against the admin API: a Python client generated from
proto/ at test time, and grpcurl through server reflection (v1alpha, as grpcurl 1.8
speaks it). Proves that the published protos and the reflection service describe what
the server really serves, and that the admin API stays off the check listener."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import PROTO_DIR, RPC_TIMEOUT_S, TOOL_TIMEOUT_S, tool, unique


# === a client generated from proto/ ===


@pytest.fixture
def stub(keygate, generated):
    import grpc

    _, _, service_grpc = generated
    with grpc.insecure_channel(keygate.admin) as channel:
        yield service_grpc.AdminStub(channel)


def test_generated_client_creates_and_lists_apps(keygate, generated, stub):
    resources, service, _ = generated
    owner = unique("py-owner")
    created = []
    for i in range(3):
        r = stub.CreateApp(
            service.CreateAppRequest(
                app=resources.App(name=f"py-app-{i}", owner=owner, tags={"lang": "python"})
            ),
            metadata=keygate.auth,
            timeout=RPC_TIMEOUT_S,
        )
        assert r.app.id and r.app.owner == owner
        assert r.key_pair.app_id == r.app.id
        assert r.key_pair.is_default
        assert len(r.key_pair.app_secret) >= 16, "the secret is shown on create"
        created.append(r.app.id)

    listed = stub.ListApps(
        service.ListAppsRequest(owner=owner), metadata=keygate.auth, timeout=RPC_TIMEOUT_S
    )
    assert sorted(a.id for a in listed.apps) == sorted(created)
    assert all(a.tags["lang"] == "python" for a in listed.apps)
    assert not listed.next_page_token

    # Paging through the generated client too.
    seen, token = [], ""
    while True:
        page = stub.ListApps(
            service.ListAppsRequest(owner=owner, page_size=2, page_token=token),
            metadata=keygate.auth,
            timeout=RPC_TIMEOUT_S,
        )
        seen += [a.id for a in page.apps]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(created)

    keys = stub.ListKeyPairs(
        service.ListKeyPairsRequest(app_id=created[0]), metadata=keygate.auth, timeout=RPC_TIMEOUT_S
    )
    assert len(keys.key_pairs) == 1
    assert keys.key_pairs[0].app_secret == "", "reads never show the secret"


def test_generated_client_maps_errors_to_grpc_codes(keygate, generated, stub):
    import grpc

    resources, service, _ = generated
    with pytest.raises(grpc.RpcError) as e:
        stub.ListApps(service.ListAppsRequest(), timeout=RPC_TIMEOUT_S)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.RpcError) as e:
        stub.ListApps(
            service.ListAppsRequest(),
            metadata=[("authorization", "Bearer wrong-token-0123456789")],
            timeout=RPC_TIMEOUT_S,
        )
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.RpcError) as e:
        stub.GetApp(service.GetAppRequest(id="app_nope"), metadata=keygate.auth, timeout=RPC_TIMEOUT_S)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.RpcError) as e:
        stub.CreateApi(
            service.CreateApiRequest(
                api=resources.Api(name=unique("bad"), owner="p", path="/a/{*rest}/b")
            ),
            metadata=keygate.auth,
            timeout=RPC_TIMEOUT_S,
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("Api.path"), e.value.details()


def test_generated_client_gets_unimplemented_on_the_check_port(keygate, generated):
    import grpc

    _, service, service_grpc = generated
    with grpc.insecure_channel(keygate.check) as channel:
        with pytest.raises(grpc.RpcError) as e:
            service_grpc.AdminStub(channel).ListApps(
                service.ListAppsRequest(), metadata=keygate.auth, timeout=RPC_TIMEOUT_S
            )
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


# === grpcurl, through server reflection ===


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("grpcurl"), *args], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S
    )


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"grpcurl {r.args[1:]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_grpcurl_lists_the_admin_services(keygate):
    services = ok(grpcurl("-plaintext", keygate.admin, "list")).split()
    assert "keygate.admin.v1.Admin" in services
    assert "grpc.health.v1.Health" in services

    described = ok(grpcurl("-plaintext", keygate.admin, "describe", "keygate.admin.v1.Admin"))
    for rpc in ("CreateApp", "ListApps", "ResetKeyPairSecret", "CreateGrant", "ListAuditEvents"):
        assert f"rpc {rpc} " in described, described


def test_grpcurl_creates_an_app_and_sees_the_secret_once(keygate):
    auth = f"authorization: Bearer {keygate.token}"
    body = json.dumps({"app": {"name": unique("x"), "owner": "o"}})
    created = json.loads(
        ok(grpcurl("-plaintext", "-H", auth, "-d", body, keygate.admin,
                   "keygate.admin.v1.Admin/CreateApp"))
    )
    key = created["keyPair"]
    assert key["appSecret"], created
    assert key["isDefault"] is True
    assert created["app"]["id"] == key["appId"]

    got = json.loads(
        ok(grpcurl("-plaintext", "-H", auth, "-d", json.dumps({"appKey": key["appKey"]}),
                   keygate.admin, "keygate.admin.v1.Admin/GetKeyPair"))
    )
    assert got["appKey"] == key["appKey"]
    assert "appSecret" not in got, got

    denied = grpcurl("-plaintext", "-d", body, keygate.admin, "keygate.admin.v1.Admin/CreateApp")
    assert denied.returncode != 0
    assert "Unauthenticated" in denied.stderr, denied.stderr


def test_grpcurl_health_needs_no_token(keygate):
    for addr in (keygate.admin, keygate.check):
        out = json.loads(ok(grpcurl("-plaintext", addr, "grpc.health.v1.Health/Check")))
        assert out == {"status": "SERVING"}, (addr, out)


def test_check_listener_does_not_serve_the_admin_api(keygate):
    services = ok(grpcurl("-plaintext", keygate.check, "list")).split()
    assert "grpc.health.v1.Health" in services
    assert "keygate.admin.v1.Admin" not in services, services

    # With the protos given (reflection there does not know the service), the call
    # reaches the check listener and is refused as not served there.
    r = grpcurl(
        "-plaintext",
        "-import-path", str(PROTO_DIR),
        "-proto", "keygate/admin/v1/service.proto",
        "-H", f"authorization: Bearer {keygate.token}",
        "-d", "{}",
        keygate.check,
        "keygate.admin.v1.Admin/ListApps",
    )
    assert r.returncode != 0, r.stdout
    assert "Unimplemented" in r.stderr, r.stderr
