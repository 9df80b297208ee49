//! The check pipeline: `RequestView` in, `Decision` out.

pub mod decision;
pub mod route;

pub use decision::{Allow, Decision, Deny, DenyCode, DenyStatus};
