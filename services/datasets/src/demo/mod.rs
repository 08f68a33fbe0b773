//! Deterministic, realistic demo data for the standard datasets, per
//! region.
//!
//! Every row is derived from its own random generator, seeded from a hash
//! of (seed, region, dataset, row index): the same [`DemoSpec`] always
//! gives the same rows, and a row of one dataset can name a row of another
//! (a manifest's receiver is enterprise #i of another province) by
//! computing just that row. Every generated row passes
//! [`validate_row`](crate::validate::validate_row).
//!
//! Sizes per region at scale 1: 20,000 enterprises; a year (2025) of
//! hourly air readings for every station (one per city, several in
//! Shanghai and the provincial capitals); daily water samples at 6-10
//! sections; 2,000 hazardous waste manifests; 1,500 property-rights deals.
//! Smaller scales cut each proportionally, down to a floor (20
//! enterprises, 24 hours, 12 samples, 10 manifests, 10 deals); hours and
//! sample days are spread over the whole year so every scale shows the
//! seasons.

use std::fmt;

use crate::codes::regions::{self, Province};
use crate::record::NamedRow;
use crate::spec;

// The generators, one per dataset; the table of [`spec::DATASETS`] names
// each dataset's.
pub(crate) mod air;
mod days;
pub(crate) mod enterprise;
mod names;
pub(crate) mod property;
mod rng;
pub(crate) mod waste;
pub(crate) mod water;

pub use enterprise::{EnterpriseRecord, enterprise_count};

/// What to generate: a seed and a size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoSpec {
    /// Seed of every row's generator.
    pub seed: u64,
    /// Size relative to the full demo (1.0); each dataset keeps a small
    /// minimum. Negative or non-finite scales count as 0.
    pub scale: f64,
}

impl Default for DemoSpec {
    fn default() -> Self {
        Self { seed: 2025, scale: 1.0 }
    }
}

/// Why demo rows cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoError {
    /// No generator for this dataset id.
    UnknownDataset(String),
    /// Not one of the four provinces' codes.
    UnknownRegion(String),
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownDataset(d) => write!(
                f,
                "no demo generator for dataset {d:?} (known: {})",
                spec::ids().collect::<Vec<_>>().join(", ")
            ),
            Self::UnknownRegion(r) => write!(
                f,
                "no demo data for region {r:?} (known: {})",
                regions::PROVINCES.iter().map(|p| p.code).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl std::error::Error for DemoError {}

/// `base * scale`, rounded, with a sane scale.
pub(crate) fn scaled(base: f64, scale: f64) -> usize {
    let scale = if scale.is_finite() && scale > 0.0 { scale } else { 0.0 };
    (base * scale).round().min(1e12) as usize
}

fn province_for(region: &str) -> Result<&'static Province, DemoError> {
    regions::province(region).ok_or_else(|| DemoError::UnknownRegion(region.to_owned()))
}

/// The demo rows of `dataset` for `region`, in a fixed order, computed
/// lazily.
pub fn rows(
    dataset: &str,
    region: &str,
    spec: &DemoSpec,
) -> Result<Box<dyn Iterator<Item = NamedRow> + Send>, DemoError> {
    let generator = generator(dataset)?;
    Ok((generator.demo_rows)(province_for(region)?, *spec))
}

/// The number of rows [`rows`] yields.
pub fn row_count_hint(dataset: &str, region: &str, spec: &DemoSpec) -> Result<usize, DemoError> {
    let generator = generator(dataset)?;
    Ok((generator.demo_count)(province_for(region)?, spec))
}

/// The spec holding `dataset`'s generator.
fn generator(dataset: &str) -> Result<&'static spec::DatasetSpec, DemoError> {
    spec::find(dataset).ok_or_else(|| DemoError::UnknownDataset(dataset.to_owned()))
}

/// Enterprise #`index` of `region`'s demo register, typed; `None` if the
/// region is not one of the four or the index is past the register's end.
pub fn enterprise_record(region: &str, spec: &DemoSpec, index: usize) -> Option<EnterpriseRecord> {
    let province = regions::province(region)?;
    (index < enterprise_count(spec)).then(|| enterprise::generate(province, spec, index))
}

/// Enterprise #`index` of `region`'s demo register as a row, exactly as
/// [`rows`] yields it.
pub fn enterprise(region: &str, spec: &DemoSpec, index: usize) -> Option<NamedRow> {
    enterprise_record(region, spec, index).map(EnterpriseRecord::into_row)
}

#[cfg(test)]
mod tests;
