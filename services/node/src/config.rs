//! The node's configuration: one TOML file, `YRD_*` environment overrides,
//! validated at start. Relative paths are relative to the file's folder.
//! Durations are humantime strings (`"60s"`, `"1h"`) under keys without a
//! unit suffix, as in every config of the mesh.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yrd_identity::{Secret, TlsPaths};
use yrd_query::Limits;

pub use crate::store::StoreConfig;
pub use crate::store::sqlite::SqliteConfig;
pub use yrd_server::ConfigError;

/// A region node's configuration. It serializes back to the TOML it is
/// read from, which is how `yrdctl up` writes node configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's region: its GB/T 2260 province-level code, such as `320000`.
    pub region: String,
    /// Display name of the region.
    #[serde(default)]
    pub region_name: String,
    /// Region ids accepted besides the 31 mainland provincial-level codes
    /// of GB/T 2260 (`yrd_datasets::codes::regions::PROVINCIAL_LEVEL`), for
    /// a federation that has others (`810000`, a test mesh's `990000`):
    /// six digits each. Empty by default: any other `region` is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_region_ids: Vec<String>,
    /// Address the gRPC listener binds (`127.0.0.1:0` picks a free port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// At shutdown (SIGTERM, SIGINT), how long open calls may go on before
    /// they are ended with `UNAVAILABLE`, such as `"10s"`.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Limits of the connection edge: TLS handshakes (time, in total, per
    /// source) and HTTP/2 streams per connection.
    #[serde(default)]
    pub connections: yrd_server::ConnectionLimits,
    /// The store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Demo data for `yrd-node generate`.
    #[serde(default)]
    pub demo: DemoConfig,
    /// Query limits.
    #[serde(default)]
    pub limits: Limits,
    /// Query execution.
    #[serde(default)]
    pub query: QueryConfig,
    /// Limits of `yrd-node import`.
    #[serde(default)]
    pub import: crate::import::ImportConfig,
    /// Plaintext without client certificates, for development only: a
    /// warning is logged at start. No shipped config sets it.
    #[serde(default)]
    pub insecure: bool,
    /// This node's certificate, key and the mesh CA; required unless `insecure`.
    #[serde(default)]
    pub tls: Option<TlsPaths>,
    /// Trust domain of the mesh's SPIFFE identities.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Address of the admin HTTP listener (`/metrics`, `/healthz`,
    /// `/readyz`, `/traces`); none when unset.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Logs, traces and their export.
    #[serde(default)]
    pub telemetry: yrd_telemetry::TelemetryConfig,
    /// Identities that may call this node (`gateway`, `gateway/<name>`, ...).
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
    /// How the gateways' on-behalf-of assertions are checked.
    #[serde(default)]
    pub on_behalf_of: OnBehalfOfConfig,
    /// The region's data-sharing policy.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The access workflow: applications apply, the region's operators decide.
    #[serde(default)]
    pub access: crate::access::AccessConfig,
    /// The audit log (hash-chained, signed checkpoints); none: no audit,
    /// with a warning at start. Every shipped config sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<yrd_audit::AuditConfig>,
}

/// The `[on_behalf_of]` section: which gateways may act for applications
/// and how fresh their signed assertions must be (see [`crate::obo`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnBehalfOfConfig {
    /// Gateways whose assertions are accepted: allow rules of the gateway
    /// kind (`gateway`, `gateway/<name>`). A peer the `allow` list admits
    /// but this list does not is refused `GATEWAY_NOT_TRUSTED` on data calls.
    pub trusted_gateways: Vec<String>,
    /// Longest validity an assertion may claim (`"30s"`).
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Clock difference tolerated between a gateway and this node (`"2s"`).
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Most nonces remembered at once. Each is kept until its assertion
    /// expires; when the cache is full, new assertions are refused rather
    /// than old nonces forgotten.
    pub replay_cache: usize,
}

impl Default for OnBehalfOfConfig {
    fn default() -> Self {
        Self {
            trusted_gateways: vec!["gateway".to_owned()],
            max_ttl: Duration::from_secs(30),
            clock_skew: Duration::from_secs(2),
            replay_cache: 100_000,
        }
    }
}

