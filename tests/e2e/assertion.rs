//! Verified on-behalf-of: the gateway's signed assertions, checked by a real
//! node over mutual TLS, and each refusal on its own.
//!
//! The fixture is one region node (320000) whose policy records whom each
//! call was for, and a gateway `gw` in front of it. The node's allow rules
//! admit gateways, applications and operators (so that the node itself,
//! not the TLS handshake or the allow list, is what refuses them), and it
//! trusts only `gateway/gw` to act for others.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;
use yrd_gateway::assertion;
use yrd_gateway::client::Acting;
use yrd_identity::{PeerId, Signer, TlsMaterial, TlsPaths};
use yrd_node::policy::file::PolicyFile;
use yrd_node::policy::{Access, Decision, NodePolicy, Policy};
use yrd_node::principal::Principal;
use yrd_node::{NodeConfig, obo};
use yrd_proto::mesh::data_node_client::DataNodeClient;
use yrd_proto::mesh::{AggregateRequest, NodeQueryRequest, OnBehalfOf, QueryRequest, SignedAssertion};
use yrd_server::{DeadlinePolicy, ServeOptions, Serving};

use crate::gateway::fed_query;
use crate::harness::{assert_refused, first_error, generate_store, request};
use crate::mesh::{Mesh, TD, issue};

const REGION: &str = "320000";
const QUERY: &str = "/yrd.mesh.v1.DataNode/Query";
const AGGREGATE: &str = "/yrd.mesh.v1.DataNode/Aggregate";

/// The node's policy with no file (unconditionally shared data only),
/// remembering every principal it was asked about.
#[derive(Debug)]
struct Recording {
    seen: Mutex<Vec<Principal>>,
    inner: NodePolicy,
}

impl Default for Recording {
    fn default() -> Self {
        let schemas = yrd_proto::schema::Registry::standard().unwrap();
        Self {
            seen: Mutex::default(),
            inner: NodePolicy::new(schemas, PolicyFile::default(), None, 5).unwrap(),
        }
    }
}

impl Policy for Recording {
    fn authorize(&self, who: &Principal, access: &Access<'_>) -> Decision {
        self.seen.lock().unwrap().push(who.clone());
        self.inner.authorize(who, access)
    }

