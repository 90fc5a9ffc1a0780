//! Block pointers and block compression.
//!
//! A block pointer says where a block's stored bytes are (vdev, first row, rows), how
//! big it is before and after compression, how it was compressed, the BLAKE3 checksum of
//! the stored bytes, and the transaction group it was born in. It is the only way the
//! metadata refers to data, so every read can be verified.
//!
//! The encoding is fixed-width and versionless on purpose: it is part of the on-disk
//! format, 66 bytes, little-endian.

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// How a collection compresses its blocks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase", tag = "algorithm", content = "level")]
pub enum Compression {
    /// Store blocks as written.
    #[default]
    Off,
    /// LZ4: fast, modest ratio.
    Lz4,
    /// Zstandard at the given level (1–22).
    Zstd(i32),
    /// LZ4, kept only when it saves at least an eighth of the block.
    Auto,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::Off => f.write_str("off"),
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Zstd(level) => write!(f, "zstd-{level}"),
            Compression::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "unknown compression {s:?}: use off, lz4, zstd, zstd-LEVEL (1-22) or auto"
            ))
        };
        Ok(match s {
            "off" | "none" => Compression::Off,
            "lz4" => Compression::Lz4,
            "auto" | "on" => Compression::Auto,
            "zstd" => Compression::Zstd(3),
            other => {
                let level: i32 = other
                    .strip_prefix("zstd-")
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(bad)?;
                if !(1..=22).contains(&level) {
                    return Err(bad());
                }
                Compression::Zstd(level)
            }
        })
    }
}

/// How one stored block is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockCodec {
    /// Stored as written.
    Raw = 0,
    /// LZ4 block format.
    Lz4 = 1,
    /// Zstandard frame.
    Zstd = 2,
}

/// Compresses a block per the collection's setting; returns the codec actually used and
/// the bytes to store. Incompressible data is stored raw (the buffer itself, not a copy).
pub fn compress(data: Vec<u8>, setting: Compression) -> (BlockCodec, Vec<u8>) {
    let (codec, packed) = match setting {
        Compression::Off => return (BlockCodec::Raw, data),
        Compression::Lz4 | Compression::Auto => (BlockCodec::Lz4, lz4_flex::block::compress(&data)),
        Compression::Zstd(level) => match zstd::bulk::compress(&data, level) {
            Ok(packed) => (BlockCodec::Zstd, packed),
            Err(_) => return (BlockCodec::Raw, data),
        },
    };
    let worth_it = match setting {
        Compression::Auto => packed.len() <= data.len() - data.len() / 8,
        _ => packed.len() < data.len(),
    };
    if worth_it {
        (codec, packed)
    } else {
        (BlockCodec::Raw, data)
    }
}

/// Restores a block's logical bytes.
pub fn decompress(codec: BlockCodec, stored: Vec<u8>, lsize: usize) -> Result<Vec<u8>> {
    let data = match codec {
        BlockCodec::Raw => stored,
        BlockCodec::Lz4 => lz4_flex::block::decompress(&stored, lsize)
            .map_err(|e| Error::DataLoss(format!("lz4 block does not decode: {e}")))?,
        BlockCodec::Zstd => zstd::bulk::decompress(&stored, lsize)
            .map_err(|e| Error::DataLoss(format!("zstd block does not decode: {e}")))?,
    };
    if data.len() != lsize {
        return Err(Error::DataLoss(format!(
            "block decodes to {} bytes, expected {lsize}",
            data.len()
        )));
    }
    Ok(data)
}

/// Where a block lives and how to verify and decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPtr {
    /// Top-level vdev.
    pub vdev: u32,
    /// First row on the vdev.
    pub row: u64,
    /// Rows occupied.
    pub nrows: u32,
    /// Logical (decoded) size.
    pub lsize: u32,
    /// Stored size.
    pub psize: u32,
    /// Encoding of the stored bytes.
    pub codec: BlockCodec,
    /// BLAKE3 of the stored bytes.
    pub checksum: [u8; 32],
    /// Transaction group in which this pointer was written.
    pub birth: u64,
    /// Whether the block is shared through the dedup table.
    pub dedup: bool,
}

/// Size of an encoded block pointer.
pub const BLOCK_PTR_LEN: usize = 66;

impl BlockPtr {
    /// The fixed-width on-disk encoding.
    pub fn encode(&self) -> [u8; BLOCK_PTR_LEN] {
        let mut out = [0u8; BLOCK_PTR_LEN];
        out[0..4].copy_from_slice(&self.vdev.to_le_bytes());
        out[4..12].copy_from_slice(&self.row.to_le_bytes());
        out[12..16].copy_from_slice(&self.nrows.to_le_bytes());
        out[16..20].copy_from_slice(&self.lsize.to_le_bytes());
        out[20..24].copy_from_slice(&self.psize.to_le_bytes());
        out[24] = self.codec as u8;
        out[25..57].copy_from_slice(&self.checksum);
        out[57..65].copy_from_slice(&self.birth.to_le_bytes());
        out[65] = self.dedup as u8;
        out
    }

    /// Decodes a pointer, rejecting anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != BLOCK_PTR_LEN {
            return Err(Error::Corrupt(format!(
                "block pointer of {} bytes",
                bytes.len()
            )));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let codec = match bytes[24] {
            0 => BlockCodec::Raw,
            1 => BlockCodec::Lz4,
            2 => BlockCodec::Zstd,
            other => return Err(Error::Corrupt(format!("unknown block codec {other}"))),
        };
        Ok(BlockPtr {
            vdev: u32_at(0),
            row: u64_at(4),
            nrows: u32_at(12),
            lsize: u32_at(16),
            psize: u32_at(20),
            codec,
            checksum: bytes[25..57].try_into().expect("32 bytes"),
            birth: u64_at(57),
            dedup: bytes[65] != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn compression_round_trips(data in proptest::collection::vec(0u8..4, 0..20_000), which in 0..4usize) {
            let setting = [Compression::Off, Compression::Lz4, Compression::Zstd(3), Compression::Auto][which];
            let (codec, stored) = compress(data.clone(), setting);
            prop_assert!(stored.len() <= data.len());
            prop_assert_eq!(decompress(codec, stored, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let data: Vec<u8> = (0..65536u32)
            .map(|i| blake3::hash(&i.to_le_bytes()).as_bytes()[0])
            .collect();
        assert_eq!(compress(data, Compression::Auto).0, BlockCodec::Raw);
        assert_eq!(
            compress(vec![0u8; 65536], Compression::Auto).0,
            BlockCodec::Lz4
        );
    }

    #[test]
    fn block_ptr_round_trips_and_rejects_garbage() {
        let bp = BlockPtr {
            vdev: 2,
            row: 1 << 40,
            nrows: 3,
            lsize: 1 << 20,
            psize: 4000,
            codec: BlockCodec::Zstd,
            checksum: [9; 32],
            birth: 77,
            dedup: true,
        };
        assert_eq!(BlockPtr::decode(&bp.encode()).unwrap(), bp);
        assert!(BlockPtr::decode(&[0; 10]).is_err());
        let mut bad = bp.encode();
        bad[24] = 9;
        assert!(BlockPtr::decode(&bad).is_err());
    }

    #[test]
    fn compression_names_parse() {
        assert_eq!(
            "zstd-9".parse::<Compression>().unwrap(),
            Compression::Zstd(9)
        );
        assert!("zstd-99".parse::<Compression>().is_err());
        assert!("gzip".parse::<Compression>().is_err());
    }
}
