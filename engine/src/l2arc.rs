//! The second-level cache (L2ARC): blocks evicted from the ARC, kept on a faster device.
//!
//! The cache device is a ring of records. Each record is a 128-byte header (magic,
//! sequence number, block key, length, BLAKE3 of the data, BLAKE3 of the header itself)
//! followed by the block, padded to 4 KiB. A feed thread writes what the ARC evicts;
//! when the ring wraps, the records it overwrites leave the index. A read verifies the
//! record's data checksum before trusting it, so a torn or stale record is a miss, never
//! wrong data.
//!
//! The index is rebuilt at open by scanning the headers, so the cache survives a
//! restart: blocks that were hot before are still served from the cache device.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::arc::BlockKey;
use super::error::{Error, IoContext, Result};

const MAGIC: u32 = 0x4c32_4152; // "L2AR"
const HEADER: u64 = 128;
const ALIGN: u64 = 4096;
/// Records start after one aligned unit reserved for the device.
const START: u64 = ALIGN;
const SCAN_CHUNK: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
struct Slot {
    offset: u64,
    len: u32,
    seq: u64,
}

struct Index {
    by_key: HashMap<BlockKey, Slot>,
    by_offset: BTreeMap<u64, BlockKey>,
    head: u64,
    seq: u64,
}

/// Where evicted blocks go to be written by the feed thread.
type Feed = SyncSender<(BlockKey, Arc<Vec<u8>>)>;

/// Counters of the second-level cache.
#[derive(Clone, Debug, Default, Serialize)]
pub struct L2Stats {
    /// Cache device.
    pub path: PathBuf,
    /// Device size.
    pub capacity: u64,
    /// Blocks indexed.
    pub blocks: u64,
    /// Lookups served from the device.
    pub hits: u64,
    /// Lookups not on the device.
    pub misses: u64,
    /// Records that failed verification (treated as misses).
    pub bad_records: u64,
}

/// The second-level cache.
pub struct L2Cache {
    path: PathBuf,
    file: File,
    capacity: u64,
    index: Mutex<Index>,
    feed: Mutex<Option<Feed>>,
    hits: AtomicU64,
    misses: AtomicU64,
    bad: AtomicU64,
}

fn aligned(len: u64) -> u64 {
    (HEADER + len).div_ceil(ALIGN) * ALIGN
}

fn encode_key(key: &BlockKey, out: &mut [u8]) {
    let (vdev, row, checksum) = key.parts();
    out[..4].copy_from_slice(&vdev.to_le_bytes());
    out[4..12].copy_from_slice(&row.to_le_bytes());
    out[12..28].copy_from_slice(&checksum);
}

fn header(seq: u64, key: &BlockKey, data: &[u8]) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..12].copy_from_slice(&seq.to_le_bytes());
    encode_key(key, &mut h[12..40]);
    h[40..44].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[44..76].copy_from_slice(blake3::hash(data).as_bytes());
    let self_check = *blake3::hash(&h[..76]).as_bytes();
    h[76..108].copy_from_slice(&self_check);
    h
}

/// Parses a header: (seq, key, len, data checksum).
fn parse(h: &[u8]) -> Option<(u64, BlockKey, u32, [u8; 32])> {
    if h.len() < HEADER as usize || u32::from_le_bytes(h[..4].try_into().ok()?) != MAGIC {
        return None;
    }
    if blake3::hash(&h[..76]).as_bytes() != &h[76..108] {
        return None;
    }
    let seq = u64::from_le_bytes(h[4..12].try_into().ok()?);
    let key = BlockKey::from_parts(
        u32::from_le_bytes(h[12..16].try_into().ok()?),
        u64::from_le_bytes(h[16..24].try_into().ok()?),
        h[24..40].try_into().ok()?,
    );
    let len = u32::from_le_bytes(h[40..44].try_into().ok()?);
    Some((seq, key, len, h[44..76].try_into().ok()?))
}

