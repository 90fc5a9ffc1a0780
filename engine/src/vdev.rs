//! Virtual devices: the disks of a store and how a block is laid out on them.
//!
//! A store's disks are grouped into top-level vdevs, striped by the allocator. A vdev is
//! addressed in *rows*: one row is one 4 KiB sector at the same offset on every disk of
//! the vdev. A block occupies a run of rows:
//! - `single`: the block's sectors on the one disk;
//! - `mirror`: the same sectors on every disk (each holds a full copy);
//! - `raidz1/2/3` over `w` disks: the block is cut into `w - p` data columns, Reed–Solomon
//!   computes `p` parity columns, and column `i` lives on disk `i`. Every block is a full
//!   stripe, so a write never updates parity in place (no RAID-5 write hole): the cost is
//!   that a block smaller than `w - p` sectors still takes one full row.
//!
//! Every read is checked against the block's BLAKE3 checksum. A mismatch is rebuilt from
//! the mirror copies or the parity, trying each set of suspect columns the parity can
//! cover; the good bytes are written back over the damaged copy (self-heal) and the
//! damaged disk's checksum-error counter rises. When nothing rebuilds, the read fails
//! with [`Error::DataLoss`]: never wrong bytes.
//!
//! Each disk carries four copies of its label (two at the front, two at the end), so one
//! damaged area does not lose the disk's identity.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use reed_solomon_erasure::galois_8::ReedSolomon;
use serde::{Deserialize, Serialize};

use super::disk_io;
use super::error::{Error, IoContext, Result};

/// The allocation unit on every disk.
pub const SECTOR: u64 = 4096;
const LABEL_SLOT: u64 = 8192;
/// Bytes reserved at each end of a disk for two label copies.
const LABEL_AREA: u64 = 2 * LABEL_SLOT;
const LABEL_MAGIC: &str = "lcpfs-disk-label";
/// The smallest disk the engine accepts.
pub const MIN_DISK_SIZE: u64 = 1 << 20;
/// Bytes written to a disk since its last flush after which the disk starts writing them
/// back on its own (like RocksDB's `bytes_per_sync`): a large write then reaches the
/// device while the next blocks are still being encoded, and the flush at commit waits
/// only for the tail.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// How a top-level vdev protects its blocks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VdevKind {
    /// One disk, no redundancy.
    Single,
    /// Two or more disks, each holding a full copy.
    Mirror,
    /// Single parity.
    Raidz1,
    /// Double parity.
    Raidz2,
    /// Triple parity.
    Raidz3,
}

impl VdevKind {
    /// Number of parity columns (0 for single and mirror).
    pub fn parity(self) -> usize {
        match self {
            VdevKind::Single | VdevKind::Mirror => 0,
            VdevKind::Raidz1 => 1,
            VdevKind::Raidz2 => 2,
            VdevKind::Raidz3 => 3,
        }
    }

    /// The fewest disks this kind can be built from.
    pub fn min_width(self) -> usize {
        match self {
            VdevKind::Single => 1,
            VdevKind::Mirror => 2,
            raidz => raidz.parity() + 2,
        }
    }

    /// How many disks of a `width`-wide vdev may be lost without losing data.
    pub fn redundancy(self, width: usize) -> usize {
        match self {
            VdevKind::Single => 0,
            VdevKind::Mirror => width - 1,
            raidz => raidz.parity(),
        }
    }

    /// The name used on the command line and in `status`.
    pub fn name(self) -> &'static str {
        match self {
            VdevKind::Single => "single",
            VdevKind::Mirror => "mirror",
            VdevKind::Raidz1 => "raidz1",
            VdevKind::Raidz2 => "raidz2",
            VdevKind::Raidz3 => "raidz3",
        }
    }
}

impl std::str::FromStr for VdevKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "single" => VdevKind::Single,
            "mirror" => VdevKind::Mirror,
            "raidz1" | "raidz" => VdevKind::Raidz1,
            "raidz2" => VdevKind::Raidz2,
            "raidz3" => VdevKind::Raidz3,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown layout {other:?}: use single, mirror, raidz1, raidz2 or raidz3"
                )));
            }
        })
    }
}

