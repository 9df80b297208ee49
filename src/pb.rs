//! Generated protobuf and gRPC code, fenced off from the logic (converted at the
//! admin edge in `server::admin::convert`), and the descriptor sets for reflection.

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    rust_2018_idioms
)]
pub mod admin {
    tonic::include_proto!("keygate.admin.v1");
}

/// Descriptor set of `keygate.admin.v1` (and its imports) for server reflection.
pub const ADMIN_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("admin_descriptor");

/// Descriptor set of `envoy.service.auth.v3` (and its imports), compiled by `build.rs`
/// from the protos the envoy-types crate ships, for reflection on the check listener.
pub const ENVOY_AUTHZ_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("envoy_authz_descriptor");
