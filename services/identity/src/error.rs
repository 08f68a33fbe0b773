//! The one error type of the crate, and the one place it becomes a `tonic::Status`.

use std::path::PathBuf;

/// Everything that can go wrong with identities, certificates and TLS
/// configuration. Messages name the file or the value at fault, so that an
/// operator can act on them without reading code.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that must not be overwritten is already there.
    #[error("{}: already exists; refusing to overwrite {what}", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
        /// What it holds, such as "the mesh CA".
        what: &'static str,
    },
    /// Half of a key pair is on disk and the other half is missing.
    #[error("{}: missing, but {} exists; restore it or remove both", missing.display(), present.display())]
    Incomplete {
        /// The file that is missing.
        missing: PathBuf,
        /// The file that exists.
        present: PathBuf,
    },
    /// A signature could not be made or does not verify.
    #[error("signature: {0}")]
    Signature(String),
    /// A PEM file (or in-memory PEM) has no usable content.
    #[error("{source_name}: {reason}")]
    Pem {
        /// The file name, or a description such as "the CA certificate PEM".
        source_name: String,
        /// What was wrong.
        reason: String,
    },
    /// A certificate could not be parsed or lacks what the mesh needs.
    #[error("{source_name}: {reason}")]
    Certificate {
        /// The file name, or a description such as "the peer certificate".
        source_name: String,
        /// What was wrong.
        reason: String,
    },
    /// A mesh identity (SPIFFE URI) is malformed.
    #[error("invalid mesh identity {value:?}: {reason}")]
    InvalidPeerId {
        /// The text as given.
        value: String,
        /// What was wrong.
        reason: String,
    },
    /// A trust domain is malformed.
    #[error("invalid trust domain {value:?}: {reason}")]
    InvalidTrustDomain {
        /// The text as given.
        value: String,
        /// What was wrong.
        reason: String,
    },
    /// A certificate request cannot be honoured.
    #[error("cannot issue a certificate for {id}: {reason}")]
    InvalidRequest {
        /// The identity requested.
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// The CA in a directory belongs to another trust domain.
    #[error("{}: the CA is for trust domain {found:?}, not {expected:?}", path.display())]
    TrustDomainMismatch {
        /// The CA certificate file.
        path: PathBuf,
        /// The trust domain asked for.
        expected: String,
        /// The trust domain the CA certificate names.
        found: String,
    },
    /// An authorization rule in configuration does not parse.
    #[error("invalid allow rule {rule:?}: {reason}")]
    InvalidRule {
        /// The rule as written.
        rule: String,
        /// What was wrong.
        reason: String,
    },
    /// rcgen refused to generate or sign.
    #[error("{what}: {source}")]
    Generate {
        /// What was being generated, such as "the CA certificate".
        what: String,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// rustls refused the configuration (for example a key that does not match
    /// its certificate).
    #[error("{what}: {source}")]
    Tls {
        /// What was being configured.
        what: &'static str,
        /// The underlying error.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The caller presented no client certificate (plaintext, or TLS without
    /// client authentication).
    #[error("a client certificate from the mesh CA is required")]
    Unauthenticated,
    /// The caller's certificate names no usable mesh identity.
    #[error("the client certificate names no mesh identity: {reason}")]
    NoIdentity {
        /// What was wrong with it.
        reason: String,
    },
    /// The caller is authenticated but not allowed to call this service.
    #[error("{peer} may not call this service; it accepts {accepts}")]
    PermissionDenied {
        /// The caller's identity (its URI).
        peer: String,
        /// The allow rules, joined for display.
        accepts: String,
    },
}

impl IdentityError {
    /// An I/O error about `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// An rcgen error while making `what`.
    pub(crate) fn generate(what: impl Into<String>, source: rcgen::Error) -> Self {
        Self::Generate {
            what: what.into(),
            source,
        }
    }
}

/// The one mapping from [`IdentityError`] to a gRPC status. Only the
/// authentication and authorization outcomes are meant for callers; anything
/// else is an internal fault whose text (file paths, parser details) stays in
/// this process's logs.
impl From<IdentityError> for tonic::Status {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Unauthenticated | IdentityError::NoIdentity { .. } => {
                tonic::Status::unauthenticated(e.to_string())
            }
            IdentityError::PermissionDenied { .. } => tonic::Status::permission_denied(e.to_string()),
            _ => tonic::Status::internal("internal identity error"),
        }
    }
}
