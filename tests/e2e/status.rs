//! Every call's status reaches `/metrics` and its trace, refused ones
//! included: the gateway's status layer records it, not the handlers.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::Code;
use yrd_proto::mesh::{AggregateRequest, QueryRequest};
use yrd_telemetry::TelemetryConfig;

use crate::harness::http_get;
use crate::mesh::{Mesh, MeshOptions};

/// The trace the refused call continues, so that its spans can be found.
const BAD_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_answered_calls_are_counted_and_traced_with_their_status() {
    let _telemetry = yrd_telemetry::init(&TelemetryConfig {
        service_name: "yrd-e2e".into(),
        ..TelemetryConfig::default()
    })
    .unwrap();
    let (mesh, _) = Mesh::start_with(MeshOptions {
        admin: true,
        ..MeshOptions::default()
    })
    .await;
    let mut app = mesh.app("counted").await;

    let mut stream = app
        .query(QueryRequest {
            dataset: "enterprise".into(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = stream.next().await {
        m.unwrap();
    }
    app.aggregate(AggregateRequest {
        dataset: "enterprise".into(),
        group_by: vec!["region".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut bad = tonic::Request::new(AggregateRequest {
        dataset: "enterprise".into(),
        filter: "status = ".into(),
        ..Default::default()
    });
    let traceparent = format!("00-{BAD_TRACE}-00f067aa0ba902b7-01");
    bad.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    let err = app.aggregate(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // The counts, from the gateway's admin endpoint.
    let admin = mesh.gateway.admin.as_ref().unwrap().addr;
    let text = http_get(admin, "/metrics").await;
    let federation = |method: &str, code: &str| -> f64 {
        let labels = [
            "service=\"yrd.mesh.v1.Federation\"".to_owned(),
            format!("method=\"{method}\""),
            format!("code=\"{code}\""),
        ];
        text.lines()
            .filter(|l| l.starts_with("yrd_requests_total{") && labels.iter().all(|x| l.contains(x.as_str())))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(federation("Query", "OK"), 1.0, "{text}");
    assert_eq!(federation("Aggregate", "OK"), 1.0, "{text}");
    assert_eq!(federation("Aggregate", "INVALID_ARGUMENT"), 1.0, "{text}");
    assert!(
        text.contains("yrd_request_duration_seconds_count{service=\"yrd.mesh.v1.Federation\",method=\"Aggregate\"} 2"),
        "{text}"
    );
    // The nodes count their own calls (they share this process's registry).
    assert!(
        text.lines()
            .any(|l| l
                .starts_with("yrd_requests_total{service=\"yrd.mesh.v1.DataNode\",method=\"Aggregate\",code=\"OK\"}")),
        "{text}"
    );

    // The refused call's server span carries the error.
    let buffer = yrd_telemetry::global_buffer().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let span = loop {
        let found = buffer
            .spans_of_trace(BAD_TRACE)
            .into_iter()
            .find(|s| s.name == "yrd.mesh.v1.Federation/Aggregate");
        match found {
            Some(span) => break span,
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            None => panic!("no server span for the refused call"),
        }
    };
    assert_eq!(span.kind, "server");
    assert_eq!(span.status, "error", "{span:?}");
    assert_eq!(span.status_message, "INVALID_ARGUMENT", "{span:?}");
    assert_eq!(
        span.attributes.get("rpc.grpc.status_code").map(String::as_str),
        Some("3"),
        "{span:?}"
    );
}
