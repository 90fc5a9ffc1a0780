//! The requests the monitors accept and what they answer: the JSON bodies of the
//! `Command` and `Query` calls of the Monitor service (`proto/lcpfs/v1/mon.proto`).
//!
//! Shared by the monitors, which execute them, and by the `lcpfs` command and the
//! daemons, which send them, so both sides agree on one definition.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::map::PoolSpec;

/// What the monitors' refusal of a boot says of an OSD held down for flapping
/// (marked down by failures too often): the OSD waits and boots again later.
pub const HELD_DOWN: &str = "is held down";

/// A change to the cluster, committed through the monitors' Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Mark OSDs out: CRUSH moves their data elsewhere.
    OsdOut {
        /// OSD ids.
        ids: Vec<u32>,
    },
    /// Mark OSDs in: they take data again.
    OsdIn {
        /// OSD ids.
        ids: Vec<u32>,
    },
    /// Mark OSDs down (a running OSD marks itself up again on its next boot).
    OsdDown {
        /// OSD ids.
        ids: Vec<u32>,
    },
    /// Declare down OSDs' data lost, so PGs waiting for them go on without them.
    OsdLost {
        /// OSD ids.
        ids: Vec<u32>,
    },
    /// Let OSDs held down for flapping boot again before their hold ends.
    OsdUnhold {
        /// OSD ids.
        ids: Vec<u32>,
    },
    /// Set the fraction of an OSD's disk space past which it is marked full.
    OsdSetFullRatio {
        /// A fraction in (0, 1].
        ratio: f64,
    },
    /// Set the fraction of an OSD's disk space past which health warns.
    OsdSetNearfullRatio {
        /// A fraction in (0, 1].
        ratio: f64,
    },
    /// Remove OSDs that are down from the map.
    OsdRm {
        /// OSD ids.
        ids: Vec<u32>,
    },
    /// Set an OSD's reweight in `[0, 1]`.
    OsdReweight {
        /// OSD id.
        id: u32,
        /// Fraction of its CRUSH share the OSD keeps.
        reweight: f64,
    },
    /// Create a pool.
    PoolCreate {
        /// What to create.
        spec: PoolSpec,
    },
    /// Change one setting of a pool: `pg_num`, `size`, `min_size` or `compression`.
    PoolSet {
        /// Pool name.
        name: String,
        /// Setting.
        key: String,
        /// New value (`none` clears compression).
        value: String,
    },
    /// Remove a pool and, later, its data.
    PoolRm {
        /// Pool name.
        name: String,
    },
    /// Create an auth entity (`client.NAME`, `osd.N`, `mds.NAME`) with a new key.
    AuthAdd {
        /// Entity name.
        entity: String,
    },
    /// Remove an auth entity.
    AuthRm {
        /// Entity name.
        entity: String,
    },
    /// Add a monitor to the quorum; start it with `lcpfs-mon --id NAME --data DIR
    /// --addr ADDR` (no `--initial-members`) first.
    MonAdd {
        /// Monitor name.
        name: String,
        /// Its address, `host:port`.
        addr: String,
    },
    /// Remove a monitor from the quorum.
    MonRemove {
        /// Monitor name.
        name: String,
    },
}

/// The monitors' answer to a [`Command`] that was committed or refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandOutcome {
    /// The change is committed; `epoch` is the map epoch that has it.
    Done {
        /// Map epoch after the change.
        epoch: u64,
        /// What happened, for people.
        message: String,
        /// A value the command produced (a new pool's id, a new key).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
    },
    /// The change was refused and nothing changed.
    Refused {
        /// Why, and what to do instead.
        reason: String,
    },
}

/// A read-only question to the monitors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Query {
    /// Cluster status, like `ceph -s`.
    Status,
    /// All auth entities (keys included: callers are administrators).
    AuthList,
    /// One auth entity.
    AuthGet {
        /// Entity name.
        entity: String,
    },
    /// Every OSD's disk space and PG count, like `ceph osd df`.
    OsdDf,
    /// Every PG of the map (of one pool, when named) with its state, up set and
    /// scrub stamps, like `ceph pg ls`.
    PgList {
        /// Only this pool's PGs.
        #[serde(default)]
        pool: Option<String>,
    },
}

