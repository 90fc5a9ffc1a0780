//! The metadata layout in RocksDB: key encodings and record formats.
//!
//! One column family, keys prefixed by a tag byte:
//!
//! | key | value | what |
//! |---|---|---|
//! | `g` name | bytes | store-wide values: pool config, last txg, next collection id |
//! | `C` name | id (8, BE) | collection name → id |
//! | `c` id | JSON | collection settings and lineage |
//! | `s` id txg(BE) | JSON | a snapshot of collection `id` taken at `txg` |
//! | `H` id item | birth(8) tag(1) value | the head (live) version of an item |
//! | `O` id esc(item) birth(BE) | died(8) tag(1) value | an older version a snapshot still sees |
//! | `D` id died(BE) birth(BE) item | psize(8) | index of `O` by death, for snapshot destroy |
//! | `a` vdev start | len(8) | a free extent (see `alloc`) |
//! | `T` checksum | entry | the dedup table |
//! | `e` disk guid | counters | a disk's error counters |
//!
//! An *item* is one versioned thing inside a collection, named by a kind byte:
//! `o` name (object record), `b` len name index(BE) (block pointer of one block),
//! `x` len name attr (xattr), `m` len name key (omap entry). `len` is the object
//! name's length as 4 BE bytes, so all items of one object are contiguous and sorted by
//! attribute, key or block index; object records alone are sorted by name for listing.
//! In `O` keys the item is escaped (`escape_item`) so that the birth after it cannot be
//! confused with a longer item, and the versions of one item stay contiguous.

use super::error::{Error, Result};

/// Kind byte of an object record item.
pub const KIND_OBJECT: u8 = b'o';
/// Kind byte of a block pointer item.
pub const KIND_BLOCK: u8 = b'b';
/// Kind byte of an xattr item.
pub const KIND_XATTR: u8 = b'x';
/// Kind byte of an omap item.
pub const KIND_OMAP: u8 = b'm';

/// A collection id.
pub type CollId = u64;

/// `tag id`: the start of every key of a collection in one keyspace.
pub fn coll_prefix(tag: u8, coll: CollId) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    key.push(tag);
    key.extend_from_slice(&coll.to_be_bytes());
    key
}

/// The item of an object record.
pub fn object_item(name: &[u8]) -> Vec<u8> {
    let mut item = Vec::with_capacity(1 + name.len());
    item.push(KIND_OBJECT);
    item.extend_from_slice(name);
    item
}

/// The common start of all items of `kind` belonging to one object.
pub fn sub_prefix(kind: u8, name: &[u8]) -> Vec<u8> {
    let mut item = Vec::with_capacity(5 + name.len() + 16);
    item.push(kind);
    item.extend_from_slice(&(name.len() as u32).to_be_bytes());
    item.extend_from_slice(name);
    item
}

/// The item of one block of an object.
pub fn block_item(name: &[u8], index: u64) -> Vec<u8> {
    let mut item = sub_prefix(KIND_BLOCK, name);
    item.extend_from_slice(&index.to_be_bytes());
    item
}

/// The block index encoded at the end of a block item.
pub fn block_index(item: &[u8]) -> Result<u64> {
    item.len()
        .checked_sub(8)
        .map(|at| u64::from_be_bytes(item[at..].try_into().expect("8 bytes")))
        .ok_or_else(|| Error::Corrupt("short block item".into()))
}

/// The item of an xattr or omap key.
pub fn keyed_item(kind: u8, name: &[u8], key: &[u8]) -> Vec<u8> {
    let mut item = sub_prefix(kind, name);
    item.extend_from_slice(key);
    item
}

/// Key of an item's head version.
pub fn head_key(coll: CollId, item: &[u8]) -> Vec<u8> {
    let mut key = coll_prefix(b'H', coll);
    key.extend_from_slice(item);
    key
}

