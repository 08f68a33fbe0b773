//! The whole harness: every comparison of the issue, variants interleaved
//! round by round so that machine noise falls on all of them, each figure
//! a sample per round, every comparison checked to deliver the same rows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use yrd_proto::mesh::QueryRequest;
use yrd_proto::mesh::federation_client::FederationClient;

use crate::client::{self, Direct, Rows};
use crate::floor::StubRows;
use crate::procs::{self, Proc};
use crate::setup::{self, MAINLAND, Mesh, Variant, Workspace};
use crate::stats::{Goal, Report, ms, quantile};

/// Runs one part of the harness within a time limit: a part that fails or
/// takes too long is noted in the report (and fails the run), and the
/// other parts still run.
macro_rules! section {
    ($report:expr, $name:expr, $limit:expr, $part:expr) => {{
        let outcome = tokio::time::timeout($limit, $part).await;
        let note = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{}: failed: {e:#}", $name)),
            Err(_) => Some(format!(
                "{}: not finished within {:?}; its figures are partial",
                $name, $limit
            )),
        };
        if let Some(note) = note {
            eprintln!("  {note}");
            $report.failures.push(note);
        }
    }};
}

/// How much work each part does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rounds of every comparison.
    pub rounds: usize,
    /// Queries per variant per round for latency figures.
    pub queries: usize,
    /// How long each concurrency level runs, and the open loop.
    pub load_time: Duration,
    /// Client counts of the closed-loop runs.
    pub concurrency: Vec<usize>,
    /// Open streams for the memory figure: the small and the large count.
    pub streams: (usize, usize),
    /// Region counts of the growth runs.
    pub growth: Vec<usize>,
    /// Demo scale of the main mesh.
    pub scale: f64,
    /// Demo scale of the deep-scan mesh, and the deep page.
    pub deep: (f64, usize),
    /// Smoke mode: checks that everything runs and agrees, no goals.
    pub smoke: bool,
    /// The longest one part may take; past it, the part is noted as
    /// unfinished and the run goes on.
    pub section_limit: Duration,
}

impl Settings {
    /// The full run (under 10 minutes on the 2-core machine).
    pub fn full() -> Self {
        Self {
            rounds: 5,
            queries: 200,
            load_time: Duration::from_secs(3),
            concurrency: vec![1, 16, 64, 256],
            streams: (10, 1000),
            growth: vec![4, 8, 16, 31],
            scale: 1.0,
            deep: (10.0, 500),
            smoke: false,
            section_limit: Duration::from_secs(180),
        }
    }

    /// A few seconds' run for CI.
    pub fn smoke() -> Self {
        Self {
            rounds: 1,
            queries: 5,
            load_time: Duration::from_millis(300),
            concurrency: vec![1, 16],
            streams: (5, 20),
            growth: vec![4, 8],
            scale: 0.05,
            deep: (0.05, 5),
            smoke: true,
            section_limit: Duration::from_secs(120),
        }
    }
}

/// Runs everything; writes the report to `out` and prints it.
pub async fn run(dir: &Path, out: &Path, s: Settings) -> anyhow::Result<bool> {
    let started = Instant::now();
    let ws = Workspace::open(dir)?;
    let mut report = Report::default();
    machine(&mut report, &s);
    let mut main_variant = Variant::main();
    main_variant.scale = s.scale;
    eprintln!("starting the main mesh (4 nodes and a gateway, separate processes, mutual TLS) ...");
    let main = Mesh::start(&ws, main_variant).await?;
    let nodes: Vec<(String, SocketAddr)> = main.nodes.iter().map(|(r, a, _)| (r.clone(), *a)).collect();
    let direct = Direct::connect(&ws, &nodes, false).await?;
    let mut app = client::app(&ws, main.gateway_addr, false).await?;
    // Warm-up: connections, statement caches, the page cache.
    client::gateway_scan(&mut app, client::full_scan()).await?;
    direct.scan(&client::full_scan()).await?;

    eprintln!("capturing the stub nodes' rows ...");
    let rows_files = capture_stub_rows(&ws, &direct, &nodes).await?;
    let stubs = StubFleet::start(&ws, &rows_files, &s.growth).await?;

    eprintln!("[1/9] floor and full scans ...");
    section!(
        report,
        "floor and full scans",
        s.section_limit,
        scans(&ws, &mut report, &s, &main, &direct, &mut app, &stubs)
    );
    eprintln!("[2/9] page of 20 ...");
    section!(
        report,
        "page of 20",
        s.section_limit,
        page20(&mut report, &s, &main, &direct, &mut app)
    );
    eprintln!("[3/9] node vs store alone, aggregates ...");
    section!(
        report,
        "node vs store alone",
        s.section_limit,
        store_alone(&mut report, &s, &main, &direct, &mut app)
    );
    eprintln!("[4/9] tracing, mutual TLS, policy and audit ...");
    section!(report, "variants", s.section_limit, variants(&ws, &mut report, &s));
    eprintln!("[5/9] growth over stub regions ...");
    section!(report, "growth", s.section_limit, growth(&ws, &mut report, &s, &stubs));
    drop(stubs);
    eprintln!("[6/9] deep keyset scan ...");
    section!(report, "deep keyset scan", s.section_limit, deep(&ws, &mut report, &s));
    eprintln!("[7/9] concurrency, saturation, open loop ...");
    section!(report, "load", s.section_limit, load(&ws, &mut report, &s, &main));
    eprintln!("[8/9] gateway memory with open streams ...");
    section!(report, "memory", s.section_limit, memory(&ws, &mut report, &s, &main));
    eprintln!("[9/9] report");
    goals(&mut report, &s);
    report.finish();
    report.machine.insert(
        "elapsed_s".into(),
        serde_json::json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    println!("{}", report.text());
    println!("whole run: {:.0} s", started.elapsed().as_secs_f64());
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("JSON report: {}", out.display());
    Ok(report.checks.iter().all(|c| c.same) && report.failures.is_empty())
}

fn machine(report: &mut Report, s: &Settings) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let m = &mut report.machine;
    m.insert("cpu".into(), cpu.into());
    m.insert(
        "cores".into(),
        std::thread::available_parallelism().map_or(0, |n| n.get()).into(),
    );
    m.insert("rounds".into(), s.rounds.into());
    m.insert("queries_per_round".into(), s.queries.into());
    m.insert("scale".into(), s.scale.into());
    m.insert("smoke".into(), s.smoke.into());
}

