//! Data larger than one object, like libradosstriper: a striped object `NAME` is
//! stored as pieces `NAME.0000000000000000`, `NAME.0000000000000001`, ... of a fixed
//! size (4 MiB by default), written and read several at a time.
//!
//! The first piece carries the layout (`striper.size`, `striper.piece_size`
//! xattrs) and is written last, with its data and the new size in one atomic
//! operation: until then readers see the previous size, and a write that fails
//! half-way leaves the previous size in place. Pieces beyond a shorter new size are
//! removed after it. A reader running during an overwrite may see pieces of both
//! versions; writers of one name must not overlap.
//!
//! ```no_run
//! # async fn demo(objects: std::sync::Arc<lcpfs_client::objects::ObjectClient>) -> anyhow::Result<()> {
//! use lcpfs_client::striper::Striper;
//!
//! let striper = Striper::new(objects, "data");
//! let file = tokio::fs::File::open("disk.img").await?;
//! striper.write(b"disk.img", file, |_| {}).await?;
//! let mut out = tokio::fs::File::create("copy.img").await?;
//! striper.read(b"disk.img", &mut out, |_| {}).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::{Context, bail};
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{KeyValue, ObjectOp, op_result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::objects::ObjectClient;

/// Default piece size.
pub const DEFAULT_PIECE_SIZE: u64 = 4 << 20;
const SIZE_XATTR: &str = "striper.size";
const PIECE_XATTR: &str = "striper.piece_size";

/// How a striped object is laid out, read from its first piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Logical size in bytes.
    pub size: u64,
    /// Size of each piece (the last may be shorter).
    pub piece_size: u64,
}

impl Layout {
    /// How many pieces hold `size` bytes.
    pub fn pieces(&self) -> u64 {
        self.size.div_ceil(self.piece_size).max(1)
    }
}

/// The name of piece `index` of striped object `name`.
pub fn piece_name(name: &[u8], index: u64) -> Vec<u8> {
    [name, format!(".{index:016x}").as_bytes()].concat()
}

fn op(op: Op) -> ObjectOp {
    ObjectOp { op: Some(op) }
}

fn parse_u64(value: &[u8], what: &str) -> anyhow::Result<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .with_context(|| format!("the striped object's {what} is not a number"))
}

/// Striped objects of one pool.
pub struct Striper {
    objects: Arc<ObjectClient>,
    pool: String,
    piece_size: u64,
    parallel: usize,
}

impl Striper {
    /// Striped objects of `pool`, with 4 MiB pieces, four in flight at a time.
    pub fn new(objects: Arc<ObjectClient>, pool: &str) -> Self {
        Striper {
            objects,
            pool: pool.to_owned(),
            piece_size: DEFAULT_PIECE_SIZE,
            parallel: 4,
        }
    }

    /// Sets the piece size for new writes (reads use the size the object has).
    pub fn with_piece_size(mut self, piece_size: u64) -> Self {
        self.piece_size = piece_size.max(1);
        self
    }

    /// The layout of striped object `name`.
    pub async fn layout(&self, name: &[u8]) -> anyhow::Result<Layout> {
        let reply = self
            .objects
            .operate(
                &self.pool,
                &piece_name(name, 0),
                vec![
                    op(Op::GetXattr(SIZE_XATTR.to_owned())),
                    op(Op::GetXattr(PIECE_XATTR.to_owned())),
                ],
            )
            .await
            .map_err(|error| self.not_striped(name, error))?;
        let values: Vec<Vec<u8>> = reply
            .results
            .into_iter()
            .filter_map(|result| match result.result {
                Some(op_result::Result::Xattr(value)) => Some(value),
                _ => None,
            })
            .collect();
        let [size, piece_size] = &values[..] else {
            bail!("the OSD sent an incomplete striper layout");
        };
        let layout = Layout {
            size: parse_u64(size, "size")?,
            piece_size: parse_u64(piece_size, "piece size")?,
        };
        if layout.piece_size == 0 {
            bail!("the striped object has a piece size of 0");
        }
        Ok(layout)
    }

    fn not_striped(&self, name: &[u8], error: anyhow::Error) -> anyhow::Error {
        let text = format!("{error:#}");
        if text.contains("does not exist") || text.contains("xattr") {
            anyhow::anyhow!(
                "striped object '{}' does not exist in pool '{}'",
                String::from_utf8_lossy(name),
                self.pool
            )
        } else {
            error
        }
    }

