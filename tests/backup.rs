//! Backup and restore against the real binary: `keygate backup` streams a running
//! keygate's store through the admin API into a file; `keygate restore` fills an empty
//! data dir from it; keygate started on that dir with the same master key holds every
//! entity exactly as before (apps, key pairs with their previous secrets, groups,
//! APIs, grants, the audit log) and a request signed with a restored secret is allowed.
//! A wrong master key, a non-empty target and an altered file are refused, leaving
//! nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::granted::{check_client, deny_code, grant_app, signed_check};
use common::{Admin, Keygate, TOKEN, command};
use keygate::pb::admin as pb;

/// Every item of one list call (page size 1000), as text.
macro_rules! listed {
    ($c:expr, $call:ident, $field:ident, $req:expr) => {
        $c.$call($req)
            .await
            .unwrap()
            .into_inner()
            .$field
            .iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<String>>()
    };
}

/// Everything the admin API lists, as text to compare.
async fn everything(c: &mut Admin) -> Vec<String> {
    let apps = c
        .list_apps(pb::ListAppsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .apps;
    let mut out: Vec<String> = apps.iter().map(|a| format!("{a:?}")).collect();
    for a in &apps {
        let req = pb::ListKeyPairsRequest {
            app_id: a.id.clone(),
            page_size: 1000,
            ..Default::default()
        };
        out.extend(listed!(c, list_key_pairs, key_pairs, req));
    }
    let size = 1000;
    out.extend(listed!(
        c,
        list_groups,
        groups,
        pb::ListGroupsRequest {
            page_size: size,
            ..Default::default()
        }
    ));
    out.extend(listed!(
        c,
        list_apis,
        apis,
        pb::ListApisRequest {
            page_size: size,
            ..Default::default()
        }
    ));
    out.extend(listed!(
        c,
        list_grants,
        grants,
        pb::ListGrantsRequest {
            page_size: size,
            ..Default::default()
        }
    ));
    out.extend(listed!(
        c,
        list_audit_events,
        events,
        pb::ListAuditEventsRequest {
            page_size: size,
            ..Default::default()
        }
    ));
    out
}

fn run(args: &[&str]) -> (bool, String) {
    let out = command()
        .args(args)
        .env("KEYGATE_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run keygate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `keygate restore --from FROM --data-dir DIR --master-key-file KEY`.
fn restore(from: &Path, dir: &Path, key: &Path) -> (bool, String) {
    run(&[
        "restore",
        "--from",
        s(from),
        "--data-dir",
        s(dir),
        "--master-key-file",
        s(key),
    ])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_store_equals_the_original_and_its_secrets_verify() {
    let kg = Keygate::start();
    let mut c = kg.admin().await;
    let g = grant_app(&mut c, "kept").await;
    c.create_group(pb::CreateGroupRequest {
        group: Some(pb::Group {
            name: "grp".into(),
            owner: "sec".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    // A second key pair whose secret was reset with a grace period: its previous
    // secret (sealed) must survive the round trip too.
    let extra = c
        .create_key_pair(pb::CreateKeyPairRequest {
            app_id: g.app_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
        app_key: extra.app_key.clone(),
        grace_period: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let before = everything(&mut c).await;

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("kg.backup");
    let admin = kg.admin_addr().to_string();
    let (ok, out) = run(&["backup", "--admin-addr", &admin, "--out", s(&file)]);
    assert!(ok, "backup failed: {out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the backup file is not private");
    }
    let raw = std::fs::read(&file).unwrap();
    assert!(
        !common::contains_bytes(&raw, g.app_secret.as_bytes()),
        "a secret in clear in the backup"
    );
    // The service kept serving while the backup was taken and streamed.
    let r = check_client(kg.check_addr())
        .await
        .check(signed_check(&g, &g.app_secret, "during"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "{r:?}");

    let key = kg.data_dir().join("master.key");
    let restored = work.path().join("restored");

    // Refused without side effects: an altered file, and a wrong master key.
    let mut altered = raw.clone();
    let mid = altered.len() / 2;
    altered[mid] ^= 1;
    let bad = work.path().join("altered.backup");
    std::fs::write(&bad, &altered).unwrap();
    let (ok, out) = restore(&bad, &restored, &key);
    assert!(!ok && out.contains("checksum"), "{out}");
    let other_key = work.path().join("other.key");
    std::fs::write(&other_key, format!("{}\n", "ab".repeat(32))).unwrap();
    let (ok, out) = restore(&file, &restored, &other_key);
    assert!(!ok && out.contains("does not open"), "{out}");
    assert!(
        !restored.join("db").exists(),
        "a failed restore left a database"
    );

    let (ok, out) = restore(&file, &restored, &key);
    assert!(ok, "restore failed: {out}");
    // Never over existing data.
    let (ok, out) = restore(&file, &restored, &key);
    assert!(!ok && out.contains("not empty"), "{out}");

    let copy = Keygate::start_in(&restored, &["--master-key-file", s(&key)]);
    let mut c2 = copy.admin().await;
    let after = everything(&mut c2).await;
    assert_eq!(before, after, "the restored store differs");
    let r = check_client(copy.check_addr())
        .await
        .check(signed_check(&g, &g.app_secret, "restored"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        deny_code(&r),
        None,
        "a restored secret does not verify: {r:?}"
    );
}