/// Region, file of the rows each stub of that region serves.
async fn capture_stub_rows(
    ws: &Workspace,
    direct: &Direct,
    nodes: &[(String, SocketAddr)],
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (i, (region, _)) in nodes.iter().enumerate() {
        let one = direct.only(i);
        let scan = one.collect(&client::full_scan()).await?;
        let ordered = one
            .collect(&QueryRequest {
                page_size: 5000,
                ..client::page20()
            })
            .await?;
        let path = ws.run_dir().join(format!("stub-{region}.rows"));
        StubRows { scan, ordered }.save(&path)?;
        files.push(path);
    }
    Ok(files)
}

/// Stub nodes for the first `n` mainland regions, a hop in front of the
/// first, and gateways in front of the stubs (four; and each growth size).
struct StubFleet {
    stubs: Vec<(String, SocketAddr, Proc)>,
    hop: (SocketAddr, Proc),
    /// Gateways by region count.
    gateways: Vec<(usize, SocketAddr, Proc)>,
}

impl StubFleet {
    /// Stubs for the largest of `sizes` (at least four), a gateway for each size and four.
    async fn start(ws: &Workspace, rows: &[PathBuf], sizes: &[usize]) -> anyhow::Result<Self> {
        let most = sizes.iter().copied().max().unwrap_or(4).max(4);
        let dir = ws.run_dir().join("stubs");
        std::fs::create_dir_all(&dir)?;
        let mut stubs = Vec::new();
        for (i, region) in stub_regions(most).into_iter().enumerate() {
            let tls = ws.tls(&setup::node_id(region)?);
            let port = procs::free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let file = &rows[i % rows.len()];
            let proc = Proc::start(
                &format!("stub-{region}"),
                &ws.bin.bench,
                &[
                    "stub-node",
                    "--listen",
                    &addr.to_string(),
                    "--region",
                    region,
                    "--rows",
                    &file.to_string_lossy(),
                ]
                .into_iter()
                .map(str::to_owned)
                .chain(tls_args(&tls))
                .collect::<Vec<_>>(),
                &dir,
            )?;
            stubs.push((region.to_owned(), addr, proc));
        }
        for (_, addr, p) in &mut stubs {
            procs::wait_listening(*addr, &mut [p], Duration::from_secs(20)).await?;
        }
        let hop_addr = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        let node_tls = ws.tls(&setup::node_id(&stubs[0].0)?);
        let gw_tls = ws.tls(&setup::gateway_id()?);
        let mut hop = Proc::start(
            "hop",
            &ws.bin.bench,
            &[
                "hop",
                "--listen",
                &hop_addr.to_string(),
                "--upstream",
                &stubs[0].1.to_string(),
                "--client-cert",
                &gw_tls.cert.to_string_lossy(),
                "--client-key",
                &gw_tls.key.to_string_lossy(),
            ]
            .into_iter()
            .map(str::to_owned)
            .chain(tls_args(&node_tls))
            .collect::<Vec<_>>(),
            &dir,
        )?;
        procs::wait_listening(hop_addr, &mut [&mut hop], Duration::from_secs(20)).await?;
        let mut fleet = Self {
            stubs,
            hop: (hop_addr, hop),
            gateways: Vec::new(),
        };
        let mut sizes = sizes.to_vec();
        sizes.push(4);
        sizes.sort_unstable();
        sizes.dedup();
        for n in sizes {
            let endpoints: Vec<(String, String)> = fleet
                .stubs
                .iter()
                .take(n)
                .map(|(r, a, _)| (r.clone(), setup::endpoint(false, *a)))
                .collect();
            let mut variant = Variant::main();
            variant.name = "stubs";
            let (p, addr, _) = setup::start_gateway(ws, &variant, &dir, &endpoints, &format!("{n}-regions")).await?;
            fleet.gateways.push((n, addr, p));
        }
        Ok(fleet)
    }

    fn gateway(&self, n: usize) -> Option<(SocketAddr, &Proc)> {
        self.gateways.iter().find(|(k, _, _)| *k == n).map(|(_, a, p)| (*a, p))
    }
}

