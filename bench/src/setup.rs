//! The harness's workspace: the mesh CA and certificates, the generated
//! stores (kept between runs: generation takes a while), and one mesh per
//! variant — four region nodes and a gateway, each its own process,
//! started from config files written here the way an agency writes them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use yrd_datasets::codes::regions::PROVINCES;
use yrd_datasets::demo::DemoSpec;
use yrd_gateway::GatewayConfig;
use yrd_gateway::config::RegionConfig;
use yrd_identity::{CaFiles, CertFiles, DEFAULT_TRUST_DOMAIN, IssueRequest, PeerId, Secret, TlsPaths};
use yrd_node::NodeConfig;
use yrd_node::config::{SqliteConfig, StoreConfig};

use yrd_proto::mesh::ListRegionsRequest;
use yrd_proto::mesh::federation_client::FederationClient;

use crate::procs::{self, Proc};

/// The application the harness queries as.
pub const APP: &str = "bench";
/// The purpose it declares (the full policy requires one).
pub const PURPOSE: &str = "benchmark";
/// The seed of the demo data (the same as `yrdctl up`'s default).
pub const SEED: u64 = 2026;
/// The layout of the generated stores (2: `WITHOUT ROWID` tables).
const STORE_LAYOUT: u32 = 2;
/// How long a mesh may take to come up.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The provincial-level regions of the mainland (GB/T 2260), for the
/// growth runs over stub nodes: a national federation as a config.
pub const MAINLAND: [&str; 31] = [
    "110000", "120000", "130000", "140000", "150000", "210000", "220000", "230000", "310000", "320000", "330000",
    "340000", "350000", "360000", "370000", "410000", "420000", "430000", "440000", "450000", "460000", "500000",
    "510000", "520000", "530000", "540000", "610000", "620000", "630000", "640000", "650000",
];

/// The policy of the "policy and audit" variant: a conditional dataset
/// that needs a purpose, a group, the harness's grant among others.
const POLICY_FULL: &str = r#"# yrd-bench: a region's policy as an agency writes it.
[groups]
analysts = ["bench", "dashboard", "inspector"]

[datasets.enterprise]
class = "conditional"
require_purpose = true

[[grant]]
id = "bench-dashboard-scoped"
apps = ["dashboard"]
datasets = ["enterprise"]
fields = ["legal_representative", "address"]
row_scope = 'status = "active"'

[[grant]]
id = "bench-analysts"
groups = ["analysts"]
datasets = ["enterprise"]
fields = "*"
purposes = ["benchmark", "market-supervision"]
not_after = "2099-12-31"

[[grant]]
id = "bench-inspector-waste"
apps = ["inspector"]
datasets = ["hazardous_waste"]
fields = "*"
"#;

/// The policy of the "allow-all" variant: one grant of everything.
const POLICY_ALLOW_ALL: &str = r#"# yrd-bench: every field of enterprise to the harness, nothing else checked.
[[grant]]
id = "bench-all"
apps = ["bench"]
datasets = ["enterprise"]
fields = "*"
"#;

/// The binaries the harness runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `yrd-node`.
    pub node: PathBuf,
    /// `yrd-gateway`.
    pub gateway: PathBuf,
    /// This harness (for its stub node and pass-through hop).
    pub bench: PathBuf,
}

