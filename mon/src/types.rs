//! The monitors' Raft types: what a log entry carries and what applying it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use lcpfs_core::map::OsdInfo;
use lcpfs_core::monitor::{Command, CommandOutcome};
use serde::{Deserialize, Serialize};

/// A monitor as a Raft member: its name and where it listens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonNode {
    /// Monitor name (`a`, `b`, ...), as in `lcpfs-mon --id`.
    pub name: String,
    /// Address of its gRPC endpoint, `host:port`.
    pub addr: String,
}

/// One entry of the replicated log. Anything that is not deterministic (a fresh key,
/// the leader's clock) is decided by the leader before proposing, so every monitor
/// applies the same entry to the same result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Proposal {
    /// The first entry of a new cluster: its id, first monitors and admin key.
    Bootstrap {
        /// Cluster id.
        fsid: String,
        /// Initial monitors, name → address.
        monitors: BTreeMap<String, String>,
        /// Key of `client.admin`.
        admin_key: String,
    },
    /// An operator's command without hidden inputs.
    Admin(Command),
    /// `auth add` with the key the leader drew.
    AuthAdd {
        /// Entity name.
        entity: String,
        /// Its new key.
        key: String,
    },
    /// An OSD booted.
    OsdBoot {
        /// Stable uuid of its store.
        uuid: String,
        /// Address, host, zone, class and weight it reports (the id is assigned here).
        osd: OsdInfo,
        /// Leader's clock, milliseconds since the Unix epoch: an OSD held down
        /// for flapping until later is refused.
        #[serde(default)]
        at_ms: u64,
    },
    /// OSDs stopped answering (timer, peer reports, or an operator).
    MarkDown {
        /// OSD ids.
        ids: BTreeSet<u32>,
        /// The map epoch the decision was based on: an OSD that booted after it is
        /// alive and stays up.
        based_on_epoch: u64,
        /// Leader's clock, milliseconds since the Unix epoch, starting the
        /// down-out timer.
        at_ms: u64,
        /// Why, for the log and the operator.
        reason: String,
        /// For a failure (no heartbeat, peers' reports; not an operator's or the
        /// OSD's own mark-down): when it holds a flapping OSD down.
        #[serde(default)]
        flap: Option<FlapRule>,
    },
    /// OSDs down for longer than the down-out interval.
    AutoOut {
        /// OSD ids.
        ids: BTreeSet<u32>,
    },
    /// A primary OSD asks to be recorded up through an epoch, before its PGs of
    /// an interval that began then go active.
    UpThru {
        /// OSD id.
        id: u32,
        /// The epoch its interval began.
        epoch: u64,
    },
    /// OSDs whose disks crossed the full ratio, one way or the other.
    SetFull {
        /// OSD ids now full.
        full: BTreeSet<u32>,
        /// OSD ids no longer full.
        not_full: BTreeSet<u32>,
    },
}

/// Flap damping (Ceph's `osd_max_markdown_count` within `osd_max_markdown_period`):
/// an OSD that failures mark down `limit` times within `window_ms` is held down
/// for `hold_ms`, instead of taking PGs through peering again and again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlapRule {
    /// Mark-downs within the window that hold the OSD down (0: never).
    pub limit: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// How long the OSD is held down, in milliseconds.
    pub hold_ms: u64,
}

openraft::declare_raft_types!(
    /// The monitors' Raft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = CommandOutcome,
        NodeId = u64,
        Node = MonNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a monitor.
pub type Raft = openraft::Raft<TypeConfig>;

/// Raft node id of a monitor name: a stable hash, so every monitor derives the same
/// id from `--initial-members` and `lcpfs mon add` without coordination.
pub fn node_id(name: &str) -> u64 {
    let digest = blake3::hash(format!("lcpfs-mon:{name}").as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_bytes()[..8]);
    // Raft reserves no id, but keep 0 out so "no node" is never a real monitor.
    u64::from_le_bytes(id).max(1)
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
