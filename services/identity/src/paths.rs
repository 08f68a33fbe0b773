//! Where a process's identity lives on disk, as configuration files name it.

use std::path::{Path, PathBuf};

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
}

impl TlsPaths {
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
