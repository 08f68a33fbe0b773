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
    /// Limits of the connection edge: TLS handshakes (time, in total, per
    /// source) and HTTP/2 streams per connection.
    #[serde(default)]
    pub connections: yrd_server::ConnectionLimits,
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
    /// Region ids accepted besides the 31 mainland provincial-level codes
    /// of GB/T 2260 (`yrd_datasets::codes::regions::PROVINCIAL_LEVEL`), for
    /// a federation that has others (`810000`, a test mesh's `990000`):
    /// six digits each. Empty by default: any other `regions[].id` is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_region_ids: Vec<String>,
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
    /// How long an application may leave the gateway's next message
    /// unread (`"5s"`; at most the caller's deadline) before its call is
    /// ended and its region calls are cancelled, giving back their node
    /// query slots: a client that stops reading holds nothing for long.
    #[serde(with = "humantime_serde")]
    pub client_stall_timeout: Duration,
    /// Calls one application (one certificate identity) may have in
    /// flight at the gateway at once, streams until their end; past it a
    /// call is refused at once with `RESOURCE_EXHAUSTED`. Keep it below a
    /// node's `query.max_concurrent` so no one application can take all
    /// of a region's query slots.
    pub max_calls_per_application: usize,
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
            client_stall_timeout: Duration::from_secs(5),
            max_calls_per_application: 8,
        }
    }
}

/// The most pages whose region calls `query.max_kept_open` may keep.
pub const MAX_KEPT_OPEN: usize = 4096;
/// The longest `query.keep_open`: shorter than a node's default
/// `query.stall_timeout` (30 s), so that nodes never cut a kept call.
pub const MAX_KEEP_OPEN: Duration = Duration::from_secs(20);
/// Bounds of `query.client_stall_timeout`.
pub const CLIENT_STALL_BOUNDS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));
/// The most `query.max_calls_per_application` may be.
pub const MAX_CALLS_PER_APPLICATION: usize = 100_000;

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
    /// How many checks in a row may go unanswered within `timeout` before
    /// a healthy endpoint is taken out of its region's balancer (3; 1 ..=
    /// [`MAX_UNHEALTHY_AFTER`]): a node busy for a moment keeps its
    /// calls. Any answer other than serving — not serving, an error, a
    /// connection or certificate refused — takes the endpoint out at once.
    /// A node that goes silent is taken out within `unhealthy_after ×
    /// (interval + timeout)` (9 s by default); calls sent to it meanwhile
    /// wait for their deadline.
    pub unhealthy_after: u32,
}

/// Upper bound of `health.unhealthy_after`.
pub const MAX_UNHEALTHY_AFTER: u32 = 10;

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
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
            connections: yrd_server::ConnectionLimits::default(),
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
            extra_region_ids: Vec::new(),
            audit: None,
        }
    }
}

