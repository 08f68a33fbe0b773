//! Prometheus metrics: the process-wide recorder, the names the mesh uses,
//! and small helpers so that every service labels them the same way.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::TelemetryError;
use crate::propagation::code_name;

/// Counter: gRPC requests served, by `service`, `method` and `code`.
pub const REQUESTS_TOTAL: &str = "yrd_requests_total";
/// Histogram: time to serve a gRPC request, by `service` and `method`.
pub const REQUEST_DURATION_SECONDS: &str = "yrd_request_duration_seconds";
/// Counter: calls from the gateway to region nodes, by `region` and `state`.
pub const REGION_CALLS_TOTAL: &str = "yrd_region_calls_total";
/// Histogram: time of a call to a region node, by `region`.
pub const REGION_CALL_DURATION_SECONDS: &str = "yrd_region_call_duration_seconds";
/// Counter: rows streamed to callers, by `dataset`.
pub const ROWS_STREAMED_TOTAL: &str = "yrd_rows_streamed_total";
/// Counter: encoded row bytes streamed to callers, by `dataset`.
pub const BYTES_STREAMED_TOTAL: &str = "yrd_bytes_streamed_total";
/// Gauge: streaming responses in progress.
pub const OPEN_STREAMS: &str = "yrd_open_streams";
/// Gauge: when a certificate expires (Unix seconds), by `identity`.
pub const CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str = "yrd_certificate_expiry_timestamp_seconds";
/// Gauge: 1 while a certificate is within its process's
/// `tls.expiry_warning` of expiring (or has expired), else 0; by `identity`.
pub const CERTIFICATE_EXPIRING: &str = "yrd_certificate_expiring";
/// Counter: spans that did not reach the collector.
pub const SPANS_DROPPED_TOTAL: &str = "yrd_spans_dropped_total";
/// Counter: TCP connections whose TLS handshake was refused or failed, or
/// that were dropped before it for want of a handshake slot, by `reason`
/// (a short stable label such as `timeout`, `unknown-ca` or
/// `too-many-handshakes-from-source`).
pub const TLS_HANDSHAKES_REFUSED_TOTAL: &str = "yrd_tls_handshakes_refused_total";

/// Histogram buckets of every `*_seconds` metric: RPC latencies, from a
/// millisecond (a cached catalog) to 30 s (the longest query deadline).
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// How often histogram samples are folded into buckets when nobody scrapes:
/// without it they accumulate.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's recorder, once installed.
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder for this process on the first call and
/// returns a handle to render it; later calls return the same handle.
///
/// Fails if another `metrics` recorder is already installed.
pub fn metrics_handle() -> Result<PrometheusHandle, TelemetryError> {
    // A lock rather than a OnceLock: installation can fail, and a failed
    // attempt must leave the slot empty.
    let mut slot = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| TelemetryError::Metrics(e.to_string()))?;
    describe();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("yrd-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        // Each scrape also folds the samples in; only an unscraped process
        // would grow.
        tracing::warn!(%error, "could not start the metrics upkeep thread");
    }
    *slot = Some(handle.clone());
    Ok(handle)
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "gRPC requests served, by service, method and status code"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to serve a gRPC request, by service and method"
    );
    metrics::describe_counter!(
        REGION_CALLS_TOTAL,
        Unit::Count,
        "Calls to region nodes, by region and resulting state"
    );
    metrics::describe_histogram!(
        REGION_CALL_DURATION_SECONDS,
        Unit::Seconds,
        "Time of a call to a region node, by region"
    );
    metrics::describe_counter!(ROWS_STREAMED_TOTAL, Unit::Count, "Rows streamed to callers, by dataset");
    metrics::describe_counter!(
        BYTES_STREAMED_TOTAL,
        Unit::Bytes,
        "Encoded row bytes streamed to callers, by dataset"
    );
    metrics::describe_gauge!(OPEN_STREAMS, Unit::Count, "Streaming responses in progress");
    metrics::describe_gauge!(
        CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When a certificate of this process expires, in Unix seconds, by identity"
    );
    metrics::describe_gauge!(
        CERTIFICATE_EXPIRING,
        Unit::Count,
        "1 while a certificate of this process is within tls.expiry_warning of expiring (or has expired), by identity"
    );
    metrics::describe_counter!(
        SPANS_DROPPED_TOTAL,
        Unit::Count,
        "Finished spans that did not reach the OTLP collector (queue full, export failed or timed out)"
    );
    metrics::describe_counter!(
        TLS_HANDSHAKES_REFUSED_TOTAL,
        Unit::Count,
        "Connections refused before or during the TLS handshake, by reason"
    );
}

/// Counts a served gRPC request and records its duration.
pub fn request_done(service: &str, method: &str, code: tonic::Code, elapsed: Duration) {
    metrics::counter!(
        REQUESTS_TOTAL,
        "service" => service.to_owned(),
        "method" => method.to_owned(),
        "code" => code_name(code),
    )
    .increment(1);
    metrics::histogram!(
        REQUEST_DURATION_SECONDS,
        "service" => service.to_owned(),
        "method" => method.to_owned(),
    )
    .record(elapsed.as_secs_f64());
}

/// Counts a call to a region node, ending in `state` (`ok`, `unavailable`,
/// ...), and records its duration.
pub fn region_call_done(region: &str, state: &str, elapsed: Duration) {
    metrics::counter!(
        REGION_CALLS_TOTAL,
        "region" => region.to_owned(),
        "state" => state.to_owned(),
    )
    .increment(1);
    metrics::histogram!(REGION_CALL_DURATION_SECONDS, "region" => region.to_owned()).record(elapsed.as_secs_f64());
}

/// Counts a connection refused before or during its TLS handshake;
/// `reason` is one of a fixed set of labels, never the caller's text.
pub fn handshake_refused(reason: &'static str) {
    metrics::counter!(TLS_HANDSHAKES_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Counts rows (and their encoded bytes) streamed for a dataset.
pub fn rows_streamed(dataset: &str, rows: u64, bytes: u64) {
    metrics::counter!(ROWS_STREAMED_TOTAL, "dataset" => dataset.to_owned()).increment(rows);
    metrics::counter!(BYTES_STREAMED_TOTAL, "dataset" => dataset.to_owned()).increment(bytes);
}

/// Publishes when the certificate of `identity` (its SPIFFE id, say)
/// expires, so that an alert can fire before it does.
pub fn certificate_expiry(identity: &str, not_after_unix_seconds: i64) {
    // f64 holds every second of the next 285 million years exactly.
    #[allow(clippy::cast_precision_loss)]
    let value = not_after_unix_seconds as f64;
    metrics::gauge!(CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, "identity" => identity.to_owned()).set(value);
}

/// Publishes whether the certificate of `identity` is within its warning
/// window of expiring.
pub fn certificate_expiring(identity: &str, expiring: bool) {
    metrics::gauge!(CERTIFICATE_EXPIRING, "identity" => identity.to_owned()).set(if expiring { 1.0 } else { 0.0 });
}

/// Counts one open stream in `yrd_open_streams` for as long as it lives.
#[derive(Debug)]
#[must_use = "the stream counts as open only while the guard lives"]
pub struct OpenStreamGuard {
    _private: (),
}

impl OpenStreamGuard {
    /// Counts a stream as open until the guard is dropped.
    pub fn open() -> Self {
        metrics::gauge!(OPEN_STREAMS).increment(1.0);
        Self { _private: () }
    }
}

impl Drop for OpenStreamGuard {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_STREAMS).decrement(1.0);
    }
}
