//! Data larger than one object, like libradosstriper: a striped object `NAME` is
//! stored as a head `NAME.0000000000000000` holding the first piece and the layout
//! (`striper.size`, `striper.piece_size`, `striper.generation` xattrs), and pieces
//! `NAME.<index>.<generation>` (16 hex digits each) of a fixed size (4 MiB by
//! default) for the rest, written and read several at a time.
//!
//! Every write picks a new generation, so its pieces never overwrite those of the
//! version readers see. The head is written last, its data and the new layout in one
//! atomic operation: until then readers see the previous version whole, and a write
//! that fails before its head leaves it in place (and removes what it wrote). The
//! previous version's pieces are removed after the head. A reader takes the layout and
//! the first piece in one operation and reads only pieces of that generation: it
//! returns one version whole, or, when a newer version replaced it while it read, fails
//! saying so, never a mix. Writers of one name must not overlap (the pieces of an
//! overlapping writer that loses may stay behind).
//!
//! Removal takes the object away first, in one operation on its head, and its
//! pieces after: a removal cut short leaves no part of an object to read, and the
//! next removal or write of the name takes what it left behind.
//!
//! Objects striped before generations existed (no `striper.generation`) keep their
//! pieces named `NAME.<index>` and read as before; writing them again moves them to
//! the new naming.
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
use lcpfs_proto::{KeyValue, ObjectOp, ReadRange, op_result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::objects::ObjectClient;

/// Default piece size.
pub const DEFAULT_PIECE_SIZE: u64 = 4 << 20;
const SIZE_XATTR: &str = "striper.size";
const PIECE_XATTR: &str = "striper.piece_size";
const GENERATION_XATTR: &str = "striper.generation";
/// On the head of a striped object being removed, in place of its size.
const REMOVING_XATTR: &str = "striper.removing";

/// How a striped object is laid out, read from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Logical size in bytes.
    pub size: u64,
    /// Size of each piece (the last may be shorter).
    pub piece_size: u64,
    /// The write that stored this version; it names the pieces after the first. 0:
    /// an object striped before generations, whose pieces carry no generation.
    pub generation: u64,
}

impl Layout {
    /// How many pieces hold `size` bytes.
    pub fn pieces(&self) -> u64 {
        self.size.div_ceil(self.piece_size).max(1)
    }

    /// The name of piece `index` of striped object `name` in this version.
    pub fn piece_name(&self, name: &[u8], index: u64) -> Vec<u8> {
        let suffix = if index == 0 || self.generation == 0 {
            format!(".{index:016x}")
        } else {
            format!(".{index:016x}.{:016x}", self.generation)
        };
        [name, suffix.as_bytes()].concat()
    }

    /// Bytes of piece `index`.
    fn piece_length(&self, index: u64) -> u64 {
        self.piece_size
            .min(self.size.saturating_sub(index * self.piece_size))
    }
}

