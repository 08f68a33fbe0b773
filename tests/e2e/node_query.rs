//! Queries, paging, aggregates, catalog and errors against one region node.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use tonic::Code;
use yrd_proto::datasets::enterprise::v1::Enterprise;
use yrd_proto::datasets::environment::v1::AirQualityHourly;
use yrd_proto::mesh::{AggregateFunction, GetCatalogRequest, Metric, NodeQueryRequest, OrderKey, RegionState, value};

use crate::harness::{TestNode, aggregate_request, assert_refused, first_error, query, request};

const JIANGSU: &str = "320000";

#[tokio::test]
async fn catalog_lists_the_five_datasets_with_counts() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let mut client = node.client().await.unwrap();
    let catalog = client.get_catalog(GetCatalogRequest {}).await.unwrap().into_inner();
    assert_eq!(catalog.region, JIANGSU);
    let ids: Vec<&str> = catalog.datasets.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "air_quality",
            "enterprise",
            "hazardous_waste",
            "property_rights",
            "water_quality"
        ]
    );
    let sql = node.sql();
    for d in &catalog.datasets {
        let n: u64 = sql
            .query_row(&format!("SELECT COUNT(*) FROM ds_{}", d.id), [], |r| r.get(0))
            .unwrap();
        assert!(n > 0, "{} is empty", d.id);
        assert_eq!(d.regions.len(), 1);
        assert_eq!(d.regions[0].rows, n, "{}", d.id);
        assert!(d.regions[0].freshness.is_some());
        assert_eq!(d.schema_version, 1);
        assert!(!d.fields.is_empty());
    }
}

#[tokio::test]
async fn filter_and_order_by_return_exactly_the_matching_rows_sorted() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let mut client = node.client().await.unwrap();
    let page = query(
        &mut client,
        request(
            "enterprise",
            "registered_capital > 1000000 AND status = \"active\"",
            "registered_capital desc",
            5000,
        ),
    )
    .await
    .unwrap();
    let rows: Vec<Enterprise> = page.decode();
    let expected: u64 = node
        .sql()
        .query_row(
            "SELECT COUNT(*) FROM ds_enterprise WHERE registered_capital > 1000000 AND status = 'active'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(expected > 0);
    assert_eq!(rows.len() as u64, expected);
    assert_eq!(page.region().rows, expected);
    assert!(!page.summary.more);
    assert_eq!(page.region().state, RegionState::Ok as i32);
    for w in rows.windows(2) {
        assert!(w[0].registered_capital >= w[1].registered_capital);
        if w[0].registered_capital == w[1].registered_capital {
            // In the direction of the last key: the index read backwards.
            assert!(w[0].credit_code > w[1].credit_code, "primary key breaks ties");
        }
    }
    assert!(
        rows.iter()
            .all(|e| e.registered_capital > 1_000_000.0 && e.status == "active" && e.region == JIANGSU)
    );
    // Sort keys travel beside the rows and order them bytewise.
    let keys: Vec<&Vec<u8>> = page.batches.iter().flat_map(|b| b.sort_keys.iter()).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert!(
        page.rows()
            .all(|a| a.type_url == "type.googleapis.com/yrd.datasets.enterprise.v1.Enterprise")
    );
}

#[tokio::test]
async fn or_binds_tighter_than_and_over_the_wire() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let mut client = node.client().await.unwrap();
    let filter = "status = \"active\" AND city = \"320500\" OR city = \"320100\"";
    let rows: Vec<Enterprise> = query(&mut client, request("enterprise", filter, "", 5000))
        .await
        .unwrap()
        .decode();
    let expected: u64 = node
        .sql()
        .query_row(
            "SELECT COUNT(*) FROM ds_enterprise WHERE status = 'active' AND (city = '320500' OR city = '320100')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows.len() as u64, expected);
    assert!(rows.iter().all(|e| e.status == "active"));
}

#[tokio::test]
async fn personal_and_secret_fields_never_leave_without_a_grant() {
    // No subject (insecure mode) is an application without grants: the
    // conditionally shared personal and secret fields are left out
    // entirely. Their default masks under a grant are tested through the
    // mesh (policy.rs), where the application is known.
    let node = TestNode::start(JIANGSU).await.unwrap();
    let mut client = node.client().await.unwrap();
    let rows: Vec<Enterprise> = query(&mut client, request("enterprise", "", "", 50))
        .await
        .unwrap()
        .decode();
    assert_eq!(rows.len(), 50);
    for e in &rows {
        assert!(!e.credit_code.is_empty() && !e.name.is_empty());
        assert_eq!(e.legal_representative, "");
        assert_eq!(e.representative_id_number, "");
        assert_eq!(e.contact_phone, "");
    }
    let err = query(
        &mut client,
        NodeQueryRequest {
            fields: vec!["name".into(), "legal_representative".into()],
            ..request("enterprise", "", "", 5)
        },
    )
    .await
    .expect_err("a named conditional field is refused, not dropped");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("legal_representative"), "{err:?}");
}

