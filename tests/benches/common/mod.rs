//! What the benchmarks share: the page query they time, and the figures.

use std::time::Duration;

use futures::StreamExt;
use tonic::transport::Channel;
use yrd_proto::mesh::federation_client::FederationClient;
use yrd_proto::mesh::{QueryRequest, QuerySummary, query_response};

/// A page of 100 active enterprises, largest capital first: merged from
/// the four regions on its order.
pub fn page_query(purpose: &str) -> QueryRequest {
    QueryRequest {
        dataset: "enterprise".into(),
        filter: "status = \"active\"".into(),
        order_by: "registered_capital desc".into(),
        page_size: 100,
        purpose: purpose.into(),
        ..Default::default()
    }
}

/// Runs `req` to the end of its page: the rows and the summary.
pub async fn one_query(app: &mut FederationClient<Channel>, req: QueryRequest) -> (usize, Option<QuerySummary>) {
    let mut stream = app.query(req).await.unwrap().into_inner();
    let mut rows = 0;
    let mut summary = None;
    while let Some(m) = stream.next().await {
        match m.unwrap().kind {
            Some(query_response::Kind::Batch(b)) => rows += b.rows.len(),
            Some(query_response::Kind::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    (rows, summary)
}

/// The `p` quantile of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
