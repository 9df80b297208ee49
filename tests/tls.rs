//! TLS on the listeners and mutual TLS on admin, against the real binary, with
//! certificates generated at test time (rcgen): a CA, a server certificate for
//! `localhost`/127.0.0.1, a client certificate from that CA and one from a CA the
//! server does not trust.
//!
//! Covers: Check and health over TLS with the CA; a plaintext client refused; admin
//! refused without a client certificate or with an untrusted one (and counted as an
//! auth failure), refused with a trusted certificate but no token, served with both;
//! start-up failures with a clear message for a missing file and a key that does not
//! match the certificate; a principal named by its client certificate's subject,
//! served without a token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::granted::{deny_code, grant_app, signed_check};
use common::{Bearer, Keygate, TOKEN, run_to_exit};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keygate::pb::admin as pb;
use keygate::pb::admin::admin_client::AdminClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A CA that can issue certificates.
struct Ca {
    pem: String,
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names`, for a server or a client.
    fn issue(&self, names: &[&str], server: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// (certificate PEM, key PEM) of a client whose subject is exactly `dn`, in order.
    fn client_with_subject(&self, dn: &[(DnType, &str)]) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Everything a TLS test needs, written to a temp dir.
struct Pki {
    _dir: tempfile::TempDir,
    ca: String,
    ca_der: Vec<u8>,
    server_cert: PathBuf,
    server_key: PathBuf,
    ca_file: PathBuf,
    client: Identity,
    untrusted_client: Identity,
    /// Subject O=acme, CN=ci-deployer (in that order), and its PEM files.
    deployer: Identity,
    deployer_files: (PathBuf, PathBuf),
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keygate test CA");
    let (scert, skey) = ca.issue(&["localhost", "127.0.0.1"], true);
    let (ccert, ckey) = ca.issue(&["operator"], false);
    let (dcert, dkey) = ca.client_with_subject(&[
        (DnType::OrganizationName, "acme"),
        (DnType::CommonName, "ci-deployer"),
    ]);
    let rogue = Ca::new("someone else's CA");
    let (rcert, rkey) = rogue.issue(&["intruder"], false);
    Pki {
        server_cert: write(dir.path(), "server.pem", &scert),
        server_key: write(dir.path(), "server.key", &skey),
        ca_file: write(dir.path(), "ca.pem", &ca.pem),
        ca_der: ca.der.clone(),
        ca: ca.pem.clone(),
        client: Identity::from_pem(ccert, ckey),
        untrusted_client: Identity::from_pem(rcert, rkey),
        deployer_files: (
            write(dir.path(), "deployer.pem", &dcert),
            write(dir.path(), "deployer.key", &dkey),
        ),
        deployer: Identity::from_pem(dcert, dkey),
        _dir: dir,
    }
}

fn start_tls(p: &Pki) -> Keygate {
    Keygate::start_with_args(&[
        "--tls-cert",
        p.server_cert.to_str().unwrap(),
        "--tls-key",
        p.server_key.to_str().unwrap(),
        "--admin-client-ca",
        p.ca_file.to_str().unwrap(),
    ])
}

/// A TLS channel to `addr` trusting the test CA, with an optional client identity.
async fn tls_channel(
    addr: std::net::SocketAddr,
    p: &Pki,
    id: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&p.ca))
        .domain_name("localhost");
    if let Some(id) = id {
        tls = tls.identity(id);
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// GET `path` on the http listener over TLS, trusting the test CA; (status, body).
async fn https_get(addr: std::net::SocketAddr, p: &Pki, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(tokio_rustls::rustls::pki_types::CertificateDer::from(
            p.ca_der.clone(),
        ))
        .unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS to the http listener: {e}"));
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// `/metrics` over https: the http listener serves TLS too when a certificate is set.
async fn auth_failures(kg: &Keygate, p: &Pki) -> u64 {
    let (status, body) = https_get(kg.http_addr(), p, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find(|l| l.starts_with("keygate_admin_auth_failures_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no admin auth failure counter in /metrics:\n{body}"))
}

/// An admin call over `channel` (if it could connect at all) with `token`.
async fn admin_call(
    channel: Result<Channel, tonic::transport::Error>,
    token: Option<&str>,
) -> Result<(), String> {
    let channel = channel.map_err(|e| format!("connect: {e}"))?;
    let req = pb::ListAppsRequest::default();
    let r = match token {
        Some(t) => AdminClient::with_interceptor(channel, Bearer::new(t))
            .list_apps(req)
            .await
            .map(drop),
        None => AdminClient::new(channel).list_apps(req).await.map(drop),
    };
    r.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test]
async fn admin_needs_client_certificate_and_token() {
    let p = pki();
    let kg = start_tls(&p);
    let admin = kg.admin_addr();
    let before = auth_failures(&kg, &p).await;

    // No client certificate: the handshake is refused, the token never matters.
    let r = admin_call(tls_channel(admin, &p, None).await, Some(TOKEN)).await;
    assert!(r.is_err(), "admin without a client certificate was served");
    // A certificate from a CA the server does not trust: refused too.
    let r = admin_call(
        tls_channel(admin, &p, Some(p.untrusted_client.clone())).await,
        Some(TOKEN),
    )
    .await;
    assert!(
        r.is_err(),
        "admin with an untrusted client certificate was served"
    );
    // Plaintext: refused.
    let plain = Channel::from_shared(format!("http://{admin}"))
        .unwrap()
        .connect()
        .await;
    assert!(admin_call(plain, Some(TOKEN)).await.is_err());
    // The server counts and logs a refused handshake right after sending its alert,
    // so the client may see the refusal first: poll (the deadline is a hang guard).
    let started = std::time::Instant::now();
    while auth_failures(&kg, &p).await < before + 2
        || !kg.stderr().contains("TLS handshake refused")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "refused client certificates must be counted ({} < {}) and logged:\n{}",
            auth_failures(&kg, &p).await,
            before + 2,
            kg.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // A trusted certificate without the token: the token is still required.
    let r = admin_call(tls_channel(admin, &p, Some(p.client.clone())).await, None).await;
    let e = r.expect_err("a client certificate alone must not be enough");
    assert!(e.starts_with("Unauthenticated"), "{e}");
    let r = admin_call(
        tls_channel(admin, &p, Some(p.client.clone())).await,
        Some("not-the-token-0123456789"),
    )
    .await;
    assert!(r.expect_err("wrong token").starts_with("Unauthenticated"));

    // Both: served.
    admin_call(
        tls_channel(admin, &p, Some(p.client.clone())).await,
        Some(TOKEN),
    )
    .await
    .expect("a trusted client certificate plus the token is served");
}

#[tokio::test]
async fn check_over_tls_and_plaintext_refused() {
    let p = pki();
    let kg = start_tls(&p);

    // Set up an app through admin (mTLS + token), then check a signed request over TLS.
    let admin_ch = tls_channel(kg.admin_addr(), &p, Some(p.client.clone()))
        .await
        .unwrap();
    let mut admin = AdminClient::with_interceptor(admin_ch, Bearer::new(TOKEN));
    let g = grant_app(&mut admin, "tlsapp").await;

    // The check listener needs no client certificate.
    let ch = tls_channel(kg.check_addr(), &p, None).await.unwrap();
    let health = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING over TLS");
    let mut check = AuthorizationClient::new(ch);
    let r = check
        .check(signed_check(&g, &g.app_secret, "x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");
    let r = check
        .check(signed_check(&g, "not-the-secret-000000000", "x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r).as_deref(), Some("SignatureMismatch"));

    // A plaintext client gets nothing from a TLS listener.
    let plain = async {
        let ch = Channel::from_shared(format!("http://{}", kg.check_addr()))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        AuthorizationClient::new(ch)
            .check(signed_check(&g, &g.app_secret, "y"))
            .await
            .map_err(|e| e.to_string())
    };
    assert!(plain.await.is_err(), "plaintext Check was answered");

    // A client that does not trust the server's CA refuses the server.
    let other = Ca::new("unrelated CA");
    let untrusting = Channel::from_shared(format!("https://{}", kg.check_addr()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&other.pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await;
    assert!(untrusting.is_err());
}

#[test]
fn bad_certificate_files_fail_start_with_a_clear_message() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let other_key = write(
        dir.path(),
        "other.key",
        &KeyPair::generate().unwrap().serialize_pem(),
    );
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    let missing = dir.path().join("missing.pem");
    let base = |cert: &Path, key: &Path| -> Vec<String> {
        [
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--check-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            base(&p.server_cert, &other_key),
            vec!["do not go together", "server.pem", "other.key"],
        ),
        (
            base(&missing, &p.server_key),
            vec!["cannot read TLS certificate", "missing.pem"],
        ),
        (
            base(&garbage, &p.server_key),
            vec!["garbage.pem", "no CERTIFICATE"],
        ),
        (
            base(&p.server_cert, &garbage),
            vec!["TLS key", "garbage.pem"],
        ),
        (
            {
                let mut a = base(&p.server_cert, &p.server_key);
                a.extend(["--admin-client-ca".into(), missing.to_str().unwrap().into()]);
                a
            },
            vec!["admin client CA", "missing.pem"],
        ),
        (
            {
                let mut a = base(&p.server_cert, &p.server_key);
                a.truncate(a.len() - 2);
                a
            },
            vec!["tls_cert is set but tls_key is not"],
        ),
    ];
    for (args, wants) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, stderr) = run_to_exit(&args);
        assert!(!status.success(), "{args:?} started");
        for w in wants {
            assert!(
                stderr.contains(w),
                "{args:?}: stderr lacks {w:?}:\n{stderr}"
            );
        }
    }
}

/// A principal named by a client-certificate subject is served on that certificate
/// alone; a token, when sent, still decides; an unmapped certificate needs a token.
#[tokio::test]
async fn a_principal_is_named_by_its_client_certificate_subject() {
    let p = pki();
    let kg = start_tls(&p);
    let addr = kg.admin_addr();
    let admin_channel = tls_channel(addr, &p, Some(p.client.clone())).await.unwrap();
    let mut admin = AdminClient::with_interceptor(admin_channel, Bearer::new(TOKEN));
    let principal = |name: &str, subject: &str| pb::CreatePrincipalRequest {
        principal: Some(pb::Principal {
            name: name.into(),
            role: "developer".into(),
            owner: "acme".into(),
            cert_subject: subject.into(),
            ..Default::default()
        }),
    };
    let created = admin
        .create_principal(principal("ci", "cn=ci-deployer, o=acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        created.principal.unwrap().cert_subject,
        "CN=ci-deployer,O=acme"
    );
    let e = admin
        .create_principal(principal("ci2", "O=acme,CN=ci-deployer"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    let e = admin
        .create_principal(principal("ci3", "XX=1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("Principal.cert_subject:"), "{e:?}");

    // The certificate alone: the principal, within its role.
    let mut ci = AdminClient::new(
        tls_channel(addr, &p, Some(p.deployer.clone()))
            .await
            .unwrap(),
    );
    let me = ci
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((me.name.as_str(), me.role.as_str()), ("ci", "developer"));
    let app = |owner: &str| pb::CreateAppRequest {
        app: Some(pb::App {
            name: "deployed".into(),
            owner: owner.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let made = ci.create_app(app("acme")).await.unwrap().into_inner();
    let e = ci.create_app(app("zeta")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let ev = events
        .iter()
        .find(|e| e.resource_id == made.app.as_ref().unwrap().id)
        .expect("the CreateApp event");
    assert_eq!(ev.actor, "ci");

    // The CLI, with the certificate and no token at all.
    let addr_s = addr.to_string();
    let out = common::cli::run_env(
        &[
            "whoami",
            "--admin-addr",
            &addr_s,
            "--tls-ca",
            p.ca_file.to_str().unwrap(),
            "--client-cert",
            p.deployer_files.0.to_str().unwrap(),
            "--client-key",
            p.deployer_files.1.to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["name"], "ci", "{}", out.stdout);

    // A token, when sent, decides: a wrong one is refused over that certificate.
    let r = admin_call(
        tls_channel(addr, &p, Some(p.deployer.clone())).await,
        Some("not-the-token-0123456789"),
    )
    .await;
    assert!(r.expect_err("wrong token").starts_with("Unauthenticated"));
    // A certificate no principal names still needs a token.
    let r = admin_call(tls_channel(addr, &p, Some(p.client.clone())).await, None).await;
    assert!(r.expect_err("unmapped").starts_with("Unauthenticated"));

    // Deleting the principal ends the certificate's access at once.
    admin
        .delete_principal(pb::DeletePrincipalRequest { name: "ci".into() })
        .await
        .unwrap();
    let e = ci.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
}