#[tokio::test]
async fn paging_returns_every_row_exactly_once() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let mut client = node.client().await.unwrap();
    let total: usize = node
        .sql()
        .query_row("SELECT COUNT(*) FROM ds_enterprise", [], |r| r.get(0))
        .unwrap();
    // Order on fields with many ties, mixed directions: the primary key must
    // make paging stable.
    for order_by in ["", "status, city desc", "established desc", "registered_capital"] {
        let mut seen = HashSet::new();
        let mut resume = Vec::new();
        let mut pages = 0;
        let mut last_key: Option<Vec<u8>> = None;
        loop {
            let mut req = request("enterprise", "", order_by, 37);
            req.resume_key = resume.clone();
            let page = query(&mut client, req).await.unwrap();
            assert!(page.region().rows <= 37);
            for k in page.batches.iter().flat_map(|b| b.sort_keys.iter()) {
                if let Some(prev) = &last_key {
                    assert!(prev < k, "order_by {order_by:?}: keys increase across pages");
                }
                last_key = Some(k.clone());
            }
            for e in page.decode::<Enterprise>() {
                assert!(
                    seen.insert(e.credit_code.clone()),
                    "order_by {order_by:?}: {} twice",
                    e.credit_code
                );
            }
            pages += 1;
            match page.resume_key() {
                Some(key) => resume = key,
                None => break,
            }
        }
        assert_eq!(seen.len(), total, "order_by {order_by:?}");
        assert_eq!(pages, total.div_ceil(37));
    }
}

#[tokio::test]
async fn typed_filters_and_order_keys_are_accepted() {
    use yrd_proto::mesh::{CompareOp, Comparison, FilterExpr, Value, filter_expr};
    let node = TestNode::start(JIANGSU).await.unwrap();
    let mut client = node.client().await.unwrap();
    let expr = FilterExpr {
        kind: Some(filter_expr::Kind::Comparison(Comparison {
            field: "aqi".into(),
            op: CompareOp::Gt as i32,
            value: Some(Value {
                kind: Some(value::Kind::IntValue(100)),
            }),
            prefix: false,
        })),
    };
    let req = NodeQueryRequest {
        dataset: "air_quality".into(),
        filter: Some(expr),
        order_keys: vec![OrderKey {
            field: "observed_at".into(),
            descending: true,
        }],
        fields: vec!["station_code".into(), "observed_at".into(), "aqi".into()],
        limit: 5000,
        ..Default::default()
    };
    let rows: Vec<AirQualityHourly> = query(&mut client, req).await.unwrap().decode();
    let expected: usize = node
        .sql()
        .query_row("SELECT COUNT(*) FROM ds_air_quality WHERE aqi > 100", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows.len(), expected);
    assert!(
        rows.iter().all(|r| r.aqi > 100 && r.station_name.is_empty()),
        "projection drops other fields"
    );
    assert!(
        rows.windows(2)
            .all(|w| w[0].observed_at.unwrap().seconds >= w[1].observed_at.unwrap().seconds)
    );
}

