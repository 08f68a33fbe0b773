//! The mask vocabulary: named ways of hiding most of a value, applied in
//! the encoder as the permit says, so that a masked value never leaves the
//! region in the clear.
//!
//! | name        | applies to          | output                                             |
//! |-------------|---------------------|----------------------------------------------------|
//! | `keep(a,b)` | strings             | first `a` and last `b` characters, the rest `*`    |
//! | `surname`   | strings             | first character, the rest `*` (`张伟明` → `张**`) |
//! | `year`      | dates, timestamps   | the first day of the year: `1987-01-01`, 1 Jan 00:00 UTC (a date stays a valid date) |
//! | `round(N)`  | integers, doubles   | the nearest multiple of 10^N (`round(4)` of 1 234 567 is 1 230 000) |
//! | `hash`      | strings             | 16 hex characters of HMAC-SHA256, keyed per application |
//! | `redact`    | any                 | the field is left out of the rows                   |
//!
//! `hash` is keyed per application: the key is HMAC-SHA256(node secret,
//! application URI), the value HMAC-SHA256(key, value) truncated to 64 bits
//! in hex. One application sees the same value for the same input (it can
//! join on it); two applications see unrelated values.

use std::fmt;

use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use yrd_datasets::Cell;
use yrd_proto::schema::FieldType;

type HmacSha256 = Hmac<Sha256>;

/// Largest `N` of `round(N)`: 10^18 still fits an `i64`.
pub const MAX_ROUND_DIGITS: u32 = 18;
/// Largest `a` or `b` of `keep(a,b)`.
pub const MAX_KEEP: usize = 64;
/// Hex characters of a `hash` value (64 bits).
pub const HASH_HEX_LEN: usize = 16;

/// A named way of hiding most of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Keeps the first character (a surname): `张伟明` → `张**`.
    Surname,
    /// Keeps the first `first` and the last `last` characters, never
    /// revealing the whole value: `keep(1,1)` of `ab` is `a*`.
    Keep {
        /// Characters kept at the start.
        first: usize,
        /// Characters kept at the end.
        last: usize,
    },
    /// Dates and timestamps to the first day of their year.
    Year,
    /// Numbers to the nearest multiple of 10^digits.
    Round {
        /// The power of ten.
        digits: u32,
    },
    /// A per-application keyed hash: joinable within one application only.
    Hash,
    /// Left out of the rows.
    Redact,
}

/// A mask name that does not parse, or a mask that does not fit a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MaskError(pub String);

impl Mask {
    /// The mask of secret values by default: `keep(1,1)`.
    pub const KEEP_ENDS: Mask = Mask::Keep { first: 1, last: 1 };

