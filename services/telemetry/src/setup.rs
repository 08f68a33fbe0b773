//! Installing the process's telemetry: the `tracing` subscriber, the
//! OpenTelemetry tracer provider behind it, and the global propagator.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

use crate::buffer::SpanBuffer;
use crate::export::{DropCounter, EXPORT_TIMEOUT, ExportProcessor, ExportSettings, FLUSH_TIMEOUT};
use crate::{LogFormat, TelemetryConfig, TelemetryError};

/// Whether [`init`] has installed the global subscriber.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The process's recent-span buffer, once installed.
static BUFFER: std::sync::OnceLock<SpanBuffer> = std::sync::OnceLock::new();
/// Whether spans are recorded for OpenTelemetry at all (logs are not
/// affected). A run-time switch for operators and for benchmarks that
/// compare tracing on and off in one run.
static TRACING_ENABLED: AtomicBool = AtomicBool::new(true);

/// The recent-span buffer of this process, when telemetry is installed.
pub fn global_buffer() -> Option<SpanBuffer> {
    BUFFER.get().cloned()
}

/// Turns span recording and export on or off at run time.
pub fn set_tracing_enabled(enabled: bool) {
    TRACING_ENABLED.store(enabled, Ordering::SeqCst);
}

/// Whether span recording is on.
pub fn tracing_enabled() -> bool {
    TRACING_ENABLED.load(Ordering::SeqCst)
}

/// The endpoint variables, most specific first; the first set one wins over
/// the config.
const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// The `OTEL_TRACES_SAMPLER` values the SDK implements.
const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// The installed telemetry of the process: a guard whose [`shutdown`]
/// (or drop, best effort) sends the spans still queued and stops export.
///
/// [`shutdown`]: Telemetry::shutdown
#[derive(Debug)]
pub struct Telemetry {
    /// `None` once shut down.
    provider: Option<SdkTracerProvider>,
    buffer: SpanBuffer,
    dropped: Arc<DropCounter>,
    endpoint: Option<String>,
}

/// The config after the standard environment variables had their say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    service_name: String,
    region: Option<String>,
    endpoint: Option<String>,
    log_format: LogFormat,
    buffer_spans: usize,
    buffer_bytes: usize,
    export_queue: usize,
}

/// Installs this process's telemetry (see the crate documentation).
///
/// - Logs: `RUST_LOG` (default `info`) filters what is written to stderr,
///   as text or JSON; JSON lines carry the current span and the span list,
///   so the `trace_id` of the request span is on every line inside it.
/// - Spans at `info` and above go to OpenTelemetry whatever `RUST_LOG`
///   says: turning logs down must not break traces.
/// - The sampler comes from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
///   (default `parentbased_always_on`): the 0.33 SDK reads them itself when
///   the tracer provider is built, so this function does not override it.
///   It only checks them first, because the SDK silently falls back to the
///   default on a value it does not know.
/// - `service.name` is `OTEL_SERVICE_NAME` or the config's; the resource
///   also names `service.namespace = "yrd-mesh"` and `yrd.region`.
/// - The collector is `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
///   `OTEL_EXPORTER_OTLP_ENDPOINT` or the config's `otlp_endpoint`, in that
///   order; without one, spans go only to the in-memory buffer.
///
/// Installing is once per process: a second call (or a call after another
/// global `tracing` subscriber was installed) returns
/// [`TelemetryError::AlreadyInitialized`] and changes nothing. Tests that
/// need telemetry initialize it once per test binary, or run one test per
/// process (cargo-nextest).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    config.validate()?;
    let resolved = resolve(config, |key| std::env::var(key).ok())?;
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()
        .map_err(|e| TelemetryError::LogFilter(e.to_string()))?;
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialized);
    }
    set_tracing_enabled(config.traces);
    let installed = install(resolved, filter);
    if installed.is_err() {
        INSTALLED.store(false, Ordering::SeqCst);
    }
    installed
}

