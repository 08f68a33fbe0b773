//! Page tokens: opaque, signed, expiring, and bound to the query they came
//! from. A token holds, per region, the sort key of the last row returned,
//! so that the next page starts right after it (keyset paging: page N costs
//! what page 1 costs) and any gateway replica holding the secret can serve
//! it.
//!
//! Format: URL-safe base64 (no padding) of
//! `version || payload || HMAC-SHA256(version || payload)`, where the
//! payload is a prost message holding the query fingerprint, the expiry and
//! the cursors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::Key;
use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::{Digest, Sha256};
use yrd_proto::datetime;
use yrd_proto::mesh::{FilterExpr, OrderKey};

use crate::QueryError;

type HmacSha256 = Hmac<Sha256>;

/// The token format version, the first byte of every token.
const VERSION: u8 = 1;
/// Length of the HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// Domain separation for query fingerprints.
const FINGERPRINT_DOMAIN: &[u8] = b"yrd-mesh query fingerprint v1";

/// Where one region's rows resume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Region id.
    pub region: String,
    /// Sort key of the last row returned from the region; empty when none
    /// has been returned yet.
    pub last_key: Vec<u8>,
    /// Whether the region has no more rows.
    pub exhausted: bool,
}

/// Seals and opens page tokens with one secret.
#[derive(Clone)]
pub struct PageTokens {
    /// The keyed MAC, cloned for each token rather than re-keyed.
    mac: HmacSha256,
    ttl: Duration,
}

/// The signed contents of a token.
#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "vec", tag = "1")]
    fingerprint: Vec<u8>,
    /// Unix seconds after which the token is refused.
    #[prost(int64, tag = "2")]
    expires: i64,
    #[prost(message, repeated, tag = "3")]
    cursors: Vec<CursorRecord>,
}

