//! The audit log's configuration: a section of the node's and the
//! gateway's config files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::AuditError;

/// Where and how an audit log is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The log's directory (created if missing); relative paths are
    /// resolved against the config file's folder by [`AuditConfig::resolve`].
    pub dir: PathBuf,
    /// A file is closed (with a checkpoint) and a new one started before a
    /// record would take it past this size.
    pub max_file_bytes: u64,
    /// Records between two signed checkpoints.
    pub checkpoint_every: u64,
    /// A checkpoint is also written when this much time has passed since the
    /// last one and records were added, such as `"60s"`.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Appends waiting for the writer; an append waits for room beyond it.
    pub queue: usize,
}

/// Default `max_file_bytes`: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The smallest `max_file_bytes`: a file must hold a record and its
/// checkpoint, whatever the records' size.
pub const MIN_MAX_FILE_BYTES: u64 = 4096;

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("audit"),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            queue: 4096,
        }
    }
}

impl AuditConfig {
    /// A default config writing to `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }

    /// Makes a relative `dir` relative to `base` (the config file's folder).
    pub fn resolve(&mut self, base: &Path) {
        if self.dir.is_relative() {
            self.dir = base.join(&self.dir);
        }
    }

    /// Checks every key; the error names the key at fault.
    pub fn validate(&self) -> Result<(), AuditError> {
        let bad = |key: &'static str, reason: String| Err(AuditError::Config { key, reason });
        if self.dir.as_os_str().is_empty() {
            return bad("dir", "must name a directory".into());
        }
        if self.max_file_bytes < MIN_MAX_FILE_BYTES {
            return bad(
                "max_file_bytes",
                format!("{} is below the minimum of {MIN_MAX_FILE_BYTES}", self.max_file_bytes),
            );
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint_every", "must be at least 1".into());
        }
        if self.checkpoint_interval.is_zero() {
            return bad("checkpoint_interval", "must be longer than zero".into());
        }
        if self.queue == 0 {
            return bad("queue", "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_keys() {
        let config: AuditConfig =
            serde_json::from_str(r#"{"dir": "/var/audit", "checkpoint_interval": "5s"}"#).unwrap();
        assert_eq!(config.dir, PathBuf::from("/var/audit"));
        assert_eq!(config.checkpoint_interval, Duration::from_secs(5));
        assert_eq!(config.max_file_bytes, DEFAULT_MAX_FILE_BYTES);
        assert_eq!((config.checkpoint_every, config.queue), (1000, 4096));
        config.validate().unwrap();
        assert!(serde_json::from_str::<AuditConfig>(r#"{"dirr": "x"}"#).is_err());
        for (config, key) in [
            (
                AuditConfig {
                    queue: 0,
                    ..AuditConfig::default()
                },
                "queue",
            ),
            (
                AuditConfig {
                    checkpoint_every: 0,
                    ..AuditConfig::default()
                },
                "checkpoint_every",
            ),
            (
                AuditConfig {
                    max_file_bytes: 10,
                    ..AuditConfig::default()
                },
                "max_file_bytes",
            ),
            (
                AuditConfig {
                    checkpoint_interval: Duration::ZERO,
                    ..AuditConfig::default()
                },
                "checkpoint_interval",
            ),
            (AuditConfig::in_dir(""), "dir"),
        ] {
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let mut relative = AuditConfig::default();
        relative.resolve(Path::new("/etc/yrd"));
        assert_eq!(relative.dir, PathBuf::from("/etc/yrd/audit"));
    }
}
