//! Checking a request once: from a Federation request (filter text or a
//! typed tree) or a node request (typed only), against the dataset's schema
//! and the limits, into a [`CheckedQuery`] or a [`CheckedAggregate`]. The
//! gateway and the region node both build these, so no validation rule is
//! written twice, and what the gateway sends a node
//! ([`CheckedQuery::node_request`]) is exactly what the node checks again.

use std::sync::Arc;

use yrd_proto::mesh::{
    AggregateFunction, AggregateRequest, FilterExpr, Metric, NodeAggregateRequest, NodeQueryRequest, OrderKey,
    QueryRequest, Value,
};
use yrd_proto::schema::{DatasetSchema, FieldType, Registry};

use crate::sortkey::decode_key;
use crate::token::query_fingerprint;
use crate::{Limits, QueryError, filter, order};

/// The request parameter of a projection.
const FIELDS_PARAM: &str = "fields";

/// The longest name a request may carry, in bytes: a dataset, a field (in
/// a projection, an order, a group-by, a metric) or a region. Names are
/// identifiers; checked before anything records them (a span, a log line,
/// an error message), so that no caller's text of megabytes is copied.
pub const MAX_NAME_BYTES: usize = 128;

/// The longest `order_by` text, in bytes: room for the most keys
/// (`limits.max_order_keys` is at most 64) of [`MAX_NAME_BYTES`] each, with
/// their directions and commas.
pub const MAX_ORDER_BY_BYTES: usize = 16 * 1024;

/// Checks that `name`, given as `param`, is at most [`MAX_NAME_BYTES`]
/// long; the error names the parameter and the limit, not the name.
pub fn check_name(param: &'static str, name: &str) -> Result<(), QueryError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(QueryError::Invalid {
            param,
            message: format!(
                "a name of {} bytes is longer than the limit MAX_NAME_BYTES = {MAX_NAME_BYTES}",
                name.len()
            ),
        });
    }
    Ok(())
}

/// [`check_name`] of each of `names`.
fn check_names<'a>(param: &'static str, names: impl IntoIterator<Item = &'a str>) -> Result<(), QueryError> {
    names.into_iter().try_for_each(|name| check_name(param, name))
}

/// The names of a query (its dataset, projection, order and the regions
/// it names), checked before anything else reads them.
fn check_query_names(
    dataset: &str,
    fields: &[String],
    order_by: &str,
    order_keys: &[OrderKey],
    regions: &[String],
) -> Result<(), QueryError> {
    check_name("dataset", dataset)?;
    check_names(FIELDS_PARAM, fields.iter().map(String::as_str))?;
    if order_by.len() > MAX_ORDER_BY_BYTES {
        return Err(QueryError::Invalid {
            param: "order_by",
            message: format!(
                "{} bytes is longer than the limit MAX_ORDER_BY_BYTES = {MAX_ORDER_BY_BYTES}",
                order_by.len()
            ),
        });
    }
    check_names("order_by", order_by.split(|c: char| c == ',' || c.is_whitespace()))?;
    check_names("order_keys", order_keys.iter().map(|k| k.field.as_str()))?;
    check_names("regions", regions.iter().map(String::as_str))
}

/// The names of an aggregate, checked before anything else reads them.
fn check_aggregate_names(
    dataset: &str,
    group_by: &[String],
    metrics: &[Metric],
    regions: &[String],
) -> Result<(), QueryError> {
    check_name("dataset", dataset)?;
    check_names("group_by", group_by.iter().map(String::as_str))?;
    check_names("metrics", metrics.iter().map(|m| m.field.as_str()))?;
    check_names("regions", regions.iter().map(String::as_str))
}
/// The request parameter of a node's resume key.
const RESUME_PARAM: &str = "resume_key";

/// A query that passed every check: the typed filter, the order with the
/// primary key as the final tie-breaker, the projection and the page size.
#[derive(Debug, Clone)]
pub struct CheckedQuery {
    /// The dataset.
    pub schema: Arc<DatasetSchema>,
    /// The typed filter; `None` matches every row.
    pub filter: Option<FilterExpr>,
    /// Sort keys, primary key last.
    pub order_keys: Vec<OrderKey>,
    /// Whether the caller asked for an order (a federated answer is then
    /// merged on it; otherwise rows may come in any region's order).
    pub ordered: bool,
    /// The projection as asked (empty: every field).
    pub fields: Vec<String>,
    /// Field indexes to return, in order: the projection, or every field.
    pub projection: Vec<usize>,
    /// Rows per page (or, at a node, most rows to return).
    pub page_size: u32,
}