/// Where the region's policy comes from and how it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The agency's policy file (groups, dataset settings, grants),
    /// relative to this config's folder; none: no file grants, only
    /// unconditionally shared data and approved access requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// How often the file is checked for changes (`"2s"`).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// The node's secret for the `hash` mask (also `YRD_POLICY_HASH_KEY`
    /// or `hash_key_file`); required when a grant uses `hash`.
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub hash_key: Secret,
    /// A file holding the `hash` secret, relative to this config's folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key_file: Option<PathBuf>,
    /// Smallest group an aggregate-only grant's answers keep when neither
    /// the grant nor the dataset names one.
    pub min_group_size: u32,
}

/// The shortest `hash` secret accepted, in bytes.
pub const MIN_HASH_KEY_LEN: usize = 16;

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            file: None,
            reload_interval: Duration::from_secs(2),
            hash_key: Secret::default(),
            hash_key_file: None,
            min_group_size: 5,
        }
    }
}

/// Seed and scale of the demo data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Seed shared by every region of a mesh, so cross-region references match.
    pub seed: u64,
    /// 1.0 gives at least 20,000 enterprises and a year of hourly readings.
    pub scale: f64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { seed: 2026, scale: 1.0 }
    }
}

/// Default of `query.max_batch_bytes`: 4 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The bounds of `query.max_batch_bytes`: at most a quarter of the 64 MiB
/// a gateway accepts from a node.
pub const MAX_BATCH_BYTES_RANGE: std::ops::RangeInclusive<usize> = 64 * 1024..=16 * 1024 * 1024;

/// The shortest `query.stall_timeout`. A gateway keeps a call unread
/// between pages for up to its `query.keep_open`, which it caps at 20 s
/// (`MAX_KEEP_OPEN` in the gateway's config). This bound is kept well
/// above that, so a node never ends a call that a gateway keeps open on
/// purpose. If the gateway's cap is raised, raise this too.
pub const MIN_STALL_TIMEOUT: Duration = Duration::from_secs(25);
// Longer than the gateway's 20 s cap on `query.keep_open`, checked when built.
const _: () = assert!(MIN_STALL_TIMEOUT.as_secs() > 20);
/// The longest `query.stall_timeout`.
pub const MAX_STALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Bounds of `query.stall_timeout`: [`MIN_STALL_TIMEOUT`] to
/// [`MAX_STALL_TIMEOUT`].
pub const STALL_TIMEOUT_BOUNDS: (Duration, Duration) = (MIN_STALL_TIMEOUT, MAX_STALL_TIMEOUT);

/// How queries run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Rows per streamed batch.
    pub batch_rows: usize,
    /// Bytes per streamed batch (and any other response message), well
    /// under what a gateway accepts from a node (64 MiB): a batch is cut
    /// before a row that would take it past this, and a row larger than
    /// this alone fails its region's query, naming the row.
    pub max_batch_bytes: usize,
    /// Longest a query may run, whatever deadline the caller sets (`"60s"`).
    #[serde(with = "humantime_serde")]
    pub max_query_time: Duration,
    /// Queries running at once; more wait for a slot.
    pub max_concurrent: usize,
    /// How long a query's next message may wait for the caller (the
    /// gateway) to read it (`"30s"`) before the query is ended and its slot
    /// given back. It must be longer than a gateway's `query.keep_open`
    /// (at most 20 s), which leaves calls unread between pages on purpose,
    /// so it is at least [`MIN_STALL_TIMEOUT`] (25 s) and at most
    /// [`MAX_STALL_TIMEOUT`] (300 s).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            batch_rows: 500,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_query_time: Duration::from_secs(60),
            max_concurrent: 16,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

fn default_trust_domain() -> String {
    yrd_identity::DEFAULT_TRUST_DOMAIN.to_owned()
}

