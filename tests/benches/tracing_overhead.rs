//! Query throughput through the gateway with tracing on (100% sampled,
//! every span exported over OTLP/gRPC to an in-process collector) as a
//! ratio to tracing off, measured side by side in one run: the phases
//! alternate so that machine noise falls on both.
//!
//! `cargo bench -p yrd-tests --bench tracing_overhead [-- ROUNDS QUERIES]`

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

mod common;
#[path = "../e2e/harness.rs"]
mod harness;
#[path = "../e2e/mesh.rs"]
mod mesh;
#[path = "../../services/telemetry/tests/common/mod.rs"]
mod otlp;

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use yrd_proto::mesh::federation_client::FederationClient;

/// Runs `n` queries; returns the latency of each.
async fn phase(app: &mut FederationClient<Channel>, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        assert_eq!(common::one_query(app, common::page_query("")).await.0, 100);
        out.push(t.elapsed());
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rounds = args.first().copied().unwrap_or(6);
    let per_phase = args.get(1).copied().unwrap_or(200);

    let (addr, receiver, _stop) = otlp::start_receiver().await;
    let telemetry = yrd_telemetry::init(&yrd_telemetry::TelemetryConfig {
        service_name: "yrd-bench".into(),
        otlp_endpoint: Some(format!("http://{addr}")),
        ..Default::default()
    })
    .unwrap();
    let mesh = mesh::Mesh::start().await;
    let mut app = mesh.app("bench").await;
    // Warm-up: connections, statement caches, page cache.
    yrd_telemetry::set_tracing_enabled(true);
    phase(&mut app, 50).await;

    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut off_time, mut on_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        // Alternate which phase goes first, so neither always follows the other.
        for enabled in if round % 2 == 0 { [false, true] } else { [true, false] } {
            yrd_telemetry::set_tracing_enabled(enabled);
            let t = Instant::now();
            let lat = phase(&mut app, per_phase).await;
            let took = t.elapsed();
            if enabled {
                on.extend(lat);
                on_time += took;
            } else {
                off.extend(lat);
                off_time += took;
            }
        }
    }
    yrd_telemetry::set_tracing_enabled(true);
    let flushed = tokio::task::spawn_blocking(move || {
        let _ = telemetry.flush();
        telemetry.spans_dropped()
    })
    .await
    .unwrap();
    off.sort();
    on.sort();
    let qps = |n: usize, t: Duration| n as f64 / t.as_secs_f64();
    let (q_off, q_on) = (qps(off.len(), off_time), qps(on.len(), on_time));
    println!(
        "tracing overhead: {rounds} rounds x {per_phase} queries per phase, page of 100 rows merged from 4 regions over mTLS"
    );
    println!(
        "  tracing off: {q_off:8.1} queries/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
        common::ms(common::percentile(&off, 0.5)),
        common::ms(common::percentile(&off, 0.99))
    );
    println!(
        "  tracing on : {q_on:8.1} queries/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
        common::ms(common::percentile(&on, 0.5)),
        common::ms(common::percentile(&on, 0.99))
    );
    println!("  ratio on/off throughput: {:.3}", q_on / q_off);
    println!(
        "  spans received by the collector: {}, dropped: {flushed}",
        receiver.spans().len()
    );
}
