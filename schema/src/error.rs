//! The store's one error type. The edge maps each variant to a problem+json answer.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or state rule refused the write; `code` is the stable problem code.
    #[error("conflict: {code}")]
    Conflict {
        code: &'static str,
        field: Option<&'static str>,
        detail: String,
    },
    /// A one-time thing (a binding link) was already used or has expired.
    #[error("gone")]
    Gone,
    /// A referenced row does not exist or is not the caller's tenant's.
    #[error("invalid reference in {field}")]
    InvalidReference { field: &'static str, detail: String },
    /// A field's value breaks a rule only the data as it stands in the write can judge
    /// (a department moved under itself).
    #[error("{field} breaks {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
        detail: String,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        StoreError::Backend(Box::new(e))
    }

    pub fn conflict(
        code: &'static str,
        field: Option<&'static str>,
        detail: impl Into<String>,
    ) -> Self {
        StoreError::Conflict {
            code,
            field,
            detail: detail.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
