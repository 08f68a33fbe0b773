//! Demo deals on the provinces' property-rights exchanges. Transferors are
//! enterprises of the exchange's province, transferees enterprises of any
//! of the four: all are rows of the demo register.

use rand::Rng;
use time::Month;

use super::days;
use super::enterprise::{self, EnterpriseRecord, enterprise_count};
use super::names::ROADS;
use super::rng::{log_normal, row_rng, weighted};
use super::{DemoSpec, scaled};
use crate::codes::property;
use crate::codes::regions::{self, Province};
use crate::record::{Cell, NamedRow};

/// Dataset tag in row seeds.
const TAG: u64 = 5;
/// Deals per region at scale 1.
const PER_REGION_AT_SCALE_1: f64 = 1_500.0;
/// Fewest deals at any scale.
const MIN_PER_REGION: usize = 10;

/// Asset classes: code, project code tag, share of deals, median listed
/// price (CNY) and log-space spread.
const CLASSES: &[(&str, &str, f64, f64, f64)] = &[
    ("equity", "GQ", 35.0, 20_000_000.0, 1.5),
    ("real_estate", "FC", 20.0, 5_000_000.0, 1.2),
    ("creditor_rights", "ZQ", 10.0, 3_000_000.0, 1.3),
    ("vehicle", "CL", 12.0, 80_000.0, 0.6),
    ("equipment", "SB", 10.0, 800_000.0, 1.2),
    ("intellectual_property", "ZS", 5.0, 500_000.0, 1.0),
    ("land_use_rights", "TD", 5.0, 50_000_000.0, 1.0),
    ("mining_rights", "KY", 3.0, 30_000_000.0, 1.2),
];

/// Deals per region.
pub(crate) fn count(spec: &DemoSpec) -> usize {
    scaled(PER_REGION_AT_SCALE_1, spec.scale).max(MIN_PER_REGION)
}

/// Rounds a price to two significant figures, as listings usually are.
fn round_price(p: f64) -> f64 {
    let magnitude = 10f64.powi(p.max(100.0).log10().floor() as i32 - 1).max(100.0);
    (p / magnitude).round() * magnitude
}

/// The project name for an asset class.
fn project_name(rng: &mut impl Rng, class: &str, from: &EnterpriseRecord, target: &EnterpriseRecord) -> String {
    let district = regions::district(from.district).map_or("", |(_, name)| name);
    let city = regions::city(from.city).map_or("", |c| c.name_zh);
    match class {
        "equity" => {
            let pct = [100, 70, 51, 49, 40, 35, 30, 20, 10, 5][rng.random_range(0..10)];
            format!("{}{pct}%股权", target.name)
        }
        "real_estate" => {
            let road = ROADS[rng.random_range(0..ROADS.len())];
            format!("{city}{district}{road}{}号房产", rng.random_range(1..=999))
        }
        "creditor_rights" => format!("{}对{}的债权", from.name, target.name),
        "vehicle" => format!("{}公务车辆{}辆", from.name, rng.random_range(1..=30)),
        "equipment" => format!("{}闲置生产设备一批", from.name),
        "intellectual_property" => format!("{}项发明专利所有权", rng.random_range(1..=12)),
        "land_use_rights" => format!(
            "{city}{district}{}平方米国有建设用地使用权",
            rng.random_range(2_000..=120_000)
        ),
        _ => {
            let mineral = ["建筑用石料", "石灰岩", "铁矿", "铜矿", "萤石矿"][rng.random_range(0..5)];
            format!("{district}{mineral}采矿权")
        }
    }
}

/// Deal `index` of `province`.
fn deal(province: &'static Province, spec: &DemoSpec, index: usize) -> NamedRow {
    let mut rng = row_rng(spec.seed, province.code, TAG, index as u64);
    let n = enterprise_count(spec);
    let exchanges: Vec<&'static property::Exchange> = property::exchanges_in(province.code).collect();
    // Zhejiang's provincial exchange handles most deals; Hangzhou's the rest.
    let exchange = exchanges[weighted(
        &mut rng,
        exchanges
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { 7.0 } else { 3.0 }),
    )];
    let (class, tag, _, median, sigma) = CLASSES[weighted(&mut rng, CLASSES.iter().map(|c| c.2))];

    // Transferor: a firm of this province still in business, if one turns
    // up soon; transferee: mostly local, sometimes from another province.
    let mut from_index = rng.random_range(0..n);
    let mut from = enterprise::generate(province, spec, from_index);
    for _ in 0..8 {
        if matches!(from.status, "active" | "in_liquidation") {
            break;
        }
        from_index = rng.random_range(0..n);
        from = enterprise::generate(province, spec, from_index);
    }
    let to_province = if rng.random_bool(0.7) {
        province
    } else {
        &regions::PROVINCES[rng.random_range(0..regions::PROVINCES.len())]
    };
    let mut to = enterprise::generate(to_province, spec, rng.random_range(0..n));
    if to.credit_code == from.credit_code {
        // Same firm drawn twice: take its neighbour in the register.
        let again = (from_index + 1) % n;
        to = enterprise::generate(to_province, spec, again);
        if to.credit_code == from.credit_code {
            to = enterprise::generate(to_province, spec, (again + 1) % n);
        }
    }
    // The firm whose shares or debts are sold is never the seller itself.
    let target = enterprise::generate(province, spec, (from_index + 1 + rng.random_range(0..n - 1)) % n);
    let name = project_name(&mut rng, class, &from, &target);

    let listed_price = round_price(log_normal(&mut rng, median, sigma).clamp(5_000.0, 20_000_000_000.0));
    let r: f64 = rng.random();
    let deal_price = if r < 0.55 {
        // One qualified bidder: the deal closes at the listed price.
        listed_price
    } else if r < 0.95 {
        // Online bidding raised the price.
        (listed_price * (1.0 + rng.random_range(0.01..0.8)) / 100.0).round() * 100.0
    } else {
        // Relisted at a 10% reduction after no bidder came.
        (listed_price * 0.9 / 100.0).round() * 100.0
    };

    let first = days::of(2024, Month::October, 1);
    let last_listing = days::of(2025, Month::November, 30);
    let year_end = days::of(2025, Month::December, 31);
    let listed = first + rng.random_range(0..=(last_listing - first));
    // Listings run at least 20 working days before a deal.
    let deal_day = (listed + rng.random_range(28..=90)).min(year_end).max(listed);
    let year = days::date(listed).year();

    vec![
        (
            "project_code",
            Cell::Text(format!("{}-{year}-{tag}{:05}", exchange.code, index + 1)),
        ),
        ("project_name", Cell::Text(name)),
        ("region", Cell::Text(province.code.to_owned())),
        ("exchange", Cell::Text(exchange.code.to_owned())),
        ("asset_class", Cell::Text(class.to_owned())),
        ("listed_price", Cell::Real(listed_price)),
        ("deal_price", Cell::Real(deal_price)),
        ("listed_date", Cell::Text(days::text(listed))),
        ("deal_date", Cell::Text(days::text(deal_day))),
        ("transferor_credit_code", Cell::Text(from.credit_code)),
        ("transferor_name", Cell::Text(from.name)),
        ("transferee_credit_code", Cell::Text(to.credit_code)),
        ("transferee_name", Cell::Text(to.name)),
    ]
}

/// All deals of a province.
pub(crate) fn rows(province: &'static Province, spec: DemoSpec) -> impl Iterator<Item = NamedRow> + Send + 'static {
    (0..count(&spec)).map(move |i| deal(province, &spec, i))
}