/// The `--ca`, `--cert` and `--key` arguments of a stub or hop.
fn tls_args(tls: &yrd_identity::TlsPaths) -> Vec<String> {
    [("--ca", &tls.ca), ("--cert", &tls.cert), ("--key", &tls.key)]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_owned(), path.to_string_lossy().into_owned()])
        .collect()
}

/// The regions of `n` stubs: the four of the delta first (so that four
/// stubs serve the same rows as the four nodes), then the rest of the
/// mainland's provincial-level regions.
fn stub_regions(n: usize) -> Vec<&'static str> {
    let delta: Vec<&'static str> = yrd_datasets::codes::regions::PROVINCES.iter().map(|p| p.code).collect();
    let rest = MAINLAND.iter().copied().filter(|r| !delta.contains(r));
    delta.iter().copied().chain(rest).take(n).collect()
}

/// CPU per row in microseconds.
fn us_per(cpu: Duration, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / n as f64
    }
}

/// The CPU of `procs` while `f` runs.
async fn with_cpu<T>(
    procs: &[&Proc],
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Duration, Duration)> {
    let before: Vec<Duration> = procs.iter().map(|p| p.cpu()).collect::<Result<_, _>>()?;
    let t = Instant::now();
    let out = f.await?;
    let wall = t.elapsed();
    let mut cpu = Duration::ZERO;
    for (p, b) in procs.iter().zip(before) {
        cpu += p.cpu()?.saturating_sub(b);
    }
    Ok((out, wall, cpu))
}

fn rows_per_s(rows: u64, wall: Duration) -> f64 {
    rows as f64 / wall.as_secs_f64().max(1e-9)
}

/// CPU of this harness process so far.
fn own_cpu() -> anyhow::Result<Duration> {
    procs::cpu_of(std::process::id())
}

/// Calls the gateway at `admin` has made to region nodes so far.
async fn region_calls(admin: SocketAddr) -> Option<f64> {
    procs::metric_sum(admin, yrd_telemetry::REGION_CALLS_TOTAL).await
}

async fn scans(
    ws: &Workspace,
    report: &mut Report,
    s: &Settings,
    main: &Mesh,
    direct: &Direct,
    app: &mut FederationClient<Channel>,
    stubs: &StubFleet,
) -> anyhow::Result<()> {
    let scan = client::full_scan();
    let (stub_region, stub_addr, _) = &stubs.stubs[0];
    let stub_direct = Direct::connect(ws, &[(stub_region.clone(), *stub_addr)], false).await?;
    let hop_direct = Direct::connect(ws, &[(stub_region.clone(), stubs.hop.0)], false).await?;
    let (stub_gw_addr, stub_gw) = stubs.gateway(4).context("no gateway over four stubs")?;
    let mut stub_app = client::app(ws, stub_gw_addr, false).await?;
    let node_procs: Vec<&Proc> = main.node_procs().collect();
    let mut floor_seen = Vec::new();
    let mut seen = Vec::new();
    for round in 0..s.rounds {
        // The floor: a stub alone, and the naive hop in front of it.
        let (r, wall, _) = with_cpu(&[], stub_direct.scan(&scan)).await?;
        report.add("floor.stub.scan_rows_per_s", "rows/s", rows_per_s(r.rows, wall));
        if round == 0 {
            floor_seen.push(("stub".to_owned(), r.rows, r.set));
        }
        let (r, wall, cpu) = with_cpu(&[&stubs.hop.1], hop_direct.scan(&scan)).await?;
        report.add("floor.hop.scan_rows_per_s", "rows/s", rows_per_s(r.rows, wall));
        report.add("floor.hop.cpu_us_per_row", "µs/row", us_per(cpu, r.rows));
        if round == 0 {
            floor_seen.push(("hop in front of it".to_owned(), r.rows, r.set));
        }
        // The gateway over four stubs.
        let (r, wall, cpu) = with_cpu(&[stub_gw], client::gateway_scan(&mut stub_app, scan.clone())).await?;
        report.add("stubs.gateway.scan_rows_per_s", "rows/s", rows_per_s(r.rows, wall));
        report.add("stubs.gateway.cpu_us_per_row", "µs/row", us_per(cpu, r.rows));
        if round == 0 {
            seen.push(("gateway over four stubs".to_owned(), r.rows, r.set));
        }
        // The real mesh, unpinned: direct fan-out, then the gateway.
        let (r, wall, cpu) = with_cpu(&node_procs, direct.scan(&scan)).await?;
        report.add("scan.direct.rows_per_s", "rows/s", rows_per_s(r.rows, wall));
        report.add("node.cpu_us_per_row.direct", "µs/row", us_per(cpu, r.rows));
        report.add("scan.direct.node_calls", "calls", r.calls as f64);
        if round == 0 {
            seen.push(("direct fan-out".to_owned(), r.rows, r.set));
        }
        let calls = region_calls(main.gateway_admin).await;
        let mut watched = node_procs.clone();
        watched.push(&main.gateway);
        let before: Vec<Duration> = watched.iter().map(|p| p.cpu()).collect::<Result<_, _>>()?;
        let t = Instant::now();
        let r = client::gateway_scan(app, scan.clone()).await?;
        let wall = t.elapsed();
        let cpu: Vec<Duration> = watched
            .iter()
            .zip(&before)
            .map(|(p, b)| p.cpu().map(|c| c.saturating_sub(*b)))
            .collect::<Result<_, _>>()?;
        let (gateway_cpu, nodes_cpu) = cpu
            .split_last()
            .map_or((Duration::ZERO, Duration::ZERO), |(g, n)| (*g, n.iter().sum()));
        report.add("scan.gateway.rows_per_s", "rows/s", rows_per_s(r.rows, wall));
        report.add("gateway.cpu_us_per_row", "µs/row", us_per(gateway_cpu, r.rows));
        report.add("node.cpu_us_per_row.via_gateway", "µs/row", us_per(nodes_cpu, r.rows));
        report.add("scan.gateway.pages", "pages", r.calls as f64);
        if let (Some(b), Some(a)) = (calls, region_calls(main.gateway_admin).await) {
            report.add("scan.gateway.node_calls", "calls", a - b);
        }
        if round == 0 {
            seen.push(("gateway".to_owned(), r.rows, r.set));
        }
        // Pinned: whoever merges (the harness for the direct fan-out, the
        // gateway) on core 1, everything else on core 0.
        pin_all(main, "0", "0", "1")?;
        let pinned_direct = with_cpu(&[], direct.scan(&scan)).await;
        pin_all(main, "0", "1", "0")?;
        let pinned_gateway = with_cpu(&[], client::gateway_scan(app, scan.clone())).await;
        pin_all(main, "0-1", "0-1", "0-1")?;
        let (r, wall, _) = pinned_direct?;
        report.add("scan.direct.rows_per_s.pinned", "rows/s", rows_per_s(r.rows, wall));
        let (r, wall, _) = pinned_gateway?;
        report.add("scan.gateway.rows_per_s.pinned", "rows/s", rows_per_s(r.rows, wall));
    }
    report.check("full scan: a stub alone vs the naive hop in front of it", floor_seen);
    report.check(
        "full scan: direct fan-out vs the gateway (and the gateway over stubs holding the same rows)",
        seen,
    );
    Ok(())
}

