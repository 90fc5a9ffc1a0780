//! Erasure coding of objects into shards, and the read-modify-write of stripes;
//! which OSD of a PG's up set holds which shard.
//!
//! An object of an erasure-coded pool (`k` data + `m` parity shards) is cut into
//! stripes of `k` units of [`UNIT`] bytes. Unit `j` of stripe `s` is stored at offset
//! `s * UNIT` of data shard `j`; the parity shards hold, at the same offset, the
//! Reed-Solomon parity of the stripe's `k` units. Every shard of an object is as long
//! as the object's stripes, so the last stripe is padded with zeros, and the
//! object's own size is kept beside the shards (an xattr, [`SIZE_XATTR`](crate::pg::SIZE_XATTR)).
//!
//! A mutation rewrites whole stripes: the primary reads the stripes a request
//! touches ([`Edit::plan`]), applies the request's operations to them in memory
//! ([`Edit::apply`]) and encodes the result, so that every shard is written with
//! bytes consistent with every other.

use std::ops::Range;

use lcpfs_core::map::{Pool, PoolKind};
use lcpfs_proto::ObjectOp;
use lcpfs_proto::object_op::Op;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::pg::UpSet;

/// Bytes of one shard per stripe (a stripe holds `k * UNIT` bytes of the object).
pub const UNIT: u64 = 4096;

/// A shard position of a PG's up set and the OSD holding it.
pub type Member = (usize, u32);

/// The erasure code of a pool (replicated pools are not asked).
pub fn code(pool: &Pool) -> Code {
    match pool.kind {
        PoolKind::Erasure { k, m } => Code {
            k: k as usize,
            m: m as usize,
        },
        PoolKind::Replicated { .. } => Code { k: 1, m: 0 },
    }
}

/// The positions of an up set that an OSD holds, with their OSDs.
pub fn members(up: &UpSet) -> Vec<Member> {
    up.iter()
        .enumerate()
        .filter_map(|(position, osd)| osd.map(|osd| (position, osd)))
        .collect()
}

/// A pool's erasure code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    /// Data shards.
    pub k: usize,
    /// Parity shards.
    pub m: usize,
}

impl Code {
    /// Bytes of the object in one stripe.
    pub fn stripe(&self) -> u64 {
        self.k as u64 * UNIT
    }

    /// The shard length of an object of `size` bytes.
    pub fn shard_size(&self, size: u64) -> u64 {
        size.div_ceil(self.stripe()) * UNIT
    }

    /// The stripes holding bytes `range` of an object.
    pub fn stripes(&self, range: &Range<u64>) -> Range<u64> {
        range.start / self.stripe()..range.end.div_ceil(self.stripe())
    }

    fn codec(&self) -> Result<ReedSolomon, String> {
        ReedSolomon::new(self.k, self.m).map_err(|error| format!("erasure code {self:?}: {error}"))
    }

    /// Cuts whole stripes of object bytes (a multiple of [`Code::stripe`] long) into
    /// `k + m` shard pieces.
    pub fn encode(&self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        debug_assert!((data.len() as u64).is_multiple_of(self.stripe()));
        let unit = UNIT as usize;
        let stripes = data.len() / (self.k * unit);
        let mut shards = vec![Vec::with_capacity(stripes * unit); self.k + self.m];
        for stripe in data.chunks(self.k * unit) {
            for (j, piece) in stripe.chunks(unit).enumerate() {
                shards[j].extend_from_slice(piece);
            }
        }
        for parity in &mut shards[self.k..] {
            parity.resize(stripes * unit, 0);
        }
        if stripes > 0 {
            self.codec()?
                .encode(&mut shards)
                .map_err(|error| format!("encoding: {error}"))?;
        }
        Ok(shards)
    }

    /// Rebuilds the object bytes of whole stripes from shard pieces of equal length
    /// (at least `k` of them present).
    pub fn decode(&self, mut shards: Vec<Option<Vec<u8>>>) -> Result<Vec<u8>, String> {
        let length = shards.iter().flatten().map(Vec::len).next().unwrap_or(0);
        if length == 0 {
            return Ok(Vec::new());
        }
        if shards[..self.k].iter().any(Option::is_none) {
            self.codec()?
                .reconstruct_data(&mut shards)
                .map_err(|error| format!("decoding: {error}"))?;
        }
        let unit = UNIT as usize;
        let data: Vec<Vec<u8>> = shards.into_iter().take(self.k).flatten().collect();
        let mut object = Vec::with_capacity(length * self.k);
        for offset in (0..length).step_by(unit) {
            for shard in &data {
                object.extend_from_slice(&shard[offset..(offset + unit).min(length)]);
            }
        }
        Ok(object)
    }