fn default_allow() -> Vec<String> {
    vec!["gateway".to_owned()]
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_shutdown_grace() -> Duration {
    yrd_server::DEFAULT_SHUTDOWN_GRACE
}

impl NodeConfig {
    /// The configuration of a node of `region` with every other key at its
    /// default, as a file naming only `region` would give.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            region_name: String::new(),
            extra_region_ids: Vec::new(),
            listen: default_listen(),
            shutdown_grace: default_shutdown_grace(),
            connections: yrd_server::ConnectionLimits::default(),
            store: StoreConfig::default(),
            demo: DemoConfig::default(),
            limits: Limits::default(),
            query: QueryConfig::default(),
            import: crate::import::ImportConfig::default(),
            insecure: false,
            tls: None,
            trust_domain: default_trust_domain(),
            admin_listen: None,
            telemetry: yrd_telemetry::TelemetryConfig::default(),
            allow: default_allow(),
            on_behalf_of: OnBehalfOfConfig::default(),
            policy: PolicyConfig::default(),
            access: crate::access::AccessConfig::default(),
            audit: None,
        }
    }

    /// Reads, overrides from the environment, resolves paths and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, shown) = yrd_server::read_config(path)?;
        let mut config = Self::parse(&text, &shown)?;
        config.apply_env(&shown, |k| std::env::var(k).ok())?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        config.store.resolve(base);
        config.access.resolve(base);
        if let Some(audit) = config.audit.as_mut() {
            audit.resolve(base);
        }
        if let Some(tls) = config.tls.as_mut() {
            tls.resolve(base);
        }
        for p in [&mut config.policy.file, &mut config.policy.hash_key_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.validate(&shown)?;
        Ok(config)
    }

    /// Parses TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        yrd_server::parse_toml(text, origin)
    }

    /// Applies `YRD_REGION`, `YRD_LISTEN`, `YRD_STORE_PATH` and
    /// `YRD_POLICY_HASH_KEY`.
    pub fn apply_env(&mut self, origin: &str, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("YRD_REGION") {
            self.region = v;
        }
        if let Some(v) = get("YRD_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError {
                path: origin.to_owned(),
                key: "YRD_LISTEN".into(),
                reason: format!("not a socket address: {e}"),
            })?;
        }
        if let Some(v) = get("YRD_STORE_PATH") {
            self.store.set_path(PathBuf::from(v));
        }
        if let Some(v) = get("YRD_POLICY_HASH_KEY") {
            self.policy.hash_key = Secret::new(v);
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            path: origin.to_owned(),
            key: key.to_owned(),
            reason,
        };
        for (i, extra) in self.extra_region_ids.iter().enumerate() {
            yrd_datasets::codes::regions::check_extra_region_id(extra)
                .map_err(|reason| err(&format!("extra_region_ids[{i}]"), reason))?;
        }
        yrd_datasets::codes::regions::check_region_id(&self.region, &self.extra_region_ids)
            .map_err(|reason| err("region", reason))?;
        self.connections.validate(origin)?;
        if self.insecure {
            // Plaintext without client certificates serves this host only,
            // whatever the file says: `--insecure` does not widen it.
            yrd_server::check_loopback(origin, "listen", Some(self.listen))?;
            yrd_server::check_loopback(origin, "admin_listen", self.admin_listen)?;
        }
        if !(self.demo.scale > 0.0 && self.demo.scale <= 100.0) {
            return Err(err("demo.scale", format!("{} is not in (0, 100]", self.demo.scale)));
        }
        if self.query.batch_rows == 0 || self.query.batch_rows > 10_000 {
            return Err(err(
                "query.batch_rows",
                format!("{} is not in 1..=10000", self.query.batch_rows),
            ));
        }
        if !MAX_BATCH_BYTES_RANGE.contains(&self.query.max_batch_bytes) {
            return Err(err(
                "query.max_batch_bytes",
                format!(
                    "{} is not in {}..={}",
                    self.query.max_batch_bytes,
                    MAX_BATCH_BYTES_RANGE.start(),
                    MAX_BATCH_BYTES_RANGE.end()
                ),
            ));
        }
        self.import
            .validate(self.query.max_batch_bytes)
            .map_err(|(key, reason)| err(key, reason))?;
        if !(STALL_TIMEOUT_BOUNDS.0..=STALL_TIMEOUT_BOUNDS.1).contains(&self.query.stall_timeout) {
            return Err(err(
                "query.stall_timeout",
                format!(
                    "{:?} is outside the bounds {:?}..={:?} (it must be longer than a gateway's \
                     query.keep_open, which may be up to 20s)",
                    self.query.stall_timeout, STALL_TIMEOUT_BOUNDS.0, STALL_TIMEOUT_BOUNDS.1
                ),
            ));
        }
        if self.query.max_concurrent == 0 {
            return Err(err("query.max_concurrent", "must be at least 1".into()));
        }
        if self.query.max_query_time < Duration::from_secs(1) {
            return Err(err("query.max_query_time", "must be at least 1s".into()));
        }
        if !self.insecure && self.tls.is_none() {
            return Err(err("tls", "required unless insecure = true (development only)".into()));
        }
        if let Err(e) = yrd_identity::Authorizer::from_rules(&self.trust_domain, &self.allow) {
            return Err(err("allow", e.to_string()));
        }
        self.on_behalf_of
            .validate(&self.trust_domain)
            .map_err(|(key, reason)| err(key, reason))?;
        let p = &self.policy;
        if p.reload_interval < Duration::from_millis(100) {
            return Err(err("policy.reload_interval", "must be at least 100ms".into()));
        }
        if !p.hash_key.is_empty() && p.hash_key.len() < MIN_HASH_KEY_LEN {
            // The length only: the secret itself is never shown.
            return Err(err(
                "policy.hash_key",
                format!("must be at least {MIN_HASH_KEY_LEN} bytes, is {}", p.hash_key.len()),
            ));
        }
        if !p.hash_key.is_empty() && p.hash_key_file.is_some() {
            return Err(err(
                "policy.hash_key_file",
                "set hash_key or hash_key_file, not both".into(),
            ));
        }
        if p.min_group_size == 0 {
            return Err(err("policy.min_group_size", "must be at least 1".into()));
        }
        self.access.validate(origin)?;
        if let Some(audit) = &self.audit {
            audit.validate().map_err(|e| err("audit", e.to_string()))?;
        }
        // Every limit within its bounds (max_filter_depth's hard bound keeps
        // the filter walks off the end of the stack).
        self.limits.validate("limits.").map_err(|e| err(&e.key, e.reason))?;
        // The telemetry bounds (buffer_spans, buffer_bytes, export_queue, ...).
        self.telemetry.validate().map_err(|e| match e {
            yrd_telemetry::TelemetryError::Config { key, reason } => err(&format!("telemetry.{key}"), reason),
            other => err("telemetry", other.to_string()),
        })?;
        Ok(())
    }

    /// Checks this process's own certificate against the config, reading
    /// the `tls` files (the binary calls it at start, after [`Self::load`]):
    /// it must carry a node identity of this `region`, in `trust_domain`.
    /// Returns that identity; `None` in insecure mode, which has no
    /// certificate. Errors name `origin`, the key and the reason.
    pub fn check_certificate(&self, origin: &str) -> Result<Option<yrd_identity::PeerId>, ConfigError> {
        let Some(paths) = self.tls.as_ref().filter(|_| !self.insecure) else {
            return Ok(None);
        };
        let err = |key: &str, reason: String| ConfigError::new(origin, key, reason);
        let id = yrd_server::own_identity(origin, paths, &self.trust_domain, "this node")?;
        let cert = paths.cert.display();
        match id.region() {
            Some(region) if id.kind() == "node" && region == self.region => Ok(Some(id)),
            Some(region) if id.kind() == "node" => Err(err(
                "region",
                format!(
                    "{} is not the region of this node's certificate tls.cert ({cert}: {id}, a node of {region}); \
                     a node serves with a node identity of its own region",
                    self.region
                ),
            )),
            _ => Err(err(
                "tls.cert",
                format!(
                    "{cert} carries {id}, an identity of kind {}; a node serves with a node identity of its \
                     region (spiffe://{}/region/{}/node/<name>)",
                    id.kind(),
                    self.trust_domain,
                    self.region
                ),
            )),
        }
    }

    /// The region's display name, or its code.
    pub fn region_label(&self) -> &str {
        if self.region_name.is_empty() {
            &self.region
        } else {
            &self.region_name
        }
    }
}