/// Pins the nodes to `nodes`, the gateway to `gateway`, the harness to `me`.
fn pin_all(main: &Mesh, nodes: &str, gateway: &str, me: &str) -> anyhow::Result<()> {
    for p in main.node_procs() {
        p.pin(nodes)?;
    }
    main.gateway.pin(gateway)?;
    procs::pin(std::process::id(), me)
}

/// Latencies of `n` sequential runs of `f`, with the rows of the first.
async fn latencies<F, Fut>(n: usize, mut f: F) -> anyhow::Result<(Vec<Duration>, Rows)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Rows>>,
{
    let mut out = Vec::with_capacity(n);
    let mut first = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f().await?;
        out.push(t.elapsed());
        first.get_or_insert(r);
    }
    Ok((out, first.unwrap_or_default()))
}

async fn page20(
    report: &mut Report,
    s: &Settings,
    main: &Mesh,
    direct: &Direct,
    app: &mut FederationClient<Channel>,
) -> anyhow::Result<()> {
    let req = client::page20();
    let one = direct.only(0);
    let mut seen = Vec::new();
    for round in 0..s.rounds {
        let g0 = main.gateway.cpu()?;
        let (mut lat, r) = latencies(s.queries, || {
            let mut app = app.clone();
            let req = req.clone();
            async move { Ok(client::gateway_page(&mut app, req).await?.0) }
        })
        .await?;
        report.add(
            "page20.gateway.cpu_us_per_query",
            "µs",
            us_per(main.gateway.cpu()?.saturating_sub(g0), s.queries as u64),
        );
        report.add("page20.gateway.p50", "ms", ms(quantile(&mut lat, 0.5)));
        report.add("page20.gateway.p99", "ms", ms(quantile(&mut lat, 0.99)));
        if round == 0 {
            seen.push(("gateway".to_owned(), r.rows, r.ordered));
        }
        let c0 = own_cpu()?;
        let (mut lat, r) = latencies(s.queries, || direct.page(&req)).await?;
        report.add(
            "page20.direct.client_cpu_us_per_query",
            "µs",
            us_per(own_cpu()?.saturating_sub(c0), s.queries as u64),
        );
        report.add("page20.direct.p50", "ms", ms(quantile(&mut lat, 0.5)));
        report.add("page20.direct.p99", "ms", ms(quantile(&mut lat, 0.99)));
        if round == 0 {
            seen.push(("direct fan-out and merge".to_owned(), r.rows, r.ordered));
        }
        let (mut lat, _) = latencies(s.queries, || one.page(&req)).await?;
        report.add("page20.one_node.p50", "ms", ms(quantile(&mut lat, 0.5)));
    }
    report.check("page of 20: gateway vs direct fan-out and merge", seen);
    Ok(())
}

