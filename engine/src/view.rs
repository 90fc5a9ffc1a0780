//! Reading items as a collection, a snapshot, or a clone sees them.
//!
//! Every item has a head version (`H`) and, while a snapshot still needs them, older
//! versions (`O`). A snapshot taken at txg `s` sees, for each item, the newest version
//! born at or before `s` that had not died by `s`. A clone starts empty on top of a
//! snapshot of another collection (its *origin*): an item the clone never wrote is read
//! from the origin at that snapshot; an item the clone deleted is hidden by a deletion
//! marker. A [`Lineage`] is this chain, and [`Reader`] resolves items through it on one
//! consistent RocksDB snapshot.

use rocksdb::{DB, Direction, IteratorMode, ReadOptions, SnapshotWithThreadMode};

use super::error::Result;
use super::keys::{self, CollId, Version};

/// Which version of which collection to read, and what lies under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lineage {
    /// The collection.
    pub coll: CollId,
    /// `None`: the head; `Some(txg)`: as of a snapshot taken at `txg`.
    pub at: Option<u64>,
    /// For a clone: its origin, as of the snapshot it was cloned from.
    pub origin: Option<Box<Lineage>>,
}

/// Key/value pairs from RocksDB.
pub type Pairs<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a>;
/// Items with their value, or `None` where a version says "deleted".
type Decided<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Option<Vec<u8>>)>> + 'a>;

/// A consistent read view of the metadata.
pub struct Reader<'a> {
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl<'a> Reader<'a> {
    /// Takes a RocksDB snapshot.
    pub fn new(db: &'a DB) -> Self {
        Reader {
            snapshot: db.snapshot(),
        }
    }

    /// A raw key.
    pub fn raw_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snapshot.get(key)?)
    }

    /// Raw pairs with keys in `[start, end)`, ascending.
    pub fn range(&self, start: &[u8], end: &[u8]) -> Pairs<'_> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end.to_vec());
        Box::new(
            self.snapshot
                .iterator_opt(IteratorMode::From(start, Direction::Forward), options)
                .map(|pair| {
                    pair.map(|(k, v)| (k.into_vec(), v.into_vec()))
                        .map_err(Into::into)
                }),
        )
    }

    /// Raw pairs whose key starts with `prefix`.
    pub fn prefix(&self, prefix: &[u8]) -> Pairs<'_> {
        self.range(prefix, &keys::prefix_end(prefix))
    }

    /// The head version of an item in one collection, ignoring any origin.
    pub fn head_version(&self, coll: CollId, item: &[u8]) -> Result<Option<Version>> {
        self.raw_get(&keys::head_key(coll, item))?
            .map(|bytes| Version::decode(&bytes))
            .transpose()
    }

    /// What an item holds in `view`, or `None` when it does not exist there.
    pub fn get(&self, view: &Lineage, item: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.own(view.coll, view.at, item)? {
            Some(decided) => Ok(decided),
            None => match &view.origin {
                Some(origin) => self.get(origin, item),
                None => Ok(None),
            },
        }
    }

    /// The version of an item a collection itself decides at `at`: `Some(value or
    /// deletion)`, or `None` when the collection never wrote the item by then.
    fn own(&self, coll: CollId, at: Option<u64>, item: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        if let Some(head) = self.head_version(coll, item)?
            && at.is_none_or(|s| head.birth <= s)
        {
            return Ok(Some(head.value));
        }
        let Some(s) = at else { return Ok(None) };
        let prefix = keys::old_prefix(coll, item);
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(prefix.clone());
        let mut from = prefix.clone();
        from.extend_from_slice(&s.to_be_bytes());
        let newest_by_s = self
            .snapshot
            .iterator_opt(IteratorMode::From(&from, Direction::Reverse), options)
            .next()
            .transpose()?;
        match newest_by_s {
            Some((key, value)) if key.len() == prefix.len() + 8 => {
                let (died, value) = keys::decode_versioned(&value)?;
                Ok(Some(if died > s { value } else { None }))
            }
            _ => Ok(None),
        }
    }

    /// Visible items of `view` that start with `prefix` and sort after `after`, in order,
    /// with their values.
    pub fn scan(&self, view: &Lineage, prefix: &[u8], after: Option<&[u8]>) -> Pairs<'_> {
        let own = self.own_scan(view.coll, view.at, prefix, after);
        let merged: Decided<'_> = match &view.origin {
            None => own,
            Some(origin) => {
                let under = self
                    .scan(origin, prefix, after)
                    .map(|r| r.map(|(k, v)| (k, Some(v))));
                Box::new(MergeByKey::new(own, Box::new(under)))
            }
        };
        Box::new(merged.filter_map(|entry| match entry {
            Ok((item, Some(value))) => Some(Ok((item, value))),
            Ok((_, None)) => None,
            Err(e) => Some(Err(e)),
        }))
    }

    fn own_scan(
        &self,
        coll: CollId,
        at: Option<u64>,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> Decided<'_> {
        let head_prefix = keys::head_key(coll, prefix);
        let head_start = match after {
            Some(after) => {
                let mut key = keys::head_key(coll, after);
                key.push(0);
                key.max(head_prefix.clone())
            }
            None => head_prefix.clone(),
        };
        let strip = keys::coll_prefix(b'H', coll).len();
        let heads = self
            .range(&head_start, &keys::prefix_end(&head_prefix))
            .map(move |pair| {
                let (key, value) = pair?;
                Ok((key[strip..].to_vec(), Version::decode(&value)?))
            });
        let Some(s) = at else {
            return Box::new(heads.map(|r| r.map(|(item, v)| (item, v.value))));
        };
        // A snapshot: walk head and older versions together, item by item.
        let old_coll = keys::coll_prefix(b'O', coll);
        let mut old_start = old_coll.clone();
        let mut prefix_escaped = Vec::new();
        keys::escape_item(prefix, &mut prefix_escaped);
        // Drop the terminator: the prefix is a prefix of items, not an item.
        prefix_escaped.truncate(prefix_escaped.len() - 2);
        old_start.extend_from_slice(&prefix_escaped);
        let old_end = keys::prefix_end(&old_start);
        if let Some(after) = after {
            let mut key = old_coll.clone();
            keys::escape_item(after, &mut key);
            // Past every version of `after`, before any longer item.
            let last = key.len() - 1;
            key[last] = 2;
            old_start = old_start.max(key);
        }
        let olds = self.range(&old_start, &old_end).map(move |pair| {
            let (key, value) = pair?;
            let (item, rest) = keys::unescape_item(&key[old_coll.len()..])?;
            let birth = u64::from_be_bytes(rest.try_into().map_err(|_| {
                super::error::Error::Corrupt("old version key without birth".into())
            })?);
            let (died, value) = keys::decode_versioned(&value)?;
            Ok((item, (birth, died, value)))
        });
        let heads: Box<dyn Iterator<Item = Result<(Vec<u8>, Version)>> + '_> = Box::new(heads);
        let olds: Box<dyn Iterator<Item = Result<(Vec<u8>, OldVersion)>> + '_> = Box::new(olds);
        Box::new(SnapshotItems {
            heads: heads.peekable(),
            olds: olds.peekable(),
            at: s,
        })
    }
}

