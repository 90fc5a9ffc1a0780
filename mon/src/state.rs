//! The monitors' replicated state and the deterministic function that applies one log
//! entry to it.
//!
//! Every monitor applies the same entries in the same order and so holds the same
//! [`MonState`]. Applying never fails half-way: a refused command changes nothing and
//! is answered with the reason.

use std::collections::{BTreeMap, BTreeSet};

use lcpfs_core::map::{ClusterMap, MapError, MapIncremental, PoolKind};
use lcpfs_core::monitor::{Command, CommandOutcome, HELD_DOWN, check_entity_name};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::types::{FlapRule, Proposal};

/// What the monitors agree on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonState {
    /// The cluster map; its fsid is empty until the bootstrap entry is applied.
    pub map: ClusterMap,
    /// Auth entities, name → key. Kept out of the map: the map goes to every client.
    pub auth: BTreeMap<String, String>,
    /// OSD store uuid → OSD id, so a rebooting OSD gets its id back.
    pub osd_uuids: BTreeMap<String, u32>,
    /// When each down OSD went down (leader's clock, ms), for the down-out timer.
    pub down_since_ms: BTreeMap<u32, u64>,
    /// OSDs the down-out timer marked out; they are marked in again when they boot.
    pub auto_out: BTreeSet<u32>,
    /// The epoch at which each OSD last booted.
    #[serde(default)]
    pub up_from: BTreeMap<u32, u64>,
    /// The full ratio an operator set (`lcpfs osd set-full-ratio`), overriding
    /// the monitors' `--mon-osd-full-ratio`.
    #[serde(default)]
    pub full_ratio: Option<f64>,
    /// The nearfull ratio an operator set, overriding `--mon-osd-nearfull-ratio`.
    #[serde(default)]
    pub nearfull_ratio: Option<f64>,
    /// Per OSD that is out: the epoch from which it has been (no PG maps to it
    /// from then on). `osd rm` waits for PG reports from then on.
    #[serde(default)]
    pub out_since: BTreeMap<u32, u64>,
    /// The id the next new OSD gets. Ids are never given again: the PG histories
    /// of the OSDs name OSDs by id, and a new OSD must not inherit a removed
    /// one's place in them.
    #[serde(default)]
    pub next_osd_id: u32,
    /// Per OSD: when failures marked it down (leader's clock, ms) within the flap
    /// window, oldest first.
    #[serde(default)]
    pub failures_ms: BTreeMap<u32, Vec<u64>>,
    /// OSDs held down for flapping, and until when (leader's clock, ms).
    #[serde(default)]
    pub held_until_ms: BTreeMap<u32, u64>,
}

impl Default for MonState {
    fn default() -> Self {
        MonState {
            map: ClusterMap::new(""),
            auth: BTreeMap::new(),
            osd_uuids: BTreeMap::new(),
            down_since_ms: BTreeMap::new(),
            auto_out: BTreeSet::new(),
            up_from: BTreeMap::new(),
            full_ratio: None,
            nearfull_ratio: None,
            out_since: BTreeMap::new(),
            next_osd_id: 0,
            failures_ms: BTreeMap::new(),
            held_until_ms: BTreeMap::new(),
        }
    }
}

/// The result of applying one entry: the answer, and the map changes it made (one
/// incremental per epoch, in order).
#[derive(Debug)]
pub struct Applied {
    /// What the proposer is told.
    pub outcome: CommandOutcome,
    /// The map incrementals, when the map changed.
    pub incrementals: Vec<MapIncremental>,
}

impl MonState {
    /// True once the bootstrap entry has been applied.
    pub fn bootstrapped(&self) -> bool {
        !self.map.fsid.is_empty()
    }