fn install(resolved: Resolved, filter: EnvFilter) -> Result<Telemetry, TelemetryError> {
    let resource = resource(&resolved);
    let buffer = SpanBuffer::with_budget(resolved.buffer_spans, resolved.buffer_bytes);
    let dropped = Arc::new(DropCounter::default());
    // The buffer first: it is cheap, and it sees every span even when the
    // export queue is full.
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_span_processor(buffer.clone());
    if let Some(endpoint) = resolved.endpoint.clone() {
        let build = move || {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| e.to_string())?;
            exporter.set_resource(&resource);
            Ok(exporter)
        };
        let processor = ExportProcessor::start(
            build,
            ExportSettings::with_queue(resolved.export_queue),
            Arc::clone(&dropped),
        )?;
        builder = builder.with_span_processor(processor);
    }
    let provider = builder.build();

    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("yrd-mesh"))
        // Span names are constants and attributes are chosen by the code;
        // source locations, thread ids and busy/idle times would be noise
        // on every span of every query.
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(LevelFilter::INFO.and(tracing_subscriber::filter::filter_fn(|_| tracing_enabled())));
    let ansi = std::io::stderr().is_terminal();
    let fmt_layer = match resolved.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let subscriber = Registry::default().with(fmt_layer.with_filter(filter)).with(otel_layer);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        let _ = provider.shutdown_with_timeout(Duration::from_secs(1));
        return Err(TelemetryError::AlreadyInitialized);
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = BUFFER.set(buffer.clone());
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::debug!(
        service = %resolved.service_name,
        endpoint = resolved.endpoint.as_deref().unwrap_or("none"),
        buffer_spans = resolved.buffer_spans,
        buffer_bytes = resolved.buffer_bytes,
        "telemetry installed"
    );
    Ok(Telemetry {
        provider: Some(provider),
        buffer,
        dropped,
        endpoint: resolved.endpoint,
    })
}

impl Telemetry {
    /// The process's recent-span buffer (a cheap clone of a shared handle).
    pub fn buffer(&self) -> SpanBuffer {
        self.buffer.clone()
    }

