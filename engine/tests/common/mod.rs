//! What the engine's integration tests share: a store on file-backed disks in a
//! test's folder, created and opened again.

use std::path::{Path, PathBuf};

use lcpfs_engine::{CollectionSettings, CreateSpec, DiskSource, OpenOptions, Store, VdevKind};

/// The disk files of a store in `dir`.
pub fn disk_paths(dir: &Path, count: usize) -> Vec<PathBuf> {
    (0..count).map(|i| dir.join(format!("disk{i}"))).collect()
}

/// A new store in `dir` on one vdev of `width` new disks of `size` bytes, with a
/// collection `c` of 64 KiB records.
pub fn create(dir: &Path, kind: VdevKind, width: usize, size: u64) -> Store {
    let disks = disk_paths(dir, width)
        .into_iter()
        .map(|p| DiskSource::NewFile(p, size))
        .collect();
    let store = Store::create(
        &dir.join("store"),
        &CreateSpec {
            vdevs: vec![(kind, disks)],
            cache_device: None,
        },
    )
    .unwrap();
    store
        .create_collection(
            "c",
            CollectionSettings {
                record_size: 64 << 10,
                ..Default::default()
            },
        )
        .unwrap();
    store
}

/// The store in `dir`, opened again.
pub fn reopen(dir: &Path) -> Store {
    Store::open(&dir.join("store"), &OpenOptions::default()).unwrap()
}
