use std::collections::{HashMap, HashSet};

use yrd_proto::schema::Registry;

use super::*;
use crate::record::Cell;
use crate::validate::{cells_from_named, validate_row};

const SMALL: DemoSpec = DemoSpec { seed: 7, scale: 0.01 };

fn region_codes() -> impl Iterator<Item = &'static str> {
    regions::PROVINCES.iter().map(|p| p.code)
}

fn get<'a>(row: &'a NamedRow, name: &str) -> Option<&'a Cell> {
    row.iter().find(|(n, _)| *n == name).map(|(_, c)| c)
}

fn text<'a>(row: &'a NamedRow, name: &str) -> &'a str {
    get(row, name).and_then(Cell::as_text).unwrap_or_default()
}

fn all(dataset: &str, region: &str, spec: &DemoSpec) -> Vec<NamedRow> {
    rows(dataset, region, spec).unwrap().collect()
}

#[test]
fn same_spec_same_rows_other_seed_other_rows() {
    for dataset in crate::spec::ids() {
        let a = all(dataset, "320000", &SMALL);
        let b = all(dataset, "320000", &SMALL);
        assert_eq!(a, b, "{dataset}");
        let c = all(dataset, "320000", &DemoSpec { seed: 8, ..SMALL });
        assert_eq!(a.len(), c.len(), "{dataset}");
        assert_ne!(a, c, "{dataset}");
        // Other regions get other data.
        assert_ne!(a, all(dataset, "330000", &SMALL), "{dataset}");
    }
}

#[test]
fn every_row_validates_and_keys_are_unique() {
    let registry = Registry::standard().unwrap();
    for dataset in crate::spec::ids() {
        let schema = registry.get(dataset).unwrap();
        for region in region_codes() {
            let mut keys = HashSet::new();
            let mut n = 0;
            for row in rows(dataset, region, &SMALL).unwrap() {
                n += 1;
                assert_eq!(text(&row, "region"), region, "{dataset}");
                let cells = cells_from_named(schema, row).unwrap();
                let violations = validate_row(schema, &cells);
                assert!(violations.is_empty(), "{dataset} {region} row {n}: {violations:?}");
                let key: Vec<String> = schema.primary_key.iter().map(|&i| format!("{:?}", cells[i])).collect();
                assert!(keys.insert(key.clone()), "{dataset} {region}: key {key:?} twice");
            }
            assert_eq!(
                n,
                row_count_hint(dataset, region, &SMALL).unwrap(),
                "{dataset} {region}"
            );
            assert!(n >= 10, "{dataset} {region}: {n}");
        }
    }
}

#[test]
fn unknown_dataset_or_region_is_an_error() {
    assert!(matches!(
        rows("weather", "310000", &SMALL),
        Err(DemoError::UnknownDataset(_))
    ));
    assert!(matches!(
        rows("enterprise", "110000", &SMALL),
        Err(DemoError::UnknownRegion(_))
    ));
    assert!(
        rows("enterprise", "110000", &SMALL)
            .err()
            .unwrap()
            .to_string()
            .contains("310000")
    );
    assert!(enterprise("440000", &SMALL, 0).is_none());
    assert!(enterprise("310000", &SMALL, enterprise_count(&SMALL)).is_none());
}

#[test]
fn sizes() {
    let full = DemoSpec::default();
    assert!(enterprise_count(&full) >= 20_000);
    assert_eq!(enterprise_count(&SMALL), 200);
    assert_eq!(enterprise_count(&DemoSpec { seed: 1, scale: 0.0 }), 20);
    assert_eq!(
        enterprise_count(&DemoSpec {
            seed: 1,
            scale: f64::NAN
        }),
        20
    );
    for region in region_codes() {
        let air = row_count_hint("air_quality", region, &full).unwrap();
        assert_eq!(air % 8760, 0);
        assert!(air >= 8760 * 6, "{region}: {air}");
        let sections = water::section_count(region);
        assert!((4..=10).contains(&sections), "{region}: {sections}");
        assert_eq!(row_count_hint("water_quality", region, &full).unwrap(), sections * 365);
        assert_eq!(row_count_hint("hazardous_waste", region, &full).unwrap(), 2000);
        assert_eq!(row_count_hint("property_rights", region, &full).unwrap(), 1500);
        assert_eq!(
            row_count_hint("hazardous_waste", region, &DemoSpec { seed: 1, scale: 0.0 }).unwrap(),
            10
        );
        assert_eq!(
            row_count_hint("air_quality", region, &DemoSpec { seed: 1, scale: 0.0 }).unwrap() % 24,
            0
        );
    }
    // Every city has a station.
    for p in regions::PROVINCES {
        let stations = air::stations(p);
        for c in p.cities {
            assert!(stations.iter().any(|s| std::ptr::eq(s.city, c)), "{}", c.code);
        }
    }
}

