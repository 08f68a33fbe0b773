//! The gateway's configuration: one TOML file, `YRD_*` environment
//! overrides, validated at start. Relative paths are relative to the file.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use yrd_identity::TlsPaths;
use yrd_query::Limits;

pub use yrd_server::ConfigError;

/// The gateway's configuration.
#[derive(Debug, Clone, Deserialize)]
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
    /// Identities that may call the gateway (`app`, `app/<name>`, ...).
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
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
}

/// How federated queries run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Deadline when the caller sets none (milliseconds).
    pub default_deadline_ms: u64,
    /// Longest deadline honoured (milliseconds).
    pub max_deadline_ms: u64,
    /// Rows per batch sent to the application.
    pub batch_rows: usize,
    /// Batches buffered per region stream: a slow application slows the
    /// nodes instead of growing the gateway's memory.
    pub region_buffer: usize,
    /// Secret signing page tokens; every replica of the gateway shares it.
    /// When empty, a random one is made (tokens then work on this replica only).
    pub page_token_secret: String,
    /// Page token lifetime (seconds).
    pub page_token_ttl_seconds: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            default_deadline_ms: 10_000,
            max_deadline_ms: 60_000,
            batch_rows: 500,
            region_buffer: 2,
            page_token_secret: String::new(),
            page_token_ttl_seconds: 3600,
        }
    }
}

/// Health checks of region endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between checks of one endpoint (milliseconds).
    pub interval_ms: u64,
    /// Time a check may take (milliseconds).
    pub timeout_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_ms: 2_000,
            timeout_ms: 1_000,
        }
    }
}

impl HealthConfig {
    /// The interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// One region and its node replicas.
#[derive(Debug, Clone, Deserialize)]
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
    vec!["app".into()]
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
            self.query.page_token_secret = v;
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
        if self.query.default_deadline_ms == 0 || self.query.default_deadline_ms > self.query.max_deadline_ms {
            return Err(err(
                "query.default_deadline_ms",
                "must be in 1..=max_deadline_ms".into(),
            ));
        }
        if !self.query.page_token_secret.is_empty() && self.query.page_token_secret.len() < 16 {
            return Err(err("query.page_token_secret", "must be at least 16 bytes long".into()));
        }
        if let Err(e) = yrd_identity::Authorizer::from_rules(&self.trust_domain, &self.allow) {
            return Err(err("allow", e.to_string()));
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
        assert_eq!(c.allow, vec!["app".to_owned()]);
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
}
