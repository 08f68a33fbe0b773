//! Certificates about to expire: every process checks its own certificate
//! and the CA certificates it trusts when it starts and then every hour,
//! publishes when each expires (`yrd_certificate_expiry_timestamp_seconds`)
//! and whether it is within `tls.expiry_warning` of it
//! (`yrd_certificate_expiring`), and logs a WARN line for each one that is.

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use yrd_identity::TlsMaterial;

/// How often a running process checks its certificates again.
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Checks `material`'s certificates at `now` against `warn_before`: sets
/// both metrics for each and returns the warnings (what a WARN line says)
/// of those within `warn_before` of expiring or expired.
pub fn check_certificate_expiry(material: &TlsMaterial, warn_before: Duration, now: SystemTime) -> Vec<String> {
    let expiries = match material.expiries() {
        Ok(e) => e,
        // The material was checked when it was loaded; say so if not.
        Err(e) => return vec![format!("the certificates' expiry could not be read: {e}")],
    };
    let mut warnings = Vec::new();
    for (name, not_after) in expiries {
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        yrd_telemetry::certificate_expiry(&name, secs);
        let left = not_after.duration_since(now).ok();
        let expiring = !warn_before.is_zero() && left.is_none_or(|l| l <= warn_before);
        yrd_telemetry::certificate_expiring(&name, expiring);
        if !expiring {
            continue;
        }
        let warn_days = warn_before.as_secs() / 86_400;
        warnings.push(match left {
            None => format!("certificate {name} has expired; replace it"),
            Some(l) => format!(
                "certificate {name} expires in {} days ({} hours); replace it (tls.expiry_warning = {warn_days} days)",
                l.as_secs() / 86_400,
                l.as_secs() / 3600
            ),
        });
    }
    warnings
}

/// Checks `material` now and then every [`EXPIRY_CHECK_INTERVAL`] for as
/// long as the runtime runs, logging each warning.
pub fn watch_certificate_expiry(material: TlsMaterial, warn_before: Duration) -> JoinHandle<()> {
    let log = move || {
        for warning in check_certificate_expiry(&material, warn_before, SystemTime::now()) {
            tracing::warn!("{warning}");
        }
    };
    log();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
        every.tick().await; // the first tick is now: checked above
        loop {
            every.tick().await;
            log();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_identity::{IssueRequest, PeerId, init_ca, issue};

    const DAY: Duration = Duration::from_secs(86_400);

    fn material_valid_for(valid_for: Duration, not_before: Option<SystemTime>) -> (tempfile::TempDir, TlsMaterial) {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "yrd.test").unwrap();
        let id = PeerId::node("yrd.test", "310000", "n1").unwrap();
        issue(
            dir.path(),
            &IssueRequest::new(id.clone()).with_validity(not_before, valid_for),
        )
        .unwrap();
        let m = TlsMaterial::for_identity(dir.path(), &id).unwrap();
        (dir, m)
    }

    #[test]
    fn a_certificate_within_its_warning_window_is_warned_about() {
        let (_dir, m) = material_valid_for(10 * DAY, None);
        let now = SystemTime::now();
        let warnings = check_certificate_expiry(&m, 30 * DAY, now);
        assert_eq!(
            warnings.len(),
            1,
            "only the node's certificate, not the CA: {warnings:?}"
        );
        assert!(
            warnings[0].starts_with("certificate spiffe://yrd.test/region/310000/node/n1 expires in 9 days")
                && warnings[0].contains("tls.expiry_warning = 30 days"),
            "{warnings:?}"
        );
        // Outside the window, or the warning off: nothing.
        assert!(check_certificate_expiry(&m, 5 * DAY, now).is_empty());
        assert!(check_certificate_expiry(&m, Duration::ZERO, now).is_empty());
        // Later, it has expired.
        let later = check_certificate_expiry(&m, 30 * DAY, now + 11 * DAY);
        assert_eq!(
            later,
            ["certificate spiffe://yrd.test/region/310000/node/n1 has expired; replace it"]
        );
    }

    #[test]
    fn the_ca_is_checked_too() {
        let (_dir, m) = material_valid_for(10 * DAY, None);
        // Far enough ahead that the CA is within a year of expiring.
        let years = yrd_identity::CA_VALIDITY;
        let warnings = check_certificate_expiry(&m, 400 * DAY, SystemTime::now() + years - 100 * DAY);
        assert!(
            warnings.iter().any(|w| w.starts_with("certificate CA ")),
            "{warnings:?}"
        );
    }
}
