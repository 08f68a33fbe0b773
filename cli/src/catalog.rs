//! `yrdctl catalog` and `yrdctl regions`: what the federation holds and
//! how its regions are doing.

use std::io::Write;

use yrd_proto::mesh::{ListDatasetsRequest, ListRegionsRequest};

use crate::cli::OutputArgs;
use crate::client::{Connection, status_error};
use crate::output::{self, Format, RowDecoder};

/// Prints a whole answer as proto JSON, for `--output json`.
fn print_json<M: prost::Message>(out: &mut impl Write, answer: &M, type_name: &str) -> anyhow::Result<()> {
    let decoder = RowDecoder::new()?;
    let text = output::proto_json(decoder.pool(), answer, type_name)?;
    writeln!(out, "{text}")?;
    Ok(out.flush()?)
}

/// Runs `yrdctl catalog`: one line per dataset and region (the dataset's
/// id and title on its first line only, in a table).
pub async fn catalog(conn: &Connection, args: &OutputArgs) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let answer = client
        .list_datasets(conn.request(ListDatasetsRequest {}))
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if args.output == Format::Json {
        return print_json(&mut out, &answer, "yrd.mesh.v1.ListDatasetsResponse");
    }
    let headers: Vec<String> = [
        "dataset",
        "title",
        "region",
        "name",
        "state",
        "rows",
        "freshness",
        "message",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for d in &answer.datasets {
        let title = if d.title_zh.is_empty() {
            d.title_en.clone()
        } else {
            format!("{} ({})", d.title_en, d.title_zh)
        };
        for (i, r) in d.regions.iter().enumerate() {
            // In a table the dataset names its group once; CSV repeats it so
            // that every line stands alone.
            let first = i == 0 || args.output == Format::Csv;
            rows.push(vec![
                if first { d.id.clone() } else { String::new() },
                if first { title.clone() } else { String::new() },
                r.region.clone(),
                output::region_name(&r.region).to_owned(),
                output::state_name(r.state),
                r.rows.to_string(),
                r.freshness.as_ref().map(output::timestamp).unwrap_or_default(),
                r.message.clone(),
            ]);
        }
    }
    let numeric = [false, false, false, false, false, true, false, false];
    output::write_records(&mut out, args.output, &headers, rows, &numeric)?;
    Ok(out.flush()?)
}

/// Runs `yrdctl regions`: one line per region endpoint.
pub async fn regions(conn: &Connection, args: &OutputArgs) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let answer = client
        .list_regions(conn.request(ListRegionsRequest {}))
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if args.output == Format::Json {
        return print_json(&mut out, &answer, "yrd.mesh.v1.ListRegionsResponse");
    }
    let headers: Vec<String> = [
        "region",
        "name",
        "healthy",
        "endpoint",
        "endpoint healthy",
        "latency ms",
    ]
    .map(String::from)
    .to_vec();
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut rows = Vec::new();
    for r in &answer.regions {
        let name = if r.name.is_empty() {
            output::region_name(&r.region).to_owned()
        } else {
            r.name.clone()
        };
        if r.endpoints.is_empty() {
            rows.push(vec![
                r.region.clone(),
                name.clone(),
                yes_no(r.healthy),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for e in &r.endpoints {
            rows.push(vec![
                r.region.clone(),
                name.clone(),
                yes_no(r.healthy),
                e.address.clone(),
                yes_no(e.healthy),
                e.latency.as_ref().map(output::millis).unwrap_or_default(),
            ]);
        }
    }
    let numeric = [false, false, false, false, false, true];
    output::write_records(&mut out, args.output, &headers, rows, &numeric)?;
    Ok(out.flush()?)
}
