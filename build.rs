//! Compiles the admin API protos with protox (pure Rust: CI machines have no protoc)
//! and writes the descriptor sets that server reflection serves: our own admin API and
//! Envoy's `envoy.service.auth.v3` (from the protos the envoy-types crate ships).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=Cargo.lock");

    let mut admin = protox::Compiler::new(["proto"])?;
    admin
        .include_imports(true)
        .include_source_info(true)
        .open_files(["keygate/admin/v1/service.proto"])?;
    // compile_fds skips protoc and so writes no descriptor file: write it ourselves.
    std::fs::write(
        out.join("admin_descriptor.bin"),
        admin.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(admin.file_descriptor_set())?;

    let envoy = envoy_types_dir()?.join("proto");
    // tests/envoy_configs.rs checks the example Envoy configs against these protos.
    println!(
        "cargo:rustc-env=KEYGATE_ENVOY_PROTO_DIR={}",
        envoy.display()
    );
    let includes =
        ["data-plane-api", "xds", "protoc-gen-validate", "googleapis"].map(|d| envoy.join(d));
    let mut authz = protox::Compiler::new(includes)?;
    authz
        .include_imports(true)
        .include_source_info(false)
        .open_files(["envoy/service/auth/v3/external_auth.proto"])?;
    std::fs::write(
        out.join("envoy_authz_descriptor.bin"),
        authz.encode_file_descriptor_set(),
    )?;
    Ok(())
}

/// Where cargo unpacked the envoy-types crate, so its `.proto` files can be compiled
/// into a descriptor set (the crate ships generated code but exports no descriptors).
fn envoy_types_dir() -> Result<PathBuf, BoxError> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = env::var("CARGO_MANIFEST_DIR")?;
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(Path::new(&manifest).join("Cargo.toml"))
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let json = String::from_utf8(output.stdout)?;
    // Each package has "manifest_path":"<dir>/Cargo.toml"; pick envoy-types' one.
    json.split("\"manifest_path\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|p| p.contains("envoy-types-"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
        .ok_or_else(|| "envoy-types not found in cargo metadata".into())
}
