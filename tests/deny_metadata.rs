//! What a deny tells Envoy's access log: the `CheckResponse`'s dynamic metadata, against
//! the real binary. A deny names its code, request id and scheme; it names the app only
//! once the app's signature verified (a disabled app), never for a bad signature, and
//! never carries a secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Keygate;
use common::granted::{check_client, deny_code, grant_app, signed_check};
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::google::protobuf::value::Kind;
use keygate::pb::admin as pb;

fn metadata(r: &CheckResponse) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = r
        .dynamic_metadata
        .as_ref()
        .map(|s| {
            s.fields
                .iter()
                .map(|(k, v)| {
                    let text = match &v.kind {
                        Some(Kind::StringValue(s)) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn field<'a>(m: &'a [(String, String)], k: &str) -> Option<&'a str> {
    m.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn denies_carry_their_code_and_only_a_proven_app() {
    let kg = Keygate::start();
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "meta").await;
    let mut check = check_client(kg.check_addr()).await;

    let r = check
        .check(signed_check(&g, "not-the-secret", "x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r).as_deref(), Some("SignatureMismatch"));
    let m = metadata(&r);
    assert_eq!(field(&m, "deny_code"), Some("SignatureMismatch"), "{m:?}");
    assert_eq!(field(&m, "scheme"), Some("aliyun"), "{m:?}");
    assert!(
        field(&m, "request_id").is_some_and(|id| !id.is_empty()),
        "{m:?}"
    );
    assert_eq!(
        field(&m, "app_id"),
        None,
        "an unproven caller is named: {m:?}"
    );

    admin
        .disable_app(pb::DisableAppRequest {
            id: g.app_id.clone(),
        })
        .await
        .unwrap();
    let r = check
        .check(signed_check(&g, &g.app_secret, "y"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r).as_deref(), Some("AppDisabled"));
    let m = metadata(&r);
    assert_eq!(field(&m, "deny_code"), Some("AppDisabled"), "{m:?}");
    assert_eq!(field(&m, "app_id"), Some(g.app_id.as_str()), "{m:?}");
    let all = format!("{m:?}");
    assert!(
        !all.contains(&g.app_secret),
        "a secret in the metadata: {all}"
    );
}