async fn store_alone(
    report: &mut Report,
    s: &Settings,
    main: &Mesh,
    direct: &Direct,
    app: &mut FederationClient<Channel>,
) -> anyhow::Result<()> {
    let (region, _, node) = &main.nodes[0];
    let path = main.store_path(region).context("the first node's store path")?;
    let one = direct.only(0);
    let scan = client::full_scan();
    let agg_one = yrd_proto::mesh::AggregateRequest {
        regions: vec![region.clone()],
        ..client::aggregate_request()
    };
    let mut seen_groups = Vec::new();
    for round in 0..s.rounds {
        // The node streaming its whole region.
        let (r, _, cpu) = with_cpu(&[node], one.scan(&scan)).await?;
        report.add("node.scan_cpu_us_per_row", "µs/row", us_per(cpu, r.rows));
        // The store alone: the same rows read from the same file.
        let p = path.clone();
        let c0 = own_cpu()?;
        let rows = tokio::task::spawn_blocking(move || crate::store::scan(&p)).await??;
        report.add(
            "store.scan_cpu_us_per_row",
            "µs/row",
            us_per(own_cpu()?.saturating_sub(c0), rows),
        );
        if rows != r.rows {
            report.notes.push(format!(
                "the store alone read {rows} rows, the node streamed {}",
                r.rows
            ));
        }
        // One region's aggregate: through the node, and the store alone.
        let t = Instant::now();
        let resp = client::gateway_aggregate(app, agg_one.clone()).await?;
        report.add("node.aggregate_ms", "ms", ms(t.elapsed()));
        let p = path.clone();
        let t = Instant::now();
        let alone = tokio::task::spawn_blocking(move || crate::store::aggregate(&p)).await??;
        report.add("store.aggregate_ms", "ms", ms(t.elapsed()));
        if round == 0 {
            seen_groups.push((
                "node".to_owned(),
                resp.groups.len() as u64,
                client::groups_digest(&client::groups_of(&resp)),
            ));
            seen_groups.push((
                "store alone".to_owned(),
                alone.len() as u64,
                client::groups_digest(&alone),
            ));
        }
        // Pushdown over four regions vs the client aggregating the rows.
        let t = Instant::now();
        let pushed = client::gateway_aggregate(app, client::aggregate_request()).await?;
        report.add("aggregate.pushdown_ms", "ms", ms(t.elapsed()));
        let t = Instant::now();
        let (groups, _) = client::client_aggregate(app).await?;
        report.add("aggregate.client_ms", "ms", ms(t.elapsed()));
        if round == 0 {
            let g = client::groups_of(&pushed);
            report.check(
                "aggregate: pushdown vs rows aggregated in the client",
                vec![
                    ("pushdown".to_owned(), g.len() as u64, client::groups_digest(&g)),
                    ("client".to_owned(), groups.len() as u64, client::groups_digest(&groups)),
                ],
            );
        }
    }
    report.check("one region's aggregate: node vs the store alone", seen_groups);
    Ok(())
}

/// Throughput of `clients` concurrent loops of page-of-20 queries for
/// `time`; with latencies.
async fn closed_loop(
    apps: &[FederationClient<Channel>],
    req: &QueryRequest,
    clients: usize,
    time: Duration,
) -> anyhow::Result<(f64, Vec<Duration>, u64, String)> {
    let until = Instant::now() + time;
    let started = Instant::now();
    let loops = (0..clients).map(|i| {
        let mut app = apps[i % apps.len()].clone();
        let req = req.clone();
        async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            let mut first = String::new();
            while Instant::now() < until {
                let t = Instant::now();
                match client::gateway_page(&mut app, req.clone()).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        failed += 1;
                        if first.is_empty() {
                            first = format!("{e:#}");
                        }
                    }
                }
            }
            (lat, failed, first)
        }
    });
    let mut all = Vec::new();
    let mut failed = 0;
    let mut first_error = String::new();
    for (lat, f, first) in futures::future::join_all(loops).await {
        all.extend(lat);
        failed += f;
        if first_error.is_empty() {
            first_error = first;
        }
    }
    let qps = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((qps, all, failed, first_error))
}