type Peek<'a, T> = std::iter::Peekable<Box<dyn Iterator<Item = Result<(Vec<u8>, T)>> + 'a>>;
/// An older version: (birth, died, value).
type OldVersion = (u64, u64, Option<Vec<u8>>);

/// Resolves items of a snapshot from the head and older versions, in item order.
struct SnapshotItems<'a> {
    heads: Peek<'a, Version>,
    olds: Peek<'a, OldVersion>,
    at: u64,
}

impl Iterator for SnapshotItems<'_> {
    type Item = Result<(Vec<u8>, Option<Vec<u8>>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let head_item = match self.heads.peek() {
                Some(Err(_)) => return self.heads.next().map(|r| r.map(|(k, v)| (k, v.value))),
                Some(Ok((item, _))) => Some(item.clone()),
                None => None,
            };
            let old_item = match self.olds.peek() {
                Some(Err(_)) => return self.olds.next().map(|r| r.map(|(k, _)| (k, None))),
                Some(Ok((item, _))) => Some(item.clone()),
                None => None,
            };
            let item = match (head_item, old_item) {
                (None, None) => return None,
                (Some(h), None) => h,
                (None, Some(o)) => o,
                (Some(h), Some(o)) => h.min(o),
            };
            let mut decided = None;
            if let Some(Ok((head, _))) = self.heads.peek()
                && *head == item
            {
                let (_, version) = self.heads.next()?.ok()?;
                if version.birth <= self.at {
                    decided = Some(version.value);
                }
            }
            // Older versions come in birth order: the last born by `at` is the one seen.
            let mut newest_old = None;
            while let Some(Ok((old, _))) = self.olds.peek() {
                if *old != item {
                    break;
                }
                let (_, (birth, died, value)) = self.olds.next()?.ok()?;
                if birth <= self.at {
                    newest_old = Some(if died > self.at { value } else { None });
                }
            }
            if let Some(value) = decided.or(newest_old) {
                return Some(Ok((item, value)));
            }
        }
    }
}

/// Merges two item-ordered streams; on equal items the first (the clone's own) wins.
struct MergeByKey<'a> {
    own: std::iter::Peekable<Decided<'a>>,
    under: std::iter::Peekable<Decided<'a>>,
}

impl<'a> MergeByKey<'a> {
    fn new(own: Decided<'a>, under: Decided<'a>) -> Self {
        MergeByKey {
            own: own.peekable(),
            under: under.peekable(),
        }
    }
}

impl Iterator for MergeByKey<'_> {
    type Item = Result<(Vec<u8>, Option<Vec<u8>>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.own.peek(), self.under.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) | (Some(_), None) => std::cmp::Ordering::Less,
            (_, Some(Err(_))) | (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(Ok((a, _))), Some(Ok((b, _)))) => a.cmp(b),
        };
        match order {
            std::cmp::Ordering::Less => self.own.next(),
            std::cmp::Ordering::Greater => self.under.next(),
            std::cmp::Ordering::Equal => {
                self.under.next();
                self.own.next()
            }
        }
    }
}