impl OnBehalfOfConfig {
    /// Checks the section; an error names its key (`on_behalf_of.<key>`).
    fn validate(&self, trust_domain: &str) -> Result<(), (&'static str, String)> {
        const KEY: &str = "on_behalf_of.trusted_gateways";
        if let Err(e) = yrd_identity::Authorizer::from_rules(trust_domain, &self.trusted_gateways) {
            return Err((KEY, e.to_string()));
        }
        for rule in &self.trusted_gateways {
            // Only a gateway may act for others: a rule admitting apps or
            // nodes here would let them assert any identity.
            let kind = rule.trim().split('/').next().unwrap_or_default();
            if kind != "gateway" {
                return Err((
                    KEY,
                    format!("{rule:?} is not a gateway rule (gateway or gateway/<name>)"),
                ));
            }
        }
        if self.max_ttl.is_zero() || self.max_ttl > Duration::from_secs(300) {
            return Err(("on_behalf_of.max_ttl", "must be more than 0s and at most 5m".into()));
        }
        if self.clock_skew > Duration::from_secs(60) {
            return Err(("on_behalf_of.clock_skew", "must be at most 1m".into()));
        }
        if self.replay_cache == 0 || self.replay_cache > 10_000_000 {
            return Err(("on_behalf_of.replay_cache", "must be in 1..=10000000".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = NodeConfig::parse("region = \"320000\"\ninsecure = true\n", "t.toml").unwrap();
        assert_eq!(c.listen.port(), 50051);
        assert_eq!(c.allow, vec!["gateway".to_owned()]);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        c.validate("t.toml").unwrap();
        let c = NodeConfig::parse("region = \"320000\"\nshutdown_grace = \"1m 30s\"\n", "t.toml").unwrap();
        assert_eq!(c.shutdown_grace, Duration::from_secs(90));
        let e = NodeConfig::parse("region = \"320000\"\nshutdown_grace = \"soon\"\n", "t.toml").unwrap_err();
        assert!(
            e.to_string().contains("\"soon\"") && e.to_string().contains("duration"),
            "{e}"
        );
    }

    #[test]
    fn new_is_what_a_minimal_file_gives() {
        let c = NodeConfig::parse("region = \"320000\"\n", "t.toml").unwrap();
        assert_eq!(c, NodeConfig::new("320000"));
    }

    #[test]
    fn durations_are_humantime_strings() {
        let c = NodeConfig::parse("region = \"320000\"\n[query]\nmax_query_time = \"90s\"\n", "t.toml").unwrap();
        assert_eq!(c.query.max_query_time, Duration::from_secs(90));
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("max_query_time = \"1m 30s\""), "{text}");
        assert_eq!(NodeConfig::parse(&text, "t.toml").unwrap(), c);
        // A bare number has no unit: refused, and the old key is unknown.
        let e = NodeConfig::parse("region = \"320000\"\n[query]\nmax_query_time = \"60\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("expected a duration"), "{e}");
        let e = NodeConfig::parse("region = \"320000\"\n[query]\nmax_query_seconds = 60\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("max_query_seconds"), "{e}");
        let mut c = NodeConfig::new("320000");
        c.insecure = true;
        c.query.max_query_time = Duration::from_millis(500);
        let e = c.validate("t.toml").unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.reason.as_str()),
            ("query.max_query_time", "must be at least 1s")
        );
    }

    #[test]
    fn stall_timeout_is_longer_than_any_gateway_keep_open() {
        let check = |value: &str| {
            let text = format!("region = \"320000\"\ninsecure = true\n[query]\nstall_timeout = \"{value}\"\n");
            NodeConfig::parse(&text, "t.toml").and_then(|c| c.validate("t.toml").map(|()| c))
        };
        assert_eq!(QueryConfig::default().stall_timeout, Duration::from_secs(30));
        // The gateway's longest keep_open is 20 s: a node must wait longer.
        for refused in ["1s", "20s", "24s", "5m 1s"] {
            let e = check(refused).unwrap_err();
            assert_eq!(e.key, "query.stall_timeout", "{refused}: {e}");
            assert!(e.reason.contains("25s..=300s"), "{refused}: {e}");
        }
        for allowed in ["25s", "30s", "5m"] {
            let c = check(allowed).unwrap();
            assert!(c.query.stall_timeout > Duration::from_secs(20), "{allowed}");
        }
    }

    #[test]
    fn nodes_issue_no_page_tokens_so_take_no_token_keys() {
        // Paging state lives in the gateway's tokens; a node resumes from
        // the sort key it is sent, so a token key in a node config is a
        // mistake worth naming.
        let e = NodeConfig::parse("region = \"320000\"\n[query]\npage_token_secret = \"x\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("page_token_secret"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = NodeConfig::parse("region = \"320000\"\n[query]\nbatch_size = 3\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("batch_size"), "{e}");
        assert!(e.to_string().starts_with("config t.toml"), "{e}");
    }

    #[test]
    fn tls_is_required_unless_insecure() {
        let c = NodeConfig::parse("region = \"320000\"\n", "t.toml").unwrap();
        assert_eq!(c.validate("t.toml").unwrap_err().key, "tls");
        let c = NodeConfig::parse("region = \"320000\"\ninsecure = true\nallow = [\"robot\"]\n", "t.toml").unwrap();
        assert_eq!(c.validate("t.toml").unwrap_err().key, "allow");
    }

    #[test]
    fn on_behalf_of_has_defaults_and_checks_its_keys() {
        let c = NodeConfig::parse("region = \"320000\"\ninsecure = true\n", "t.toml").unwrap();
        assert_eq!(c.on_behalf_of.trusted_gateways, vec!["gateway".to_owned()]);
        assert_eq!(c.on_behalf_of.max_ttl, Duration::from_secs(30));
        assert_eq!(c.on_behalf_of.clock_skew, Duration::from_secs(2));
        assert_eq!(c.on_behalf_of.replay_cache, 100_000);
        let text = "region = \"320000\"\ninsecure = true\n[on_behalf_of]\ntrusted_gateways = [\"gateway/gw-1\"]\nmax_ttl = \"15s\"\n";
        let c = NodeConfig::parse(text, "t.toml").unwrap();
        c.validate("t.toml").unwrap();
        assert_eq!(c.on_behalf_of.max_ttl, Duration::from_secs(15));
        for (bad, key) in [
            ("trusted_gateways = [\"app\"]", "on_behalf_of.trusted_gateways"),
            ("trusted_gateways = []", "on_behalf_of.trusted_gateways"),
            ("max_ttl = \"0s\"", "on_behalf_of.max_ttl"),
            ("replay_cache = 0", "on_behalf_of.replay_cache"),
        ] {
            let c = NodeConfig::parse(
                &format!("region = \"320000\"\ninsecure = true\n[on_behalf_of]\n{bad}\n"),
                "t.toml",
            )
            .unwrap();
            assert_eq!(c.validate("t.toml").unwrap_err().key, key, "{bad}");
        }
        let e = NodeConfig::parse("region = \"320000\"\n[on_behalf_of]\nttl = \"1s\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
    }

    #[test]
    fn bad_region_is_refused() {
        let c = NodeConfig::parse("region = \"32\"\n", "t.toml").unwrap();
        let e = c.validate("t.toml").unwrap_err();
        assert_eq!(e.key, "region");
        for bad in ["999999", "310100", "810000"] {
            let c = NodeConfig::parse(&format!("region = \"{bad}\"\ninsecure = true\n"), "t.toml").unwrap();
            let e = c.validate("t.toml").unwrap_err();
            assert_eq!(e.key, "region", "{bad}");
            assert!(e.to_string().starts_with("config t.toml: region: "), "{e}");
            assert!(e.reason.contains("provincial-level"), "{e}");
        }
        // Another federation's ids, when listed.
        let c = NodeConfig::parse(
            "region = \"810000\"\ninsecure = true\nextra_region_ids = [\"810000\"]\n",
            "t.toml",
        )
        .unwrap();
        c.validate("t.toml").unwrap();
        assert_eq!(NodeConfig::parse(&toml::to_string(&c).unwrap(), "t.toml").unwrap(), c);
        let c = NodeConfig::parse(
            "region = \"320000\"\ninsecure = true\nextra_region_ids = [\"hk\"]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.validate("t.toml").unwrap_err().key, "extra_region_ids[0]");
    }

    #[test]
    fn insecure_binds_only_loopback() {
        for (text, key) in [
            ("listen = \"0.0.0.0:50051\"", "listen"),
            ("listen = \"[::]:50051\"", "listen"),
            ("listen = \"192.168.1.5:50051\"", "listen"),
            ("admin_listen = \"0.0.0.0:9090\"", "admin_listen"),
        ] {
            let c = NodeConfig::parse(&format!("region = \"320000\"\ninsecure = true\n{text}\n"), "t.toml").unwrap();
            let e = c.validate("t.toml").unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert!(e.reason.contains("not a loopback address"), "{e}");
        }
        let c = NodeConfig::parse(
            "region = \"320000\"\ninsecure = true\nlisten = \"[::1]:0\"\nadmin_listen = \"127.0.0.2:9090\"\n",
            "t.toml",
        )
        .unwrap();
        c.validate("t.toml").unwrap();
        // With certificates, any address.
        let mut c = NodeConfig::new("320000");
        c.listen = "0.0.0.0:50051".parse().unwrap();
        c.tls = Some(TlsPaths::new("ca.pem", "c.pem", "c.key"));
        c.validate("t.toml").unwrap();
    }

    #[test]
    fn the_certificate_must_be_this_regions_node() {
        use yrd_identity::{IssueRequest, PeerId};
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path();
        yrd_identity::init_ca(pki, "yrd.mesh").unwrap();
        let config = |id: &PeerId, trust_domain: &str| {
            let files = yrd_identity::issue(pki, &IssueRequest::local_server(id.clone())).unwrap();
            let mut c = NodeConfig::new("320000");
            c.trust_domain = trust_domain.to_owned();
            c.tls = Some(TlsPaths::new(
                pki.join(yrd_identity::CA_CERT_FILE),
                files.cert,
                files.key,
            ));
            c
        };
        let own = PeerId::node("yrd.mesh", "320000", "nj-1").unwrap();
        assert_eq!(
            config(&own, "yrd.mesh").check_certificate("t.toml").unwrap(),
            Some(own.clone())
        );
        let cases = [
            (
                PeerId::node("yrd.mesh", "310000", "sh-1").unwrap(),
                "yrd.mesh",
                "region",
                "a node of 310000",
            ),
            (
                PeerId::gateway("yrd.mesh", "gw").unwrap(),
                "yrd.mesh",
                "tls.cert",
                "kind gateway",
            ),
            (
                PeerId::app("yrd.mesh", "dash").unwrap(),
                "yrd.mesh",
                "tls.cert",
                "kind app",
            ),
            (
                PeerId::operator("yrd.mesh", "320000", "wang").unwrap(),
                "yrd.mesh",
                "tls.cert",
                "kind operator",
            ),
            (
                own,
                "other.mesh",
                "trust_domain",
                "\"other.mesh\" is not the trust domain",
            ),
        ];
        for (id, td, key, says) in cases {
            let e = config(&id, td).check_certificate("t.toml").unwrap_err();
            assert_eq!(e.key, key, "{id}: {e}");
            assert!(e.reason.contains(says) && e.reason.contains(&id.uri()), "{e}");
        }
        // Missing files are named; insecure mode has no certificate to check.
        let mut c = NodeConfig::new("320000");
        c.tls = Some(TlsPaths::new(
            pki.join("nope.pem"),
            pki.join("nope.pem"),
            pki.join("nope.key"),
        ));
        let e = c.check_certificate("t.toml").unwrap_err();
        assert!(e.key == "tls" && e.reason.contains("nope.pem"), "{e}");
        c.insecure = true;
        assert_eq!(c.check_certificate("t.toml").unwrap(), None);
    }

    #[test]
    fn the_policy_section_has_defaults_and_checks() {
        let c = NodeConfig::parse("region = \"320000\"\ninsecure = true\n", "t.toml").unwrap();
        assert_eq!(c.policy, PolicyConfig::default());
        assert_eq!(c.policy.reload_interval, Duration::from_secs(2));
        let c = NodeConfig::parse(
            "region = \"320000\"\ninsecure = true\n[policy]\nfile = \"policy.toml\"\nreload_interval = \"500ms\"\nhash_key = \"short\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.policy.file.as_deref(), Some(Path::new("policy.toml")));
        let e = c.validate("t.toml").unwrap_err();
        assert_eq!(e.key, "policy.hash_key");
        assert!(!e.to_string().contains("short"), "{e}");
        assert!(!format!("{c:?}").contains("short"));
        let e = NodeConfig::parse("region = \"320000\"\n[policy]\ngrants = 1\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("grants"), "{e}");
        let mut c = NodeConfig::new("320000");
        c.apply_env("t.toml", |k| {
            (k == "YRD_POLICY_HASH_KEY").then(|| "0123456789abcdef".to_owned())
        })
        .unwrap();
        assert_eq!(c.policy.hash_key.expose(), "0123456789abcdef");
    }

    #[test]
    fn env_overrides_apply() {
        let mut c = NodeConfig::parse("region = \"320000\"\n", "t.toml").unwrap();
        c.apply_env("t.toml", |k| (k == "YRD_LISTEN").then(|| "127.0.0.1:7000".to_owned()))
            .unwrap();
        assert_eq!(c.listen.port(), 7000);
        let e = c
            .apply_env("t.toml", |k| (k == "YRD_LISTEN").then(|| "nope".to_owned()))
            .unwrap_err();
        assert_eq!(e.key, "YRD_LISTEN");
    }
}