    fn admit<'a>(
        &'a self,
        who: &'a Principal,
        decision: &'a Decision,
    ) -> BoxFuture<'a, Result<(), yrd_node::NodeError>> {
        self.inner.admit(who, decision)
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    node_addr: std::net::SocketAddr,
    _node: Serving,
    gateway: yrd_gateway::RunningGateway,
    gateway_tls: TlsPaths,
    node_tls: TlsPaths,
    policy: Arc<Recording>,
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        yrd_identity::init_ca(&pki, TD).unwrap();
        let db = dir.path().join("node.sqlite");
        generate_store(db.clone(), REGION.to_owned()).await;
        let node_tls = issue(&pki, &PeerId::node(TD, REGION, "n1").unwrap(), true);
        let mut config = NodeConfig::parse(
            &format!(
                "region = \"{REGION}\"\nlisten = \"127.0.0.1:0\"\nallow = [\"gateway\", \"app\", \"operator\"]\n\
                 [store]\npath = \"{}\"\n[on_behalf_of]\ntrusted_gateways = [\"gateway/gw\"]\n",
                db.display()
            ),
            "test",
        )
        .unwrap();
        config.tls = Some(node_tls.clone());
        config.validate("test").unwrap();
        // The node as `yrd_node::start` builds it, with a recording policy.
        let material = node_tls.load().unwrap();
        let server_tls = yrd_identity::server_config(&material).unwrap();
        let authorizer = Arc::new(yrd_identity::Authorizer::from_rules(TD, &config.allow).unwrap());
        let verifier = Arc::new(obo::Verifier::new(&config).unwrap());
        let store = yrd_node::server::open_store(&config).await.unwrap();
        let policy = Arc::new(Recording::default());
        let service = yrd_node::service::NodeService::with_policy(config.clone(), store, policy.clone());
        let routes = yrd_node::server::routes(service, Some(authorizer), verifier)
            .await
            .unwrap();
        let options = ServeOptions::new(DeadlinePolicy::at_most(Duration::from_secs(30)));
        let node = yrd_server::serve(routes, config.listen, Some(server_tls), options)
            .await
            .unwrap();

        let gateway_tls = issue(&pki, &PeerId::gateway(TD, "gw").unwrap(), true);
        let mut gw = yrd_gateway::GatewayConfig::parse(
            &format!(
                "listen = \"127.0.0.1:0\"\n[health]\ninterval = \"100ms\"\n[[regions]]\nid = \"{REGION}\"\n\
                 endpoints = [\"https://{}\"]\ntls_server_name = \"localhost\"\n",
                node.addr
            ),
            "test",
        )
        .unwrap();
        gw.tls = Some(gateway_tls.clone());
        gw.validate("test").unwrap();
        let gateway = yrd_gateway::start(gw).await.unwrap();
        assert!(gateway.registry.wait_healthy(Duration::from_secs(20)).await);
        Self {
            dir,
            node_addr: node.addr,
            _node: node,
            gateway,
            gateway_tls,
            node_tls,
            policy,
        }
    }

    fn pki(&self) -> std::path::PathBuf {
        self.dir.path().join("pki")
    }

    /// Certificate files for `id`, issued now.
    fn issue(&self, id: &PeerId) -> TlsPaths {
        issue(&self.pki(), id, false)
    }

    /// A DataNode client presenting `paths`' certificate.
    async fn node_client(&self, paths: &TlsPaths) -> DataNodeClient<Channel> {
        let m = material(paths);
        let ch = Mesh::channel(
            &format!("https://{}", self.node_addr),
            yrd_identity::tonic_client_tls(&m, "localhost"),
        )
        .await
        .unwrap();
        DataNodeClient::new(ch)
    }

    /// The gateway's own client to the node: its certificate and its key.
    async fn as_gateway(&self) -> (DataNodeClient<Channel>, Signer) {
        (self.node_client(&self.gateway_tls).await, signer(&self.gateway_tls))
    }

    /// A Federation client for `id`.
    async fn federation(&self, id: &PeerId) -> yrd_proto::mesh::federation_client::FederationClient<Channel> {
        let m = material(&self.issue(id));
        let ch = Mesh::channel(
            &format!("https://{}", self.gateway.addr),
            yrd_identity::tonic_client_tls(&m, "localhost"),
        )
        .await
        .unwrap();
        yrd_proto::mesh::federation_client::FederationClient::new(ch)
    }

    fn last_principal(&self) -> Principal {
        self.policy
            .seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the policy was asked")
    }

    fn asked(&self) -> usize {
        self.policy.seen.lock().unwrap().len()
    }
}

fn material(paths: &TlsPaths) -> TlsMaterial {
    TlsMaterial::load(&paths.ca, &paths.cert, &paths.key).unwrap()
}

fn signer(paths: &TlsPaths) -> Signer {
    Signer::from_material(&material(paths)).unwrap()
}

fn app() -> PeerId {
    PeerId::app(TD, "dashboard").unwrap()
}

/// A small query, as the gateway would send it.
fn node_query() -> NodeQueryRequest {
    request("enterprise", "", "", 5)
}

/// Valid claims for a Query of `msg` by the application, issued now.
fn claims_for(msg: &NodeQueryRequest) -> OnBehalfOf {
    assertion::claims(
        &app().uri(),
        "licence check",
        REGION,
        QUERY,
        msg,
        Duration::from_secs(10),
    )
    .unwrap()
}

/// `msg` as a request carrying `signed` (none: no assertion at all).
fn with(msg: NodeQueryRequest, signed: Option<&SignedAssertion>) -> Request<NodeQueryRequest> {
    let mut req = Request::new(msg);
    if let Some(s) = signed {
        req.metadata_mut().insert_bin(assertion::HEADER, assertion::encode(s));
    }
    req
}

/// A change to an assertion's claims.
type Alter<'a> = Box<dyn Fn(&mut OnBehalfOf) + 'a>;

