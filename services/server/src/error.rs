//! The one error type of the crate.

/// What can go wrong while setting up or running a server. Serving has no
/// mapping to `tonic::Status`: none of these reach a caller.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listener could not be bound.
    #[error("{addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor sets.
    #[error("server reflection: {0}")]
    Reflection(String),
    /// The trust-domain rule of health and reflection could not be built
    /// (the trust domain is not valid).
    #[error("health and reflection: {0}")]
    Authorizer(String),
    /// The server task failed or panicked.
    #[error("server task: {0}")]
    Task(String),
    /// The process's signal handlers could not be installed.
    #[error("listening for {signal}: {source}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}