    /// Applies one entry. Changes are made on a copy and installed only when the whole
    /// entry succeeded, so a refusal leaves the state exactly as it was.
    pub fn apply(&mut self, proposal: &Proposal) -> Applied {
        let mut next = self.clone();
        let mut incrementals = Vec::new();
        let result = next.apply_to(proposal, &mut incrementals);
        match result {
            Ok((message, value)) => {
                next.track_out();
                *self = next;
                Applied {
                    outcome: CommandOutcome::Done {
                        epoch: self.map.epoch,
                        message,
                        value,
                    },
                    incrementals,
                }
            }
            Err(reason) => Applied {
                outcome: CommandOutcome::Refused { reason },
                incrementals: Vec::new(),
            },
        }
    }

    /// Records that a failure marked OSD `id` down at `at_ms`; holds it down when
    /// that makes `rule.limit` failures within the rule's window.
    fn count_failure(&mut self, id: u32, at_ms: u64, rule: &FlapRule) {
        let failures = self.failures_ms.entry(id).or_default();
        failures.retain(|&at| at.saturating_add(rule.window_ms) > at_ms);
        failures.push(at_ms);
        if rule.limit > 0 && failures.len() >= rule.limit as usize {
            self.held_until_ms
                .insert(id, at_ms.saturating_add(rule.hold_ms));
        }
    }

    /// Forgets OSD `id`'s failures and hold: it starts afresh.
    fn forget_flaps(&mut self, id: u32) {
        self.failures_ms.remove(&id);
        self.held_until_ms.remove(&id);
    }

    /// Records the epoch each OSD was marked out (forgotten when it is in again).
    fn track_out(&mut self) {
        let epoch = self.map.epoch;
        let osds = &self.map.osds;
        self.out_since
            .retain(|id, _| osds.get(id).is_some_and(|osd| !osd.in_));
        for osd in osds.values().filter(|osd| !osd.in_) {
            self.out_since.entry(osd.id).or_insert(epoch);
        }
    }

    fn apply_to(
        &mut self,
        proposal: &Proposal,
        incs: &mut Vec<MapIncremental>,
    ) -> Result<(String, Option<serde_json::Value>), String> {
        if let Proposal::Bootstrap {
            fsid,
            monitors,
            admin_key,
        } = proposal
        {
            if self.bootstrapped() {
                return Err(format!("cluster {} is already bootstrapped", self.map.fsid));
            }
            self.map = ClusterMap::new(fsid.clone());
            for (name, addr) in monitors {
                incs.push(self.map.add_monitor(name, addr.clone()).map_err(err)?);
            }
            self.auth.insert("client.admin".into(), admin_key.clone());
            return Ok((format!("cluster {fsid} created"), None));
        }
        if !self.bootstrapped() {
            return Err("the cluster is not bootstrapped yet".into());
        }
        match proposal {
            Proposal::Bootstrap { .. } => unreachable!("handled above"),
            Proposal::Admin(command) => self.apply_command(command, incs),
            Proposal::AuthAdd { entity, key } => {
                check_entity_name(entity)?;
                if self.auth.contains_key(entity) {
                    return Err(format!(
                        "{entity} already exists: `lcpfs auth get {entity}` shows its key"
                    ));
                }
                self.auth.insert(entity.clone(), key.clone());
                Ok((format!("added key for {entity}"), Some(json!(key))))
            }
            Proposal::OsdBoot { uuid, osd, at_ms } => {
                let id = match self.osd_uuids.get(uuid) {
                    Some(&id) => id,
                    None => {
                        let after_known = self.map.osds.keys().max().map_or(0, |id| id + 1);
                        self.next_osd_id.max(after_known)
                    }
                };
                if let Some(&until) = self.held_until_ms.get(&id) {
                    if until > *at_ms {
                        let failures = self.failures_ms.get(&id).map_or(0, Vec::len);
                        return Err(format!(
                            "osd.{id} {HELD_DOWN} for {}s more: failures marked it down {failures} \
                             times in a short while (flapping); it may boot after that, or now \
                             with `lcpfs osd unhold {id}`",
                            (until - at_ms).div_ceil(1000)
                        ));
                    }
                    self.forget_flaps(id);
                }
                self.next_osd_id = self.next_osd_id.max(id + 1);
                let mut osd = osd.clone();
                osd.id = id;
                incs.push(self.map.boot_osd(osd).map_err(err)?);
                self.osd_uuids.insert(uuid.clone(), id);
                self.down_since_ms.remove(&id);
                if self.auto_out.remove(&id) {
                    incs.push(self.map.mark_in(id).map_err(err)?);
                }
                self.up_from.insert(id, self.map.epoch);
                Ok((format!("osd.{id} is up"), Some(json!(id))))
            }
            Proposal::MarkDown {
                ids,
                based_on_epoch,
                at_ms,
                reason,
                flap,
            } => {
                for &id in ids {
                    let osd = self
                        .map
                        .osds
                        .get(&id)
                        .ok_or(MapError::OsdNotFound(id))
                        .map_err(err)?;
                    let rebooted = self
                        .up_from
                        .get(&id)
                        .is_some_and(|&epoch| epoch > *based_on_epoch);
                    if osd.up && !rebooted {
                        incs.push(self.map.mark_down(id).map_err(err)?);
                        self.down_since_ms.insert(id, *at_ms);
                        if let Some(rule) = flap {
                            self.count_failure(id, *at_ms, rule);
                        }
                    }
                }
                Ok((format!("marked down {}: {reason}", osd_list(ids)), None))
            }
            Proposal::AutoOut { ids } => {
                for &id in ids {
                    if self.map.osds.get(&id).is_some_and(|osd| !osd.up && osd.in_) {
                        incs.push(self.map.mark_out(id).map_err(err)?);
                        self.auto_out.insert(id);
                    }
                }
                Ok((format!("marked out {}", osd_list(ids)), None))
            }
            Proposal::UpThru { id, epoch } => {
                incs.extend(self.map.set_up_thru(*id, *epoch).map_err(err)?);
                Ok((
                    format!("osd.{id} up through epoch {}", self.map.epoch),
                    None,
                ))
            }
            Proposal::SetFull { full, not_full } => {
                for (ids, flag) in [(full, true), (not_full, false)] {
                    for &id in ids {
                        if self.map.osds.get(&id).is_some_and(|osd| osd.full != flag) {
                            incs.push(self.map.set_full(id, flag).map_err(err)?);
                        }
                    }
                }
                Ok((
                    format!("full: {}; not full: {}", osd_list(full), osd_list(not_full)),
                    None,
                ))
            }
        }
    }

