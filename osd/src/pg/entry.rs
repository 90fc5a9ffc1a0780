//! One mutation in a PG's log, as the OSD works with it: its version (a sequence
//! number, and the epoch of the interval whose primary assigned it), the object it
//! changed, and the client request that made it. The wire's `LogEntry` is turned
//! into an [`Entry`] where it arrives and back where it leaves.

use lcpfs_proto::LogEntry;

/// One mutation in a PG's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number in the PG's log.
    pub version: u64,
    /// The first epoch of the interval whose primary assigned the version.
    pub epoch: u64,
    /// The object it changed.
    pub name: Vec<u8>,
    /// The client that asked for it (empty for a mutation of LCPFS's own).
    pub client: String,
    /// The client's request number.
    pub tid: u64,
}

impl Entry {
    /// True when both record the same mutation: same version, interval and request.
    pub fn same(&self, other: &Entry) -> bool {
        self.version == other.version
            && self.epoch == other.epoch
            && self.client == other.client
            && self.tid == other.tid
    }
}

impl From<LogEntry> for Entry {
    fn from(entry: LogEntry) -> Self {
        Entry {
            version: entry.version,
            epoch: entry.epoch,
            name: entry.name,
            client: entry.client,
            tid: entry.tid,
        }
    }
}

impl From<Entry> for LogEntry {
    fn from(entry: Entry) -> Self {
        LogEntry {
            version: entry.version,
            name: entry.name,
            client: entry.client,
            tid: entry.tid,
            epoch: entry.epoch,
        }
    }
}

/// Entries from the wire.
pub fn from_wire(entries: Vec<LogEntry>) -> Vec<Entry> {
    entries.into_iter().map(Entry::from).collect()
}

/// Entries for the wire.
pub fn to_wire(entries: Vec<Entry>) -> Vec<LogEntry> {
    entries.into_iter().map(LogEntry::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_crosses_the_wire_unchanged_and_compares_by_request() {
        let entry = Entry {
            version: 7,
            epoch: 3,
            name: b"a".to_vec(),
            client: "client.1".into(),
            tid: 9,
        };
        assert_eq!(Entry::from(LogEntry::from(entry.clone())), entry);
        let renamed = Entry {
            name: b"b".to_vec(),
            ..entry.clone()
        };
        assert!(
            entry.same(&renamed),
            "the object is not part of a request's identity"
        );
        let later = Entry {
            epoch: 4,
            ..entry.clone()
        };
        assert!(!entry.same(&later));
    }
}
