//! Deduplication: a table of blocks by content, with reference counts.
//!
//! In a collection created with dedup on, a block whose stored bytes (and codec and
//! logical size) match a block already in the table is not written again: the new block
//! pointer points at the existing rows and the entry's reference count rises. Freeing a
//! dedup'd pointer lowers the count; the rows are freed when it reaches zero.
//!
//! The table lives in RocksDB (`T` checksum codec lsize → entry). Every transaction that
//! can change it holds the store's dedup lock from prepare until its batch is durable,
//! so reference counts are read and written by one transaction at a time. That costs the
//! group commit for dedup collections (ZFS's dedup is known to be slow for the same kind
//! of reason); it is opt-in per collection, fixed at creation.

use std::collections::HashMap;

use super::alloc::Run;
use super::blkptr::{BlockCodec, BlockPtr};
use super::commit::MetaOp;
use super::error::{Error, Result};
use super::view::Reader;

/// What identifies identical blocks: checksum of the stored bytes, codec, logical size.
pub type DedupKey = ([u8; 32], u8, u32);

/// The dedup key of a block pointer.
pub fn key_of(bp: &BlockPtr) -> DedupKey {
    (bp.checksum, bp.codec as u8, bp.lsize)
}

fn table_key(key: &DedupKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(38);
    out.push(b'T');
    out.extend_from_slice(&key.0);
    out.push(key.1);
    out.extend_from_slice(&key.2.to_be_bytes());
    out
}

/// Where a dedup'd block lives and how many pointers reference it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupEntry {
    /// Vdev.
    pub vdev: u32,
    /// First row.
    pub row: u64,
    /// Rows.
    pub nrows: u32,
    /// Stored size.
    pub psize: u32,
    /// Block pointers referencing it.
    pub refs: u64,
}

impl DedupEntry {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28);
        out.extend_from_slice(&self.vdev.to_le_bytes());
        out.extend_from_slice(&self.row.to_le_bytes());
        out.extend_from_slice(&self.nrows.to_le_bytes());
        out.extend_from_slice(&self.psize.to_le_bytes());
        out.extend_from_slice(&self.refs.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 28 {
            return Err(Error::Corrupt("malformed dedup entry".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Ok(DedupEntry {
            vdev: u32_at(0),
            row: u64_at(4),
            nrows: u32_at(12),
            psize: u32_at(16),
            refs: u64_at(20),
        })
    }

    /// The rows it occupies.
    pub fn run(&self) -> Run {
        Run {
            vdev: self.vdev,
            row: self.row,
            nrows: self.nrows as u64,
        }
    }
}

/// Changes one transaction makes to the dedup table, and the rows freed by releases.
#[derive(Default)]
pub struct DedupChanges {
    entries: HashMap<DedupKey, Option<DedupEntry>>,
}

impl DedupChanges {
    fn lookup(&self, reader: &Reader<'_>, key: &DedupKey) -> Result<Option<DedupEntry>> {
        match self.entries.get(key) {
            Some(entry) => Ok(*entry),
            None => reader
                .raw_get(&table_key(key))?
                .map(|bytes| DedupEntry::decode(&bytes))
                .transpose(),
        }
    }

    /// Adds a reference to an existing block with this content, if there is one.
    pub fn add_ref(&mut self, reader: &Reader<'_>, key: &DedupKey) -> Result<Option<DedupEntry>> {
        let Some(mut entry) = self.lookup(reader, key)? else {
            return Ok(None);
        };
        entry.refs += 1;
        self.entries.insert(*key, Some(entry));
        Ok(Some(entry))
    }

    /// Records a newly written block with one reference.
    pub fn insert(&mut self, key: DedupKey, run: Run, psize: u32) {
        self.entries.insert(
            key,
            Some(DedupEntry {
                vdev: run.vdev,
                row: run.row,
                nrows: run.nrows as u32,
                psize,
                refs: 1,
            }),
        );
    }

    /// Drops one reference held by `bp`; returns the rows to free when it was the last.
    /// A pointer that is not dedup'd frees its rows directly.
    pub fn release(&mut self, reader: &Reader<'_>, bp: &BlockPtr) -> Result<Option<Run>> {
        let run = Run {
            vdev: bp.vdev,
            row: bp.row,
            nrows: bp.nrows as u64,
        };
        if !bp.dedup {
            return Ok(Some(run));
        }
        let key = key_of(bp);
        let mut entry = self
            .lookup(reader, &key)?
            .ok_or_else(|| Error::Corrupt("a dedup'd block has no dedup table entry".into()))?;
        entry.refs -= 1;
        if entry.refs == 0 {
            self.entries.insert(key, None);
            Ok(Some(run))
        } else {
            self.entries.insert(key, Some(entry));
            Ok(None)
        }
    }

    /// The metadata changes to commit.
    pub fn into_ops(self) -> Vec<MetaOp> {
        self.entries
            .into_iter()
            .map(|(key, entry)| match entry {
                Some(entry) => MetaOp::Put(table_key(&key), entry.encode()),
                None => MetaOp::Delete(table_key(&key)),
            })
            .collect()
    }
}

/// A block pointer to an existing dedup'd block.
pub fn pointer_to(entry: &DedupEntry, key: &DedupKey, codec: BlockCodec, birth: u64) -> BlockPtr {
    BlockPtr {
        vdev: entry.vdev,
        row: entry.row,
        nrows: entry.nrows,
        lsize: key.2,
        psize: entry.psize,
        codec,
        checksum: key.0,
        birth,
        dedup: true,
    }
}
