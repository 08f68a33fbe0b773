//! The deepest filters the limits allow fit a small stack: the parser at
//! `MAX_FILTER_DEPTH_BOUND` nested parentheses and negations, and every walk
//! over the typed tree (checks, printing, region pruning, fingerprints,
//! protobuf encoding and decoding, clone, drop) at the depths they may see,
//! on a thread with a 2 MiB stack (a tokio worker's). The stack each needs
//! is measured by running it in child processes with smaller stacks
//! (an overflow aborts only the child) and printed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

use prost::Message as _;
use yrd_proto::mesh::{CompareOp, FilterExpr, FilterList, NodeQueryRequest, Value, filter_expr};
use yrd_proto::schema::{DatasetSchema, Registry};
use yrd_query::filter::{MAX_TREE_DEPTH, check_filter, parse_filter, regions_matched, to_text};
use yrd_query::limits::MAX_FILTER_DEPTH_BOUND;
use yrd_query::token::query_fingerprint;
use yrd_query::{CheckedQuery, Limits, QueryError};

/// A tokio worker thread's stack, and a std thread's default.
const WORKER_STACK: usize = 2 << 20;
/// Environment of a child process running one workload.
const PROBE_ENV: &str = "YRD_STACK_PROBE";

fn schema() -> &'static DatasetSchema {
    Registry::standard().unwrap().get("enterprise").unwrap()
}

fn limits(depth: usize) -> Limits {
    Limits {
        max_filter_length: 1 << 20,
        max_filter_depth: depth,
        max_filter_terms: 10_000,
        ..Limits::default()
    }
}

fn city(v: &str) -> FilterExpr {
    FilterExpr::compare("city", CompareOp::Eq, Value::string(v))
}

fn not(e: FilterExpr) -> FilterExpr {
    e.negate()
}

/// `depth` levels alternating AND and OR, each with a comparison beside
/// the next level: the widest frames of every walk.
fn alternating(depth: usize) -> FilterExpr {
    let mut e = city("x");
    for level in 0..depth {
        let l = FilterList {
            exprs: vec![city("y"), e],
        };
        e = FilterExpr {
            kind: Some(if level % 2 == 0 {
                filter_expr::Kind::And(l)
            } else {
                filter_expr::Kind::Or(l)
            }),
        };
    }
    e
}

fn nots(depth: usize) -> FilterExpr {
    (0..depth).fold(city("x"), |e, _| not(e))
}

/// The workloads: each runs everything one kind of deep input reaches.
fn run(work: &str, depth: usize) {
    let s = schema();
    match work {
        // Text: nested parentheses and negations, as the gateway parses them.
        "parse" => {
            let l = limits(depth);
            let half = depth / 2;
            let mixed = format!("{}city = a{}", "(NOT ".repeat(half), ")".repeat(half));
            let parens = format!("{}city = a{}", "(".repeat(depth), ")".repeat(depth));
            let negations = format!("{}city = a", "NOT ".repeat(depth));
            // Each level of parentheses opens an AND beside an OR: the
            // deepest tree the text can give within the depth limit.
            let lists = format!(
                "{}city = a{}",
                "city = b AND (city = c OR (".repeat(depth / 2 - 1),
                "))".repeat(depth / 2 - 1)
            );
            for text in [&mixed, &parens, &negations, &lists] {
                let expr = parse_filter(text, s, &l).unwrap().unwrap();
                assert_eq!(check_filter(&expr, s, &l), Ok(()));
            }
            // One level more is refused before the parser goes down it.
            let over = format!("{}city = a", "NOT ".repeat(depth + 1));
            assert!(matches!(
                parse_filter(&over, s, &l),
                Err(QueryError::Limit {
                    limit: "max_filter_depth",
                    ..
                })
            ));
        }
        // Typed trees at the depth limit: the checks, then every walk the
        // gateway and a node run over a checked tree.
        "walks" => {
            let l = limits(depth);
            for expr in [nots(depth), alternating(depth)] {
                assert_eq!(check_filter(&expr, s, &l), Ok(()));
                assert!(!to_text(&expr).is_empty());
                let _ = regions_matched(&expr, "region");
                let _ = query_fingerprint("enterprise", Some(&expr), &[], &[], &[]);
                let request = NodeQueryRequest {
                    dataset: "enterprise".into(),
                    filter: Some(expr.clone()),
                    ..Default::default()
                };
                let bytes = request.encode_to_vec();
                // Two messages a level (FilterExpr, FilterList): the deepest
                // lists are past what prost decodes, and what it decodes
                // checks as it did at the gateway.
                if let Ok(decoded) = NodeQueryRequest::decode(bytes.as_slice()) {
                    assert!(CheckedQuery::from_node_request(&decoded, Registry::standard().unwrap(), &l).is_ok());
                    assert_eq!(decoded, request);
                }
            }
        }
        // Trees of any depth, as a hostile caller may build them: the
        // checks measure and refuse them without recursing; the one
        // recursive walk here gives up past MAX_TREE_DEPTH.
        "hostile" => {
            let l = limits(MAX_FILTER_DEPTH_BOUND);
            for expr in [nots(depth), alternating(depth)] {
                assert!(matches!(
                    check_filter(&expr, s, &l),
                    Err(QueryError::Limit {
                        limit: "max_filter_depth",
                        ..
                    })
                ));
                assert!(!to_text(&expr).is_empty());
                assert_eq!(regions_matched(&expr, "region"), None);
                assert!(depth > MAX_TREE_DEPTH);
                // A tree this deep cannot come from the wire (see
                // `deepest_filters_fit_a_small_stack`); it is built here,
                // and taken apart without recursion so that the probe
                // measures the walks, not the compiler's drop.
                dismantle(expr);
            }
        }
        // What a node decodes: prost's own recursion limit stops deeper
        // trees, so this is the deepest tree a node ever holds.
        "decode" => {
            let request = NodeQueryRequest {
                dataset: "enterprise".into(),
                filter: Some(nots(depth)),
                ..Default::default()
            };
            let bytes = request.encode_to_vec();
            let decoded = NodeQueryRequest::decode(bytes.as_slice()).unwrap();
            let checked = CheckedQuery::from_node_request(&decoded, Registry::standard().unwrap(), &limits(64));
            match checked {
                Err(QueryError::Limit {
                    limit: "max_filter_depth",
                    ..
                }) => assert!(depth > 64),
                Ok(_) => assert!(depth <= 64),
                Err(other) => panic!("{other:?}"),
            }
            assert_eq!(decoded.clone(), request);
        }
        other => panic!("unknown workload {other}"),
    }
}

