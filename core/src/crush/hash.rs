//! The integer arithmetic CRUSH stands on, fixed forever: the rjenkins1 hashes of two
//! and three inputs, and a `log2` in fixed point that every platform computes alike,
//! for the straw2 draws (the [`crate::crush`] module doc says why each is as it is).

use crate::pg::jenkins_mix;

const HASH_SEED: u32 = 1_315_423_911;
const HASH_X: u32 = 231_232;
const HASH_Y: u32 = 1_232;

/// The CRUSH hash of two inputs (rjenkins1 pattern; fixed forever).
pub fn crush_hash2(a: u32, b: u32) -> u32 {
    let hash = HASH_SEED ^ a ^ b;
    let (a, b, hash) = jenkins_mix(a, b, hash);
    let (_, _, hash) = jenkins_mix(HASH_X, a, hash);
    let (_, _, hash) = jenkins_mix(b, HASH_Y, hash);
    hash
}

/// The CRUSH hash of three inputs, `(x, item, r)` (rjenkins1 pattern; fixed forever).
pub fn crush_hash3(a: u32, b: u32, c: u32) -> u32 {
    let hash = HASH_SEED ^ a ^ b ^ c;
    let (a, b, hash) = jenkins_mix(a, b, hash);
    let (c, x, hash) = jenkins_mix(c, HASH_X, hash);
    let (y, _, hash) = jenkins_mix(HASH_Y, a, hash);
    let (_, _, hash) = jenkins_mix(b, x, hash);
    let (_, _, hash) = jenkins_mix(y, c, hash);
    hash
}

/// `log2((hash + 1) / 2^32)` in 32.32 fixed point: a value in `[-32 * 2^32, 0]`.
///
/// Integer-only, so identical on every platform. The fraction is found by squaring the
/// mantissa (kept in `[1, 2)` with 62 fraction bits) 32 times: each squaring that
/// reaches 2 contributes a 1 bit. The result is exact to about 2^-30.
pub fn log2_fixed(hash: u32) -> i64 {
    let value = u64::from(hash) + 1;
    let int_part = i64::from(63 - value.leading_zeros());
    let mut mantissa = u128::from(value) << (62 - int_part);
    let mut fraction: i64 = 0;
    for _ in 0..32 {
        mantissa = (mantissa * mantissa) >> 62;
        fraction <<= 1;
        if mantissa >= 1 << 63 {
            fraction |= 1;
            mantissa >>= 1;
        }
    }
    ((int_part - 32) << 32) + fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not our own output: each value is what Ceph's `crush_hash32_rjenkins1_2` and
    /// `_3` (src/crush/hash.c) return for the same inputs, computed with a C
    /// transcription of that file.
    #[test]
    fn hash_golden_vectors() {
        assert_eq!(crush_hash2(0, 0), 0x19ad_4ce9);
        assert_eq!(crush_hash2(1, 2), 0xb78d_ee9c);
        assert_eq!(crush_hash2(u32::MAX, 7), 0xab5c_cd1e);
        assert_eq!(crush_hash2(12345, (-3i32) as u32), 0x8607_7b37);
        assert_eq!(crush_hash3(0, 0, 0), 0x7a3b_f3b2);
        assert_eq!(crush_hash3(1, 2, 3), 0x735a_d42b);
        assert_eq!(crush_hash3(u32::MAX, u32::MAX, 49), 0xa7a0_4713);
        assert_eq!(crush_hash3(123_456, 7, 0), 0xa2ba_b3b9);
    }

    #[test]
    fn log2_fixed_matches_float_log() {
        assert_eq!(log2_fixed(u32::MAX), 0);
        assert_eq!(log2_fixed(0), -32 << 32);
        assert_eq!(log2_fixed((1 << 31) - 1), -1 << 32);
        let mut value: u32 = 1;
        for _ in 0..100_000 {
            value = value.wrapping_mul(2_654_435_761).wrapping_add(12345);
            let exact = ((f64::from(value) + 1.0) / 4_294_967_296.0).log2();
            let fixed = log2_fixed(value) as f64 / 4_294_967_296.0;
            assert!((exact - fixed).abs() < 1e-8, "{value}: {exact} vs {fixed}");
        }
        // Monotonic over a dense sample, so draws order like the real logarithm.
        let mut previous = i64::MIN;
        for value in (0..u32::MAX).step_by(65_537) {
            let log = log2_fixed(value);
            assert!(log >= previous, "{value}");
            previous = log;
        }
    }
}
