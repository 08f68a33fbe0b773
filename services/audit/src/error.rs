//! The crate's one error type, and the one place it becomes a gRPC status.

use std::path::PathBuf;

use tonic::Status;

/// Anything that can go wrong writing, reading or verifying an audit log.
/// No variant carries a record's content, only names and positions.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// A config key is invalid.
    #[error("audit config: {key}: {reason}")]
    Config {
        /// The key at fault.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// A file or directory could not be read, written or synced.
    #[error("audit log {}: {reason}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// A record is inconsistent: reopening refuses the log, a verifier names
    /// the first bad record.
    #[error("{}:{line}: {}{reason}", file.display(), seq.map(|s| format!("seq {s}: ")).unwrap_or_default())]
    BadRecord {
        /// The file.
        file: PathBuf,
        /// The line number, from 1.
        line: u64,
        /// The record's seq, when it could be read.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// A record would be longer than a line may be.
    #[error("audit record of {size} bytes exceeds the limit max_line_bytes = {limit}")]
    RecordTooLarge {
        /// The record's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An earlier write or sync failed: the log accepts no more records
    /// until it is reopened.
    #[error("the audit log refuses appends after an earlier failure: {0}")]
    Failed(String),
    /// The log was closed, or is disabled.
    #[error("the audit log is closed")]
    Closed,
    /// The signer cannot be used.
    #[error("audit signer: {0}")]
    Signer(String),
}

impl AuditError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, e: &std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            reason: e.to_string(),
        }
    }
}

impl From<AuditError> for Status {
    /// The one mapping to a status. A request whose record cannot be written
    /// fails as unavailable, without the log's internal text (file names,
    /// system errors), which stays in the process's own logs.
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::RecordTooLarge { limit, .. } => {
                Status::resource_exhausted(format!("the audit record exceeds the limit max_line_bytes = {limit}"))
            }
            AuditError::Config { .. } | AuditError::Signer(_) => Status::internal("the audit log is misconfigured"),
            AuditError::Io { .. } | AuditError::BadRecord { .. } | AuditError::Failed(_) | AuditError::Closed => {
                Status::unavailable("the audit log cannot be written")
            }
        }
    }
}