    /// Re-encodes shard pieces (at least `k` present) and returns them all.
    pub fn rebuild(&self, shards: Vec<Option<Vec<u8>>>) -> Result<Vec<Vec<u8>>, String> {
        self.encode(&self.decode(shards)?)
    }

    /// The positions of the shard pieces (of equal length; `None` where missing)
    /// that disagree with the code: empty when they are consistent, or when no
    /// more than `k` are given (any `k` are). When the others agree without one
    /// piece, only that one is named; otherwise each piece that differs from what
    /// the data pieces encode to: with a single parity shard a wrong data shard
    /// cannot be told from wrong parity, and the parity is named.
    pub fn inconsistent(&self, shards: &[Option<Vec<u8>>]) -> Result<Vec<usize>, String> {
        let disagreeing = |pieces: &[Option<Vec<u8>>]| -> Result<Vec<usize>, String> {
            let rebuilt = self.rebuild(pieces.to_vec())?;
            Ok(pieces
                .iter()
                .zip(&rebuilt)
                .enumerate()
                .filter(|(_, (piece, rebuilt))| {
                    piece.as_ref().is_some_and(|piece| piece != *rebuilt)
                })
                .map(|(position, _)| position)
                .collect())
        };
        let present: Vec<usize> = (0..shards.len()).filter(|&i| shards[i].is_some()).collect();
        if present.len() <= self.k {
            return Ok(Vec::new());
        }
        let differing = disagreeing(shards)?;
        if differing.len() <= 1 || present.len() <= self.k + 1 {
            return Ok(differing);
        }
        for &suspect in &present {
            let mut others = shards.to_vec();
            others[suspect] = None;
            if disagreeing(&others)?.is_empty() {
                return Ok(vec![suspect]);
            }
        }
        Ok(differing)
    }
}

/// The stripes a request rewrites, planned from the object's state before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// The rewritten stripes.
    pub stripes: Range<u64>,
    /// Bytes of the object that must be read first (the old content of those
    /// stripes that the request does not wholly replace).
    pub read: Range<u64>,
    /// The object as it is before the request.
    before: Presence,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Presence {
    exists: bool,
    size: u64,
}

/// What a request leaves of an object, for its shards.
#[derive(Debug, PartialEq)]
pub struct Edited {
    /// False when the request deletes the object.
    pub exists: bool,
    /// True when the request deleted the object (and maybe made it again): the
    /// shards start from nothing.
    pub recreated: bool,
    /// The object's size afterwards.
    pub size: u64,
    /// The new content of [`Edit::stripes`] (whole stripes, zero padded).
    pub stripes: Vec<u8>,
    /// The xattr operations left after the last delete, in order.
    pub xattr_ops: Vec<ObjectOp>,
}

impl Edit {
    /// Plans the request `ops` on an object that exists (or not) with `size` bytes.
    /// Fails like the replicated data path would: deleting an object that is not
    /// there.
    pub fn plan(code: Code, exists: bool, size: u64, ops: &[ObjectOp]) -> Result<Edit, String> {
        let before = Presence { exists, size };
        let (mut exists_now, mut size_now) = (exists, size);
        let mut low = u64::MAX;
        let mut high = 0u64;
        let mut recreated = false;
        for op in ops.iter().filter_map(|op| op.op.as_ref()) {
            let (start, end) = match op {
                Op::WriteFull(data) => (0, data.len() as u64),
                Op::Write(write) => (
                    write.offset.min(size_now),
                    write.offset + write.data.len() as u64,
                ),
                Op::Append(data) => (size_now, size_now + data.len() as u64),
                Op::Truncate(new) => ((*new).min(size_now), *new),
                Op::Delete(_) => {
                    if !exists_now {
                        return Err("the object does not exist".into());
                    }
                    (exists_now, size_now, recreated) = (false, 0, true);
                    (low, high) = (0, 0);
                    continue;
                }
                _ => {
                    exists_now = true;
                    continue;
                }
            };
            exists_now = true;
            size_now = match op {
                Op::WriteFull(_) | Op::Truncate(_) => end,
                _ => size_now.max(end),
            };
            low = low.min(start);
            high = high.max(end);
        }
        if recreated {
            low = 0;
        }
        if low == u64::MAX {
            return Ok(Edit {
                stripes: 0..0,
                read: 0..0,
                before,
            });
        }
        let high = high.min(size_now).max(low);
        let stripes = code.stripes(&(low..high));
        let first = stripes.start * code.stripe();
        let read = if recreated {
            0..0
        } else {
            first.min(size)..(stripes.end * code.stripe()).min(size)
        };
        Ok(Edit {
            stripes,
            read,
            before,
        })
    }

