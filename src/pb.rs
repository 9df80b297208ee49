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

/// A gRPC code as the proto spells it (`INVALID_ARGUMENT`), for one-line errors that
/// match the API's documentation rather than tonic's Rust names.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
