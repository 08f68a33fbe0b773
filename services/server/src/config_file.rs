//! Configuration files of mesh processes: TOML read with errors that name
//! the file, the key and the reason, the same way for every process.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A configuration that cannot be used, naming the file, the key and why.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {key}: {reason}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// The key at fault (`-` when the whole file is).
    pub key: String,
    /// Why.
    pub reason: String,
}

impl ConfigError {
    /// An error about `key` of the file `path`.
    pub fn new(path: &str, key: &str, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Checks that `addr` (the value of `key`, when set) is a loopback address,
/// as a process in insecure mode (plaintext, no client certificates) may
/// bind nothing else.
pub fn check_loopback(origin: &str, key: &str, addr: Option<std::net::SocketAddr>) -> Result<(), ConfigError> {
    match addr {
        Some(a) if !a.ip().is_loopback() => Err(ConfigError::new(
            origin,
            key,
            format!(
                "{a} is not a loopback address: with insecure = true (plaintext, no client \
                 certificates, development only) a process binds only 127.0.0.0/8 or ::1"
            ),
        )),
        _ => Ok(()),
    }
}

/// Checks a config's `insecure` key against the `--insecure` flag of the
/// command line: insecure mode needs both, so that a config file alone
/// cannot turn it on, and a flag without the key is a mistake named too.
pub fn check_insecure_flag(origin: &str, insecure: bool, flag: bool) -> Result<(), ConfigError> {
    match (insecure, flag) {
        (true, false) => Err(ConfigError::new(
            origin,
            "insecure",
            "insecure = true (plaintext, no client certificates; development only) needs --insecure \
             on the command line as well",
        )),
        (false, true) => Err(ConfigError::new(
            origin,
            "insecure",
            "--insecure was given but the config does not set insecure = true",
        )),
        _ => Ok(()),
    }
}

/// Reads this process's own certificate from `tls` and returns the mesh
/// identity it carries, checked to be in `trust_domain` (`what` names the
/// process in the error: "this node", "this gateway"). The caller checks
/// the kind and region it needs. Errors name `origin`, the key and why.
pub fn own_identity(
    origin: &str,
    tls: &yrd_identity::TlsPaths,
    trust_domain: &str,
    what: &str,
) -> Result<yrd_identity::PeerId, ConfigError> {
    let err = |key: &str, reason: String| ConfigError::new(origin, key, reason);
    let material = tls.load().map_err(|e| err("tls", e.to_string()))?;
    let cert = tls.cert.display();
    let id = material
        .peer_id()
        .map_err(|e| err("tls.cert", format!("{cert} carries no mesh identity: {e}")))?;
    if id.trust_domain != trust_domain {
        return Err(err(
            "trust_domain",
            format!(
                "{trust_domain:?} is not the trust domain of {what}'s certificate tls.cert ({cert}: {id}); \
                 every identity of a mesh is in one trust domain"
            ),
        ));
    }
    Ok(id)
}

/// Reads a config file: its text and the name to show in errors.
pub fn read_config(path: &Path) -> Result<(String, String), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&shown, "-", e.to_string()))?;
    Ok((text, shown))
}

/// Parses TOML text into `T`; `origin` names the source in errors, and the
/// key at fault is the text TOML points at.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let key = e
            .span()
            .map(|s| text.get(s).unwrap_or("-").trim().to_owned())
            .unwrap_or_else(|| "-".into());
        ConfigError::new(origin, &key, e.message())
    })
}
