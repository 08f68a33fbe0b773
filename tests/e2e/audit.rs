//! The gateway's audit trail over the TLS mesh: every data request it
//! forwards (and every refusal) is on its record, a query's record names
//! each region's own record of the same request, and the gateway's log
//! verifies with signed checkpoints after a graceful stop.

use std::path::Path;

use tonic::Code;
use yrd_audit::{Decision, Record};
use yrd_identity::PeerId;
use yrd_proto::mesh::{AggregateRequest, QueryRequest};

use crate::mesh::{Mesh, REGIONS, TD};

const PURPOSE: &str = "audit linkage test";

/// Every record of the log in `dir`, in order (blocking).
fn records(dir: &Path) -> Vec<Record> {
    let report = yrd_audit::verify(&[dir.to_path_buf()], None).unwrap();
    report
        .files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| yrd_audit::parse_line(l).unwrap().1)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The record whose id (`<log>-<seq>`) is `id`.
fn by_id<'a>(records: &'a [Record], id: &str) -> &'a Record {
    let seq: u64 = id.rsplit('-').next().unwrap().parse().unwrap();
    records.iter().find(|r| r.seq == seq).unwrap()
}

#[tokio::test]
async fn the_gateways_records_name_every_regions_record_and_verify() {
    let mesh = Mesh::start().await;
    let mut fed = mesh.app("dash").await;

    // A query every region answers in full (one district: a few rows).
    let page = crate::gateway::fed_query(
        &mut fed,
        QueryRequest {
            dataset: "enterprise".into(),
            fields: vec!["credit_code".into(), "name".into()],
            filter: "district = \"320102\"".into(),
            page_size: 1000,
            purpose: PURPOSE.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let shown: usize = page.batches.iter().map(|b| b.rows.len()).sum();
    assert!(shown > 0, "Jiangsu has rows in 320102");
    let query_id = page.summary.audit_id.clone();
    assert!(query_id.starts_with("gateway-gw-"), "{query_id:?}");
    let region_ids: Vec<(String, String)> = page
        .summary
        .regions
        .iter()
        .map(|r| (r.region.clone(), r.audit_id.clone()))
        .collect();
    assert_eq!(region_ids.len(), REGIONS.len());
    assert!(region_ids.iter().all(|(_, id)| !id.is_empty()), "{region_ids:?}");

    // A page cut short: every region still had rows when it filled, and
    // each names its record of the request.
    for order_by in ["", "registered_capital desc"] {
        let cut = crate::gateway::fed_query(
            &mut fed,
            QueryRequest {
                dataset: "enterprise".into(),
                page_size: 5,
                order_by: order_by.into(),
                purpose: PURPOSE.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(!cut.summary.next_page_token.is_empty());
        // A merge reads every region before the first row goes out; a
        // forwarded page that filled waits (briefly) for each region's
        // answer to the call, which names the record.
        let named: Vec<&str> = cut.summary.regions.iter().map(|r| r.audit_id.as_str()).collect();
        assert!(
            named.iter().all(|id| id.starts_with("node-")),
            "{order_by:?}: {named:?}"
        );
    }

    let agg = fed
        .aggregate(AggregateRequest {
            dataset: "enterprise".into(),
            group_by: vec!["region".into()],
            purpose: PURPOSE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(agg.audit_id.starts_with("gateway-gw-"), "{:?}", agg.audit_id);
    let explain = fed
        .explain(QueryRequest {
            dataset: "enterprise".into(),
            purpose: PURPOSE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!explain.audit_id.is_empty());

    // Refusals are recorded too, with only the names that passed.
    let bad = fed
        .query(QueryRequest {
            dataset: "enterprise".into(),
            fields: vec!["name".into(), "no_such_field".into()],
            purpose: PURPOSE.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut operator = mesh.client_as(&PeerId::operator(TD, REGIONS[1], "wang").unwrap()).await;
    let refused = operator
        .query(QueryRequest {
            dataset: "enterprise".into(),
            purpose: PURPOSE.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // A graceful stop closes the gateway's log with a signed checkpoint.
    let Mesh {
        gateway, dir, nodes, ..
    } = mesh;
    gateway.shutdown().await.unwrap();
    for node in nodes.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
    let root = dir.path().to_path_buf();
    let ca = std::fs::read(root.join("pki").join(yrd_identity::CA_CERT_FILE)).unwrap();
    let gateway_dir = root.join("audit-gateway");
    let (report, gateway_log, node_logs) = tokio::task::spawn_blocking(move || {
        let report = yrd_audit::verify(std::slice::from_ref(&gateway_dir), Some(&ca)).unwrap();
        let nodes: Vec<(String, Vec<Record>)> = REGIONS
            .iter()
            .map(|r| (r.to_string(), records(&root.join(format!("audit-{r}")))))
            .collect();
        (report, records(&gateway_dir), nodes)
    })
    .await
    .unwrap();
    assert!(report.ca_checked && report.signed_checkpoints >= 1, "{report}");
    assert_eq!(report.chain_only, 0, "the last record is a signed checkpoint: {report}");
    assert_eq!(report.signers, ["spiffe://yrd.mesh/gateway/gw"], "{report}");

    let query = by_id(&gateway_log, &query_id);
    assert_eq!(query.entry.kind, "query");
    assert_eq!(query.entry.decision, Decision::Allow);
    assert_eq!(query.entry.caller.as_deref(), Some("spiffe://yrd.mesh/app/dash"));
    assert_eq!(
        query.entry.subject, query.entry.caller,
        "the same --app filter as at a node"
    );
    assert_eq!(query.entry.purpose.as_deref(), Some(PURPOSE));
    assert_eq!(query.entry.dataset.as_deref(), Some("enterprise"));
    assert_eq!(query.entry.fields, ["credit_code", "name"]);
    assert_eq!(query.entry.filter.as_deref(), Some("district = \"320102\""));
    let end = gateway_log
        .iter()
        .find(|r| r.entry.kind == "query.end" && r.entry.request.as_deref() == Some(query_id.as_str()))
        .unwrap();
    assert_eq!(end.entry.rows, Some(shown as u64));
    let detail = end.entry.detail.as_ref().unwrap();
    for (region, id) in &region_ids {
        let named = detail["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["region"] == region.as_str())
            .unwrap();
        assert_eq!(named["audit_id"], id.as_str(), "{region}");
        // The region's record is the same request: same application,
        // purpose and trace.
        let log = &node_logs.iter().find(|(r, _)| r == region).unwrap().1;
        let at_node = by_id(log, id);
        assert_eq!(at_node.entry.kind, "query", "{region}");
        assert_eq!(at_node.entry.subject, query.entry.caller, "{region}");
        assert_eq!(at_node.entry.purpose.as_deref(), Some(PURPOSE), "{region}");
        if query.entry.trace_id.is_some() {
            assert_eq!(at_node.entry.trace_id, query.entry.trace_id, "{region}");
        }
    }

    let aggregate = by_id(&gateway_log, &agg.audit_id);
    assert_eq!(aggregate.entry.kind, "aggregate");
    assert_eq!(aggregate.entry.fields, ["region"]);
    let aggregate_end = gateway_log
        .iter()
        .find(|r| r.entry.kind == "aggregate.end" && r.entry.request.as_deref() == Some(agg.audit_id.as_str()))
        .unwrap();
    assert_eq!(aggregate_end.entry.rows, Some(agg.groups.len() as u64));
    for r in &agg.regions {
        let named = &aggregate_end.entry.detail.as_ref().unwrap()["regions"];
        let named = named
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["region"] == r.region.as_str())
            .unwrap();
        assert_eq!(named["audit_id"], r.audit_id.as_str());
        let log = &node_logs.iter().find(|(id, _)| *id == r.region).unwrap().1;
        assert_eq!(by_id(log, &r.audit_id).entry.kind, "aggregate");
        let node_end = log
            .iter()
            .find(|x| x.entry.kind == "aggregate.end" && x.entry.request.as_deref() == Some(r.audit_id.as_str()))
            .unwrap();
        assert_eq!(node_end.entry.rows, Some(1), "one group per region");
    }
    let explained = by_id(&gateway_log, &explain.audit_id);
    assert_eq!(explained.entry.kind, "explain");
    assert_eq!(
        explained.entry.detail.as_ref().unwrap()["regions"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let failed = gateway_log
        .iter()
        .find(|r| r.entry.kind == "query" && r.entry.decision == Decision::Fail)
        .unwrap();
    assert_eq!(
        failed.entry.reason.as_deref(),
        Some("INVALID_QUERY"),
        "the ErrorInfo reason"
    );
    assert_eq!(
        failed.entry.fields,
        ["name"],
        "an unknown name is not copied into the log"
    );
    let denied = gateway_log
        .iter()
        .find(|r| r.entry.kind == "query" && r.entry.decision == Decision::Deny)
        .unwrap();
    assert_eq!(denied.entry.reason.as_deref(), Some("NOT_AN_APPLICATION"));
    assert_eq!(
        denied.entry.caller.as_deref(),
        Some("spiffe://yrd.mesh/region/320000/operator/wang")
    );
}