impl Binaries {
    /// The binaries beside this one; built first when run through cargo
    /// (`cargo run -p yrd-bench` builds only this package's binary).
    pub fn find() -> anyhow::Result<Self> {
        let bench = std::env::current_exe().context("locating the harness binary")?;
        let dir = bench.parent().context("the harness binary has no folder")?.to_owned();
        if let Some(cargo) = std::env::var_os("CARGO") {
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut command = Command::new(cargo);
            command.args(["build", "--quiet", "-p", "yrd-node", "-p", "yrd-gateway", "--bins"]);
            if release {
                command.arg("--release");
            }
            if let Some(target) = dir.parent() {
                command.env("CARGO_TARGET_DIR", target);
            }
            let status = command.status().context("running cargo build")?;
            if !status.success() {
                bail!("building yrd-node and yrd-gateway failed");
            }
        }
        let found = Self {
            node: dir.join("yrd-node"),
            gateway: dir.join("yrd-gateway"),
            bench,
        };
        for p in [&found.node, &found.gateway] {
            if !p.exists() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p yrd-node -p yrd-gateway`, \
                     or run the harness with `cargo run --release -p yrd-bench`",
                    p.display()
                );
            }
        }
        Ok(found)
    }
}

/// The workspace folder and what is in it.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The folder.
    pub dir: PathBuf,
    /// The binaries.
    pub bin: Binaries,
}

impl Workspace {
    /// Opens (creates) the workspace and its PKI; `run/` is emptied.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = std::fs::canonicalize(dir)?;
        let run = dir.join("run");
        if run.exists() {
            std::fs::remove_dir_all(&run).with_context(|| format!("emptying {}", run.display()))?;
        }
        std::fs::create_dir_all(&run)?;
        let ws = Self {
            dir,
            bin: Binaries::find()?,
        };
        ws.ensure_pki()?;
        Ok(ws)
    }

    /// The PKI folder.
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// The folder of this run's configs, logs and audit logs.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn ensure_pki(&self) -> anyhow::Result<()> {
        let pki = self.pki();
        let had = CaFiles::in_dir(&pki).cert.exists();
        yrd_identity::ensure_ca(&pki, DEFAULT_TRUST_DOMAIN)?;
        let mut requests = vec![IssueRequest::local_server(gateway_id()?), IssueRequest::new(app_id()?)];
        for region in MAINLAND {
            requests.push(IssueRequest::local_server(node_id(region)?));
        }
        for req in &requests {
            let files = CertFiles::for_id(&pki, &req.id);
            if had && files.cert.exists() && files.key.exists() {
                continue;
            }
            yrd_identity::issue(&pki, req)?;
        }
        Ok(())
    }

    /// The `[tls]` paths of `id`.
    pub fn tls(&self, id: &PeerId) -> TlsPaths {
        let files = CertFiles::for_id(&self.pki(), id);
        TlsPaths::new(CaFiles::in_dir(&self.pki()).cert, files.cert, files.key)
    }

    /// The store of `region` at demo `scale`, generated when missing.
    pub async fn store(&self, region: &str, scale: f64) -> anyhow::Result<PathBuf> {
        let folder = self.dir.join(format!("data-scale-{scale}"));
        std::fs::create_dir_all(&folder)?;
        let path = folder.join(format!("{region}.sqlite"));
        let done = folder.join(format!("{region}.done"));
        // The marker names the store's layout too: a store generated by an
        // earlier version is made again rather than measured.
        let marker = format!("seed {SEED} scale {scale} layout {STORE_LAYOUT}\n");
        if path.exists() && std::fs::read_to_string(&done).is_ok_and(|m| m == marker) {
            return Ok(path);
        }
        let _ = std::fs::remove_file(&path);
        let started = Instant::now();
        eprintln!("generating the demo data of {region} at scale {scale} (kept for later runs) ...");
        let mut config = NodeConfig::new(region);
        config.insecure = true;
        config.store = StoreConfig::Sqlite(SqliteConfig {
            path: path.clone(),
            ..SqliteConfig::default()
        });
        let store = yrd_node::server::open_store(&config).await?;
        let spec = DemoSpec { seed: SEED, scale };
        yrd_node::import::generate(store.as_ref(), region, &spec)
            .await
            .with_context(|| format!("generating {region}"))?;
        drop(store);
        std::fs::write(&done, marker)?;
        eprintln!("  {region}: {:.1} s", started.elapsed().as_secs_f64());
        Ok(path)
    }
}

/// The harness's application identity.
pub fn app_id() -> anyhow::Result<PeerId> {
    Ok(PeerId::app(DEFAULT_TRUST_DOMAIN, APP)?)
}

/// The gateway identity (the direct fan-out client uses it too: nodes
/// answer only gateways).
pub fn gateway_id() -> anyhow::Result<PeerId> {
    Ok(PeerId::gateway(DEFAULT_TRUST_DOMAIN, "gateway")?)
}

/// The node identity of `region`.
pub fn node_id(region: &str) -> anyhow::Result<PeerId> {
    Ok(PeerId::node(DEFAULT_TRUST_DOMAIN, region, "node-1")?)
}

/// How a mesh is configured: the variants the harness compares.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Its name, e.g. `main`.
    pub name: &'static str,
    /// The full policy (else allow-all).
    pub policy: bool,
    /// Audit logs on the nodes and the gateway.
    pub audit: bool,
    /// Spans recorded; exported to this OTLP receiver when set.
    pub traces: bool,
    /// The OTLP receiver spans go to.
    pub otlp: Option<String>,
    /// Plaintext, no certificates (the development mode).
    pub insecure: bool,
    /// The demo scale of the stores.
    pub scale: f64,
    /// The regions (of the four of the delta).
    pub regions: usize,
}

impl Variant {
    /// The mesh as agencies run it: mutual TLS, policy and audit, spans
    /// recorded in memory but not exported.
    pub fn main() -> Self {
        Self {
            name: "main",
            policy: true,
            audit: true,
            traces: false,
            otlp: None,
            insecure: false,
            scale: 1.0,
            regions: PROVINCES.len(),
        }
    }
}

/// A running mesh: its processes and addresses.
#[derive(Debug)]
pub struct Mesh {
    /// The variant.
    pub variant: Variant,
    /// The region nodes, with their regions and addresses.
    pub nodes: Vec<(String, SocketAddr, Proc)>,
    /// The gateway.
    pub gateway: Proc,
    /// Its address.
    pub gateway_addr: SocketAddr,
    /// Its admin endpoint (metrics).
    pub gateway_admin: SocketAddr,
    /// The folder of its configs and logs.
    pub variant_dir: PathBuf,
}

impl Mesh {
    /// Starts `variant`'s nodes and gateway; returns once every region is
    /// healthy at the gateway.
    pub async fn start(ws: &Workspace, variant: Variant) -> anyhow::Result<Self> {
        let dir = ws.run_dir().join(variant.name);
        std::fs::create_dir_all(&dir)?;
        let mut nodes = Vec::new();
        for p in PROVINCES.iter().take(variant.regions) {
            let store = ws.store(p.code, variant.scale).await?;
            let port = procs::free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config = node_config(ws, &variant, &dir, p.code, addr, &store)?;
            let path = dir.join(format!("node-{}.toml", p.code));
            std::fs::write(&path, toml::to_string(&config)?)?;
            NodeConfig::load(&path).with_context(|| format!("the harness wrote {}", path.display()))?;
            let proc = Proc::start(
                &format!("{}-node-{}", variant.name, p.code),
                &ws.bin.node,
                &process_args(&path, variant.insecure),
                &dir,
            )?;
            nodes.push((p.code.to_owned(), addr, proc));
        }
        let endpoints: Vec<(String, String)> = nodes
            .iter()
            .map(|(r, a, _)| (r.clone(), endpoint(variant.insecure, *a)))
            .collect();
        let (gateway, gateway_addr, gateway_admin) =
            start_gateway(ws, &variant, &dir, &endpoints, variant.name).await?;
        let mut mesh = Self {
            variant,
            nodes,
            gateway,
            gateway_addr,
            gateway_admin,
            variant_dir: dir,
        };
        mesh.wait_healthy().await?;
        Ok(mesh)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let mut all: Vec<&mut Proc> = self.nodes.iter_mut().map(|(_, _, p)| p).collect();
        all.push(&mut self.gateway);
        procs::wait_listening(self.gateway_addr, &mut all, START_LIMIT).await
    }

    /// The store file `region`'s node serves.
    pub fn store_path(&self, region: &str) -> Option<PathBuf> {
        let config = self.variant_dir.join(format!("node-{region}.toml"));
        let StoreConfig::Sqlite(s) = NodeConfig::load(&config).ok()?.store;
        Some(s.path)
    }

    /// The node processes.
    pub fn node_procs(&self) -> impl Iterator<Item = &Proc> {
        self.nodes.iter().map(|(_, _, p)| p)
    }
}

/// The command line of a node or gateway with the config at `path`: an
/// insecure config needs `--insecure` on the command line as well.
fn process_args(path: &Path, insecure: bool) -> Vec<String> {
    let mut args = vec!["--config".to_owned(), path.to_string_lossy().into_owned()];
    if insecure {
        args.push("--insecure".to_owned());
    }
    args
}

/// A node or stub endpoint as the gateway config names it.
pub fn endpoint(insecure: bool, addr: SocketAddr) -> String {
    let scheme = if insecure { "http" } else { "https" };
    format!("{scheme}://127.0.0.1:{}", addr.port())
}

/// Writes `name`'s gateway config in front of `endpoints` (region,
/// endpoint) and starts it; returns once it listens, with its address and
/// its admin endpoint's.
pub async fn start_gateway(
    ws: &Workspace,
    variant: &Variant,
    dir: &Path,
    endpoints: &[(String, String)],
    name: &str,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
    let admin = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
    let mut config = GatewayConfig {
        name: "gateway".to_owned(),
        listen: addr,
        admin_listen: Some(admin),
        allow: vec!["app".to_owned()],
        insecure: variant.insecure,
        tls: if variant.insecure {
            None
        } else {
            Some(ws.tls(&gateway_id()?))
        },
        regions: endpoints
            .iter()
            .map(|(region, endpoint)| RegionConfig {
                id: region.clone(),
                name: region.clone(),
                endpoints: vec![endpoint.clone()],
                tls_server_name: Some("localhost".to_owned()),
            })
            .collect(),
        ..GatewayConfig::default()
    };
    config.query.page_token_secret = Secret::new("yrd-bench-page-token-secret-0123456789");
    config.query.batch_rows = 500;
    // Every loop of the harness is one application identity: the
    // per-application limit would cap the concurrency levels measured.
    config.query.max_calls_per_application = yrd_gateway::config::MAX_CALLS_PER_APPLICATION;
    config.telemetry.traces = variant.traces;
    config.telemetry.otlp_endpoint.clone_from(&variant.otlp);
    config.telemetry.service_name = "yrd-gateway".to_owned();
    if variant.audit {
        config.audit = Some(yrd_audit::AuditConfig::in_dir(
            dir.join(format!("audit-gateway-{name}")),
        ));
    }
    let path = dir.join(format!("gateway-{name}.toml"));
    std::fs::write(&path, toml::to_string(&config)?)?;
    GatewayConfig::load(&path).with_context(|| format!("the harness wrote {}", path.display()))?;
    let mut proc = Proc::start(
        &format!("{}-gateway-{name}", variant.name),
        &ws.bin.gateway,
        &process_args(&path, variant.insecure),
        dir,
    )?;
    procs::wait_listening(addr, &mut [&mut proc], START_LIMIT).await?;
    let tls = crate::client::app_tls(ws, variant.insecure)?;
    let mut app = FederationClient::new(crate::client::channel(addr, tls.as_ref()).await?);
    let until = Instant::now() + START_LIMIT;
    loop {
        let regions = app
            .list_regions(ListRegionsRequest::default())
            .await?
            .into_inner()
            .regions;
        let sick: Vec<&str> = regions
            .iter()
            .filter(|r| !r.healthy)
            .map(|r| r.region.as_str())
            .collect();
        if sick.is_empty() {
            break;
        }
        proc.check_running()?;
        if Instant::now() > until {
            bail!(
                "regions {} are not healthy at gateway {name} after {START_LIMIT:?}",
                sick.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((proc, addr, admin))
}

fn node_config(
    ws: &Workspace,
    variant: &Variant,
    dir: &Path,
    region: &str,
    listen: SocketAddr,
    store: &Path,
) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::new(region);
    config.region_name = region.to_owned();
    config.listen = listen;
    config.allow = vec!["gateway".to_owned()];
    config.insecure = variant.insecure;
    config.tls = if variant.insecure {
        None
    } else {
        Some(ws.tls(&node_id(region)?))
    };
    config.store = StoreConfig::Sqlite(SqliteConfig {
        path: store.to_owned(),
        ..SqliteConfig::default()
    });
    let policy = dir.join(format!("policy-{region}.toml"));
    std::fs::write(&policy, if variant.policy { POLICY_FULL } else { POLICY_ALLOW_ALL })?;
    config.policy.file = Some(policy);
    if variant.audit {
        config.audit = Some(yrd_audit::AuditConfig::in_dir(dir.join(format!("audit-{region}"))));
    }
    config.query.batch_rows = 500;
    config.query.max_concurrent = 64;
    config.telemetry.traces = variant.traces;
    config.telemetry.otlp_endpoint.clone_from(&variant.otlp);
    config.telemetry.service_name = "yrd-node".to_owned();
    config.demo.seed = SEED;
    config.demo.scale = variant.scale;
    Ok(config)
}
