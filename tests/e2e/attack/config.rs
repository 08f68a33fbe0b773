//! Attack tests: misconfigurations refused at start (issue 10, finding 9).
//!
//! The real `yrd-node` and `yrd-gateway` binaries, each started as its own
//! process with a config file and certificates issued by a real mesh CA:
//! a gateway with an application's or a node's certificate, a node with
//! another region's certificate, a certificate of another trust domain, a
//! region id that is not a GB/T 2260 provincial-level code, duplicate
//! regions, `insecure = true` without `--insecure`, and `--insecure` on
//! `0.0.0.0`. Before the fix every one of them started (the node refused
//! only ids not ending in `0000`); now each exits non-zero within a few
//! seconds with an error naming the file, the key and the reason, and the
//! good configs, secure and insecure, still start and listen.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use yrd_gateway::config::{GatewayConfig, RegionConfig};
use yrd_identity::{PeerId, TlsPaths};
use yrd_node::NodeConfig;
use yrd_node::config::{SqliteConfig, StoreConfig};

use crate::mesh::{TD, issue};
use crate::procs::{Process, free_port};

/// How long a refused process may take to exit: loading the config and
/// the certificate, nothing more (generous for a loaded machine).
const REFUSE_WITHIN: Duration = Duration::from_secs(10);
/// How long a good process may take to listen.
const LISTEN_WITHIN: Duration = Duration::from_secs(30);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A temporary folder with a mesh CA of [`TD`] and the identities these
/// tests hand out.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        yrd_identity::init_ca(&dir.path().join("pki"), TD).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn tls(&self, id: &PeerId) -> TlsPaths {
        issue(&self.path().join("pki"), id, true)
    }

    fn node_id(region: &str) -> PeerId {
        PeerId::node(TD, region, "node-1").unwrap()
    }

    fn gateway_id() -> PeerId {
        PeerId::gateway(TD, "gateway").unwrap()
    }

    /// A node config of `region` serving with `cert`'s identity (none:
    /// insecure), its store in the folder.
    fn node(&self, region: &str, cert: Option<&PeerId>, listen: SocketAddr) -> NodeConfig {
        let mut c = NodeConfig::new(region);
        c.listen = listen;
        c.insecure = cert.is_none();
        c.tls = cert.map(|id| self.tls(id));
        c.store = StoreConfig::Sqlite(SqliteConfig {
            path: self.path().join(format!("node-{region}.sqlite")),
            ..SqliteConfig::default()
        });
        c
    }

    /// A gateway config in front of one region's node at `node`, serving
    /// with `cert`'s identity (none: insecure).
    fn gateway(&self, cert: Option<&PeerId>, listen: SocketAddr, region: &str, node: SocketAddr) -> GatewayConfig {
        let scheme = if cert.is_some() { "https" } else { "http" };
        GatewayConfig {
            listen,
            insecure: cert.is_none(),
            tls: cert.map(|id| self.tls(id)),
            regions: vec![RegionConfig {
                id: region.to_owned(),
                name: String::new(),
                endpoints: vec![format!("{scheme}://{node}")],
                tls_server_name: None,
            }],
            ..GatewayConfig::default()
        }
    }

    fn write(&self, name: &str, config: &Config) -> PathBuf {
        let path = self.path().join(format!("{name}.toml"));
        let text = match config {
            Config::Node(c) => toml::to_string(c),
            Config::Gateway(c) => toml::to_string(c),
        };
        std::fs::write(&path, text.unwrap()).unwrap();
        path
    }
}

/// A config to start a process with: its kind says which binary.
enum Config {
    Node(NodeConfig),
    Gateway(GatewayConfig),
}

impl Config {
    fn binary(&self) -> &'static str {
        match self {
            Config::Node(_) => "yrd-node",
            Config::Gateway(_) => "yrd-gateway",
        }
    }
}

impl From<NodeConfig> for Config {
    fn from(c: NodeConfig) -> Self {
        Config::Node(c)
    }
}

impl From<GatewayConfig> for Config {
    fn from(c: GatewayConfig) -> Self {
        Config::Gateway(c)
    }
}