    fn apply_command(
        &mut self,
        command: &Command,
        incs: &mut Vec<MapIncremental>,
    ) -> Result<(String, Option<serde_json::Value>), String> {
        let map = &mut self.map;
        let message = match command {
            Command::OsdOut { ids } => {
                for &id in ids {
                    incs.push(map.mark_out(id).map_err(err)?);
                    self.auto_out.remove(&id);
                }
                format!("marked out {}", osd_list(ids))
            }
            Command::OsdIn { ids } => {
                for &id in ids {
                    incs.push(map.mark_in(id).map_err(err)?);
                    self.auto_out.remove(&id);
                }
                format!("marked in {}", osd_list(ids))
            }
            Command::OsdDown { .. } => {
                return Err("osd down must go through the leader, which records the time".into());
            }
            Command::OsdLost { ids } => {
                for &id in ids {
                    incs.push(map.mark_lost(id).map_err(err)?);
                }
                format!("marked lost {}", osd_list(ids))
            }
            Command::OsdSetFullRatio { ratio } => {
                check_ratio(*ratio)?;
                self.full_ratio = Some(*ratio);
                format!("full ratio set to {ratio}")
            }
            Command::OsdSetNearfullRatio { ratio } => {
                check_ratio(*ratio)?;
                self.nearfull_ratio = Some(*ratio);
                format!("nearfull ratio set to {ratio}")
            }
            Command::OsdUnhold { ids } => {
                for id in ids {
                    if !map.osds.contains_key(id) {
                        return Err(err(MapError::OsdNotFound(*id)));
                    }
                }
                for &id in ids {
                    self.forget_flaps(id);
                }
                format!("{} may boot again", osd_list(ids))
            }
            Command::OsdRm { ids } => {
                for &id in ids {
                    incs.push(map.remove_osd(id).map_err(err)?);
                }
                for &id in ids {
                    self.osd_uuids.retain(|_, osd| *osd != id);
                    self.down_since_ms.remove(&id);
                    self.auto_out.remove(&id);
                    self.up_from.remove(&id);
                    self.forget_flaps(id);
                    self.auth.remove(&format!("osd.{id}"));
                }
                format!("removed {}", osd_list(ids))
            }
            Command::OsdReweight { id, reweight } => {
                incs.push(map.reweight(*id, *reweight).map_err(err)?);
                format!("reweighted osd.{id} to {reweight}")
            }
            Command::PoolCreate { spec } => {
                let (id, inc) = map.create_pool(spec.clone()).map_err(err)?;
                incs.push(inc);
                return Ok((format!("pool '{}' created", spec.name), Some(json!(id))));
            }
            Command::PoolSet { name, key, value } => {
                let pool = map
                    .pool_by_name(name)
                    .ok_or_else(|| format!("pool '{name}' does not exist"))?
                    .clone();
                let number = || {
                    value
                        .parse::<u32>()
                        .map_err(|_| format!("{key} must be a whole number, not {value:?}"))
                };
                let inc = match key.as_str() {
                    "pg_num" => map.set_pg_num(pool.id, number()?),
                    "size" | "min_size" => {
                        let PoolKind::Replicated { size, min_size } = pool.kind else {
                            return Err(err(MapError::ErasurePoolSize(pool.id)));
                        };
                        let (size, min_size) = if key == "size" {
                            (number()?, min_size)
                        } else {
                            (size, number()?)
                        };
                        map.set_pool_size(pool.id, size, min_size)
                    }
                    "compression" => {
                        let algorithm = match value.as_str() {
                            "none" | "off" => None,
                            "lz4" | "zstd" => Some(value.clone()),
                            other => {
                                return Err(format!(
                                    "unknown compression {other:?}: use none, lz4 or zstd"
                                ));
                            }
                        };
                        map.set_pool_compression(pool.id, algorithm)
                    }
                    other => {
                        return Err(format!(
                            "unknown pool setting {other:?}: use pg_num, size, min_size or compression"
                        ));
                    }
                };
                incs.push(inc.map_err(err)?);
                format!("set pool '{name}' {key} to {value}")
            }
            Command::PoolRm { name } => {
                let id = map
                    .pool_by_name(name)
                    .ok_or_else(|| format!("pool '{name}' does not exist"))?
                    .id;
                incs.push(map.remove_pool(id).map_err(err)?);
                format!("pool '{name}' removed")
            }
            Command::AuthAdd { entity } => {
                return Err(format!(
                    "auth add {entity} must go through the leader, which draws the key"
                ));
            }
            Command::AuthRm { entity } => {
                if entity == "client.admin" {
                    return Err(
                        "client.admin cannot be removed: it is the cluster's administrator key"
                            .into(),
                    );
                }
                self.auth
                    .remove(entity)
                    .ok_or_else(|| format!("{entity} does not exist"))?;
                format!("removed {entity}")
            }
            Command::MonAdd { name, addr } => {
                incs.push(map.add_monitor(name, addr.clone()).map_err(err)?);
                format!("monitor {name} added at {addr}")
            }
            Command::MonRemove { name } => {
                incs.push(map.remove_monitor(name).map_err(err)?);
                format!("monitor {name} removed")
            }
        };
        Ok((message, None))
    }
}

