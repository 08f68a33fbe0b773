//! Deterministic randomness: every row draws from its own generator,
//! seeded from a hash of (seed, region, dataset, index), so any row can be
//! computed without generating the ones before it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash step.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of words into one.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED_0FDE_17A0_5EED_u64, |h, &p| splitmix64(h ^ p))
}

/// A region or city code as a number, for hashing.
pub(crate) fn code_key(code: &str) -> u64 {
    code.bytes()
        .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)))
}

/// The generator of row `index` of `dataset` (a small tag) in `region`.
pub(crate) fn row_rng(seed: u64, region: &str, dataset: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(&[seed, code_key(region), dataset, index]))
}

/// A uniform number in [0, 1) from a hash.
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal number from a hash (Box-Muller).
pub(crate) fn normal_from_hash(h: u64) -> f64 {
    let u1 = unit(splitmix64(h)).max(1e-12);
    let u2 = unit(splitmix64(h ^ 0xA5A5_A5A5));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A standard normal number.
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal number with the given median and log-space sigma.
pub(crate) fn log_normal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// Index drawn with probability proportional to `weights` (not all zero).
pub(crate) fn weighted(rng: &mut impl Rng, weights: impl Iterator<Item = f64> + Clone) -> usize {
    let total: f64 = weights.clone().sum();
    let mut x = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if x < w {
            return i;
        }
        x -= w;
        last = i;
    }
    last
}

/// Smooth noise over time: standard normal values at knots every `period`
/// units, joined by smoothstep interpolation. Same key and time, same value.
pub(crate) fn value_noise(key: u64, t: f64, period: f64) -> f64 {
    let x = t / period;
    let k = x.floor();
    let f = x - k;
    let s = f * f * (3.0 - 2.0 * f);
    let k = k as i64 as u64;
    let a = normal_from_hash(mix(&[key, k]));
    let b = normal_from_hash(mix(&[key, k.wrapping_add(1)]));
    a + (b - a) * s
}
