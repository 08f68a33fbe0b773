//! The one constructor family for a region's part in an answer
//! ([`RegionStatus`]): nodes and the gateway build every status through
//! these, so a state always comes with the fields it needs.

use std::time::{Duration, SystemTime};

use crate::mesh::{RegionState, RegionStatus};

impl RegionStatus {
    /// A region that answered: `rows` rows (or groups) in `elapsed`, its
    /// data last changed at `freshness`.
    pub fn answered(
        region: impl Into<String>,
        rows: u64,
        elapsed: Duration,
        freshness: Option<prost_types::Timestamp>,
    ) -> Self {
        Self {
            region: region.into(),
            state: RegionState::Ok as i32,
            rows,
            elapsed: prost_types::Duration::try_from(elapsed).ok(),
            freshness,
            ..Self::default()
        }
    }

    /// A region that was not asked, and why.
    pub fn skipped(region: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            state: RegionState::Skipped as i32,
            message: reason.into(),
            ..Self::default()
        }
    }

    /// A region that failed in `state` after `elapsed`, with a short, safe
    /// explanation; `rows` counts what it sent before failing.
    pub fn failed(
        region: impl Into<String>,
        state: RegionState,
        message: impl Into<String>,
        rows: u64,
        elapsed: Duration,
    ) -> Self {
        Self {
            region: region.into(),
            state: state as i32,
            rows,
            elapsed: prost_types::Duration::try_from(elapsed).ok(),
            message: message.into(),
            ..Self::default()
        }
    }

    /// The same status seen from the caller's side: the time it took there.
    #[must_use]
    pub fn with_elapsed(mut self, elapsed: Duration) -> Self {
        self.elapsed = prost_types::Duration::try_from(elapsed).ok();
        self
    }
}

/// A `google.protobuf.Timestamp` for a freshness instant.
pub fn freshness(at: Option<SystemTime>) -> Option<prost_types::Timestamp> {
    at.map(prost_types::Timestamp::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_constructor_sets_its_state() {
        let ok = RegionStatus::answered("320000", 3, Duration::from_millis(5), None);
        assert_eq!(ok.state(), RegionState::Ok);
        assert_eq!(ok.rows, 3);
        assert_eq!(ok.elapsed.unwrap().nanos, 5_000_000);
        let skip = RegionStatus::skipped("310000", "not asked");
        assert_eq!(skip.state(), RegionState::Skipped);
        assert_eq!(skip.message, "not asked");
        let bad = RegionStatus::failed("330000", RegionState::Unavailable, "down", 0, Duration::ZERO);
        assert_eq!(bad.state(), RegionState::Unavailable);
        let later = bad.with_elapsed(Duration::from_secs(1));
        assert_eq!(later.elapsed.unwrap().seconds, 1);
    }
}
