//! A request is checked once, at the gateway, before any region is called:
//! what is the caller's fault is refused with the right code and the field
//! or limit named, in either consistency mode — never answered `OK` with
//! every region marked `INVALID_ARGUMENT`.

use tonic::Code;
use yrd_proto::mesh::{AggregateFunction, AggregateRequest, Consistency, Metric, QueryRequest};

use crate::gateway::{fed_query, req};
use crate::harness::{assert_refused, violations};
use crate::mesh::{Mesh, MeshOptions};

/// The error code, BadRequest field and ErrorInfo limit of a refusal.
fn refusal(err: &tonic::Status) -> (Code, String, String) {
    use tonic_types::StatusExt;
    let v = violations(err);
    assert_eq!(v.len(), 1, "{err:?}");
    let limit = err
        .get_details_error_info()
        .and_then(|i| i.metadata.get("limit").cloned())
        .unwrap_or_default();
    (err.code(), v[0].0.clone(), limit)
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named() {
    let mesh = Mesh::start().await;
    let mut app = mesh.app("dashboard").await;
    // Over the default max_filter_length (4096 bytes).
    let long = "name = \"x\" OR ".repeat(300);
    let cases: Vec<(QueryRequest, Code, &str, &str)> = vec![
        (
            req("registered_capital > ", "", 10),
            Code::InvalidArgument,
            "filter",
            "syntax",
        ),
        (req("(status = \"active\"", "", 10), Code::InvalidArgument, "filter", ""),
        (
            req("colour = \"red\"", "", 10),
            Code::InvalidArgument,
            "filter",
            "colour",
        ),
        (
            req("legal_representative = \"x\"", "", 10),
            Code::InvalidArgument,
            "filter",
            "legal_representative",
        ),
        (
            req("registered_capital > \"lots\"", "", 10),
            Code::InvalidArgument,
            "filter",
            "registered_capital",
        ),
        (req("", "address", 10), Code::InvalidArgument, "order_by", "address"),
        (req("", "", -1), Code::InvalidArgument, "page_size", ""),
        (
            req("", "", 100_000),
            Code::ResourceExhausted,
            "page_size",
            "max_page_size",
        ),
        (
            req(&long, "", 10),
            Code::ResourceExhausted,
            "filter",
            "max_filter_length",
        ),
        (
            QueryRequest {
                dataset: "nonexistent".into(),
                ..req("", "", 10)
            },
            Code::NotFound,
            "dataset",
            "nonexistent",
        ),
        (
            QueryRequest {
                page_token: "not-a-token".into(),
                ..req("", "", 10)
            },
            Code::InvalidArgument,
            "page_token",
            "",
        ),
        (
            QueryRequest {
                fields: vec!["nope".into()],
                ..req("", "", 10)
            },
            Code::InvalidArgument,
            "fields",
            "nope",
        ),
    ];
    for (r, code, field, mention) in cases {
        let shown = format!("{:?}", (&r.filter, &r.order_by, r.page_size, &r.fields));
        let err = fed_query(&mut app, r)
            .await
            .err()
            .unwrap_or_else(|| panic!("{shown}: accepted"));
        assert_refused(&err, code, field, mention, &shown);
    }
}

#[tokio::test]
async fn a_field_named_twice_is_refused_in_both_modes() {
    let mesh = Mesh::start().await;
    let mut app = mesh.app("dashboard").await;
    for consistency in [Consistency::BestEffort, Consistency::AllRegions] {
        let r = QueryRequest {
            fields: vec!["name".into(), "name".into()],
            consistency: consistency as i32,
            ..req("", "", 10)
        };
        let err = fed_query(&mut app, r).await.expect_err("refused");
        let (code, field, _) = refusal(&err);
        assert_eq!((code, field.as_str()), (Code::InvalidArgument, "fields"), "{err:?}");
        assert!(err.message().contains("name"), "{err:?}");
    }
}

#[tokio::test]
async fn too_many_groups_is_resource_exhausted_in_both_modes() {
    let (mesh, _) = Mesh::start_with(MeshOptions {
        max_groups: Some(50),
        ..MeshOptions::default()
    })
    .await;
    let mut app = mesh.app("dashboard").await;
    for consistency in [Consistency::BestEffort, Consistency::AllRegions] {
        let err = app
            .aggregate(AggregateRequest {
                dataset: "enterprise".into(),
                group_by: vec!["credit_code".into()],
                metrics: vec![Metric {
                    function: AggregateFunction::Count as i32,
                    field: String::new(),
                }],
                consistency: consistency as i32,
                ..Default::default()
            })
            .await
            .expect_err("refused");
        let (code, field, limit) = refusal(&err);
        assert_eq!(code, Code::ResourceExhausted, "{consistency:?}: {err:?}");
        assert_eq!(field, "group_by", "{err:?}");
        assert_eq!(limit, "max_groups", "{err:?}");
    }
    // Fewer groups than the limit still answer.
    let ok = app
        .aggregate(AggregateRequest {
            dataset: "enterprise".into(),
            group_by: vec!["region".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.groups.len(), 4);
}

#[tokio::test]
async fn page_tokens_are_bound_to_their_query() {
    let mesh = Mesh::start().await;
    let mut app = mesh.app("dashboard").await;
    let first = fed_query(&mut app, req("status = \"active\"", "", 10)).await.unwrap();
    let token = first.summary.next_page_token;
    assert!(!token.is_empty());
    let mut other = req("status = \"revoked\"", "", 10);
    other.page_token = token.clone();
    let err = fed_query(&mut app, other).await.expect_err("token for another query");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("different query"), "{err:?}");
    // Flip one character of the token: the signature no longer matches.
    let mut tampered: Vec<char> = token.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let mut r = req("status = \"active\"", "", 10);
    r.page_token = tampered.into_iter().collect();
    let err = fed_query(&mut app, r).await.expect_err("tampered token");
    assert_eq!(err.code(), Code::InvalidArgument);
    // A changed page size keeps the token valid (AIP-158).
    let mut r = req("status = \"active\"", "", 25);
    r.page_token = token;
    assert!(fed_query(&mut app, r).await.is_ok());
}
