//! keygate: an authorization service for signed API requests.
//!
//! A proxy (Envoy's ext_authz over gRPC or HTTP, NGINX `auth_request`) asks whether a
//! request may pass; keygate verifies its signature, freshness, the app's and key's
//! state and the app's grant, and answers with a `Decision`.
//!
//! # Layout
//! - [`request`]: `RequestView`, the one shape every front door translates into.
//! - [`scheme`]: one module per signature scheme, detection, and shared canonical helpers.
//! - [`decide`]: the pipeline (`decide()`) and the sealed `Allow`.
//! - [`deny`], [`route`], [`path`]: vocabulary with no imports of ours: deny codes and
//!   their wire statuses; path templates and the route table; the canonical form of a
//!   request's path and host that routing and grants are decided on.
//! - [`index`]: the in-memory view the check path reads; refreshed after each write.
//! - [`replay`]: the bounded in-process nonce cache; [`nonce`]: where nonces are
//!   claimed (that cache, journaled in the data dir, or Redis for several replicas).
//! - [`store`]: sled-backed persistence, sealed secrets, audit log.
//! - [`server`]: the check, http and admin listeners and their connection limits;
//!   the front doors (`server::door`) translate only, with one table of deny statuses.
//! - [`sign`]: the caller-side signer (library and `keygate sign`).
//! - [`tools`]: `keygate backup` (an admin API client) and `keygate restore`.
//! - [`cli`]: the admin CLI (`keygate app|key|group|api|grant|audit`), the shared
//!   admin-listener client (`cli::connect`) and `keygate completions`.
//! - [`config`]: flags, environment and file, resolved once; [`keyfile`]: the files
//!   that hold secrets (admin token, master key) and the data dir.
//! - [`userauth`]: user tokens (JWT) on APIs that require them; [`subject`]: the
//!   canonical client-certificate subject that names an admin principal.
//! - [`clock`], [`model`], [`telemetry`], [`pb`] (generated code).
//! - `testkit` (feature `test-util`): fixtures for tests, benches and fuzz targets.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cli;
pub mod clock;
pub mod config;
pub mod decide;
pub mod deny;
pub mod index;
pub mod keyfile;
pub mod model;
pub mod nonce;
pub mod path;
pub mod pb;
pub mod replay;
pub mod request;
pub mod route;
pub mod scheme;
pub mod server;
pub mod sign;
pub mod store;
pub mod subject;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod testkit;
pub mod tools;
pub mod usage;
pub mod userauth;