    /// Spans that did not reach the collector so far: the export queue was
    /// full, or their export failed or timed out.
    pub fn spans_dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// The OTLP collector spans are exported to, if any.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Waits (at most about five seconds) until the spans finished so far
    /// are exported or counted as dropped.
    ///
    /// This blocks the calling thread: from async code, call it in
    /// `spawn_blocking`.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        match &self.provider {
            Some(provider) => provider
                .force_flush()
                .map_err(|e| TelemetryError::Shutdown(e.to_string())),
            None => Ok(()),
        }
    }

    /// Sends the queued spans (waiting at most about five seconds; what is
    /// left is counted as dropped) and stops exporting. The subscriber stays
    /// installed: later spans are no longer recorded.
    ///
    /// This blocks the calling thread: from async code, call it in
    /// `spawn_blocking`.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        match self.provider.take() {
            Some(provider) => provider
                .shutdown_with_timeout(FLUSH_TIMEOUT)
                .map_err(|e| TelemetryError::Shutdown(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Best effort: a guard dropped while unwinding or at the end of
            // main has nobody to report a failure to.
            let _ = provider.shutdown_with_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// Applies the standard environment variables (read through `env`) to the
/// config and checks the result.
fn resolve(config: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Result<Resolved, TelemetryError> {
    let set = |key: &str| env(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let service_name = set("OTEL_SERVICE_NAME").unwrap_or_else(|| config.service_name.trim().to_owned());
    if service_name.is_empty() {
        return Err(TelemetryError::Config {
            key: "service_name",
            reason: "is empty (and OTEL_SERVICE_NAME is not set)".to_owned(),
        });
    }
    check_sampler(&set)?;
    let from_env = ENDPOINT_VARS.iter().find_map(|&key| set(key).map(|v| (key, v)));
    let endpoint = match from_env {
        Some((key, value)) => Some((key, value)),
        None => config
            .otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| ("otlp_endpoint", v.to_owned())),
    };
    if let Some((key, value)) = &endpoint
        && !(value.starts_with("http://") || value.starts_with("https://"))
    {
        return Err(TelemetryError::Config {
            key,
            reason: format!("{value:?} is not an http:// or https:// URL (e.g. http://collector:4317)"),
        });
    }
    Ok(Resolved {
        service_name,
        region: config.region.clone(),
        endpoint: endpoint.map(|(_, value)| value),
        log_format: config.log_format,
        buffer_spans: config.buffer_spans,
        buffer_bytes: config.buffer_bytes,
        export_queue: config.export_queue,
    })
}

/// Refuses sampler variables the SDK would ignore; it parses them itself.
fn check_sampler(set: &impl Fn(&str) -> Option<String>) -> Result<(), TelemetryError> {
    let Some(sampler) = set("OTEL_TRACES_SAMPLER") else {
        return Ok(());
    };
    if !SAMPLERS.contains(&sampler.as_str()) {
        return Err(TelemetryError::Config {
            key: "OTEL_TRACES_SAMPLER",
            reason: format!("{sampler:?} is not one of {}", SAMPLERS.join(", ")),
        });
    }
    if sampler.ends_with("traceidratio")
        && let Some(arg) = set("OTEL_TRACES_SAMPLER_ARG")
        && !arg.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r))
    {
        return Err(TelemetryError::Config {
            key: "OTEL_TRACES_SAMPLER_ARG",
            reason: format!("{arg:?} is not a ratio between 0 and 1"),
        });
    }
    Ok(())
}

fn resource(resolved: &Resolved) -> Resource {
    let mut attributes = vec![KeyValue::new("service.namespace", "yrd-mesh")];
    if let Some(region) = &resolved.region {
        attributes.push(KeyValue::new("yrd.region", region.clone()));
    }
    // `Resource::builder()` keeps the SDK's own attributes (telemetry.sdk.*)
    // and OTEL_RESOURCE_ATTRIBUTES; ours are added on top.
    Resource::builder()
        .with_service_name(resolved.service_name.clone())
        .with_attributes(attributes)
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::Key;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn config_values_apply_without_environment() {
        let config = TelemetryConfig {
            service_name: "yrd-node".to_owned(),
            region: Some("330000".to_owned()),
            otlp_endpoint: Some("http://collector:4317".to_owned()),
            ..TelemetryConfig::default()
        };
        let r = resolve(&config, env(&[])).unwrap();
        assert_eq!(r.service_name, "yrd-node");
        assert_eq!(r.endpoint.as_deref(), Some("http://collector:4317"));
        let resource = resource(&r);
        let get = |k: &'static str| resource.get(&Key::from_static_str(k)).map(|v| v.to_string());
        assert_eq!(get("service.name").as_deref(), Some("yrd-node"));
        assert_eq!(get("service.namespace").as_deref(), Some("yrd-mesh"));
        assert_eq!(get("yrd.region").as_deref(), Some("330000"));
    }

    #[test]
    fn standard_variables_win_over_the_config() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://from-config:4317".to_owned()),
            ..TelemetryConfig::default()
        };
        let r = resolve(
            &config,
            env(&[
                ("OTEL_SERVICE_NAME", "svc-from-env"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317"),
            ]),
        )
        .unwrap();
        assert_eq!(r.service_name, "svc-from-env");
        assert_eq!(r.endpoint.as_deref(), Some("http://general:4317"));
        let r = resolve(
            &config,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ]),
        )
        .unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://traces:4317"));
        // Empty variables count as unset.
        let r = resolve(
            &config,
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " "), ("OTEL_SERVICE_NAME", "")]),
        )
        .unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://from-config:4317"));
        assert_eq!(r.service_name, "yrd-mesh");
    }

    #[test]
    fn sampler_variables_are_checked() {
        let config = TelemetryConfig::default();
        for ok in [
            vec![("OTEL_TRACES_SAMPLER", "always_off")],
            vec![
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
            // Without an argument the SDK samples everything.
            vec![("OTEL_TRACES_SAMPLER", "traceidratio")],
            // The argument only matters to the ratio samplers.
            vec![("OTEL_TRACES_SAMPLER", "always_on"), ("OTEL_TRACES_SAMPLER_ARG", "x")],
        ] {
            resolve(&config, env(&ok)).unwrap();
        }
        let err = resolve(&config, env(&[("OTEL_TRACES_SAMPLER", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OTEL_TRACES_SAMPLER") && err.contains("sometimes"),
            "{err}"
        );
        let err = resolve(
            &config,
            env(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("OTEL_TRACES_SAMPLER_ARG"), "{err}");
    }

    #[test]
    fn no_endpoint_means_no_export() {
        let config = TelemetryConfig {
            otlp_endpoint: Some(String::new()),
            ..TelemetryConfig::default()
        };
        assert_eq!(resolve(&config, env(&[])).unwrap().endpoint, None);
    }

    #[test]
    fn bad_values_name_their_source() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("collector:4317".to_owned()),
            ..TelemetryConfig::default()
        };
        let err = resolve(&config, env(&[])).unwrap_err().to_string();
        assert!(err.contains("otlp_endpoint") && err.contains("collector:4317"), "{err}");
        let err = resolve(
            &TelemetryConfig::default(),
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
        let config = TelemetryConfig {
            service_name: " ".to_owned(),
            ..TelemetryConfig::default()
        };
        assert!(
            resolve(&config, env(&[]))
                .unwrap_err()
                .to_string()
                .contains("service_name")
        );
    }
}
