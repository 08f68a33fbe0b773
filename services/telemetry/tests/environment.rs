//! What depends on the process environment: the standard variables
//! (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`) and what is written to
//! stderr. Rust 2024 makes `set_var` unsafe (and this crate forbids unsafe),
//! so each test re-runs its own binary with the environment it needs and
//! checks the child's outcome and output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use yrd_telemetry::{LogFormat, TelemetryConfig, current_trace_id, init, server_span};

/// Set in the child run.
const CHILD: &str = "YRD_TELEMETRY_TEST_CHILD";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Runs `test` in a child process with `vars` set (and the OTLP variables
/// removed); returns its stderr.
fn run_child(test: &str, vars: &[(&str, &str)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--nocapture"])
        .env(CHILD, "1")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_SAMPLER_ARG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("RUST_LOG");
    for (key, value) in vars {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    // Guard against a harness that ran nothing.
    assert!(stdout.contains("1 passed"), "{stdout}");
    stderr.into_owned()
}

#[test]
fn service_name_and_sampler_come_from_the_environment() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    run_child(
        "service_name_and_sampler_come_from_the_environment",
        &[
            ("OTEL_SERVICE_NAME", "svc-from-env"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
        ],
    );
}

#[test]
fn json_logs_carry_the_trace_id_inside_request_spans() {
    if std::env::var_os(CHILD).is_some() {
        let _telemetry = init(&TelemetryConfig {
            log_format: LogFormat::Json,
            ..TelemetryConfig::default()
        })
        .unwrap();
        let req = http::Request::builder()
            .uri("/yrd.mesh.v1.Federation/Query")
            .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
            .body(())
            .unwrap();
        let span = server_span(&req);
        let _request = span.enter();
        let store = tracing::info_span!("test.store", db.system = "sqlite");
        let _store = store.enter();
        tracing::info!(rows = 3, "inside the store span");
        tracing::debug!("below the default level");
        return;
    }
    let stderr = run_child("json_logs_carry_the_trace_id_inside_request_spans", &[]);
    let line = stderr
        .lines()
        .find(|l| l.contains("inside the store span"))
        .unwrap_or_else(|| panic!("no log line in {stderr}"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["level"], "INFO");
    assert_eq!(json["fields"]["rows"], 3);
    // The current span is the store span; the request span, with the trace
    // id, is in the span list.
    assert_eq!(json["span"]["name"], "test.store");
    let spans = json["spans"].as_array().unwrap();
    let request = spans.iter().find(|s| s["name"] == "grpc.server").unwrap();
    assert_eq!(request["trace_id"], TRACE_ID);
    assert_eq!(request["rpc.method"], "Query");
    assert!(!stderr.contains("below the default level"), "RUST_LOG defaults to info");
}

fn child() {
    let telemetry = init(&TelemetryConfig {
        service_name: "svc-from-config".to_owned(),
        ..TelemetryConfig::default()
    })
    .unwrap();
    let buffer = telemetry.buffer();

    // parentbased_always_off: a new root is not sampled (it still has a
    // trace id, so logs can name it) ...
    let root_id = {
        let root = tracing::info_span!("test.root");
        let _entered = root.enter();
        current_trace_id()
    };
    assert_eq!(root_id.len(), 32);
    assert!(
        buffer.spans_of_trace(&root_id).is_empty(),
        "an unsampled root was recorded"
    );

    // ... but a caller's sampled decision is followed.
    let req = http::Request::builder()
        .uri("/yrd.mesh.v1.Federation/Query")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body(())
        .unwrap();
    drop(server_span(&req));
    let spans = buffer.spans_of_trace(TRACE_ID);
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].service, "svc-from-env");
}
