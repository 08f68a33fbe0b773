//! Talking to the gateway: a mutual-TLS channel built from a profile, a
//! deadline on every request, and gateway errors reported with their
//! details (AIP-193: `BadRequest` field violations, `ErrorInfo`).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;
use yrd_proto::mesh::federation_client::FederationClient;

use crate::output::escape_text;
use crate::profile::Profile;

/// Longest wait for the TCP and TLS handshake, whatever `--timeout` says:
/// a gateway that does not accept within this is down, not slow.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much longer than the request's deadline the client reads a stream
/// before it gives up on its own: the gateway ends a page at the deadline
/// with what the regions sent so far, which beats a bare timeout.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// What a client command needs to reach the gateway.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The profile in use.
    pub profile: Profile,
    /// The time limit of each request.
    pub timeout: Duration,
}

impl Connection {
    /// Loads the profile; the certificates are read at [`Connection::connect`].
    pub fn new(profile: Option<&Path>, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            profile: Profile::from_flag(profile)?,
            timeout,
        })
    }

    /// Connects to the gateway over mutual TLS with the profile's
    /// certificate. Connecting eagerly makes an unreachable gateway or a
    /// refused certificate one clear error, before any output.
    pub async fn connect(&self) -> anyhow::Result<FederationClient<Channel>> {
        // The gateway's own answers are bounded by its page size limit, but a
        // page of wide rows may exceed tonic's 4 MiB default.
        Ok(FederationClient::new(self.channel().await?).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The mutual-TLS channel to the gateway, for any of its services
    /// (Federation, Audit, ...).
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let profile = &self.profile;
        let material = profile.tls()?;
        let tls = yrd_identity::tonic_client_tls(&material, &profile.server_name);
        let endpoint = Endpoint::from_shared(profile.gateway.clone())
            .with_context(|| format!("profile {}: gateway: {:?}", profile.path.display(), profile.gateway))?
            .tls_config(tls)
            .with_context(|| format!("profile {}: TLS settings", profile.path.display()))?
            .connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
            // tonic's client also enforces each request's grpc-timeout
            // (the shorter of the two wins), so this is the same deadline.
            .timeout(self.timeout);
        endpoint.connect().await.with_context(|| {
            format!(
                "cannot connect to the gateway at {} (verifying it as {:?}, profile {})",
                profile.gateway,
                profile.server_name,
                profile.path.display()
            )
        })
    }

    /// How long the client reads one page of a stream: the deadline and a
    /// grace (tonic's timer covers only the start of a stream).
    pub fn patience(&self) -> Duration {
        self.timeout + DEADLINE_GRACE
    }

    /// Wraps a message in a request carrying the deadline (`grpc-timeout`),
    /// so that the gateway bounds its calls to the regions by it too.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

/// A gateway error, with its details decoded for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusError {
    /// The gRPC status code.
    pub code: Code,
    /// The status message.
    pub message: String,
    /// `google.rpc.BadRequest` field violations: (field, description).
    pub violations: Vec<(String, String)>,
    /// `google.rpc.ErrorInfo`, when sent.
    pub info: Option<ErrorInfo>,
    /// The client's own timer ended the call (tonic's `TimeoutExpired` is
    /// the status's cause): not the gateway's answer.
    pub client_timeout: bool,
}

/// The `google.rpc.ErrorInfo` of a gateway error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The reason, such as `LIMIT_EXCEEDED`.
    pub reason: String,
    /// The domain, such as `mesh.yrd`.
    pub domain: String,
    /// Key-value details, sorted by key.
    pub metadata: Vec<(String, String)>,
}

impl From<tonic::Status> for StatusError {
    fn from(status: tonic::Status) -> Self {
        let violations = status
            .get_details_bad_request()
            .map(|b| {
                b.field_violations
                    .into_iter()
                    .map(|v| (v.field, v.description))
                    .collect()
            })
            .unwrap_or_default();
        let info = status.get_details_error_info().map(|i| {
            let mut metadata: Vec<(String, String)> = i.metadata.into_iter().collect();
            metadata.sort();
            ErrorInfo {
                reason: i.reason,
                domain: i.domain,
                metadata,
            }
        });
        Self {
            code: status.code(),
            message: status.message().to_owned(),
            violations,
            info,
            client_timeout: yrd_gateway::client::tonic_timer_fired(&status),
        }
    }
}

/// Shown through [`escape_text`]: the message and the details are the
/// gateway's text, and a line break or an escape sequence in them must not
/// reach the terminal as such. The lines this adds for the details are
/// line breaks of its own.
impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.client_timeout {
            // Not the gateway's answer: the client's own timer ran out first.
            return write!(
                f,
                "no answer from the gateway within the request timeout (raise --timeout); the call was cancelled"
            );
        }
        write!(
            f,
            "the gateway answered {}: {}",
            code_name(self.code),
            escape_text(&self.message)
        )?;
        for (field, description) in &self.violations {
            // The gateway often repeats its message as the one violation;
            // print only what adds to it.
            if format!("{field}: {description}") != self.message {
                write!(
                    f,
                    "\n  bad request: {}: {}",
                    escape_text(field),
                    escape_text(description)
                )?;
            }
        }
        if let Some(info) = &self.info {
            write!(
                f,
                "\n  error info: {} ({})",
                escape_text(&info.reason),
                escape_text(&info.domain)
            )?;
            for (key, value) in &info.metadata {
                write!(f, " {}={}", escape_text(key), escape_text(value))?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for StatusError {}

/// A status as an error for `?`, its details decoded.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    StatusError::from(status).into()
}

/// The canonical name of a gRPC code, as grpcurl and the gRPC docs print it.
pub use yrd_telemetry::code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_printed() {
        let mut details =
            tonic_types::ErrorDetails::with_bad_request_violation("filter", "syntax error at character 3");
        details.set_error_info(
            "LIMIT_EXCEEDED",
            "mesh.yrd",
            [("limit".to_owned(), "max_page_size".to_owned())],
        );
        let status = tonic::Status::with_error_details(Code::InvalidArgument, "filter: syntax error", details);
        let text = StatusError::from(status).to_string();
        assert_eq!(
            text,
            "the gateway answered INVALID_ARGUMENT: filter: syntax error\n  \
             bad request: filter: syntax error at character 3\n  \
             error info: LIMIT_EXCEEDED (mesh.yrd) limit=max_page_size"
        );
        // A status that merely says what tonic's timer says is the gateway's answer.
        let echoed = StatusError::from(tonic::Status::cancelled("deadline")).to_string();
        assert_eq!(echoed, "the gateway answered CANCELLED: deadline");
        let plain = StatusError::from(tonic::Status::unavailable("no region answered")).to_string();
        assert_eq!(plain, "the gateway answered UNAVAILABLE: no region answered");
    }

    #[test]
    fn the_gateway_text_is_escaped() {
        let mut details = tonic_types::ErrorDetails::with_bad_request_violation("f\u{202e}", "d\x1b[2J");
        details.set_error_info("R\r", "mesh.yrd", [("k\u{9b}".to_owned(), "v\x07".to_owned())]);
        let status = tonic::Status::with_error_details(Code::InvalidArgument, "bad\x1b[31m\nforged line", details);
        assert_eq!(
            StatusError::from(status).to_string(),
            "the gateway answered INVALID_ARGUMENT: bad\\x1b[31m\\nforged line\n  \
             bad request: f\\u{202e}: d\\x1b[2J\n  \
             error info: R\\r (mesh.yrd) k\\u{9b}=v\\x07"
        );
    }
}
