//! keygate: an authorization service for signed API requests.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod clock;
pub mod config;
pub mod decide;
pub mod index;
pub mod model;
pub mod pb;
pub mod request;
pub mod scheme;
pub mod server;
pub mod sign;
pub mod store;