async fn variants(ws: &Workspace, report: &mut Report, s: &Settings) -> anyhow::Result<()> {
    let (otlp_addr, spans, _receiver) = crate::otlp::start().await?;
    let mk = |name: &'static str, f: &dyn Fn(&mut Variant)| {
        let mut v = Variant::main();
        v.name = name;
        v.scale = s.scale;
        f(&mut v);
        v
    };
    let meshes = vec![
        Mesh::start(
            ws,
            mk("traced", &|v| {
                v.traces = true;
                v.otlp = Some(format!("http://{otlp_addr}"));
            }),
        )
        .await?,
        Mesh::start(ws, mk("untraced", &|v| v.traces = false)).await?,
        Mesh::start(
            ws,
            mk("allow-all", &|v| {
                v.policy = false;
                v.audit = false;
            }),
        )
        .await?,
        Mesh::start(
            ws,
            mk("insecure", &|v| {
                v.policy = false;
                v.audit = false;
                v.insecure = true;
            }),
        )
        .await?,
    ];
    let mut apps = Vec::new();
    for m in &meshes {
        apps.push(client::app(ws, m.gateway_addr, m.variant.insecure).await?);
    }
    // The fields every caller may read, so that the insecure mode (no
    // identity, no grants) delivers the same rows as mutual TLS.
    let open_fields: Vec<String> = [
        "credit_code",
        "name",
        "region",
        "city",
        "district",
        "industry",
        "registered_capital",
        "established",
        "status",
    ]
    .map(str::to_owned)
    .to_vec();
    let page = client::page20();
    let open_page = QueryRequest {
        fields: open_fields.clone(),
        ..client::page20()
    };
    let open_scan = QueryRequest {
        fields: open_fields,
        ..client::full_scan()
    };
    // Warm-up.
    for (m, app) in meshes.iter().zip(apps.iter_mut()) {
        let req = if m.variant.policy { &page } else { &open_page };
        client::gateway_page(app, req.clone()).await?;
    }
    let clients = 4;
    let time = s.load_time;
    let mut seen: Vec<Vec<(String, u64, u64)>> = vec![Vec::new(); 3];
    for round in 0..s.rounds {
        for (i, m) in meshes.iter().enumerate() {
            let name = m.variant.name;
            let app = &mut apps[i];
            let req = if m.variant.policy { &page } else { &open_page };
            let (qps, _, failed, first_error) = closed_loop(std::slice::from_ref(app), req, clients, time).await?;
            report.add(&format!("variant.{name}.page20_qps"), "queries/s", qps);
            if failed > 0 {
                report.notes.push(format!(
                    "{name}: {failed} page-of-20 queries failed; the first: {first_error}"
                ));
            }
            let t = Instant::now();
            let r = client::gateway_scan(app, open_scan.clone())
                .await
                .with_context(|| format!("the {name} mesh's full scan"))?;
            report.add(
                &format!("variant.{name}.scan_rows_per_s"),
                "rows/s",
                rows_per_s(r.rows, t.elapsed()),
            );
            if round == 0 {
                let (p, _) = client::gateway_page(app, req.clone()).await?;
                let group = match name {
                    "traced" | "untraced" => 0,
                    _ => 1,
                };
                seen[group].push((format!("{name} page of 20"), p.rows, p.ordered));
                seen[2].push((format!("{name} scan"), r.rows, r.set));
            }
        }
    }
    let [tracing, security, scans] =
        <[Vec<(String, u64, u64)>; 3]>::try_from(seen).map_err(|_| anyhow::anyhow!("checks"))?;
    report.check("page of 20: tracing on vs off", tracing);
    report.check(
        "page of 20 (open fields): allow-all over mutual TLS vs insecure",
        security,
    );
    report.check("full scan (open fields): every variant", scans);
    report.add("variant.traced.spans_received", "spans", spans.count() as f64);
    Ok(())
}

async fn growth(ws: &Workspace, report: &mut Report, s: &Settings, stubs: &StubFleet) -> anyhow::Result<()> {
    let mut apps = Vec::new();
    for &n in &s.growth {
        let (addr, _) = stubs.gateway(n).with_context(|| format!("no gateway over {n} stubs"))?;
        let mut app = client::app(ws, addr, false).await?;
        client::gateway_page(&mut app, client::page20()).await?;
        apps.push((n, app));
    }
    let req = client::page20();
    for _ in 0..s.rounds {
        for (n, app) in &mut apps {
            let (_, gw) = stubs.gateway(*n).context("gateway")?;
            let c0 = gw.cpu()?;
            let (mut lat, r) = latencies(s.queries, || {
                let mut app = app.clone();
                let req = req.clone();
                async move { Ok(client::gateway_page(&mut app, req).await?.0) }
            })
            .await?;
            if r.rows != 20 {
                bail!("{n} stub regions: a page of 20 gave {} rows", r.rows);
            }
            report.add(&format!("growth.{n}.p50"), "ms", ms(quantile(&mut lat, 0.5)));
            let per_query = us_per(gw.cpu()?.saturating_sub(c0), s.queries as u64);
            report.add(&format!("growth.{n}.gateway_cpu_us_per_query"), "µs", per_query);
            report.add(
                &format!("growth.{n}.gateway_cpu_us_per_query_per_region"),
                "µs",
                per_query / *n as f64,
            );
        }
    }
    Ok(())
}

async fn deep(ws: &Workspace, report: &mut Report, s: &Settings) -> anyhow::Result<()> {
    let (scale, page) = s.deep;
    let mut v = Variant::main();
    v.name = "deep";
    v.scale = scale;
    v.regions = 1;
    eprintln!("  one region at scale {scale} ...");
    let mesh = Mesh::start(ws, v).await?;
    let mut app = client::app(ws, mesh.gateway_addr, false).await?;
    let req = QueryRequest {
        filter: String::new(),
        page_size: 100,
        ..client::page20()
    };
    // The token of page `page`: the pages before it, once.
    let mut token = String::new();
    for _ in 1..page {
        let (_, next) = client::gateway_page(
            &mut app,
            QueryRequest {
                page_token: token,
                ..req.clone()
            },
        )
        .await?;
        if next.is_empty() {
            bail!("the deep scan ended before page {page}");
        }
        token = next;
    }
    for _ in 0..s.rounds {
        for (name, t) in [("page1", String::new()), ("deep", token.clone())] {
            let (mut lat, r) = latencies(s.queries, || {
                let mut app = app.clone();
                let req = QueryRequest {
                    page_token: t.clone(),
                    ..req.clone()
                };
                async move { Ok(client::gateway_page(&mut app, req).await?.0) }
            })
            .await?;
            if r.rows != 100 {
                bail!("deep scan {name}: {} rows, not 100", r.rows);
            }
            report.add(&format!("deep.{name}.p50"), "ms", ms(quantile(&mut lat, 0.5)));
        }
    }
    report.machine.insert("deep_page".into(), page.into());
    report.machine.insert("deep_scale".into(), scale.into());
    Ok(())
}