/// One disk as recorded in the pool configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DiskConfig {
    /// Unique id written into the disk's labels.
    pub guid: u64,
    /// Where the disk is (a file or a block device).
    pub path: PathBuf,
    /// Size in bytes when the pool was created.
    pub size: u64,
}

/// One top-level vdev as recorded in the pool configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VdevConfig {
    /// How the vdev protects blocks.
    pub kind: VdevKind,
    /// Its disks, in column order.
    pub disks: Vec<DiskConfig>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Label {
    magic: String,
    version: u32,
    pool_id: String,
    guid: u64,
    vdev: u32,
    child: u32,
    kind: VdevKind,
    width: u32,
}

/// Health of one disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiskState {
    /// Present and serving.
    Online,
    /// Missing, unreadable, or carrying another disk's label.
    Faulted,
}

/// Error counters of one disk, like the READ/WRITE/CKSUM columns of `zpool status`.
#[derive(Default, Debug)]
pub struct DiskCounters {
    /// Reads the operating system failed.
    pub read_errors: AtomicU64,
    /// Writes the operating system failed.
    pub write_errors: AtomicU64,
    /// Reads that returned bytes failing their checksum.
    pub checksum_errors: AtomicU64,
}

/// One disk of a vdev.
#[derive(Debug)]
pub struct Disk {
    /// Unique id, also in the disk's labels.
    pub guid: u64,
    path: RwLock<PathBuf>,
    file: RwLock<Option<Arc<File>>>,
    problem: RwLock<Option<String>>,
    /// Bytes written since write-back was last started or the disk flushed.
    unflushed: AtomicU64,
    /// Error counters since the pool was created.
    pub counters: DiskCounters,
}

impl Disk {
    /// The disk's path.
    pub fn path(&self) -> PathBuf {
        self.path.read().expect("disk path lock poisoned").clone()
    }

    /// Whether the disk is serving I/O.
    pub fn state(&self) -> DiskState {
        if self.file().is_some() {
            DiskState::Online
        } else {
            DiskState::Faulted
        }
    }

    /// Why the disk is faulted, if it is.
    pub fn problem(&self) -> Option<String> {
        self.problem.read().expect("disk lock poisoned").clone()
    }

    fn file(&self) -> Option<Arc<File>> {
        self.file.read().expect("disk lock poisoned").clone()
    }