/// Escapes an item so that it can be followed by more key bytes without losing its sort
/// order or its end: `00` becomes `00 ff`, and `00 01` terminates.
pub fn escape_item(item: &[u8], out: &mut Vec<u8>) {
    for &byte in item {
        out.push(byte);
        if byte == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

/// Reverses [`escape_item`] on the start of `bytes`; returns the item and the rest.
pub fn unescape_item(bytes: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut item = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0 {
            match bytes.get(i + 1) {
                Some(0xff) => item.push(0),
                Some(1) => return Ok((item, &bytes[i + 2..])),
                _ => break,
            }
            i += 2;
        } else {
            item.push(bytes[i]);
            i += 1;
        }
    }
    Err(Error::Corrupt("malformed escaped item".into()))
}

/// Start of the keys of every older version of an item (escaped, so exact).
pub fn old_prefix(coll: CollId, item: &[u8]) -> Vec<u8> {
    let mut key = coll_prefix(b'O', coll);
    escape_item(item, &mut key);
    key
}

/// Key of an older version of an item.
pub fn old_key(coll: CollId, item: &[u8], birth: u64) -> Vec<u8> {
    let mut key = old_prefix(coll, item);
    key.extend_from_slice(&birth.to_be_bytes());
    key
}

/// Key of the death index entry of an older version.
pub fn dead_key(coll: CollId, died: u64, birth: u64, item: &[u8]) -> Vec<u8> {
    let mut key = coll_prefix(b'D', coll);
    key.extend_from_slice(&died.to_be_bytes());
    key.extend_from_slice(&birth.to_be_bytes());
    key.extend_from_slice(item);
    key
}

/// Splits a death index key into (died, birth, item).
pub fn split_dead_key(key: &[u8]) -> Result<(u64, u64, &[u8])> {
    if key.len() < 9 + 16 {
        return Err(Error::Corrupt("short death index key".into()));
    }
    let died = u64::from_be_bytes(key[9..17].try_into().expect("8 bytes"));
    let birth = u64::from_be_bytes(key[17..25].try_into().expect("8 bytes"));
    Ok((died, birth, &key[25..]))
}

/// Key of a snapshot record.
pub fn snapshot_key(coll: CollId, txg: u64) -> Vec<u8> {
    let mut key = coll_prefix(b's', coll);
    key.extend_from_slice(&txg.to_be_bytes());
    key
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// A head version: when it was written and its value (`None`: deleted, used by clones to
/// hide what their origin has).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Transaction group that wrote it.
    pub birth: u64,
    /// The value, or `None` for a deletion marker.
    pub value: Option<Vec<u8>>,
}

impl Version {
    /// Encodes as `birth(8) tag(1) value`.
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(self.birth, &self.value)
    }

    /// Decodes a head value.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (birth, value) = decode_versioned(bytes)?;
        Ok(Version { birth, value })
    }
}

/// Encodes `stamp(8) tag(1) value`, the shape of head and old versions.
pub fn encode_versioned(stamp: u64, value: &Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + value.as_ref().map_or(0, Vec::len));
    out.extend_from_slice(&stamp.to_le_bytes());
    match value {
        Some(value) => {
            out.push(1);
            out.extend_from_slice(value);
        }
        None => out.push(0),
    }
    out
}

/// Decodes `stamp(8) tag(1) value`.
pub fn decode_versioned(bytes: &[u8]) -> Result<(u64, Option<Vec<u8>>)> {
    if bytes.len() < 9 {
        return Err(Error::Corrupt("short versioned value".into()));
    }
    let stamp = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let value = match bytes[8] {
        0 => None,
        1 => Some(bytes[9..].to_vec()),
        tag => return Err(Error::Corrupt(format!("unknown version tag {tag}"))),
    };
    Ok((stamp, value))
}

/// An object's record: its size, modification time and block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Size in bytes.
    pub size: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// Size of each block of this object (the collection's record size at creation).
    pub block_size: u32,
}

impl ObjectRecord {
    /// Fixed 20-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mtime_ns.to_le_bytes());
        out.extend_from_slice(&self.block_size.to_le_bytes());
        out
    }

    /// Decodes a record, rejecting malformed ones.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 20 {
            return Err(Error::Corrupt(format!(
                "object record of {} bytes",
                bytes.len()
            )));
        }
        let record = ObjectRecord {
            size: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            mtime_ns: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            block_size: u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")),
        };
        if record.block_size == 0 {
            return Err(Error::Corrupt("object record with block size 0".into()));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_of_one_object_sort_together_and_by_index() {
        let a = block_item(b"obj", 2);
        let b = block_item(b"obj", 10);
        let c = block_item(b"obj2", 0);
        assert!(a < b && b < c);
        assert!(a.starts_with(&sub_prefix(KIND_BLOCK, b"obj")));
        assert!(!c.starts_with(&sub_prefix(KIND_BLOCK, b"obj")));
        assert_eq!(block_index(&b).unwrap(), 10);
    }

    #[test]
    fn escaped_items_keep_order_and_ends() {
        let items: [&[u8]; 5] = [b"a", b"a\x00", b"a\x00\x01", b"a\x01", b"b"];
        let keys: Vec<Vec<u8>> = items.iter().map(|i| old_key(1, i, 7)).collect();
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for (item, key) in items.iter().zip(&keys) {
            let (back, rest) = unescape_item(&key[9..]).unwrap();
            assert_eq!(&back, item);
            assert_eq!(rest, 7u64.to_be_bytes());
        }
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert!(prefix_end(b"H") > b"H\xff\xff".to_vec());
    }

    #[test]
    fn versions_round_trip() {
        let v = Version {
            birth: 5,
            value: Some(b"x".to_vec()),
        };
        assert_eq!(Version::decode(&v.encode()).unwrap(), v);
        let gone = Version {
            birth: 6,
            value: None,
        };
        assert_eq!(Version::decode(&gone.encode()).unwrap(), gone);
        assert!(Version::decode(&[1, 2]).is_err());
    }
}