/// Frees a tree of any depth without recursing.
fn dismantle(expr: FilterExpr) {
    let mut stack = vec![expr];
    while let Some(mut e) = stack.pop() {
        match e.kind.take() {
            Some(filter_expr::Kind::Not(inner)) => stack.push(*inner),
            Some(filter_expr::Kind::And(l) | filter_expr::Kind::Or(l)) => stack.extend(l.exprs),
            _ => {}
        }
    }
}

/// Runs a workload on a thread with `stack` bytes; `false` if it failed.
fn on_stack(work: &'static str, depth: usize, stack: usize) -> bool {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || run(work, depth))
        .unwrap()
        .join()
        .is_ok()
}

/// Whether a workload completes in a child process on a thread of
/// `stack` bytes (an overflow aborts the child).
fn fits(work: &str, depth: usize, stack: usize) -> bool {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "stack_probe_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, format!("{work}:{depth}:{stack}"))
        .output()
        .unwrap();
    out.status.success()
}

/// The least stack (to 4 KiB) a workload needs, by bisection in child
/// processes, between 16 KiB and `WORKER_STACK`.
fn least_stack(work: &str, depth: usize) -> usize {
    const STEP: usize = 4 << 10;
    let (mut lo, mut hi) = (16 << 10, WORKER_STACK);
    assert!(fits(work, depth, hi), "{work} at depth {depth} does not fit {hi} bytes");
    if fits(work, depth, lo) {
        return lo;
    }
    while hi - lo > STEP {
        let mid = (lo + hi) / 2 / STEP * STEP;
        if fits(work, depth, mid) { hi = mid } else { lo = mid }
    }
    hi
}

/// Run in a child process by [`fits`]: one workload on a thread of the
/// size given in the environment.
#[test]
#[ignore = "run in a child process by deepest_filters_fit_a_small_stack"]
fn stack_probe_child() {
    let spec = std::env::var(PROBE_ENV).expect("run by deepest_filters_fit_a_small_stack");
    let mut parts = spec.split(':');
    let work: &'static str = Box::leak(parts.next().unwrap().to_owned().into_boxed_str());
    let depth: usize = parts.next().unwrap().parse().unwrap();
    let stack: usize = parts.next().unwrap().parse().unwrap();
    assert!(on_stack(work, depth, stack));
}

