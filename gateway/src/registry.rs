//! The regions the gateway federates: per region, calls balanced across
//! its healthy node replicas (tower's p2c balancer over one connection per
//! replica, fed by health checks over the standard gRPC health service on
//! a second connection of its own, so that a probe never waits behind the
//! calls for one of the node's stream slots).
//!
//! Every connection to a node over TLS is made by [`NodeConnector`]: TCP,
//! then mutual TLS with a verifier that accepts only a certificate carrying a
//! node identity *of that region* in the gateway's trust domain
//! (`yrd_identity::expecting_client_config`), so a misconfigured or
//! redirected endpoint — another region's node, the gateway itself — is
//! refused at the handshake and reported, with the reason, as unhealthy.
//!
//! Flow control: each call's receive window is [`NODE_STREAM_WINDOW`] and
//! the connection's is the largest HTTP/2 allows, so calls whose
//! application stopped reading hold at most their own window of unread
//! rows and can never exhaust the connection's window for every other
//! call (finding 1 of issue 10).
//!
//! Cancelled calls: the gateway cancels many calls on purpose (a region
//! still streaming when the page filled, an application gone), and the
//! node's frames already on the wire for such a call arrive after the
//! reset. h2 ignores them while it remembers the reset stream
//! ([`RESET_STREAMS_REMEMBERED`] of them, for a second); a frame for a
//! stream it has forgotten is answered with a reset that h2 counts, for
//! the connection's whole life, against a limit that closes the
//! connection with `ENHANCE_YOUR_CALM` (1024 by default). On a connection
//! meant to live for days under thousands of calls a second that limit
//! is always reached, so the calls' connection remembers enough resets
//! and has no lifetime limit. Its peer is a node whose identity the
//! handshake checked (in insecure mode, for development, whatever
//! listens at the endpoint): the most a misbehaving one can do with late
//! frames is make the gateway answer each with a small reset frame, as it
//! could with any frame it sends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::retry::budget::TpsBudget;
use yrd_identity::{ExpectedPeer, PeerRefusals};
use yrd_proto::mesh::data_node_client::DataNodeClient;

use crate::assertion::Asserter;
use crate::config::{GatewayConfig, HealthConfig, RegionConfig};
use crate::error::GatewayError;

/// Requests waiting for a ready endpoint of one region.
const BALANCE_BUFFER: usize = 1024;
/// Longest a connection attempt to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Each call's HTTP/2 receive window from a node: the most unread rows a
/// call can hold at the gateway (enough for a full-speed stream at tens
/// of milliseconds of round trip).
pub const NODE_STREAM_WINDOW: u32 = 1 << 20;
/// The connection-level receive window from a node: the HTTP/2 maximum,
/// so that it never binds before the calls' own windows do. What the
/// connection can hold unread is at most the node's
/// `connections.max_concurrent_streams` times [`NODE_STREAM_WINDOW`].
pub const NODE_CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// How many reset streams the calls' connection remembers (for h2's one
/// second), so that the node's frames still in flight for them are
/// ignored: more than the calls it cancels in a second at full load
/// (about 700 a second at saturation on the benchmark machine). At most
/// this many h2 stream records of a few hundred bytes each, 2–3 MiB per
/// node connection when full.
pub const RESET_STREAMS_REMEMBERED: usize = 8192;

/// The balancer behind a [`RegionChannel`].
type Balanced = Buffer<http::Request<Body>, BoxFuture<'static, Result<http::Response<Body>, tower::BoxError>>>;

/// A region's calls, balanced across its healthy endpoints (cheap to
/// clone: every clone feeds the same balancer).
#[derive(Clone)]
pub struct RegionChannel(Balanced);

