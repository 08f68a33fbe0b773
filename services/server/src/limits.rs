//! The limits of a process's connection edge, the `[connections]` section
//! of every server's config: TLS handshakes (how long, how many at once, how
//! many from one source) and HTTP/2 streams per connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Default of `connections.handshake_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default of `connections.max_handshakes`.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// Default of `connections.max_handshakes_per_source`.
pub const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: usize = 32;
/// Default of `connections.max_concurrent_streams`.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Default of `connections.max_pending_accept_resets`.
pub const DEFAULT_MAX_PENDING_ACCEPT_RESETS: usize = 128;
/// Upper bound of `connections.max_pending_accept_resets`.
pub const MAX_PENDING_ACCEPT_RESETS_BOUND: usize = 1024;

/// Bounds of `connections.handshake_timeout`.
pub const HANDSHAKE_TIMEOUT_BOUNDS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));
/// Upper bound of `connections.max_handshakes`: each handshake holds a file
/// descriptor, and a server needs most of its descriptors for the
/// connections it serves.
pub const MAX_HANDSHAKES_BOUND: usize = 10_000;
/// Upper bound of `connections.max_concurrent_streams`.
pub const MAX_CONCURRENT_STREAMS_BOUND: u32 = 10_000;

/// How many HTTP/2 streams one connection may make the server reset for
/// its errors (streams over the limit, malformed frames) before the
/// connection is closed with `ENHANCE_YOUR_CALM`. hyper's own default;
/// tonic would otherwise switch the limit off.
pub(crate) const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The `[connections]` section: limits of the connection edge, the same
/// keys for every process. Durations are humantime strings.
///
/// | key | default | bounds |
/// | --- | --- | --- |
/// | `handshake_timeout` | `"3s"` | 100ms ..= 60s |
/// | `max_handshakes` | 1024 | 1 ..= 10000 |
/// | `max_handshakes_per_source` | 32 | 1 ..= `max_handshakes` |
/// | `max_concurrent_streams` | 128 | 1 ..= 10000 |
/// | `max_pending_accept_resets` | 128 | 1 ..= 1024 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// How long a client may take from its TCP connection being accepted
    /// to a completed TLS handshake; then the connection is dropped.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How many TLS handshakes may be in flight at once, over all clients.
    /// A connection accepted at the limit is closed at once (counted and
    /// logged as `too-many-handshakes`): it never waits in the accept
    /// backlog, in front of the clients that come after it.
    pub max_handshakes: usize,
    /// How many of those may come from one source: an IPv4 address, or
    /// an IPv6 /64 prefix (what one host usually holds). Over it, a new
    /// connection from that source is closed at once
    /// (`too-many-handshakes-from-source`).
    pub max_handshakes_per_source: usize,
    /// How many HTTP/2 streams (calls) one connection may have open at
    /// once; the server advertises it in its SETTINGS and refuses streams
    /// over it with `REFUSED_STREAM`.
    pub max_concurrent_streams: u32,
    /// How many streams one connection may have reset by the client
    /// before the server accepted them; one more and the connection is
    /// closed with `ENHANCE_YOUR_CALM` (HTTP/2 rapid reset). h2's own 20
    /// closed a gateway's connection whenever a busy node fell behind
    /// accepting calls the gateway had cancelled (a page filled first).
    pub max_pending_accept_resets: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_source: DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_pending_accept_resets: DEFAULT_MAX_PENDING_ACCEPT_RESETS,
        }
    }
}