fn err(error: MapError) -> String {
    error.to_string()
}

/// Checks a full or nearfull ratio: a fraction in (0, 1].
pub fn check_ratio(ratio: f64) -> Result<(), String> {
    if ratio > 0.0 && ratio <= 1.0 {
        Ok(())
    } else {
        Err(format!("a ratio is a fraction in (0, 1], not {ratio}"))
    }
}

fn osd_list<'a>(ids: impl IntoIterator<Item = &'a u32>) -> String {
    let names: Vec<String> = ids.into_iter().map(|id| format!("osd.{id}")).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use lcpfs_core::map::{BucketType, OsdInfo, PoolSpec};

    use super::*;

    fn bootstrapped() -> MonState {
        let mut state = MonState::default();
        let applied = state.apply(&Proposal::Bootstrap {
            fsid: "f".into(),
            monitors: [("a".to_owned(), "127.0.0.1:1".to_owned())].into(),
            admin_key: "k".into(),
        });
        assert!(matches!(applied.outcome, CommandOutcome::Done { .. }));
        state
    }

    fn osd_on(host: &str) -> OsdInfo {
        OsdInfo::new(0, "127.0.0.1:2", host)
    }

    fn boot(state: &mut MonState, uuid: &str, host: &str) -> u32 {
        let osd = osd_on(host);
        match state
            .apply(&Proposal::OsdBoot {
                uuid: uuid.into(),
                osd,
                at_ms: 0,
            })
            .outcome
        {
            CommandOutcome::Done { value, .. } => value.unwrap().as_u64().unwrap() as u32,
            refused => panic!("boot refused: {refused:?}"),
        }
    }

    #[test]
    fn nothing_but_bootstrap_applies_before_bootstrap() {
        let mut state = MonState::default();
        let applied = state.apply(&Proposal::Admin(Command::OsdOut { ids: vec![0] }));
        assert!(matches!(applied.outcome, CommandOutcome::Refused { .. }));
        assert_eq!(state, MonState::default());
    }

    #[test]
    fn second_bootstrap_is_refused() {
        let mut state = bootstrapped();
        let before = state.clone();
        let applied = state.apply(&Proposal::Bootstrap {
            fsid: "other".into(),
            monitors: Default::default(),
            admin_key: "x".into(),
        });
        assert!(matches!(applied.outcome, CommandOutcome::Refused { .. }));
        assert_eq!(state, before);
    }

    #[test]
    fn boot_reuses_ids_by_uuid_and_never_gives_a_removed_id_again() {
        let mut state = bootstrapped();
        assert_eq!(boot(&mut state, "u0", "h0"), 0);
        assert_eq!(boot(&mut state, "u1", "h1"), 1);
        assert_eq!(boot(&mut state, "u0", "h0"), 0, "same uuid, same id");
        state.apply(&Proposal::MarkDown {
            ids: [0].into(),
            based_on_epoch: state.map.epoch,
            at_ms: 5,
            reason: "test".into(),
            flap: None,
        });
        let removed = state.apply(&Proposal::Admin(Command::OsdRm { ids: vec![0] }));
        assert!(matches!(removed.outcome, CommandOutcome::Done { .. }));
        assert_eq!(
            boot(&mut state, "u2", "h2"),
            2,
            "a removed OSD's id is not given again"
        );
        assert_eq!(boot(&mut state, "u0", "h0"), 3, "nor to its store");
    }

    fn boot_at(state: &mut MonState, uuid: &str, at_ms: u64) -> CommandOutcome {
        let osd = osd_on("h0");
        state
            .apply(&Proposal::OsdBoot {
                uuid: uuid.into(),
                osd,
                at_ms,
            })
            .outcome
    }

    fn fail(state: &mut MonState, id: u32, at_ms: u64, flap: Option<FlapRule>) {
        state.apply(&Proposal::MarkDown {
            ids: [id].into(),
            based_on_epoch: state.map.epoch,
            at_ms,
            reason: "silent".into(),
            flap,
        });
        assert!(!state.map.osds[&id].up);
    }

    #[test]
    fn an_osd_that_failures_mark_down_too_often_is_held_down_until_its_hold_ends_or_unhold() {
        let rule = FlapRule {
            limit: 3,
            window_ms: 1_000,
            hold_ms: 5_000,
        };
        let mut state = bootstrapped();
        let id = boot(&mut state, "u0", "h0");
        // Failures spread wider than the window, and mark-downs that are not
        // failures (an operator's, the OSD's own), never hold it.
        for at in [0, 600, 1_200, 1_800] {
            fail(&mut state, id, at, Some(rule));
            assert!(matches!(
                boot_at(&mut state, "u0", at + 1),
                CommandOutcome::Done { .. }
            ));
        }
        for at in [2_000, 2_001, 2_002] {
            fail(&mut state, id, at, None);
            boot_at(&mut state, "u0", at);
        }
        assert!(state.held_until_ms.is_empty());

        // The third failure within a second holds it down for five.
        fail(&mut state, id, 3_000, Some(rule));
        boot_at(&mut state, "u0", 3_001);
        fail(&mut state, id, 3_200, Some(rule));
        boot_at(&mut state, "u0", 3_201);
        fail(&mut state, id, 3_400, Some(rule));
        let CommandOutcome::Refused { reason } = boot_at(&mut state, "u0", 8_399) else {
            panic!("a flapping OSD boots")
        };
        assert!(
            reason.contains(HELD_DOWN) && reason.contains("unhold"),
            "{reason}"
        );
        assert!(!state.map.osds[&id].up);
        assert!(matches!(
            boot_at(&mut state, "u0", 8_400),
            CommandOutcome::Done { .. }
        ));
        assert!(state.held_until_ms.is_empty(), "the hold ended");

        // Held again, then let back by an operator.
        for at in [10_000, 10_100, 10_200] {
            boot_at(&mut state, "u0", at - 1);
            fail(&mut state, id, at, Some(rule));
        }
        assert!(matches!(
            boot_at(&mut state, "u0", 10_300),
            CommandOutcome::Refused { .. }
        ));
        state.apply(&Proposal::Admin(Command::OsdUnhold { ids: vec![id] }));
        assert!(matches!(
            boot_at(&mut state, "u0", 10_301),
            CommandOutcome::Done { .. }
        ));
        let unknown = state.apply(&Proposal::Admin(Command::OsdUnhold { ids: vec![9] }));
        assert!(matches!(unknown.outcome, CommandOutcome::Refused { .. }));
    }

    #[test]
    fn the_epoch_an_osd_went_out_is_kept_until_it_is_in_again() {
        let mut state = bootstrapped();
        boot(&mut state, "u0", "h0");
        boot(&mut state, "u1", "h1");
        assert!(state.out_since.is_empty());
        state.apply(&Proposal::Admin(Command::OsdOut { ids: vec![0] }));
        let out = state.map.epoch;
        assert_eq!(state.out_since.get(&0), Some(&out));
        state.apply(&Proposal::Admin(Command::OsdOut { ids: vec![1] }));
        assert_eq!(
            state.out_since.get(&0),
            Some(&out),
            "the first epoch out is kept"
        );
        state.apply(&Proposal::Admin(Command::OsdIn { ids: vec![0] }));
        assert_eq!(state.out_since.keys().collect::<Vec<_>>(), vec![&1]);
    }

    #[test]
    fn a_failing_part_refuses_the_whole_command() {
        let mut state = bootstrapped();
        boot(&mut state, "u0", "h0");
        let before = state.clone();
        let applied = state.apply(&Proposal::Admin(Command::OsdOut { ids: vec![0, 7] }));
        match applied.outcome {
            CommandOutcome::Refused { reason } => assert!(reason.contains("osd.7"), "{reason}"),
            done => panic!("{done:?}"),
        }
        assert!(applied.incrementals.is_empty());
        assert_eq!(state, before, "osd.0 is not half marked out");
    }

    #[test]
    fn auto_out_is_undone_by_boot_but_operator_out_is_not() {
        let mut state = bootstrapped();
        boot(&mut state, "u0", "h0");
        boot(&mut state, "u1", "h1");
        state.apply(&Proposal::MarkDown {
            ids: [0, 1].into(),
            based_on_epoch: state.map.epoch,
            at_ms: 1,
            reason: "silent".into(),
            flap: None,
        });
        assert_eq!(state.down_since_ms.get(&0), Some(&1));
        state.apply(&Proposal::AutoOut { ids: [0].into() });
        state.apply(&Proposal::Admin(Command::OsdOut { ids: vec![1] }));
        boot(&mut state, "u0", "h0");
        boot(&mut state, "u1", "h1");
        assert!(state.map.osds[&0].in_, "timer's out undone on boot");
        assert!(!state.map.osds[&1].in_, "operator's out kept");
        assert!(state.down_since_ms.is_empty());
    }

    #[test]
    fn an_osd_that_booted_after_the_decision_stays_up() {
        let mut state = bootstrapped();
        boot(&mut state, "u0", "h0");
        let decided_at = state.map.epoch;
        boot(&mut state, "u0", "h0");
        state.apply(&Proposal::MarkDown {
            ids: [0].into(),
            based_on_epoch: decided_at,
            at_ms: 1,
            reason: "silent".into(),
            flap: None,
        });
        assert!(state.map.osds[&0].up, "booted after the decision");
        state.apply(&Proposal::MarkDown {
            ids: [0].into(),
            based_on_epoch: state.map.epoch,
            at_ms: 1,
            reason: "silent".into(),
            flap: None,
        });
        assert!(!state.map.osds[&0].up);
    }

    #[test]
    fn incrementals_replay_the_state_map() {
        let mut state = bootstrapped();
        let mut follower = state.map.clone();
        let mut incrementals = Vec::new();
        for (uuid, host) in [("u0", "h0"), ("u1", "h1"), ("u2", "h2")] {
            let osd = osd_on(host);
            let applied = state.apply(&Proposal::OsdBoot {
                uuid: uuid.into(),
                osd,
                at_ms: 0,
            });
            incrementals.extend(applied.incrementals);
        }
        let applied = state.apply(&Proposal::Admin(Command::OsdOut { ids: vec![0, 1] }));
        assert_eq!(
            applied.incrementals.len(),
            2,
            "one epoch per OSD marked out"
        );
        incrementals.extend(applied.incrementals);
        for incremental in &incrementals {
            follower.apply(incremental).unwrap();
        }
        assert_eq!(follower, state.map);
    }

    #[test]
    fn pool_settings_are_checked() {
        let mut state = bootstrapped();
        for (uuid, host) in [("u0", "h0"), ("u1", "h1")] {
            boot(&mut state, uuid, host);
        }
        state.apply(&Proposal::Admin(Command::PoolCreate {
            spec: PoolSpec {
                name: "p".into(),
                kind: lcpfs_core::map::PoolKind::Replicated {
                    size: 2,
                    min_size: 1,
                },
                pg_num: 8,
                failure_domain: BucketType::Host,
                device_class: None,
                compression: None,
            },
        }));
        let set = |key: &str, value: &str| {
            Proposal::Admin(Command::PoolSet {
                name: "p".into(),
                key: key.into(),
                value: value.into(),
            })
        };
        for (key, value, reason) in [
            ("size", "3", "needs 3 distinct hosts"),
            ("min_size", "3", "larger than size"),
            ("pg_num", "4", "not supported"),
            ("pg_num", "many", "whole number"),
            ("compression", "gzip", "unknown compression"),
            ("colour", "blue", "unknown pool setting"),
        ] {
            match state.apply(&set(key, value)).outcome {
                CommandOutcome::Refused { reason: got } => {
                    assert!(got.contains(reason), "{key}={value}: {got}")
                }
                done => panic!("{key}={value} accepted: {done:?}"),
            }
        }
        for (key, value) in [("pg_num", "16"), ("compression", "zstd"), ("min_size", "2")] {
            let outcome = state.apply(&set(key, value)).outcome;
            assert!(
                matches!(outcome, CommandOutcome::Done { .. }),
                "{key}: {outcome:?}"
            );
        }
        let pool = state.map.pool_by_name("p").unwrap();
        assert_eq!(pool.pg_num, 16);
        assert_eq!(pool.compression.as_deref(), Some("zstd"));
    }
}
