//! Append throughput and latency of the audit log with 1, 8 and 64
//! concurrent appenders, on real files with a signing key: figures, not
//! assertions. `cargo bench -p yrd-audit`; `YRD_BENCH_SECS` sets the time
//! per case (default 3).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use yrd_audit::{AuditConfig, AuditLog, Decision, Entry};
use yrd_identity::{Ca, IssueRequest, PeerId, Signer, issue_in_memory};

const SOURCE: &str = "spiffe://yrd.mesh/region/310000/node/sh-1";

fn entry(i: u64) -> Entry {
    let mut e = Entry::new("query", Decision::Allow);
    e.caller = Some("spiffe://yrd.mesh/gateway/gw-1".into());
    e.subject = Some("spiffe://yrd.mesh/app/dashboard".into());
    e.purpose = Some("supervision".into());
    e.region = Some("310000".into());
    e.dataset = Some("enterprise".into());
    e.filter = Some("registered_capital > 1000000 AND city = \"310100\"".into());
    e.fields = vec!["credit_code".into(), "name".into(), "legal_representative".into()];
    e.rule = Some("grant-dashboard-enterprise".into());
    e.rows = Some(i % 500);
    e.masked = vec!["legal_representative".into()];
    e.trace_id = Some(format!("{i:032x}"));
    e
}

fn main() {
    let secs: u64 = std::env::var("YRD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let ca = Ca::generate("yrd.mesh").unwrap();
    let (cert, key) = issue_in_memory(
        &ca,
        &IssueRequest::new(PeerId::node("yrd.mesh", "310000", "sh-1").unwrap()),
    )
    .unwrap();
    let signer = Signer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("audit append, {secs}s per case, sync_data per batch, checkpoint every 1000 records (signed)");
    println!(
        "{:>10} {:>12} {:>12} {:>12} {:>14}",
        "appenders", "appends/s", "p50 µs", "p99 µs", "in flight"
    );
    for appenders in [1usize, 8, 64] {
        let tmp = tempfile::tempdir().unwrap();
        let config = AuditConfig::in_dir(tmp.path().join("audit"));
        let log = AuditLog::open(&config, SOURCE, Some(signer.clone())).unwrap();
        let until = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let latencies = runtime.block_on(async {
            let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let tasks: Vec<_> = (0..appenders)
                .map(|_| {
                    let log = log.clone();
                    let counter = Arc::clone(&counter);
                    tokio::spawn(async move {
                        let mut lat = Vec::new();
                        while Instant::now() < until {
                            let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let t = Instant::now();
                            log.append(entry(i)).await.unwrap();
                            lat.push(t.elapsed());
                        }
                        lat
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        });
        let elapsed = started.elapsed();
        runtime.block_on(log.close()).unwrap();
        let mut latencies = latencies;
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        let rate = latencies.len() as f64 / elapsed.as_secs_f64();
        // Appends in flight (Little's law): about the records that share
        // one sync, since every batch is answered after its one sync.
        let per_sync = rate * pct(0.5).as_secs_f64();
        println!(
            "{appenders:>10} {rate:>12.0} {:>12.0} {:>12.0} {per_sync:>14.1}",
            pct(0.5).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6
        );
    }
}
