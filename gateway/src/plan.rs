//! Planning a federated query: parse and check it once, choose the regions
//! it touches, and recover the per-region cursors of a page token.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use yrd_proto::mesh::{Consistency, FilterExpr, OrderKey, QueryRequest};
use yrd_proto::schema::{DatasetSchema, Registry as Schemas};
use yrd_query::token::{Cursor, PageTokens, query_fingerprint};
use yrd_query::{Limits, QueryError, filter, order};

use crate::error::GatewayError;
use crate::registry::Registry;

/// Whether a region is asked, and why not.
#[derive(Debug, Clone)]
pub struct RegionChoice {
    /// Region id.
    pub region: String,
    /// Where to resume (an empty key starts at the beginning); None when
    /// the region is not asked.
    pub cursor: Option<Cursor>,
    /// Why the region is not asked.
    pub reason: String,
}

/// A checked query, ready to fan out.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// The dataset.
    pub schema: Arc<DatasetSchema>,
    /// The typed filter sent to every region.
    pub filter: Option<FilterExpr>,
    /// Sort keys, primary key last.
    pub order_keys: Vec<OrderKey>,
    /// Whether the caller asked for an order (rows are then merged).
    pub ordered: bool,
    /// Projection.
    pub fields: Vec<String>,
    /// Global page size.
    pub page_size: u32,
    /// Every region of the federation, asked or not.
    pub regions: Vec<RegionChoice>,
    /// BEST_EFFORT or ALL_REGIONS.
    pub consistency: Consistency,
    /// Binds page tokens to this query.
    pub fingerprint: [u8; 32],
}

/// Parses the filter text or checks the typed tree; one of them at most.
pub fn filter_of(
    schema: &DatasetSchema,
    text: &str,
    typed: Option<FilterExpr>,
    limits: &Limits,
) -> Result<Option<FilterExpr>, QueryError> {
    match (text.trim().is_empty(), typed) {
        (false, Some(_)) => Err(QueryError::Invalid {
            param: "filter",
            message: "set filter or filter_expr, not both".into(),
        }),
        (false, None) => filter::parse_filter(text, schema, limits),
        (true, Some(expr)) => {
            filter::check_filter(&expr, schema, limits)?;
            Ok(Some(expr))
        }
        (true, None) => Ok(None),
    }
}

/// The dataset's schema, or NOT_FOUND.
pub fn dataset(schemas: &Schemas, id: &str) -> Result<Arc<DatasetSchema>, QueryError> {
    schemas
        .get(id)
        .cloned()
        .ok_or_else(|| QueryError::UnknownDataset { dataset: id.to_owned() })
}

/// Chooses the regions a request touches: those named (all when none),
/// pruned by an equality filter on the region field.
pub fn choose_regions(
    registry: &Registry,
    requested: &[String],
    filter: Option<&FilterExpr>,
    region_field: &str,
) -> Result<Vec<(String, Option<String>)>, GatewayError> {
    for r in requested {
        if registry.get(r).is_none() {
            return Err(GatewayError::UnknownRegion(r.clone()));
        }
    }
    let matched: Option<BTreeSet<String>> = filter.and_then(|f| filter::regions_matched(f, region_field));
    Ok(registry
        .regions()
        .iter()
        .map(|r| {
            let skip = if !requested.is_empty() && !requested.contains(&r.id) {
                Some("not among the requested regions".to_owned())
            } else if matched.as_ref().is_some_and(|m| !m.contains(&r.id)) {
                Some(format!("the filter on {region_field} excludes it"))
            } else {
                None
            };
            (r.id.clone(), skip)
        })
        .collect())
}

/// Plans a federated query.
pub fn plan_query(
    req: QueryRequest,
    schemas: &Schemas,
    registry: &Registry,
    limits: &Limits,
    tokens: &PageTokens,
) -> Result<QueryPlan, GatewayError> {
    let schema = dataset(schemas, &req.dataset)?;
    if !req.start_after_key.is_empty() {
        return Err(QueryError::Invalid {
            param: "start_after_key",
            message: "is for region nodes; use page_token with the gateway".into(),
        }
        .into());
    }
    let filter = filter_of(&schema, &req.filter, req.filter_expr, limits)?;
    let (keys, ordered) = match (req.order_by.trim().is_empty(), req.order_keys.is_empty()) {
        (false, false) => {
            return Err(QueryError::Invalid {
                param: "order_by",
                message: "set order_by or order_keys, not both".into(),
            }
            .into());
        }
        (false, true) => (order::parse_order_by(&req.order_by, &schema, limits)?, true),
        (true, typed_empty) => {
            order::check_order_keys(&req.order_keys, &schema, limits)?;
            (req.order_keys, !typed_empty)
        }
    };
    let order_keys = order::with_primary_key(keys, &schema);
    Limits::check("fields", "max_fields", limits.max_fields, req.fields.len())?;
    for f in &req.fields {
        if schema.field(f).is_none() {
            return Err(QueryError::UnknownField {
                param: "fields",
                dataset: schema.id.clone(),
                field: f.clone(),
            }
            .into());
        }
    }
    let page_size = limits.page_size(req.page_size)?;
    let consistency = match Consistency::try_from(req.consistency).unwrap_or(Consistency::Unspecified) {
        Consistency::AllRegions => Consistency::AllRegions,
        _ => Consistency::BestEffort,
    };
    let mut requested = req.regions.clone();
    requested.sort();
    requested.dedup();
    let region_field = &schema.fields[schema.region_field].name;
    let choices = choose_regions(registry, &requested, filter.as_ref(), region_field)?;
    let mut fp_regions = requested.clone();
    fp_regions.push(format!("consistency={}", consistency as i32));
    let fingerprint = query_fingerprint(&schema.id, filter.as_ref(), &order_keys, &req.fields, &fp_regions);
    let resumed = if req.page_token.is_empty() {
        None
    } else {
        Some(tokens.open(&req.page_token, &fingerprint, SystemTime::now())?)
    };
    let regions = choices
        .into_iter()
        .map(|(region, skip)| {
            if let Some(reason) = skip {
                return RegionChoice {
                    region,
                    cursor: None,
                    reason,
                };
            }
            match &resumed {
                None => RegionChoice {
                    cursor: Some(Cursor {
                        region: region.clone(),
                        last_key: Vec::new(),
                        exhausted: false,
                    }),
                    region,
                    reason: String::new(),
                },
                Some(cursors) => match cursors.iter().find(|c| c.region == region && !c.exhausted) {
                    Some(c) => RegionChoice {
                        region,
                        cursor: Some(c.clone()),
                        reason: String::new(),
                    },
                    None => RegionChoice {
                        region,
                        cursor: None,
                        reason: "finished on an earlier page".into(),
                    },
                },
            }
        })
        .collect();
    Ok(QueryPlan {
        schema,
        filter,
        order_keys,
        ordered,
        fields: req.fields,
        page_size,
        regions,
        consistency,
        fingerprint,
    })
}