impl GatewayConfig {
    /// Checks this process's own certificate against the config, reading
    /// the `tls` files (the binary calls it at start, after [`Self::load`]):
    /// it must carry a gateway identity in `trust_domain`. Returns that
    /// identity; `None` in insecure mode, which has no certificate. Errors
    /// name `origin`, the key and the reason.
    pub fn check_certificate(&self, origin: &str) -> Result<Option<yrd_identity::PeerId>, ConfigError> {
        let Some(paths) = self.tls.as_ref().filter(|_| !self.insecure) else {
            return Ok(None);
        };
        let id = yrd_server::own_identity(origin, paths, &self.trust_domain, "this gateway")?;
        let cert = paths.cert.display();
        if id.role != yrd_identity::Role::Gateway {
            return Err(ConfigError::new(
                origin,
                "tls.cert",
                format!(
                    "{cert} carries {id}, an identity of kind {}; a gateway serves with a gateway identity \
                     (spiffe://{}/gateway/<name>): it signs the on-behalf-of assertions nodes accept only \
                     from gateways",
                    id.kind(),
                    self.trust_domain
                ),
            ));
        }
        Ok(Some(id))
    }

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
        self.connections.validate(origin)?;
        if let Some(audit) = &self.audit {
            audit.validate().map_err(|e| err("audit", e.to_string()))?;
        }
        if self.insecure {
            // Plaintext without client certificates serves this host only,
            // whatever the file says: `--insecure` does not widen it.
            yrd_server::check_loopback(origin, "listen", Some(self.listen))?;
            yrd_server::check_loopback(origin, "admin_listen", self.admin_listen)?;
        }
        // The telemetry bounds (buffer_spans, buffer_bytes, export_queue, ...).
        self.telemetry.validate().map_err(|e| match e {
            yrd_telemetry::TelemetryError::Config { key, reason } => err(&format!("telemetry.{key}"), reason),
            other => err("telemetry", other.to_string()),
        })?;
        if self.regions.is_empty() {
            return Err(err("regions", "at least one region is needed".into()));
        }
        for (i, extra) in self.extra_region_ids.iter().enumerate() {
            yrd_datasets::codes::regions::check_extra_region_id(extra)
                .map_err(|reason| err(&format!("extra_region_ids[{i}]"), reason))?;
        }
        for (i, r) in self.regions.iter().enumerate() {
            yrd_datasets::codes::regions::check_region_id(&r.id, &self.extra_region_ids)
                .map_err(|reason| err(&format!("regions[{i}].id"), reason))?;
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
        // Every limit within its bounds (max_filter_depth's hard bound keeps
        // the filter walks off the end of the stack).
        self.limits.validate("limits.").map_err(|e| err(&e.key, e.reason))?;
        if self.query.max_kept_open > MAX_KEPT_OPEN {
            return Err(err(
                "query.max_kept_open",
                format!("{} is more than the limit of {MAX_KEPT_OPEN}", self.query.max_kept_open),
            ));
        }
        let (lo, hi) = CLIENT_STALL_BOUNDS;
        if !(lo..=hi).contains(&self.query.client_stall_timeout) {
            return Err(err(
                "query.client_stall_timeout",
                format!(
                    "{:?} is outside the bounds {lo:?}..={hi:?}",
                    self.query.client_stall_timeout
                ),
            ));
        }
        if !(1..=MAX_CALLS_PER_APPLICATION).contains(&self.query.max_calls_per_application) {
            return Err(err(
                "query.max_calls_per_application",
                format!(
                    "{} is outside the bounds 1..={MAX_CALLS_PER_APPLICATION}",
                    self.query.max_calls_per_application
                ),
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
        if !(1..=MAX_UNHEALTHY_AFTER).contains(&self.health.unhealthy_after) {
            return Err(err(
                "health.unhealthy_after",
                format!(
                    "is {}; it must be 1 ..= {MAX_UNHEALTHY_AFTER} checks",
                    self.health.unhealthy_after
                ),
            ));
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
    fn unhealthy_after_is_bounded() {
        let c = GatewayConfig::parse(&format!("{OK}[health]\nunhealthy_after = 5\n"), "g.toml").unwrap();
        c.validate("g.toml").unwrap();
        assert_eq!(c.health.unhealthy_after, 5);
        assert_eq!(GatewayConfig::default().health.unhealthy_after, 3);
        for bad in [0, MAX_UNHEALTHY_AFTER + 1] {
            let c = GatewayConfig::parse(&format!("{OK}[health]\nunhealthy_after = {bad}\n"), "g.toml").unwrap();
            let e = c.validate("g.toml").unwrap_err();
            assert_eq!(e.key, "health.unhealthy_after", "{bad}");
            assert!(e.reason.contains(&format!("is {bad}")), "{e}");
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
        for bad in ["999999", "310100", "710000"] {
            let c = GatewayConfig::parse(&OK.replace("320000", bad), "g.toml").unwrap();
            let e = c.validate("g.toml").unwrap_err();
            assert_eq!(e.key, "regions[0].id", "{bad}");
            assert!(e.to_string().starts_with("config g.toml: regions[0].id: "), "{e}");
            assert!(e.reason.contains("provincial-level"), "{e}");
        }
        let c = GatewayConfig::parse(
            &format!("extra_region_ids = [\"990000\"]\n{}", OK.replace("320000", "990000")),
            "g.toml",
        )
        .unwrap();
        c.validate("g.toml").unwrap();
        assert_eq!(
            GatewayConfig::parse(&toml::to_string(&c).unwrap(), "g.toml").unwrap(),
            c
        );
        let twice = format!("{OK}[[regions]]\nid = \"320000\"\nendpoints = [\"http://127.0.0.1:50063\"]\n");
        let e = GatewayConfig::parse(&twice, "g.toml")
            .unwrap()
            .validate("g.toml")
            .unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.reason.as_str()),
            ("regions[1].id", "region 320000 is listed twice")
        );
    }

    #[test]
    fn insecure_binds_only_loopback() {
        for (text, key) in [
            ("listen = \"0.0.0.0:50070\"", "listen"),
            ("listen = \"10.0.0.1:50070\"", "listen"),
            ("admin_listen = \"[::]:9090\"", "admin_listen"),
        ] {
            let c = GatewayConfig::parse(&format!("{text}\n{OK}"), "g.toml").unwrap();
            let e = c.validate("g.toml").unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert!(e.reason.contains("not a loopback address"), "{e}");
        }
    }

    #[test]
    fn the_certificate_must_be_a_gateways() {
        use yrd_identity::{IssueRequest, PeerId};
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path();
        yrd_identity::init_ca(pki, "yrd.mesh").unwrap();
        let config = |id: &PeerId, trust_domain: &str| {
            let files = yrd_identity::issue(pki, &IssueRequest::local_server(id.clone())).unwrap();
            let mut c = GatewayConfig::parse(&OK.replace("insecure = true", ""), "g.toml").unwrap();
            c.trust_domain = trust_domain.to_owned();
            c.tls = Some(TlsPaths::new(
                pki.join(yrd_identity::CA_CERT_FILE),
                files.cert,
                files.key,
            ));
            c
        };
        let own = PeerId::gateway("yrd.mesh", "gw-1").unwrap();
        assert_eq!(
            config(&own, "yrd.mesh").check_certificate("g.toml").unwrap(),
            Some(own.clone())
        );
        let cases = [
            (
                PeerId::app("yrd.mesh", "dash").unwrap(),
                "yrd.mesh",
                "tls.cert",
                "kind app",
            ),
            (
                PeerId::node("yrd.mesh", "320000", "nj-1").unwrap(),
                "yrd.mesh",
                "tls.cert",
                "kind node",
            ),
            (
                own,
                "other.mesh",
                "trust_domain",
                "\"other.mesh\" is not the trust domain",
            ),
        ];
        for (id, td, key, says) in cases {
            let e = config(&id, td).check_certificate("g.toml").unwrap_err();
            assert_eq!(e.key, key, "{id}: {e}");
            assert!(e.reason.contains(says) && e.reason.contains(&id.uri()), "{e}");
        }
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