#[tokio::test]
async fn aggregates_match_direct_sql() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let mut client = node.client().await.unwrap();
    let metric = |f: AggregateFunction, field: &str| Metric {
        function: f as i32,
        field: field.into(),
    };
    let resp = client
        .aggregate(aggregate_request(
            "enterprise",
            "status = \"active\"",
            &["city"],
            vec![
                metric(AggregateFunction::Count, ""),
                metric(AggregateFunction::Sum, "registered_capital"),
                metric(AggregateFunction::Avg, "registered_capital"),
                metric(AggregateFunction::Max, "established"),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    let sql = node.sql();
    let mut stmt = sql
        .prepare(
            "SELECT city, COUNT(*), SUM(registered_capital), AVG(registered_capital), MAX(established)
             FROM ds_enterprise WHERE status = 'active' GROUP BY city ORDER BY city",
        )
        .unwrap();
    let expected: Vec<(String, i64, f64, f64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(resp.groups.len(), expected.len());
    assert!(expected.len() > 3);
    for (g, (city, count, sum, avg, max)) in resp.groups.iter().zip(&expected) {
        assert_eq!(g.keys[0].kind, Some(value::Kind::StringValue(city.clone())));
        assert_eq!(
            g.metrics[0].value.as_ref().unwrap().kind,
            Some(value::Kind::IntValue(*count))
        );
        match g.metrics[1].value.as_ref().unwrap().kind {
            Some(value::Kind::DoubleValue(s)) => assert!((s - sum).abs() < 1e-6 * sum.abs().max(1.0)),
            ref other => panic!("sum is {other:?}"),
        }
        match g.metrics[2].value.as_ref().unwrap().kind {
            Some(value::Kind::DoubleValue(a)) => assert!((a - avg).abs() < 1e-6 * avg.abs().max(1.0)),
            ref other => panic!("avg is {other:?}"),
        }
        assert_eq!(g.metrics[2].count as i64, *count, "avg carries its count for merging");
        assert_eq!(
            g.metrics[3].value.as_ref().unwrap().kind,
            Some(value::Kind::DateValue(max.clone()))
        );
    }
    assert_eq!(resp.regions[0].region, JIANGSU);
}

#[tokio::test]
async fn bad_typed_requests_are_refused_with_the_field_named() {
    // Text is parsed at the gateway (see gateway.rs for those cases); a node
    // checks the typed request again against its own schema and limits.
    use yrd_proto::mesh::{CompareOp, Comparison, FilterExpr, Value, filter_expr};
    let node = TestNode::start(JIANGSU).await.unwrap();
    let mut client = node.client().await.unwrap();
    let compare = |field: &str, v: value::Kind| FilterExpr {
        kind: Some(filter_expr::Kind::Comparison(Comparison {
            field: field.into(),
            op: CompareOp::Eq as i32,
            value: Some(Value { kind: Some(v) }),
            prefix: false,
        })),
    };
    let base = || request("enterprise", "", "", 10);
    let cases: Vec<(NodeQueryRequest, Code, &str, &str)> = vec![
        (
            NodeQueryRequest {
                filter: Some(compare("colour", value::Kind::StringValue("red".into()))),
                ..base()
            },
            Code::InvalidArgument,
            "filter_expr",
            "colour",
        ),
        (
            NodeQueryRequest {
                filter: Some(compare("legal_representative", value::Kind::StringValue("x".into()))),
                ..base()
            },
            Code::InvalidArgument,
            "filter_expr",
            "legal_representative",
        ),
        (
            NodeQueryRequest {
                filter: Some(compare("registered_capital", value::Kind::StringValue("lots".into()))),
                ..base()
            },
            Code::InvalidArgument,
            "filter_expr",
            "registered_capital",
        ),
        (
            NodeQueryRequest {
                order_keys: vec![OrderKey {
                    field: "address".into(),
                    descending: false,
                }],
                ..base()
            },
            Code::InvalidArgument,
            "order_keys",
            "address",
        ),
        (
            NodeQueryRequest {
                limit: 100_000,
                ..base()
            },
            Code::ResourceExhausted,
            "limit",
            "max_page_size",
        ),
        (
            NodeQueryRequest {
                dataset: "nonexistent".into(),
                ..base()
            },
            Code::NotFound,
            "dataset",
            "nonexistent",
        ),
        (
            NodeQueryRequest {
                resume_key: b"not-a-key".to_vec(),
                ..base()
            },
            Code::InvalidArgument,
            "resume_key",
            "",
        ),
        (
            NodeQueryRequest {
                fields: vec!["nope".into()],
                ..base()
            },
            Code::InvalidArgument,
            "fields",
            "nope",
        ),
        (
            NodeQueryRequest {
                fields: vec!["name".into(), "name".into()],
                ..base()
            },
            Code::InvalidArgument,
            "fields",
            "name",
        ),
    ];
    for (req, code, field, mention) in cases {
        let shown = format!("{req:?}");
        let err = first_error(client.query(req).await, &shown).await;
        assert_refused(&err, code, field, mention, &shown);
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_frees_its_slot() {
    // One query slot and small batches: if the abandoned query kept its slot
    // (or kept reading), the next query could not start.
    let node = TestNode::start_with(JIANGSU, |c| {
        c.query.max_concurrent = 1;
        c.query.batch_rows = 10;
    })
    .await
    .unwrap();
    let mut client = node.client().await.unwrap();
    let mut stream = client
        .query(request("air_quality", "", "pm25 desc", 5000))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.kind.is_some());
    drop(stream);
    let mut again = node.client().await.unwrap();
    let page = tokio::time::timeout(
        Duration::from_secs(20),
        query(&mut again, request("enterprise", "", "", 5)),
    )
    .await
    .expect("the slot was freed")
    .unwrap();
    assert_eq!(page.region().rows, 5);
}

#[tokio::test]
async fn a_deadline_shorter_than_the_query_ends_it() {
    let node = TestNode::start_with(JIANGSU, |c| c.query.batch_rows = 1).await.unwrap();
    let mut client = node.client().await.unwrap();
    // Mixed directions: no index serves the order, so the store sorts every
    // row before the first leaves, and then streams them one per message.
    let mut req = tonic::Request::new(request("air_quality", "", "pm25 desc, station_code", 5000));
    req.set_timeout(Duration::from_millis(1));
    let started = std::time::Instant::now();
    let result = match client.query(req).await {
        Err(e) => Err(e),
        Ok(resp) => {
            let mut s = resp.into_inner();
            let mut out = Ok(());
            while let Some(m) = s.next().await {
                if let Err(e) = m {
                    out = Err(e);
                    break;
                }
            }
            out
        }
    };
    let err = result.expect_err("a 1 ms deadline cannot stream thousands of rows one per message");
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn health_service_reports_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let node = TestNode::start(JIANGSU).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(node.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "yrd.mesh.v1.DataNode"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status, ServingStatus::Serving as i32, "{service:?}");
    }
}
