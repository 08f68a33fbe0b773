//! A whole mesh in-process: four region nodes and a gateway, each with its
//! own certificate from a CA made at test time, all over mutual TLS on
//! real sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use yrd_gateway::{GatewayConfig, RunningGateway};
use yrd_identity::{IssueRequest, PeerId, TlsMaterial, TlsPaths};
use yrd_node::{NodeConfig, RunningNode};
use yrd_proto::mesh::federation_client::FederationClient;

use crate::harness::generate_store;

/// The four demo regions.
pub const REGIONS: [&str; 4] = ["310000", "320000", "330000", "340000"];
/// Trust domain of the test mesh.
pub const TD: &str = "yrd.mesh";

/// A running mesh.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Option<RunningNode>>,
    pub node_configs: Vec<NodeConfig>,
    pub gateway: RunningGateway,
    pub gateway_config: GatewayConfig,
    /// The second replica, when asked for.
    pub replica: Option<RunningNode>,
}

/// Options for a test mesh.
#[derive(Clone)]
pub struct MeshOptions {
    /// Health check interval of the gateway (ms).
    pub health_interval_ms: u64,
    /// A proxy in front of this region's node (index into REGIONS).
    pub proxied: Option<usize>,
    /// A second replica (its own store with the same data) for this region.
    pub replicated: Option<usize>,
    /// Admin listeners (metrics, health, traces) on the gateway and nodes.
    pub admin: bool,
    /// `limits.max_groups` of the gateway and every node.
    pub max_groups: Option<usize>,
    /// Policy file text per region (index into REGIONS), written as
    /// `<region>-policy.toml` and named in that node's `[policy] file`.
    pub policies: Vec<(usize, String)>,
    /// Adjusts each node's config (its index into REGIONS) before it starts.
    pub adjust_node: Option<fn(usize, &mut NodeConfig)>,
    /// Adjusts the gateway's config before it starts.
    pub adjust_gateway: Option<fn(&mut GatewayConfig)>,
    /// Allow rules added to the gateway's (such as `operator`, `auditor`).
    pub gateway_allow: Vec<String>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            health_interval_ms: 100,
            proxied: None,
            replicated: None,
            admin: false,
            max_groups: None,
            policies: Vec::new(),
            adjust_node: None,
            adjust_gateway: None,
            gateway_allow: Vec::new(),
        }
    }
}

/// Issues `id`'s certificate into `dir` and returns its paths.
pub fn issue(dir: &Path, id: &PeerId, server: bool) -> TlsPaths {
    let req = if server {
        IssueRequest::local_server(id.clone())
    } else {
        IssueRequest::new(id.clone())
    };
    let files = yrd_identity::issue(dir, &req).unwrap();
    TlsPaths::new(dir.join(yrd_identity::CA_CERT_FILE), files.cert, files.key)
}

impl Mesh {
    /// Starts a mesh with default options.
    pub async fn start() -> Self {
        Self::start_with(MeshOptions::default()).await.0
    }

    /// Starts a mesh; returns the stall proxy when one was asked for.
    pub async fn start_with(opts: MeshOptions) -> (Self, Option<StallProxy>) {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        yrd_identity::init_ca(&pki, TD).unwrap();
        let mut generate = Vec::new();
        let mut node_configs = Vec::new();
        for (i, region) in REGIONS.iter().copied().enumerate() {
            let tls = issue(&pki, &PeerId::node(TD, region, "n1").unwrap(), true);
            let db = dir.path().join(format!("{region}.sqlite"));
            let mut config = NodeConfig::parse(
                &format!(
                    "region = \"{region}\"\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n",
                    db.display()
                ),
                "test",
            )
            .unwrap();
            config.tls = Some(tls);
            // Every test node keeps its audit trail, as shipped nodes do.
            config.audit = Some(yrd_audit::AuditConfig::in_dir(
                dir.path().join(format!("audit-{region}")),
            ));
            if opts.admin {
                config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
            }
            if let Some(n) = opts.max_groups {
                config.limits.max_groups = n;
            }
            if let Some((_, text)) = opts.policies.iter().find(|(r, _)| *r == i) {
                let path = policy_path(dir.path(), i);
                std::fs::write(&path, text).unwrap();
                config.policy.file = Some(path);
            }
            if let Some(adjust) = opts.adjust_node {
                adjust(i, &mut config);
            }
            config.validate("test").unwrap();
            generate.push(tokio::spawn(generate_store(db, region.to_owned())));
            node_configs.push(config);
        }
        for g in generate {
            g.await.unwrap();
        }
        let mut nodes = Vec::new();
        for c in &node_configs {
            nodes.push(Some(yrd_node::start(c.clone()).await.unwrap()));
        }
        let mut replica = None;
        if let Some(i) = opts.replicated {
            let mut c = node_configs[i].clone();
            let path = dir.path().join(format!("{}-replica.sqlite", REGIONS[i]));
            c.store.set_path(path.clone());
            generate_store(path, REGIONS[i].to_owned()).await;
            replica = Some(yrd_node::start(c).await.unwrap());
        }
        let mut proxy = None;
        let mut regions_toml = String::new();
        for (i, (region, node)) in REGIONS.iter().zip(&nodes).enumerate() {
            let mut addr = node.as_ref().unwrap().addr;
            if opts.proxied == Some(i) {
                let p = StallProxy::start(addr).await;
                addr = p.addr;
                proxy = Some(p);
            }
            let mut endpoints = format!("\"https://{addr}\"");
            if let (Some(r), Some(rep)) = (opts.replicated, &replica)
                && r == i
            {
                endpoints.push_str(&format!(", \"https://{}\"", rep.addr));
            }
            regions_toml.push_str(&format!(
                "[[regions]]\nid = \"{region}\"\nendpoints = [{endpoints}]\ntls_server_name = \"localhost\"\n"
            ));
        }
        let gw_tls = issue(&pki, &PeerId::gateway(TD, "gw").unwrap(), true);
        let mut gateway_config = GatewayConfig::parse(
            &format!(
                "listen = \"127.0.0.1:0\"\n[query]\npage_token_secret = \"test-secret-0123456789\"\n[health]\ninterval = \"{}ms\"\ntimeout = \"500ms\"\n{regions_toml}",
                opts.health_interval_ms
            ),
            "test",
        )
        .unwrap();
        gateway_config.tls = Some(gw_tls);
        // The gateway keeps its audit trail, as the shipped one does.
        gateway_config.audit = Some(yrd_audit::AuditConfig::in_dir(dir.path().join("audit-gateway")));
        gateway_config.allow.extend(opts.gateway_allow.iter().cloned());
        if opts.admin {
            gateway_config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        }
        if let Some(n) = opts.max_groups {
            gateway_config.limits.max_groups = n;
        }
        if let Some(adjust) = opts.adjust_gateway {
            adjust(&mut gateway_config);
        }
        gateway_config.validate("test").unwrap();
        let gateway = yrd_gateway::start(gateway_config.clone()).await.unwrap();
        assert!(
            gateway.registry.wait_healthy(Duration::from_secs(20)).await,
            "regions became healthy"
        );
        (
            Self {
                dir,
                nodes,
                node_configs,
                gateway,
                gateway_config,
                replica,
            },
            proxy,
        )
    }