/// Starts `binary` with `config` (and `extra` arguments) and checks that it
/// refuses: a non-zero exit within [`REFUSE_WITHIN`], its error naming the
/// file, `key` and every one of `says`.
fn refused(pki: &Pki, name: &str, config: impl Into<Config>, extra: &[&str], key: &str, says: &[&str]) {
    let config = config.into();
    let binary = config.binary();
    let path = pki.write(name, &config);
    let mut p = Process::start(binary, &path, extra, pki.path());
    let Some((status, took)) = p.exit_within(REFUSE_WITHIN) else {
        panic!(
            "{} {extra:?} is still running after {REFUSE_WITHIN:?}: the misconfiguration ({key}) was accepted\n{}",
            p.name,
            p.logs()
        );
    };
    let err = p.logs();
    println!(
        "{name}: {binary} refused in {} ms, {status}: {}",
        took.as_millis(),
        err.trim()
    );
    assert!(!status.success(), "{}: exit status {status}\n{err}", p.name);
    let expected = format!("config {}: {key}: ", path.display());
    assert!(
        err.contains(&expected),
        "{name}: the error names no {expected:?}:\n{err}"
    );
    for s in says {
        assert!(err.contains(s), "{name}: the error does not say {s:?}:\n{err}");
    }
}

/// Starts `binary` with `config` and checks that it serves: `addr` accepts
/// connections within [`LISTEN_WITHIN`] and the process is still running.
fn starts(pki: &Pki, name: &str, config: impl Into<Config>, extra: &[&str], addr: SocketAddr) -> Process {
    let config = config.into();
    let binary = config.binary();
    let path = pki.write(name, &config);
    let mut p = Process::start(binary, &path, extra, pki.path());
    let started = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!("{} {extra:?} exited with {status}:\n{}", p.name, p.logs());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < LISTEN_WITHIN,
            "{} does not listen on {addr} after {LISTEN_WITHIN:?}:\n{}",
            p.name,
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{name}: {binary} listening on {addr} in {} ms",
        started.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "{} stopped after it listened:\n{}",
        p.name,
        p.logs()
    );
    p
}

#[test]
fn a_gateway_with_an_app_or_node_certificate_is_refused() {
    let pki = Pki::new();
    let any = loopback(0);
    let app = PeerId::app(TD, "dashboard").unwrap();
    let g = pki.gateway(Some(&app), any, "310000", loopback(1));
    refused(
        &pki,
        "gateway-app-cert",
        g,
        &[],
        "tls.cert",
        &[
            "spiffe://yrd.mesh/app/dashboard",
            "an identity of kind app",
            "a gateway serves with a gateway identity",
        ],
    );
    let node = Pki::node_id("310000");
    let g = pki.gateway(Some(&node), any, "310000", loopback(1));
    refused(
        &pki,
        "gateway-node-cert",
        g,
        &[],
        "tls.cert",
        &[
            "spiffe://yrd.mesh/region/310000/node/node-1",
            "an identity of kind node",
        ],
    );
}

#[test]
fn a_node_with_another_regions_or_kinds_certificate_is_refused() {
    let pki = Pki::new();
    let any = loopback(0);
    let n = pki.node("320000", Some(&Pki::node_id("310000")), any);
    refused(
        &pki,
        "node-other-region",
        n,
        &[],
        "region",
        &[
            "320000 is not the region of this node's certificate",
            "spiffe://yrd.mesh/region/310000/node/node-1",
        ],
    );
    let n = pki.node("320000", Some(&Pki::gateway_id()), any);
    refused(
        &pki,
        "node-gateway-cert",
        n,
        &[],
        "tls.cert",
        &[
            "an identity of kind gateway",
            "spiffe://yrd.mesh/region/320000/node/<name>",
        ],
    );
    let n = pki.node("320000", Some(&PeerId::app(TD, "dashboard").unwrap()), any);
    refused(&pki, "node-app-cert", n, &[], "tls.cert", &["an identity of kind app"]);
}

#[test]
fn a_trust_domain_other_than_the_certificates_is_refused() {
    let pki = Pki::new();
    let any = loopback(0);
    let mut n = pki.node("320000", Some(&Pki::node_id("320000")), any);
    n.trust_domain = "other.mesh".into();
    refused(
        &pki,
        "node-trust-domain",
        n,
        &[],
        "trust_domain",
        &[
            "\"other.mesh\" is not the trust domain of this node's certificate",
            "spiffe://yrd.mesh/",
        ],
    );
    let mut g = pki.gateway(Some(&Pki::gateway_id()), any, "320000", loopback(1));
    g.trust_domain = "other.mesh".into();
    refused(
        &pki,
        "gateway-trust-domain",
        g,
        &[],
        "trust_domain",
        &["\"other.mesh\" is not the trust domain of this gateway's certificate"],
    );
}