impl L2Cache {
    /// Opens (creating at `size` bytes when missing) a cache device and rebuilds its index.
    pub fn open(path: &Path, size: Option<u64>) -> Result<Arc<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(size.is_some())
            .truncate(false)
            .open(path)
            .ctx(|| format!("opening cache device {}", path.display()))?;
        if let Some(size) = size
            && file.metadata().ctx(|| "sizing cache device".into())?.len() < size
        {
            file.set_len(size).ctx(|| "sizing cache device".into())?;
        }
        let capacity = {
            use std::io::{Seek, SeekFrom};
            let mut handle = &file;
            handle
                .seek(SeekFrom::End(0))
                .ctx(|| "measuring cache device".into())?
        };
        if capacity < START + 16 * ALIGN {
            return Err(Error::Invalid(format!(
                "cache device {} is too small ({capacity} bytes)",
                path.display()
            )));
        }
        let index = Self::scan(&file, capacity)?;
        let cache = Arc::new(L2Cache {
            path: path.to_path_buf(),
            file,
            capacity,
            index: Mutex::new(index),
            feed: Mutex::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bad: AtomicU64::new(0),
        });
        let (sender, receiver) = mpsc::sync_channel::<(BlockKey, Arc<Vec<u8>>)>(256);
        let writer = Arc::clone(&cache);
        std::thread::Builder::new()
            .name("lcpfs-l2arc".into())
            .spawn(move || {
                for (key, block) in receiver {
                    if let Err(e) = writer.write(&key, &block) {
                        tracing::warn!("cache device write failed: {e}");
                    }
                }
            })
            .ctx(|| "starting the cache feed thread".into())?;
        *cache.feed.lock().expect("feed lock poisoned") = Some(sender);
        Ok(cache)
    }

    /// Stops the feed thread (pending blocks are dropped: it is only a cache).
    pub fn close(&self) {
        self.feed.lock().expect("feed lock poisoned").take();
    }

    fn scan(file: &File, capacity: u64) -> Result<Index> {
        let mut index = Index {
            by_key: HashMap::new(),
            by_offset: BTreeMap::new(),
            head: START,
            seq: 0,
        };
        let mut chunk = vec![0u8; SCAN_CHUNK];
        let mut base = START;
        let mut newest: Option<(u64, u64)> = None;
        while base < capacity {
            let len = (capacity - base).min(SCAN_CHUNK as u64) as usize;
            file.read_exact_at(&mut chunk[..len], base)
                .ctx(|| "scanning cache device".into())?;
            let mut at = 0;
            while at + HEADER as usize <= len {
                let offset = base + at as u64;
                match parse(&chunk[at..at + HEADER as usize]) {
                    Some((seq, key, data_len, _))
                        if offset + aligned(data_len as u64) <= capacity =>
                    {
                        let slot = Slot {
                            offset,
                            len: data_len,
                            seq,
                        };
                        let newer = index.by_key.get(&key).is_none_or(|s| s.seq < seq);
                        if newer {
                            if let Some(old) = index.by_key.insert(key, slot) {
                                index.by_offset.remove(&old.offset);
                            }
                            index.by_offset.insert(offset, key);
                        }
                        if newest.is_none_or(|(s, _)| seq > s) {
                            newest = Some((seq, offset + aligned(data_len as u64)));
                        }
                        at += aligned(data_len as u64) as usize;
                    }
                    _ => at += ALIGN as usize,
                }
            }
            base += at as u64;
        }
        if let Some((seq, end)) = newest {
            index.seq = seq;
            index.head = if end >= capacity { START } else { end };
        }
        Ok(index)
    }

    /// Offers a block evicted from the ARC; dropped when the feed is busy.
    pub fn offer(&self, key: BlockKey, block: Arc<Vec<u8>>) {
        if let Some(feed) = self.feed.lock().expect("feed lock poisoned").as_ref() {
            match feed.try_send((key, block)) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    fn write(&self, key: &BlockKey, block: &[u8]) -> Result<()> {
        let need = aligned(block.len() as u64);
        if need > self.capacity - START {
            return Ok(());
        }
        let (offset, seq) = {
            let mut index = self.index.lock().expect("index lock poisoned");
            if index.by_key.contains_key(key) {
                return Ok(());
            }
            if index.head + need > self.capacity {
                index.head = START;
            }
            let offset = index.head;
            // Records this one overwrites leave the index first.
            let doomed: Vec<(u64, BlockKey)> = index
                .by_offset
                .range(..offset + need)
                .rev()
                .take_while(|(o, k)| {
                    let slot_end = **o + index.by_key.get(k).map_or(0, |s| aligned(s.len as u64));
                    slot_end > offset
                })
                .map(|(o, k)| (*o, *k))
                .collect();
            for (o, k) in doomed {
                index.by_offset.remove(&o);
                index.by_key.remove(&k);
            }
            index.head = offset + need;
            index.seq += 1;
            (offset, index.seq)
        };
        let mut record = vec![0u8; need as usize];
        record[..HEADER as usize].copy_from_slice(&header(seq, key, block));
        record[HEADER as usize..HEADER as usize + block.len()].copy_from_slice(block);
        self.file
            .write_all_at(&record, offset)
            .ctx(|| format!("writing cache device {}", self.path.display()))?;
        let mut index = self.index.lock().expect("index lock poisoned");
        // Only publish if the ring has not wrapped over this record meanwhile.
        if index.head >= offset + need || index.head < offset {
            let slot = Slot {
                offset,
                len: block.len() as u32,
                seq,
            };
            index.by_key.insert(*key, slot);
            index.by_offset.insert(offset, *key);
        }
        Ok(())
    }

    /// Looks a block up on the cache device, verifying it.
    pub fn get(&self, key: &BlockKey) -> Option<Vec<u8>> {
        let slot = self
            .index
            .lock()
            .expect("index lock poisoned")
            .by_key
            .get(key)
            .copied();
        let Some(slot) = slot else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut record = vec![0u8; HEADER as usize + slot.len as usize];
        let valid = self.file.read_exact_at(&mut record, slot.offset).is_ok()
            && parse(&record[..HEADER as usize]).is_some_and(|(seq, k, len, checksum)| {
                seq == slot.seq
                    && k == *key
                    && len == slot.len
                    && blake3::hash(&record[HEADER as usize..]).as_bytes() == &checksum
            });
        if !valid {
            self.bad.fetch_add(1, Ordering::Relaxed);
            let mut index = self.index.lock().expect("index lock poisoned");
            if index
                .by_key
                .get(key)
                .is_some_and(|s| s.offset == slot.offset)
            {
                index.by_key.remove(key);
                index.by_offset.remove(&slot.offset);
            }
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        record.drain(..HEADER as usize);
        Some(record)
    }

    /// Counters.
    pub fn stats(&self) -> L2Stats {
        L2Stats {
            path: self.path.clone(),
            capacity: self.capacity,
            blocks: self.index.lock().expect("index lock poisoned").by_key.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bad_records: self.bad.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        BlockKey::from_parts(0, i, [i as u8; 16])
    }

    #[test]
    fn survives_reopen_wraps_and_rejects_torn_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l2");
        let cache = L2Cache::open(&path, Some(START + 64 * ALIGN)).unwrap();
        for i in 0..10 {
            cache.write(&key(i), &vec![i as u8; 5000]).unwrap();
        }
        assert_eq!(cache.get(&key(3)).unwrap(), vec![3u8; 5000]);
        cache.close();
        drop(cache);
        let cache = L2Cache::open(&path, None).unwrap();
        assert_eq!(
            cache.get(&key(7)).unwrap(),
            vec![7u8; 5000],
            "index rebuilt after reopen"
        );
        // Wrap the ring: the oldest records are overwritten and leave the index.
        for i in 10..40 {
            cache.write(&key(i), &vec![i as u8; 5000]).unwrap();
        }
        assert!(cache.get(&key(0)).is_none());
        assert_eq!(cache.get(&key(39)).unwrap(), vec![39u8; 5000]);
        // A damaged record is a miss, not wrong bytes.
        let slot = cache.index.lock().unwrap().by_key[&key(39)];
        cache
            .file
            .write_all_at(b"xx", slot.offset + HEADER + 10)
            .unwrap();
        assert!(cache.get(&key(39)).is_none());
        assert_eq!(cache.stats().bad_records, 1);
    }
}