    /// The PKI folder.
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// The gateway's URL.
    pub fn gateway_url(&self) -> String {
        format!("https://{}", self.gateway.addr)
    }

    /// A channel to `addr` presenting `paths`' certificate.
    pub async fn channel(addr: &str, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(addr.to_owned())?.tls_config(tls)?.connect().await
    }

    /// The policy file of region `region` (index into REGIONS).
    pub fn policy_path(&self, region: usize) -> PathBuf {
        policy_path(self.dir.path(), region)
    }

    /// A Federation client for application `name`.
    pub async fn app(&self, name: &str) -> FederationClient<Channel> {
        self.client_as(&PeerId::app(TD, name).unwrap()).await
    }

    /// A Federation client presenting a certificate of `id`.
    pub async fn client_as(&self, id: &PeerId) -> FederationClient<Channel> {
        let paths = issue(&self.pki(), id, false);
        let m = TlsMaterial::load(&paths.ca, &paths.cert, &paths.key).unwrap();
        let ch = Self::channel(&self.gateway_url(), yrd_identity::tonic_client_tls(&m, "localhost"))
            .await
            .unwrap();
        FederationClient::new(ch)
    }

    /// A channel to the gateway presenting a fresh certificate of `id`
    /// (an application, operator or auditor).
    pub async fn gateway_channel(&self, id: &PeerId) -> Channel {
        let paths = issue(&self.pki(), id, false);
        let m = TlsMaterial::load(&paths.ca, &paths.cert, &paths.key).unwrap();
        Self::channel(&self.gateway_url(), yrd_identity::tonic_client_tls(&m, "localhost"))
            .await
            .unwrap()
    }

    /// A direct SQLite connection to a region's store.
    pub fn sql(&self, region: usize) -> rusqlite::Connection {
        let yrd_node::config::StoreConfig::Sqlite(store) = &self.node_configs[region].store;
        rusqlite::Connection::open(&store.path).unwrap()
    }

    /// Stops a region's node (as if it crashed).
    pub async fn stop_node(&mut self, region: usize) {
        if let Some(n) = self.nodes[region].take() {
            n.shutdown().await.unwrap();
        }
    }

    /// Starts a stopped region's node again on the same address.
    pub async fn restart_node(&mut self, region: usize, addr: SocketAddr) {
        let mut c = self.node_configs[region].clone();
        c.listen = addr;
        self.nodes[region] = Some(yrd_node::start(c).await.unwrap());
    }

    /// Waits until the gateway sees `region` as healthy (or not).
    pub async fn wait_region(&self, region: &str, healthy: bool) {
        let r = self.gateway.registry.get(region).unwrap().clone();
        tokio::time::timeout(Duration::from_secs(20), async {
            while r.healthy() != healthy {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "region {region} never became healthy={healthy}: {}",
                r.unhealthy_reason()
            )
        });
    }
}

/// Where the policy file of region `region` (index into REGIONS) goes.
fn policy_path(dir: &Path, region: usize) -> PathBuf {
    dir.join(format!("{}-policy.toml", REGIONS[region]))
}

/// A TCP proxy that can be told to stop forwarding: a region that hangs
/// (a network partition, a frozen host) while its connections stay open.
pub struct StallProxy {
    pub addr: SocketAddr,
    stalled: Arc<AtomicBool>,
}

impl StallProxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled = Arc::new(AtomicBool::new(false));
        let s = stalled.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pipe(ri, wo, s.clone()), pipe(ro, wi, s));
                });
            }
        });
        Self { addr, stalled }
    }

    /// From now on, no byte passes in either direction.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