    /// True when the object existed before the request.
    pub fn existed(&self) -> bool {
        self.before.exists
    }

    /// Applies `ops` to the stripes planned, given the old bytes of [`Edit::read`].
    pub fn apply(&self, code: Code, old: &[u8], ops: &[ObjectOp]) -> Edited {
        let base = self.stripes.start * code.stripe();
        let mut buffer = old.to_vec();
        let (mut exists, mut size, mut recreated) = (self.before.exists, self.before.size, false);
        let mut xattr_ops = Vec::new();
        let put = |buffer: &mut Vec<u8>, at: u64, bytes: &[u8]| {
            let at = (at - base) as usize;
            if buffer.len() < at + bytes.len() {
                buffer.resize(at + bytes.len(), 0);
            }
            buffer[at..at + bytes.len()].copy_from_slice(bytes);
        };
        // Bytes past the size are zero, so that growing the object reads zeros.
        let cut = |buffer: &mut Vec<u8>, at: u64| {
            let at = at.saturating_sub(base) as usize;
            if buffer.len() > at {
                buffer.truncate(at);
            }
        };
        for op in ops {
            match op.op.as_ref() {
                Some(Op::WriteFull(data)) => {
                    buffer.clear();
                    put(&mut buffer, 0, data);
                    size = data.len() as u64;
                }
                Some(Op::Write(write)) => {
                    put(&mut buffer, write.offset, &write.data);
                    size = size.max(write.offset + write.data.len() as u64);
                }
                Some(Op::Append(data)) => {
                    put(&mut buffer, size, data);
                    size += data.len() as u64;
                }
                Some(Op::Truncate(new)) => {
                    cut(&mut buffer, *new);
                    size = *new;
                }
                Some(Op::Delete(_)) => {
                    buffer.clear();
                    xattr_ops.clear();
                    (exists, size, recreated) = (false, 0, true);
                    continue;
                }
                Some(Op::SetXattr(_) | Op::RmXattr(_)) => xattr_ops.push(op.clone()),
                _ => continue,
            }
            exists = true;
        }
        cut(&mut buffer, size);
        let length = (self.stripes.end - self.stripes.start) * code.stripe();
        buffer.resize(length as usize, 0);
        Edited {
            exists,
            recreated,
            size,
            stripes: buffer,
            xattr_ops,
        }
    }
}