#[test]
fn enterprise_access_matches_the_rows() {
    let listed = all("enterprise", "340000", &SMALL);
    for i in [0, 13, 57, listed.len() - 1] {
        assert_eq!(enterprise("340000", &SMALL, i).as_ref(), Some(&listed[i]));
    }
}

#[test]
fn manifests_name_real_enterprises_of_both_regions() {
    let registers: HashMap<&str, HashMap<String, String>> = region_codes()
        .map(|r| {
            let by_code = all("enterprise", r, &SMALL)
                .into_iter()
                .map(|row| (text(&row, "credit_code").to_owned(), text(&row, "name").to_owned()))
                .collect();
            (r, by_code)
        })
        .collect();
    for region in region_codes() {
        let mut in_transit = 0;
        for row in all("hazardous_waste", region, &SMALL) {
            let receiver_region = text(&row, "receiver_region");
            assert_ne!(receiver_region, region);
            let producer = registers[region].get(text(&row, "producer_credit_code"));
            assert_eq!(producer.map(String::as_str), Some(text(&row, "producer_name")));
            let receiver = registers[receiver_region].get(text(&row, "receiver_credit_code"));
            assert_eq!(receiver.map(String::as_str), Some(text(&row, "receiver_name")));
            in_transit += usize::from(text(&row, "status") == "in_transit");
        }
        assert!(in_transit <= 5, "{region}: {in_transit}");
        for row in all("property_rights", region, &SMALL) {
            let from = registers[region].get(text(&row, "transferor_credit_code"));
            assert_eq!(from.map(String::as_str), Some(text(&row, "transferor_name")));
            let to_code = text(&row, "transferee_credit_code");
            let to = registers.values().find_map(|r| r.get(to_code));
            assert_eq!(to.map(String::as_str), Some(text(&row, "transferee_name")));
        }
    }
}

#[test]
fn air_has_seasons_and_a_daily_cycle() {
    // A tenth of the year, spread over all seasons.
    let spec = DemoSpec { seed: 3, scale: 0.1 };
    let mut winter_pm = (0.0, 0);
    let mut summer_pm = (0.0, 0);
    let mut summer_o3 = [(0.0, 0); 2];
    for row in all("air_quality", "320000", &spec) {
        let Some(Cell::Time(t)) = get(&row, "observed_at") else {
            panic!()
        };
        let local = t + 8 * 3600;
        let month = u8::from(time::OffsetDateTime::from_unix_timestamp(local).unwrap().month());
        let hour = local.rem_euclid(86_400) / 3600;
        assert_eq!(t % 3600, 0);
        let pm = get(&row, "pm25").and_then(Cell::as_f64).unwrap();
        let o3 = get(&row, "o3").and_then(Cell::as_f64).unwrap();
        if matches!(month, 12 | 1 | 2) {
            winter_pm = (winter_pm.0 + pm, winter_pm.1 + 1);
        }
        if matches!(month, 6..=8) {
            summer_pm = (summer_pm.0 + pm, summer_pm.1 + 1);
            let slot = usize::from((12..=17).contains(&hour));
            summer_o3[slot] = (summer_o3[slot].0 + o3, summer_o3[slot].1 + 1);
        }
    }
    let mean = |(s, n): (f64, i32)| s / f64::from(n.max(1));
    assert!(
        mean(winter_pm) > 1.5 * mean(summer_pm),
        "{} vs {}",
        mean(winter_pm),
        mean(summer_pm)
    );
    assert!(mean(summer_o3[1]) > 1.5 * mean(summer_o3[0]));
}

#[test]
fn enterprise_mix_is_realistic() {
    let rows = all("enterprise", "330000", &DemoSpec { seed: 11, scale: 0.1 });
    let share = |f: &dyn Fn(&NamedRow) -> bool| rows.iter().filter(|r| f(r)).count() as f64 / rows.len() as f64;
    let manufacturing = share(&|r| text(r, "industry").starts_with('C'));
    let active = share(&|r| text(r, "status") == "active");
    let recent = share(&|r| text(r, "established") >= "2010-01-01");
    assert!((0.15..0.35).contains(&manufacturing), "{manufacturing}");
    assert!((0.8..0.95).contains(&active), "{active}");
    assert!((0.5..0.85).contains(&recent), "{recent}");
    for r in rows.iter().take(50) {
        let name = text(r, "name");
        assert!(name.ends_with("有限公司"), "{name}");
        let city = regions::city(text(r, "city")).unwrap();
        assert!(name.starts_with(city.short_name()), "{name}");
        let capital = get(r, "registered_capital").and_then(Cell::as_f64).unwrap();
        assert!(
            (10_000.0..=5e9).contains(&capital) && capital % 100.0 == 0.0,
            "{capital}"
        );
    }
}