    /// Puts a (new) device in place of this disk; used by `replace`.
    pub(crate) fn attach(&self, path: PathBuf, file: File) {
        *self.path.write().expect("disk lock poisoned") = path;
        *self.file.write().expect("disk lock poisoned") = Some(Arc::new(file));
        *self.problem.write().expect("disk lock poisoned") = None;
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> bool {
        let Some(file) = self.file() else {
            return false;
        };
        match disk_io::read_at(&file, buf, LABEL_AREA + offset) {
            Ok(()) => true,
            Err(e) => {
                self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(disk = %self.path().display(), offset, "read failed: {e}");
                false
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> bool {
        let Some(file) = self.file() else {
            return false;
        };
        match disk_io::write_at(&file, buf, LABEL_AREA + offset) {
            Ok(()) => {
                let len = buf.len() as u64;
                if self.unflushed.fetch_add(len, Ordering::Relaxed) + len >= WRITEBACK_BYTES {
                    self.unflushed.store(0, Ordering::Relaxed);
                    start_writeback(&file);
                }
                true
            }
            Err(e) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(disk = %self.path().display(), offset, "write failed: {e}");
                false
            }
        }
    }

    fn sync(&self) -> Result<()> {
        if let Some(file) = self.file() {
            self.unflushed.store(0, Ordering::Relaxed);
            disk_io::sync(&file).ctx(|| format!("flushing disk {}", self.path().display()))?;
        }
        Ok(())
    }
}

/// Starts writing a disk's dirty pages back without waiting for them: a hint, the flush
/// at commit is what makes them durable and reports errors.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File) {
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
    unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) {}

/// Flushes disks at once: the first on this thread, each other one on a thread of its
/// own (or here too when no thread can be started); returns the first failure.
pub(crate) fn sync_disks(disks: &[&Disk]) -> Result<()> {
    let Some((first, others)) = disks.split_first() else {
        return Ok(());
    };
    std::thread::scope(|scope| {
        let flushes: Vec<_> = others
            .iter()
            .map(|disk| {
                let flush = std::thread::Builder::new()
                    .name("lcpfs-flush".into())
                    .spawn_scoped(scope, move || disk.sync());
                (disk, flush)
            })
            .collect();
        let mut outcome = first.sync();
        for (disk, flush) in flushes {
            let flushed = match flush {
                Ok(flush) => flush
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => disk.sync(),
            };
            outcome = outcome.and(flushed);
        }
        outcome
    })
}

/// The number of whole sectors between the label areas of a disk of `size` bytes.
fn data_sectors(size: u64) -> u64 {
    size.saturating_sub(2 * LABEL_AREA) / SECTOR
}

fn label_offsets(size: u64) -> [u64; 4] {
    [0, LABEL_SLOT, size - LABEL_AREA, size - LABEL_SLOT]
}

/// Who a disk is: what its labels say.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DiskIdentity<'a> {
    pub pool_id: &'a str,
    pub vdev: u32,
    pub child: u32,
    pub kind: VdevKind,
    pub width: u32,
    pub guid: u64,
}

/// Creates (or sizes) a file disk and writes its four labels, durably.
pub(crate) fn format_disk(
    path: &Path,
    create_size: Option<u64>,
    identity: &DiskIdentity<'_>,
) -> Result<DiskConfig> {
    let file = match create_size {
        Some(size) => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .ctx(|| format!("creating disk file {}", path.display()))?;
            file.set_len(size)
                .ctx(|| format!("sizing disk file {}", path.display()))?;
            file
        }
        None => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ctx(|| format!("opening disk {}", path.display()))?,
    };
    let size = device_size(&file, path)?;
    if size < MIN_DISK_SIZE {
        return Err(Error::Invalid(format!(
            "disk {} has {size} bytes; a disk needs at least {MIN_DISK_SIZE}",
            path.display()
        )));
    }
    let label = Label {
        magic: LABEL_MAGIC.into(),
        version: 1,
        pool_id: identity.pool_id.into(),
        guid: identity.guid,
        vdev: identity.vdev,
        child: identity.child,
        kind: identity.kind,
        width: identity.width,
    };
    let body = serde_json::to_vec(&label).expect("a label always serializes");
    let mut slot = vec![0u8; LABEL_SLOT as usize];
    slot[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    slot[4..4 + body.len()].copy_from_slice(&body);
    let hash = blake3::hash(&body);
    slot[4 + body.len()..4 + body.len() + 32].copy_from_slice(hash.as_bytes());
    for offset in label_offsets(size) {
        file.write_all_at(&slot, offset)
            .ctx(|| format!("writing label of {}", path.display()))?;
    }
    file.sync_all()
        .ctx(|| format!("flushing disk {}", path.display()))?;
    Ok(DiskConfig {
        guid: identity.guid,
        path: path.to_path_buf(),
        size,
    })
}

fn device_size(file: &File, path: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    // Block devices report length 0 in metadata; seeking to the end works for both.
    let mut handle = file;
    handle
        .seek(SeekFrom::End(0))
        .ctx(|| format!("measuring disk {}", path.display()))
}

/// Reads the first intact label copy of a disk.
fn read_label(file: &File, size: u64) -> Option<Label> {
    let mut slot = vec![0u8; LABEL_SLOT as usize];
    for offset in label_offsets(size) {
        if file.read_exact_at(&mut slot, offset).is_err() {
            continue;
        }
        let len = u32::from_le_bytes(slot[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || 4 + len + 32 > slot.len() {
            continue;
        }
        let body = &slot[4..4 + len];
        if blake3::hash(body).as_bytes() != &slot[4 + len..4 + len + 32] {
            continue;
        }
        if let Ok(label) = serde_json::from_slice::<Label>(body)
            && label.magic == LABEL_MAGIC
        {
            return Some(label);
        }
    }
    None
}

/// Opens a configured disk, checking its label; a missing or foreign disk is returned
/// faulted rather than failing the open, so that the vdev can serve degraded.
pub(crate) fn open_disk(config: &DiskConfig, pool_id: &str) -> Disk {
    let disk = Disk {
        guid: config.guid,
        path: RwLock::new(config.path.clone()),
        file: RwLock::new(None),
        problem: RwLock::new(None),
        unflushed: AtomicU64::new(0),
        counters: DiskCounters::default(),
    };
    match check_disk(config, pool_id) {
        Ok(file) => disk.attach(config.path.clone(), file),
        Err(why) => *disk.problem.write().expect("fresh lock") = Some(why),
    }
    disk
}

fn check_disk(config: &DiskConfig, pool_id: &str) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&config.path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let size = device_size(&file, &config.path).map_err(|e| e.to_string())?;
    if size < config.size {
        return Err(format!("disk shrank from {} to {size} bytes", config.size));
    }
    match read_label(&file, config.size) {
        None => Err("no intact label".into()),
        Some(label) if label.pool_id != pool_id || label.guid != config.guid => Err(format!(
            "label belongs to disk {:016x} of pool {}",
            label.guid, label.pool_id
        )),
        Some(_) => Ok(file),
    }
}

/// Result of scrubbing one block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockCheck {
    /// Copies or columns found damaged and rewritten.
    pub repaired: u32,
    /// Whether the block could not be rebuilt.
    pub unrecoverable: bool,
}

/// A top-level vdev.
#[derive(Debug)]
pub struct Vdev {
    /// Position in the pool configuration.
    pub index: u32,
    /// How it protects blocks.
    pub kind: VdevKind,
    /// Its disks, in column order.
    pub disks: Vec<Arc<Disk>>,
    /// Usable rows (sectors per disk).
    pub rows: u64,
    codec: Option<ReedSolomon>,
}

/// Where a block lives and how to check it: the part of a block pointer a vdev needs.
#[derive(Clone, Copy, Debug)]
pub struct Extent<'a> {
    /// First row.
    pub row: u64,
    /// Rows occupied.
    pub nrows: u32,
    /// Stored (physical) bytes.
    pub psize: u32,
    /// BLAKE3 of the stored bytes.
    pub checksum: &'a [u8; 32],
}

