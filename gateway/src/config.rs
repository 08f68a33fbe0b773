//! The gateway's configuration: one TOML file, `YRD_*` environment
//! overrides, validated at start. Relative paths are relative to the file.
//! Durations are humantime strings (`"10s"`, `"500ms"`) under keys without
//! a unit suffix, as in every config of the mesh.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yrd_identity::{Secret, TlsPaths};
use yrd_query::Limits;

pub use yrd_server::ConfigError;

/// The gateway's configuration. It serializes back to the TOML it is read
/// from, which is how `yrdctl up` writes the gateway's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's name (logs and metrics).
    #[serde(default = "default_name")]
    pub name: String,
    /// Address the gRPC listener binds.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// At shutdown (SIGTERM, SIGINT), how long open calls may go on before
    /// they are ended with `UNAVAILABLE`, such as `"10s"`.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Plaintext everywhere, for development only: a warning is logged at start.
    #[serde(default)]
    pub insecure: bool,
    /// Certificates; required unless `insecure`.
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
    /// Identities that may call the gateway (`app`, `app/<name>`,
    /// `operator`, `auditor`, ...). Only applications read data; operators
    /// and auditors use the access workflow and the audit.
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
    /// How long each on-behalf-of assertion the gateway signs for a node
    /// call is valid (`"10s"`); at most 30s, and no longer than the nodes'
    /// `on_behalf_of.max_ttl`.
    #[serde(default = "default_on_behalf_of_ttl", with = "humantime_serde")]
    pub on_behalf_of_ttl: Duration,
    /// Query limits (the same keys as a node's).
    #[serde(default)]
    pub limits: Limits,
    /// Federated query execution.
    #[serde(default)]
    pub query: QueryConfig,
    /// Health checking of the region endpoints.
    #[serde(default)]
    pub health: HealthConfig,
    /// The regions of the federation.
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
    /// The gateway's audit log (hash-chained, checkpoints signed with the
    /// gateway's key); none: no audit at the gateway, with a warning at
    /// start (each node still keeps its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<yrd_audit::AuditConfig>,
}

/// How federated queries run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Deadline when the caller sets none (`"10s"`).
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
    /// Longest deadline honoured (`"60s"`).
    #[serde(with = "humantime_serde")]
    pub max_deadline: Duration,
    /// Rows per batch sent to the application.
    pub batch_rows: usize,
    /// Batches buffered per region stream: a slow application slows the
    /// nodes instead of growing the gateway's memory.
    pub region_buffer: usize,
    /// Secret signing page tokens; every replica of the gateway shares it.
    /// When empty, a random one is made (tokens then work on this replica only).
    pub page_token_secret: Secret,
    /// Page token lifetime (`"1h"`).
    #[serde(with = "humantime_serde")]
    pub page_token_ttl: Duration,
    /// When a page without an order fills before some region answered the
    /// call at all, how long it waits for their answer (`"50ms"`), not for
    /// their rows: a region that refuses is then reported as refused, and
    /// its audit record is named. A region still silent is reported as not
    /// heard from and asked again for the next page.
    #[serde(with = "humantime_serde")]
    pub answer_grace: Duration,
    /// How long a page's region calls that are still streaming when it
    /// fills stay open for the next page (`"5s"`; `"0s"` cancels them at
    /// once). The next page with the token, on this gateway, continues
    /// them instead of asking every region again. Each kept call holds a
    /// query slot of its node for at most this long.
    #[serde(with = "humantime_serde")]
    pub keep_open: Duration,
    /// At most this many pages' calls are kept open; the oldest are
    /// cancelled first. Each holds at most one query slot of each node
    /// (`[query] max_concurrent`, 16 by default), so keep it well below
    /// that.
    pub max_kept_open: usize,
    /// A first page keeps its calls open only when it asked for at least
    /// this many rows (a scan); the pages after it always do. A top-20
    /// that is never followed then holds no node's query slot.
    pub keep_open_min_page: u32,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            default_deadline: Duration::from_secs(10),
            max_deadline: Duration::from_secs(60),
            batch_rows: 500,
            region_buffer: 2,
            page_token_secret: Secret::default(),
            page_token_ttl: Duration::from_secs(3600),
            answer_grace: Duration::from_millis(50),
            keep_open: Duration::from_secs(5),
            max_kept_open: 8,
            keep_open_min_page: 1000,
        }
    }
}

/// The most pages whose region calls `query.max_kept_open` may keep.
pub const MAX_KEPT_OPEN: usize = 4096;
/// The longest `query.keep_open`.
pub const MAX_KEEP_OPEN: Duration = Duration::from_secs(60);

/// Health checks of region endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between checks of one endpoint (`"2s"`).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time a check may take (`"1s"`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        }
    }
}

/// One region and its node replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Region id: its GB/T 2260 province-level code.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Node endpoints, such as `https://127.0.0.1:50062`.
    pub endpoints: Vec<String>,
    /// Name to verify in the nodes' certificates (default: each endpoint's host).
    #[serde(default)]
    pub tls_server_name: Option<String>,
}

fn default_name() -> String {
    "gateway".into()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50070))
}

