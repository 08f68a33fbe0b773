//! `yrdctl up`: a local mesh in one process. Four region nodes (Shanghai,
//! Jiangsu, Zhejiang, Anhui) with demo data and a gateway, all over mutual
//! TLS with a mesh CA of their own, plus a client profile for `yrdctl`.
//!
//! The process's telemetry is yrd-telemetry's: logs on stderr (`RUST_LOG`,
//! default `info`), every span kept in the in-memory buffer and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector, exported over OTLP.
//! The gateway's admin listener (`--admin-port`) serves the metrics and the
//! recent traces of all the components, which share this process.
//!
//! Everything lives in the data directory and is reused on restart:
//!
//! ```text
//! pki/                 the mesh CA and the certificates (issued when missing)
//! secrets.toml         page-token secrets (0600), made once so tokens survive restarts
//! up.toml              seed and scale of the demo data in the stores
//! <region>.sqlite      each region's store (demo data generated when empty)
//! node-<region>.toml   each node's config, rewritten at every start
//! gateway.toml         the gateway's config, rewritten at every start
//! profile.toml         the client profile of the `dashboard` application (YRD_PROFILE)
//! profile-inspector.toml  the profile of a second application, `inspector`
//! profile-operator.toml   Jiangsu's operator (decides access requests for 320000)
//! profile-auditor.toml    Shanghai's auditor (reads 310000's audit)
//! audit-<region>/      each node's audit log
//! audit-gateway/       the gateway's audit log
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use yrd_datasets::codes::regions::{PROVINCES, Province};
use yrd_datasets::demo::DemoSpec;
use yrd_gateway::config::RegionConfig;
use yrd_gateway::{GatewayConfig, RunningGateway};
use yrd_identity::{CaFiles, CertFiles, DEFAULT_TRUST_DOMAIN, IssueRequest, PeerId, Secret, TlsPaths};
use yrd_node::config::{DemoConfig, SqliteConfig, StoreConfig};
use yrd_node::{NodeConfig, RunningNode, Store};
use yrd_telemetry::{Telemetry, TelemetryConfig};

use crate::cli::UpArgs;
use crate::profile::ProfileFile;

/// Name of every region's node in the local mesh.
const NODE_NAME: &str = "node-1";
/// Name of the gateway.
const GATEWAY_NAME: &str = "gateway";
/// `service.name` of the process's spans (`OTEL_SERVICE_NAME` wins).
const SERVICE_NAME: &str = "yrdctl-up";
/// The admin port is the gateway's port plus this, unless `--admin-port`.
const ADMIN_PORT_OFFSET: u16 = 10;
/// Name of the application whose certificate `profile.toml` uses.
const APP_NAME: &str = "dashboard";

/// The client identities `yrdctl up` issues, and the profile each gets:
/// two applications that the regions' policies treat differently, an
/// operator and an auditor.
fn clients() -> anyhow::Result<Vec<(PeerId, &'static str, &'static str)>> {
    Ok(vec![
        (
            PeerId::app(DEFAULT_TRUST_DOMAIN, APP_NAME)?,
            "profile.toml",
            "the demo dashboard application",
        ),
        (
            PeerId::app(DEFAULT_TRUST_DOMAIN, "inspector")?,
            "profile-inspector.toml",
            "a second application, a cross-provincial inspection team",
        ),
        (
            PeerId::operator(DEFAULT_TRUST_DOMAIN, "320000", "jiangsu-ops")?,
            "profile-operator.toml",
            "Jiangsu's operator: decides access requests for region 320000",
        ),
        (
            PeerId::auditor(DEFAULT_TRUST_DOMAIN, "310000", "shanghai-audit")?,
            "profile-auditor.toml",
            "Shanghai's auditor: reads the audit of region 310000",
        ),
    ])
}
/// The host everything listens on and dials: the mesh is local.
const HOST: &str = "127.0.0.1";
/// [`HOST`] as an address, for the listeners in the configs.
const HOST_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The name clients verify in the servers' certificates.
const SERVER_NAME: &str = "localhost";
/// How long to wait for every region to pass a health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(15);
/// A certificate closer to expiry than this is renewed at start.
const RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The dataset whose row count tells whether a store holds demo data.
const PROBE_DATASET: &str = "enterprise";
/// Environment variables that node configs honour and that would give all
/// four nodes the same region, listener or store.
const CONFLICTING_ENV: [&str; 3] = ["YRD_REGION", "YRD_LISTEN", "YRD_STORE_PATH"];

