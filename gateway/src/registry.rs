//! The regions the gateway federates: per region, a channel balanced
//! across its healthy node replicas (tower's p2c balancer, fed by health
//! checks over the standard gRPC health service).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::retry::budget::TpsBudget;
use yrd_proto::mesh::data_node_client::DataNodeClient;

use crate::assertion::Asserter;
use crate::config::{GatewayConfig, HealthConfig, RegionConfig};
use crate::error::GatewayError;

/// Requests waiting for a ready endpoint of one region.
const BALANCE_BUFFER: usize = 1024;
/// Longest a connection attempt to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The health of one node endpoint, as last checked.
#[derive(Debug, Clone, Default)]
pub struct EndpointHealth {
    /// Whether the last check passed.
    pub healthy: bool,
    /// How long the last check took.
    pub latency: Option<Duration>,
    /// Why the last check failed.
    pub error: Option<String>,
    /// When the endpoint was last checked.
    pub checked_at: Option<Instant>,
}

/// One node replica of a region.
#[derive(Debug)]
pub struct RegionEndpoint {
    /// Its address.
    pub address: String,
    health: Mutex<EndpointHealth>,
}

impl RegionEndpoint {
    /// An endpoint at `address`, not checked yet (so not healthy).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            health: Mutex::new(EndpointHealth::default()),
        }
    }

    /// Records the outcome of a health check.
    pub fn record(&self, health: EndpointHealth) {
        if let Ok(mut h) = self.health.lock() {
            *h = health;
        }
    }

    /// Its health as last checked.
    pub fn health(&self) -> EndpointHealth {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

/// A region: its id, name, endpoints and balanced channel.
#[derive(Debug)]
pub struct Region {
    /// GB/T 2260 code.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Node replicas.
    pub endpoints: Vec<Arc<RegionEndpoint>>,
    channel: Channel,
    /// Shared by every call to the region, so that retries stay a small
    /// share of its calls however many queries run at once.
    retry_budget: Arc<TpsBudget>,
    /// Signs the on-behalf-of assertion of each call.
    asserter: Arc<Asserter>,
}

/// A DataNode client whose calls carry the current trace context.
pub type NodeClient = DataNodeClient<InterceptedService<Channel, yrd_telemetry::TraceInjector>>;

/// Largest message accepted from a node.
const MAX_NODE_MESSAGE: usize = 64 * 1024 * 1024;

impl Region {
    /// A region over `channel` (fed with its healthy `endpoints` by the
    /// caller), with the default retry budget.
    pub fn new(id: String, name: String, endpoints: Vec<Arc<RegionEndpoint>>, channel: Channel) -> Self {
        Self {
            id,
            name,
            endpoints,
            channel,
            retry_budget: Arc::new(crate::client::retry_budget(
                crate::client::RETRY_MIN_PER_SEC,
                crate::client::RETRY_PERCENT,
            )),
            asserter: Arc::new(Asserter::default()),
        }
    }

    /// The same region with calls asserted by `asserter` (the default
    /// sends unsigned assertions, which only insecure nodes accept).
    #[must_use]
    pub fn with_asserter(mut self, asserter: Arc<Asserter>) -> Self {
        self.asserter = asserter;
        self
    }

    /// What the region's calls are asserted with.
    pub fn asserter(&self) -> Arc<Asserter> {
        self.asserter.clone()
    }

    /// The same region with another retry budget (see
    /// [`client::retry_budget`](crate::client::retry_budget)).
    #[must_use]
    pub fn with_retry_budget(mut self, budget: TpsBudget) -> Self {
        self.retry_budget = Arc::new(budget);
        self
    }

    /// The budget the region's retries draw on.
    pub fn retry_budget(&self) -> Arc<TpsBudget> {
        self.retry_budget.clone()
    }

    /// A channel balanced across the region's healthy endpoints.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A client of the region, balanced across its healthy endpoints.
    pub fn client(&self) -> NodeClient {
        DataNodeClient::with_interceptor(self.channel.clone(), yrd_telemetry::injector())
            .max_decoding_message_size(MAX_NODE_MESSAGE)
    }

    /// The region's endpoints, comma-separated (for spans and logs).
    pub fn addresses(&self) -> String {
        self.endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether at least one endpoint passed its last check.
    pub fn healthy(&self) -> bool {
        self.endpoints.iter().any(|e| e.health().healthy)
    }

    /// Why the region is unhealthy, from its endpoints' last errors.
    pub fn unhealthy_reason(&self) -> String {
        let reasons: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| {
                let h = e.health();
                match (h.checked_at, h.error) {
                    (None, _) => format!("{}: not checked yet", e.address),
                    (_, Some(err)) => format!("{}: {err}", e.address),
                    (_, None) => format!("{}: not serving", e.address),
                }
            })
            .collect();
        format!("no healthy node ({})", reasons.join("; "))
    }
}

/// All regions, in configuration order.
#[derive(Debug, Clone)]
pub struct Registry {
    regions: Arc<Vec<Arc<Region>>>,
}

impl Registry {
    /// Builds every region's balanced channel and starts its health checks
    /// (they stop when the returned handles are dropped with the runtime);
    /// every region's calls are asserted with `asserter`.
    pub fn start(
        config: &GatewayConfig,
        tls: Option<&yrd_identity::TlsMaterial>,
        asserter: Arc<Asserter>,
    ) -> Result<Self, GatewayError> {
        let mut regions = Vec::new();
        for rc in &config.regions {
            regions.push(Arc::new(
                start_region(rc, tls, &config.health)?.with_asserter(asserter.clone()),
            ));
        }
        Ok(Self {
            regions: Arc::new(regions),
        })
    }

    /// The regions.
    pub fn regions(&self) -> &[Arc<Region>] {
        &self.regions
    }

    /// The region with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Region>> {
        self.regions.iter().find(|r| r.id == id)
    }

    /// Waits until every region has a healthy endpoint, or the timeout passes.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.regions.iter().all(|r| r.healthy()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

fn endpoint(address: &str, tls: Option<ClientTlsConfig>) -> Result<Endpoint, GatewayError> {
    let bad = |e: &dyn std::fmt::Display| GatewayError::Config(format!("endpoint {address}: {e}"));
    let mut ep = Endpoint::from_shared(address.to_owned())
        .map_err(|e| bad(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).map_err(|e| bad(&e))?;
    }
    Ok(ep)
}

fn start_region(
    rc: &RegionConfig,
    tls: Option<&yrd_identity::TlsMaterial>,
    health: &HealthConfig,
) -> Result<Region, GatewayError> {
    let (channel, changes) = Channel::balance_channel::<usize>(BALANCE_BUFFER);
    let mut endpoints = Vec::new();
    for (i, address) in rc.endpoints.iter().enumerate() {
        let client_tls = match tls {
            Some(m) => {
                let host = rc.tls_server_name.clone().unwrap_or_else(|| host_of(address));
                Some(yrd_identity::tonic_client_tls(m, &host))
            }
            None => None,
        };
        let ep = endpoint(address, client_tls)?;
        let state = Arc::new(RegionEndpoint::new(address.clone()));
        tokio::spawn(check_health(
            i,
            ep,
            state.clone(),
            changes.clone(),
            health.clone(),
            rc.id.clone(),
        ));
        endpoints.push(state);
    }
    let name = if rc.name.is_empty() {
        rc.id.clone()
    } else {
        rc.name.clone()
    };
    Ok(Region::new(rc.id.clone(), name, endpoints, channel))
}

fn host_of(address: &str) -> String {
    let rest = address.split("://").nth(1).unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_owned();
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_owned()
}

/// Checks one endpoint forever; inserts it into the region's balancer when
/// it turns healthy and removes it when it stops answering.
async fn check_health(
    key: usize,
    ep: Endpoint,
    state: Arc<RegionEndpoint>,
    changes: mpsc::Sender<Change<usize, Endpoint>>,
    config: HealthConfig,
    region: String,
) {
    let probe = ep.clone().timeout(config.timeout).connect_lazy();
    let mut client = HealthClient::new(probe);
    let mut in_balancer = false;
    loop {
        let started = Instant::now();
        let result = tokio::time::timeout(
            config.timeout,
            client.check(HealthCheckRequest { service: String::new() }),
        )
        .await;
        let (healthy, error) = match result {
            Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => (true, None),
            Ok(Ok(resp)) => (false, Some(format!("health status {}", resp.get_ref().status))),
            Ok(Err(status)) => (false, Some(format!("{}: {}", status.code(), status.message()))),
            Err(_) => (false, Some(format!("no answer within {:?}", config.timeout))),
        };
        state.record(EndpointHealth {
            healthy,
            latency: Some(started.elapsed()),
            error: error.clone(),
            checked_at: Some(Instant::now()),
        });
        if healthy != in_balancer {
            let change = if healthy {
                Change::Insert(key, ep.clone())
            } else {
                Change::Remove(key)
            };
            if changes.send(change).await.is_err() {
                return; // the region's channel is gone: the gateway stopped
            }
            in_balancer = healthy;
            if healthy {
                tracing::info!(region = %region, endpoint = %state.address, "region endpoint healthy");
            } else {
                tracing::warn!(region = %region, endpoint = %state.address, error = error.as_deref().unwrap_or(""), "region endpoint unhealthy");
            }
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(config.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_are_read_from_endpoints() {
        assert_eq!(host_of("https://127.0.0.1:50062"), "127.0.0.1");
        assert_eq!(host_of("https://node.js.example:443/"), "node.js.example");
        assert_eq!(host_of("https://[::1]:50062"), "::1");
        assert_eq!(host_of("https://localhost"), "localhost");
    }
}
