//! The history checker: each client's operations on its own objects, checked
//! against what its acknowledged history allows, and its reads of the others'
//! objects, checked for linearizability against their owners' timed operations.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lcpfs_client::objects::ObjectClient;
use lcpfs_tests::contents;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::Mutex;

/// What the checker knows of one object: the values it may hold (`None`: absent).
pub(crate) type Possible = Vec<Option<Vec<u8>>>;

#[derive(Default)]
pub(crate) struct Counts {
    /// Writes the client gave up mid-request.
    pub(crate) abandoned: u64,
    pub(crate) acked: BTreeMap<&'static str, u64>,
    pub(crate) failed: BTreeMap<&'static str, u64>,
    pub(crate) anomalies: Vec<String>,
}

/// One client's objects and what it did to them.
pub(crate) struct Client {
    pub(crate) objects: ObjectClient,
    pub(crate) names: Vec<(String, String)>,
    pub(crate) history: BTreeMap<String, Possible>,
    pub(crate) rng: StdRng,
    /// Every client's operations, for reads of the objects of others.
    pub(crate) timelines: Timelines,
    /// Every client's objects.
    pub(crate) everyone: Arc<Vec<(String, String)>>,
    /// Whether the client gives one write in twenty up mid-request.
    pub(crate) abandons: bool,
}

/// Per object (`pool/name`), every operation its owner ran on it, in order.
pub(crate) type Timelines = Arc<std::sync::Mutex<BTreeMap<String, Vec<Step>>>>;

/// One operation on an object: when it began, when it ended (`None`: it runs),
/// and the values the object may hold after it (while it runs: before or after).
pub(crate) struct Step {
    pub(crate) kind: &'static str,
    pub(crate) began: Instant,
    pub(crate) ended: Option<Instant>,
    pub(crate) after: Possible,
}

/// What a client means to do to one of its objects.
pub(crate) enum Planned {
    Read,
    WriteFull(Vec<u8>),
    Append(Vec<u8>),
    Delete,
}

/// `values` with each of `more` not among them added.
pub(crate) fn union(mut values: Possible, more: &Possible) -> Possible {
    for value in more {
        if !values.contains(value) {
            values.push(value.clone());
        }
    }
    values
}

/// The values a read that ran from `began` to `ended` may return, linearizably:
/// what the object held before the read began, and what it held after each
/// operation that ran (at least partly) while the read did.
pub(crate) fn readable(steps: &[Step], began: Instant, ended: Instant) -> Possible {
    let before = steps
        .iter()
        .rev()
        .find(|step| step.ended.is_some_and(|end| end < began))
        .map_or_else(|| vec![None], |step| step.after.clone());
    steps
        .iter()
        .filter(|step| step.began < ended && step.ended.is_none_or(|end| end >= began))
        .fold(before, |allowed, step| union(allowed, &step.after))
}

/// Where a read value that the history does not allow came from, for an
/// anomaly's report: the newest operation of `steps` after which the object held
/// it (a stale read, or a lost write), or none (a value never written whole:
/// torn or corrupt); and the object's last operations.
pub(crate) fn provenance(steps: &[Step], value: &Option<Vec<u8>>, origin: Instant) -> String {
    let at = |instant: Instant| instant.saturating_duration_since(origin).as_secs_f64();
    let source = steps
        .iter()
        .rev()
        .skip(1)
        .find(|step| step.after.contains(value))
        .map_or(
            "a value no operation ever left: torn or corrupt".to_owned(),
            |step| {
                format!(
                    "the value after the {} at {:.3} s: stale, or a newer write lost",
                    step.kind,
                    at(step.began)
                )
            },
        );
    let recent = steps.len().saturating_sub(4);
    let last: Vec<String> = steps[recent..]
        .iter()
        .map(|step| {
            let values: Vec<String> = step.after.iter().map(describe).collect();
            format!(
                "{} {:.3} s -> [{}]",
                step.kind,
                at(step.began),
                values.join(" | ")
            )
        })
        .collect();
    format!("{source}; last operations: {}", last.join("; "))
}

