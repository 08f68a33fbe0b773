//! Secrets read from configuration files, such as the page-token secret:
//! kept out of `Debug` output, and so out of logs and error messages.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret value. In a config file it is a plain string (serde sees
/// through the newtype); `Debug` prints `"<redacted>"`, never the value.
/// There is no `Display`: the value is reached only through
/// [`Secret::expose`], which is easy to find in a review.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the code that uses it (signing keys, ...).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its length in bytes: validation may say it is too short without
    /// saying what it is.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_serde_sees_through() {
        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Config {
            secret: Secret,
        }
        let config: Config = toml::from_str("secret = \"hunter2-hunter2-hunter2\"").unwrap();
        assert_eq!(config.secret.expose(), "hunter2-hunter2-hunter2");
        assert_eq!(config.secret.len(), 23);
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let text = toml::to_string(&config).unwrap();
        assert_eq!(text.trim(), "secret = \"hunter2-hunter2-hunter2\"");
        assert!(Secret::default().is_empty());
    }
}