    /// Parses a mask name: `keep(6,4)`, `surname`, `year`, `round(4)`,
    /// `hash`, `redact` (spaces inside the parentheses are allowed).
    pub fn parse(text: &str) -> Result<Self, MaskError> {
        let t = text.trim();
        let (name, args) = match t.split_once('(') {
            None => (t, None),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix(')')
                    .ok_or_else(|| MaskError(format!("mask {t:?}: missing `)`")))?;
                (name.trim(), Some(inner))
            }
        };
        let numbers = |inner: &str| -> Result<Vec<u64>, MaskError> {
            inner
                .split(',')
                .map(|n| {
                    n.trim()
                        .parse::<u64>()
                        .map_err(|_| MaskError(format!("mask {t:?}: {:?} is not a whole number", n.trim())))
                })
                .collect()
        };
        let mask = match (name, args) {
            ("surname", None) => Self::Surname,
            ("year", None) => Self::Year,
            ("hash", None) => Self::Hash,
            ("redact", None) => Self::Redact,
            ("keep", Some(inner)) => match *numbers(inner)?.as_slice() {
                [a, b] if a as usize <= MAX_KEEP && b as usize <= MAX_KEEP => Self::Keep {
                    first: a as usize,
                    last: b as usize,
                },
                [_, _] => return Err(MaskError(format!("mask {t:?}: keep at most {MAX_KEEP} characters"))),
                _ => {
                    return Err(MaskError(format!(
                        "mask {t:?}: keep takes two numbers, keep(first,last)"
                    )));
                }
            },
            ("round", Some(inner)) => match *numbers(inner)?.as_slice() {
                [n] if n <= u64::from(MAX_ROUND_DIGITS) => Self::Round { digits: n as u32 },
                [_] => return Err(MaskError(format!("mask {t:?}: round takes 0..={MAX_ROUND_DIGITS}"))),
                _ => return Err(MaskError(format!("mask {t:?}: round takes one number, round(N)"))),
            },
            ("surname" | "year" | "hash" | "redact", Some(_)) => {
                return Err(MaskError(format!("mask {t:?}: {name} takes no arguments")));
            }
            ("keep" | "round", None) => return Err(MaskError(format!("mask {t:?}: {name} needs arguments"))),
            _ => {
                return Err(MaskError(format!(
                    "unknown mask {t:?} (known: keep(a,b), surname, year, round(N), hash, redact)"
                )));
            }
        };
        Ok(mask)
    }

    /// The mask's name, as the policy file writes it: `surname`, `keep(1,1)`.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Whether the mask can hide values of type `ty`.
    pub fn check_type(&self, ty: FieldType) -> Result<(), MaskError> {
        let fits = match self {
            Self::Surname | Self::Keep { .. } | Self::Hash => ty == FieldType::String,
            Self::Year => matches!(ty, FieldType::Date | FieldType::Timestamp),
            Self::Round { .. } => ty.is_numeric(),
            Self::Redact => true,
        };
        if fits {
            Ok(())
        } else {
            Err(MaskError(format!(
                "mask {self} does not apply to a {} field",
                ty.name()
            )))
        }
    }

    /// Masks a text value with `keep` or `surname` (others withhold it).
    pub fn apply_text(&self, text: &str) -> String {
        let n = text.chars().count();
        let (first, last) = match *self {
            Self::Surname => (1, 0),
            Self::Keep { first, last } => (first, last),
            _ => (0, 0),
        };
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                // A short value is never shown whole: what the start keeps,
                // the end does not also keep.
                let kept = i < first || (i + last >= n && n > first + last);
                if kept { c } else { '*' }
            })
            .collect()
    }

    /// Masks a cell; `key` is the application's key for `hash`. `None`
    /// withholds the value (a redacted field, a cell the mask does not
    /// fit, a hash without a key).
    pub fn apply(&self, cell: &Cell, key: Option<&AppKey>) -> Option<Cell> {
        match (self, cell) {
            (Self::Surname | Self::Keep { .. }, Cell::Text(s)) => Some(Cell::Text(self.apply_text(s))),
            (Self::Hash, Cell::Text(s)) => key.map(|k| Cell::Text(k.hash(s))),
            (Self::Year, Cell::Text(s)) => year_of_date(s).map(Cell::Text),
            (Self::Year, Cell::Time(secs) | Cell::Int(secs)) => Some(Cell::Time(year_start(*secs))),
            (Self::Round { digits }, Cell::Int(i)) => Some(Cell::Int(round_int(*i, *digits))),
            (Self::Round { digits }, Cell::Real(r)) => Some(Cell::Real(round_real(*r, *digits))),
            _ => None,
        }
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Surname => f.write_str("surname"),
            Self::Keep { first, last } => write!(f, "keep({first},{last})"),
            Self::Year => f.write_str("year"),
            Self::Round { digits } => write!(f, "round({digits})"),
            Self::Hash => f.write_str("hash"),
            Self::Redact => f.write_str("redact"),
        }
    }
}

impl std::str::FromStr for Mask {
    type Err = MaskError;

    fn from_str(s: &str) -> Result<Self, MaskError> {
        Self::parse(s)
    }
}

/// One application's `hash` key: HMAC-SHA256(node secret, application URI).
/// Never logged (its `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey([u8; 32]);