/// What `up.toml` records: the demo data the stores hold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataRecord {
    /// The demo scale.
    scale: f64,
    /// The demo seed.
    seed: u64,
}

/// `secrets.toml`: made once, so that page tokens survive restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Secrets {
    /// Signs the gateway's page tokens.
    gateway_page_token_secret: Secret,
    /// Written by earlier versions, when nodes signed page tokens too;
    /// read and ignored so that an existing data directory still starts.
    #[serde(default, skip_serializing, rename = "node_page_token_secret")]
    _node_page_token_secret: Option<Secret>,
}

/// The processes of a running mesh.
#[derive(Default)]
struct Mesh {
    /// The nodes started, with their regions.
    nodes: Vec<(&'static Province, RunningNode)>,
    /// The gateway, once started.
    gateway: Option<RunningGateway>,
}

impl Mesh {
    /// Stops the gateway first (no new client calls), then the nodes; each
    /// lets open calls finish within its `shutdown_grace`, then ends them
    /// with `UNAVAILABLE`.
    async fn shutdown(self) {
        if let Some(gateway) = self.gateway
            && let Err(e) = gateway.shutdown().await
        {
            tracing::warn!(error = %e, "the gateway did not stop cleanly");
        }
        let nodes = self.nodes.into_iter().map(|(p, node)| async move {
            if let Err(e) = node.shutdown().await {
                tracing::warn!(region = p.code, error = %e, "a node did not stop cleanly");
            }
        });
        futures::future::join_all(nodes).await;
    }
}

/// Runs `yrdctl up` until Ctrl-C (or SIGTERM), with the process's
/// telemetry installed for the mesh and flushed at the end.
pub async fn run(args: &UpArgs) -> anyhow::Result<()> {
    let telemetry = yrd_telemetry::init(&TelemetryConfig {
        service_name: SERVICE_NAME.to_owned(),
        ..TelemetryConfig::default()
    })
    .context("installing telemetry")?;
    let result = serve(args, &telemetry).await;
    // Send the spans still queued for export (a bounded, blocking wait).
    match tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "telemetry did not shut down cleanly"),
        Err(e) => tracing::warn!(error = %e, "the telemetry shutdown thread failed"),
    }
    result
}

/// Prepares the data directory, starts the mesh and serves until a signal.
async fn serve(args: &UpArgs, telemetry: &Telemetry) -> anyhow::Result<()> {
    if let Some(var) = CONFLICTING_ENV.iter().find(|v| std::env::var_os(v).is_some()) {
        bail!("{var} is set; it would apply to all four nodes of the local mesh. Unset it to run `yrdctl up`");
    }
    // Installed first: a signal while the data is prepared waits for a
    // clean shutdown instead of killing the process.
    let mut signals = yrd_server::ShutdownSignals::install()?;
    let node_ports = node_ports(args.port)?;
    let admin_port = admin_port(args.port, args.admin_port)?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir =
        std::fs::canonicalize(&args.data_dir).with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let pki = dir.join("pki");
    ensure_pki(&pki)?;
    let secrets = load_or_create_secrets(&dir.join("secrets.toml"))?;

    let asked = DemoSpec {
        seed: args.seed,
        scale: args.scale,
    };
    let mut configs = write_node_configs(&dir, &node_ports, &asked)?;
    let spec = prepare_data(&dir, &configs, asked).await?;
    if spec != asked {
        // Record in the node configs what their stores really hold.
        configs = write_node_configs(&dir, &node_ports, &spec)?;
    }

    let mut mesh = Mesh::default();
    let gateway_port = args.port;
    if let Err(e) = start(&dir, gateway_port, admin_port, configs, &secrets, &mut mesh).await {
        mesh.shutdown().await;
        return Err(e);
    }
    if let Err(e) = write_profile(&dir, &mesh) {
        mesh.shutdown().await;
        return Err(e);
    }
    if let Err(e) = seed_pending_request(&dir).await {
        tracing::warn!(error = %e, "could not file the demo's pending access request");
    }
    print_usage(&dir, &mesh, telemetry.otlp_endpoint());

    let signal = signals.recv().await;
    println!("\n{}: shutting down", signal.unwrap_or("signal"));
    tokio::select! {
        () = mesh.shutdown() => {}
        // A second signal means now.
        _ = signals.recv() => tracing::warn!("stopping without waiting for open calls"),
    }
    Ok(())
}

