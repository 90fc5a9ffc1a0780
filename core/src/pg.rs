//! Object → placement group (PG) mapping.
//!
//! Every object of a pool lives in exactly one PG; CRUSH then places whole PGs on
//! OSDs (see [`crate::crush`]). This module holds the first step, which every client,
//! OSD and monitor must compute identically, forever:
//!
//! ```text
//! pg = PgId { pool, seed: stable_mod(object_hash(object_name), pg_num, pg_num_mask(pg_num)) }
//! ```
//!
//! # The object hash (fixed forever)
//!
//! [`object_hash`] is Bob Jenkins' 1996 `lookup2` hash ("hash()" in `lookup2.c`,
//! public domain) with initial value 0, i.e. the function Ceph calls
//! `ceph_str_hash_rjenkins`:
//!
//! * state `a = b = 0x9e3779b9` (the golden ratio), `c = 0`;
//! * while at least 12 bytes remain: add bytes 0..4, 4..8, 8..12 as little-endian
//!   `u32`s to `a`, `b`, `c`, then run the 96-bit `mix(a, b, c)`;
//! * add the total length to `c`; add the remaining 0..=11 bytes little-endian into
//!   `a` (bytes 0..4), `b` (bytes 4..8) and `c` shifted left by 8 bits (bytes 8..11,
//!   the low byte of `c` being reserved for the length); `mix` once more; return `c`.
//!
//! `mix` is Jenkins' nine-step subtract/xor/shift round with shifts
//! 13, 8, 13, 12, 16, 5, 3, 10, 15 (`jenkins_mix` below). All arithmetic wraps mod 2^32.
//!
//! Changing this function (or [`stable_mod`]) would move every object of every existing
//! pool to a different PG, i.e. make all stored data unreachable. The golden vectors in
//! the tests pin it; two of them (`"foo"` → `0x7fc1f406`, `"test-object-1"` →
//! `0x74dc35e2`) match what Ceph clusters print in `ceph osd map`, which is an
//! independent check that we implement the published function and not a look-alike.
//!
//! # Why `stable_mod` and not `%`
//!
//! With `hash % pg_num`, changing `pg_num` reshuffles almost every object. With
//! [`stable_mod`] (Ceph's `ceph_stable_mod`), growing `pg_num` from `n` to `n' > n`
//! *splits* PGs: every object either stays in its PG or moves to one of that PG's
//! children (seeds in `n..n'`), so an OSD can split a PG's collection locally.
//! [`split_children`] and [`split_parent`] name those relations.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::map::Pool;

/// A placement group: a pool and a seed in `0..pg_num`.
///
/// Displayed as `"{pool}.{seed:x}"`, e.g. `3.1f`, the form operators type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgId {
    /// Pool id.
    pub pool: u32,
    /// PG number inside the pool, in `0..pg_num`.
    pub seed: u32,
}

impl PgId {
    /// Builds a PG id.
    pub fn new(pool: u32, seed: u32) -> Self {
        PgId { pool, seed }
    }
}

impl fmt::Display for PgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:x}", self.pool, self.seed)
    }
}

/// Why a string is not a PG id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgIdParseError {
    /// The text has no `.` between pool and seed.
    #[error("pg id {0:?} has no '.': write it as <pool>.<seed in hex>, e.g. 3.1f")]
    MissingDot(String),
    /// The pool part is not a decimal `u32`.
    #[error("pg id {0:?}: the pool before '.' must be a decimal number, e.g. 3.1f")]
    BadPool(String),
    /// The seed part is not a hexadecimal `u32`.
    #[error("pg id {0:?}: the seed after '.' must be hexadecimal, e.g. 3.1f")]
    BadSeed(String),
}

impl FromStr for PgId {
    type Err = PgIdParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (pool, seed) = text
            .split_once('.')
            .ok_or_else(|| PgIdParseError::MissingDot(text.to_owned()))?;
        // `u32::from_str` accepts a leading '+'; an id is never written that way.
        let digits_only =
            |part: &str, radix: u32| !part.is_empty() && part.chars().all(|ch| ch.is_digit(radix));
        if !digits_only(pool, 10) {
            return Err(PgIdParseError::BadPool(text.to_owned()));
        }
        if !digits_only(seed, 16) {
            return Err(PgIdParseError::BadSeed(text.to_owned()));
        }
        let pool = pool
            .parse::<u32>()
            .map_err(|_| PgIdParseError::BadPool(text.to_owned()))?;
        let seed =
            u32::from_str_radix(seed, 16).map_err(|_| PgIdParseError::BadSeed(text.to_owned()))?;
        Ok(PgId { pool, seed })
    }
}

/// Jenkins' 96-bit mixing round, shared by [`object_hash`] and the CRUSH hashes.
///
/// Every bit of `a`, `b` and `c` affects every bit of the result; the shift sequence
/// (13, 8, 13, 12, 16, 5, 3, 10, 15) is part of the fixed hash definition.
pub(crate) fn jenkins_mix(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 13);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 8);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 13);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 12);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 16);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 5);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 3);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 10);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 15);
    (a, b, c)
}

