//! `AdminError` and its mapping to gRPC status: the only place admin errors become
//! wire codes.

use tonic::{Code, Status};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A request field failed validation; `field` is its proto path (`App.name`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> AdminError {
    AdminError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Self {
        let code = match &e {
            AdminError::Invalid { .. } => Code::InvalidArgument,
            AdminError::Store(s) => match s {
                StoreError::NotFound { .. } => Code::NotFound,
                StoreError::AlreadyExists(_) => Code::AlreadyExists,
                StoreError::FailedPrecondition(_) => Code::FailedPrecondition,
                StoreError::PermissionDenied(_) => Code::PermissionDenied,
                StoreError::InvalidArgument { .. } | StoreError::Plan { .. } => {
                    Code::InvalidArgument
                }
                // The outcome of a write that failed in storage is whatever the disk
                // kept: re-read once the store has recovered. Checks keep serving.
                StoreError::Db(_) | StoreError::Reopening | StoreError::Unavailable(_) => {
                    Code::Unavailable
                }
                StoreError::Corrupt { .. }
                | StoreError::SchemaMismatch { .. }
                | StoreError::WrongMasterKey
                | StoreError::Seal(_) => Code::Internal,
            },
        };
        if matches!(code, Code::Unavailable | Code::Internal) {
            tracing::error!(error = %e, "admin call failed in the store");
        }
        Status::new(code, e.to_string())
    }
}

impl From<crate::store::backup::BackupError> for Status {
    fn from(e: crate::store::backup::BackupError) -> Self {
        use crate::store::backup::BackupError;
        match e {
            BackupError::Store(s) => AdminError::from(s).into(),
            other => {
                tracing::error!(error = %other, "backup failed");
                Status::internal(other.to_string())
            }
        }
    }
}
