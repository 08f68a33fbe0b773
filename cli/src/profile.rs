//! Client profiles: which gateway to call and with which certificate. A
//! profile is a small TOML file (`yrdctl up` writes one):
//!
//! ```toml
//! gateway = "https://127.0.0.1:50070"
//! server_name = "localhost"   # optional: the name to verify in the gateway's certificate
//! ca = "pki/ca.pem"           # relative paths are relative to the profile's folder
//! cert = "pki/app-yrdctl.pem"
//! key = "pki/app-yrdctl.key"
//! # optional: admin endpoints (`/metrics`, `/traces`) of the gateway and
//! # the nodes, for `yrdctl traces`; plain HTTP
//! admin = ["http://127.0.0.1:50080"]
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::codegen::http::Uri;
use yrd_identity::TlsMaterial;

use crate::admin::AdminUrl;

/// The environment variable naming the profile when `--profile` is not given.
pub const PROFILE_ENV: &str = "YRD_PROFILE";

/// A profile that cannot be used, naming the file, the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    /// The profile file; empty when none was given.
    pub path: String,
    /// The key at fault (`-` when the whole file is).
    pub key: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            // No file to name: the reason says what to do.
            return f.write_str(&self.reason);
        }
        write!(f, "profile {}: {}: {}", self.path, self.key, self.reason)
    }
}

impl std::error::Error for ProfileError {}

/// The file's keys, as written: read by [`Profile::parse`], written by
/// `yrdctl up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// `https://host:port`.
    pub gateway: String,
    /// The name to verify; the gateway's host by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The mesh CA certificate.
    pub ca: PathBuf,
    /// The application's certificate.
    pub cert: PathBuf,
    /// The application's private key.
    pub key: PathBuf,
    /// Admin endpoints, `http://host:port`.
    #[serde(default)]
    pub admin: Vec<String>,
}

/// A checked profile, paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The file it was read from.
    pub path: PathBuf,
    /// The gateway's address, `https://host:port`.
    pub gateway: String,
    /// The name to verify in the gateway's certificate.
    pub server_name: String,
    /// The mesh CA certificate.
    pub ca: PathBuf,
    /// This application's certificate.
    pub cert: PathBuf,
    /// This application's private key.
    pub key: PathBuf,
    /// The admin endpoints `yrdctl traces` reads: the gateway's and each
    /// node's `admin_listen` (one for `yrdctl up`, whose components share
    /// a process); empty when the profile names none.
    pub admin: Vec<AdminUrl>,
}

impl Profile {
    /// Loads the profile named by `--profile` or, failing that, by
    /// `YRD_PROFILE` (clap has already merged the two into `flag`).
    pub fn from_flag(flag: Option<&Path>) -> Result<Self, ProfileError> {
        match flag {
            Some(path) => Self::load(path),
            None => Err(ProfileError {
                path: String::new(),
                key: "-".into(),
                reason: format!(
                    "no profile: pass --profile PATH or set {PROFILE_ENV} \
                     (`yrdctl up --data-dir DIR` writes DIR/profile.toml)"
                ),
            }),
        }
    }

    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            path: path.display().to_string(),
            key: "-".into(),
            reason: format!("cannot be read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses profile text read from `path`; relative certificate paths are
    /// taken relative to the file's folder, so a mesh directory can move.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let shown = path.display().to_string();
        let err = |key: &str, reason: String| ProfileError {
            path: shown.clone(),
            key: key.to_owned(),
            reason,
        };
        let file: ProfileFile = toml::from_str(text).map_err(|e| err(&toml_error_key(&e, text), toml_reason(&e)))?;
        let uri: Uri = file
            .gateway
            .parse()
            .map_err(|e| err("gateway", format!("{:?} is not a URL: {e}", file.gateway)))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => {
                return Err(err(
                    "gateway",
                    format!("{:?}: the gateway speaks mutual TLS only; use https://", file.gateway),
                ));
            }
            _ => {
                return Err(err("gateway", format!("{:?} must be https://host:port", file.gateway)));
            }
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| err("gateway", format!("{:?} names no host", file.gateway)))?;
        // IPv6 hosts come bracketed out of a URI; certificates name them bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let server_name = match file.server_name {
            Some(name) if name.trim().is_empty() => return Err(err("server_name", "is empty".into())),
            Some(name) => name,
            None => host,
        };
        let mut admin: Vec<AdminUrl> = Vec::with_capacity(file.admin.len());
        for (i, text) in file.admin.iter().enumerate() {
            let url = AdminUrl::parse(text).map_err(|reason| err(&format!("admin[{i}]"), reason))?;
            if admin.contains(&url) {
                return Err(err(&format!("admin[{i}]"), format!("{text:?} is listed twice")));
            }
            admin.push(url);
        }
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        Ok(Profile {
            path: path.to_owned(),
            gateway: file.gateway,
            server_name,
            ca: resolve(file.ca),
            cert: resolve(file.cert),
            key: resolve(file.key),
            admin,
        })
    }

    /// Loads the certificate files, naming the profile key of a missing one.
    pub fn tls(&self) -> Result<TlsMaterial, ProfileError> {
        let err = |key: &str, reason: String| ProfileError {
            path: self.path.display().to_string(),
            key: key.to_owned(),
            reason,
        };
        for (key, file) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if let Err(e) = std::fs::metadata(file) {
                return Err(err(key, format!("{}: {e}", file.display())));
            }
        }
        TlsMaterial::load(&self.ca, &self.cert, &self.key).map_err(|e| err("ca/cert/key", e.to_string()))
    }
}