/// An aggregate that passed every check.
#[derive(Debug, Clone)]
pub struct CheckedAggregate {
    /// The dataset.
    pub schema: Arc<DatasetSchema>,
    /// The typed filter; `None` matches every row.
    pub filter: Option<FilterExpr>,
    /// Group-by field names, in order.
    pub group_by: Vec<String>,
    /// Group-by field indexes, in order.
    pub group_fields: Vec<usize>,
    /// The metrics (`count(*)` when none were asked).
    pub metrics: Vec<Metric>,
    /// Per metric, its function and field index (`None` for `count(*)`).
    pub metric_fields: Vec<(AggregateFunction, Option<usize>)>,
}

/// The dataset's schema, or `NOT_FOUND` naming it (`INVALID_ARGUMENT`
/// for a name longer than [`MAX_NAME_BYTES`]).
pub fn dataset(schemas: &Registry, id: &str) -> Result<Arc<DatasetSchema>, QueryError> {
    check_name("dataset", id)?;
    schemas
        .get(id)
        .cloned()
        .ok_or_else(|| QueryError::UnknownDataset { dataset: id.to_owned() })
}

/// The typed filter of a request: parsed from `text`, or `typed` checked;
/// setting both is an error.
pub fn filter_of(
    schema: &DatasetSchema,
    text: &str,
    typed: Option<&FilterExpr>,
    limits: &Limits,
) -> Result<Option<FilterExpr>, QueryError> {
    match (text.trim().is_empty(), typed) {
        (false, Some(_)) => Err(QueryError::Invalid {
            param: "filter",
            message: "set filter or filter_expr, not both".into(),
        }),
        (false, None) => filter::parse_filter(text, schema, limits),
        (true, Some(expr)) => {
            filter::check_filter(expr, schema, limits)?;
            Ok(Some(expr.clone()))
        }
        (true, None) => Ok(None),
    }
}

impl CheckedQuery {
    /// Checks a Federation `Query` (or `Explain`) request. Page tokens,
    /// regions and consistency are the gateway's and are left to it.
    pub fn from_request(req: &QueryRequest, schemas: &Registry, limits: &Limits) -> Result<Self, QueryError> {
        check_query_names(&req.dataset, &req.fields, &req.order_by, &req.order_keys, &req.regions)?;
        let schema = dataset(schemas, &req.dataset)?;
        let filter = filter_of(&schema, &req.filter, req.filter_expr.as_ref(), limits)?;
        let (keys, ordered) = match (req.order_by.trim().is_empty(), req.order_keys.is_empty()) {
            (false, false) => {
                return Err(QueryError::Invalid {
                    param: "order_by",
                    message: "set order_by or order_keys, not both".into(),
                });
            }
            (false, true) => (order::parse_order_by(&req.order_by, &schema, limits)?, true),
            (true, typed_empty) => {
                order::check_order_keys(&req.order_keys, &schema, limits)?;
                (req.order_keys.clone(), !typed_empty)
            }
        };
        let page_size = limits.page_size(req.page_size)?;
        Self::finish(schema, filter, keys, ordered, &req.fields, page_size, limits)
    }