    /// Writes all of `reader` as striped object `name` (replacing it); calls
    /// `progress` with the bytes stored so far. Returns the size.
    pub async fn write(
        &self,
        name: &[u8],
        mut reader: impl AsyncRead + Unpin,
        progress: impl Fn(u64),
    ) -> anyhow::Result<u64> {
        let old = self.layout(name).await.ok();
        let piece_size = self.piece_size;
        let mut first: Option<Vec<u8>> = None;
        let mut size = 0u64;
        let mut index = 0u64;
        let mut stored = 0u64;
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            let mut piece = Vec::with_capacity(piece_size as usize);
            (&mut reader)
                .take(piece_size)
                .read_to_end(&mut piece)
                .await
                .context("cannot read the data to store")?;
            if piece.is_empty() && index > 0 {
                break;
            }
            let length = piece.len() as u64;
            size += length;
            if index == 0 {
                first = Some(piece);
            } else {
                while in_flight.len() >= self.parallel {
                    stored += in_flight.join_next().await.expect("a write in flight")??;
                    progress(stored);
                }
                let objects = self.objects.clone();
                let (pool, piece_name) = (self.pool.clone(), piece_name(name, index));
                in_flight.spawn(async move {
                    objects.put(&pool, &piece_name, piece).await?;
                    anyhow::Ok(length)
                });
            }
            index += 1;
            if length < piece_size {
                break;
            }
        }
        while let Some(done) = in_flight.join_next().await {
            stored += done??;
            progress(stored);
        }
        // The first piece commits the new size with its data.
        let first = first.unwrap_or_default();
        let first_length = first.len() as u64;
        self.objects
            .operate(
                &self.pool,
                &piece_name(name, 0),
                vec![
                    op(Op::WriteFull(first)),
                    op(Op::SetXattr(KeyValue {
                        key: SIZE_XATTR.to_owned(),
                        value: size.to_string().into_bytes(),
                    })),
                    op(Op::SetXattr(KeyValue {
                        key: PIECE_XATTR.to_owned(),
                        value: piece_size.to_string().into_bytes(),
                    })),
                ],
            )
            .await?;
        progress(stored + first_length);
        if let Some(old) = old {
            let new_pieces = Layout { size, piece_size }.pieces();
            for stale in new_pieces..old.pieces() {
                self.remove_piece(name, stale).await?;
            }
        }
        Ok(size)
    }

    async fn remove_piece(&self, name: &[u8], index: u64) -> anyhow::Result<()> {
        match self
            .objects
            .remove(&self.pool, &piece_name(name, index))
            .await
        {
            Err(error) if format!("{error:#}").contains("does not exist") => Ok(()),
            result => result,
        }
    }

    /// Writes striped object `name` to `writer`; calls `progress` with the bytes
    /// written so far. Returns the size.
    pub async fn read(
        &self,
        name: &[u8],
        mut writer: impl AsyncWrite + Unpin,
        progress: impl Fn(u64),
    ) -> anyhow::Result<u64> {
        let layout = self.layout(name).await?;
        let pieces = layout.pieces();
        let mut fetches = VecDeque::new();
        let mut next = 0u64;
        let mut written = 0u64;
        for index in 0..pieces {
            while next < pieces && fetches.len() < self.parallel {
                let objects = self.objects.clone();
                let (pool, piece_name) = (self.pool.clone(), piece_name(name, next));
                let length = layout
                    .piece_size
                    .min(layout.size.saturating_sub(next * layout.piece_size));
                fetches.push_back(tokio::spawn(async move {
                    let data = objects.read(&pool, &piece_name, 0, length).await?;
                    if (data.len() as u64) < length {
                        bail!(
                            "piece {next} holds {} bytes, the layout says {length}",
                            data.len()
                        );
                    }
                    anyhow::Ok(data)
                }));
                next += 1;
            }
            let data = fetches
                .pop_front()
                .expect("a fetch per piece")
                .await
                .context("piece fetch")?
                .with_context(|| format!("piece {index}"))?;
            writer.write_all(&data).await?;
            written += data.len() as u64;
            progress(written);
        }
        writer.flush().await?;
        Ok(written)
    }

    /// Removes striped object `name` and all its pieces.
    pub async fn remove(&self, name: &[u8]) -> anyhow::Result<()> {
        let layout = self.layout(name).await?;
        for index in (1..layout.pieces()).rev() {
            self.remove_piece(name, index).await?;
        }
        self.objects.remove(&self.pool, &piece_name(name, 0)).await
    }
}