/// The nodes' ports: the four after the gateway's, or any free ports when
/// the gateway's is 0.
fn node_ports(gateway: u16) -> anyhow::Result<Vec<u16>> {
    if gateway == 0 {
        return Ok(vec![0; PROVINCES.len()]);
    }
    (1..=PROVINCES.len())
        .map(|i| {
            u16::try_from(i)
                .ok()
                .and_then(|i| gateway.checked_add(i))
                .with_context(|| {
                    format!(
                        "--port {gateway}: the nodes need the {} ports after it",
                        PROVINCES.len()
                    )
                })
        })
        .collect()
}

/// The admin listener's port: `--admin-port`, else the gateway's port plus
/// [`ADMIN_PORT_OFFSET`] (any free port when the gateway's is 0).
fn admin_port(gateway: u16, asked: Option<u16>) -> anyhow::Result<u16> {
    let grpc_ports = gateway..=gateway.saturating_add(u16::try_from(PROVINCES.len()).unwrap_or(u16::MAX));
    match asked {
        Some(port) if port != 0 && gateway != 0 && grpc_ports.contains(&port) => bail!(
            "--admin-port {port} is one of the mesh's gRPC ports ({}..={})",
            grpc_ports.start(),
            grpc_ports.end()
        ),
        Some(port) => Ok(port),
        None if gateway == 0 => Ok(0),
        None => gateway.checked_add(ADMIN_PORT_OFFSET).with_context(|| {
            format!("--port {gateway}: the admin port would be {gateway} + {ADMIN_PORT_OFFSET}; pass --admin-port")
        }),
    }
}

/// Creates the CA if there is none, and issues each certificate whose files
/// are missing, unusable or close to expiry (all of them after a new CA).
fn ensure_pki(pki: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(pki).with_context(|| format!("creating {}", pki.display()))?;
    let ca = CaFiles::in_dir(pki);
    let had_ca = ca.cert.exists();
    yrd_identity::ensure_ca(pki, DEFAULT_TRUST_DOMAIN)?;
    if !had_ca {
        println!("created the mesh CA in {}", pki.display());
    }
    let mut requests = Vec::new();
    for p in PROVINCES {
        requests.push(IssueRequest::local_server(PeerId::node(
            DEFAULT_TRUST_DOMAIN,
            p.code,
            NODE_NAME,
        )?));
    }
    requests.push(IssueRequest::local_server(PeerId::gateway(
        DEFAULT_TRUST_DOMAIN,
        GATEWAY_NAME,
    )?));
    for (id, _, _) in clients()? {
        requests.push(IssueRequest::new(id));
    }
    let mut reused = 0;
    for req in &requests {
        let files = CertFiles::for_id(pki, &req.id);
        if had_ca && usable(&ca.cert, &files) {
            reused += 1;
            continue;
        }
        yrd_identity::issue(pki, req)?;
        println!("issued {} ({})", req.id, files.cert.display());
    }
    if reused > 0 {
        println!("reusing the mesh CA and {reused} certificates in {}", pki.display());
    }
    Ok(())
}

/// Whether a certificate and key on disk can be used as they are.
fn usable(ca: &Path, files: &CertFiles) -> bool {
    if yrd_identity::TlsMaterial::load(ca, &files.cert, &files.key).is_err() {
        return false;
    }
    let Ok(pem) = std::fs::read(&files.cert) else {
        return false;
    };
    yrd_identity::cert_not_after(&pem).is_ok_and(|t| t > SystemTime::now() + RENEW_BEFORE)
}

/// The page-token secrets of `path`, made (32 random hex characters each)
/// and written with mode 0600 the first time.
fn load_or_create_secrets(path: &Path) -> anyhow::Result<Secrets> {
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return toml::from_str(&text).with_context(|| format!("{}: not a secrets file of yrdctl up", path.display()));
    }
    let secrets = Secrets {
        gateway_page_token_secret: Secret::new(random_hex()?),
        _node_page_token_secret: None,
    };
    let text = format!(
        "# Made once by `yrdctl up`: page tokens stay valid across restarts.\n{}",
        toml::to_string(&secrets)?
    );
    write_private(path, &text)?;
    Ok(secrets)
}