/// The key a TOML error is about: named in the message for a missing or
/// unknown key, otherwise the key on the line of the bad value.
fn toml_error_key(e: &toml::de::Error, text: &str) -> String {
    let message = e.message();
    if (message.starts_with("missing field") || message.starts_with("unknown field"))
        && let Some(start) = message.find('`')
        && let Some(len) = message[start + 1..].find('`')
    {
        return message[start + 1..start + 1 + len].to_owned();
    }
    e.span()
        .and_then(|span| {
            let line_start = text.get(..span.start)?.rfind('\n').map_or(0, |i| i + 1);
            let line = text.get(line_start..)?.lines().next()?;
            let (key, _) = line.split_once('=')?;
            Some(key.trim().trim_matches('"').to_owned())
        })
        .filter(|key| !key.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// The reason of a TOML error, on one line.
fn toml_reason(e: &toml::de::Error) -> String {
    e.message().trim().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
gateway = "https://127.0.0.1:50070"
server_name = "localhost"
ca = "pki/ca.pem"
cert = "/abs/app-yrdctl.pem"
key = "pki/app-yrdctl.key"
"#;

    fn parse(text: &str) -> Result<Profile, ProfileError> {
        Profile::parse(text, Path::new("/mesh/profile.toml"))
    }

    #[test]
    fn a_good_profile_resolves_relative_paths() {
        let p = parse(OK).unwrap();
        assert_eq!(p.gateway, "https://127.0.0.1:50070");
        assert_eq!(p.server_name, "localhost");
        assert_eq!(p.ca, Path::new("/mesh/pki/ca.pem"));
        assert_eq!(p.cert, Path::new("/abs/app-yrdctl.pem"));
        assert_eq!(p.key, Path::new("/mesh/pki/app-yrdctl.key"));
        assert!(p.admin.is_empty(), "no admin key: no admin endpoints");
    }

    #[test]
    fn admin_endpoints_are_checked() {
        let p = parse(&format!(
            "{OK}admin = [\"http://127.0.0.1:50080\", \"http://[::1]:9001/\"]\n"
        ))
        .unwrap();
        let urls: Vec<&str> = p.admin.iter().map(|a| a.url.as_str()).collect();
        assert_eq!(urls, ["http://127.0.0.1:50080", "http://[::1]:9001"]);
        assert_eq!((p.admin[1].host.as_str(), p.admin[1].port), ("::1", 9001));
        assert!(parse(&format!("{OK}admin = []\n")).unwrap().admin.is_empty());
        for (value, key, needle) in [
            ("[\"https://127.0.0.1:50080\"]", "admin[0]", "plain HTTP"),
            (
                "[\"http://127.0.0.1:1\", \"127.0.0.1:2\"]",
                "admin[1]",
                "http://host:port",
            ),
            ("[\"http://127.0.0.1:1/metrics\"]", "admin[0]", "adds the path"),
            ("[\"http://a:1\", \"http://a:1/\"]", "admin[1]", "listed twice"),
            ("\"http://127.0.0.1:1\"", "admin", "invalid type"),
        ] {
            let e = parse(&format!("{OK}admin = {value}\n")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains(needle), "{e}");
        }
    }

    #[test]
    fn server_name_defaults_to_the_gateway_host() {
        let p = parse(&OK.replace("server_name = \"localhost\"\n", "")).unwrap();
        assert_eq!(p.server_name, "127.0.0.1");
        let p = parse(
            &OK.replace("https://127.0.0.1:50070", "https://[::1]:50070")
                .replace("server_name = \"localhost\"\n", ""),
        )
        .unwrap();
        assert_eq!(p.server_name, "::1");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases: [(String, &str, &str); 7] = [
            (OK.replace("ca = \"pki/ca.pem\"\n", ""), "ca", "missing"),
            (format!("{OK}colour = \"blue\"\n"), "colour", "unknown field"),
            (
                OK.replace("https://127.0.0.1:50070", "http://127.0.0.1:50070"),
                "gateway",
                "mutual TLS",
            ),
            (
                OK.replace("https://127.0.0.1:50070", "127.0.0.1:50070"),
                "gateway",
                "https://",
            ),
            (
                OK.replace("https://127.0.0.1:50070", "https://exa mple"),
                "gateway",
                "not a URL",
            ),
            (OK.replace("\"localhost\"", "\"\""), "server_name", "empty"),
            (OK.replace("\"pki/ca.pem\"", "42"), "ca", "invalid type"),
        ];
        for (text, key, needle) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains(needle), "{e}");
            assert!(e.to_string().starts_with("profile /mesh/profile.toml: "), "{e}");
        }
    }

    #[test]
    fn a_missing_profile_is_explained() {
        let e = Profile::from_flag(None).unwrap_err();
        assert!(
            e.to_string().contains("--profile") && e.to_string().contains(PROFILE_ENV),
            "{e}"
        );
        let e = Profile::from_flag(Some(Path::new("/nonexistent/profile.toml"))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("profile /nonexistent/profile.toml: -: cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn missing_certificate_files_name_their_key() {
        let p = parse(OK).unwrap();
        let e = p.tls().unwrap_err();
        assert_eq!(e.key, "ca", "{e}");
        assert!(e.reason.contains("/mesh/pki/ca.pem"), "{e}");
    }
}
