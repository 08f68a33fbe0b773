//! Where a process's identity lives on disk, as configuration files name it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{IdentityError, TlsMaterial};

/// The PEM files of a process's identity, as configuration files name them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The mesh CA certificate.
    pub ca: PathBuf,
    /// This process's certificate.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
    /// How long before this process's certificate, or a CA certificate it
    /// trusts, expires that it is warned about: a WARN line (repeated
    /// every hour) and `yrd_certificate_expiring` = 1 (`"30days"`; `"0s"`:
    /// never).
    #[serde(default = "default_expiry_warning", with = "humantime_serde")]
    pub expiry_warning: Duration,
}

/// Default of `tls.expiry_warning`: 30 days.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

fn default_expiry_warning() -> Duration {
    DEFAULT_EXPIRY_WARNING
}

impl TlsPaths {
    /// The three files, with the default expiry warning.
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
            expiry_warning: DEFAULT_EXPIRY_WARNING,
        }
    }

    /// Makes relative paths relative to `base` (a config file's folder).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Loads the files.
    pub fn load(&self) -> Result<TlsMaterial, IdentityError> {
        TlsMaterial::load(&self.ca, &self.cert, &self.key)
    }
}