#[test]
fn region_ids_must_be_provincial_gbt2260_codes() {
    let pki = Pki::new();
    let any = loopback(0);
    for bad in ["999999", "310100"] {
        let g = pki.gateway(Some(&Pki::gateway_id()), any, bad, loopback(1));
        refused(
            &pki,
            &format!("gateway-region-{bad}"),
            g,
            &[],
            "regions[0].id",
            &[
                &format!("\"{bad}\" is not a GB/T 2260 provincial-level code"),
                "extra_region_ids",
            ],
        );
    }
    // A code that ends in 0000 but names no province passed the node's old
    // check as well.
    for bad in ["990000", "999999"] {
        let n = pki.node(bad, Some(&Pki::node_id(bad)), any);
        refused(
            &pki,
            &format!("node-region-{bad}"),
            n,
            &[],
            "region",
            &[&format!("\"{bad}\" is not a GB/T 2260 provincial-level code")],
        );
    }
    let mut g = pki.gateway(Some(&Pki::gateway_id()), any, "320000", loopback(1));
    g.regions.push(g.regions[0].clone());
    refused(
        &pki,
        "gateway-region-twice",
        g,
        &[],
        "regions[1].id",
        &["region 320000 is listed twice"],
    );
    let mut n = pki.node("320000", Some(&Pki::node_id("320000")), any);
    n.query.batch_rows = 0;
    refused(
        &pki,
        "node-batch-rows",
        n,
        &[],
        "query.batch_rows",
        &["is not in 1..=10000"],
    );
}

#[test]
fn insecure_mode_needs_the_flag_and_loopback() {
    let pki = Pki::new();
    let any = loopback(0);
    let n = pki.node("320000", None, any);
    refused(
        &pki,
        "node-insecure-no-flag",
        n,
        &[],
        "insecure",
        &["needs --insecure on the command line"],
    );
    let g = pki.gateway(None, any, "320000", loopback(1));
    refused(
        &pki,
        "gateway-insecure-no-flag",
        g,
        &[],
        "insecure",
        &["needs --insecure on the command line"],
    );
    // Nor does the flag alone make a secure config insecure.
    let n = pki.node("320000", Some(&Pki::node_id("320000")), any);
    refused(
        &pki,
        "node-flag-not-insecure",
        n,
        &["--insecure"],
        "insecure",
        &["--insecure was given but the config does not set insecure = true"],
    );
    // With the flag, only loopback.
    let public: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let n = pki.node("320000", None, public);
    refused(
        &pki,
        "node-insecure-public",
        n,
        &["--insecure"],
        "listen",
        &["0.0.0.0:0 is not a loopback address"],
    );
    let mut n = pki.node("320000", None, any);
    n.admin_listen = Some("0.0.0.0:0".parse().unwrap());
    refused(
        &pki,
        "node-insecure-public-admin",
        n,
        &["--insecure"],
        "admin_listen",
        &["is not a loopback address"],
    );
    let g = pki.gateway(None, public, "320000", loopback(1));
    refused(
        &pki,
        "gateway-insecure-public",
        g,
        &["--insecure"],
        "listen",
        &["0.0.0.0:0 is not a loopback address"],
    );
}

#[test]
fn good_configs_still_start() {
    let pki = Pki::new();
    // Mutual TLS: a node of its own region, a gateway in front of it.
    let (node_addr, gateway_addr) = (loopback(free_port()), loopback(free_port()));
    let n = pki.node("310000", Some(&Pki::node_id("310000")), node_addr);
    let _node = starts(&pki, "node-good", n, &[], node_addr);
    let g = pki.gateway(Some(&Pki::gateway_id()), gateway_addr, "310000", node_addr);
    let _gateway = starts(&pki, "gateway-good", g, &[], gateway_addr);
    // Insecure with the flag, on loopback.
    let (node_addr, gateway_addr) = (loopback(free_port()), loopback(free_port()));
    let n = pki.node("320000", None, node_addr);
    let _node = starts(&pki, "node-insecure-good", n, &["--insecure"], node_addr);
    let g = pki.gateway(None, gateway_addr, "320000", node_addr);
    let _gateway = starts(&pki, "gateway-insecure-good", g, &["--insecure"], gateway_addr);
    // Another federation's region, allowed by name.
    let node_addr = loopback(free_port());
    let mut n = pki.node("810000", Some(&Pki::node_id("810000")), node_addr);
    n.extra_region_ids = vec!["810000".into()];
    let _node = starts(&pki, "node-extra-region", n, &[], node_addr);
}
