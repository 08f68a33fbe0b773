//! The standard datasets, one entry each: what a dataset is beyond its
//! schema — the cross-field rules of its rows and its demo generator.
//!
//! Adding a dataset is its `.proto` under `proto/yrd/datasets/` (the schema:
//! fields, types, sensitivity, code lists) and one entry in [`DATASETS`];
//! validation, the demo data, `yrd-node import` and `yrdctl up` find it
//! here. A test checks that the table and the protocol's datasets match.

use crate::codes::regions::Province;
use crate::demo::{self, DemoSpec};
use crate::record::NamedRow;
use crate::validate::{self, Row, Violation};

/// Rows of a demo generator.
pub(crate) type DemoRows = Box<dyn Iterator<Item = NamedRow> + Send>;

/// One standard dataset.
pub struct DatasetSpec {
    /// The dataset id, as in its schema (`enterprise`).
    pub id: &'static str,
    /// Checks across the fields of a row, after each field's own checks
    /// (those come from the schema). Adds every problem found to the list.
    pub(crate) rules: fn(&Row<'_>, &mut Vec<Violation>),
    /// The demo rows of a province, in a fixed order, computed lazily.
    pub(crate) demo_rows: fn(&'static Province, DemoSpec) -> DemoRows,
    /// How many rows `demo_rows` yields.
    pub(crate) demo_count: fn(&'static Province, &DemoSpec) -> usize,
}

/// The standard datasets.
pub const DATASETS: &[DatasetSpec] = &[
    DatasetSpec {
        id: "enterprise",
        rules: validate::enterprise_rules,
        demo_rows: |p, spec| Box::new(demo::enterprise::rows(p, spec)),
        demo_count: |_, spec| demo::enterprise_count(spec),
    },
    DatasetSpec {
        id: "air_quality",
        rules: validate::air_quality_rules,
        demo_rows: |p, spec| Box::new(demo::air::rows(p, spec)),
        demo_count: demo::air::row_count,
    },
    DatasetSpec {
        id: "water_quality",
        rules: validate::water_quality_rules,
        demo_rows: |p, spec| Box::new(demo::water::rows(p.code, spec)),
        demo_count: |p, spec| demo::water::row_count(p.code, spec),
    },
    DatasetSpec {
        id: "hazardous_waste",
        rules: validate::hazardous_waste_rules,
        demo_rows: |p, spec| Box::new(demo::waste::rows(p, spec)),
        demo_count: |_, spec| demo::waste::count(spec),
    },
    DatasetSpec {
        id: "property_rights",
        rules: validate::property_rights_rules,
        demo_rows: |p, spec| Box::new(demo::property::rows(p, spec)),
        demo_count: |_, spec| demo::property::count(spec),
    },
];

/// The spec of dataset `id`, if it is a standard one.
pub fn find(id: &str) -> Option<&'static DatasetSpec> {
    DATASETS.iter().find(|d| d.id == id)
}

/// The ids of the standard datasets, in table order.
pub fn ids() -> impl Iterator<Item = &'static str> {
    DATASETS.iter().map(|d| d.id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use yrd_proto::schema::Registry;

    use super::*;

    #[test]
    fn the_table_and_the_protocol_name_the_same_datasets() {
        let registry = Registry::standard().unwrap();
        let in_protocol: BTreeSet<&str> = registry.datasets().iter().map(|s| s.id.as_str()).collect();
        let in_table: BTreeSet<&str> = ids().collect();
        assert_eq!(in_table.len(), DATASETS.len(), "an id is listed twice");
        assert_eq!(in_table, in_protocol);
        assert!(find("enterprise").is_some());
        assert!(find("weather").is_none());
    }
}