fn default_shutdown_grace() -> Duration {
    yrd_server::DEFAULT_SHUTDOWN_GRACE
}

fn default_trust_domain() -> String {
    "yrd.mesh".into()
}

fn default_allow() -> Vec<String> {
    vec!["app".into(), "operator".into(), "auditor".into()]
}

fn default_on_behalf_of_ttl() -> Duration {
    crate::assertion::DEFAULT_TTL
}

impl Default for GatewayConfig {
    /// Every key at its default, as an empty file would give; such a
    /// config names no region and does not validate.
    fn default() -> Self {
        Self {
            name: default_name(),
            listen: default_listen(),
            shutdown_grace: default_shutdown_grace(),
            insecure: false,
            tls: None,
            trust_domain: default_trust_domain(),
            admin_listen: None,
            telemetry: yrd_telemetry::TelemetryConfig::default(),
            allow: default_allow(),
            on_behalf_of_ttl: default_on_behalf_of_ttl(),
            limits: Limits::default(),
            query: QueryConfig::default(),
            health: HealthConfig::default(),
            regions: Vec::new(),
            audit: None,
        }
    }
}

impl GatewayConfig {
    /// Reads, overrides from the environment, resolves paths and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, shown) = yrd_server::read_config(path)?;
        let mut config = Self::parse(&text, &shown)?;
        config.apply_env(&shown, |k| std::env::var(k).ok())?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        if let Some(tls) = config.tls.as_mut() {
            tls.resolve(base);
        }
        if let Some(audit) = config.audit.as_mut() {
            audit.resolve(base);
        }
        config.validate(&shown)?;
        Ok(config)
    }

    /// Parses TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        yrd_server::parse_toml(text, origin)
    }

    /// Applies `YRD_LISTEN` and `YRD_PAGE_TOKEN_SECRET`.
    pub fn apply_env(&mut self, origin: &str, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("YRD_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError {
                path: origin.to_owned(),
                key: "YRD_LISTEN".into(),
                reason: format!("not a socket address: {e}"),
            })?;
        }
        if let Some(v) = get("YRD_PAGE_TOKEN_SECRET") {
            self.query.page_token_secret = Secret::new(v);
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
        if !self.insecure && self.tls.is_none() {
            return Err(err("tls", "required unless insecure = true (development only)".into()));
        }
        if let Some(audit) = &self.audit {
            audit.validate().map_err(|e| err("audit", e.to_string()))?;
        }
        if self.regions.is_empty() {
            return Err(err("regions", "at least one region is needed".into()));
        }
        for (i, r) in self.regions.iter().enumerate() {
            let b = r.id.as_bytes();
            if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
                return Err(err(
                    &format!("regions[{i}].id"),
                    format!("{:?} is not a GB/T 2260 code", r.id),
                ));
            }
            if self.regions[..i].iter().any(|o| o.id == r.id) {
                return Err(err(
                    &format!("regions[{i}].id"),
                    format!("region {} is listed twice", r.id),
                ));
            }
            if r.endpoints.is_empty() {
                return Err(err(
                    &format!("regions[{i}].endpoints"),
                    "at least one endpoint is needed".into(),
                ));
            }
            for e in &r.endpoints {
                let scheme_ok = if self.insecure {
                    e.starts_with("http://")
                } else {
                    e.starts_with("https://")
                };
                if !scheme_ok {
                    let want = if self.insecure { "http://" } else { "https://" };
                    return Err(err(
                        &format!("regions[{i}].endpoints"),
                        format!("{e:?} must start with {want}"),
                    ));
                }
            }
        }
        if self.query.batch_rows == 0 || self.query.region_buffer == 0 {
            return Err(err("query", "batch_rows and region_buffer must be at least 1".into()));
        }
        if self.query.max_kept_open > MAX_KEPT_OPEN {
            return Err(err(
                "query.max_kept_open",
                format!("{} is more than the limit of {MAX_KEPT_OPEN}", self.query.max_kept_open),
            ));
        }
        if self.query.keep_open > MAX_KEEP_OPEN {
            return Err(err(
                "query.keep_open",
                format!(
                    "{:?} is longer than the limit of {MAX_KEEP_OPEN:?}: a kept call holds a node's query slot",
                    self.query.keep_open
                ),
            ));
        }
        if self.query.default_deadline.is_zero() || self.query.default_deadline > self.query.max_deadline {
            return Err(err(
                "query.default_deadline",
                format!(
                    "must be more than 0s and at most max_deadline ({:?})",
                    self.query.max_deadline
                ),
            ));
        }
        if self.health.interval.is_zero() || self.health.timeout.is_zero() {
            return Err(err("health", "interval and timeout must be more than 0s".into()));
        }
        if !self.query.page_token_secret.is_empty() && self.query.page_token_secret.len() < 16 {
            return Err(err("query.page_token_secret", "must be at least 16 bytes long".into()));
        }
        if let Err(e) = yrd_identity::Authorizer::from_rules(&self.trust_domain, &self.allow) {
            return Err(err("allow", e.to_string()));
        }
        let max = crate::assertion::MAX_TTL;
        if self.on_behalf_of_ttl < Duration::from_secs(1) || self.on_behalf_of_ttl > max {
            return Err(err(
                "on_behalf_of_ttl",
                format!("must be at least 1s and at most {max:?} (nodes refuse longer assertions)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
insecure = true
[[regions]]
id = "320000"
endpoints = ["http://127.0.0.1:50062"]
"#;

    #[test]
    fn minimal_insecure_config_parses() {
        let c = GatewayConfig::parse(OK, "g.toml").unwrap();
        c.validate("g.toml").unwrap();
        assert_eq!(c.allow, ["app", "operator", "auditor"]);
        assert_eq!(c.on_behalf_of_ttl, Duration::from_secs(10));
    }

    #[test]
    fn the_assertion_ttl_is_bounded() {
        let c = GatewayConfig::parse(&format!("on_behalf_of_ttl = \"5s\"\n{OK}"), "g.toml").unwrap();
        c.validate("g.toml").unwrap();
        assert_eq!(c.on_behalf_of_ttl, Duration::from_secs(5));
        for bad in ["0s", "500ms", "31s"] {
            let c = GatewayConfig::parse(&format!("on_behalf_of_ttl = \"{bad}\"\n{OK}"), "g.toml").unwrap();
            assert_eq!(c.validate("g.toml").unwrap_err().key, "on_behalf_of_ttl", "{bad}");
        }
    }

    #[test]
    fn default_is_what_an_empty_file_gives() {
        assert_eq!(GatewayConfig::parse("", "g.toml").unwrap(), GatewayConfig::default());
    }

    #[test]
    fn durations_are_humantime_strings() {
        let c = GatewayConfig::parse(
            &format!(
                "{OK}[query]\ndefault_deadline = \"1500ms\"\nmax_deadline = \"2m\"\npage_token_ttl = \"30m\"\n\
                 [health]\ninterval = \"250ms\"\ntimeout = \"100ms\"\n"
            ),
            "g.toml",
        )
        .unwrap();
        assert_eq!(
            (c.query.default_deadline, c.query.max_deadline, c.query.page_token_ttl),
            (
                Duration::from_millis(1500),
                Duration::from_secs(120),
                Duration::from_secs(1800)
            )
        );
        assert_eq!(
            (c.health.interval, c.health.timeout),
            (Duration::from_millis(250), Duration::from_millis(100))
        );
        c.validate("g.toml").unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(GatewayConfig::parse(&text, "g.toml").unwrap(), c);
        let e = GatewayConfig::parse(&format!("{OK}[health]\ninterval_ms = 100\n"), "g.toml").unwrap_err();
        assert!(e.to_string().contains("interval_ms"), "{e}");
        let mut c = GatewayConfig::parse(OK, "g.toml").unwrap();
        c.query.default_deadline = Duration::from_secs(90);
        let e = c.validate("g.toml").unwrap_err();
        assert_eq!(e.key, "query.default_deadline");
        assert!(e.reason.contains("max_deadline (60s)"), "{e}");
    }

    #[test]
    fn the_page_token_secret_is_redacted() {
        let c = GatewayConfig::parse(
            &format!("{OK}[query]\npage_token_secret = \"s3cr3t-s3cr3t-s3cr3t\"\n"),
            "g.toml",
        )
        .unwrap();
        assert_eq!(c.query.page_token_secret.expose(), "s3cr3t-s3cr3t-s3cr3t");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn tls_is_required_unless_insecure() {
        let c = GatewayConfig::parse(&OK.replace("insecure = true", ""), "g.toml").unwrap();
        assert_eq!(c.validate("g.toml").unwrap_err().key, "tls");
    }

    #[test]
    fn unknown_keys_and_bad_regions_are_named() {
        let e = GatewayConfig::parse(&format!("{OK}\nfoo = 1\n"), "g.toml").unwrap_err();
        assert!(e.to_string().contains("foo"), "{e}");
        let c = GatewayConfig::parse(&OK.replace("320000", "32"), "g.toml").unwrap();
        assert_eq!(c.validate("g.toml").unwrap_err().key, "regions[0].id");
    }

    #[test]
    fn the_audit_section_is_resolved_against_the_file_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!("{OK}\n[audit]\ndir = \"audit-gateway\"\ncheckpoint_every = 50\n"),
        )
        .unwrap();
        let c = GatewayConfig::load(&path).unwrap();
        let audit = c.audit.as_ref().unwrap();
        assert_eq!(audit.dir, dir.path().join("audit-gateway"));
        assert_eq!(audit.checkpoint_every, 50);
        // It serializes back (how `yrdctl up` writes it) and reads the same.
        let text = toml::to_string(&c).unwrap();
        assert_eq!(GatewayConfig::parse(&text, "g.toml").unwrap(), c);
        std::fs::write(&path, format!("{OK}\n[audit]\ncheckpoint_every = 0\n")).unwrap();
        let e = GatewayConfig::load(&path).unwrap_err();
        assert_eq!(e.key, "audit");
        assert!(e.to_string().contains("checkpoint_every"), "{e}");
    }
}