/// Why a call could not be sent to a region: the balancer's or the
/// connection's error, kept as this error's source (so tonic still finds
/// an HTTP/2 or transport error in the chain).
#[derive(Debug)]
pub struct ChannelError(tower::BoxError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

impl RegionChannel {
    /// A balancer over `replicas` (senders of endpoint changes) —
    /// the registry's health checks feed it.
    fn balancing(replicas: mpsc::Receiver<Result<Change<usize, Replica>, Infallible>>) -> Self {
        let balance =
            Balance::new(ReceiverStream::new(replicas)).map_future(|f| -> BoxFuture<'static, _> { Box::pin(f) });
        RegionChannel(Buffer::new(balance, BALANCE_BUFFER))
    }

    /// Calls balanced across `channels`, all of them always in: for tests
    /// and tools that manage their connections themselves. Must be called
    /// within a Tokio runtime.
    pub fn fixed(channels: Vec<Channel>) -> Self {
        let (changes, replicas) = mpsc::channel(channels.len().max(1));
        for (i, channel) in channels.into_iter().enumerate() {
            // The channel has room for every change: this cannot fail.
            let _ = changes.try_send(Ok(Change::Insert(
                i,
                PendingRequests::new(channel, CompleteOnResponse::default()),
            )));
        }
        // The sender is dropped: the balancer keeps what it was given.
        Self::balancing(replicas)
    }
}

impl tower::Service<http::Request<Body>> for RegionChannel {
    type Response = http::Response<Body>;
    type Error = ChannelError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, ChannelError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        self.0.poll_ready(cx).map_err(ChannelError)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let call = self.0.call(req);
        Box::pin(async move { call.await.map_err(ChannelError) })
    }
}

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
    /// Why the node's certificate was last refused, if it was.
    refusals: PeerRefusals,
}