    /// Checks a node request, and decodes its resume key (`None` starts at
    /// the beginning). The node never parses text: the filter is a tree.
    pub fn from_node_request(
        req: &NodeQueryRequest,
        schemas: &Registry,
        limits: &Limits,
    ) -> Result<(Self, Option<Vec<Value>>), QueryError> {
        check_query_names(&req.dataset, &req.fields, "", &req.order_keys, &[])?;
        let schema = dataset(schemas, &req.dataset)?;
        let filter = filter_of(&schema, "", req.filter.as_ref(), limits)?;
        order::check_order_keys(&req.order_keys, &schema, limits)?;
        let page_size = match req.limit {
            0 => limits.page_size(0)?,
            n => {
                Limits::check("limit", "max_page_size", limits.max_page_size as usize, n as usize)?;
                n
            }
        };
        let ordered = !req.order_keys.is_empty();
        let checked = Self::finish(
            schema,
            filter,
            req.order_keys.clone(),
            ordered,
            &req.fields,
            page_size,
            limits,
        )?;
        let resume = if req.resume_key.is_empty() {
            None
        } else {
            Some(checked.decode_key(&req.resume_key).map_err(|_| QueryError::Invalid {
                param: RESUME_PARAM,
                message: "is not a sort key of this query's order".into(),
            })?)
        };
        Ok((checked, resume))
    }

    /// The common tail: primary key appended, projection checked (each
    /// field known and named once).
    fn finish(
        schema: Arc<DatasetSchema>,
        filter: Option<FilterExpr>,
        keys: Vec<OrderKey>,
        ordered: bool,
        fields: &[String],
        page_size: u32,
        limits: &Limits,
    ) -> Result<Self, QueryError> {
        let order_keys = order::with_primary_key(keys, &schema);
        let projection = projection(&schema, fields, limits)?;
        Ok(Self {
            schema,
            filter,
            order_keys,
            ordered,
            fields: fields.to_vec(),
            projection,
            page_size,
        })
    }

    /// The request a node gets for this query, resuming after `resume_key`
    /// (empty: from the beginning), for at most `limit` rows.
    pub fn node_request(&self, resume_key: &[u8], limit: u32) -> NodeQueryRequest {
        NodeQueryRequest {
            dataset: self.schema.id.clone(),
            filter: self.filter.clone(),
            order_keys: self.order_keys.clone(),
            fields: self.fields.clone(),
            limit,
            resume_key: resume_key.to_vec(),
        }
    }

    /// Sort columns as field indexes and directions, primary key last.
    pub fn sort_columns(&self) -> Vec<(usize, bool)> {
        self.order_keys
            .iter()
            .filter_map(|k| self.schema.field(&k.field).map(|(i, _)| (i, k.descending)))
            .collect()
    }

    /// Decodes a sort key of this query's order into its values.
    pub fn decode_key(&self, key: &[u8]) -> Result<Vec<Value>, QueryError> {
        let columns = self.sort_columns();
        let types: Vec<FieldType> = columns.iter().map(|&(i, _)| self.schema.fields[i].ty).collect();
        let desc: Vec<bool> = columns.iter().map(|&(_, d)| d).collect();
        decode_key(key, &types, &desc)
    }

    /// The digest page tokens bind to: dataset, filter, order, projection,
    /// and whatever the caller adds (the gateway: regions, consistency).
    pub fn fingerprint(&self, extra: &[String]) -> [u8; 32] {
        query_fingerprint(
            &self.schema.id,
            self.filter.as_ref(),
            &self.order_keys,
            &self.fields,
            extra,
        )
    }
}

impl CheckedAggregate {
    /// Checks a Federation `Aggregate` request (regions and consistency are
    /// the gateway's).
    pub fn from_request(req: &AggregateRequest, schemas: &Registry, limits: &Limits) -> Result<Self, QueryError> {
        check_aggregate_names(&req.dataset, &req.group_by, &req.metrics, &req.regions)?;
        let schema = dataset(schemas, &req.dataset)?;
        let filter = filter_of(&schema, &req.filter, req.filter_expr.as_ref(), limits)?;
        Self::finish(schema, filter, &req.group_by, &req.metrics, limits)
    }

    /// Checks a node's aggregate request.
    pub fn from_node_request(
        req: &NodeAggregateRequest,
        schemas: &Registry,
        limits: &Limits,
    ) -> Result<Self, QueryError> {
        check_aggregate_names(&req.dataset, &req.group_by, &req.metrics, &[])?;
        let schema = dataset(schemas, &req.dataset)?;
        let filter = filter_of(&schema, "", req.filter.as_ref(), limits)?;
        Self::finish(schema, filter, &req.group_by, &req.metrics, limits)
    }

