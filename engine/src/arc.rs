//! The adaptive replacement cache (ARC) for decoded blocks.
//!
//! After Megiddo and Modha's ARC, as ZFS uses it, counted in bytes: `t1` holds blocks seen
//! once recently, `t2` blocks seen at least twice; the ghost lists `b1` and `b2` remember
//! the keys (not the data) of blocks recently evicted from each. A miss that hits a ghost
//! list shows which side was too small, and the target size `p` of `t1` moves towards
//! it. A scan of many blocks read once thus passes through `t1` without flushing the
//! frequently used blocks in `t2`.
//!
//! Blocks are keyed by their location and checksum: a block's content never changes
//! while it is live (copy-on-write), and rows reused for another block carry another
//! checksum, so the cache can never serve stale bytes.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::blkptr::BlockPtr;

/// Cache key of a block: vdev, row, and the first half of its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey(u32, u64, [u8; 16]);

impl BlockKey {
    /// The key of the block a pointer names.
    pub fn of(bp: &BlockPtr) -> Self {
        BlockKey(
            bp.vdev,
            bp.row,
            bp.checksum[..16].try_into().expect("16 bytes"),
        )
    }

    /// Builds a key from its parts (vdev, row, checksum prefix).
    pub fn from_parts(vdev: u32, row: u64, checksum: [u8; 16]) -> Self {
        BlockKey(vdev, row, checksum)
    }

    /// The key's parts (vdev, row, checksum prefix).
    pub fn parts(&self) -> (u32, u64, [u8; 16]) {
        (self.0, self.1, self.2)
    }
}

/// Hit and miss counters and current sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArcStats {
    /// Lookups served from memory.
    pub hits: u64,
    /// Lookups that went to disk.
    pub misses: u64,
    /// Bytes cached in total.
    pub bytes: u64,
    /// Byte limit.
    pub capacity: u64,
    /// Bytes in the recency list.
    pub recent_bytes: u64,
    /// Bytes in the frequency list.
    pub frequent_bytes: u64,
    /// Target size of the recency list.
    pub target_recent: u64,
}

struct Lists<K: Hash + Eq, V> {
    capacity: usize,
    p: usize,
    t1: LruCache<K, V>,
    t2: LruCache<K, V>,
    b1: LruCache<K, usize>,
    b2: LruCache<K, usize>,
    t1_bytes: usize,
    t2_bytes: usize,
    b1_bytes: usize,
    b2_bytes: usize,
}

