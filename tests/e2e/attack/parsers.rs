//! Attack tests: parsers (finding 5). With `max_filter_depth` raised to
//! 2048, a 3 KB filter of 1,500 nested parentheses aborted the gateway
//! with a stack overflow, and config validation accepted any depth. Now the
//! depth has a hard bound (`MAX_FILTER_DEPTH_BOUND`) checked at config
//! load, the parser checks the nesting before each step down, and the
//! walks over the typed tree are iterative or depth-guarded. Against a mesh
//! whose gateway and nodes run at that bound (and at the widest
//! `max_filter_length`, so that the depth guard itself is exercised), a
//! 100,000-deep filter is refused naming its limit, as text and as a typed
//! tree, at the gateway and at a node, and both still answer afterwards.

use std::time::{Duration, Instant};

use prost::Message as _;
use prost::bytes::{Buf, BufMut};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use yrd_gateway::GatewayConfig;
use yrd_node::NodeConfig;
use yrd_proto::mesh::{CompareOp, FilterExpr, NodeQueryRequest, QueryRequest, Value};
use yrd_query::limits::{MAX_FILTER_DEPTH_BOUND, MAX_FILTER_LENGTH_BOUND};

use crate::gateway::{fed_query, req};
use crate::harness::{TestNode, query, violations};
use crate::mesh::{Mesh, MeshOptions};

/// How deep the hostile filters go.
const DEEP: usize = 100_000;
/// Generous: a refusal is one scan of the text on a noisy machine.
const REFUSAL_WITHIN: Duration = Duration::from_secs(5);

fn at_the_bound_node(_: usize, c: &mut NodeConfig) {
    c.limits.max_filter_depth = MAX_FILTER_DEPTH_BOUND;
    c.limits.max_filter_length = MAX_FILTER_LENGTH_BOUND;
}

fn at_the_bound_gateway(c: &mut GatewayConfig) {
    c.limits.max_filter_depth = MAX_FILTER_DEPTH_BOUND;
    c.limits.max_filter_length = MAX_FILTER_LENGTH_BOUND;
}

/// Code, BadRequest field and ErrorInfo limit of a refusal.
fn refusal(err: &tonic::Status) -> (Code, String, String) {
    let field = violations(err).first().map(|v| v.0.clone()).unwrap_or_default();
    let limit = err
        .get_details_error_info()
        .and_then(|i| i.metadata.get("limit").cloned())
        .unwrap_or_default();
    (err.code(), field, limit)
}

fn city(v: &str) -> FilterExpr {
    FilterExpr::compare("city", CompareOp::Eq, Value::string(v))
}

fn nots(n: usize) -> FilterExpr {
    (0..n).fold(city("320100"), |e, _| e.negate())
}

/// A request message whose field `filter_tag` (a FilterExpr) is `n` nested
/// NOTs around a comparison, encoded by hand, so that no tree of that depth
/// is built (or encoded recursively) here: each nested message is its tag
/// and length before its bytes, so the prefixes are written outermost
/// first once the lengths are known.
fn hand_encoded(dataset: &str, filter_tag: u8, n: usize) -> Vec<u8> {
    /// `FilterExpr.not`: field 4, length-delimited.
    const NOT_TAG: u8 = 4 << 3 | 2;
    let inner = city("320100").encode_to_vec();
    let varint_len = |v: usize| prost::encoding::encoded_len_varint(v as u64);
    let mut lengths = vec![inner.len(); n + 1];
    for i in (0..n).rev() {
        lengths[i] = 1 + varint_len(lengths[i + 1]) + lengths[i + 1];
    }
    let mut out = Vec::with_capacity(lengths[0] + dataset.len() + 16);
    // Field 1 of both requests: the dataset.
    out.push(1 << 3 | 2);
    prost::encoding::encode_varint(dataset.len() as u64, &mut out);
    out.extend_from_slice(dataset.as_bytes());
    out.push(filter_tag << 3 | 2);
    prost::encoding::encode_varint(lengths[0] as u64, &mut out);
    for &len in &lengths[1..] {
        out.push(NOT_TAG);
        prost::encoding::encode_varint(len as u64, &mut out);
    }
    out.extend_from_slice(&inner);
    out
}

/// A codec that sends and receives message bytes as they are, for
/// requests no generated client would build.
#[derive(Default)]
struct Raw;

struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// Sends `bytes` as the request of a server-streaming method and returns
/// how the call ended: its status, or `OK` once the stream ends.
async fn raw_call(channel: Channel, path: &'static str, bytes: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(8 << 20);
    grpc.ready().await.unwrap();
    let call = grpc
        .server_streaming(tonic::Request::new(bytes), PathAndQuery::from_static(path), Raw)
        .await;
    match call {
        Err(status) => status,
        Ok(resp) => {
            let mut stream = resp.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return tonic::Status::ok(""),
                    Err(status) => return status,
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_deep_filter_is_refused_and_the_gateway_still_answers() {
    let (mesh, _) = Mesh::start_with(MeshOptions {
        adjust_node: Some(at_the_bound_node),
        adjust_gateway: Some(at_the_bound_gateway),
        ..MeshOptions::default()
    })
    .await;
    let mut app = mesh.app("dashboard").await;
    let normal = || req("status = \"active\"", "", 10);
    let baseline = fed_query(&mut app, normal()).await.unwrap();
    assert!(!baseline.batches.is_empty());

    // The flat chain uses the shortest field of a dataset so that 100,000
    // comparisons fit the widest max_filter_length (1 MiB).
    let chain = vec!["aqi=1"; DEEP].join(" AND ");
    let cases: Vec<(&str, QueryRequest, &str, &str)> = vec![
        (
            "100,000 nested parentheses",
            req(
                &format!("{}city = \"320100\"{}", "(".repeat(DEEP), ")".repeat(DEEP)),
                "",
                10,
            ),
            "filter",
            "max_filter_depth",
        ),
        (
            "100,000 nested NOTs",
            req(&format!("{}city = \"320100\"", "NOT ".repeat(DEEP)), "", 10),
            "filter",
            "max_filter_depth",
        ),
        (
            "100,000 nested -",
            req(&format!("{}city = \"320100\"", "-".repeat(DEEP)), "", 10),
            "filter",
            "max_filter_depth",
        ),
        (
            "an AND chain of 100,000 comparisons",
            QueryRequest {
                dataset: "air_quality".into(),
                filter: chain,
                page_size: 10,
                ..QueryRequest::default()
            },
            "filter",
            "max_filter_terms",
        ),
        (
            "a typed tree of 97 NOTs (as deep as protobuf decodes)",
            QueryRequest {
                filter_expr: Some(nots(97)),
                ..req("", "", 10)
            },
            "filter_expr",
            "max_filter_depth",
        ),
    ];
    for (what, request, field, limit) in cases {
        let bytes = request.encoded_len();
        let started = Instant::now();
        let err = fed_query(&mut app, request).await.unwrap_err();
        let took = started.elapsed();
        println!(
            "{what} ({bytes} bytes): {:?} in {took:?}: {}",
            err.code(),
            err.message().chars().take(100).collect::<String>()
        );
        // Every limit is RESOURCE_EXHAUSTED in this mesh (QueryError's one
        // mapping), named in ErrorInfo and in the BadRequest violation.
        assert_eq!(
            refusal(&err),
            (Code::ResourceExhausted, field.to_owned(), limit.to_owned()),
            "{what}: {err:?}"
        );
        assert!(err.message().contains(limit), "{what}: {err:?}");
        assert!(took < REFUSAL_WITHIN, "{what} took {took:?}");
        // The gateway is still there and answers as before.
        let page = fed_query(&mut app, normal()).await.unwrap();
        assert_eq!(page.summary.rows, baseline.summary.rows, "{what}");
    }

    // A typed tree 100,000 deep cannot be built by a client library; sent as
    // bytes, prost's decoder refuses it at its recursion limit, before any
    // of the mesh's code runs.
    let bytes = hand_encoded("enterprise", 3, DEEP);
    let channel = mesh
        .gateway_channel(&yrd_identity::PeerId::app(crate::mesh::TD, "dashboard").unwrap())
        .await;
    let started = Instant::now();
    let status = raw_call(channel, "/yrd.mesh.v1.Federation/Query", bytes.clone()).await;
    println!(
        "a 100,000-deep typed tree ({} bytes) at the gateway: {:?} in {:?}: {}",
        bytes.len(),
        status.code(),
        started.elapsed(),
        status.message().chars().take(100).collect::<String>()
    );
    assert_ne!(status.code(), Code::Ok, "{status:?}");
    let page = fed_query(&mut app, normal()).await.unwrap();
    assert_eq!(page.summary.rows, baseline.summary.rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_tree_past_its_depth_limit_before_walking_it() {
    // Nodes never parse text: the typed tree is all they get. The deepest
    // one protobuf decodes is refused by the depth check, which runs before
    // any recursive walk (policy, SQL, audit); one at the bound is served.
    let node = TestNode::start_with("320000", |c| at_the_bound_node(0, c))
        .await
        .unwrap();
    let mut client = node.client().await.unwrap();
    let request = |filter: FilterExpr| NodeQueryRequest {
        dataset: "enterprise".into(),
        filter: Some(filter),
        limit: 10,
        ..NodeQueryRequest::default()
    };
    let at_bound = query(&mut client, request(nots(MAX_FILTER_DEPTH_BOUND))).await.unwrap();
    let served = at_bound.region().rows;
    println!("a {MAX_FILTER_DEPTH_BOUND}-deep tree at the node: served, {served} rows");
    for depth in [MAX_FILTER_DEPTH_BOUND + 1, 97] {
        let started = Instant::now();
        let err = query(&mut client, request(nots(depth))).await.unwrap_err();
        println!(
            "a {depth}-deep tree at the node: {:?} in {:?}: {}",
            err.code(),
            started.elapsed(),
            err.message()
        );
        assert_eq!(
            refusal(&err),
            (
                Code::ResourceExhausted,
                "filter_expr".to_owned(),
                "max_filter_depth".to_owned()
            ),
            "{err:?}"
        );
    }
    // Deeper than protobuf decodes: refused by the decoder, and the node
    // still answers.
    let bytes = hand_encoded("enterprise", 2, DEEP);
    let channel = Channel::from_shared(node.url()).unwrap().connect().await.unwrap();
    let status = raw_call(channel, "/yrd.mesh.v1.DataNode/Query", bytes.clone()).await;
    println!(
        "a 100,000-deep typed tree ({} bytes) at the node: {:?}: {}",
        bytes.len(),
        status.code(),
        status.message().chars().take(100).collect::<String>()
    );
    assert_ne!(status.code(), Code::Ok, "{status:?}");
    query(&mut client, request(nots(1))).await.unwrap();
}

#[test]
fn a_depth_over_the_bound_is_refused_at_config_load_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let over = MAX_FILTER_DEPTH_BOUND + 1;
    let gateway = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway,
        format!(
            "insecure = true\n[[regions]]\nid = \"320000\"\nendpoints = [\"http://127.0.0.1:50062\"]\n\
             [limits]\nmax_filter_depth = {over}\n"
        ),
    )
    .unwrap();
    let node = dir.path().join("node.toml");
    std::fs::write(
        &node,
        format!(
            "region = \"320000\"\nlisten = \"127.0.0.1:0\"\ninsecure = true\n[store]\npath = \"{}\"\n\
             [limits]\nmax_filter_depth = 2048\n",
            dir.path().join("node.sqlite").display()
        ),
    )
    .unwrap();
    let gateway_err = GatewayConfig::load(&gateway).unwrap_err();
    let node_err = NodeConfig::load(&node).unwrap_err();
    println!("gateway: {gateway_err}\nnode: {node_err}");
    for (err, value) in [(&gateway_err, over), (&node_err, 2048)] {
        assert_eq!(err.key, "limits.max_filter_depth", "{err}");
        assert!(
            err.reason
                .contains(&format!("{value} is not in 1..={MAX_FILTER_DEPTH_BOUND}")),
            "{err}"
        );
        assert!(err.reason.contains("MAX_FILTER_DEPTH_BOUND"), "{err}");
    }
    assert!(gateway_err.path.ends_with("gateway.toml"), "{gateway_err}");
    // At the bound, both load.
    for (path, text) in [
        (&gateway, std::fs::read_to_string(&gateway).unwrap()),
        (&node, std::fs::read_to_string(&node).unwrap()),
    ] {
        let at = text
            .replace(
                &format!("max_filter_depth = {over}"),
                &format!("max_filter_depth = {MAX_FILTER_DEPTH_BOUND}"),
            )
            .replace(
                "max_filter_depth = 2048",
                &format!("max_filter_depth = {MAX_FILTER_DEPTH_BOUND}"),
            );
        std::fs::write(path, at).unwrap();
    }
    assert_eq!(
        GatewayConfig::load(&gateway).unwrap().limits.max_filter_depth,
        MAX_FILTER_DEPTH_BOUND
    );
    assert_eq!(
        NodeConfig::load(&node).unwrap().limits.max_filter_depth,
        MAX_FILTER_DEPTH_BOUND
    );
}