/// 16 random bytes from the OS, as 32 hex characters.
fn random_hex() -> anyhow::Result<String> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::try_from_os_rng().context("reading random bytes from the OS")?;
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file only its owner may read: configs here hold secrets.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The `[tls]` paths of `id`, relative to the data directory (where the
/// configs are): the directory can move.
fn tls_paths(id: &PeerId) -> TlsPaths {
    let pki = Path::new("pki");
    let files = CertFiles::for_id(pki, id);
    TlsPaths::new(CaFiles::in_dir(pki).cert, files.cert, files.key)
}

/// The config of one region's node, paths relative to the data directory.
fn node_config(p: &Province, port: u16, spec: &DemoSpec) -> anyhow::Result<NodeConfig> {
    let id = PeerId::node(DEFAULT_TRUST_DOMAIN, p.code, NODE_NAME)?;
    let mut config = NodeConfig::new(p.code);
    config.region_name = p.name_en.to_owned();
    config.listen = SocketAddr::from((HOST_IP, port));
    config.allow = vec!["gateway".to_owned()];
    config.store = StoreConfig::Sqlite(SqliteConfig {
        path: PathBuf::from(format!("{}.sqlite", p.code)),
        ..SqliteConfig::default()
    });
    config.tls = Some(tls_paths(&id));
    config.policy.file = Some(PathBuf::from(format!("policy-{}.toml", p.code)));
    config.audit = Some(yrd_audit::AuditConfig::in_dir(format!("audit-{}", p.code)));
    config.demo = DemoConfig {
        seed: spec.seed,
        scale: spec.scale,
    };
    Ok(config)
}

/// The text of a node's config file.
fn node_config_text(p: &Province, config: &NodeConfig) -> anyhow::Result<String> {
    Ok(format!(
        "# {} ({}) node of the local mesh. Written by `yrdctl up` at every start:\n\
         # edits are lost. Relative paths are relative to this file.\n{}",
        p.name_en,
        p.code,
        toml::to_string(config)?
    ))
}

/// Writes and loads (checks) the four node configs.
fn write_node_configs(
    dir: &Path,
    ports: &[u16],
    spec: &DemoSpec,
) -> anyhow::Result<Vec<(&'static Province, NodeConfig)>> {
    PROVINCES
        .iter()
        .zip(ports)
        .map(|(p, &port)| {
            let path = dir.join(format!("node-{}.toml", p.code));
            let config = node_config(p, port, spec)?;
            write_demo_policy(dir, p)?;
            write_private(&path, &node_config_text(p, &config)?)?;
            Ok((p, NodeConfig::load(&path)?))
        })
        .collect()
}

/// Rows of the probe dataset in a store.
async fn probe_rows(store: &dyn Store) -> anyhow::Result<u64> {
    Ok(store
        .stats()
        .await?
        .into_iter()
        .find(|(id, _)| id == PROBE_DATASET)
        .map_or(0, |(_, s)| s.rows))
}

/// Generates demo data in the stores that have none, the regions
/// concurrently, and returns the spec the stores now hold: the recorded one
/// when data is kept (so regions generated later match the others), the
/// asked one otherwise.
async fn prepare_data(
    dir: &Path,
    configs: &[(&'static Province, NodeConfig)],
    asked: DemoSpec,
) -> anyhow::Result<DemoSpec> {
    let mut stores = Vec::new();
    for (p, config) in configs {
        let store = yrd_node::server::open_store(config)
            .await
            .with_context(|| format!("opening the store of {} ({})", p.name_en, p.code))?;
        let rows = probe_rows(store.as_ref()).await?;
        stores.push((*p, store, rows));
    }
    let record_path = dir.join("up.toml");
    let recorded = read_record(&record_path)?;
    let kept: Vec<_> = stores.iter().filter(|(_, _, rows)| *rows > 0).collect();
    let spec = match recorded {
        Some(r) if !kept.is_empty() => DemoSpec {
            seed: r.seed,
            scale: r.scale,
        },
        _ => asked,
    };
    for (p, _, rows) in &kept {
        println!(
            "{} ({}): keeping {rows} {PROBE_DATASET} rows and the other datasets",
            p.name_en, p.code
        );
    }
    if !kept.is_empty() && spec != asked {
        println!(
            "the existing demo data was made at scale {} with seed {}; it is kept, not the asked scale {} and seed {}.\n\
             To regenerate, stop yrdctl up, remove {}/*.sqlite and {}, and start it again (or use another --data-dir).",
            spec.scale,
            spec.seed,
            asked.scale,
            asked.seed,
            dir.display(),
            record_path.display()
        );
    }
    let jobs: Vec<_> = stores
        .into_iter()
        .filter(|(_, _, rows)| *rows == 0)
        .map(|(p, store, _)| generate(p, store, spec))
        .collect();
    if jobs.is_empty() {
        return Ok(spec);
    }
    for result in futures::future::join_all(jobs).await {
        result?;
    }
    let record = DataRecord {
        scale: spec.scale,
        seed: spec.seed,
    };
    let text = format!(
        "# The demo data in this folder's stores, made by `yrdctl up`.\n{}",
        toml::to_string(&record)?
    );
    std::fs::write(&record_path, text).with_context(|| format!("writing {}", record_path.display()))?;
    Ok(spec)
}

/// The record of `up.toml`, if there is one.
fn read_record(path: &Path) -> anyhow::Result<Option<DataRecord>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let record = toml::from_str(&text).with_context(|| format!("{}: not a record of yrdctl up", path.display()))?;
    Ok(Some(record))
}

/// Generates one region's demo data on a blocking thread, with progress lines.
async fn generate(p: &'static Province, store: Arc<dyn Store>, spec: DemoSpec) -> anyhow::Result<()> {
    println!(
        "generating {} ({}) demo data at scale {} (seed {}) ...",
        p.name_en, p.code, spec.scale, spec.seed
    );
    let started = Instant::now();
    let loaded = yrd_node::import::generate(store.as_ref(), p.code, &spec)
        .await
        .with_context(|| format!("generating demo data for {} ({})", p.name_en, p.code))?;
    let counts: Vec<String> = loaded.iter().map(|(id, rows)| format!("{rows} {id}")).collect();
    println!(
        "{} ({}): {} rows in {:.1} s",
        p.name_en,
        p.code,
        counts.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Starts the nodes, then the gateway in front of them, and waits for the
/// regions to be healthy. What started is in `mesh`, also on error.
async fn start(
    dir: &Path,
    gateway_port: u16,
    admin_port: u16,
    configs: Vec<(&'static Province, NodeConfig)>,
    secrets: &Secrets,
    mesh: &mut Mesh,
) -> anyhow::Result<()> {
    let started = futures::future::join_all(configs.into_iter().map(|(p, config)| async move {
        let listen = config.listen;
        let result = yrd_node::start(config)
            .await
            .with_context(|| format!("starting the {} ({}) node on {listen}", p.name_en, p.code));
        (p, result)
    }))
    .await;
    let mut failure = None;
    for (p, result) in started {
        match result {
            Ok(node) => mesh.nodes.push((p, node)),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }

    let path = dir.join("gateway.toml");
    let nodes: Vec<(&Province, SocketAddr)> = mesh.nodes.iter().map(|(p, n)| (*p, n.addr)).collect();
    write_private(
        &path,
        &gateway_config_text(&gateway_config(gateway_port, admin_port, &nodes, secrets)?)?,
    )?;
    let config = GatewayConfig::load(&path)?;
    let listen = config.listen;
    let gateway = yrd_gateway::start(config)
        .await
        .with_context(|| format!("starting the gateway on {listen}"))?;
    let registry = gateway.registry.clone();
    mesh.gateway = Some(gateway);
    if !registry.wait_healthy(HEALTH_TIMEOUT).await {
        for region in registry.regions().iter().filter(|r| !r.healthy()) {
            tracing::warn!(
                region = %region.id,
                reason = %region.unhealthy_reason(),
                "region not healthy after {HEALTH_TIMEOUT:?}; queries will report it"
            );
        }
    }
    Ok(())
}

/// The gateway's config: the nodes as they are listening now, and the
/// admin listener (which serves the whole process's spans and metrics).
fn gateway_config(
    port: u16,
    admin_port: u16,
    nodes: &[(&Province, SocketAddr)],
    secrets: &Secrets,
) -> anyhow::Result<GatewayConfig> {
    let id = PeerId::gateway(DEFAULT_TRUST_DOMAIN, GATEWAY_NAME)?;
    let mut config = GatewayConfig {
        name: GATEWAY_NAME.to_owned(),
        listen: SocketAddr::from((HOST_IP, port)),
        admin_listen: Some(SocketAddr::from((HOST_IP, admin_port))),
        // Applications read data; operators and auditors reach their
        // region's access workflow and audit (the gateway and each node
        // check which role may call what).
        allow: vec!["app".to_owned(), "operator".to_owned(), "auditor".to_owned()],
        tls: Some(tls_paths(&id)),
        regions: nodes
            .iter()
            .map(|(p, addr)| RegionConfig {
                id: p.code.to_owned(),
                name: p.name_en.to_owned(),
                endpoints: vec![format!("https://{HOST}:{}", addr.port())],
                tls_server_name: Some(SERVER_NAME.to_owned()),
            })
            .collect(),
        ..GatewayConfig::default()
    };
    config.query.page_token_secret = secrets.gateway_page_token_secret.clone();
    config.audit = Some(yrd_audit::AuditConfig::in_dir("audit-gateway"));
    Ok(config)
}

/// The text of the gateway's config file.
fn gateway_config_text(config: &GatewayConfig) -> anyhow::Result<String> {
    Ok(format!(
        "# The gateway of the local mesh. Written by `yrdctl up` at every start\n\
         # (the nodes' ports may change): edits are lost.\n{}",
        toml::to_string(config)?
    ))
}

/// The gateway's address for clients.
fn gateway_url(mesh: &Mesh) -> String {
    let port = mesh.gateway.as_ref().map_or(0, |g| g.addr.port());
    format!("https://{HOST}:{port}")
}

/// The admin endpoint's address, when the gateway serves one.
fn admin_url(mesh: &Mesh) -> Option<String> {
    let admin = mesh.gateway.as_ref()?.admin.as_ref()?;
    Some(format!("http://{HOST}:{}", admin.addr.port()))
}

/// The application certificate's files, absolute.
fn app_files(dir: &Path) -> anyhow::Result<(PathBuf, CertFiles)> {
    let pki = dir.join("pki");
    let app = PeerId::app(DEFAULT_TRUST_DOMAIN, APP_NAME)?;
    Ok((CaFiles::in_dir(&pki).cert, CertFiles::for_id(&pki, &app)))
}

/// Writes a profile for each client identity (`profile.toml` for the
/// dashboard application) for `yrdctl` and anything else that reads them.
fn write_profile(dir: &Path, mesh: &Mesh) -> anyhow::Result<()> {
    let pki = dir.join("pki");
    for (id, file, what) in clients()? {
        let files = CertFiles::for_id(&pki, &id);
        let profile = ProfileFile {
            gateway: gateway_url(mesh),
            server_name: Some(SERVER_NAME.to_owned()),
            ca: CaFiles::in_dir(&pki).cert,
            cert: files.cert,
            key: files.key,
            // A list: with separate processes, the gateway's and each node's
            // admin endpoints. Here every component shares the one endpoint.
            admin: admin_url(mesh).into_iter().collect(),
        };
        let path = dir.join(file);
        let text = format!(
            "# The local mesh's gateway, the certificate of {id} ({what})\n\
             # and the admin endpoint (metrics, recent traces) of the mesh's process.\n\
             # Use it with `export YRD_PROFILE={}` or `yrdctl --profile {}`.\n{}",
            path.display(),
            path.display(),
            toml::to_string(&profile)?
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Tells how to reach the mesh.
fn print_usage(dir: &Path, mesh: &Mesh, otlp_endpoint: Option<&str>) {
    let url = gateway_url(mesh);
    let admin = admin_url(mesh);
    println!("\nyrd-mesh is up (data in {}):", dir.display());
    println!("  gateway   {url}");
    for (p, node) in &mesh.nodes {
        println!("  {}    https://{HOST}:{}  {}", p.code, node.addr.port(), p.name_en);
    }
    if let Some(admin) = &admin {
        println!("  admin     {admin}  metrics, health and recent traces of all of the above");
    }
    match otlp_endpoint {
        Some(endpoint) => println!("  traces    exported over OTLP to {endpoint}, and kept in memory"),
        None => println!("  traces    kept in memory (set OTEL_EXPORTER_OTLP_ENDPOINT to export them too)"),
    }
    let Ok((ca, app)) = app_files(dir) else {
        return;
    };
    let port = mesh.gateway.as_ref().map_or(0, |g| g.addr.port());
    println!("\nQuery it with yrdctl:");
    println!("  export YRD_PROFILE={}", dir.join("profile.toml").display());
    println!(
        "  yrdctl query enterprise --filter 'registered_capital > 1000000' --order-by 'registered_capital desc' --limit 20"
    );
    println!("  yrdctl aggregate enterprise --group-by region --metric 'avg(registered_capital)'");
    if let Some(admin) = &admin {
        println!("\nSee where the time went, and the metrics:");
        println!("  yrdctl traces --last 5");
        println!("  yrdctl traces --trace-id <the trace id yrdctl query prints>");
        println!("  curl {admin}/metrics");
    }
    println!("\nor with grpcurl (server reflection is on):");
    println!(
        "  grpcurl -cacert {} -cert {} -key {} \\\n    \
         -d '{{\"dataset\":\"enterprise\",\"filter\":\"registered_capital > 1000000\",\"order_by\":\"registered_capital desc\",\"page_size\":5}}' \\\n    \
         {HOST}:{port} yrd.mesh.v1.Federation/Query",
        ca.display(),
        app.cert.display(),
        app.key.display()
    );
    println!("\nPress Ctrl-C to stop.");
}

/// Writes a region's demo policy unless the file exists (an agency's
/// edits, and the reload demo, survive a restart). The four differ in
/// useful ways: Shanghai grants the dashboard enterprise rows of one
/// district with ID numbers as `keep(6,4)`; Jiangsu shares transfer
/// manifests with a group of two applications (and holds a pending
/// request, filed at start); Zhejiang requires a purpose; Anhui grants
/// only aggregates of enterprise, leaving out groups under 10.
fn write_demo_policy(dir: &Path, p: &Province) -> anyhow::Result<()> {
    let path = dir.join(format!("policy-{}.toml", p.code));
    if path.exists() {
        return Ok(());
    }
    let text = match p.code {
        "310000" => DEMO_POLICY_SHANGHAI,
        "320000" => DEMO_POLICY_JIANGSU,
        "330000" => DEMO_POLICY_ZHEJIANG,
        _ => DEMO_POLICY_ANHUI,
    };
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

const DEMO_POLICY_SHANGHAI: &str = r#"# Shanghai's data-sharing policy (demo). Edit it while the mesh runs:
# the node reloads it within seconds; a file with a mistake is refused
# (the log says which key and why) and the old policy stays.

[[grant]]
id = "sh-dashboard-enterprise"
apps = ["dashboard"]
datasets = ["enterprise"]
fields = "*"
# ID numbers keep their GB/T 2260 region prefix and last four digits.
masks = { representative_id_number = "keep(6,4)" }
# Pudong New Area only.
row_scope = 'district = "310115"'
not_after = "2027-12-31"
rate_per_minute = 600
max_rows = 5000
"#;

const DEMO_POLICY_JIANGSU: &str = r#"# Jiangsu's data-sharing policy (demo).

[groups]
joint-supervision = ["dashboard", "inspector"]

[[grant]]
id = "js-waste-joint-supervision"
groups = ["joint-supervision"]
datasets = ["hazardous_waste"]
fields = "*"
"#;

const DEMO_POLICY_ZHEJIANG: &str = r#"# Zhejiang's data-sharing policy (demo): every enterprise request declares
# a purpose, and the dashboard's grant allows one.

[datasets.enterprise]
require_purpose = true

[[grant]]
id = "zj-dashboard-supervision"
apps = ["dashboard"]
datasets = ["enterprise"]
fields = ["legal_representative", "address"]
purposes = ["market-supervision"]
"#;

const DEMO_POLICY_ANHUI: &str = r#"# Anhui's data-sharing policy (demo): enterprise rows need a grant here,
# and the dashboard's grant is for aggregates only.

[datasets.enterprise]
class = "conditional"
min_group_size = 10

[[grant]]
id = "ah-dashboard-aggregates"
apps = ["dashboard"]
datasets = ["enterprise"]
fields = "*"
aggregate_only = true
"#;

/// Files the demo's pending access request, through the gateway as the
/// `inspector` application: Jiangsu's legal representatives and contact
/// phones, for a stated purpose, for Jiangsu's operator to decide. Filed
/// once: a request already there (any state) is left alone.
async fn seed_pending_request(dir: &Path) -> anyhow::Result<()> {
    use yrd_proto::mesh::access_client::AccessClient;
    use yrd_proto::mesh::{ListAccessRequestsRequest, RequestAccessRequest};
    let connection =
        crate::client::Connection::new(Some(&dir.join("profile-inspector.toml")), Duration::from_secs(10))?;
    let mut access = AccessClient::new(connection.channel().await?);
    let mine = access
        .list_access_requests(ListAccessRequestsRequest {
            region: "320000".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if !mine.requests.is_empty() {
        return Ok(());
    }
    let filed = access
        .request_access(RequestAccessRequest {
            region: "320000".into(),
            dataset: "enterprise".into(),
            fields: vec!["legal_representative".into(), "contact_phone".into()],
            purpose: "cross-provincial inspection of hazardous-waste producers".into(),
            until: "2027-06-30".into(),
            row_scope: "industry = \"C26\"".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("filed the demo access request {} (pending at Jiangsu)", filed.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets {
            gateway_page_token_secret: Secret::new("0123456789abcdef0123456789abcdef"),
            _node_page_token_secret: None,
        }
    }

    #[test]
    fn the_admin_port_follows_the_gateway() {
        assert_eq!(admin_port(50070, None).unwrap(), 50080);
        assert_eq!(admin_port(0, None).unwrap(), 0);
        assert_eq!(admin_port(50070, Some(9100)).unwrap(), 9100);
        assert_eq!(admin_port(50070, Some(0)).unwrap(), 0);
        assert_eq!(admin_port(0, Some(50072)).unwrap(), 50072);
        let e = admin_port(50070, Some(50072)).unwrap_err().to_string();
        assert!(e.contains("50070..=50074"), "{e}");
        let e = admin_port(65530, None).unwrap_err().to_string();
        assert!(e.contains("--admin-port"), "{e}");
    }

    #[test]
    fn node_ports_follow_the_gateway() {
        assert_eq!(node_ports(50070).unwrap(), [50071, 50072, 50073, 50074]);
        assert_eq!(node_ports(0).unwrap(), [0, 0, 0, 0]);
        assert!(node_ports(65534).is_err());
    }

    fn nodes() -> Vec<(&'static Province, SocketAddr)> {
        PROVINCES
            .iter()
            .zip(50071..)
            .map(|(p, port)| (p, SocketAddr::from(([127, 0, 0, 1], port))))
            .collect()
    }

    #[test]
    fn generated_configs_parse_and_validate() {
        let spec = DemoSpec { seed: 7, scale: 0.05 };
        let text = node_config_text(&PROVINCES[1], &node_config(&PROVINCES[1], 50072, &spec).unwrap()).unwrap();
        let config = NodeConfig::parse(&text, "node-320000.toml").unwrap();
        config.validate("node-320000.toml").unwrap();
        assert_eq!(
            (config.region.as_str(), config.region_name.as_str()),
            ("320000", "Jiangsu")
        );
        assert_eq!(config.listen.port(), 50072);
        let yrd_node::config::StoreConfig::Sqlite(store) = &config.store;
        assert_eq!(store.path, Path::new("320000.sqlite"));
        assert_eq!((config.demo.seed, config.demo.scale), (7, 0.05));
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert, Path::new("pki/node-320000-node-1.pem"));

        let text = gateway_config_text(&gateway_config(50070, 50080, &nodes(), &secrets()).unwrap()).unwrap();
        let config = GatewayConfig::parse(&text, "gateway.toml").unwrap();
        config.validate("gateway.toml").unwrap();
        assert_eq!(config.regions.len(), 4);
        assert_eq!(config.regions[3].endpoints, ["https://127.0.0.1:50074"]);
        assert_eq!(config.regions[3].tls_server_name.as_deref(), Some("localhost"));
        assert_eq!(config.allow, ["app", "operator", "auditor"]);
        assert_eq!(config.admin_listen, Some(SocketAddr::from(([127, 0, 0, 1], 50080))));
        assert_eq!(config.query.page_token_secret, secrets().gateway_page_token_secret);
    }

    #[test]
    fn written_configs_load_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DemoSpec { seed: 7, scale: 0.05 };
        let configs = write_node_configs(dir.path(), &[50071, 50072, 50073, 50074], &spec).unwrap();
        for ((p, loaded), port) in configs.into_iter().zip(50071..) {
            // What was written, with its paths resolved as the loader does.
            let mut written = node_config(p, port, &spec).unwrap();
            written.store.resolve(dir.path());
            if let Some(tls) = written.tls.as_mut() {
                tls.resolve(dir.path());
            }
            written.policy.file = written.policy.file.map(|f| dir.path().join(f));
            if let Some(audit) = written.audit.as_mut() {
                audit.resolve(dir.path());
            }
            assert_eq!(loaded, written, "{}", p.code);
            // Each region's demo policy is written beside it and loads.
            assert!(dir.path().join(format!("policy-{}.toml", p.code)).exists());
        }

        let written = gateway_config(50070, 50080, &nodes(), &secrets()).unwrap();
        let path = dir.path().join("gateway.toml");
        write_private(&path, &gateway_config_text(&written).unwrap()).unwrap();
        let loaded = GatewayConfig::load(&path).unwrap();
        let mut expected = written;
        if let Some(tls) = expected.tls.as_mut() {
            tls.resolve(dir.path());
        }
        if let Some(audit) = expected.audit.as_mut() {
            audit.resolve(dir.path());
        }
        assert_eq!(loaded, expected);
        // The secret is in the file (mode 0600) but not in the Debug text.
        assert!(!format!("{loaded:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn random_secrets_are_hex() {
        let a = random_hex().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex().unwrap());
    }
}