/// Asserts that `err` is `code` with the ErrorInfo `reason`.
fn assert_reason(err: &tonic::Status, code: Code, reason: &str, shown: &str) {
    assert_eq!(err.code(), code, "{shown}: {err:?}");
    let info = err.get_details_error_info();
    assert_eq!(
        info.as_ref().map(|i| i.reason.as_str()),
        Some(reason),
        "{shown}: {err:?}"
    );
}

/// Sends Query `req` and returns its refusal.
async fn refused(client: &mut DataNodeClient<Channel>, req: Request<NodeQueryRequest>, shown: &str) -> tonic::Status {
    first_error(client.query(req).await, shown).await
}

#[tokio::test]
async fn both_sides_name_the_same_metadata_entry() {
    assert_eq!(assertion::HEADER, obo::HEADER);
    assert_eq!(assertion::NONCE_LEN, obo::NONCE_LEN);
    assert!(assertion::MAX_TTL <= NodeConfig::new(REGION).on_behalf_of.max_ttl);
}

#[tokio::test]
async fn a_query_through_the_gateway_reaches_the_node_for_the_application_and_its_purpose() {
    let fx = Fixture::start().await;
    let mut client = fx.federation(&app()).await;
    let page = fed_query(
        &mut client,
        QueryRequest {
            dataset: "enterprise".into(),
            page_size: 5,
            purpose: "  cross-provincial licence check ".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.summary.rows, 5);
    let who = fx.last_principal();
    assert_eq!(
        who.peer.as_ref().map(PeerId::uri).as_deref(),
        Some("spiffe://yrd.mesh/gateway/gw")
    );
    assert_eq!(who.subject, Some(app()));
    assert_eq!(who.purpose.as_deref(), Some("cross-provincial licence check"));

    // Aggregates are asserted the same way.
    client
        .aggregate(AggregateRequest {
            dataset: "enterprise".into(),
            group_by: vec!["region".into()],
            purpose: "statistics".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let who = fx.last_principal();
    assert_eq!((who.subject, who.purpose.as_deref()), (Some(app()), Some("statistics")));
}

#[tokio::test]
async fn a_hand_built_assertion_is_accepted_once() {
    let fx = Fixture::start().await;
    let (mut node, key) = fx.as_gateway().await;
    let msg = node_query();
    let signed = assertion::sign(Some(&key), &claims_for(&msg)).unwrap();
    let page = query_with(&mut node, with(msg.clone(), Some(&signed))).await.unwrap();
    assert_eq!(page.batches.iter().map(|b| b.rows.len()).sum::<usize>(), 5);
    let who = fx.last_principal();
    assert_eq!(who.subject, Some(app()));
    assert_eq!(who.purpose.as_deref(), Some("licence check"));

    // The same metadata again: a replay.
    let asked = fx.asked();
    let err = refused(&mut node, with(msg.clone(), Some(&signed)), "replayed").await;
    assert_reason(&err, Code::PermissionDenied, "ASSERTION_REPLAYED", "replayed");
    assert_eq!(fx.asked(), asked, "a refused call never reaches the policy");

    // A new assertion for the same request is a new call.
    let fresh = assertion::sign(Some(&key), &claims_for(&msg)).unwrap();
    query_with(&mut node, with(msg, Some(&fresh))).await.unwrap();
}

#[tokio::test]
async fn a_call_without_a_signed_assertion_is_unauthenticated() {
    let fx = Fixture::start().await;
    let (mut node, _) = fx.as_gateway().await;
    let msg = node_query();
    let err = refused(&mut node, with(msg.clone(), None), "missing").await;
    assert_reason(&err, Code::Unauthenticated, "ASSERTION_MISSING", "missing");

    let unsigned = assertion::sign(None, &claims_for(&msg)).unwrap();
    let err = refused(&mut node, with(msg.clone(), Some(&unsigned)), "unsigned").await;
    assert_reason(&err, Code::Unauthenticated, "ASSERTION_UNSIGNED", "unsigned");

    // Bytes that are no SignedAssertion at all.
    let mut req = with(msg, None);
    req.metadata_mut().insert_bin(
        assertion::HEADER,
        tonic::metadata::BinaryMetadataValue::from_bytes(b"\xff\xff not an assertion"),
    );
    let err = refused(&mut node, req, "garbage").await;
    assert_reason(&err, Code::PermissionDenied, "ASSERTION_INVALID", "garbage");
    assert_eq!(fx.asked(), 0);
}

#[tokio::test]
async fn a_signature_by_any_other_key_is_invalid() {
    let fx = Fixture::start().await;
    let (mut node, _) = fx.as_gateway().await;
    let msg = node_query();
    let other_gateway = fx.issue(&PeerId::gateway(TD, "gw-other").unwrap());
    let an_app = fx.issue(&app());
    for (shown, key) in [
        ("another gateway's key", signer(&other_gateway)),
        ("the node's key", signer(&fx.node_tls)),
        ("an application's key", signer(&an_app)),
    ] {
        let signed = assertion::sign(Some(&key), &claims_for(&msg)).unwrap();
        let err = refused(&mut node, with(msg.clone(), Some(&signed)), shown).await;
        assert_reason(&err, Code::PermissionDenied, "ASSERTION_INVALID", shown);
        assert!(err.message().contains("signature"), "{shown}: {err:?}");
    }
    // Claims altered after signing.
    let key = signer(&fx.gateway_tls);
    let mut signed = assertion::sign(Some(&key), &claims_for(&msg)).unwrap();
    let mut c = OnBehalfOf::decode(signed.assertion.as_slice()).unwrap();
    c.subject = PeerId::app(TD, "someone-else").unwrap().uri();
    signed.assertion = c.encode_to_vec();
    let err = refused(&mut node, with(msg, Some(&signed)), "altered claims").await;
    assert_reason(&err, Code::PermissionDenied, "ASSERTION_INVALID", "altered claims");
    assert_eq!(fx.asked(), 0);
}

#[tokio::test]
async fn an_assertion_is_valid_only_for_its_moment() {
    let fx = Fixture::start().await;
    let (mut node, key) = fx.as_gateway().await;
    let msg = node_query();
    let now = assertion::now_ms();
    for (shown, issued, expires, reason) in [
        ("expired", now - 20_000, now - 15_000, "ASSERTION_EXPIRED"),
        ("issued in the future", now + 10_000, now + 20_000, "ASSERTION_EXPIRED"),
        (
            "valid for longer than max_ttl",
            now - 1_000,
            now + 60_000,
            "ASSERTION_INVALID",
        ),
        ("expiring before it is issued", now, now - 1, "ASSERTION_INVALID"),
    ] {
        let mut c = claims_for(&msg);
        (c.issued_at_ms, c.expires_at_ms) = (issued, expires);
        let signed = assertion::sign(Some(&key), &c).unwrap();
        let err = refused(&mut node, with(msg.clone(), Some(&signed)), shown).await;
        assert_reason(&err, Code::PermissionDenied, reason, shown);
    }
    // Within the tolerated clock skew (2s) either way: accepted.
    let mut c = claims_for(&msg);
    (c.issued_at_ms, c.expires_at_ms) = (now + 1_000, now + 5_000);
    let signed = assertion::sign(Some(&key), &c).unwrap();
    query_with(&mut node, with(msg.clone(), Some(&signed))).await.unwrap();
    let mut c = claims_for(&msg);
    (c.issued_at_ms, c.expires_at_ms) = (now - 6_000, now - 1_000);
    let signed = assertion::sign(Some(&key), &c).unwrap();
    query_with(&mut node, with(msg, Some(&signed))).await.unwrap();
}

#[tokio::test]
async fn an_assertion_is_bound_to_its_request_method_region_and_trace() {
    let fx = Fixture::start().await;
    let (mut node, key) = fx.as_gateway().await;
    let msg = node_query();
    let other_msg = request("enterprise", "", "", 6);
    let cases: [(&str, Alter<'_>); 5] = [
        (
            "another request",
            Box::new(|c| c.request_sha256 = assertion::request_sha256(&other_msg)),
        ),
        ("another method", Box::new(|c| c.method = AGGREGATE.into())),
        ("another region", Box::new(|c| c.audience = "330000".into())),
        (
            "another trace",
            Box::new(|c| c.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ),
        ("a hash of nothing", Box::new(|c| c.request_sha256.clear())),
    ];
    for (shown, alter) in cases {
        let mut c = claims_for(&msg);
        alter(&mut c);
        let signed = assertion::sign(Some(&key), &c).unwrap();
        let err = refused(&mut node, with(msg.clone(), Some(&signed)), shown).await;
        assert_reason(&err, Code::PermissionDenied, "ASSERTION_MISMATCH", shown);
    }
    // The assertion of one call does not carry over to another message.
    let signed = assertion::sign(Some(&key), &claims_for(&msg)).unwrap();
    let err = refused(
        &mut node,
        with(other_msg.clone(), Some(&signed)),
        "sent with another message",
    )
    .await;
    assert_reason(
        &err,
        Code::PermissionDenied,
        "ASSERTION_MISMATCH",
        "sent with another message",
    );
    assert_eq!(fx.asked(), 0);
}

#[tokio::test]
async fn only_a_trusted_gateway_may_act_for_others() {
    let fx = Fixture::start().await;
    let msg = node_query();
    // A gateway the allow rules admit, but not on_behalf_of.trusted_gateways,
    // signing with its own key over its own connection.
    let other = fx.issue(&PeerId::gateway(TD, "gw2").unwrap());
    let mut node = fx.node_client(&other).await;
    let signed = assertion::sign(Some(&signer(&other)), &claims_for(&msg)).unwrap();
    let err = refused(&mut node, with(msg.clone(), Some(&signed)), "untrusted gateway").await;
    assert_reason(&err, Code::PermissionDenied, "GATEWAY_NOT_TRUSTED", "untrusted gateway");
    assert!(err.message().contains("gateway/gw2"), "{err:?}");

    // An application calling the node directly, with an assertion it signed
    // itself: not via a gateway.
    let direct = fx.issue(&PeerId::app(TD, "sneaky").unwrap());
    let mut node = fx.node_client(&direct).await;
    let signed = assertion::sign(Some(&signer(&direct)), &claims_for(&msg)).unwrap();
    let err = refused(&mut node, with(msg.clone(), Some(&signed)), "direct app").await;
    assert_reason(&err, Code::PermissionDenied, "NOT_VIA_GATEWAY", "direct app");
    // ... nor with none.
    let err = refused(&mut node, with(msg.clone(), None), "direct app, no assertion").await;
    assert_reason(
        &err,
        Code::PermissionDenied,
        "NOT_VIA_GATEWAY",
        "direct app, no assertion",
    );

    // An operator calling the node directly: the same.
    let operator = fx.issue(&PeerId::operator(TD, REGION, "ops").unwrap());
    let mut node = fx.node_client(&operator).await;
    let err = refused(&mut node, with(msg, None), "direct operator").await;
    assert_reason(&err, Code::PermissionDenied, "NOT_VIA_GATEWAY", "direct operator");
    assert_eq!(fx.asked(), 0);

    // The catalog is metadata and needs no assertion.
    let mut gw = fx.node_client(&fx.gateway_tls).await;
    gw.get_catalog(yrd_proto::mesh::GetCatalogRequest {}).await.unwrap();
}

#[tokio::test]
async fn operators_and_auditors_do_not_read_data() {
    let fx = Fixture::start().await;
    let operator = PeerId::operator(TD, REGION, "ops").unwrap();
    let auditor = PeerId::auditor(TD, REGION, "audit").unwrap();
    for id in [operator, auditor] {
        let mut client = fx.federation(&id).await;
        let shown = id.uri();
        // The gateway admits them (they have other services to use) ...
        client
            .list_regions(yrd_proto::mesh::ListRegionsRequest {})
            .await
            .unwrap();
        // ... but not to data.
        let q = QueryRequest {
            dataset: "enterprise".into(),
            page_size: 5,
            ..Default::default()
        };
        let err = first_error(client.query(q.clone()).await, &shown).await;
        assert_reason(&err, Code::PermissionDenied, "NOT_AN_APPLICATION", &shown);
        assert!(err.message().contains("do not read data"), "{err:?}");
        let err = client.explain(q).await.unwrap_err();
        assert_reason(&err, Code::PermissionDenied, "NOT_AN_APPLICATION", &shown);
        let err = client
            .aggregate(AggregateRequest {
                dataset: "enterprise".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_reason(&err, Code::PermissionDenied, "NOT_AN_APPLICATION", &shown);
    }
    assert_eq!(fx.asked(), 0, "no region was called");
}

#[tokio::test]
async fn a_purpose_is_a_short_line() {
    let fx = Fixture::start().await;
    let mut client = fx.federation(&app()).await;
    for (purpose, mention) in [
        ("x".repeat(201), "MAX_PURPOSE_CHARS = 200"),
        ("licence\ncheck".to_owned(), "control character"),
    ] {
        let q = QueryRequest {
            dataset: "enterprise".into(),
            purpose,
            ..Default::default()
        };
        let err = first_error(client.query(q).await, mention).await;
        assert_refused(&err, Code::InvalidArgument, "purpose", mention, mention);
    }
    assert_eq!(fx.asked(), 0);
}

#[tokio::test]
async fn the_gateway_signs_each_attempt_afresh() {
    // Two calls with the same request and acting identity must not be
    // replays of each other: the node accepts both.
    let fx = Fixture::start().await;
    let mut client = fx.federation(&app()).await;
    let q = QueryRequest {
        dataset: "enterprise".into(),
        page_size: 3,
        ..Default::default()
    };
    for _ in 0..3 {
        fed_query(&mut client, q.clone()).await.unwrap();
    }
    assert_eq!(fx.asked(), 3);
}

/// Runs Query `req` to its end.
async fn query_with(
    client: &mut DataNodeClient<Channel>,
    req: Request<NodeQueryRequest>,
) -> Result<crate::harness::Page, tonic::Status> {
    let mut stream = client.query(req).await?.into_inner();
    let mut batches = Vec::new();
    while let Some(msg) = futures::StreamExt::next(&mut stream).await {
        if let Some(yrd_proto::mesh::node_query_response::Kind::Batch(b)) = msg?.kind {
            batches.push(b);
        }
    }
    Ok(crate::harness::Page {
        batches,
        summary: Default::default(),
    })
}

/// Measures signing and verifying one assertion (`--nocapture` prints the
/// figures; nothing is asserted about them).
#[tokio::test]
async fn cost_of_signing_and_verifying() {
    let fx = Fixture::start().await;
    let key = signer(&fx.gateway_tls);
    let msg = node_query();
    let acting = Acting {
        subject: Some(app()),
        purpose: "licence check".into(),
    };
    const N: u32 = 2000;
    let started = Instant::now();
    let mut signed = Vec::with_capacity(N as usize);
    for _ in 0..N {
        signed.push(assertion::build(Some(&key), &acting, REGION, QUERY, &msg, Duration::from_secs(10)).unwrap());
    }
    let sign_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(N);
    let started = Instant::now();
    for s in &signed {
        yrd_identity::verify_signature(key.cert_der(), &s.assertion, &s.signature).unwrap();
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(N);
    let started = Instant::now();
    for _ in 0..N {
        assertion::request_sha256(&msg);
    }
    let hash_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(N);
    // A whole call through the node's verifier, against a real query.
    let (mut node, _) = fx.as_gateway().await;
    let started = Instant::now();
    const CALLS: u32 = 50;
    for _ in 0..CALLS {
        let s = assertion::sign(Some(&key), &claims_for(&msg)).unwrap();
        query_with(&mut node, with(msg.clone(), Some(&s))).await.unwrap();
    }
    let call_ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(CALLS);
    println!(
        "assertion: build+sign {sign_us:.1} µs, verify signature {verify_us:.1} µs, hash of the request {hash_us:.2} µs, \
         {} bytes; a signed direct query of 5 rows {call_ms:.2} ms",
        signed[0].encoded_len()
    );
}
