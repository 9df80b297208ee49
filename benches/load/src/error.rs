//! The load generator's one error type: a message saying what failed and why.
//!
//! Owns: turning any library error into a line for the operator. A bench tool stops at
//! the first failure, so there is nothing to match on, only something to print.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to an error.
pub trait Context<T> {
    fn ctx(self, what: impl Display) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }
}

impl<T> Context<T> for Option<T> {
    fn ctx(self, what: impl Display) -> Result<T> {
        self.ok_or_else(|| Error(what.to_string()))
    }
}

pub fn fail<T>(message: impl Display) -> Result<T> {
    Err(Error(message.to_string()))
}