impl Extent<'_> {
    /// Whether `stored` are the bytes the checksum names.
    pub fn verifies(&self, stored: &[u8]) -> bool {
        blake3::hash(stored).as_bytes() == self.checksum
    }
}

impl Vdev {
    /// Builds a vdev from opened disks.
    pub(crate) fn new(index: u32, config: &VdevConfig, disks: Vec<Arc<Disk>>) -> Result<Self> {
        let width = disks.len();
        if width < config.kind.min_width() {
            return Err(Error::Invalid(format!(
                "{} needs at least {} disks, got {width}",
                config.kind.name(),
                config.kind.min_width()
            )));
        }
        let rows = config
            .disks
            .iter()
            .map(|d| data_sectors(d.size))
            .min()
            .unwrap_or(0);
        let parity = config.kind.parity();
        let codec =
            if parity > 0 {
                Some(ReedSolomon::new(width - parity, parity).map_err(|e| {
                    Error::Invalid(format!("cannot build a {width}-wide raidz: {e:?}"))
                })?)
            } else {
                None
            };
        Ok(Vdev {
            index,
            kind: config.kind,
            disks,
            rows,
            codec,
        })
    }

    fn data_columns(&self) -> usize {
        self.disks.len() - self.kind.parity()
    }

    /// Number of disks that are not serving.
    pub fn faulted_disks(&self) -> usize {
        self.disks
            .iter()
            .filter(|d| d.state() == DiskState::Faulted)
            .count()
    }

