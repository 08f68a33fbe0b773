//! Micro benchmarks of the per-row work on the data path, with criterion:
//! a node encoding an enterprise row and its sort key, and a hop decoding
//! and re-encoding a batch of 500 such rows (what the gateway's forwarding
//! and the floor's naive hop do per message).
//!
//! `cargo bench -p yrd-bench --bench micro`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use yrd_datasets::Cell;
use yrd_datasets::demo::DemoSpec;
use yrd_proto::mesh::{NodeQueryResponse, RowBatch, node_query_response};
use yrd_proto::schema::Registry;
use yrd_query::sortkey::KeyWriter;

const ROWS: usize = 500;

/// Demo enterprise rows as the store returns them: a cell per field, in
/// schema order.
fn rows() -> Vec<Vec<Option<Cell>>> {
    let schema = Registry::standard().unwrap().get("enterprise").unwrap().clone();
    let spec = DemoSpec { seed: 2026, scale: 1.0 };
    (0..ROWS)
        .map(|i| {
            let named = yrd_datasets::demo::enterprise("320000", &spec, i).unwrap();
            schema
                .fields
                .iter()
                .map(|f| named.iter().find(|(n, _)| *n == f.name).map(|(_, c)| c.clone()))
                .collect()
        })
        .collect()
}

/// One batch of encoded rows with their sort keys, as a node sends it.
fn encode_batch(rows: &[Vec<Option<Cell>>]) -> RowBatch {
    let schema = Registry::standard().unwrap().get("enterprise").unwrap().clone();
    let mut key = KeyWriter::new();
    let mut batch = RowBatch::default();
    for cells in rows {
        let mut buf = Vec::with_capacity(192);
        for (f, cell) in schema.fields.iter().zip(cells) {
            yrd_node::encode::encode_field(f, cell.as_ref(), None, None, &mut buf);
        }
        key.clear();
        if let Some(Some(Cell::Text(code))) = cells.first() {
            key.push_str(code, false);
        }
        batch.rows.push(prost_types::Any {
            type_url: schema.type_url.clone(),
            value: buf,
        });
        batch.sort_keys.push(key.as_bytes().to_vec());
    }
    batch
}

fn data_path(c: &mut Criterion) {
    let rows = rows();
    let mut group = c.benchmark_group("per row");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("node: encode 500 enterprise rows and sort keys", |b| {
        b.iter(|| encode_batch(std::hint::black_box(&rows)))
    });
    let message = NodeQueryResponse {
        kind: Some(node_query_response::Kind::Batch(encode_batch(&rows))),
    }
    .encode_to_vec();
    group.bench_function("hop: decode and re-encode a batch of 500 rows", |b| {
        b.iter(|| {
            let decoded = NodeQueryResponse::decode(std::hint::black_box(message.as_slice())).unwrap();
            decoded.encode_to_vec()
        })
    });
    group.finish();
}

criterion_group!(benches, data_path);
criterion_main!(benches);