impl ConnectionLimits {
    /// Checks every limit against its bounds; the error names the file
    /// `origin`, the key (`connections.<name>`) and the bound.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(origin, &format!("connections.{key}"), reason);
        let (min, max) = HANDSHAKE_TIMEOUT_BOUNDS;
        if self.handshake_timeout < min || self.handshake_timeout > max {
            return Err(err(
                "handshake_timeout",
                format!("{:?} is outside {min:?} ..= {max:?}", self.handshake_timeout),
            ));
        }
        if !(1..=MAX_HANDSHAKES_BOUND).contains(&self.max_handshakes) {
            return Err(err(
                "max_handshakes",
                format!(
                    "{} is outside 1 ..= {MAX_HANDSHAKES_BOUND} (each handshake holds a file descriptor)",
                    self.max_handshakes
                ),
            ));
        }
        if !(1..=self.max_handshakes).contains(&self.max_handshakes_per_source) {
            return Err(err(
                "max_handshakes_per_source",
                format!(
                    "{} is outside 1 ..= connections.max_handshakes ({})",
                    self.max_handshakes_per_source, self.max_handshakes
                ),
            ));
        }
        if !(1..=MAX_CONCURRENT_STREAMS_BOUND).contains(&self.max_concurrent_streams) {
            return Err(err(
                "max_concurrent_streams",
                format!(
                    "{} is outside 1 ..= {MAX_CONCURRENT_STREAMS_BOUND}",
                    self.max_concurrent_streams
                ),
            ));
        }
        if !(1..=MAX_PENDING_ACCEPT_RESETS_BOUND).contains(&self.max_pending_accept_resets) {
            return Err(err(
                "max_pending_accept_resets",
                format!(
                    "{} is outside 1 ..= {MAX_PENDING_ACCEPT_RESETS_BOUND}",
                    self.max_pending_accept_resets
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        connections: ConnectionLimits,
    }

    fn parse(text: &str) -> Result<ConnectionLimits, ConfigError> {
        let config: Config = crate::parse_toml(text, "test.toml")?;
        config.connections.validate("test.toml")?;
        Ok(config.connections)
    }

    #[test]
    fn defaults_and_humantime() {
        assert_eq!(parse("").unwrap(), ConnectionLimits::default());
        assert_eq!(parse("[connections]\n").unwrap(), ConnectionLimits::default());
        let c = parse("[connections]\nhandshake_timeout = \"500ms\"\nmax_handshakes = 64\nmax_handshakes_per_source = 8\nmax_concurrent_streams = 16\nmax_pending_accept_resets = 40\n").unwrap();
        assert_eq!(
            c,
            ConnectionLimits {
                handshake_timeout: Duration::from_millis(500),
                max_handshakes: 64,
                max_handshakes_per_source: 8,
                max_concurrent_streams: 16,
                max_pending_accept_resets: 40,
            }
        );
        // It serializes back to what it reads.
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("handshake_timeout = \"500ms\""), "{text}");
        let back: ConnectionLimits = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn out_of_bounds_values_name_the_key_and_the_bound() {
        let cases = [
            (
                "handshake_timeout = \"10ms\"",
                "connections.handshake_timeout",
                "100ms ..= 60s",
            ),
            (
                "handshake_timeout = \"2m\"",
                "connections.handshake_timeout",
                "100ms ..= 60s",
            ),
            ("max_handshakes = 0", "connections.max_handshakes", "1 ..= 10000"),
            ("max_handshakes = 1000000", "connections.max_handshakes", "1 ..= 10000"),
            (
                "max_handshakes_per_source = 0",
                "connections.max_handshakes_per_source",
                "1 ..=",
            ),
            (
                "max_handshakes = 10\nmax_handshakes_per_source = 11",
                "connections.max_handshakes_per_source",
                "connections.max_handshakes (10)",
            ),
            (
                "max_concurrent_streams = 0",
                "connections.max_concurrent_streams",
                "1 ..= 10000",
            ),
            (
                "max_concurrent_streams = 20000",
                "connections.max_concurrent_streams",
                "1 ..= 10000",
            ),
            (
                "max_pending_accept_resets = 0",
                "connections.max_pending_accept_resets",
                "1 ..= 1024",
            ),
            (
                "max_pending_accept_resets = 5000",
                "connections.max_pending_accept_resets",
                "1 ..= 1024",
            ),
        ];
        for (line, key, bound) in cases {
            let err = parse(&format!("[connections]\n{line}\n")).unwrap_err();
            assert_eq!(err.key, key, "{line}: {err}");
            assert!(err.reason.contains(bound), "{line}: {err}");
            assert_eq!(err.path, "test.toml");
        }
        let err = parse("[connections]\nmax_streams = 5\n").unwrap_err();
        assert!(err.reason.contains("unknown field"), "{err}");
        let err = parse("[connections]\nhandshake_timeout = 3\n").unwrap_err();
        assert!(
            err.to_string().contains("handshake_timeout") || err.key.contains('3'),
            "{err}"
        );
    }
}
