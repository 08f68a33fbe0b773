//! W3C trace context (`traceparent`, `tracestate`) across gRPC hops: the
//! server side makes the request span a child of the caller's span, the
//! client side writes the current span into the outgoing metadata.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tonic::Code;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Name of every gRPC server request span (the OpenTelemetry span name,
/// `otel.name`, is `<service>/<method>`).
pub const SERVER_SPAN: &str = "grpc.server";

/// The longest service or method name a server span records of a request's
/// path, in bytes; longer ones are cut (see [`crate::truncate_for_record`]).
pub const MAX_RPC_NAME_BYTES: usize = 128;

/// The standard health service, never traced.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The request span of a gRPC server, for
/// `tonic::transport::Server::builder().trace_fn(server_span)`.
///
/// The span continues the caller's trace when the request carries a
/// `traceparent` header, and starts a new trace otherwise. Its fields:
/// `otel.kind = "server"`, `otel.name = "<service>/<method>"`,
/// `rpc.system = "grpc"`, `rpc.service`, `rpc.method`, `trace_id` (32 hex
/// digits, so every log line written inside the request carries it), and
/// `rpc.grpc.status_code`, `otel.status_code`, `otel.status_description`
/// left empty for [`record_status`].
pub fn server_span(req: &http::Request<()>) -> tracing::Span {
    let (service, method) = rpc_parts(req.uri().path());
    // Health checks run every few seconds per endpoint: tracing them would
    // crowd out the queries in the recent-span buffer and at the collector.
    if service == HEALTH_SERVICE {
        return tracing::Span::none();
    }
    // The path is the caller's text: a path no route serves is recorded
    // cut to a name's length.
    let (service, method) = (
        crate::truncate_for_record(service, MAX_RPC_NAME_BYTES),
        crate::truncate_for_record(method, MAX_RPC_NAME_BYTES),
    );
    let otel_name = format!("{service}/{method}");
    let span = tracing::info_span!(
        SERVER_SPAN,
        otel.kind = "server",
        otel.name = otel_name.as_str(),
        rpc.system = "grpc",
        rpc.service = service.as_ref(),
        rpc.method = method.as_ref(),
        rpc.grpc.status_code = Empty,
        trace_id = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    // Extract against an empty context, not the current one: a request
    // without `traceparent` must start a new trace even when the server
    // happens to run inside some span.
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), &HeaderExtractor(req.headers()))
    });
    // Fails only when telemetry is not installed (or the span is disabled):
    // then there is no trace to continue and nothing to do.
    let _ = span.set_parent(parent);
    // After set_parent: reading the context starts the OpenTelemetry span,
    // and its parent cannot change afterwards.
    let trace_id = trace_id_of(&span);
    if !trace_id.is_empty() {
        span.record("trace_id", trace_id.as_str());
    }
    span
}

/// The current span's trace id as 32 hex digits, or empty when there is no
/// current span or telemetry is not installed.
pub fn current_trace_id() -> String {
    trace_id_of(&tracing::Span::current())
}

/// Writes the current span's context (`traceparent`, `tracestate`) into
/// outgoing gRPC metadata, with the global propagator [`crate::init`] sets.
pub fn inject(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

/// A client interceptor that [`inject`]s the current span's context into
/// every request: `DataNodeClient::with_interceptor(channel, injector())`.
pub fn injector() -> TraceInjector {
    TraceInjector
}

/// The interceptor [`injector`] returns; a named type so that clients
/// using it can be stored in struct fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceInjector;

impl tonic::service::Interceptor for TraceInjector {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject(request.metadata_mut());
        Ok(request)
    }
}

/// Records a call's gRPC status on `span`: `rpc.grpc.status_code`, and for
/// any code but `OK` also `otel.status_code = "ERROR"` with the code's name
/// as `otel.status_description`.
///
/// Every non-OK code counts as an error, on server and client spans alike:
/// an operator looking for failed queries wants the denied and invalid ones
/// too. The span must declare the fields (as [`server_span`] does), since
/// `tracing` ignores fields a span was not created with.
pub fn record_status(span: &tracing::Span, code: Code) {
    // The OpenTelemetry layer ends a span at its last exit: entering it
    // here makes a request span that outlives its handler (a stream) end
    // when its status is known, not when the handler returned.
    span.in_scope(|| {});
    span.record("rpc.grpc.status_code", code as i64);
    if code != Code::Ok {
        // Code first: the description, recorded second, then carries the
        // error status with its text.
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", code_name(code));
    }
}

/// The canonical name of a gRPC status code (`OK`, `PERMISSION_DENIED`, ...),
/// as metrics label it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `"/yrd.mesh.v1.DataNode/Query"` → `("yrd.mesh.v1.DataNode", "Query")`;
/// a path of another shape is all service, with an empty method.
pub fn rpc_parts(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

fn trace_id_of(span: &tracing::Span) -> String {
    let cx = span.context();
    let span_ref = cx.span();
    let context = span_ref.span_context();
    if context.is_valid() {
        context.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Reads propagation headers from an incoming request.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes propagation headers into outgoing gRPC metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes lowercase ASCII keys and values; anything
        // else cannot be sent as ASCII metadata and is left out.
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            rpc_parts("/yrd.mesh.v1.DataNode/Query"),
            ("yrd.mesh.v1.DataNode", "Query")
        );
        assert_eq!(
            rpc_parts("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(rpc_parts("/odd"), ("odd", ""));
        assert_eq!(rpc_parts(""), ("", ""));
    }

    #[test]
    fn headers_and_metadata_carry_the_context() {
        let propagator = TraceContextPropagator::new();
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
        headers.insert("tracestate", http::HeaderValue::from_static("yrd=1"));
        let cx = propagator.extract_with_context(&Context::new(), &HeaderExtractor(&headers));
        let span_ref = cx.span();
        let incoming = span_ref.span_context();
        assert!(incoming.is_remote());
        assert_eq!(incoming.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let mut metadata = MetadataMap::new();
        propagator.inject_context(&cx, &mut MetadataInjector(&mut metadata));
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(TRACEPARENT)
        );
        assert_eq!(metadata.get("tracestate").and_then(|v| v.to_str().ok()), Some("yrd=1"));
    }

    #[test]
    fn an_invalid_context_injects_nothing() {
        let propagator = TraceContextPropagator::new();
        let mut metadata = MetadataMap::new();
        propagator.inject_context(&Context::new(), &mut MetadataInjector(&mut metadata));
        assert!(metadata.is_empty());
        let cx = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::INVALID,
            SpanId::INVALID,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        propagator.inject_context(&cx, &mut MetadataInjector(&mut metadata));
        assert!(metadata.is_empty());
    }

    #[test]
    fn without_telemetry_nothing_breaks() {
        // No subscriber with an OpenTelemetry layer in this unit-test thread:
        // the span exists, but there is no trace id to read or send.
        let req = http::Request::builder()
            .uri("/yrd.mesh.v1.DataNode/Query")
            .header("traceparent", TRACEPARENT)
            .body(())
            .unwrap();
        let span = server_span(&req);
        let _entered = span.enter();
        assert_eq!(current_trace_id(), "");
        let mut metadata = MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.get("traceparent").is_none());
        record_status(&span, Code::Unavailable);
    }

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::PermissionDenied), "PERMISSION_DENIED");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