/// One OSD as `lcpfs osd df` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OsdUsage {
    /// OSD id.
    pub id: u32,
    /// Its CRUSH host.
    pub host: String,
    /// Up and in, as in the map.
    pub up: bool,
    /// In, as in the map.
    #[serde(rename = "in")]
    pub in_: bool,
    /// Marked full by the monitors.
    pub full: bool,
    /// Usable bytes of its disks (0: not reported yet).
    pub size_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// PGs whose up set it is in.
    pub pgs: u32,
}

/// One PG as `lcpfs pg ls` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PgSummary {
    /// `POOL.SEED`, e.g. `1.1f`.
    pub pgid: String,
    /// As its primary last reported it (`unknown`: no recent report).
    pub state: String,
    /// The up set, one entry per position (`None`: no OSD there).
    pub up: Vec<Option<u32>>,
    /// The primary, if any OSD is up.
    pub primary: Option<u32>,
    /// When the PG was last scrubbed, seconds since the Unix epoch (0: not known).
    pub last_scrub: u64,
    /// When the PG was last deep-scrubbed, seconds since the Unix epoch (0: not known).
    pub last_deep_scrub: u64,
    /// The map epoch of the primary's report (0: no recent report): the state is
    /// as of that epoch or later.
    #[serde(default)]
    pub reported_epoch: u64,
}

/// An auth entity and its secret key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEntity {
    /// `client.NAME`, `osd.N` or `mds.NAME`.
    pub entity: String,
    /// The secret, 64 hex digits.
    pub key: String,
}

impl AuthEntity {
    /// The entity in Ceph's keyring file format.
    pub fn keyring(&self) -> String {
        format!("[{}]\n\tkey = {}\n", self.entity, self.key)
    }
}

/// Checks an auth entity name: `client.NAME`, `osd.N` or `mds.NAME`.
pub fn check_entity_name(entity: &str) -> Result<(), String> {
    let valid = match entity.split_once('.') {
        Some(("osd", id)) => id.parse::<u32>().is_ok(),
        Some(("client" | "mds", name)) => {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid entity name {entity:?}: use client.NAME, osd.N or mds.NAME"
        ))
    }
}

/// Reads the key of `entity` from a keyring file's text (Ceph's format:
/// `[entity]` sections with `key = ...` lines).
pub fn keyring_key(text: &str, entity: &str) -> Option<String> {
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = section.trim() == entity;
        } else if in_section
            && let Some((name, value)) = line.split_once('=')
            && name.trim() == "key"
        {
            return Some(value.trim().to_owned());
        }
    }
    None
}

/// Overall health, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HealthStatus {
    /// Nothing to report.
    #[serde(rename = "HEALTH_OK")]
    Ok,
    /// Degraded but serving.
    #[serde(rename = "HEALTH_WARN")]
    Warn,
    /// Data or service at risk.
    #[serde(rename = "HEALTH_ERR")]
    Err,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Ok => "HEALTH_OK",
            HealthStatus::Warn => "HEALTH_WARN",
            HealthStatus::Err => "HEALTH_ERR",
        })
    }
}

/// One failing health check, e.g. `OSD_DOWN`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Severity of this check.
    pub severity: HealthStatus,
    /// What it says, for people.
    pub summary: String,
}

/// One monitor in a status report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonStatus {
    /// Monitor name.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// It answered the status probe.
    pub reachable: bool,
    /// It is a voter (not a learner still catching up).
    pub voter: bool,
}

/// Cluster status, as `lcpfs status` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Cluster id.
    pub fsid: String,
    /// Overall health: the worst of the checks.
    pub health: HealthStatus,
    /// Failing checks by name (`OSD_DOWN`, `MON_DOWN`, ...).
    pub checks: BTreeMap<String, HealthCheck>,
    /// Current map epoch.
    pub epoch: u64,
    /// Raft term.
    pub term: u64,
    /// Current leader's name, if any.
    pub leader: Option<String>,
    /// Every monitor in the quorum's membership.
    pub monitors: Vec<MonStatus>,
    /// OSDs in the map.
    pub osds: u32,
    /// OSDs up.
    pub osds_up: u32,
    /// OSDs in.
    pub osds_in: u32,
    /// Pools.
    pub pools: u32,
    /// PGs over all pools.
    pub pgs: u64,
    /// PGs by state, as their primaries last reported (`unknown`: no recent report).
    #[serde(default)]
    pub pg_states: BTreeMap<String, u64>,
    /// The oldest map epoch of those reports (0: some PG has no recent report):
    /// every PG's state is as of this epoch or later.
    #[serde(default)]
    pub pg_states_since: u64,
}
