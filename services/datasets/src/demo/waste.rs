//! Demo cross-provincial hazardous waste transfer manifests. Producers are
//! enterprises of the manifest's region, receivers licensed disposal firms
//! of another of the four provinces: both are rows of the demo register.

use rand::Rng;
use time::Month;

use super::days;
use super::enterprise::{self, DISPOSER_OFFSET, DISPOSER_STRIDE, disposer_count, enterprise_count};
use super::rng::{log_normal, row_rng, weighted};
use super::{DemoSpec, scaled};
use crate::codes::regions::{self, Province};
use crate::record::{Cell, NamedRow};

/// Dataset tag in row seeds.
const TAG: u64 = 4;
/// Manifests per region at scale 1.
const PER_REGION_AT_SCALE_1: f64 = 2_000.0;
/// Fewest manifests at any scale.
const MIN_PER_REGION: usize = 10;
/// Tries to find a manufacturing producer before taking any enterprise.
const PRODUCER_TRIES: usize = 16;

/// Waste categories with rough shares of cross-provincial transfers.
const WASTES: &[(&str, f64)] = &[
    ("HW08", 18.0),
    ("HW49", 14.0),
    ("HW17", 10.0),
    ("HW12", 8.0),
    ("HW06", 8.0),
    ("HW18", 6.0),
    ("HW50", 5.0),
    ("HW22", 5.0),
    ("HW34", 5.0),
    ("HW11", 4.0),
    ("HW13", 4.0),
    ("HW09", 4.0),
    ("HW31", 3.0),
    ("HW46", 3.0),
    ("HW35", 2.0),
    ("HW21", 2.0),
    ("HW29", 1.0),
    ("HW02", 1.0),
    ("HW23", 1.0),
    ("HW48", 1.0),
];

/// Manifests per region.
pub(crate) fn count(spec: &DemoSpec) -> usize {
    scaled(PER_REGION_AT_SCALE_1, spec.scale).max(MIN_PER_REGION)
}

/// Manifest `index` of `province`.
fn manifest(province: &'static Province, spec: &DemoSpec, index: usize) -> NamedRow {
    let mut rng = row_rng(spec.seed, province.code, TAG, index as u64);
    let n = enterprise_count(spec);

    // Producer: a manufacturer still in business, if one turns up soon.
    let mut producer = enterprise::generate(province, spec, rng.random_range(0..n));
    for _ in 0..PRODUCER_TRIES {
        if producer.is_manufacturer() && producer.status == "active" {
            break;
        }
        producer = enterprise::generate(province, spec, rng.random_range(0..n));
    }

    // Receiver: a disposal firm in another province; Jiangsu and Zhejiang
    // have the most disposal capacity.
    let others: Vec<&'static Province> = regions::PROVINCES.iter().filter(|p| p.code != province.code).collect();
    let capacity = |p: &Province| match p.code {
        "320000" => 4.0,
        "330000" => 3.0,
        "340000" => 2.0,
        _ => 1.0,
    };
    let receiver_province = others[weighted(&mut rng, others.iter().map(|p| capacity(p)))];
    let k = rng.random_range(0..disposer_count(n).max(1));
    let receiver = enterprise::generate(receiver_province, spec, DISPOSER_OFFSET + k * DISPOSER_STRIDE);

    let waste = WASTES[weighted(&mut rng, WASTES.iter().map(|w| w.1))].0;
    let quantity = (log_normal(&mut rng, 6.0, 1.1).clamp(0.05, 500.0) * 1000.0).round() / 1000.0;

    // Shipped on a working day of 2025, received one to three days later;
    // late-December loads may still be on the road at the year's end.
    let year_start = days::of(2025, Month::January, 1);
    let year_end = days::of(2025, Month::December, 31);
    let mut shipped = year_start + rng.random_range(0..365);
    // 1970-01-01 was a Thursday: weekday 0 = Thursday, 2 = Saturday, 3 = Sunday.
    if matches!(shipped.rem_euclid(7), 2 | 3) && rng.random_bool(0.8) {
        shipped -= 2;
    }
    let shipped = shipped.max(year_start);
    let transit = weighted(&mut rng, [0.15, 0.55, 0.22, 0.08].into_iter()) as i64;
    let received = shipped + transit;
    let stuck = shipped > year_end - 30 && rng.random_bool(0.05);
    let in_transit = received > year_end || stuck;

    let mut row: NamedRow = vec![
        (
            "manifest_number",
            Cell::Text(format!("2025{}{:06}", province.code, index + 1)),
        ),
        ("region", Cell::Text(province.code.to_owned())),
        ("waste_code", Cell::Text(waste.to_owned())),
        ("producer_credit_code", Cell::Text(producer.credit_code)),
        ("producer_name", Cell::Text(producer.name)),
        ("receiver_credit_code", Cell::Text(receiver.credit_code)),
        ("receiver_name", Cell::Text(receiver.name)),
        ("receiver_region", Cell::Text(receiver_province.code.to_owned())),
        ("quantity_tonnes", Cell::Real(quantity)),
        ("shipped_date", Cell::Text(days::text(shipped))),
    ];
    if in_transit {
        row.push(("status", Cell::Text("in_transit".to_owned())));
    } else {
        row.push(("received_date", Cell::Text(days::text(received))));
        row.push(("status", Cell::Text("received".to_owned())));
    }
    row
}

/// All manifests of a province.
pub(crate) fn rows(province: &'static Province, spec: DemoSpec) -> impl Iterator<Item = NamedRow> + Send + 'static {
    (0..count(&spec)).map(move |i| manifest(province, &spec, i))
}