/// Little-endian `u32` from up to four bytes (missing high bytes are zero).
fn le_u32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .enumerate()
        .fold(0u32, |acc, (i, &byte)| acc | (u32::from(byte) << (8 * i)))
}

/// The object-name hash, fixed forever: Jenkins `lookup2` with initial value 0.
///
/// See the module documentation for the exact definition and why it may never change.
pub fn object_hash(object_name: &[u8]) -> u32 {
    const GOLDEN_RATIO: u32 = 0x9e37_79b9;
    let (mut a, mut b, mut c) = (GOLDEN_RATIO, GOLDEN_RATIO, 0u32);
    let mut blocks = object_name.chunks_exact(12);
    for block in &mut blocks {
        a = a.wrapping_add(le_u32(&block[0..4]));
        b = b.wrapping_add(le_u32(&block[4..8]));
        c = c.wrapping_add(le_u32(&block[8..12]));
        (a, b, c) = jenkins_mix(a, b, c);
    }
    let tail = blocks.remainder();
    // The length is hashed as a u32; names longer than 4 GiB wrap, as in the reference.
    c = c.wrapping_add(object_name.len() as u32);
    a = a.wrapping_add(le_u32(tail));
    b = b.wrapping_add(le_u32(tail.get(4..).unwrap_or(&[])));
    c = c.wrapping_add(le_u32(tail.get(8..).unwrap_or(&[])) << 8);
    let (_, _, c) = jenkins_mix(a, b, c);
    c
}

/// Ceph's `ceph_stable_mod`: `x` reduced into `0..b`, where `bmask = 2^k - 1 >= b - 1`.
///
/// Values whose low `k` bits fall below `b` keep them; the others fold onto their
/// `k - 1` low bits. Growing `b` therefore only ever moves a value from PG `p` to a
/// PG `p + 2^j`, which is what makes PG splitting possible.
pub fn stable_mod(x: u32, b: u32, bmask: u32) -> u32 {
    if x & bmask < b {
        x & bmask
    } else {
        x & (bmask >> 1)
    }
}

/// The mask [`stable_mod`] needs for `pg_num`: the next power of two, minus one.
pub fn pg_num_mask(pg_num: u32) -> u32 {
    match pg_num.checked_next_power_of_two() {
        Some(power) => power - 1,
        None => u32::MAX,
    }
}

/// The PG seed (`0..pg_num`) of a raw object hash for a pool of `pg_num` PGs.
pub fn hash_to_pg_seed(hash: u32, pg_num: u32) -> u32 {
    stable_mod(hash, pg_num, pg_num_mask(pg_num))
}

/// The PG an object belongs to in `pool`.
pub fn object_to_pg(pool: &Pool, object_name: &[u8]) -> PgId {
    PgId {
        pool: pool.id,
        seed: hash_to_pg_seed(object_hash(object_name), pool.pg_num),
    }
}

/// The PG that `pg` was split from when `pg_num` grew from `old_pg_num` (itself if none).
pub fn split_parent(pg: PgId, old_pg_num: u32) -> PgId {
    PgId {
        pool: pg.pool,
        seed: hash_to_pg_seed(pg.seed, old_pg_num),
    }
}

