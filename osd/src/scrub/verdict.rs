//! Scrub's verdict on one object: which copy is authoritative and what is wrong
//! with the others.
//!
//! Every up OSD of a PG reports its copy (absent, or size and digest, or a read
//! error). Copies that agree vote together; the largest group wins, the primary's
//! on a tie, like Ceph's choice of an authoritative shard. Unreadable copies never
//! win.

use std::collections::HashMap;

use lcpfs_proto::ScrubObject;

/// A copy's identity: absent (`None`), or its size and digest.
type Identity<'a> = Option<(u64, &'a [u8])>;

fn identity(copy: Option<&ScrubObject>) -> Option<Identity<'_>> {
    match copy {
        None => Some(None),
        Some(object) if object.error.is_empty() => Some(Some((object.size, &object.digest))),
        Some(_) => None,
    }
}

/// The authoritative OSD for one object among `up` (`None` when no copy can be
/// read), and each other OSD whose copy disagrees, with the reason.
pub fn judge(
    up: &[u32],
    held: &HashMap<u32, ScrubObject>,
    primary: u32,
    deep: bool,
) -> (Option<u32>, Vec<(u32, String)>) {
    let mut votes: Vec<(Identity<'_>, Vec<u32>)> = Vec::new();
    for &osd in up {
        let Some(id) = identity(held.get(&osd)) else {
            continue;
        };
        match votes.iter_mut().find(|(other, _)| *other == id) {
            Some((_, voters)) => voters.push(osd),
            None => votes.push((id, vec![osd])),
        }
    }
    let winner = votes
        .iter()
        .max_by_key(|(_, voters)| (voters.len(), voters.contains(&primary)))
        .map(|(id, voters)| {
            let holder = if voters.contains(&primary) {
                primary
            } else {
                voters[0]
            };
            (*id, holder)
        });
    let mut bad = Vec::new();
    for &osd in up {
        let copy = held.get(&osd);
        let reason = match (copy, winner) {
            (Some(object), _) if !object.error.is_empty() => object.error.clone(),
            (_, None) => continue,
            (_, Some((id, _))) if identity(copy) == Some(id) => continue,
            (None, _) => "missing".to_owned(),
            (Some(_), Some((None, _))) => {
                "stray: the authoritative copies do not have it".to_owned()
            }
            (Some(object), Some((Some((size, _)), _))) if object.size != size => {
                format!(
                    "size {} where the authoritative copy has {size}",
                    object.size
                )
            }
            (Some(_), Some(_)) if deep => "content differs".to_owned(),
            (Some(_), Some(_)) => "xattrs differ".to_owned(),
        };
        bad.push((osd, reason));
    }
    (winner.map(|(_, osd)| osd), bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(size: u64, digest: u8) -> ScrubObject {
        ScrubObject {
            name: b"obj".to_vec(),
            size,
            digest: vec![digest; 32],
            error: String::new(),
        }
    }

    fn held(copies: &[(u32, ScrubObject)]) -> HashMap<u32, ScrubObject> {
        copies.iter().cloned().collect()
    }

    #[test]
    fn agreeing_copies_are_consistent() {
        let copies = held(&[(1, copy(10, 7)), (2, copy(10, 7)), (3, copy(10, 7))]);
        assert_eq!(judge(&[1, 2, 3], &copies, 1, true), (Some(1), Vec::new()));
    }

    #[test]
    fn the_majority_wins_over_a_different_primary() {
        let copies = held(&[(1, copy(10, 9)), (2, copy(10, 7)), (3, copy(10, 7))]);
        let (authority, bad) = judge(&[1, 2, 3], &copies, 1, true);
        assert_eq!(authority, Some(2));
        assert_eq!(bad, vec![(1, "content differs".to_owned())]);
    }

    #[test]
    fn the_primary_breaks_a_tie() {
        let copies = held(&[(1, copy(10, 9)), (2, copy(12, 7))]);
        let (authority, bad) = judge(&[1, 2], &copies, 1, false);
        assert_eq!(authority, Some(1));
        assert_eq!(
            bad,
            vec![(2, "size 12 where the authoritative copy has 10".to_owned())]
        );
    }

    #[test]
    fn unreadable_missing_and_stray_copies_are_named() {
        let mut unreadable = copy(10, 7);
        unreadable.error = "read error: checksum".to_owned();
        let copies = held(&[(1, copy(10, 7)), (2, unreadable), (4, copy(10, 7))]);
        let (authority, bad) = judge(&[1, 2, 3, 4], &copies, 1, true);
        assert_eq!(authority, Some(1));
        assert_eq!(
            bad,
            vec![
                (2, "read error: checksum".to_owned()),
                (3, "missing".to_owned())
            ]
        );
        // One copy left behind where two others removed it.
        let copies = held(&[(3, copy(10, 7))]);
        let (authority, bad) = judge(&[1, 2, 3], &copies, 1, true);
        assert_eq!(authority, Some(1));
        assert_eq!(
            bad,
            vec![(
                3,
                "stray: the authoritative copies do not have it".to_owned()
            )]
        );
    }

    #[test]
    fn no_readable_copy_has_no_authority() {
        let mut unreadable = copy(10, 7);
        unreadable.error = "read error".to_owned();
        let copies = held(&[(1, unreadable.clone()), (2, unreadable)]);
        let (authority, bad) = judge(&[1, 2], &copies, 1, true);
        assert_eq!(authority, None);
        assert_eq!(bad.len(), 2);
    }
}
