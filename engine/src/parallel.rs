//! Running independent per-block work (encoding, checksumming, reading) on a few
//! threads at once, with the results in the order of the input.

/// Maps `f` over `items` on up to four threads, keeping the order; one item runs inline.
pub(crate) fn parallel_map<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    if items.len() <= 1 || threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let mut slots: Vec<Option<U>> = (0..items.len()).map(|_| None).collect();
    let mut queues: Vec<Vec<(usize, T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        queues[i % threads].push((i, item));
    }
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = queues
            .into_iter()
            .map(|queue| {
                scope.spawn(move || {
                    queue
                        .into_iter()
                        .map(|(i, item)| (i, f(item)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (i, out) in worker.join().expect("a block worker panicked") {
                slots[i] = Some(out);
            }
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.expect("every slot filled"))
        .collect()
}