    /// ONLINE, DEGRADED (serving with lost redundancy) or FAULTED (cannot serve).
    pub fn state(&self) -> &'static str {
        let faulted = self.faulted_disks();
        if faulted == 0 {
            "ONLINE"
        } else if faulted <= self.kind.redundancy(self.disks.len()) {
            "DEGRADED"
        } else {
            "FAULTED"
        }
    }

    /// Rows a block of `psize` stored bytes occupies.
    pub fn rows_for(&self, psize: usize) -> u32 {
        let per_row = SECTOR as usize * self.data_columns().max(1);
        let per_row = if self.kind == VdevKind::Mirror {
            SECTOR as usize
        } else {
            per_row
        };
        psize.div_ceil(per_row).max(1) as u32
    }

    /// Usable bytes: rows times the data carried per row.
    pub fn usable_bytes(&self) -> u64 {
        let columns = match self.kind {
            VdevKind::Single | VdevKind::Mirror => 1,
            _ => self.data_columns() as u64,
        };
        self.rows * SECTOR * columns
    }

    /// The bytes each disk holds for a block: the full padded copy for single and mirror,
    /// one column per disk for raidz. Whole columns borrow `data`; only a short last
    /// column is copied to pad it.
    fn encode<'a>(&self, data: &'a [u8], nrows: u32) -> Result<Vec<Cow<'a, [u8]>>> {
        let column = nrows as usize * SECTOR as usize;
        let padded = |chunk: &'a [u8]| -> Cow<'a, [u8]> {
            if chunk.len() == column {
                Cow::Borrowed(chunk)
            } else {
                let mut copy = vec![0u8; column];
                copy[..chunk.len()].copy_from_slice(chunk);
                Cow::Owned(copy)
            }
        };
        match &self.codec {
            None => Ok(vec![padded(data); self.disks.len()]),
            Some(codec) => {
                let mut columns: Vec<Cow<'a, [u8]>> = (0..self.data_columns())
                    .map(|i| {
                        let rest = data.get(i * column..).unwrap_or_default();
                        padded(&rest[..rest.len().min(column)])
                    })
                    .collect();
                let mut parity = vec![vec![0u8; column]; self.disks.len() - columns.len()];
                codec
                    .encode_sep(&columns, &mut parity)
                    .map_err(|e| Error::Invalid(format!("parity encode: {e:?}")))?;
                columns.extend(parity.into_iter().map(Cow::Owned));
                Ok(columns)
            }
        }
    }

    /// Writes a block's stored bytes at `row` on every disk that is serving. Fails when
    /// more disks failed than the layout tolerates. Not durable until [`Vdev::sync`].
    pub fn write_block(&self, row: u64, nrows: u32, data: &[u8]) -> Result<()> {
        let offset = row * SECTOR;
        let failed = if self.codec.is_none() {
            // Full copies: write the bytes as they are and zero the tail of the last
            // sector, without building a padded copy per disk.
            let padding = vec![
                0u8;
                (nrows as usize * SECTOR as usize).saturating_sub(data.len())
                    % SECTOR as usize
            ];
            self.disks
                .iter()
                .filter(|disk| {
                    !(disk.write_at(data, offset)
                        && disk.write_at(&padding, offset + data.len() as u64))
                })
                .count()
        } else {
            let shards = self.encode(data, nrows)?;
            self.disks
                .iter()
                .zip(&shards)
                .filter(|(disk, shard)| !disk.write_at(shard.as_ref(), offset))
                .count()
        };
        if failed > self.kind.redundancy(self.disks.len()) {
            return Err(Error::Unavailable(format!(
                "vdev {} ({}): {failed} of {} disks failed a write",
                self.index,
                self.kind.name(),
                self.disks.len()
            )));
        }
        Ok(())
    }

    /// Flushes every serving disk of the vdev, all at once.
    pub fn sync(&self) -> Result<()> {
        sync_disks(&self.disks.iter().map(Arc::as_ref).collect::<Vec<_>>())
    }

    fn read_columns(&self, extent: &Extent, which: impl Fn(usize) -> bool) -> Vec<Option<Vec<u8>>> {
        let column = extent.nrows as usize * SECTOR as usize;
        self.disks
            .iter()
            .enumerate()
            .map(|(i, disk)| {
                if !which(i) {
                    return None;
                }
                let mut buf = vec![0u8; column];
                disk.read_at(&mut buf, extent.row * SECTOR).then_some(buf)
            })
            .collect()
    }

    fn assemble(&self, columns: &[Option<Vec<u8>>], psize: usize) -> Option<Vec<u8>> {
        let mut data = Vec::with_capacity(psize);
        for column in columns.iter().take(self.data_columns()) {
            let column = column.as_ref()?;
            let take = (psize - data.len()).min(column.len());
            data.extend_from_slice(&column[..take]);
            if data.len() == psize {
                break;
            }
        }
        (data.len() == psize).then_some(data)
    }

    /// Refuses an extent that does not fit this vdev (damaged metadata), before any
    /// buffer is sized from it.
    fn check_extent(&self, extent: &Extent) -> Result<()> {
        let per_row = self.usable_bytes() / self.rows.max(1);
        let fits = extent.nrows > 0
            && extent
                .row
                .checked_add(extent.nrows as u64)
                .is_some_and(|end| end <= self.rows)
            && extent.psize as u64 <= extent.nrows as u64 * per_row;
        if fits {
            Ok(())
        } else {
            Err(Error::Corrupt(format!(
                "block pointer to rows {}+{} ({} bytes) does not fit vdev {} of {} rows",
                extent.row, extent.nrows, extent.psize, self.index, self.rows
            )))
        }
    }

    /// Reads and verifies a block, rebuilding and rewriting damaged copies.
    pub fn read_block(&self, extent: &Extent) -> Result<Vec<u8>> {
        match self.read_stored(extent, Vec::new())? {
            Some(data) if extent.verifies(&data) => Ok(data),
            _ => self.read_repairing(extent),
        }
    }

    /// The common case of a read, not yet verified: the first readable copy, or the
    /// data columns straight into one buffer (no parity read, no copy). `buf` is
    /// memory a caller reading many blocks passes in again. `None` when a disk this
    /// needs failed the read.
    pub fn read_stored(&self, extent: &Extent, mut buf: Vec<u8>) -> Result<Option<Vec<u8>>> {
        self.check_extent(extent)?;
        let psize = extent.psize as usize;
        let column = extent.nrows as usize * SECTOR as usize;
        let offset = extent.row * SECTOR;
        buf.clear();
        let complete = if self.codec.is_some() {
            let needed = psize.div_ceil(column).min(self.data_columns());
            buf.resize(needed * column, 0);
            buf.chunks_mut(column)
                .zip(&self.disks)
                .all(|(part, disk)| disk.read_at(part, offset))
        } else {
            buf.resize(column, 0);
            self.disks.iter().any(|disk| disk.read_at(&mut buf, offset))
        };
        buf.truncate(psize);
        Ok(complete.then_some(buf))
    }

    /// Reads a block whose common-case read failed or did not verify: every copy or
    /// column, rebuilt from the good ones, the damaged ones rewritten.
    pub fn read_repairing(&self, extent: &Extent) -> Result<Vec<u8>> {
        self.check_extent(extent)?;
        let (check, data) = self.verify_all(extent)?;
        data.ok_or_else(|| {
            Error::DataLoss(format!(
                "block at vdev {} row {} fails its checksum on every copy ({} repaired)",
                self.index, extent.row, check.repaired
            ))
        })
    }

    /// Scrubs one block: reads every copy or column (parity included), verifies, and
    /// rewrites whatever is damaged from what is good.
    pub fn check_block(&self, extent: &Extent) -> Result<BlockCheck> {
        self.check_extent(extent)?;
        Ok(self.verify_all(extent)?.0)
    }

    fn verify_all(&self, extent: &Extent) -> Result<(BlockCheck, Option<Vec<u8>>)> {
        let psize = extent.psize as usize;
        let columns = self.read_columns(extent, |_| true);
        let good = match &self.codec {
            None => columns
                .iter()
                .flatten()
                .find(|copy| blake3::hash(&copy[..psize]).as_bytes() == extent.checksum)
                .map(|copy| copy[..psize].to_vec()),
            Some(codec) => self.reconstruct(codec, &columns, extent),
        };
        let Some(good) = good else {
            for (disk, column) in self.disks.iter().zip(&columns) {
                if column.is_some() {
                    disk.counters
                        .checksum_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            return Ok((
                BlockCheck {
                    repaired: 0,
                    unrecoverable: true,
                },
                None,
            ));
        };
        let expected = self.encode(&good, extent.nrows)?;
        let mut repaired = 0;
        for ((disk, column), want) in self.disks.iter().zip(&columns).zip(&expected) {
            let Some(column) = column else { continue };
            if column.as_slice() != want.as_ref() {
                disk.counters
                    .checksum_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    disk = %disk.path().display(),
                    vdev = self.index,
                    row = extent.row,
                    "checksum mismatch; rewriting from good copy"
                );
                if disk.write_at(want.as_ref(), extent.row * SECTOR) {
                    disk.sync()?;
                    repaired += 1;
                }
            }
        }
        Ok((
            BlockCheck {
                repaired,
                unrecoverable: false,
            },
            Some(good),
        ))
    }

    /// Finds the data of a raidz block by treating ever larger sets of readable columns
    /// as damaged, until the rebuilt data matches the checksum.
    fn reconstruct(
        &self,
        codec: &ReedSolomon,
        columns: &[Option<Vec<u8>>],
        extent: &Extent,
    ) -> Option<Vec<u8>> {
        let psize = extent.psize as usize;
        let missing = columns.iter().filter(|c| c.is_none()).count();
        let parity = self.kind.parity();
        if missing > parity {
            return None;
        }
        let readable: Vec<usize> = (0..columns.len())
            .filter(|&i| columns[i].is_some())
            .collect();
        for suspects in 0..=(parity - missing) {
            for set in combinations(&readable, suspects) {
                let mut shards: Vec<Option<Vec<u8>>> = columns.to_vec();
                for &i in &set {
                    shards[i] = None;
                }
                if missing + suspects > 0 && codec.reconstruct_data(&mut shards).is_err() {
                    continue;
                }
                if let Some(data) = self.assemble(&shards, psize)
                    && blake3::hash(&data).as_bytes() == extent.checksum
                {
                    return Some(data);
                }
            }
        }
        None
    }

    /// Rebuilds the column (or copy) that disk `child` should hold for a block and
    /// writes it there; used by resilver after a disk is replaced.
    pub fn rebuild_on(&self, child: usize, extent: &Extent) -> Result<bool> {
        self.check_extent(extent)?;
        let columns = self.read_columns(extent, |i| i != child);
        let psize = extent.psize as usize;
        let good = match &self.codec {
            None => columns
                .iter()
                .flatten()
                .find(|copy| blake3::hash(&copy[..psize]).as_bytes() == extent.checksum)
                .map(|copy| copy[..psize].to_vec()),
            Some(codec) => self.reconstruct(codec, &columns, extent),
        };
        let Some(good) = good else {
            return Ok(false);
        };
        let expected = self.encode(&good, extent.nrows)?;
        if !self.disks[child].write_at(expected[child].as_ref(), extent.row * SECTOR) {
            return Err(Error::Unavailable(format!(
                "cannot write to {}",
                self.disks[child].path().display()
            )));
        }
        Ok(true)
    }
}

