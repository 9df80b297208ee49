"""Partner authorization across two tenants through the generated Python client:
the partner's developer creates an app and reads its id; the shop's provider finds it
by id (id, name and owner only) and grants it an API; neither can list or change the
other's resources (PERMISSION_DENIED naming what was needed); the developer sees what
its app may call; the audit names both principals."""

from __future__ import annotations

import grpc
import pytest

from conftest import RPC_TIMEOUT_S, Admin, unique


def as_principal(keygate, generated, admin, name, role, owner):
    resources, service, service_grpc = generated
    created = admin.CreatePrincipal(
        service.CreatePrincipalRequest(
            principal=service.Principal(name=name, role=role, owner=owner)
        )
    )
    assert created.token.startswith("kgp_")
    channel = grpc.insecure_channel(keygate.admin)
    auth = (("authorization", f"Bearer {created.token}"),)
    return Admin(service_grpc.AdminStub(channel), resources, service, auth), channel


def denied(call):
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
    assert "needs role" in e.value.details()
    return e.value


def test_partner_authorization_across_two_tenants(keygate, generated, admin):
    partner, shop = unique("partner"), unique("shop")
    dev, dev_ch = as_principal(keygate, generated, admin, unique("dev"), "developer", partner)
    prov, prov_ch = as_principal(keygate, generated, admin, unique("prov"), "provider", shop)
    try:
        app = dev.CreateApp(
            dev.svc.CreateAppRequest(
                app=dev.res.App(name="partner-app", owner=partner, description="private")
            )
        ).app
        denied(lambda: dev.CreateApp(
            dev.svc.CreateAppRequest(app=dev.res.App(name="x", owner=shop))
        ))

        api = prov.CreateApi(
            prov.svc.CreateApiRequest(
                api=prov.res.Api(name=unique("orders"), owner=shop, path=f"/{unique('o')}/{{*rest}}")
            )
        )
        seen = prov.GetApp(prov.svc.GetAppRequest(id=app.id))
        assert (seen.id, seen.name, seen.owner) == (app.id, "partner-app", partner)
        assert seen.description == "" and not seen.HasField("create_time")
        grant = prov.CreateGrant(
            prov.svc.CreateGrantRequest(grant=prov.res.Grant(app_id=app.id, api_id=api.id))
        )

        perms = dev.ListAppPermissions(dev.svc.ListAppPermissionsRequest(app_id=app.id))
        assert [p.api_id for p in perms.permissions] == [api.id]
        assert [a.id for a in dev.ListApps(dev.svc.ListAppsRequest()).apps] == [app.id]

        denied(lambda: dev.ListApis(dev.svc.ListApisRequest()))
        denied(lambda: dev.DeleteApi(dev.svc.DeleteApiRequest(id=api.id)))
        denied(lambda: prov.ListApps(prov.svc.ListAppsRequest()))
        denied(lambda: prov.DeleteApp(prov.svc.DeleteAppRequest(id=app.id)))
        denied(lambda: prov.ListKeyPairs(prov.svc.ListKeyPairsRequest(app_id=app.id)))
        denied(lambda: prov.ListApis(prov.svc.ListApisRequest(owner=partner)))

        events = admin.ListAuditEvents(admin.svc.ListAuditEventsRequest(page_size=1000)).events
        actors = {(e.action, e.resource_id): e.actor for e in events}
        assert actors[("CreateApp", app.id)] != "admin"
        assert actors[("CreateGrant", grant.id)] == grant.created_by != "admin"
    finally:
        dev_ch.close()
        prov_ch.close()
