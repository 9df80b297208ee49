"""User token keys from a JWKS URL (an identity provider's `jwks_uri`), served here
over HTTPS by a real TLS server with its own CA (made with `cryptography`): keys are
fetched at start; a key rotated in by the provider is fetched when a token names it,
without a restart, and the retired one is refused; a flood of tokens naming unknown
keys does not become a flood of fetches; a provider that fails keeps the last good
keys; a provider unreachable at start means denies (UserInvalid), not a crash."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import tempfile
import threading
import time
import uuid
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
    launch_keygate,
    need_module,
    stop_keygate,
    unique,
)
from test_check import aliyun_sign
from test_user_auth import AUD, ISS, jwks_of, token


def make_pki(tmp: Path):
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jwks test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "server.pem").write_bytes(cert.public_bytes(pem))
    (tmp / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"


class Provider:
    """An HTTPS server answering GET /jwks.json with `self.jwks` (or `self.status`),
    counting the fetches."""

    def __init__(self, cert: Path, key: Path):
        self.jwks: dict = {"keys": []}
        self.status = 200
        self.fetches = 0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                provider.fetches += 1
                if self.path != "/jwks.json" or provider.status != 200:
                    self.send_response(404 if self.path != "/jwks.json" else provider.status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.dumps(provider.jwks).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def keys():
    need_module("jwt", "PyJWT")
    need_module("cryptography", "cryptography")
    from cryptography.hazmat.primitives.asymmetric import rsa

    return {k: rsa.generate_private_key(public_exponent=65537, key_size=2048) for k in ("rsa1", "rsa2")}


def start(tmp: Path, generated, url: str, ca: Path):
    proc, srv = launch_keygate(
        tmp,
        (
            "--user-jwks-url", url,
            "--user-jwks-ca-file", str(ca),
            "--user-jwt-issuer", ISS,
            "--user-jwt-audience", AUD,
        ),
    )
    resources, service, service_grpc = generated
    channel = grpc.insecure_channel(srv.admin)
    admin = Admin(service_grpc.AdminStub(channel), resources, service, srv.auth)
    prefix = f"/{unique('jwksurl')}"
    api = create_api(admin, f"{prefix}/{{*rest}}", user_auth_required=True)
    caller = create_caller(admin, api)
    check = Checker(srv.check)

    def ask(user_token):
        target = f"{prefix}/orders"
        sig = aliyun_sign(caller.app_key, caller.secret, "GET", target)
        return check("GET", target, {"x-user-token": user_token, **sig})

    return proc, channel, ask


def test_keys_come_from_the_url_and_follow_its_rotation(keys, generated):
    with tempfile.TemporaryDirectory(prefix="keygate-jwks-") as tmp:
        tmp = Path(tmp)
        ca, cert, key = make_pki(tmp)
        provider = Provider(cert, key)
        provider.jwks = jwks_of(("rsa1", keys["rsa1"].public_key()))
        proc, channel, ask = start(tmp, generated, provider.url, ca)
        try:
            old = token(keys["rsa1"], "RS256", kid="rsa1")
            assert_allowed(ask(old))
            assert provider.fetches >= 1

            # The provider publishes rsa2 and retires rsa1. A token naming the new
            # key makes keygate fetch again (not before 5 s after the last fetch);
            # meanwhile it is refused, then served, without a restart.
            provider.jwks = jwks_of(("rsa2", keys["rsa2"].public_key()))
            fresh = token(keys["rsa2"], "RS256", kid="rsa2")
            deadline = time.time() + 20
            while ask(fresh).ok_response is None:
                assert time.time() < deadline, "the rotated-in key was never fetched"
                time.sleep(0.25)
            assert_denied(ask(old), "UserInvalid", 401, GRPC_UNAUTHENTICATED)

            # Tokens naming unknown keys, many and fast: at most one fetch per 5 s.
            before = provider.fetches
            started = time.time()
            while time.time() - started < 6:
                bogus = token(keys["rsa1"], "RS256", kid=f"forged-{uuid.uuid4().hex[:8]}")
                assert_denied(ask(bogus), "UserInvalid", 401, GRPC_UNAUTHENTICATED)
            time.sleep(0.5)
            assert provider.fetches - before <= 2, f"{provider.fetches - before} fetches in 6 s"

            # The provider fails: the last good keys stay in use.
            provider.status = 500
            failed_from = provider.fetches
            bogus = token(keys["rsa1"], "RS256", kid="forged-again")
            ask(bogus)
            deadline = time.time() + 15
            while provider.fetches == failed_from:
                assert time.time() < deadline, "no fetch after a nudge"
                time.sleep(0.25)
            time.sleep(0.3)
            assert_allowed(ask(fresh))
        finally:
            channel.close()
            stop_keygate(proc)
            provider.close()


def test_an_unreachable_provider_at_start_means_denies_not_a_crash(keys, generated):
    with tempfile.TemporaryDirectory(prefix="keygate-jwks-") as tmp:
        tmp = Path(tmp)
        ca, cert, key = make_pki(tmp)
        provider = Provider(cert, key)
        url = provider.url
        provider.close()  # nothing listens there any more
        proc, channel, ask = start(tmp, generated, url, ca)
        try:
            resp = ask(token(keys["rsa1"], "RS256", kid="rsa1"))
            assert_denied(resp, "UserInvalid", 401, GRPC_UNAUTHENTICATED)
            log = (tmp / "stderr.log").read_text(errors="replace")
            assert "cannot fetch the user token keys" in log, log
        finally:
            channel.close()
            stop_keygate(proc)