    fn finish(
        schema: Arc<DatasetSchema>,
        filter: Option<FilterExpr>,
        group_by: &[String],
        metrics: &[Metric],
        limits: &Limits,
    ) -> Result<Self, QueryError> {
        order::check_group_by(group_by, &schema, limits)?;
        let metrics = if metrics.is_empty() {
            vec![Metric {
                function: AggregateFunction::Count as i32,
                field: String::new(),
            }]
        } else {
            metrics.to_vec()
        };
        order::check_metrics(&metrics, &schema, limits)?;
        let group_fields = group_by
            .iter()
            .filter_map(|g| schema.field(g).map(|(i, _)| i))
            .collect();
        let metric_fields = metrics
            .iter()
            .map(|m| {
                let f = AggregateFunction::try_from(m.function).unwrap_or(AggregateFunction::Unspecified);
                (f, schema.field(&m.field).map(|(i, _)| i))
            })
            .collect();
        Ok(Self {
            schema,
            filter,
            group_by: group_by.to_vec(),
            group_fields,
            metrics,
            metric_fields,
        })
    }

    /// The request a node gets for this aggregate.
    pub fn node_request(&self) -> NodeAggregateRequest {
        NodeAggregateRequest {
            dataset: self.schema.id.clone(),
            filter: self.filter.clone(),
            group_by: self.group_by.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The field indexes of a projection: each field known and named once,
/// at most `max_fields`; every field when none is named.
fn projection(schema: &DatasetSchema, fields: &[String], limits: &Limits) -> Result<Vec<usize>, QueryError> {
    Limits::check(FIELDS_PARAM, "max_fields", limits.max_fields, fields.len())?;
    let mut out = Vec::with_capacity(fields.len());
    for name in fields {
        let (i, _) = schema.field(name).ok_or_else(|| QueryError::UnknownField {
            param: FIELDS_PARAM,
            dataset: schema.id.clone(),
            field: name.clone(),
        })?;
        if out.contains(&i) {
            return Err(QueryError::Invalid {
                param: FIELDS_PARAM,
                message: format!("field {name} is listed twice"),
            });
        }
        out.push(i);
    }
    if out.is_empty() {
        out = (0..schema.fields.len()).collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn schemas() -> &'static Registry {
        Registry::standard().unwrap()
    }

    fn req(filter: &str, order_by: &str, fields: &[&str]) -> QueryRequest {
        QueryRequest {
            dataset: "enterprise".into(),
            filter: filter.into(),
            order_by: order_by.into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_field_named_twice_is_refused_naming_it() {
        let err =
            CheckedQuery::from_request(&req("", "", &["name", "name"]), schemas(), &Limits::default()).unwrap_err();
        assert_eq!(err.param(), "fields");
        assert!(err.to_string().contains("name"), "{err}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn long_names_are_refused_before_they_are_quoted() {
        let limits = Limits::default();
        let big = "f".repeat(3_500_000);
        let at_limit = "f".repeat(MAX_NAME_BYTES);
        let check = |r: QueryRequest| CheckedQuery::from_request(&r, schemas(), &limits).unwrap_err();
        let cases: Vec<(QueryRequest, &str)> = vec![
            (
                QueryRequest {
                    dataset: big.clone(),
                    ..req("", "", &[])
                },
                "dataset",
            ),
            (req("", "", &["name", &big]), "fields"),
            (req("", &format!("{big} desc"), &[]), "order_by"),
            (
                req("", &format!("name, {}", "f".repeat(MAX_NAME_BYTES + 1)), &[]),
                "order_by",
            ),
            (
                QueryRequest {
                    order_keys: vec![OrderKey {
                        field: big.clone(),
                        descending: false,
                    }],
                    ..req("", "", &[])
                },
                "order_keys",
            ),
            (
                QueryRequest {
                    regions: vec![big.clone()],
                    ..req("", "", &[])
                },
                "regions",
            ),
        ];
        for (r, param) in cases {
            let err = check(r);
            assert_eq!((err.param(), err.kind()), (param, ErrorKind::InvalidArgument), "{err}");
            let text = err.to_string();
            assert!(text.len() < 200, "{text}");
            assert!(
                text.contains("MAX_NAME_BYTES = 128") || text.contains("MAX_ORDER_BY_BYTES"),
                "{text}"
            );
            assert!(!text.contains("fff"), "the name itself is not echoed: {text}");
        }
        // A name at the limit is checked as usual: unknown, quoted cut.
        let err = check(req("", "", &[&at_limit]));
        assert!(matches!(err, QueryError::UnknownField { .. }), "{err}");
        assert!(err.to_string().len() < 200, "{err}");

        let agg = |r: AggregateRequest| CheckedAggregate::from_request(&r, schemas(), &limits).unwrap_err();
        let base = AggregateRequest {
            dataset: "enterprise".into(),
            ..Default::default()
        };
        for (r, param) in [
            (
                AggregateRequest {
                    group_by: vec![big.clone()],
                    ..base.clone()
                },
                "group_by",
            ),
            (
                AggregateRequest {
                    metrics: vec![Metric {
                        function: AggregateFunction::Sum as i32,
                        field: big.clone(),
                    }],
                    ..base.clone()
                },
                "metrics",
            ),
            (
                AggregateRequest {
                    dataset: big.clone(),
                    ..base.clone()
                },
                "dataset",
            ),
        ] {
            let err = agg(r);
            assert_eq!(err.param(), param, "{err}");
            assert!(err.to_string().len() < 200, "{err}");
        }
        // The node's requests too.
        let node = NodeQueryRequest {
            dataset: "enterprise".into(),
            fields: vec![big.clone()],
            ..Default::default()
        };
        let err = CheckedQuery::from_node_request(&node, schemas(), &limits).unwrap_err();
        assert_eq!(err.param(), "fields");
        let err = dataset(schemas(), &big).unwrap_err();
        assert_eq!((err.param(), err.kind()), ("dataset", ErrorKind::InvalidArgument));
    }

    #[test]
    fn the_node_request_checks_back_to_the_same_query() {
        let limits = Limits::default();
        let q = CheckedQuery::from_request(
            &req(
                "registered_capital > 1000000",
                "registered_capital desc",
                &["name", "city"],
            ),
            schemas(),
            &limits,
        )
        .unwrap();
        assert_eq!(q.order_keys.last().unwrap().field, "credit_code");
        let node = q.node_request(&[], 20);
        let (back, resume) = CheckedQuery::from_node_request(&node, schemas(), &limits).unwrap();
        assert!(resume.is_none());
        assert_eq!(back.filter, q.filter);
        assert_eq!(back.order_keys, q.order_keys);
        assert_eq!(back.projection, q.projection);
        assert_eq!(back.page_size, 20);
        assert_eq!(back.fingerprint(&[]), q.fingerprint(&[]));
    }

    #[test]
    fn node_limits_and_resume_keys_are_checked() {
        let limits = Limits::default();
        let q = CheckedQuery::from_request(&req("", "", &[]), schemas(), &limits).unwrap();
        let over = q.node_request(&[], limits.max_page_size + 1);
        let err = CheckedQuery::from_node_request(&over, schemas(), &limits).unwrap_err();
        assert_eq!((err.param(), err.kind()), ("limit", ErrorKind::ResourceExhausted));
        let garbage = q.node_request(&[0xff, 0x00, 0x17], 10);
        let err = CheckedQuery::from_node_request(&garbage, schemas(), &limits).unwrap_err();
        assert_eq!(err.param(), "resume_key");
    }

    #[test]
    fn aggregates_default_to_count_and_check_their_parts() {
        let limits = Limits::default();
        let a = CheckedAggregate::from_request(
            &AggregateRequest {
                dataset: "enterprise".into(),
                group_by: vec!["city".into()],
                ..Default::default()
            },
            schemas(),
            &limits,
        )
        .unwrap();
        assert_eq!(a.metric_fields, vec![(AggregateFunction::Count, None)]);
        let back = CheckedAggregate::from_node_request(&a.node_request(), schemas(), &limits).unwrap();
        assert_eq!(back.group_fields, a.group_fields);
        let err = CheckedAggregate::from_request(
            &AggregateRequest {
                dataset: "enterprise".into(),
                filter: "registered_capital >".into(),
                ..Default::default()
            },
            schemas(),
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.param(), "filter");
    }
}
