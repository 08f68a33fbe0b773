//! Figures of the policy stage's cost (printed, never asserted): run with
//! `cargo test -p yrd-node --lib policy::figures -- --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use yrd_datasets::Cell;
use yrd_identity::{PeerId, Secret};
use yrd_proto::schema::Registry;
use yrd_query::Limits;

use super::file::PolicyFile;
use super::{Access, AccessKind, Mask, NodePolicy, Policy};
use crate::encode::encode_field;
use crate::principal::Principal;

/// A realistic region file: three groups, ten grants over three datasets.
fn realistic() -> String {
    let mut text = String::from(
        "[groups]\ndashboards = [\"dashboard\", \"planner\", \"atlas\"]\nregulators = [\"market\", \"tax\"]\nresearch = [\"uni-a\", \"uni-b\", \"uni-c\"]\n[datasets.enterprise]\nmin_group_size = 10\n",
    );
    for i in 0..10 {
        let (who, ds) = match i % 3 {
            0 => ("groups = [\"dashboards\"]", "enterprise"),
            1 => ("groups = [\"regulators\"]", "enterprise"),
            _ => ("apps = [\"uni-a\"]", "air_quality"),
        };
        text.push_str(&format!(
            "[[grant]]\nid = \"g{i}\"\n{who}\ndatasets = [\"{ds}\"]\nfields = \"*\"\npurposes = [\"supervision\", \"statistics\"]\nnot_after = 2999-01-01\nrate_per_minute = 600\n"
        ));
        if ds == "enterprise" {
            text.push_str(
                "masks = { representative_id_number = \"keep(6,4)\", legal_representative = \"plain\" }\nrow_scope = 'district = \"310101\" OR district = \"310104\"'\n",
            );
        }
    }
    text
}

#[test]
fn print_the_cost_of_authorize_and_of_masking() {
    let schemas = Registry::standard().unwrap();
    let file = PolicyFile::parse(&realistic(), "figures.toml", schemas, &Limits::default(), true).unwrap();
    assert_eq!(file.grants.len(), 10);
    let policy = NodePolicy::new(schemas, file, Some(Secret::new("figures-secret-0123456789")), 5).unwrap();
    let schema = schemas.get("enterprise").unwrap().clone();
    let who = Principal {
        subject: Some(PeerId::app("yrd.mesh", "planner").unwrap()),
        purpose: Some("supervision".into()),
        ..Principal::default()
    };
    let filter =
        yrd_query::filter::parse_filter("status = \"active\" OR industry = \"F51\"", &schema, &Limits::default())
            .unwrap();
    let access = Access {
        schema: &schema,
        filter: filter.as_ref(),
        order: &[],
        projection: &[],
        explicit: false,
        group_by: &[],
        metrics: &[],
        kind: AccessKind::Rows { limit: 100 },
    };
    let n = 20_000u32;
    for _ in 0..1000 {
        black_box(policy.authorize(&who, &access));
    }
    let t = Instant::now();
    for _ in 0..n {
        let d = policy.authorize(&who, black_box(&access));
        assert!(d.refusal.is_none());
        black_box(d);
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("authorize: {per:.2} µs per query (10 grants, 3 groups, grant g0 of 4 candidates decides)");

    // Encoder: one enterprise row, plain vs with the masks a grant names.
    let text = |s: &str| Some(Cell::Text(s.to_owned()));
    let row: Vec<Option<Cell>> = schema
        .fields
        .iter()
        .map(|f| match f.name.as_str() {
            "registered_capital" => Some(Cell::Real(1_234_567.0)),
            "established" => text("1998-07-15"),
            "representative_id_number" => text("320102198001011234"),
            "legal_representative" => text("王小明"),
            "contact_phone" => text("13812345678"),
            _ => text("一段典型长度的字段值 abc 123"),
        })
        .collect();
    let key = super::AppKey::derive(b"figures-secret-0123456789", "spiffe://yrd.mesh/app/planner");
    let plain: Vec<Option<Mask>> = vec![None; schema.fields.len()];
    let masked: Vec<Option<Mask>> = schema
        .fields
        .iter()
        .map(|f| match f.name.as_str() {
            "representative_id_number" => Some(Mask::Keep { first: 6, last: 4 }),
            "legal_representative" => Some(Mask::Surname),
            "contact_phone" => Some(Mask::Hash),
            "registered_capital" => Some(Mask::Round { digits: 4 }),
            "established" => Some(Mask::Year),
            _ => None,
        })
        .collect();
    let rows = 200_000u32;
    let run = |masks: &[Option<Mask>]| {
        let mut buf = Vec::with_capacity(512);
        let t = Instant::now();
        for _ in 0..rows {
            buf.clear();
            for ((f, cell), m) in schema.fields.iter().zip(&row).zip(masks) {
                encode_field(f, cell.as_ref(), *m, Some(&key), &mut buf);
            }
            black_box(&buf);
        }
        t.elapsed().as_secs_f64() * 1e9 / f64::from(rows)
    };
    let (p, m) = (run(&plain), run(&masked));
    println!(
        "encoder: {p:.0} ns per row plain, {m:.0} ns per row with 5 masks (keep, surname, hash, round, year): {:.2}x",
        m / p
    );
}
