//! Who uses what, through the real binary: `GetKeyPair` and `ListKeyPairs` show when
//! a key pair last signed an allowed request (and nothing for one never used), the
//! time survives a restart, and `/metrics` counts decisions per API and per app.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::granted::{check_client, deny_code, grant_app, signed_check};
use common::{Keygate, metric, now_ms};
use keygate::pb::admin as pb;

#[tokio::test]
async fn last_use_is_shown_kept_across_a_restart_and_counted() {
    let mut kg = Keygate::start();
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "used").await;
    let unused = admin
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: g.app_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let last_used = |k: pb::KeyPair| k.last_used_at.map(|t| t.seconds * 1000);
    let get = |key: String| {
        let mut a = admin.clone();
        async move {
            a.get_key_pair(pb::GetKeyPairRequest { app_key: key })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(last_used(get(g.app_key.clone()).await), None);

    let before = now_ms();
    let mut check = check_client(kg.check_addr()).await;
    let r = check
        .check(signed_check(&g, &g.app_secret, "one"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");
    let r = check
        .check(signed_check(&g, "not-the-secret-0123456789", "two"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r).as_deref(), Some("SignatureMismatch"));

    let seen = last_used(get(g.app_key.clone()).await).expect("a last use");
    assert!(seen >= before / 1000 * 1000 && seen <= now_ms(), "{seen}");
    assert_eq!(last_used(get(unused.app_key.clone()).await), None);
    let listed = admin
        .list_key_pairs(pb::ListKeyPairsRequest {
            app_id: g.app_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let used_in_list = listed
        .key_pairs
        .iter()
        .filter(|k| k.last_used_at.is_some())
        .count();
    assert_eq!(used_in_list, 1, "{listed:?}");

    let (_, text) = kg.http_get("/metrics");
    let api = admin
        .list_apis(pb::ListApisRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apis
        .remove(0)
        .id;
    let sample = format!("keygate_decisions_by_api_total{{api=\"{api}\",result=\"allow\"}}");
    assert_eq!(metric(&text, &sample), Some(1.0), "{text}");
    let app = format!(
        "keygate_decisions_by_app_total{{app=\"{}\",result=\"allow\"}}",
        g.app_id
    );
    assert_eq!(metric(&text, &app), Some(1.0), "{text}");
    // The mismatch named no app: an unproven caller is not counted under one.
    let app_denies = format!(
        "keygate_decisions_by_app_total{{app=\"{}\",result=\"deny\"}}",
        g.app_id
    );
    assert_eq!(metric(&text, &app_denies), Some(0.0), "{text}");

    // Written at shutdown: still known after a restart.
    kg.restart().await;
    let admin = kg.admin().await;
    let mut a = admin.clone();
    let again = a
        .get_key_pair(pb::GetKeyPairRequest {
            app_key: g.app_key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last_used(again), Some(seen));
}
