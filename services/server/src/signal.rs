//! The signals that stop a mesh process: Ctrl-C (SIGINT) everywhere, and
//! SIGTERM on Unix, which is what `docker stop`, systemd and Kubernetes send.

use crate::ServerError;

/// Handlers for SIGINT and SIGTERM, installed at once: a signal that comes
/// while the process is still starting waits here instead of taking the
/// default action (which ends the process with no drain and no span flush).
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers; must be called inside a Tokio runtime.
    pub fn install() -> Result<Self, ServerError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind, name| signal(kind).map_err(|source| ServerError::Signal { signal: name, source });
            Ok(Self {
                interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next SIGINT or SIGTERM and names the one that came.
    pub async fn recv(&mut self) -> Result<&'static str, ServerError> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok("SIGINT"),
                _ = self.terminate.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .map(|()| "SIGINT")
                .map_err(|source| ServerError::Signal {
                    signal: "SIGINT",
                    source,
                })
        }
    }
}