async fn load(ws: &Workspace, report: &mut Report, s: &Settings, main: &Mesh) -> anyhow::Result<()> {
    let mut apps = Vec::new();
    for _ in 0..8 {
        apps.push(client::app(ws, main.gateway_addr, false).await?);
    }
    let req = client::page20();
    let mut saturation = 0.0f64;
    for _ in 0..s.rounds {
        for &c in &s.concurrency {
            let (qps, mut lat, failed, first_error) = closed_loop(&apps, &req, c, s.load_time).await?;
            report.add(&format!("load.closed.{c}.qps"), "queries/s", qps);
            report.add(&format!("load.closed.{c}.p50"), "ms", ms(quantile(&mut lat, 0.5)));
            report.add(&format!("load.closed.{c}.p99"), "ms", ms(quantile(&mut lat, 0.99)));
            if failed > 0 {
                report.notes.push(format!(
                    "closed loop with {c} clients: {failed} queries failed; the first: {first_error}"
                ));
            }
            saturation = saturation.max(qps);
        }
    }
    report.add("load.saturation_qps", "queries/s", saturation);
    let rate = saturation * 0.7;
    for _ in 0..s.rounds {
        let (mut lat, failed) = open_loop(&apps, &req, rate, s.load_time * 2).await;
        report.add("load.open70.p50", "ms", ms(quantile(&mut lat, 0.5)));
        report.add("load.open70.p99", "ms", ms(quantile(&mut lat, 0.99)));
        if failed > 0 {
            report
                .notes
                .push(format!("open loop at {rate:.0}/s: {failed} queries failed"));
        }
    }
    report
        .machine
        .insert("open_loop_rate".into(), ((rate * 10.0).round() / 10.0).into());
    Ok(())
}