/// All subsets of `items` with `k` elements, in lexicographic order.
fn combinations(items: &[usize], k: usize) -> Vec<Vec<usize>> {
    fn walk(
        items: &[usize],
        k: usize,
        start: usize,
        current: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if current.len() == k {
            out.push(current.clone());
            return;
        }
        for i in start..items.len() {
            current.push(items[i]);
            walk(items, k, i + 1, current, out);
            current.pop();
        }
    }
    let mut out = Vec::new();
    walk(items, k, 0, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vdev(kind: VdevKind, width: usize, dir: &Path) -> Vdev {
        let mut configs = Vec::new();
        for child in 0..width {
            configs.push(
                format_disk(
                    &dir.join(format!("d{child}")),
                    Some(4 << 20),
                    &DiskIdentity {
                        pool_id: "pool",
                        vdev: 0,
                        child: child as u32,
                        kind,
                        width: width as u32,
                        guid: child as u64 + 1,
                    },
                )
                .unwrap(),
            );
        }
        let config = VdevConfig {
            kind,
            disks: configs.clone(),
        };
        let disks = configs
            .iter()
            .map(|c| Arc::new(open_disk(c, "pool")))
            .collect();
        Vdev::new(0, &config, disks).unwrap()
    }

    fn smash(disk: &Disk, row: u64, len: usize) {
        let file = disk.file().unwrap();
        file.write_all_at(&vec![0xAB; len], LABEL_AREA + row * SECTOR)
            .unwrap();
    }

    #[test]
    fn raidz2_rebuilds_two_damaged_columns_and_heals_them() {
        let dir = tempfile::tempdir().unwrap();
        let v = vdev(VdevKind::Raidz2, 6, dir.path());
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let checksum = *blake3::hash(&data).as_bytes();
        let nrows = v.rows_for(data.len());
        v.write_block(10, nrows, &data).unwrap();
        let extent = Extent {
            row: 10,
            nrows,
            psize: data.len() as u32,
            checksum: &checksum,
        };
        smash(&v.disks[0], 10, 4096);
        smash(&v.disks[4], 10, 100);
        assert_eq!(v.read_block(&extent).unwrap(), data);
        let errors: u64 = v
            .disks
            .iter()
            .map(|d| d.counters.checksum_errors.load(Ordering::Relaxed))
            .sum();
        assert_eq!(errors, 2);
        assert_eq!(v.check_block(&extent).unwrap(), BlockCheck::default());
        smash(&v.disks[1], 10, 10);
        smash(&v.disks[2], 10, 10);
        smash(&v.disks[3], 10, 10);
        assert!(matches!(v.read_block(&extent), Err(Error::DataLoss(_))));
    }

    #[test]
    fn mirror_heals_a_bad_copy_from_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let v = vdev(VdevKind::Mirror, 3, dir.path());
        let data = vec![7u8; 9000];
        let checksum = *blake3::hash(&data).as_bytes();
        let nrows = v.rows_for(data.len());
        v.write_block(3, nrows, &data).unwrap();
        let extent = Extent {
            row: 3,
            nrows,
            psize: data.len() as u32,
            checksum: &checksum,
        };
        smash(&v.disks[0], 3, 10);
        smash(&v.disks[1], 4, 10);
        assert_eq!(v.read_block(&extent).unwrap(), data);
        assert_eq!(v.check_block(&extent).unwrap(), BlockCheck::default());
    }

    #[test]
    fn labels_survive_a_damaged_front() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let identity = DiskIdentity {
            pool_id: "p",
            vdev: 0,
            child: 0,
            kind: VdevKind::Single,
            width: 1,
            guid: 9,
        };
        let config = format_disk(&path, Some(2 << 20), &identity).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&vec![0u8; LABEL_AREA as usize], 0)
            .unwrap();
        assert_eq!(open_disk(&config, "p").state(), DiskState::Online);
        assert_eq!(open_disk(&config, "other").state(), DiskState::Faulted);
    }

    #[test]
    fn extents_from_damaged_metadata_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = vdev(VdevKind::Raidz1, 3, dir.path());
        let checksum = [0u8; 32];
        for (row, nrows, psize) in [
            (u64::MAX, 2, 10),
            (v.rows, 1, 10),
            (0, 1, 1 << 30),
            (0, 0, 0),
        ] {
            let extent = Extent {
                row,
                nrows,
                psize,
                checksum: &checksum,
            };
            assert!(matches!(v.read_block(&extent), Err(Error::Corrupt(_))));
            assert!(matches!(v.check_block(&extent), Err(Error::Corrupt(_))));
        }
    }

    #[test]
    fn combinations_are_complete() {
        assert_eq!(
            combinations(&[1, 2, 3], 2),
            vec![vec![1, 2], vec![1, 3], vec![2, 3]]
        );
        assert_eq!(combinations(&[1, 2], 0), vec![Vec::<usize>::new()]);
    }
}
