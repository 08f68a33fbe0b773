//! yrd-telemetry: what operators see of a yrd-mesh process.
//!
//! - [`init`] installs the process's `tracing` subscriber: logs to stderr
//!   (text or JSON), and an OpenTelemetry pipeline that always keeps recent
//!   spans in a bounded in-memory [`SpanBuffer`] and, when a collector is
//!   named, exports them over OTLP/gRPC without ever blocking a request.
//! - [`server_span`], [`inject`] and [`injector`] carry W3C trace context
//!   (`traceparent`, `tracestate`) through gRPC metadata, so one query is one
//!   trace across the gateway and every region node.
//! - [`metrics_handle`] and the helpers beside it feed Prometheus metrics;
//!   [`serve_admin`] serves them with health, readiness and the span buffer.
//!
//! Everything here is per process: several mesh components living in one
//! process (tests, `yrdctl up`) share one subscriber, one span buffer and one
//! metrics registry, and tell their spans apart by the `yrd.component` and
//! `yrd.region` attributes they set.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod admin;
mod buffer;
mod export;
mod meters;
mod propagation;
mod setup;

pub use admin::{
    AdminHandle, AdminState, MAX_TRACES, MIN_TOKEN_BYTES, TRACES_TOKEN_KEY, TracesAccess, serve_admin, start_admin,
};
pub use buffer::{MAX_ATTRIBUTE_BYTES, SpanBuffer, SpanRecord, TraceSummary, cap_span};
pub use meters::{
    BYTES_STREAMED_TOTAL, CERTIFICATE_EXPIRING, CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, OPEN_STREAMS, OpenStreamGuard,
    REGION_CALL_DURATION_SECONDS, REGION_CALLS_TOTAL, REQUEST_DURATION_SECONDS, REQUESTS_TOTAL, ROWS_STREAMED_TOTAL,
    SPANS_DROPPED_TOTAL, certificate_expiring, certificate_expiry, metrics_handle, region_call_done, request_done,
    rows_streamed,
};
pub use meters::{TLS_HANDSHAKES_REFUSED_TOTAL, handshake_refused};
pub use propagation::{
    MAX_RPC_NAME_BYTES, SERVER_SPAN, TraceInjector, code_name, current_trace_id, inject, injector, record_status,
    rpc_parts, server_span,
};
pub use setup::{Telemetry, global_buffer, init, set_tracing_enabled, tracing_enabled};

/// Re-exported so that callers can name the handle without depending on the
/// exporter crate themselves.
pub use metrics_exporter_prometheus::PrometheusHandle;

/// Default for [`TelemetryConfig::buffer_spans`].
pub const DEFAULT_BUFFER_SPANS: usize = 20_000;
/// Default for [`TelemetryConfig::export_queue`].
pub const DEFAULT_EXPORT_QUEUE: usize = 4096;
/// Default for [`TelemetryConfig::buffer_bytes`]: 32 MiB.
pub const DEFAULT_BUFFER_BYTES: usize = 32 * 1024 * 1024;
/// Upper bound of [`TelemetryConfig::buffer_bytes`]: 1 GiB.
pub const MAX_BUFFER_BYTES: usize = 1024 * 1024 * 1024;
/// Upper bound of [`TelemetryConfig::buffer_spans`] and
/// [`TelemetryConfig::export_queue`]: both are memory, and a typo of a few
/// zeros should be refused at start rather than found by the OOM killer.
pub const MAX_QUEUE: usize = 1_000_000;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// [`init`] was already called in this process, or another global
    /// `tracing` subscriber is installed.
    #[error("telemetry is already initialized in this process (a global tracing subscriber is installed)")]
    AlreadyInitialized,
    /// A configuration value (or the environment variable overriding it) is invalid.
    #[error("invalid telemetry config: {key}: {reason}")]
    Config {
        /// The config key or environment variable.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `RUST_LOG` does not parse as a filter.
    #[error("invalid RUST_LOG: {0}")]
    LogFilter(String),
    /// The OTLP exporter could not be built.
    #[error("OTLP span exporter: {0}")]
    Exporter(String),
    /// A background thread could not be started.
    #[error("could not start the {name} thread: {source}")]
    Thread {
        /// Which thread.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Prometheus recorder could not be installed.
    #[error("metrics recorder: {0}")]
    Metrics(String),
    /// Flushing or shutting down the span pipeline failed or timed out.
    #[error("telemetry flush/shutdown: {0}")]
    Shutdown(String),
    /// The admin listener could not be bound.
    #[error("admin listener {0}")]
    Admin(String),
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines, span fields (with `trace_id`) as a prefix.
    #[default]
    Text,
    /// One JSON object per line with the current span and the span list,
    /// for log shippers.
    Json,
}

/// The `[telemetry]` table of a node or gateway config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `service.name` of the process's resource; `OTEL_SERVICE_NAME` wins when set.
    pub service_name: String,
    /// The region this process serves (`yrd.region` on the resource), if any.
    pub region: Option<String>,
    /// OTLP/gRPC collector, e.g. `http://collector:4317`;
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// win when set. Without one, spans only go to the in-memory buffer.
    pub otlp_endpoint: Option<String>,
    /// Log line format.
    pub log_format: LogFormat,
    /// How many recently finished spans the in-memory buffer keeps.
    pub buffer_spans: usize,
    /// The most bytes (approximately: names, attribute keys and values,
    /// status text) the in-memory buffer keeps; the oldest spans are
    /// evicted first when a new one would exceed it. At most
    /// [`MAX_BUFFER_BYTES`].
    pub buffer_bytes: usize,
    /// How many finished spans may wait for export before new ones are dropped.
    pub export_queue: usize,
    /// Record spans at all (default true). Off, no span is recorded,
    /// buffered or exported; logs and metrics stay. For measuring what
    /// tracing costs, and for a process that must not keep span data.
    pub traces: bool,
    /// A file holding the bearer token `/traces` on the admin endpoint
    /// requires (at least [`MIN_TOKEN_BYTES`] bytes; surrounding whitespace
    /// is ignored). Without one, `/traces` is open on a loopback admin
    /// address and refused (403) on any other.
    pub traces_token_file: Option<PathBuf>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "yrd-mesh".to_owned(),
            region: None,
            otlp_endpoint: None,
            log_format: LogFormat::Text,
            buffer_spans: DEFAULT_BUFFER_SPANS,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            export_queue: DEFAULT_EXPORT_QUEUE,
            traces: true,
            traces_token_file: None,
        }
    }
}

