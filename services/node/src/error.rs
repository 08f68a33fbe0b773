//! The node's one error type, and the one place it becomes a gRPC status.

use tonic::Status;
use yrd_query::QueryError;

use crate::store::StoreError;

/// Anything that can go wrong in the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request is invalid; reported to the caller with the field at fault.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The audit record of a request could not be written: the request fails.
    #[error("audit: {0}")]
    Audit(#[from] yrd_audit::AuditError),
    /// The region's policy refused the request: `PERMISSION_DENIED` with
    /// the reason code; the message names a field or a limit, never a value.
    #[error(transparent)]
    Denied(#[from] crate::policy::Refusal),
    /// The policy file cannot be used (file, key and reason).
    #[error("policy file: {0}")]
    Policy(yrd_server::ConfigError),
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
    /// The store holds data for another schema or region.
    #[error("store {path}: {reason}")]
    StoreMismatch {
        /// The database file.
        path: String,
        /// What does not match.
        reason: String,
    },
    /// The query ran past its deadline.
    #[error("deadline exceeded after {0} ms")]
    DeadlineExceeded(u128),
    /// The caller went away; nothing to report.
    #[error("cancelled by the caller")]
    Cancelled,
    /// A blocking task failed to run to completion.
    #[error("worker task failed: {0}")]
    Task(String),
    /// The descriptors are unusable (a build problem).
    #[error("dataset schemas: {0}")]
    Schema(String),
    /// Demo data could not be made.
    #[error("demo data: {0}")]
    Demo(String),
    /// Certificates could not be loaded or rules parsed.
    #[error(transparent)]
    Identity(#[from] yrd_identity::IdentityError),
    /// Telemetry could not be set up.
    #[error(transparent)]
    Telemetry(#[from] yrd_telemetry::TelemetryError),
    /// Serving failed (binding, reflection, the server task).
    #[error(transparent)]
    Server(#[from] yrd_server::ServerError),
    /// The gateway's on-behalf-of assertion was refused (see [`crate::obo`]);
    /// the detail names what failed, never a value of the request.
    #[error("on-behalf-of assertion refused ({}): {detail}", .refusal.reason())]
    Assertion {
        /// Why, as a stable ErrorInfo reason.
        refusal: crate::obo::Refusal,
        /// What failed.
        detail: String,
    },
    /// The caller may not do this (a role, region or sharing-class check
    /// of the access workflow); `reason` is the stable ErrorInfo code.
    #[error("{message}")]
    AccessDenied {
        /// ErrorInfo reason, such as `NOT_AN_OPERATOR`.
        reason: &'static str,
        /// What was refused; never a personal value.
        message: String,
    },
    /// The region holds no access request with this id.
    #[error("access request {id:?} does not exist in this region")]
    AccessRequestNotFound {
        /// The id asked for.
        id: String,
    },
    /// The access request's state does not allow the action.
    #[error("access request {id} is {state}, so it cannot be {action}")]
    AccessRequestState {
        /// The request id.
        id: String,
        /// Its state (`approved`, `refused`, ...).
        state: &'static str,
        /// What was asked (`decided`, `revoked`).
        action: &'static str,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<StoreError> for NodeError {
    /// The one place a store's error becomes the node's: what the caller
    /// did (a bad plan, leaving, running out of time) keeps its meaning.
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Query(q) => Self::Query(q),
            StoreError::DeadlineExceeded(ms) => Self::DeadlineExceeded(ms),
            StoreError::Cancelled => Self::Cancelled,
            StoreError::Mismatch { path, reason } => Self::StoreMismatch { path, reason },
            other => Self::Store(other),
        }
    }
}

impl From<NodeError> for Status {
    fn from(err: NodeError) -> Self {
        match err {
            NodeError::Query(q) => q.into(),
            NodeError::Audit(a) => {
                tracing::error!(error = %a, "audit record not written; the request fails");
                a.into()
            }
            NodeError::Denied(r) => r.into(),
            NodeError::DeadlineExceeded(_) => Status::deadline_exceeded(err.to_string()),
            NodeError::Cancelled => Status::cancelled(err.to_string()),
            NodeError::Assertion { refusal, .. } => {
                let mut metadata = std::collections::HashMap::new();
                if refusal == crate::obo::Refusal::ReplayCacheFull {
                    metadata.insert("limit".to_owned(), "on_behalf_of.replay_cache".to_owned());
                }
                let details = tonic_types::ErrorDetails::with_error_info(
                    refusal.reason(),
                    yrd_query::error::ERROR_DOMAIN,
                    metadata,
                );
                <Status as tonic_types::StatusExt>::with_error_details(refusal.code(), err.to_string(), details)
            }
            NodeError::AccessDenied { reason, .. } => {
                access_status(tonic::Code::PermissionDenied, reason, &[], err.to_string())
            }
            NodeError::AccessRequestNotFound { .. } => {
                access_status(tonic::Code::NotFound, "ACCESS_REQUEST_NOT_FOUND", &[], err.to_string())
            }
            NodeError::AccessRequestState { state, .. } => access_status(
                tonic::Code::FailedPrecondition,
                "ACCESS_REQUEST_STATE",
                &[("state", state)],
                err.to_string(),
            ),
            // A stored row too large to send: this region's failure (not the
            // caller's), told as it is; the message names the row by its
            // primary key and the limit, never a value of another field.
            NodeError::Store(StoreError::RowTooLarge { .. }) => {
                tracing::error!(error = %err, "a stored row is too large to send");
                access_status(
                    tonic::Code::Internal,
                    "ROW_TOO_LARGE",
                    &[("limit", "query.max_batch_bytes")],
                    err.to_string(),
                )
            }
            // Internal detail stays in this region's logs; the caller gets a
            // generic message (DESIGN: internal text never crosses a region).
            other => {
                tracing::error!(error = %other, "internal error");
                Status::internal("internal error in the region node; see its logs")
            }
        }
    }
}

/// A status with a `google.rpc.ErrorInfo` of the mesh's domain.
fn access_status(code: tonic::Code, reason: &str, metadata: &[(&str, &str)], message: String) -> Status {
    let metadata = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect::<std::collections::HashMap<_, _>>();
    let details = tonic_types::ErrorDetails::with_error_info(reason, yrd_query::error::ERROR_DOMAIN, metadata);
    <Status as tonic_types::StatusExt>::with_error_details(code, message, details)
}