/// An adaptive replacement cache bounded in bytes.
pub struct AdaptiveCache<K: Hash + Eq + Copy, V: Clone> {
    lists: Mutex<Lists<K, V>>,
    size_of: fn(&V) -> usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K: Hash + Eq + Copy, V: Clone> AdaptiveCache<K, V> {
    /// A cache holding at most `capacity` bytes, measuring values with `size_of`.
    pub fn new(capacity: usize, size_of: fn(&V) -> usize) -> Self {
        AdaptiveCache {
            lists: Mutex::new(Lists {
                capacity,
                p: 0,
                t1: LruCache::unbounded(),
                t2: LruCache::unbounded(),
                b1: LruCache::unbounded(),
                b2: LruCache::unbounded(),
                t1_bytes: 0,
                t2_bytes: 0,
                b1_bytes: 0,
                b2_bytes: 0,
            }),
            size_of,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lists<K, V>> {
        self.lists.lock().expect("cache lock poisoned")
    }

    /// Looks a key up; a hit moves it to the frequency list.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut lists = self.lock();
        let found = if let Some(value) = lists.t1.pop(key) {
            let size = (self.size_of)(&value);
            lists.t1_bytes -= size;
            lists.t2_bytes += size;
            lists.t2.put(*key, value.clone());
            Some(value)
        } else {
            lists.t2.get(key).cloned()
        };
        drop(lists);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Adds a value after a miss; returns the values evicted to make room (for a second
    /// level cache to keep).
    pub fn insert(&self, key: K, value: V) -> Vec<(K, V)> {
        let size = (self.size_of)(&value);
        let mut lists = self.lock();
        let mut evicted = Vec::new();
        let c = lists.capacity;
        if size > c || lists.t1.contains(&key) || lists.t2.contains(&key) {
            return evicted;
        }
        if let Some(ghost) = lists.b1.pop(&key) {
            lists.b1_bytes -= ghost;
            let step = (lists.b2_bytes / lists.b1_bytes.max(1)).max(1) * size;
            lists.p = (lists.p + step).min(c);
            Self::replace(&mut lists, size, false, self.size_of, &mut evicted);
            lists.t2.put(key, value);
            lists.t2_bytes += size;
        } else if let Some(ghost) = lists.b2.pop(&key) {
            lists.b2_bytes -= ghost;
            let step = (lists.b1_bytes / lists.b2_bytes.max(1)).max(1) * size;
            lists.p = lists.p.saturating_sub(step);
            Self::replace(&mut lists, size, true, self.size_of, &mut evicted);
            lists.t2.put(key, value);
            lists.t2_bytes += size;
        } else {
            Self::replace(&mut lists, size, false, self.size_of, &mut evicted);
            lists.t1.put(key, value);
            lists.t1_bytes += size;
        }
        // Ghosts remember at most as many bytes as the cache holds.
        while lists.t1_bytes + lists.b1_bytes > c {
            let Some((_, ghost)) = lists.b1.pop_lru() else {
                break;
            };
            lists.b1_bytes -= ghost;
        }
        while lists.t1_bytes + lists.t2_bytes + lists.b1_bytes + lists.b2_bytes > 2 * c {
            let Some((_, ghost)) = lists.b2.pop_lru() else {
                break;
            };
            lists.b2_bytes -= ghost;
        }
        evicted
    }

    /// Evicts from `t1` or `t2` (per the target `p`) until `incoming` bytes fit; the
    /// evicted keys become ghosts.
    fn replace(
        lists: &mut Lists<K, V>,
        incoming: usize,
        hit_b2: bool,
        size_of: fn(&V) -> usize,
        evicted: &mut Vec<(K, V)>,
    ) {
        while lists.t1_bytes + lists.t2_bytes + incoming > lists.capacity {
            let from_t1 = lists.t1_bytes > 0
                && (lists.t1_bytes > lists.p
                    || (hit_b2 && lists.t1_bytes == lists.p)
                    || lists.t2_bytes == 0);
            if from_t1 {
                let Some((key, value)) = lists.t1.pop_lru() else {
                    break;
                };
                let size = size_of(&value);
                lists.t1_bytes -= size;
                lists.b1.put(key, size);
                lists.b1_bytes += size;
                evicted.push((key, value));
            } else {
                let Some((key, value)) = lists.t2.pop_lru() else {
                    break;
                };
                let size = size_of(&value);
                lists.t2_bytes -= size;
                lists.b2.put(key, size);
                lists.b2_bytes += size;
                evicted.push((key, value));
            }
        }
    }

    /// Counters and sizes.
    pub fn stats(&self) -> ArcStats {
        let lists = self.lock();
        ArcStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: (lists.t1_bytes + lists.t2_bytes) as u64,
            capacity: lists.capacity as u64,
            recent_bytes: lists.t1_bytes as u64,
            frequent_bytes: lists.t2_bytes as u64,
            target_recent: lists.p as u64,
        }
    }
}

/// The engine's block cache: decoded blocks shared without copying.
pub type BlockCache = AdaptiveCache<BlockKey, Arc<Vec<u8>>>;

/// A block cache of `capacity` bytes.
pub fn block_cache(capacity: usize) -> BlockCache {
    AdaptiveCache::new(capacity, |block: &Arc<Vec<u8>>| block.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cache(capacity: usize) -> AdaptiveCache<u32, Vec<u8>> {
        AdaptiveCache::new(capacity, |v: &Vec<u8>| v.len())
    }

    #[test]
    fn a_scan_does_not_flush_the_frequent_blocks() {
        let arc = cache(100);
        for key in 0..5 {
            arc.insert(key, vec![0; 10]);
            assert!(arc.get(&key).is_some());
        }
        // A long scan of blocks read once.
        for key in 100..400 {
            if arc.get(&key).is_none() {
                arc.insert(key, vec![0; 10]);
            }
        }
        for key in 0..5 {
            assert!(
                arc.get(&key).is_some(),
                "frequent block {key} was flushed by a scan"
            );
        }
    }

    #[test]
    fn ghost_hits_move_the_target() {
        let arc = cache(40);
        for key in 0..2 {
            arc.insert(key, vec![0; 10]);
            arc.get(&key);
        }
        // Two frequent blocks fill half; the recent side churns and leaves ghosts.
        for key in 2..6 {
            arc.insert(key, vec![0; 10]);
        }
        assert!(
            arc.get(&2).is_none(),
            "block 2 was evicted to the ghost list"
        );
        let before = arc.stats().target_recent;
        arc.insert(2, vec![0; 10]);
        assert!(
            arc.stats().target_recent > before,
            "a hit in b1 grows t1's target"
        );
        assert!(
            arc.get(&0).is_some() && arc.get(&1).is_some(),
            "frequent blocks stay"
        );
    }

    proptest! {
        /// Never holds more than its capacity, and never returns a value for a key other
        /// than the one it was stored under.
        #[test]
        fn bounded_and_faithful(ops in proptest::collection::vec((0u32..50, 1usize..30, any::<bool>()), 1..500)) {
            let arc = cache(200);
            for (key, size, read) in ops {
                if read {
                    if let Some(v) = arc.get(&key) {
                        prop_assert_eq!(v.len(), key as usize % 30 + 1);
                    }
                } else if arc.get(&key).is_none() {
                    arc.insert(key, vec![0; key as usize % 30 + 1]);
                }
                let _ = size;
                prop_assert!(arc.stats().bytes <= 200);
            }
        }
    }
}
