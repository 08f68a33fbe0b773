//! The gateway's one error type, and the one place it becomes a status.

use tonic::Status;
use yrd_query::QueryError;

/// Anything that can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is invalid.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// ALL_REGIONS was asked and some regions failed.
    #[error("regions unavailable under ALL_REGIONS: {}", .0.iter().map(|(r, why)| format!("{r} ({why})")).collect::<Vec<_>>().join(", "))]
    RegionsFailed(Vec<(String, String)>),
    /// A region refused the request as the caller's fault (a limit of its
    /// own, such as `max_groups`): the whole answer is that refusal.
    #[error("region {region}: {}", status.message())]
    Refused {
        /// The region.
        region: String,
        /// The region's status, with its error details.
        status: Status,
    },
    /// A region named in the request is not part of the federation.
    #[error("regions: {0} is not a region of this federation")]
    UnknownRegion(String),
    /// A region has no healthy endpoint, so its call fails at once rather
    /// than waiting for one; the text names each endpoint's last error.
    #[error("{0}")]
    NoHealthyNode(String),
    /// A region did not answer before the caller's deadline: the client
    /// stack's own timer fired.
    #[error("the region did not answer before the deadline")]
    RegionDeadline,
    /// The caller's deadline had passed before a region could be called.
    #[error("no time left before the deadline")]
    NoTimeLeft,
    /// A region's node answered with an error status, passed on as it came.
    #[error("{}", .0.message())]
    Node(Status),
    /// The configuration cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// Certificates could not be loaded.
    #[error(transparent)]
    Identity(#[from] yrd_identity::IdentityError),
    /// Telemetry could not be set up.
    #[error(transparent)]
    Telemetry(#[from] yrd_telemetry::TelemetryError),
    /// Serving failed (binding, reflection, the server task).
    #[error(transparent)]
    Server(#[from] yrd_server::ServerError),
    /// A socket could not be bound.
    #[error("{addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A background task failed.
    #[error("task failed: {0}")]
    Task(String),
    /// The caller's identity may not use this method: operators and
    /// auditors do not read data.
    #[error("{peer} is {kind}: operators and auditors do not read data, only applications do")]
    NotAnApplication {
        /// The caller's identity.
        peer: String,
        /// Its kind, with its article (`an operator`).
        kind: &'static str,
    },
    /// The audit record could not be written: the request is refused
    /// rather than served unrecorded.
    #[error(transparent)]
    Audit(#[from] yrd_audit::AuditError),
    /// An on-behalf-of assertion could not be made.
    #[error("on-behalf-of assertion: {0}")]
    Assertion(String),
    /// The caller's role does not allow this call (the access workflow
    /// and the audit); `reason` is the stable ErrorInfo code.
    #[error("{message}")]
    AccessDenied {
        /// ErrorInfo reason, such as `NOT_AN_OPERATOR`.
        reason: &'static str,
        /// What was refused.
        message: String,
    },
}

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Self {
        match err {
            GatewayError::Query(q) => q.into(),
            GatewayError::UnknownRegion(_) => {
                let details = tonic_types::ErrorDetails::with_bad_request_violation(
                    "regions",
                    err.to_string().trim_start_matches("regions: ").to_owned(),
                );
                <Status as tonic_types::StatusExt>::with_error_details(
                    tonic::Code::InvalidArgument,
                    err.to_string(),
                    details,
                )
            }
            GatewayError::RegionsFailed(_) | GatewayError::NoHealthyNode(_) => Status::unavailable(err.to_string()),
            GatewayError::RegionDeadline | GatewayError::NoTimeLeft => Status::deadline_exceeded(err.to_string()),
            GatewayError::Node(status) => status,
            GatewayError::Audit(e) => e.into(),
            GatewayError::NotAnApplication { .. } => {
                let details = tonic_types::ErrorDetails::with_error_info(
                    "NOT_AN_APPLICATION",
                    yrd_query::error::ERROR_DOMAIN,
                    std::collections::HashMap::new(),
                );
                <Status as tonic_types::StatusExt>::with_error_details(
                    tonic::Code::PermissionDenied,
                    err.to_string(),
                    details,
                )
            }
            GatewayError::AccessDenied { reason, .. } => {
                let details = tonic_types::ErrorDetails::with_error_info(
                    reason,
                    yrd_query::error::ERROR_DOMAIN,
                    std::collections::HashMap::new(),
                );
                <Status as tonic_types::StatusExt>::with_error_details(
                    tonic::Code::PermissionDenied,
                    err.to_string(),
                    details,
                )
            }
            // The region's code and details (BadRequest, ErrorInfo naming the
            // limit) go to the caller as they are; the message names the region.
            GatewayError::Refused { ref status, .. } => {
                Status::with_details(status.code(), err.to_string(), status.details().to_vec().into())
            }
            other => {
                tracing::error!(error = %other, "internal error");
                Status::internal("internal error in the gateway; see its logs")
            }
        }
    }
}