#[test]
fn deepest_filters_fit_a_small_stack() {
    // Every workload at its deepest, on a worker's stack, in this process.
    let deepest = [
        ("parse", MAX_FILTER_DEPTH_BOUND),
        ("walks", MAX_FILTER_DEPTH_BOUND),
        ("hostile", 100_000),
        ("decode", PROST_MAX_NOTS),
    ];
    for (work, depth) in deepest {
        assert!(on_stack(work, depth, WORKER_STACK), "{work} at depth {depth}");
    }
    // What each needs, and per level: how far the bound is from the end
    // of a 2 MiB stack.
    let profile = if cfg!(debug_assertions) {
        "debug assertions on"
    } else {
        "release"
    };
    println!(
        "stack needed ({profile}; a 2 MiB worker stack holds {} KiB):",
        WORKER_STACK >> 10
    );
    for (work, shallow, deep) in [
        ("parse", 16, MAX_FILTER_DEPTH_BOUND),
        ("walks", 16, MAX_FILTER_DEPTH_BOUND),
        ("decode", 16, PROST_MAX_NOTS),
        ("hostile", 1_000, 100_000),
    ] {
        let (a, b) = (least_stack(work, shallow), least_stack(work, deep));
        let per_level = b.saturating_sub(a) as f64 / (deep - shallow) as f64;
        let levels_in_worker = if per_level > 0.0 {
            format!("{:.0}", (WORKER_STACK - a) as f64 / per_level)
        } else {
            "unbounded".to_owned()
        };
        println!(
            "  {work:8} depth {shallow:>6}: {:>5} KiB  depth {deep:>6}: {:>5} KiB  ≈ {per_level:.0} B/level  \
             (levels a 2 MiB stack would hold: {levels_in_worker})",
            a >> 10,
            b >> 10
        );
        assert!(
            b <= WORKER_STACK / 4,
            "{work} at depth {deep} needs {b} bytes, over a quarter of a worker's stack"
        );
    }
}

/// The deepest NOT chain prost decodes in a `NodeQueryRequest`: its
/// recursion limit is 100 nested messages: the request's filter, each
/// level and the comparison's value one each (checked by `prost_refuses_trees_deeper_than_its_recursion_limit`).
const PROST_MAX_NOTS: usize = 97;

fn encode_nots(n: usize) -> Vec<u8> {
    NodeQueryRequest {
        dataset: "enterprise".into(),
        filter: Some(nots(n)),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn prost_refuses_trees_deeper_than_its_recursion_limit() {
    let deepest = (1..200)
        .take_while(|&n| NodeQueryRequest::decode(encode_nots(n).as_slice()).is_ok())
        .last()
        .unwrap();
    assert_eq!(deepest, PROST_MAX_NOTS, "prost's recursion limit moved");
    let err = NodeQueryRequest::decode(encode_nots(PROST_MAX_NOTS + 1).as_slice()).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    // And a tree far deeper, written by hand (a NOT chain of 100,000 with no
    // tree built): refused by the decoder, with no recursion past its limit.
    let deep = hand_encoded_nots(100_000);
    let err = NodeQueryRequest::decode(deep.as_slice()).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    let shown: String = err.to_string().chars().take(60).collect();
    println!(
        "prost decodes a NOT chain of {PROST_MAX_NOTS} in a NodeQueryRequest, refuses {}; \
         a hand-written 100,000-deep one ({} bytes) refused: {shown}… (recursion limit reached)",
        PROST_MAX_NOTS + 1,
        deep.len()
    );
}

/// The encoding of a `NodeQueryRequest` whose filter is `n` nested NOTs
/// around a comparison, written without building the tree: a nested
/// message is its tag and length before its bytes, with nothing after, so
/// the prefixes can be written outermost first once the lengths are known.
pub fn hand_encoded_nots(n: usize) -> Vec<u8> {
    let tags = filter_tags();
    let inner = city("x").encode_to_vec();
    // lengths[i]: the length of the FilterExpr at level i (0 outermost).
    let mut lengths = vec![0usize; n + 1];
    lengths[n] = inner.len();
    for i in (0..n).rev() {
        let child = lengths[i + 1];
        lengths[i] = tags.not.len() + varint_len(child as u64) + child;
    }
    let mut out = Vec::new();
    out.extend_from_slice(&tags.dataset);
    out.extend_from_slice(&tags.filter);
    put_varint(&mut out, lengths[0] as u64);
    for &len in &lengths[1..] {
        out.extend_from_slice(&tags.not);
        put_varint(&mut out, len as u64);
    }
    out.extend_from_slice(&inner);
    out
}

/// The field tags of the hand encoding, taken from prost's own output so
/// they follow the .proto.
struct Tags {
    /// `dataset: "enterprise"`, whole.
    dataset: Vec<u8>,
    /// The tag of `NodeQueryRequest.filter`.
    filter: Vec<u8>,
    /// The tag of `FilterExpr.not`.
    not: Vec<u8>,
}

fn filter_tags() -> Tags {
    let dataset = NodeQueryRequest {
        dataset: "enterprise".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let comparison_len = city("x").encoded_len();
    // A request with only a filter: tag, length, the comparison's bytes.
    let with_filter = NodeQueryRequest {
        filter: Some(city("x")),
        ..Default::default()
    }
    .encode_to_vec();
    let filter = with_filter[..with_filter.len() - comparison_len - varint_len(comparison_len as u64)].to_vec();
    let negated = not(city("x")).encode_to_vec();
    let not_tag = negated[..negated.len() - comparison_len - varint_len(comparison_len as u64)].to_vec();
    Tags {
        dataset,
        filter,
        not: not_tag,
    }
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, out);
}
