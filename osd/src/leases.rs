//! The read lease table of one OSD (see [`crate::lease`] for the protocol): the
//! leases its peers granted it, which let it serve reads as a primary, and those
//! it granted them, which it reports to a new primary peering a PG, until each
//! runs out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The leases this OSD holds from its peers and those it granted them.
pub struct Leases {
    duration: Duration,
    /// Per peer, when the lease it granted this OSD runs out.
    held: Mutex<HashMap<u32, Instant>>,
    /// Per peer, when the lease this OSD granted it runs out.
    granted: Mutex<HashMap<u32, Instant>>,
    /// Set when this OSD stops: it serves no reads from then on.
    given_up: AtomicBool,
}

impl Leases {
    /// Leases of `duration` each.
    pub fn new(duration: Duration) -> Self {
        Leases {
            duration,
            held: Mutex::new(HashMap::new()),
            granted: Mutex::new(HashMap::new()),
            given_up: AtomicBool::new(false),
        }
    }

    /// How long each lease lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Records the lease `osd` granted for a request sent at `asked`.
    pub fn held_from(&self, osd: u32, asked: Instant) {
        extend(&self.held, osd, asked + self.duration);
    }

    /// The OSDs of `others` whose lease to this OSD has run out (or that never
    /// granted one); all of them once this OSD has given its leases up.
    pub fn expired(&self, others: &[u32]) -> Vec<u32> {
        if self.given_up.load(Ordering::SeqCst) {
            return others.to_vec();
        }
        let now = Instant::now();
        let held = self.held.lock().expect("held leases");
        others
            .iter()
            .copied()
            .filter(|osd| held.get(osd).is_none_or(|until| *until <= now))
            .collect()
    }

    /// Stops serving reads for good (this OSD is stopping).
    pub fn give_up(&self) {
        self.given_up.store(true, Ordering::SeqCst);
        self.held.lock().expect("held leases").clear();
    }

    /// True once this OSD gave its leases up.
    pub fn given_up(&self) -> bool {
        self.given_up.load(Ordering::SeqCst)
    }

    /// Grants `osd` a lease of `duration` from now.
    pub fn grant(&self, osd: u32, duration: Duration) {
        extend(&self.granted, osd, Instant::now() + duration);
    }

    /// Forgets the lease granted to `osd`, which gave it back.
    pub fn release(&self, osd: u32) {
        self.granted.lock().expect("granted leases").remove(&osd);
    }

    /// The leases this OSD granted that have not run out, in milliseconds left.
    pub fn granted_left(&self) -> HashMap<u32, u64> {
        let now = Instant::now();
        let mut granted = self.granted.lock().expect("granted leases");
        granted.retain(|_, until| *until > now);
        granted
            .iter()
            .map(|(osd, until)| (*osd, millis_up(*until - now)))
            .collect()
    }
}

/// Makes `osd`'s lease in `leases` last until `until`, unless it already lasts
/// longer (a late answer never shortens a lease).
fn extend(leases: &Mutex<HashMap<u32, Instant>>, osd: u32, until: Instant) {
    let mut leases = leases.lock().expect("leases");
    let entry = leases.entry(osd).or_insert(until);
    *entry = (*entry).max(until);
}

/// A duration in whole milliseconds, rounded up (a lease is never shortened).
fn millis_up(duration: Duration) -> u64 {
    duration.as_micros().div_ceil(1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_and_giving_up_ends_every_lease() {
        let leases = Leases::new(Duration::from_millis(200));
        assert_eq!(leases.expired(&[1, 2]), vec![1, 2], "none granted yet");
        leases.held_from(1, Instant::now());
        leases.held_from(2, Instant::now() - Duration::from_millis(300));
        assert_eq!(leases.expired(&[1, 2]), vec![2], "osd.2's ran out");
        // An older renewal never shortens a lease.
        leases.held_from(1, Instant::now() - Duration::from_millis(300));
        assert!(leases.expired(&[1]).is_empty());
        leases.give_up();
        assert_eq!(leases.expired(&[1]), vec![1]);
    }

    #[test]
    fn granted_leases_are_reported_until_they_run_out_or_are_released() {
        let leases = Leases::new(Duration::from_secs(1));
        leases.grant(3, Duration::from_secs(5));
        leases.grant(4, Duration::from_millis(1));
        leases.grant(5, Duration::from_secs(5));
        leases.release(5);
        std::thread::sleep(Duration::from_millis(5));
        let left = leases.granted_left();
        assert_eq!(left.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert!((4_000..=5_000).contains(&left[&3]), "{left:?}");
    }
}