/// The operations of `steps` that ran while a read from `began` to `ended` did
/// (and the one before), for an anomaly's report.
pub(crate) fn around(steps: &[Step], began: Instant, ended: Instant, origin: Instant) -> String {
    let at = |instant: Instant| instant.saturating_duration_since(origin).as_secs_f64();
    let first = steps
        .iter()
        .rposition(|step| step.ended.is_some_and(|end| end < began))
        .unwrap_or(0);
    steps[first..]
        .iter()
        .filter(|step| step.began < ended)
        .map(|step| {
            let end = step
                .ended
                .map_or("running".to_owned(), |end| format!("{:.3}", at(end)));
            let values: Vec<String> = step.after.iter().map(describe).collect();
            format!(
                "{} {:.3}-{end} s -> [{}]",
                step.kind,
                at(step.began),
                values.join(" | ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Counts {
    pub(crate) fn record(&mut self, kind: &'static str, ok: bool) {
        let table = if ok {
            &mut self.acked
        } else {
            &mut self.failed
        };
        *table.entry(kind).or_default() += 1;
    }
}

impl Client {
    /// One operation: mostly on one of this client's objects, checked against
    /// its history; sometimes a read of another client's object, checked against
    /// what that client did meanwhile.
    pub(crate) async fn step(&mut self, step: u64, counts: &Mutex<Counts>, origin: Instant) {
        if self.rng.random_range(0..6) == 0 {
            return self.observe(counts, origin).await;
        }
        let (pool, name) = self.names[self.rng.random_range(0..self.names.len())].clone();
        let possible = self
            .history
            .entry(name.clone())
            .or_insert_with(|| vec![None])
            .clone();
        // An object whose state is uncertain is read before it changes further.
        let choice = if possible.len() > 1 {
            0
        } else {
            self.rng.random_range(0..10)
        };
        let value = |size: usize| contents(&format!("{name}-{step}"), size);
        let planned = match choice {
            0..=3 => Planned::Read,
            4..=6 => Planned::WriteFull(value(self.rng.random_range(0..48_000))),
            7..=8 => Planned::Append(value(self.rng.random_range(1..3_000))),
            _ => Planned::Delete,
        };
        let (kind, applied): (&'static str, Possible) = match &planned {
            Planned::Read => ("read", possible.clone()),
            Planned::WriteFull(data) => ("write_full", vec![Some(data.clone())]),
            Planned::Append(data) => (
                "append",
                possible
                    .iter()
                    .map(|old| {
                        let mut new = old.clone().unwrap_or_default();
                        new.extend_from_slice(data);
                        Some(new)
                    })
                    .collect(),
            ),
            Planned::Delete => ("delete", vec![None]),
        };
        // Now and then the client gives a write up mid-request, as a client that
        // dies would: the OSD sees the request cancelled.
        let abandon = (kind != "read" && self.rng.random_range(0..20) == 0)
            .then(|| Duration::from_millis(self.rng.random_range(1..40)))
            .filter(|_| self.abandons);
        let key = format!("{pool}/{name}");
        self.timelines
            .lock()
            .expect("timelines")
            .entry(key.clone())
            .or_default()
            .push(Step {
                kind,
                began: Instant::now(),
                ended: None,
                after: union(possible.clone(), &applied),
            });
        let (outcome, next): (anyhow::Result<()>, Possible) = match planned {
            Planned::Read => {
                let read = read_value(&self.objects, &pool, &name).await;
                if let Ok(read) = &read
                    && !possible.contains(read)
                {
                    let provenance = self
                        .timelines
                        .lock()
                        .expect("timelines")
                        .get(&key)
                        .map(|steps| provenance(steps, read, origin))
                        .unwrap_or_default();
                    counts.lock().await.anomalies.push(format!(
                        "{pool}/{name}: read {} that no acknowledged history gives ({} possible; \
                         map epoch {}): {provenance}",
                        describe(read),
                        possible.len(),
                        self.objects.map().epoch
                    ));
                }
                let next = match &read {
                    Ok(read) => vec![read.clone()],
                    Err(_) => possible.clone(),
                };
                (read.map(|_| ()), next)
            }
            Planned::WriteFull(data) => {
                let put = self.objects.put(&pool, name.as_bytes(), data);
                (within(abandon, put, counts).await, applied)
            }
            Planned::Append(data) => {
                let append = self.objects.append(&pool, name.as_bytes(), data);
                (within(abandon, append, counts).await, applied)
            }
            Planned::Delete => {
                let remove = self.objects.remove(&pool, name.as_bytes());
                let result = within(abandon, remove, counts).await;
                let missing = matches!(&result, Err(error) if format!("{error:#}").contains("does not exist"));
                if missing && !possible.contains(&None) {
                    counts.lock().await.anomalies.push(format!(
                        "{pool}/{name}: delete found no object, yet it was written"
                    ));
                }
                let result = if missing { Ok(()) } else { result };
                (result, applied)
            }
        };
        let ok = outcome.is_ok();
        // Failed: it may or may not have been applied.
        let state = if ok || kind == "read" {
            next
        } else {
            union(possible, &next)
        };
        if let Some(last) = self
            .timelines
            .lock()
            .expect("timelines")
            .get_mut(&key)
            .and_then(|steps| steps.last_mut())
        {
            last.ended = Some(Instant::now());
            last.after = state.clone();
        }
        self.history.insert(name, state);
        counts.lock().await.record(kind, ok);
    }

    /// Reads another client's object and checks the value against what its owner
    /// did before and during the read.
    async fn observe(&mut self, counts: &Mutex<Counts>, origin: Instant) {
        let others: Vec<&(String, String)> = self
            .everyone
            .iter()
            .filter(|entry| !self.names.contains(entry))
            .collect();
        if others.is_empty() {
            return;
        }
        let (pool, name) = others[self.rng.random_range(0..others.len())].clone();
        let began = Instant::now();
        let read = read_value(&self.objects, &pool, &name).await;
        let ended = Instant::now();
        let anomaly = read.as_ref().ok().and_then(|read| {
            let key = format!("{pool}/{name}");
            let timelines = self.timelines.lock().expect("timelines");
            let steps = timelines.get(&key).map_or(&[][..], Vec::as_slice);
            (!readable(steps, began, ended).contains(read)).then(|| {
                format!(
                    "{key}: another client read {} at {:.3}-{:.3} s (map epoch {}), which \
                     neither the object's value before nor any operation during that read \
                     gives: {}",
                    describe(read),
                    began.saturating_duration_since(origin).as_secs_f64(),
                    ended.saturating_duration_since(origin).as_secs_f64(),
                    self.objects.map().epoch,
                    around(steps, began, ended, origin)
                )
            })
        });
        let mut counts = counts.lock().await;
        counts.anomalies.extend(anomaly);
        counts.record("read_other", read.is_ok());
    }
}

/// Runs `operation`, or gives it up after `limit` (counted as abandoned): the
/// operation then failed as far as the client knows, and may or may not be
/// applied.
async fn within(
    limit: Option<Duration>,
    operation: impl Future<Output = anyhow::Result<()>>,
    counts: &Mutex<Counts>,
) -> anyhow::Result<()> {
    let Some(limit) = limit else {
        return operation.await;
    };
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => result,
        Err(_) => {
            counts.lock().await.abandoned += 1;
            Err(anyhow::anyhow!("abandoned after {limit:?}"))
        }
    }
}

/// An object's value (`None`: absent), or the error that kept it from being read.
pub(crate) async fn read_value(
    objects: &ObjectClient,
    pool: &str,
    name: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    match objects.get(pool, name.as_bytes()).await {
        Ok(data) => Ok(Some(data)),
        Err(error) if format!("{error:#}").contains("does not exist") => Ok(None),
        Err(error) => Err(error),
    }
}

pub(crate) fn describe(value: &Option<Vec<u8>>) -> String {
    match value {
        None => "no object".to_owned(),
        Some(data) => format!(
            "{} bytes ({})",
            data.len(),
            &blake3::hash(data).to_hex()[..12]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_may_return_the_value_before_it_or_one_written_while_it_ran() {
        let origin = Instant::now();
        let at = |ms| origin + Duration::from_millis(ms);
        let value = |byte: u8| Some(vec![byte]);
        let write = |began, ended, after| Step {
            kind: "write_full",
            began,
            ended,
            after,
        };
        let steps = [
            write(at(0), Some(at(10)), vec![value(1)]),
            write(at(20), Some(at(30)), vec![value(2)]),
            write(at(40), None, vec![value(2), value(3)]),
        ];
        assert_eq!(readable(&[], at(0), at(1)), vec![None]);
        assert_eq!(readable(&steps, at(12), at(15)), vec![value(1)]);
        // The second write ran while the read did: either value.
        assert_eq!(readable(&steps, at(25), at(35)), vec![value(1), value(2)]);
        // It had ended before the read began: the older value is stale.
        assert_eq!(readable(&steps, at(31), at(35)), vec![value(2)]);
        assert_eq!(readable(&steps, at(45), at(50)), vec![value(2), value(3)]);
        assert!(around(&steps, at(31), at(35), origin).starts_with("write_full 0.020-0.030 s"));
    }
}
