//! Replacing a disk: the new disk is formatted with the old one's place in the vdev and
//! attached, transactions already under way are waited for, and a resilver rebuilds
//! every block of the vdev onto it from the other disks; then the pool configuration
//! names it.

use std::path::Path;

use super::commit::{MetaOp, Prepared};
use super::error::{Error, IoContext, Result};
use super::scrub::{ScrubReport, resilver};
use super::store::{KEY_CONFIG, Store, new_id};
use super::vdev::{self, DiskConfig};

impl Store {
    /// Replaces a disk (by path or guid) with a new one and resilvers it: every block of
    /// its vdev is rebuilt onto the new disk from the others. `create_size` makes a new
    /// file disk of that size; otherwise `new_path` must exist.
    pub fn replace_disk(
        &self,
        old: &str,
        new_path: &Path,
        create_size: Option<u64>,
    ) -> Result<ScrubReport> {
        let mut config = self.config.lock().expect("config lock poisoned").clone();
        let (v, child) = config
            .vdevs
            .iter()
            .enumerate()
            .find_map(|(v, vd)| {
                vd.disks
                    .iter()
                    .position(|d| d.path.as_os_str() == old || format!("{:016x}", d.guid) == old)
                    .map(|c| (v, c))
            })
            .ok_or_else(|| Error::NotFound(format!("disk {old}")))?;
        let vdev = &self.shared.vdevs[v];
        if vdev.kind.redundancy(vdev.disks.len()) == 0 {
            return Err(Error::Invalid(format!(
                "disk {old} is in a {} vdev, which has no redundancy to rebuild it from",
                vdev.kind.name()
            )));
        }
        let old_config = config.vdevs[v].disks[child].clone();
        let size = create_size.unwrap_or(old_config.size);
        let identity = vdev::DiskIdentity {
            pool_id: &config.pool_id,
            vdev: v as u32,
            child: child as u32,
            kind: vdev.kind,
            width: vdev.disks.len() as u32,
            guid: new_id(),
        };
        let new_config = vdev::format_disk(new_path, create_size.map(|_| size), &identity)?;
        if new_config.size < old_config.size {
            return Err(Error::Invalid(format!(
                "the new disk has {} bytes; it needs at least {}",
                new_config.size, old_config.size
            )));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(new_path)
            .ctx(|| format!("opening {}", new_path.display()))?;
        // The old guid stays so that counters and allocations keep their meaning; the
        // labels carry the new one and the configuration follows.
        config.vdevs[v].disks[child] = DiskConfig {
            size: old_config.size,
            ..new_config.clone()
        };
        let disk = &vdev.disks[child];
        disk.attach(new_path.to_path_buf(), file);
        // Blocks written from now on reach the new disk; those of transactions already
        // under way may have skipped it: once they have ended, the walk finds them.
        self.shared.transactions.drain();
        let report = resilver(self, v, child)?;
        let txg = self.next_txg();
        self.submit(Prepared {
            txg,
            ops: vec![MetaOp::Put(
                KEY_CONFIG.to_vec(),
                serde_json::to_vec(&config).expect("config serializes"),
            )],
            ..Default::default()
        })?;
        *self.config.lock().expect("config lock poisoned") = config;
        Ok(report)
    }
}
