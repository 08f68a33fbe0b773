//! Planning a federated query or aggregate: check it once (the shared
//! [`CheckedQuery`] / [`CheckedAggregate`]), choose the regions it
//! touches, and recover the per-region cursors of a page token.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use yrd_proto::mesh::{AggregateRequest, Consistency, FilterExpr, QueryRequest};
use yrd_proto::schema::{DatasetSchema, Registry as Schemas};
use yrd_query::token::{Cursor, PageTokens};
use yrd_query::{CheckedAggregate, CheckedQuery, Limits, filter};

use crate::client::Acting;
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
    /// The query, checked once (the same check every node repeats).
    pub query: CheckedQuery,
    /// Every region of the federation, asked or not.
    pub regions: Vec<RegionChoice>,
    /// BEST_EFFORT or ALL_REGIONS.
    pub consistency: Consistency,
    /// Binds page tokens to this query.
    pub fingerprint: [u8; 32],
    /// Whom the regions are asked for.
    pub acting: Arc<Acting>,
    /// The key of the page token this page resumes (see [`crate::kept`]).
    pub resumed_from: Option<crate::kept::Key>,
}

impl QueryPlan {
    /// The dataset.
    pub fn schema(&self) -> &DatasetSchema {
        &self.query.schema
    }

    /// Global page size.
    pub fn page_size(&self) -> u32 {
        self.query.page_size
    }
}

/// A checked aggregate, ready to fan out.
#[derive(Debug, Clone)]
pub struct AggregatePlan {
    /// The aggregate, checked once.
    pub aggregate: CheckedAggregate,
    /// Every region of the federation, and why it is not asked (`None`: asked).
    pub regions: Vec<(String, Option<String>)>,
    /// BEST_EFFORT or ALL_REGIONS.
    pub consistency: Consistency,
    /// Whom the regions are asked for.
    pub acting: Arc<Acting>,
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

/// BEST_EFFORT unless ALL_REGIONS is asked.
fn consistency(requested: i32) -> Consistency {
    match Consistency::try_from(requested).unwrap_or(Consistency::Unspecified) {
        Consistency::AllRegions => Consistency::AllRegions,
        _ => Consistency::BestEffort,
    }
}

/// The requested regions, sorted and without repeats.
fn requested(regions: &[String]) -> Vec<String> {
    let mut requested = regions.to_vec();
    requested.sort();
    requested.dedup();
    requested
}

/// Plans a federated query: checked once, here, before any region is called.
pub fn plan_query(
    req: &QueryRequest,
    schemas: &Schemas,
    registry: &Registry,
    limits: &Limits,
    tokens: &PageTokens,
    acting: Arc<Acting>,
) -> Result<QueryPlan, GatewayError> {
    let query = CheckedQuery::from_request(req, schemas, limits)?;
    let consistency = consistency(req.consistency);
    let requested = requested(&req.regions);
    let region_field = &query.schema.fields[query.schema.region_field].name;
    let choices = choose_regions(registry, &requested, query.filter.as_ref(), region_field)?;
    let mut fp_regions = requested.clone();
    fp_regions.push(format!("consistency={}", consistency as i32));
    // A token serves the application it was handed to, for the purpose it
    // declared: another caller cannot resume it.
    if let Some(subject) = &acting.subject {
        fp_regions.push(format!("subject={subject}"));
    }
    fp_regions.push(format!("purpose={}", acting.purpose));
    let fingerprint = query.fingerprint(&fp_regions);
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
        query,
        regions,
        consistency,
        fingerprint,
        acting,
        resumed_from: (!req.page_token.is_empty()).then(|| crate::kept::key_of(&req.page_token)),
    })
}

/// Plans a federated aggregate: checked once, here, before any region is
/// called, and fanned out like a query.
pub fn plan_aggregate(
    req: &AggregateRequest,
    schemas: &Schemas,
    registry: &Registry,
    limits: &Limits,
    acting: Arc<Acting>,
) -> Result<AggregatePlan, GatewayError> {
    let aggregate = CheckedAggregate::from_request(req, schemas, limits)?;
    let region_field = &aggregate.schema.fields[aggregate.schema.region_field].name;
    let regions = choose_regions(
        registry,
        &requested(&req.regions),
        aggregate.filter.as_ref(),
        region_field,
    )?;
    Ok(AggregatePlan {
        aggregate,
        regions,
        consistency: consistency(req.consistency),
        acting,
    })
}
