//! `keygate rotate-master-key` against the real binary and a store it wrote.
//!
//! Apps, key pairs (one reset with a grace period, so a previous secret is sealed too)
//! and an AppCode are created through a running server; the server is stopped; the
//! key is rotated; the restarted server still allows requests signed with the same
//! secrets and the AppCode; the old key no longer opens the store; no secret is in the
//! files in clear. Also: rotation refuses while the server holds the data dir, takes
//! a given new key, and finishes an interrupted rotation (crash between the store
//! commit and the key file swap).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Stdio;

use common::granted::{Granted, appcode_check, check_client, deny_code, grant_app, signed_check};
use common::{Keygate, contains_bytes, files_under, run_to_exit};
use keygate::pb::admin as pb;

/// Runs `keygate rotate-master-key <args>`; returns (success, stdout, stderr).
fn rotate(args: &[&str]) -> (bool, String, String) {
    let out = common::command()
        .arg("rotate-master-key")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run keygate rotate-master-key");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that every credential in `creds` is allowed by the running server.
async fn assert_allowed(kg: &Keygate, g: &Granted, secrets: &[&str]) {
    let mut check = check_client(kg.check_addr()).await;
    for (i, s) in secrets.iter().enumerate() {
        let r = check
            .check(signed_check(g, s, &format!("sig{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(deny_code(&r), None, "secret #{i}: {r:?}");
    }
    let r = check
        .check(appcode_check(g, &g.app_code, "code"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r), None, "AppCode: {r:?}");
    // And a wrong secret is still refused.
    let r = check
        .check(signed_check(g, "definitely-not-the-secret-0", "bad"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deny_code(&r).as_deref(), Some("SignatureMismatch"));
}

fn serve_args(data: &Path) -> Vec<String> {
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
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test]
async fn rotation_keeps_every_secret_and_retires_the_old_key() {
    let mut kg = Keygate::start();
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "rot").await;
    // Reset with a grace period: the first secret becomes the sealed previous secret.
    let reset = admin
        .reset_key_pair_secret(pb::ResetKeyPairSecretRequest {
            app_key: g.app_key.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            app_secret: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (previous, current) = (g.app_secret.clone(), reset.app_secret.clone());
    // A second app without an AppCode change, and an extra key pair.
    let g2 = grant_app(&mut admin, "rot2").await;
    assert_allowed(&kg, &g, &[&current, &previous]).await;
    drop(admin);

    let data = kg.data_dir().to_owned();
    let data_arg = data.to_str().unwrap().to_owned();
    let key_file = data.join("master.key");

    // While the server holds the data dir: refused, nothing changed.
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    let (ok, _, err) = rotate(&["--data-dir", &data_arg]);
    assert!(!ok, "rotation ran while the server held the store");
    assert!(
        err.contains("in use") && err.contains("stop the service"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), old_key);

    kg.stop().await;
    let (ok, out, err) = rotate(&["--data-dir", &data_arg]);
    assert!(ok, "rotate failed: {err}");
    assert!(
        out.contains("re-encrypted 2 key pairs (1 previous secrets) and 2 AppCodes"),
        "{out}"
    );
    let new_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(new_key.trim(), old_key.trim());
    assert_eq!(new_key.trim().len(), 64);
    assert!(
        !data.join("master.key.new").exists(),
        "staging file left behind"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // No secret in clear anywhere in the data dir.
    for f in files_under(&data) {
        let bytes = std::fs::read(&f).unwrap();
        for s in [
            &current,
            &previous,
            &g.app_code,
            &g2.app_secret,
            &g2.app_code,
        ] {
            assert!(
                !contains_bytes(&bytes, s.as_bytes()),
                "a secret in clear in {}",
                f.display()
            );
        }
        assert!(
            !contains_bytes(&bytes, old_key.trim().as_bytes()),
            "the old key is still in {}",
            f.display()
        );
    }

    // Restarted under the new key: same secrets, same AppCode, still allowed.
    kg.restart().await;
    assert_allowed(&kg, &g, &[&current, &previous]).await;
    assert_allowed(&kg, &g2, &[&g2.app_secret]).await;
    // Writes work under the new key and survive another restart.
    let mut admin = kg.admin().await;
    let g3 = grant_app(&mut admin, "rot3").await;
    drop(admin);
    kg.restart().await;
    assert_allowed(&kg, &g3, &[&g3.app_secret]).await;
    kg.stop().await;

    // The old key no longer opens the store.
    let dir = tempfile::tempdir().unwrap();
    let old_file = dir.path().join("old.key");
    std::fs::write(&old_file, &old_key).unwrap();
    let mut args = serve_args(&data);
    args.extend([
        "--master-key-file".into(),
        old_file.to_str().unwrap().into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stderr) = run_to_exit(&args);
    assert!(!status.success());
    assert!(stderr.contains("master key does not open"), "{stderr}");
}

#[tokio::test]
async fn given_key_and_interrupted_rotation() {
    let mut kg = Keygate::start();
    let mut admin = kg.admin().await;
    let g = grant_app(&mut admin, "given").await;
    drop(admin);
    kg.stop().await;
    let data = kg.data_dir().to_owned();
    let data_arg = data.to_str().unwrap().to_owned();
    let key_file = data.join("master.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();

    // The same key again: refused.
    let (ok, _, err) = rotate(&[
        "--data-dir",
        &data_arg,
        "--new-key-file",
        key_file.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("the new key is the current key"), "{err}");

    // A given key.
    let dir = tempfile::tempdir().unwrap();
    let given = dir.path().join("given.key");
    let given_hex = "ab".repeat(32);
    std::fs::write(&given, format!("{given_hex}\n")).unwrap();
    let (ok, _, err) = rotate(&[
        "--data-dir",
        &data_arg,
        "--new-key-file",
        given.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        given_hex
    );

    // Simulate a crash after the store commit and before the key file swap: the store
    // is under the given key, the key file still holds the old one, the staged key
    // is beside it. serve refuses with a pointer to the fix; a rerun finishes.
    std::fs::write(data.join("master.key.new"), format!("{given_hex}\n")).unwrap();
    std::fs::write(&key_file, &old_key).unwrap();
    let args = serve_args(&data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stderr) = run_to_exit(&args);
    assert!(!status.success());
    assert!(
        stderr.contains("rotation was interrupted") && stderr.contains("rotate-master-key"),
        "{stderr}"
    );
    let (ok, out, err) = rotate(&["--data-dir", &data_arg]);
    assert!(ok, "{err}");
    assert!(out.contains("finished an interrupted rotation"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        given_hex
    );
    assert!(!data.join("master.key.new").exists());

    kg.restart().await;
    assert_allowed(&kg, &g, &[&g.app_secret]).await;

    // No store: a clear error.
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = rotate(&["--data-dir", empty.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no store"), "{err}");
}