/// The PGs that receive part of `pg`'s objects when `pg_num` grows from `old_pg_num`
/// to `new_pg_num` (empty if none, or if `new_pg_num <= old_pg_num`).
pub fn split_children(pg: PgId, old_pg_num: u32, new_pg_num: u32) -> Vec<PgId> {
    (old_pg_num..new_pg_num)
        .filter(|&seed| hash_to_pg_seed(seed, old_pg_num) == pg.seed)
        .map(|seed| PgId {
            pool: pg.pool,
            seed,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pinned forever: a change here means every stored object moved PG.
    const GOLDEN: &[(&[u8], u32)] = &[
        (b"", 0xbd49_d10d),
        (b"a", 0x29ee_c818),
        (b"foo", 0x7fc1_f406),
        (b"test-object-1", 0x74dc_35e2),
        (b"hello world!", 0x1ecc_b293),
        (b"0123456789ab", 0x92f3_1ad0),
        (b"1.00000000", 0x6b2c_daff),
        (b"rbd_data.1234567890abcdef.0000000000000001", 0x44a2_330d),
    ];

    #[test]
    fn object_hash_golden_vectors() {
        for &(name, want) in GOLDEN {
            assert_eq!(
                object_hash(name),
                want,
                "object_hash({:?})",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn stable_mod_examples() {
        // pg_num 12 → mask 15: low nibbles 0..12 stay, 12..16 fold onto 4..8.
        assert_eq!(stable_mod(0x1b, 12, 15), 0xb);
        assert_eq!(stable_mod(0x1c, 12, 15), 0x4);
        assert_eq!(stable_mod(0xff, 12, 15), 0x7);
        assert_eq!(stable_mod(5, 1, 0), 0);
        assert_eq!(pg_num_mask(1), 0);
        assert_eq!(pg_num_mask(12), 15);
        assert_eq!(pg_num_mask(16), 15);
        assert_eq!(pg_num_mask(17), 31);
        assert_eq!(pg_num_mask(u32::MAX), u32::MAX);
        // As Ceph prints it: "foo" in a pool of 128 PGs is seed 0x6 (raw 0x7fc1f406).
        assert_eq!(hash_to_pg_seed(object_hash(b"foo"), 128), 0x06);
        assert_eq!(hash_to_pg_seed(object_hash(b"test-object-1"), 128), 0x62);
    }

    #[test]
    fn pg_id_display_and_parse() {
        let pg = PgId::new(3, 0x1f);
        assert_eq!(pg.to_string(), "3.1f");
        assert_eq!("3.1f".parse::<PgId>(), Ok(pg));
        assert_eq!("3.1F".parse::<PgId>(), Ok(pg));
        assert!(matches!(
            "31f".parse::<PgId>(),
            Err(PgIdParseError::MissingDot(_))
        ));
        assert!(matches!(
            "x.1".parse::<PgId>(),
            Err(PgIdParseError::BadPool(_))
        ));
        assert!(matches!(
            "+3.1".parse::<PgId>(),
            Err(PgIdParseError::BadPool(_))
        ));
        assert!(matches!(
            "3.".parse::<PgId>(),
            Err(PgIdParseError::BadSeed(_))
        ));
        assert!(matches!(
            "3.1g".parse::<PgId>(),
            Err(PgIdParseError::BadSeed(_))
        ));
        assert!(matches!(
            "3.100000000".parse::<PgId>(),
            Err(PgIdParseError::BadSeed(_))
        ));
    }

    #[test]
    fn split_relations() {
        // 8 → 12 PGs: seeds 8..12 are children of 0..4.
        assert_eq!(
            split_children(PgId::new(1, 2), 8, 12),
            vec![PgId::new(1, 10)]
        );
        assert_eq!(split_children(PgId::new(1, 5), 8, 12), vec![]);
        assert_eq!(split_parent(PgId::new(1, 10), 8), PgId::new(1, 2));
        // 3 → 16: PG 1 gives to 5, 9, 13 (and PG 3 did not exist, so 3 came from 1).
        assert_eq!(
            split_children(PgId::new(0, 1), 3, 16),
            vec![
                PgId::new(0, 3),
                PgId::new(0, 5),
                PgId::new(0, 7),
                PgId::new(0, 9),
                PgId::new(0, 11),
                PgId::new(0, 13),
                PgId::new(0, 15)
            ]
        );
    }

    proptest! {
        #[test]
        fn pg_id_round_trips(pool in any::<u32>(), seed in any::<u32>()) {
            let pg = PgId::new(pool, seed);
            prop_assert_eq!(pg.to_string().parse::<PgId>(), Ok(pg));
        }

        #[test]
        fn stable_mod_is_in_range(x in any::<u32>(), pg_num in 1u32..=1 << 20) {
            prop_assert!(hash_to_pg_seed(x, pg_num) < pg_num);
        }

        /// Growing pg_num only splits: an object stays or moves to a child of its PG.
        #[test]
        fn growing_pg_num_splits(
            x in any::<u32>(),
            old_pg_num in 1u32..5000,
            growth in 0u32..5000,
        ) {
            let new_pg_num = old_pg_num + growth;
            let old_seed = hash_to_pg_seed(x, old_pg_num);
            let new_seed = hash_to_pg_seed(x, new_pg_num);
            if new_seed != old_seed {
                prop_assert!(new_seed >= old_pg_num, "moved to an existing PG");
                prop_assert_eq!(split_parent(PgId::new(0, new_seed), old_pg_num).seed, old_seed);
            }
        }

        /// The hash sees every byte: flipping any one bit changes it. A collision is
        /// possible in principle (about 2^-32 per case), so a failure here is a bug.
        #[test]
        fn hash_depends_on_every_byte(
            name in proptest::collection::vec(any::<u8>(), 1..64),
            index in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut flipped = name.clone();
            let at = index.index(name.len());
            flipped[at] ^= 1 << bit;
            prop_assert_ne!(object_hash(&name), object_hash(&flipped));
        }
    }

    #[test]
    fn pg_seeds_are_uniform() {
        // 64k object names over 64 PGs: each PG within 10% of 1024 (sd is about 3%).
        let pg_num = 64;
        let mut counts = vec![0u32; pg_num as usize];
        for i in 0..65_536u32 {
            let name = format!("1000.{i:08x}");
            counts[hash_to_pg_seed(object_hash(name.as_bytes()), pg_num) as usize] += 1;
        }
        for (seed, &count) in counts.iter().enumerate() {
            assert!((922..=1126).contains(&count), "pg {seed} has {count}");
        }
    }
}