impl RegionEndpoint {
    /// An endpoint at `address`, not checked yet (so not healthy).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            health: Mutex::new(EndpointHealth::default()),
            refusals: PeerRefusals::default(),
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
pub struct Region {
    /// GB/T 2260 code.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Node replicas.
    pub endpoints: Vec<Arc<RegionEndpoint>>,
    channel: RegionChannel,
    /// Shared by every call to the region, so that retries stay a small
    /// share of its calls however many queries run at once.
    retry_budget: Arc<TpsBudget>,
    /// Signs the on-behalf-of assertion of each call.
    asserter: Arc<Asserter>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A DataNode client whose calls carry the current trace context.
pub type NodeClient = DataNodeClient<InterceptedService<RegionChannel, yrd_telemetry::TraceInjector>>;

/// Largest message accepted from a node.
const MAX_NODE_MESSAGE: usize = 64 * 1024 * 1024;

impl Region {
    /// A region over `channel` (fed with its healthy `endpoints` by the
    /// caller), with the default retry budget.
    pub fn new(id: String, name: String, endpoints: Vec<Arc<RegionEndpoint>>, channel: RegionChannel) -> Self {
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
                start_region(rc, tls, &config.trust_domain, &config.health)?.with_asserter(asserter.clone()),
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

/// How to reach one node endpoint: over plaintext (`insecure`) or over
/// mutual TLS made by a [`NodeConnector`] that accepts only the expected
/// node (tonic's own TLS checks only the host name). Each
/// [`connect`](Self::connect) is a connection of its own, with the
/// windows of this module's documentation.
struct NodeDialer {
    endpoint: Endpoint,
    connector: Option<NodeConnector>,
}

impl NodeDialer {
    /// The dialer of `address`; with `tls`, what its verifier refuses is
    /// recorded in `refusals`.
    fn new(
        address: &str,
        server_name: &str,
        tls: Option<(&yrd_identity::TlsMaterial, ExpectedPeer)>,
        refusals: &mut PeerRefusals,
    ) -> Result<Self, GatewayError> {
        let bad = |e: &dyn std::fmt::Display| GatewayError::Config(format!("endpoint {address}: {e}"));
        let uri: Uri = address.parse().map_err(|e| bad(&e))?;
        let authority = dial_address(&uri).ok_or_else(|| bad(&"no host"))?;
        let target = match tls {
            // tonic dials `http://` itself; the connector brings TLS.
            Some(_) => format!("http://{authority}"),
            None => address.to_owned(),
        };
        let endpoint = Endpoint::from_shared(target)
            .map_err(|e| bad(&e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(NODE_STREAM_WINDOW)
            .initial_connection_window_size(NODE_CONNECTION_WINDOW);
        let Some((material, expected)) = tls else {
            return Ok(Self {
                endpoint,
                connector: None,
            });
        };
        let (config, checked) = yrd_identity::expecting_client_config(material, expected).map_err(|e| bad(&e))?;
        *refusals = checked;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| bad(&format!("server name {server_name}: {e}")))?;
        Ok(Self {
            endpoint,
            connector: Some(NodeConnector {
                tls: TlsConnector::from(config),
                name,
                authority,
            }),
        })
    }

    /// The connection for calls: it remembers [`RESET_STREAMS_REMEMBERED`]
    /// reset streams and has no lifetime limit on the resets it sends
    /// (see the module documentation).
    fn calls(&self) -> Channel {
        self.connect(
            self.endpoint
                .clone()
                .http2_max_concurrent_reset_streams(RESET_STREAMS_REMEMBERED)
                .http2_max_local_error_reset_streams(None),
        )
    }

    /// The connection for health probes, with h2's reset limits (the
    /// windows are the calls'): it cancels nothing but a probe that timed
    /// out.
    fn probes(&self) -> Channel {
        self.connect(self.endpoint.clone())
    }

    fn connect(&self, endpoint: Endpoint) -> Channel {
        match &self.connector {
            Some(connector) => endpoint.connect_with_connector_lazy(connector.clone()),
            None => endpoint.connect_lazy(),
        }
    }
}

/// The `host:port` to dial for `uri`: the scheme's port (443 for
/// `https`, 80 for `http`) when the URI names none, as tonic would dial.
fn dial_address(uri: &Uri) -> Option<String> {
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
    Some(format!("{host}:{port}"))
}

/// Dials a node: TCP with `TCP_NODELAY` to the endpoint's host and port
/// (whatever URI the channel asks for), then mutual TLS whose verifier
/// accepts only the region's node identity.
#[derive(Clone)]
struct NodeConnector {
    tls: TlsConnector,
    name: ServerName<'static>,
    authority: String,
}

impl tower::Service<Uri> for NodeConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (tls, name, authority) = (self.tls.clone(), self.name.clone(), self.authority.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

fn start_region(
    rc: &RegionConfig,
    tls: Option<&yrd_identity::TlsMaterial>,
    trust_domain: &str,
    health: &HealthConfig,
) -> Result<Region, GatewayError> {
    let (changes, discovered) =
        mpsc::channel::<Result<Change<usize, Replica>, Infallible>>(2 * rc.endpoints.len().max(1));
    let channel = RegionChannel::balancing(discovered);
    let mut endpoints = Vec::new();
    for (i, address) in rc.endpoints.iter().enumerate() {
        let server_name = rc.tls_server_name.clone().unwrap_or_else(|| host_of(address));
        let mut state = RegionEndpoint::new(address.clone());
        let dialer = NodeDialer::new(
            address,
            &server_name,
            tls.map(|m| (m, ExpectedPeer::node(trust_domain, &rc.id))),
            &mut state.refusals,
        )?;
        let state = Arc::new(state);
        tokio::spawn(check_health(
            i,
            dialer.calls(),
            dialer.probes(),
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

/// One replica's connection as the balancer sees it: its load is the
/// number of calls in flight on it.
type Replica = PendingRequests<Channel, CompleteOnResponse>;

fn host_of(address: &str) -> String {
    let rest = address.split("://").nth(1).unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_owned();
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_owned()
}

/// Checks one endpoint forever over `probes`; inserts its calls'
/// connection `replica` into the region's balancer when it turns healthy
/// (and `replica` answers a check too)
/// and removes it when it stops serving: at once when the node says so or
/// cannot be reached (refused connection or certificate), after
/// `unhealthy_after` checks in a row without an answer otherwise.
async fn check_health(
    key: usize,
    replica: Channel,
    probes: Channel,
    state: Arc<RegionEndpoint>,
    changes: mpsc::Sender<Result<Change<usize, Replica>, Infallible>>,
    config: HealthConfig,
    region: String,
) {
    // The probe's connection is dialled and verified exactly as the
    // calls' is (the node's identity included), but never queues behind
    // them for one of the node's stream slots.
    let mut client = HealthClient::new(probes);
    let mut in_balancer = false;
    // Checks missed in a row (no answer within the timeout), and what the
    // last check judged (the balancer may not have taken that in yet).
    let mut missed = 0u32;
    let mut judged_healthy = false;
    // The last failure logged, so that a lasting one is logged once.
    let mut logged: Option<String> = None;
    loop {
        state.refusals.clear();
        let started = Instant::now();
        let outcome = check_once(&mut client, &config, &state).await;
        let answered = !matches!(outcome, Check::Missed(_));
        let (healthy, error) = match outcome {
            Check::Serving => (true, None),
            Check::Failed(error) => (false, Some(error)),
            // A busy node may miss a check: an endpoint judged healthy
            // stays so until it has missed `unhealthy_after` in a row.
            Check::Missed(error) => {
                missed = missed.saturating_add(1);
                if judged_healthy && missed < config.unhealthy_after {
                    (
                        true,
                        Some(format!(
                            "{error} ({missed} of {} checks missed)",
                            config.unhealthy_after
                        )),
                    )
                } else {
                    (false, Some(error))
                }
            }
        };
        // Before an endpoint goes in, its calls' connection answers a
        // check too: it is dialled now rather than by the first call, and
        // a certificate refused on it shows here.
        let (healthy, error) = if healthy && !in_balancer {
            match check_once(&mut HealthClient::new(replica.clone()), &config, &state).await {
                Check::Serving => (true, error),
                Check::Failed(e) | Check::Missed(e) => (false, Some(format!("the calls' connection: {e}"))),
            }
        } else {
            (healthy, error)
        };
        if answered {
            missed = 0; // an answer, whatever it said
        } else if healthy {
            tracing::debug!(region = %region, endpoint = %state.address, missed, "region endpoint missed a health check");
        }
        judged_healthy = healthy;
        state.record(EndpointHealth {
            healthy,
            latency: Some(started.elapsed()),
            error: error.clone(),
            checked_at: Some(Instant::now()),
        });
        if healthy != in_balancer {
            let change = if healthy {
                Change::Insert(
                    key,
                    PendingRequests::new(replica.clone(), CompleteOnResponse::default()),
                )
            } else {
                Change::Remove(key)
            };
            // Never wait for the balancer: it reads its changes only when
            // a call polls it, and nothing calls a region with no healthy
            // endpoint. A change that does not fit now is sent again at
            // the next check (the probe goes on recording health).
            match changes.try_send(Ok(change)) {
                Ok(()) => {
                    in_balancer = healthy;
                    if healthy {
                        tracing::info!(region = %region, endpoint = %state.address, "region endpoint healthy");
                    }
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return, // the gateway stopped
            }
        }
        if healthy {
            logged = None;
        } else if error != logged {
            tracing::warn!(region = %region, endpoint = %state.address, error = error.as_deref().unwrap_or(""), "region endpoint unhealthy");
            logged = error;
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(config.interval).await;
    }
}

/// What one health check found.
enum Check {
    /// The node is serving.
    Serving,
    /// The node answered otherwise, or could not be reached: why.
    Failed(String),
    /// No answer within the timeout.
    Missed(String),
}

/// One health check over `client`'s connection within `config.timeout`;
/// a certificate the verifier refused is named from `state`'s refusals.
async fn check_once(client: &mut HealthClient<Channel>, config: &HealthConfig, state: &RegionEndpoint) -> Check {
    let check = client.check(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(config.timeout, check).await {
        Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => Check::Serving,
        Ok(Ok(resp)) => Check::Failed(format!("health status {}", resp.get_ref().status)),
        Ok(Err(status)) => Check::Failed(match state.refusals.last() {
            Some(reason) => format!("refused the node: {reason}"),
            None => format!("{}: {}", status.code(), status.message()),
        }),
        Err(_) => Check::Missed(format!("no answer within {:?}", config.timeout)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endpoint_without_a_port_is_dialled_on_its_schemes_port() {
        let dial = |u: &str| super::dial_address(&u.parse().unwrap());
        assert_eq!(dial("https://node.example").as_deref(), Some("node.example:443"));
        assert_eq!(dial("http://node.example/").as_deref(), Some("node.example:80"));
        assert_eq!(dial("https://127.0.0.1:50071").as_deref(), Some("127.0.0.1:50071"));
        assert_eq!(dial("https://[::1]:9").as_deref(), Some("[::1]:9"));
        assert_eq!(dial("https://[::1]").as_deref(), Some("[::1]:443"));
    }

    use super::host_of;

    #[test]
    fn hosts_are_read_from_endpoints() {
        assert_eq!(host_of("https://127.0.0.1:50062"), "127.0.0.1");
        assert_eq!(host_of("https://node.js.example:443/"), "node.js.example");
        assert_eq!(host_of("https://[::1]:50062"), "::1");
        assert_eq!(host_of("https://localhost"), "localhost");
    }
}
