//! Errors a write can meet before it changes anything.

use serde::{Deserialize, Serialize};

/// A manifest that cannot be a resource: malformed document, unknown kind,
/// bad name, bad field. Always names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Parse(String),
    #[error("unknown kind '{0}' (expected one of: Cluster, Service, Endpoints, TrafficSplit, FailoverPolicy)")]
    UnknownKind(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ModelError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a planned write was refused. Deterministic: every replica that plans
/// the same command against the same state reaches the same rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectionCode {
    /// The write itself is malformed.
    InvalidArgument,
    /// The write refers to something that does not exist, or is still referred to.
    FailedPrecondition,
    /// The expected revision did not match (optimistic concurrency).
    Aborted,
    /// The named resource does not exist.
    NotFound,
}

impl Rejection {
    pub fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(RejectionCode::FailedPrecondition, message)
    }
}

impl From<ModelError> for Rejection {
    fn from(e: ModelError) -> Self {
        Rejection::new(RejectionCode::InvalidArgument, e.to_string())
    }
}
