//! yrd-server: what every yrd-mesh process shares to serve.
//!
//! - [`serve`], [`Serving`], [`ServeOptions`]: the one place a process
//!   accepts connections, behind the shared [`layers`], with a graceful
//!   [`Serving::shutdown`] (stop accepting, let open calls finish within
//!   the grace period, then end them with `UNAVAILABLE`).
//! - [`tls_incoming`]: the TLS accept loop (concurrent handshakes, bounded
//!   in time, in total and per source; it never waits before `accept()`).
//! - [`ConnectionLimits`]: the `[connections]` section of every config.
//! - [`standard_routes`]: health and reflection (v1 and v1alpha), for
//!   every identity of the process's trust domain.
//! - [`ShutdownSignals`]: SIGINT and SIGTERM.
//! - [`read_config`], [`parse_toml`], [`ConfigError`]: config files, with
//!   errors that name the file, the key and the reason;
//!   [`check_insecure_flag`] and [`check_loopback`], the rules of insecure
//!   mode (the `--insecure` flag as well, loopback addresses only).
//! - [`layers`]: the server span and every call's status on it and in the
//!   metrics ([`layers::StatusLayer`]), the drain at the end of a shutdown
//!   ([`layers::DrainLayer`]) and the caller's bounded deadline
//!   ([`Deadline`], from [`layers::DeadlineLayer`]).
//!
//! A server, end to end:
//!
//! ```no_run
//! # async fn run(routes: tonic::service::Routes, tls: std::sync::Arc<rustls::ServerConfig>)
//! #     -> Result<(), yrd_server::ServerError> {
//! use std::time::Duration;
//! use yrd_server::{DeadlinePolicy, ServeOptions, ShutdownSignals, serve};
//!
//! let mut signals = ShutdownSignals::install()?;
//! let options = ServeOptions::new(DeadlinePolicy::at_most(Duration::from_secs(60)));
//! let serving = serve(routes, "127.0.0.1:0".parse().unwrap(), Some(tls), options).await?;
//! signals.recv().await?;
//! serving.shutdown().await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod config_file;
mod error;
mod expiry;
mod incoming;
pub mod layers;
mod limits;
mod routes;
mod serve;
mod signal;

pub use config_file::{ConfigError, check_insecure_flag, check_loopback, own_identity, parse_toml, read_config};
pub use error::ServerError;
pub use expiry::{EXPIRY_CHECK_INTERVAL, check_certificate_expiry, watch_certificate_expiry};
pub use incoming::{WARN_INTERVAL, tls_incoming, tls_incoming_with};
pub use layers::{Deadline, DeadlinePolicy};
pub use limits::{
    ConnectionLimits, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_HANDSHAKES_PER_SOURCE, DEFAULT_MAX_PENDING_ACCEPT_RESETS, HANDSHAKE_TIMEOUT_BOUNDS,
    MAX_CONCURRENT_STREAMS_BOUND, MAX_HANDSHAKES_BOUND, MAX_PENDING_ACCEPT_RESETS_BOUND,
};
pub use routes::standard_routes;
pub use serve::{DEFAULT_SHUTDOWN_GRACE, RequestSpan, ServeOptions, ServerTask, Serving, serve};
pub use signal::ShutdownSignals;