/// Bytes `range` of an object, from the whole stripes that hold them (read from
/// offset `first_stripe * stripe`).
pub fn slice(code: Code, stripes: &[u8], first_stripe: u64, range: Range<u64>) -> Vec<u8> {
    let base = first_stripe * code.stripe();
    let from = (range.start - base) as usize;
    let to = ((range.end - base) as usize).min(stripes.len());
    stripes
        .get(from..to)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lcpfs_proto::{KeyValue, WriteAt};
    use proptest::prelude::*;

    fn op(op: Op) -> ObjectOp {
        ObjectOp { op: Some(op) }
    }

    /// The object a request leaves, computed on whole bytes like the engine does.
    fn model(mut object: Option<Vec<u8>>, ops: &[ObjectOp]) -> Result<Option<Vec<u8>>, ()> {
        for op in ops.iter().filter_map(|op| op.op.as_ref()) {
            if let Op::Delete(_) = op {
                if object.take().is_none() {
                    return Err(());
                }
                continue;
            }
            let data = object.get_or_insert_with(Vec::new);
            match op {
                Op::WriteFull(bytes) => *data = bytes.clone(),
                Op::Write(write) => {
                    let end = write.offset as usize + write.data.len();
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[write.offset as usize..end].copy_from_slice(&write.data);
                }
                Op::Append(bytes) => data.extend_from_slice(bytes),
                Op::Truncate(size) => data.resize(*size as usize, 0),
                _ => {}
            }
        }
        Ok(object)
    }

    /// The request applied through planning, encoding and decoding.
    fn through_shards(code: Code, object: Option<Vec<u8>>, ops: &[ObjectOp]) -> Option<Vec<u8>> {
        let old = object.clone().unwrap_or_default();
        let size = old.len() as u64;
        let mut stored = old.clone();
        stored.resize(code.shard_size(size) as usize * code.k, 0);
        let mut shards = code.encode(&stored).unwrap();
        let edit = Edit::plan(code, object.is_some(), size, ops).unwrap();
        let edited = edit.apply(
            code,
            &old[edit.read.start as usize..edit.read.end as usize],
            ops,
        );
        if !edited.exists {
            return None;
        }
        let pieces = code.encode(&edited.stripes).unwrap();
        let shard_size = code.shard_size(edited.size) as usize;
        for (shard, piece) in shards.iter_mut().zip(pieces) {
            if edited.recreated {
                shard.clear();
            }
            let at = (edit.stripes.start * UNIT) as usize;
            if shard.len() < at + piece.len() {
                shard.resize(at + piece.len(), 0);
            }
            shard[at..at + piece.len()].copy_from_slice(&piece);
            shard.resize(shard_size, 0);
        }
        // Lose m shards (the first ones, data included) and read back.
        let available = shards
            .into_iter()
            .enumerate()
            .map(|(i, shard)| (i >= code.m).then_some(shard))
            .collect();
        let mut data = code.decode(available).unwrap();
        data.truncate(edited.size as usize);
        Some(data)
    }

    fn arb_op() -> impl Strategy<Value = ObjectOp> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..20_000);
        prop_oneof![
            bytes().prop_map(|data| op(Op::WriteFull(data))),
            (0u64..40_000, bytes())
                .prop_map(|(offset, data)| op(Op::Write(WriteAt { offset, data }))),
            bytes().prop_map(|data| op(Op::Append(data))),
            (0u64..40_000).prop_map(|size| op(Op::Truncate(size))),
            Just(op(Op::Delete(true))),
            Just(op(Op::SetXattr(KeyValue {
                key: "a".into(),
                value: b"1".to_vec()
            }))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn stripes_rewritten_match_whole_object_edits(
            k in 1usize..5,
            m in 1usize..3,
            initial in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30_000)),
            ops in proptest::collection::vec(arb_op(), 1..4),
        ) {
            let code = Code { k, m };
            let expected = model(initial.clone(), &ops);
            let planned = Edit::plan(code, initial.is_some(), initial.as_ref().map_or(0, Vec::len) as u64, &ops);
            match expected {
                Err(()) => prop_assert!(planned.is_err()),
                Ok(expected) => prop_assert_eq!(through_shards(code, initial, &ops), expected),
            }
        }
    }

    #[test]
    fn a_small_overwrite_reads_and_rewrites_one_stripe() {
        let code = Code { k: 4, m: 2 };
        let ops = [op(Op::Write(WriteAt {
            offset: 70_000,
            data: vec![1; 10],
        }))];
        let edit = Edit::plan(code, true, 1 << 20, &ops).unwrap();
        assert_eq!(edit.stripes, 4..5);
        assert_eq!(edit.read, 65_536..81_920);
    }

    #[test]
    fn xattr_only_requests_rewrite_no_stripes() {
        let code = Code { k: 2, m: 1 };
        let ops = [op(Op::SetXattr(KeyValue {
            key: "a".into(),
            value: vec![1],
        }))];
        let edit = Edit::plan(code, false, 0, &ops).unwrap();
        assert_eq!(edit.stripes, 0..0);
        let edited = edit.apply(code, &[], &ops);
        assert!(edited.exists);
        assert_eq!(edited.xattr_ops.len(), 1);
    }

    #[test]
    fn deleting_a_missing_object_is_refused() {
        let code = Code { k: 2, m: 1 };
        assert!(Edit::plan(code, false, 0, &[op(Op::Delete(true))]).is_err());
    }

    proptest! {
        #[test]
        fn a_wrong_shard_is_found_and_named_when_the_others_agree(
            k in 1usize..5,
            m in 1usize..3,
            stripes in 1usize..4,
            victim in 0usize..6,
            seed in any::<u8>(),
        ) {
            let code = Code { k, m };
            let data: Vec<u8> = (0..stripes * k * UNIT as usize)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect();
            let good: Vec<Option<Vec<u8>>> = code.encode(&data).unwrap().into_iter().map(Some).collect();
            prop_assert_eq!(code.inconsistent(&good).unwrap(), Vec::<usize>::new());
            let victim = victim % (k + m);
            let mut bad = good.clone();
            bad[victim].as_mut().unwrap()[7] ^= 0x5a;
            let found = code.inconsistent(&bad).unwrap();
            if m >= 2 || victim >= k {
                prop_assert_eq!(found, vec![victim]);
            } else {
                // One parity shard: the wrong data shard shows as wrong parity.
                prop_assert_eq!(found, vec![k]);
            }
            // With no piece to spare, nothing can be checked.
            let mut spare = bad.clone();
            for missing in spare.iter_mut().skip(k).take(m) {
                *missing = None;
            }
            prop_assert_eq!(code.inconsistent(&spare).unwrap(), Vec::<usize>::new());
        }
    }
}