impl AppKey {
    /// The key of application `subject_uri` under the node's `secret`.
    pub fn derive(secret: &[u8], subject_uri: &str) -> Self {
        let mut mac = keyed(secret);
        mac.update(subject_uri.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// The hex of the first 64 bits of HMAC-SHA256(key, value).
    pub fn hash(&self, value: &str) -> String {
        let mut mac = keyed(&self.0);
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(HASH_HEX_LEN);
        for b in &digest[..HASH_HEX_LEN / 2] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// HMAC keyed with `key` as HMAC itself derives a block key (hashed when
/// longer than a block, zero-padded otherwise): keying with a full block is
/// infallible, where keying with a slice returns a `Result`.
fn keyed(key: &[u8]) -> HmacSha256 {
    let mut block = Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block)
}

/// `YYYY-MM-DD` → `YYYY-01-01`; `None` when the text is not a date.
fn year_of_date(s: &str) -> Option<String> {
    let year = s.get(..4).filter(|y| y.bytes().all(|b| b.is_ascii_digit()))?;
    Some(format!("{year}-01-01"))
}

/// The first second of the UTC year holding `secs`.
fn year_start(secs: i64) -> i64 {
    let year = time::OffsetDateTime::from_unix_timestamp(secs).map_or(1970, |t| t.year());
    time::Date::from_calendar_date(year, time::Month::January, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(0)
}

fn round_int(i: i64, digits: u32) -> i64 {
    let step = 10i64.saturating_pow(digits);
    if step <= 1 {
        return i;
    }
    let half = step / 2;
    let r = i.rem_euclid(step);
    let down = i - r;
    if r >= half { down.saturating_add(step) } else { down }
}

fn round_real(r: f64, digits: u32) -> f64 {
    let step = 10f64.powi(digits as i32);
    (r / step).round() * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in [
            "keep(6,4)",
            "surname",
            "year",
            "round(4)",
            "hash",
            "redact",
            "keep(0,0)",
        ] {
            let m = Mask::parse(name).unwrap();
            assert_eq!(m.name(), name);
            assert_eq!(name.parse::<Mask>().unwrap(), m);
        }
        assert_eq!(
            Mask::parse(" keep( 3 , 4 ) ").unwrap(),
            Mask::Keep { first: 3, last: 4 }
        );
        for (bad, says) in [
            ("keep(6)", "two numbers"),
            ("keep(a,4)", "whole number"),
            ("keep(6,4", "missing `)`"),
            ("round", "needs arguments"),
            ("round(99)", "0..=18"),
            ("hash(1)", "no arguments"),
            ("blur", "unknown mask"),
            ("keep(100,1)", "at most"),
        ] {
            let e = Mask::parse(bad).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn each_mask_hides_what_it_says() {
        let text = |s: &str| Cell::Text(s.to_owned());
        assert_eq!(Mask::Surname.apply(&text("张伟明"), None), Some(text("张**")));
        assert_eq!(
            Mask::Keep { first: 6, last: 4 }.apply(&text("320102198001011234"), None),
            Some(text("320102********1234"))
        );
        assert_eq!(
            Mask::Keep { first: 3, last: 4 }.apply(&text("13812345678"), None),
            Some(text("138****5678"))
        );
        assert_eq!(Mask::KEEP_ENDS.apply_text("ab"), "a*");
        assert_eq!(Mask::KEEP_ENDS.apply_text("a"), "a");
        assert_eq!(Mask::Year.apply(&text("1987-06-30"), None), Some(text("1987-01-01")));
        // 2025-03-01T08:00:00Z → 2025-01-01T00:00:00Z
        assert_eq!(
            Mask::Year.apply(&Cell::Time(1_740_816_000), None),
            Some(Cell::Time(1_735_689_600))
        );
        let r4 = Mask::Round { digits: 4 };
        assert_eq!(r4.apply(&Cell::Int(1_234_567), None), Some(Cell::Int(1_230_000)));
        assert_eq!(r4.apply(&Cell::Int(1_235_000), None), Some(Cell::Int(1_240_000)));
        assert_eq!(r4.apply(&Cell::Int(-1_234_567), None), Some(Cell::Int(-1_230_000)));
        assert_eq!(r4.apply(&Cell::Real(1_234_567.8), None), Some(Cell::Real(1_230_000.0)));
        assert_eq!(
            Mask::Round { digits: 0 }.apply(&Cell::Real(2.6), None),
            Some(Cell::Real(3.0))
        );
        assert_eq!(Mask::Redact.apply(&text("x"), None), None);
        // A mask that does not fit the cell withholds it.
        assert_eq!(Mask::Surname.apply(&Cell::Int(3), None), None);
        assert_eq!(Mask::Hash.apply(&text("x"), None), None);
    }

    #[test]
    fn hash_is_joinable_within_one_application_only() {
        let secret = b"node-secret-0123456789abcdef";
        let a = AppKey::derive(secret, "spiffe://yrd.mesh/app/a");
        let b = AppKey::derive(secret, "spiffe://yrd.mesh/app/b");
        let v = Cell::Text("320102198001011234".into());
        let (ha, ha2, hb) = (
            Mask::Hash.apply(&v, Some(&a)),
            Mask::Hash.apply(&v, Some(&a)),
            Mask::Hash.apply(&v, Some(&b)),
        );
        assert_eq!(ha, ha2);
        assert_ne!(ha, hb);
        let Some(Cell::Text(h)) = ha else { panic!() };
        assert_eq!(h.len(), HASH_HEX_LEN);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.hash("x"), a.hash("y"));
        // Another node secret gives other values for the same application.
        assert_ne!(
            AppKey::derive(b"other", "spiffe://yrd.mesh/app/a").hash("x"),
            a.hash("x")
        );
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.0)));
    }

    #[test]
    fn masks_fit_field_types() {
        assert!(Mask::Hash.check_type(FieldType::String).is_ok());
        assert!(Mask::Hash.check_type(FieldType::Double).is_err());
        assert!(Mask::Year.check_type(FieldType::Date).is_ok());
        assert!(Mask::Year.check_type(FieldType::String).is_err());
        assert!(Mask::Round { digits: 2 }.check_type(FieldType::Int).is_ok());
        let e = Mask::Round { digits: 2 }.check_type(FieldType::String).unwrap_err();
        assert_eq!(e.0, "mask round(2) does not apply to a string field");
        assert!(Mask::Redact.check_type(FieldType::Bool).is_ok());
    }
}
