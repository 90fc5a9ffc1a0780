//! Transactions in flight, counted by generation, so that a disk replace can wait for
//! every transaction that may have written around the disk it attached.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

/// Transactions in flight, by the generation they started in. Replacing a disk attaches
/// the new one, starts a generation, and waits for the transactions of the earlier ones
/// to end: their blocks may have skipped the new disk, and once they are committed the
/// resilver that follows finds them. No transaction ever waits for a replace.
#[derive(Default)]
pub(crate) struct InFlight {
    state: Mutex<Generations>,
    ended: Condvar,
}

#[derive(Default)]
struct Generations {
    current: u64,
    /// Transactions in flight per generation; generations with none are removed.
    active: BTreeMap<u64, usize>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.state.lock().expect("transactions lock poisoned")
    }

    /// Counts a transaction in the current generation until the guard drops.
    pub fn enter(&self) -> Transacting<'_> {
        let mut state = self.lock();
        let generation = state.current;
        *state.active.entry(generation).or_default() += 1;
        Transacting {
            owner: self,
            generation,
        }
    }

    /// Starts a new generation and waits until every transaction of the earlier ones
    /// has ended.
    pub fn drain(&self) {
        let mut state = self.lock();
        state.current += 1;
        let current = state.current;
        while state.active.range(..current).next().is_some() {
            state = self.ended.wait(state).expect("transactions lock poisoned");
        }
    }
}

/// A transaction counted by [`InFlight`].
pub(crate) struct Transacting<'a> {
    owner: &'a InFlight,
    generation: u64,
}

impl Drop for Transacting<'_> {
    fn drop(&mut self) {
        let mut state = self.owner.lock();
        if let Some(count) = state.active.get_mut(&self.generation) {
            *count -= 1;
            if *count == 0 {
                state.active.remove(&self.generation);
            }
        }
        drop(state);
        self.owner.ended.notify_all();
    }
}
