//! How a stale copy of a PG becomes level with the authoritative one: the pure
//! comparison of two logs (the entries to take, the objects to recover, or a
//! backfill when the authoritative log does not reach back far enough).

use std::collections::BTreeMap;

use super::entry::Entry;

/// What a stale copy of a PG needs to become level with an authoritative one.
#[derive(Debug, PartialEq)]
pub enum CatchUp {
    /// Nothing: the stale copy holds the same history.
    Level,
    /// The objects named, then the authoritative log entries from version `from`
    /// on (replacing the stale copy's entries from there, which diverged).
    Entries {
        from: u64,
        names: Vec<Vec<u8>>,
        entries: Vec<Entry>,
    },
    /// A full copy: the authoritative log does not reach back far enough.
    Backfill,
}

/// Compares a stale copy's log with the authoritative log (whose oldest kept
/// version is `auth_oldest`, 0 when empty) and says how to bring the stale copy
/// level: from the first version where the stale log holds an entry the
/// authoritative one does not (a write that was never acknowledged), or else
/// from the entry after the stale log's last.
///
/// Entries are enough only when both logs hold the entry just before that
/// version and it is the same one: two logs that share an entry share every
/// write before it (each interval's primary numbers its writes once and brings
/// its replicas level before sending them any). When the entry before is
/// trimmed from either log, the stale copy may hold writes the authoritative
/// history never had, and nothing in the logs names their objects: backfill.
pub fn catch_up(auth: &[Entry], auth_oldest: u64, stale: &[Entry]) -> CatchUp {
    let by_version: BTreeMap<u64, &Entry> =
        auth.iter().map(|entry| (entry.version, entry)).collect();
    let diverged = stale
        .iter()
        .filter(|entry| auth_oldest == 0 || entry.version >= auth_oldest)
        .find(|entry| {
            by_version
                .get(&entry.version)
                .is_none_or(|held| !held.same(entry))
        })
        .map(|entry| entry.version);
    let stale_last = stale.last().map_or(0, |entry| entry.version);
    let from = diverged.unwrap_or(stale_last + 1);
    if diverged.is_none() && by_version.range(from..).next().is_none() {
        return CatchUp::Level;
    }
    let common = from - 1;
    let shared = if common == 0 {
        // Both histories start here: the stale copy holds no write at all.
        stale.is_empty() && auth_oldest == 1
    } else {
        let stale_common = stale.iter().find(|entry| entry.version == common);
        common >= auth_oldest
            && by_version
                .get(&common)
                .zip(stale_common)
                .is_some_and(|(held, theirs)| held.same(theirs))
    };
    if auth_oldest == 0 || !shared {
        return CatchUp::Backfill;
    }
    let newer = |entries: &[Entry]| -> Vec<Entry> {
        entries
            .iter()
            .filter(|entry| entry.version >= from)
            .cloned()
            .collect()
    };
    let entries = newer(auth);
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in newer(stale).iter().chain(&entries) {
        if !names.contains(&entry.name) {
            names.push(entry.name.clone());
        }
    }
    CatchUp::Entries {
        from,
        names,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, epoch: u64, name: &str) -> Entry {
        Entry {
            version,
            name: name.as_bytes().to_vec(),
            client: "c".into(),
            tid: version * 100 + epoch,
            epoch,
        }
    }

    fn names(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|name| name.as_bytes().to_vec()).collect()
    }

    #[test]
    fn equal_logs_are_level() {
        let log = vec![entry(1, 5, "a"), entry(2, 5, "b")];
        assert_eq!(catch_up(&log, 1, &log), CatchUp::Level);
        assert_eq!(catch_up(&[], 0, &[]), CatchUp::Level);
    }

    #[test]
    fn a_prefix_gets_the_missing_entries() {
        let auth = vec![entry(1, 5, "a"), entry(2, 5, "b"), entry(3, 7, "c")];
        let stale = vec![entry(1, 5, "a")];
        assert_eq!(
            catch_up(&auth, 1, &stale),
            CatchUp::Entries {
                from: 2,
                names: names(&["b", "c"]),
                entries: auth[1..].to_vec(),
            }
        );
    }

    #[test]
    fn a_divergent_tail_is_replaced_and_its_objects_recovered() {
        // The stale copy took writes 3 and 4 in epoch 5 that never reached the
        // others; the authoritative history wrote 3 in epoch 9.
        let auth = vec![entry(1, 5, "a"), entry(2, 5, "b"), entry(3, 9, "c")];
        let stale = vec![
            entry(1, 5, "a"),
            entry(2, 5, "b"),
            entry(3, 5, "x"),
            entry(4, 5, "y"),
        ];
        assert_eq!(
            catch_up(&auth, 1, &stale),
            CatchUp::Entries {
                from: 3,
                names: names(&["x", "y", "c"]),
                entries: vec![entry(3, 9, "c")],
            }
        );
    }

    #[test]
    fn a_longer_stale_log_is_rewound() {
        let auth = vec![entry(1, 5, "a")];
        let stale = vec![entry(1, 5, "a"), entry(2, 5, "b")];
        assert_eq!(
            catch_up(&auth, 1, &stale),
            CatchUp::Entries {
                from: 2,
                names: names(&["b"]),
                entries: Vec::new()
            }
        );
    }

    #[test]
    fn a_log_that_does_not_reach_back_means_backfill() {
        let auth = vec![entry(10, 5, "a"), entry(11, 5, "b")];
        assert_eq!(catch_up(&auth, 10, &[entry(3, 2, "z")]), CatchUp::Backfill);
        assert_eq!(catch_up(&auth, 10, &[]), CatchUp::Backfill);
        // An empty authoritative log and a stale one with writes: drop them all.
        assert_eq!(catch_up(&[], 0, &[entry(1, 2, "z")]), CatchUp::Backfill);
        // The stale log ends just before the authoritative one starts: its last
        // write may be one the authoritative history never had.
        let auth = vec![entry(4, 9, "a"), entry(5, 9, "b")];
        assert_eq!(catch_up(&auth, 4, &[entry(3, 5, "x")]), CatchUp::Backfill);
        // It diverges where the authoritative log starts: what came before is
        // unknown.
        assert_eq!(
            catch_up(&auth, 4, &[entry(3, 5, "x"), entry(4, 5, "y")]),
            CatchUp::Backfill
        );
        // Its own log is trimmed past the version before the divergence.
        let auth = vec![entry(2, 5, "a"), entry(3, 5, "b"), entry(4, 9, "c")];
        assert_eq!(catch_up(&auth, 2, &[entry(4, 5, "y")]), CatchUp::Backfill);
        // A log that starts at version 1 reaches back to an empty copy.
        assert!(matches!(
            catch_up(&[entry(1, 5, "a")], 1, &[]),
            CatchUp::Entries { from: 1, .. }
        ));
    }
}