impl TelemetryConfig {
    /// Checks the values that do not depend on the environment.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if self.buffer_spans > MAX_QUEUE {
            return Err(TelemetryError::Config {
                key: "buffer_spans",
                reason: format!("{} is more than the limit of {MAX_QUEUE}", self.buffer_spans),
            });
        }
        if self.buffer_bytes > MAX_BUFFER_BYTES {
            return Err(TelemetryError::Config {
                key: "buffer_bytes",
                reason: format!("{} is more than the limit of {MAX_BUFFER_BYTES}", self.buffer_bytes),
            });
        }
        if self.export_queue == 0 || self.export_queue > MAX_QUEUE {
            return Err(TelemetryError::Config {
                key: "export_queue",
                reason: format!("{} is not between 1 and {MAX_QUEUE}", self.export_queue),
            });
        }
        if let Some(region) = &self.region
            && region.trim().is_empty()
        {
            return Err(TelemetryError::Config {
                key: "region",
                reason: "is empty; leave it out instead".to_owned(),
            });
        }
        if let Some(path) = &self.traces_token_file
            && path.as_os_str().is_empty()
        {
            return Err(TelemetryError::Config {
                key: "traces_token_file",
                reason: "is empty; leave it out instead".to_owned(),
            });
        }
        Ok(())
    }
}

/// `value` as it may be recorded (in a span, a log line or an error): at
/// most `max` bytes of it, cut on a character boundary, followed by
/// `…(N bytes)` giving the whole length when anything was cut. Borrowed
/// when nothing had to be cut.
pub fn truncate_for_record(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…({} bytes)", &value[..end], value.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        telemetry: TelemetryConfig,
    }

    fn parse(json: &str) -> Result<Outer, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_when_absent() {
        let outer = parse("{}").unwrap();
        assert_eq!(outer.telemetry, TelemetryConfig::default());
        assert_eq!(outer.telemetry.buffer_spans, 20_000);
        assert_eq!(outer.telemetry.export_queue, 4096);
        assert_eq!(outer.telemetry.buffer_bytes, 32 * 1024 * 1024);
        assert_eq!(outer.telemetry.traces_token_file, None);
        assert_eq!(outer.telemetry.log_format, LogFormat::Text);
    }

    #[test]
    fn partial_table_keeps_other_defaults() {
        let outer =
            parse(r#"{"telemetry": {"service_name": "yrd-node", "region": "310000", "log_format": "json"}}"#).unwrap();
        let t = outer.telemetry;
        assert_eq!(t.service_name, "yrd-node");
        assert_eq!(t.region.as_deref(), Some("310000"));
        assert_eq!(t.log_format, LogFormat::Json);
        assert_eq!(t.buffer_spans, DEFAULT_BUFFER_SPANS);
        t.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse(r#"{"telemetry": {"otlp_endpont": "http://x:4317"}}"#).unwrap_err();
        assert!(err.to_string().contains("otlp_endpont"), "{err}");
        let err = parse(r#"{"telemetry": {"log_format": "xml"}}"#).unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let bad = TelemetryConfig {
            export_queue: 0,
            ..TelemetryConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("export_queue"), "{err}");
        let bad = TelemetryConfig {
            buffer_spans: MAX_QUEUE + 1,
            ..TelemetryConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("buffer_spans"));
        let bad = TelemetryConfig {
            buffer_bytes: MAX_BUFFER_BYTES + 1,
            ..TelemetryConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("buffer_bytes"));
        let bad = TelemetryConfig {
            traces_token_file: Some(PathBuf::new()),
            ..TelemetryConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("traces_token_file"));
    }

    #[test]
    fn recorded_values_are_cut_on_a_char_boundary_with_their_length() {
        assert!(matches!(truncate_for_record("short", 5), Cow::Borrowed("short")));
        assert_eq!(truncate_for_record("abcdef", 3), "abc…(6 bytes)");
        // "é" is two bytes: a cut inside it moves back before it.
        assert_eq!(truncate_for_record("aé", 2), "a…(3 bytes)");
        assert_eq!(truncate_for_record("ééé", 0), "…(6 bytes)");
        let big = "x".repeat(3_500_000);
        let cut = truncate_for_record(&big, 128);
        assert_eq!(cut.len(), 128 + "…(3500000 bytes)".len());
    }
}