/// A [`Cursor`] on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct CursorRecord {
    #[prost(string, tag = "1")]
    region: String,
    #[prost(bytes = "vec", tag = "2")]
    last_key: Vec<u8>,
    #[prost(bool, tag = "3")]
    exhausted: bool,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The MAC's state is derived from the secret: never print it.
        f.debug_struct("PageTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl PageTokens {
    /// Tokens signed with `secret`, valid for `ttl` after they are sealed.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            mac: HmacSha256::new(&block_key(secret)),
            ttl,
        }
    }

    /// A token for the next page of the query with this fingerprint.
    pub fn seal(&self, fingerprint: &[u8; 32], cursors: &[Cursor], now: SystemTime) -> String {
        let expires = unix_seconds(now).saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        let payload = Payload {
            fingerprint: fingerprint.to_vec(),
            expires,
            cursors: cursors
                .iter()
                .map(|c| CursorRecord {
                    region: c.region.clone(),
                    last_key: c.last_key.clone(),
                    exhausted: c.exhausted,
                })
                .collect(),
        };
        let mut bytes = Vec::with_capacity(1 + payload.encoded_len() + TAG_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&payload.encode_to_vec());
        let mut mac = self.mac.clone();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursors of a token, if it was sealed with this secret for the
    /// query with this fingerprint and has not expired.
    pub fn open(&self, token: &str, fingerprint: &[u8; 32], now: SystemTime) -> Result<Vec<Cursor>, QueryError> {
        let reason = |reason: &str| QueryError::PageToken {
            reason: reason.to_owned(),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| reason("is malformed"))?;
        if bytes.len() < 1 + TAG_LEN {
            return Err(reason("is malformed"));
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut mac = self.mac.clone();
        mac.update(signed);
        // verify_slice compares in constant time.
        mac.verify_slice(tag)
            .map_err(|_| reason("was not issued by this service or was altered"))?;
        let (&version, body) = signed.split_first().ok_or_else(|| reason("is malformed"))?;
        if version != VERSION {
            return Err(reason(
                "comes from an incompatible version of this service; start again from the first page",
            ));
        }
        let payload = Payload::decode(body).map_err(|_| reason("is malformed"))?;
        let expiry = UNIX_EPOCH + Duration::from_secs(u64::try_from(payload.expires).unwrap_or(0));
        if now >= expiry {
            return Err(QueryError::PageToken {
                reason: format!(
                    "expired at {}; start again from the first page",
                    datetime::format_timestamp(payload.expires)
                ),
            });
        }
        if payload.fingerprint.as_slice() != fingerprint.as_slice() {
            return Err(reason("belongs to a different query"));
        }
        Ok(payload
            .cursors
            .into_iter()
            .map(|c| Cursor {
                region: c.region,
                last_key: c.last_key,
                exhausted: c.exhausted,
            })
            .collect())
    }
}

/// A digest identifying a query for paging: the dataset, filter, order,
/// projection and regions. The page size is left out, so callers may change
/// it between pages; the regions are taken as a set.
pub fn query_fingerprint(
    dataset: &str,
    filter: Option<&FilterExpr>,
    order_keys: &[OrderKey],
    fields: &[String],
    regions: &[String],
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    // Every part is length-prefixed, so no two queries hash the same bytes.
    let mut part = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    part(FINGERPRINT_DOMAIN);
    part(dataset.as_bytes());
    match filter {
        None => part(&[0]),
        Some(expr) => {
            part(&[1]);
            part(&expr.encode_to_vec());
        }
    }
    part(&(order_keys.len() as u64).to_be_bytes());
    for key in order_keys {
        part(key.field.as_bytes());
        part(&[u8::from(key.descending)]);
    }
    part(&(fields.len() as u64).to_be_bytes());
    for field in fields {
        part(field.as_bytes());
    }
    let mut regions: Vec<&String> = regions.iter().collect();
    regions.sort();
    regions.dedup();
    part(&(regions.len() as u64).to_be_bytes());
    for region in regions {
        part(region.as_bytes());
    }
    hasher.finalize().into()
}

/// The secret as an HMAC block key, as HMAC itself derives it: hashed when
/// longer than a block, zero-padded otherwise. Keying with a full block is
/// infallible, where keying with a slice returns a `Result`.
fn block_key(secret: &[u8]) -> Key<HmacSha256> {
    let mut key = Key::<HmacSha256>::default();
    if secret.len() > key.len() {
        let digest = Sha256::digest(secret);
        key[..digest.len()].copy_from_slice(&digest);
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    key
}

fn unix_seconds(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_proto::mesh::{Comparison, Value, filter_expr, value};

    const TTL: Duration = Duration::from_secs(600);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn cursors() -> Vec<Cursor> {
        vec![
            Cursor {
                region: "310000".into(),
                last_key: vec![0x50, b'a', 0, 0xff, 0, 1],
                exhausted: false,
            },
            Cursor {
                region: "320000".into(),
                last_key: vec![],
                exhausted: true,
            },
        ]
    }

    fn reason(result: Result<Vec<Cursor>, QueryError>) -> String {
        match result {
            Err(QueryError::PageToken { reason }) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let tokens = PageTokens::new(b"secret", TTL);
        let fp = query_fingerprint("enterprise", None, &[], &[], &[]);
        let token = tokens.seal(&fp, &cursors(), at(1_740_816_000));
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_eq!(tokens.open(&token, &fp, at(1_740_816_000)), Ok(cursors()));
        assert_eq!(tokens.open(&token, &fp, at(1_740_816_599)), Ok(cursors()));
        assert_eq!(tokens.open(&tokens.seal(&fp, &[], at(5)), &fp, at(5)), Ok(vec![]));
        // Another replica with the same secret accepts it.
        assert_eq!(
            PageTokens::new(b"secret", TTL).open(&token, &fp, at(1_740_816_001)),
            Ok(cursors())
        );
    }

    #[test]
    fn every_altered_byte_is_detected() {
        let tokens = PageTokens::new(b"secret", TTL);
        let fp = [7; 32];
        let raw = URL_SAFE_NO_PAD.decode(tokens.seal(&fp, &cursors(), at(100))).unwrap();
        for i in 0..raw.len() {
            let mut altered = raw.clone();
            altered[i] ^= 0x01;
            let r = reason(tokens.open(&URL_SAFE_NO_PAD.encode(&altered), &fp, at(100)));
            assert_eq!(r, "was not issued by this service or was altered", "byte {i}");
        }
        // Truncated, or extended.
        let r = reason(tokens.open(&URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]), &fp, at(100)));
        assert_eq!(r, "was not issued by this service or was altered");
        let mut longer = raw.clone();
        longer.push(0);
        assert_eq!(reason(tokens.open(&URL_SAFE_NO_PAD.encode(&longer), &fp, at(100))), r);
    }

    #[test]
    fn other_secret_is_refused() {
        let fp = [1; 32];
        let token = PageTokens::new(b"secret", TTL).seal(&fp, &cursors(), at(100));
        let r = reason(PageTokens::new(b"other", TTL).open(&token, &fp, at(100)));
        assert_eq!(r, "was not issued by this service or was altered");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = PageTokens::new(b"secret", TTL);
        let fp = [1; 32];
        let token = tokens.seal(&fp, &cursors(), at(1_740_816_000));
        let r = reason(tokens.open(&token, &fp, at(1_740_816_600)));
        assert_eq!(r, "expired at 2025-03-01T08:10:00Z; start again from the first page");
        assert!(
            tokens
                .open(&token, &fp, at(1_740_816_600) - Duration::from_millis(1))
                .is_ok()
        );
        let instant = PageTokens::new(b"secret", Duration::ZERO);
        assert!(instant.open(&instant.seal(&fp, &[], at(10)), &fp, at(10)).is_err());
    }

    #[test]
    fn other_query_is_refused() {
        let tokens = PageTokens::new(b"secret", TTL);
        let token = tokens.seal(&[1; 32], &cursors(), at(100));
        assert_eq!(
            reason(tokens.open(&token, &[2; 32], at(100))),
            "belongs to a different query"
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let tokens = PageTokens::new(b"secret", TTL);
        for garbage in ["", "!!!", "not a token", "AAAA", "YWJj", &"A".repeat(43)] {
            assert_eq!(
                reason(tokens.open(garbage, &[0; 32], at(100))),
                "is malformed",
                "{garbage}"
            );
        }
        // Signed but not a payload: only a bug could produce it, but it
        // must not be accepted.
        let mut bytes = vec![VERSION, 0xff, 0xff];
        let mut mac = tokens.mac.clone();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(
            reason(tokens.open(&URL_SAFE_NO_PAD.encode(&bytes), &[0; 32], at(100))),
            "is malformed"
        );
        let mut other_version = vec![VERSION + 1];
        let mut mac = tokens.mac.clone();
        mac.update(&other_version);
        other_version.extend_from_slice(&mac.finalize().into_bytes());
        assert!(reason(tokens.open(&URL_SAFE_NO_PAD.encode(&other_version), &[0; 32], at(100))).contains("version"));
    }

    #[test]
    fn block_key_matches_hmac_keying() {
        for len in [0, 1, 32, 63, 64, 65, 200] {
            let secret: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = HmacSha256::new(&block_key(&secret));
            let mut theirs = HmacSha256::new_from_slice(&secret).unwrap();
            ours.update(b"message");
            theirs.update(b"message");
            assert_eq!(
                ours.finalize().into_bytes(),
                theirs.finalize().into_bytes(),
                "secret of {len} bytes"
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", PageTokens::new(b"secret", TTL));
        assert!(shown.starts_with("PageTokens { ttl: 600s"), "{shown}");
    }

    #[test]
    fn fingerprints_distinguish_queries() {
        let filter = |v: &str| FilterExpr {
            kind: Some(filter_expr::Kind::Comparison(Comparison {
                field: "city".into(),
                op: 1,
                value: Some(Value {
                    kind: Some(value::Kind::StringValue(v.into())),
                }),
                prefix: false,
            })),
        };
        let key = |f: &str, d: bool| OrderKey {
            field: f.into(),
            descending: d,
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (a, b) = (filter("a"), filter("b"));
        let base = query_fingerprint(
            "enterprise",
            Some(&a),
            &[key("name", false)],
            &s(&["name"]),
            &s(&["310000"]),
        );
        assert_eq!(
            base,
            query_fingerprint(
                "enterprise",
                Some(&a),
                &[key("name", false)],
                &s(&["name"]),
                &s(&["310000"])
            )
        );
        let variants = [
            query_fingerprint(
                "air_quality",
                Some(&a),
                &[key("name", false)],
                &s(&["name"]),
                &s(&["310000"]),
            ),
            query_fingerprint(
                "enterprise",
                Some(&b),
                &[key("name", false)],
                &s(&["name"]),
                &s(&["310000"]),
            ),
            query_fingerprint(
                "enterprise",
                None,
                &[key("name", false)],
                &s(&["name"]),
                &s(&["310000"]),
            ),
            query_fingerprint(
                "enterprise",
                Some(&a),
                &[key("name", true)],
                &s(&["name"]),
                &s(&["310000"]),
            ),
            query_fingerprint("enterprise", Some(&a), &[], &s(&["name"]), &s(&["310000"])),
            query_fingerprint("enterprise", Some(&a), &[key("name", false)], &[], &s(&["310000"])),
            query_fingerprint("enterprise", Some(&a), &[key("name", false)], &s(&["name"]), &[]),
            query_fingerprint(
                "enterprise",
                Some(&a),
                &[key("name", false)],
                &s(&["name"]),
                &s(&["320000"]),
            ),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(&base, v, "variant {i}");
        }
        // Length prefixes keep parts from running into each other.
        assert_ne!(
            query_fingerprint("x", None, &[], &s(&["ab", "c"]), &[]),
            query_fingerprint("x", None, &[], &s(&["a", "bc"]), &[])
        );
        // An empty filter is not no filter.
        assert_ne!(
            query_fingerprint("x", None, &[], &[], &[]),
            query_fingerprint("x", Some(&FilterExpr::default()), &[], &[], &[])
        );
        // Regions are a set.
        assert_eq!(
            query_fingerprint("x", None, &[], &[], &s(&["320000", "310000"])),
            query_fingerprint("x", None, &[], &[], &s(&["310000", "320000", "310000"]))
        );
    }
}
