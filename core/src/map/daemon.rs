//! The daemons the map lists: monitors ([`MonInfo`]) and OSDs ([`OsdInfo`]), each
//! OSD with its place in the CRUSH hierarchy (host, zone, device class), its weights
//! and its state (up or down, in or out, lost, full).

use serde::{Deserialize, Serialize};

use super::hierarchy::DEFAULT_BUCKET_NAME;

/// Largest OSD id: ids above are reserved so an OSD id never collides with the
/// two's-complement form of a (negative) bucket id in the CRUSH hash.
pub const MAX_OSD_ID: u32 = i32::MAX as u32;

/// A monitor's address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonInfo {
    /// Where the monitor listens, `host:port`.
    pub addr: String,
}

/// One OSD as the cluster map knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OsdInfo {
    /// OSD id (`osd.N`), at most [`MAX_OSD_ID`].
    pub id: u32,
    /// Where the OSD listens, `host:port`.
    pub addr: String,
    /// Host (CRUSH bucket) the OSD's disk is in.
    pub host: String,
    /// Zone (CRUSH bucket) of the host; `None` means zone `"default"`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Device class, e.g. `hdd`, `ssd`, `nvme`; pools may be restricted to one.
    pub device_class: String,
    /// CRUSH weight, by convention the capacity in TiB. Weight 0 receives no PG.
    pub weight: f64,
    /// The OSD answers heartbeats; down OSDs are dropped from the up set.
    pub up: bool,
    /// The OSD takes data; out OSDs are replaced by CRUSH.
    #[serde(rename = "in")]
    pub in_: bool,
    /// Override in `[0, 1]`: the fraction of the PGs CRUSH gives this OSD that it keeps.
    #[serde(default = "full_reweight")]
    pub reweight: f64,
    /// An operator declared the OSD's data gone (`lcpfs osd lost`): PGs no longer
    /// wait for it to come back. Cleared when the OSD boots again.
    #[serde(default)]
    pub lost: bool,
    /// The OSD's disks are fuller than the monitors' full ratio: PGs on it take
    /// no writes but deletes, so that recovery keeps room to work.
    #[serde(default)]
    pub full: bool,
    /// The newest epoch up to which the OSD, as some PG's primary, had itself
    /// recorded up (Ceph's `up_thru`): a PG interval that began after its
    /// primary's `up_thru` in the interval's last map never went active, so it
    /// took no writes and served no reads, and peering need not wait for its
    /// OSDs.
    #[serde(default)]
    pub up_thru: u64,
}

fn full_reweight() -> f64 {
    1.0
}

impl OsdInfo {
    /// A new OSD at `addr` on `host`, up and in: device class `hdd`, CRUSH weight
    /// 1, no zone, no flags.
    pub fn new(id: u32, addr: impl Into<String>, host: impl Into<String>) -> Self {
        OsdInfo {
            id,
            addr: addr.into(),
            host: host.into(),
            zone: None,
            device_class: "hdd".to_owned(),
            weight: 1.0,
            up: true,
            in_: true,
            reweight: 1.0,
            lost: false,
            full: false,
            up_thru: 0,
        }
    }

    /// The zone name, with `"default"` for an OSD that has none.
    pub fn zone_name(&self) -> &str {
        self.zone.as_deref().unwrap_or(DEFAULT_BUCKET_NAME)
    }
}