/// Requests sent at a fixed `rate` for `time`, each timed from when it was
/// due (so that queueing in the harness counts too), at most 4096 at once.
async fn open_loop(
    apps: &[FederationClient<Channel>],
    req: &QueryRequest,
    rate: f64,
    time: Duration,
) -> (Vec<Duration>, u64) {
    let n = (rate * time.as_secs_f64()).max(1.0) as usize;
    let gap = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let start = tokio::time::Instant::now();
    let limit = Arc::new(Semaphore::new(4096));
    let mut tasks = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let due = start + gap * i as u32;
        tokio::time::sleep_until(due).await;
        let mut app = apps[i % apps.len()].clone();
        let req = req.clone();
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        tasks.push(tokio::spawn(async move {
            let ok = client::gateway_page(&mut app, req).await.is_ok();
            drop(permit);
            (due.elapsed(), ok)
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    while let Some(done) = tasks.next().await {
        match done {
            Ok((d, true)) => lat.push(d),
            _ => failed += 1,
        }
    }
    (lat, failed)
}

async fn memory(ws: &Workspace, report: &mut Report, s: &Settings, main: &Mesh) -> anyhow::Result<()> {
    let (small, large) = s.streams;
    // Once: memory a process has had stays with it (the allocator keeps
    // it), so a second round would start from the first round's peak.
    {
        for n in [small, large] {
            let idle = main.gateway.rss_kib()?;
            let held = hold_streams(ws, main.gateway_addr, n).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = main.gateway.rss_kib()?;
            report.add(
                &format!("memory.gateway_rss_mib.{n}_streams"),
                "MiB",
                rss as f64 / 1024.0,
            );
            report.add(
                &format!("memory.gateway_growth_mib.{n}_streams"),
                "MiB",
                rss.saturating_sub(idle) as f64 / 1024.0,
            );
            drop(held);
            // Let the gateway end the cancelled calls before the next count.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

/// Opens `n` full-scan streams through the gateway, ten to a connection,
/// and reads none of their rows: streams open, their reader idle. (Rows
/// wait in the flow-control windows and the gateway's bounded buffers.)
async fn hold_streams(
    ws: &Workspace,
    addr: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<tonic::Streaming<yrd_proto::mesh::QueryResponse>>> {
    let mut apps = Vec::new();
    for _ in 0..n.div_ceil(10) {
        apps.push(client::app(ws, addr, false).await?);
    }
    let opens = (0..n).map(|i| {
        let mut app = apps[i % apps.len()].clone();
        async move {
            let stream = app.query(client::full_scan()).await?.into_inner();
            anyhow::Ok(stream)
        }
    });
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(opens))
        .await
        .with_context(|| format!("opening {n} streams took more than a minute"))?
        .into_iter()
        .collect()
}

/// The ratios the issue sets goals for (none in smoke mode).
fn goals(r: &mut Report, s: &Settings) {
    let g = |goal: Goal| (!s.smoke).then_some(goal);
    r.ratio(
        "page20 p50: gateway / direct fan-out",
        "page20.gateway.p50",
        "page20.direct.p50",
        g(Goal::AtMost(1.15)),
    );
    r.ratio(
        "page20 p99: gateway / direct fan-out",
        "page20.gateway.p99",
        "page20.direct.p99",
        g(Goal::AtMost(1.3)),
    );
    r.ratio(
        "page20 p50: gateway / one node",
        "page20.gateway.p50",
        "page20.one_node.p50",
        None,
    );
    r.ratio(
        "page20 CPU: gateway / direct client",
        "page20.gateway.cpu_us_per_query",
        "page20.direct.client_cpu_us_per_query",
        None,
    );
    r.ratio(
        "scan rows/s: gateway / direct",
        "scan.gateway.rows_per_s",
        "scan.direct.rows_per_s",
        g(Goal::AtLeast(0.9)),
    );
    r.ratio(
        "scan rows/s pinned: gateway / direct",
        "scan.gateway.rows_per_s.pinned",
        "scan.direct.rows_per_s.pinned",
        g(Goal::AtLeast(0.95)),
    );
    r.ratio(
        "scan rows/s: direct / stub floor",
        "scan.direct.rows_per_s",
        "floor.stub.scan_rows_per_s",
        None,
    );
    r.ratio(
        "scan rows/s: gateway over stubs / stub floor",
        "stubs.gateway.scan_rows_per_s",
        "floor.stub.scan_rows_per_s",
        None,
    );
    r.ratio(
        "gateway CPU/row / naive hop",
        "gateway.cpu_us_per_row",
        "floor.hop.cpu_us_per_row",
        g(Goal::AtMost(0.8)),
    );
    r.ratio(
        "gateway over stubs CPU/row / naive hop",
        "stubs.gateway.cpu_us_per_row",
        "floor.hop.cpu_us_per_row",
        None,
    );
    r.ratio(
        "node CPU/row / store alone",
        "node.scan_cpu_us_per_row",
        "store.scan_cpu_us_per_row",
        g(Goal::AtMost(2.0)),
    );
    r.ratio(
        "node CPU/row delivered: via gateway / direct",
        "node.cpu_us_per_row.via_gateway",
        "node.cpu_us_per_row.direct",
        None,
    );
    r.ratio(
        "node calls per scan: gateway / direct",
        "scan.gateway.node_calls",
        "scan.direct.node_calls",
        g(Goal::AtMost(1.1)),
    );
    r.ratio(
        "aggregate time: node / store alone",
        "node.aggregate_ms",
        "store.aggregate_ms",
        None,
    );
    r.ratio(
        "aggregate: client streaming / pushdown",
        "aggregate.client_ms",
        "aggregate.pushdown_ms",
        g(Goal::AtLeast(20.0)),
    );
    r.ratio(
        "page20 qps: tracing on / off",
        "variant.traced.page20_qps",
        "variant.untraced.page20_qps",
        g(Goal::AtLeast(0.95)),
    );
    r.ratio(
        "scan rows/s: tracing on / off",
        "variant.traced.scan_rows_per_s",
        "variant.untraced.scan_rows_per_s",
        g(Goal::AtLeast(0.95)),
    );
    r.ratio(
        "page20 qps: mutual TLS / insecure",
        "variant.allow-all.page20_qps",
        "variant.insecure.page20_qps",
        g(Goal::AtLeast(0.9)),
    );
    r.ratio(
        "scan rows/s: mutual TLS / insecure",
        "variant.allow-all.scan_rows_per_s",
        "variant.insecure.scan_rows_per_s",
        g(Goal::AtLeast(0.9)),
    );
    r.ratio(
        "page20 qps: policy+audit / allow-all",
        "variant.untraced.page20_qps",
        "variant.allow-all.page20_qps",
        g(Goal::AtLeast(0.95)),
    );
    r.ratio(
        "scan rows/s: policy+audit / allow-all",
        "variant.untraced.scan_rows_per_s",
        "variant.allow-all.scan_rows_per_s",
        g(Goal::AtLeast(0.95)),
    );
    let (small, large) = s.streams;
    r.ratio(
        "gateway RSS: many / few open streams",
        &format!("memory.gateway_rss_mib.{large}_streams"),
        &format!("memory.gateway_rss_mib.{small}_streams"),
        g(Goal::AtMost(3.0)),
    );
    r.ratio(
        "open loop at 70%: p99 / p50",
        "load.open70.p99",
        "load.open70.p50",
        g(Goal::AtMost(3.0)),
    );
    if let (Some(&first), Some(&last)) = (s.growth.first(), s.growth.last()) {
        r.ratio(
            &format!("growth p50: {last} / {first} regions"),
            &format!("growth.{last}.p50"),
            &format!("growth.{first}.p50"),
            g(Goal::AtMost(2.0)),
        );
        r.ratio(
            &format!("growth CPU per query per region: {last} / {first}"),
            &format!("growth.{last}.gateway_cpu_us_per_query_per_region"),
            &format!("growth.{first}.gateway_cpu_us_per_query_per_region"),
            g(Goal::AtMost(1.0)),
        );
    }
    r.ratio(
        "deep scan p50: deep page / page 1",
        "deep.deep.p50",
        "deep.page1.p50",
        g(Goal::AtMost(1.2)),
    );
}