/// The name of the head of striped object `name`: its first piece, with the layout.
pub fn head_name(name: &[u8]) -> Vec<u8> {
    [name, format!(".{:016x}", 0).as_bytes()].concat()
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

fn get_xattr(key: &str) -> ObjectOp {
    op(Op::GetXattr(key.to_owned()))
}

fn set_xattr(key: &str, value: u64) -> ObjectOp {
    op(Op::SetXattr(KeyValue {
        key: key.to_owned(),
        value: value.to_string().into_bytes(),
    }))
}

fn is_missing(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("does not exist")
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
        Ok(self.head(name, SIZE_XATTR, None).await?.0)
    }

    /// The layout of a striped object whose removal was cut short (its head is
    /// marked, some pieces may remain).
    async fn removing(&self, name: &[u8]) -> anyhow::Result<Layout> {
        Ok(self.head(name, REMOVING_XATTR, None).await?.0)
    }

    /// The layout of striped object `name` and when its current version was written
    /// (nanoseconds since the Unix epoch), read together.
    pub async fn stat(&self, name: &[u8]) -> anyhow::Result<(Layout, u64)> {
        match self.head(name, SIZE_XATTR, Some(Op::Stat(true))).await? {
            (layout, Some(op_result::Result::Stat(stat))) => Ok((layout, stat.mtime_ns)),
            _ => bail!("the OSD sent no stat of the striped object's head"),
        }
    }

    /// The layout of striped object `name` (its size taken from xattr
    /// `size_key`) and the result of `extra` on its head (a read of the first
    /// piece, a stat), in one operation so that both belong to the same version.
    async fn head(
        &self,
        name: &[u8],
        size_key: &str,
        extra: Option<Op>,
    ) -> anyhow::Result<(Layout, Option<op_result::Result>)> {
        let mut ops = vec![
            get_xattr(size_key),
            get_xattr(PIECE_XATTR),
            get_xattr(GENERATION_XATTR),
        ];
        ops.extend(extra.map(op));
        let reply = match self
            .objects
            .operate(&self.pool, &head_name(name), ops.clone())
            .await
        {
            Err(error)
                if format!("{error:#}").contains(&format!("xattr {GENERATION_XATTR:?} of")) =>
            {
                // Striped before generations existed.
                ops.remove(2);
                self.objects
                    .operate(&self.pool, &head_name(name), ops)
                    .await
            }
            reply => reply,
        }
        .map_err(|error| self.not_striped(name, error))?;
        let mut numbers = Vec::new();
        let mut extra = None;
        for result in reply.results {
            match result.result {
                Some(op_result::Result::Xattr(value)) => numbers.push(value),
                other => extra = other.or(extra),
            }
        }
        let (size, piece_size, generation) = match &numbers[..] {
            [size, piece_size] => (size, piece_size, None),
            [size, piece_size, generation] => (size, piece_size, Some(generation)),
            _ => bail!("the OSD sent an incomplete striper layout"),
        };
        let layout = Layout {
            size: parse_u64(size, "size")?,
            piece_size: parse_u64(piece_size, "piece size")?,
            generation: generation
                .map(|value| parse_u64(value, "generation"))
                .transpose()?
                .unwrap_or(0),
        };
        if layout.piece_size == 0 {
            bail!("the striped object has a piece size of 0");
        }
        Ok((layout, extra))
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
        reader: impl AsyncRead + Unpin,
        progress: impl Fn(u64),
    ) -> anyhow::Result<u64> {
        // A removal cut short left pieces behind: they go like an old version's.
        let (old, cut_short) = match self.layout(name).await {
            Ok(layout) => (Some(layout), false),
            Err(error) if is_missing(&error) => {
                let left = self.removing(name).await.ok();
                (left, left.is_some())
            }
            Err(error) => return Err(error),
        };
        let mut layout = Layout {
            size: 0,
            piece_size: self.piece_size,
            generation: loop {
                let generation: u64 = rand::random();
                if generation != 0 && old.is_none_or(|old| old.generation != generation) {
                    break generation;
                }
            },
        };
        let mut written = 0;
        let stored = self
            .write_pieces(name, reader, &mut layout, &mut written, &progress)
            .await;
        let (first, stored) = match stored {
            Ok(done) => done,
            Err(error) => {
                // Nothing refers to this generation's pieces yet: take them back.
                for index in 1..=written {
                    let _ = self.remove_piece(&layout.piece_name(name, index)).await;
                }
                return Err(error);
            }
        };
        // The head commits the new version: its first piece and layout at once.
        let first_length = first.len() as u64;
        let mut commit = vec![
            op(Op::WriteFull(first)),
            set_xattr(SIZE_XATTR, layout.size),
            set_xattr(PIECE_XATTR, layout.piece_size),
            set_xattr(GENERATION_XATTR, layout.generation),
        ];
        if cut_short {
            commit.push(op(Op::RmXattr(REMOVING_XATTR.to_owned())));
        }
        self.objects
            .operate(&self.pool, &head_name(name), commit)
            .await?;
        progress(stored + first_length);
        if let Some(old) = old {
            for index in 1..old.pieces() {
                self.remove_piece(&old.piece_name(name, index))
                    .await
                    .context(
                        "the new version is stored, but removing the previous version's pieces failed",
                    )?;
            }
        }
        Ok(layout.size)
    }

    /// Reads `reader` to its end, storing every piece but the first (returned, with
    /// the bytes stored) under `layout`'s generation and counting its size there;
    /// `written` counts the pieces started, for a failed write to take back. Every put
    /// has landed or failed when this returns.
    async fn write_pieces(
        &self,
        name: &[u8],
        mut reader: impl AsyncRead + Unpin,
        layout: &mut Layout,
        written: &mut u64,
        progress: &impl Fn(u64),
    ) -> anyhow::Result<(Vec<u8>, u64)> {
        let piece_size = layout.piece_size;
        let mut first = Vec::new();
        let mut stored = 0u64;
        let mut in_flight = tokio::task::JoinSet::new();
        let sent: anyhow::Result<()> = async {
            let mut index = 0u64;
            loop {
                let mut piece = Vec::with_capacity(piece_size as usize);
                (&mut reader)
                    .take(piece_size)
                    .read_to_end(&mut piece)
                    .await
                    .context("cannot read the data to store")?;
                if piece.is_empty() && index > 0 {
                    return Ok(());
                }
                let length = piece.len() as u64;
                layout.size += length;
                if index == 0 {
                    first = piece;
                } else {
                    while in_flight.len() >= self.parallel {
                        stored += in_flight.join_next().await.expect("a write in flight")??;
                        progress(stored);
                    }
                    let objects = self.objects.clone();
                    let (pool, piece_name) = (self.pool.clone(), layout.piece_name(name, index));
                    *written = index;
                    in_flight.spawn(async move {
                        objects.put(&pool, &piece_name, piece).await?;
                        anyhow::Ok(length)
                    });
                }
                index += 1;
                if length < piece_size {
                    return Ok(());
                }
            }
        }
        .await;
        let mut failed = sent.err();
        while let Some(done) = in_flight.join_next().await {
            match done.map_err(anyhow::Error::from).and_then(|put| put) {
                Ok(length) => {
                    stored += length;
                    progress(stored);
                }
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok((first, stored)),
        }
    }

    async fn remove_piece(&self, piece_name: &[u8]) -> anyhow::Result<()> {
        match self.objects.remove(&self.pool, piece_name).await {
            Err(error) if is_missing(&error) => Ok(()),
            result => result,
        }
    }

    /// Writes striped object `name` to `writer`; calls `progress` with the bytes
    /// written so far. Returns the size. Fails, rather than mix versions, when a newer
    /// version replaces the object during the read.
    pub async fn read(
        &self,
        name: &[u8],
        mut writer: impl AsyncWrite + Unpin,
        progress: impl Fn(u64),
    ) -> anyhow::Result<u64> {
        let read_first = Op::Read(ReadRange {
            offset: 0,
            length: 0,
        });
        let (layout, mut first) = match self.head(name, SIZE_XATTR, Some(read_first)).await? {
            (layout, Some(op_result::Result::Data(first))) => (layout, first),
            _ => bail!("the OSD sent no data of the striped object's head"),
        };
        let length = layout.piece_length(0);
        if (first.len() as u64) < length {
            bail!(
                "piece 0 holds {} bytes, the layout says {length}",
                first.len()
            );
        }
        first.truncate(length as usize);
        writer.write_all(&first).await?;
        let mut written = first.len() as u64;
        progress(written);
        let pieces = layout.pieces();
        let mut fetches = VecDeque::new();
        let mut next = 1u64;
        for index in 1..pieces {
            while next < pieces && fetches.len() < self.parallel {
                let objects = self.objects.clone();
                let (pool, piece_name) = (self.pool.clone(), layout.piece_name(name, next));
                let length = layout.piece_length(next);
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
            let data = match fetches
                .pop_front()
                .expect("a fetch per piece")
                .await
                .context("piece fetch")?
            {
                Err(error) if is_missing(&error) => {
                    return Err(self.vanished(name, &layout, error).await);
                }
                fetched => fetched.with_context(|| format!("piece {index}"))?,
            };
            writer.write_all(&data).await?;
            written += data.len() as u64;
            progress(written);
        }
        if layout.generation == 0 && self.layout(name).await? != layout {
            // An object striped before generations has its pieces rewritten in place
            // by no one, but a write moving it to generations removes them.
            bail!(self.replaced(name));
        }
        writer.flush().await?;
        Ok(written)
    }

    /// Why a piece of the version being read is gone: a newer version replaced it,
    /// or (the head unchanged) the piece is lost.
    async fn vanished(&self, name: &[u8], read: &Layout, error: anyhow::Error) -> anyhow::Error {
        match self.layout(name).await {
            Ok(now) if now == *read => error.context(format!(
                "striped object '{}' in pool '{}' misses a piece",
                String::from_utf8_lossy(name),
                self.pool
            )),
            Ok(_) => anyhow::anyhow!(self.replaced(name)),
            Err(error) => error,
        }
    }

    fn replaced(&self, name: &[u8]) -> String {
        format!(
            "striped object '{}' in pool '{}' was replaced by a newer version while it was read; read it again",
            String::from_utf8_lossy(name),
            self.pool
        )
    }

    /// Removes striped object `name` and all its pieces. The object disappears at
    /// once, in one operation on its head (its size moves to `striper.removing`),
    /// before any piece goes: a removal cut short (a crash, a timeout) never
    /// leaves part of an object to read, and the next removal (or write) of the
    /// name takes the pieces left behind.
    pub async fn remove(&self, name: &[u8]) -> anyhow::Result<()> {
        let layout = match self.layout(name).await {
            Ok(layout) => {
                self.objects
                    .operate(
                        &self.pool,
                        &head_name(name),
                        vec![
                            op(Op::RmXattr(SIZE_XATTR.to_owned())),
                            set_xattr(REMOVING_XATTR, layout.size),
                        ],
                    )
                    .await?;
                layout
            }
            Err(error) if is_missing(&error) => self.removing(name).await.map_err(|_| error)?,
            Err(error) => return Err(error),
        };
        for index in (1..layout.pieces()).rev() {
            self.remove_piece(&layout.piece_name(name, index)).await?;
        }
        self.objects.remove(&self.pool, &head_name(name)).await
    }
}
