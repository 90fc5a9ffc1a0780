//! Erasure-coded PGs at their primary: writes in two phases, reads that gather
//! shards, and peering that rebuilds lost or stale shards.
//!
//! Shard `i` of every object of a PG lives on the OSD at position `i` of the PG's
//! up set. Every shard keeps the same PG log; a write reaches it in two steps:
//! `prepare` keeps the shard's part of the write pending (durably, but not
//! applied), and once every up shard holds it, `commit` applies it with its log
//! entry. A write interrupted after some shards committed it is rolled forward by
//! the next peering, one that no shard committed is dropped: either way each stripe
//! is left all old or all new, and every shard agrees.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use lcpfs_proto::{EcCommitRequest, KeyValue, ReadShardReply, ReadShardRequest, WriteAt};
use tokio::task::JoinSet;

use super::*;
use crate::ec::{self, Code, Edit, Edited, UNIT};

/// The stripes of an object gathered from its shards.
struct Gathered {
    exists: bool,
    size: u64,
    /// Whole stripes, from the first asked for.
    data: Vec<u8>,
    /// Shards whose OSD found them unreadable (a checksum error its engine could
    /// not heal).
    damaged: Vec<Member>,
}

/// A shard position of a PG's up set and the OSD holding it.
type Member = (usize, u32);

/// The erasure code of a pool (replicated pools are not asked).
fn code(pool: &Pool) -> Code {
    match pool.kind {
        PoolKind::Erasure { k, m } => Code {
            k: k as usize,
            m: m as usize,
        },
        PoolKind::Replicated { .. } => Code { k: 1, m: 0 },
    }
}

fn members(up: &UpSet) -> Vec<Member> {
    up.iter()
        .enumerate()
        .filter_map(|(position, osd)| osd.map(|osd| (position, osd)))
        .collect()
}

fn op(op: Op) -> ObjectOp {
    ObjectOp { op: Some(op) }
}

/// The shard position a copy at `position` of the up set holds the history of:
/// the one it was written as (indep moves OSDs between positions as others come
/// and go), or its current one while it holds nothing.
fn held_position(position: usize, info: &PgInfoReply) -> Option<usize> {
    info.shard
        .map(|shard| shard as usize)
        .or((info.last == 0).then_some(position))
}

/// The operations that turn shard `position` of an object into its part of
/// `edited`.
fn shard_ops(
    code: Code,
    edit: &Edit,
    edited: &Edited,
    piece: Vec<u8>,
    version: u64,
) -> Vec<ObjectOp> {
    let mut ops = Vec::new();
    if edited.recreated && edit.existed() {
        ops.push(op(Op::Delete(true)));
    }
    if !edited.exists {
        return ops;
    }
    if edited.recreated || !edit.existed() {
        ops.push(op(Op::WriteFull(piece)));
    } else if !piece.is_empty() {
        ops.push(op(Op::Write(WriteAt {
            offset: edit.stripes.start * UNIT,
            data: piece,
        })));
    }
    ops.push(op(Op::Truncate(code.shard_size(edited.size))));
    ops.extend(edited.xattr_ops.iter().cloned());
    for (key, value) in [(ec::SIZE_XATTR, edited.size), (ec::VERSION_XATTR, version)] {
        ops.push(op(Op::SetXattr(KeyValue {
            key: key.to_owned(),
            value: value.to_le_bytes().to_vec(),
        })));
    }
    ops
}

/// A call to a shard in flight (to a peer, or to this OSD's own store).
type ShardCall<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send>>;

impl OsdService {
    /// Reads bytes `range` of shard `osd` of an object (from this OSD's store when
    /// it is this one's).
    fn shard_range(
        &self,
        map: &ClusterMap,
        pg: PgId,
        osd: u32,
        name: &[u8],
        range: Range<u64>,
    ) -> Result<ShardCall<ReadShardReply>, Status> {
        let name = name.to_vec();
        if osd == self.id {
            let store = self.store.clone();
            return Ok(Box::pin(blocking(move || {
                pg::read_shard(&store, pg, &name, range.start, range.end - range.start)
            })));
        }
        let mut client = self.peer_client(map, osd)?;
        let request = ReadShardRequest {
            pg: Some(pg_ref(map, pg)),
            name,
            offset: range.start,
            length: range.end - range.start,
        };
        Ok(Box::pin(async move {
            Ok(client.read_shard(request).await?.into_inner())
        }))
    }

    /// Reads `stripes` of an object from `k` of its shards: the data shards when
    /// they answer, parity shards in place of those that do not.
    async fn gather(
        &self,
        map: &ClusterMap,
        code: Code,
        pg: PgId,
        name: &[u8],
        stripes: Range<u64>,
    ) -> Result<Gathered, Status> {
        let up = self.mapping(map, pg)?.up;
        let mut candidates = members(&up).into_iter();
        let range = stripes.start * UNIT..stripes.end * UNIT;
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; code.k + code.m];
        let mut seen: Option<(bool, u64, u64)> = None;
        let mut failures = Vec::new();
        let mut damaged = Vec::new();
        loop {
            let have = pieces.iter().flatten().count();
            if have == code.k {
                break;
            }
            let wanted: Vec<Member> = candidates.by_ref().take(code.k - have).collect();
            if wanted.is_empty() {
                return Err(Status::unavailable(format!(
                    "PG {pg}: only {have} shards of '{}' could be read and {} are needed ({})",
                    String::from_utf8_lossy(name),
                    code.k,
                    failures.join("; ")
                )));
            }
            let mut reads = JoinSet::new();
            for (position, osd) in wanted {
                let read = self.shard_range(map, pg, osd, name, range.clone())?;
                reads.spawn(async move { (position, osd, read.await) });
            }
            while let Some(done) = reads.join_next().await {
                let (position, osd, reply) =
                    done.map_err(|error| Status::internal(format!("shard read task: {error}")))?;
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(status) => {
                        if status.code() == tonic::Code::DataLoss {
                            damaged.push((position, osd));
                        }
                        failures.push(format!("osd.{osd}: {}", status.message()));
                        continue;
                    }
                };
                let identity = (reply.exists, reply.size, reply.version);
                if seen.is_some_and(|other| other != identity) {
                    return Err(Status::unavailable(format!(
                        "PG {pg}: shards of '{}' disagree (osd.{osd} has version {}); retry",
                        String::from_utf8_lossy(name),
                        reply.version
                    )));
                }
                seen = Some(identity);
                pieces[position] = Some(reply.data);
            }
        }
        let (exists, size, _) = seen.unwrap_or_default();
        let data = if exists {
            code.decode(pieces).map_err(Status::internal)?
        } else {
            Vec::new()
        };
        Ok(Gathered {
            exists,
            size,
            data,
            damaged,
        })
    }

    /// Applies a client's mutation to an erasure-coded PG (peered, under its
    /// lock) as log entry `entry`: reads the stripes it changes, encodes them anew
    /// and writes every up shard in two phases. Acknowledged only once every up
    /// shard committed it.
    pub(super) async fn write_erasure(
        &self,
        pool: &Pool,
        pg: PgId,
        request: &OpRequest,
        log: &mut PgLog,
        entry: LogEntry,
    ) -> Result<u64, Status> {
        let code = code(pool);
        let map = self.current();
        let store = self.store.clone();
        let name = request.name.clone();
        let before = blocking(move || pg::read_shard(&store, pg, &name, 0, 0)).await?;
        let edit = Edit::plan(code, before.exists, before.size, &request.ops).map_err(|_| {
            Status::not_found(format!(
                "object '{}' does not exist in pool '{}'",
                String::from_utf8_lossy(&request.name),
                pool.name
            ))
        })?;
        let old = if edit.read.is_empty() {
            Vec::new()
        } else {
            let gathered = self
                .gather(&map, code, pg, &request.name, edit.stripes.clone())
                .await
                .inspect_err(|_| log.peered = None)?;
            ec::slice(code, &gathered.data, edit.stripes.start, edit.read.clone())
        };
        let edited = edit.apply(code, &old, &request.ops);
        let pieces = code.encode(&edited.stripes).map_err(Status::internal)?;
        let shards = members(&self.mapping(&map, pg)?.up);
        let reference = PgRef {
            interval: entry.epoch,
            ..pg_ref(&map, pg)
        };

        // Phase one: every up shard holds its part pending.
        let mut prepares = JoinSet::new();
        for (position, osd) in shards.iter().copied() {
            let ops = shard_ops(
                code,
                &edit,
                &edited,
                pieces[position].clone(),
                entry.version,
            );
            let prepare = self.prepare_at(&map, pg, osd, position, &entry, ops)?;
            prepares.spawn(async move { (osd, prepare.await) });
        }
        let mut prepared = Vec::new();
        let mut failed = None;
        while let Some(done) = prepares.join_next().await {
            match done {
                Ok((osd, Ok(()))) => prepared.push(osd),
                Ok((osd, Err(status))) => failed = Some((osd, status)),
                Err(error) => failed = Some((self.id, Status::internal(error.to_string()))),
            }
        }
        if let Some((osd, status)) = failed {
            log.peered = None;
            for osd in prepared {
                if let Ok(drop) = self.resolve_at(&map, pg, osd, reference, &entry, false) {
                    let _ = drop.await;
                }
            }
            // A refusal (a full disk) is the client's answer; anything else is
            // worth a retry once the PG has peered again.
            let code = match status.code() {
                code @ (tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument) => code,
                _ => tonic::Code::Unavailable,
            };
            return Err(Status::new(
                code,
                format!(
                    "PG {pg}: osd.{osd} did not take its shard of the write ({}); the write was not applied",
                    status.message()
                ),
            ));
        }

        // Phase two: every shard applies it.
        log.dirty = true;
        let mut commits = JoinSet::new();
        for (_, osd) in shards.iter().copied() {
            let commit = self.resolve_at(&map, pg, osd, reference, &entry, true)?;
            commits.spawn(async move { (osd, commit.await) });
        }
        let mut failed = None;
        while let Some(done) = commits.join_next().await {
            match done {
                Ok((osd, Ok(()))) if osd == self.id => log.record(&entry),
                Ok((_, Ok(()))) => {}
                Ok((osd, Err(status))) => failed = Some(format!("osd.{osd}: {}", status.message())),
                Err(error) => failed = Some(format!("commit task: {error}")),
            }
        }
        if let Some(reason) = failed {
            // Peering again rolls the write forward on every shard.
            log.peered = None;
            return Err(Status::unavailable(format!(
                "PG {pg}: the write is committed on some shards only ({reason}); retry"
            )));
        }
        Ok(entry.version)
    }

    /// Phase one of a write at shard `osd`.
    fn prepare_at(
        &self,
        map: &ClusterMap,
        pg: PgId,
        osd: u32,
        position: usize,
        entry: &LogEntry,
        ops: Vec<ObjectOp>,
    ) -> Result<ShardCall<()>, Status> {
        let shard = position as u32;
        if osd == self.id {
            let (store, entry) = (self.store.clone(), entry.clone());
            return Ok(Box::pin(blocking(move || {
                pg::prepare(&store, pg, &entry, &ops, shard)
            })));
        }
        let mut client = self.peer_client(map, osd)?;
        let request = ReplicateRequest {
            epoch: map.epoch,
            pool: pg.pool,
            pg_seed: pg.seed,
            version: entry.version,
            name: entry.name.clone(),
            client: entry.client.clone(),
            tid: entry.tid,
            ops,
            version_epoch: entry.epoch,
            prepare: true,
            shard: Some(shard),
        };
        Ok(Box::pin(async move {
            client.replicate(request).await.map(|_| ())
        }))
    }

    /// Phase two of a write at shard `osd`: commit it, or drop it.
    fn resolve_at(
        &self,
        map: &ClusterMap,
        pg: PgId,
        osd: u32,
        reference: PgRef,
        entry: &LogEntry,
        commit: bool,
    ) -> Result<ShardCall<()>, Status> {
        if osd == self.id {
            let (store, entry) = (self.store.clone(), entry.clone());
            let log_entries = self.config.pg_log_entries;
            return Ok(Box::pin(blocking(move || {
                pg::resolve(&store, pg, &entry, commit, log_entries)
            })));
        }
        let mut client = self.peer_client(map, osd)?;
        let request = EcCommitRequest {
            pg: Some(reference),
            entry: Some(entry.clone()),
            commit,
        };
        Ok(Box::pin(async move {
            client.ec_commit(request).await.map(|_| ())
        }))
    }

    /// Runs the reads of a request on an erasure-coded PG (peered, under its lock):
    /// data from the shards, the rest from this primary's own shard.
    pub(super) async fn read_erasure(
        &self,
        pool: &Pool,
        pg: PgId,
        request: &OpRequest,
        log: &mut PgLog,
    ) -> Result<Vec<lcpfs_proto::OpResult>, Status> {
        let code = code(pool);
        let map = self.current();
        let mut results = Vec::new();
        for object_op in &request.ops {
            let Some(Op::Read(range)) = &object_op.op else {
                let store = self.store.clone();
                let (name, ops) = (request.name.clone(), vec![object_op.clone()]);
                results.extend(blocking(move || pg::read(&store, pg, &name, &ops)).await?);
                continue;
            };
            let store = self.store.clone();
            let name = request.name.clone();
            let meta = blocking(move || pg::read_shard(&store, pg, &name, 0, 0)).await?;
            if !meta.exists {
                return Err(Status::not_found(format!(
                    "object '{}' does not exist in pool '{}'",
                    String::from_utf8_lossy(&request.name),
                    pool.name
                )));
            }
            let end = match range.length {
                0 => meta.size,
                length => range.offset.saturating_add(length).min(meta.size),
            };
            let wanted = range.offset.min(end)..end;
            let data = if wanted.is_empty() {
                Vec::new()
            } else {
                let stripes = code.stripes(&wanted);
                let first = stripes.start;
                let gathered = self
                    .gather(&map, code, pg, &request.name, stripes)
                    .await
                    .inspect_err(|_| log.peered = None)?;
                if !gathered.exists || gathered.size != meta.size {
                    log.peered = None;
                    return Err(Status::unavailable(format!(
                        "PG {pg}: the shards of '{}' disagree with the primary's; retry",
                        String::from_utf8_lossy(&request.name)
                    )));
                }
                for &member in &gathered.damaged {
                    // The read is answered either way; scrub finds what this misses.
                    if let Err(status) = self
                        .rebuild_damaged(&map, code, pg, &request.name, member, log)
                        .await
                    {
                        tracing::warn!(%pg, osd = member.1, error = %status.message(), "could not rebuild an unreadable shard");
                    }
                }
                ec::slice(code, &gathered.data, first, wanted)
            };
            results.push(lcpfs_proto::OpResult {
                result: Some(op_result::Result::Data(data)),
            });
        }
        Ok(results)
    }

    /// The infos of every up shard's copy of the PG (this one's included).
    async fn shard_infos(
        &self,
        map: &ClusterMap,
        pg: PgId,
        shards: &[Member],
        reference: PgRef,
        log: &PgLog,
    ) -> Result<Vec<(Member, PgInfoReply)>, Status> {
        let mut infos = Vec::new();
        for &(position, osd) in shards {
            let info = if osd == self.id {
                self.info_of(pg, log, false).await?
            } else {
                self.peer_info(map, pg, osd, reference).await?
            };
            infos.push(((position, osd), info));
        }
        Ok(infos)
    }

    /// The log entry at `version` of `osd`'s copy of the PG.
    async fn entry_of(
        &self,
        map: &ClusterMap,
        pg: PgId,
        osd: u32,
        version: u64,
    ) -> Result<Option<LogEntry>, Status> {
        if osd == self.id {
            let store = self.store.clone();
            return blocking(move || pg::entry_at(&store, pg, version)).await;
        }
        let entries = self
            .peer_client(map, osd)?
            .pg_log(PgLogRequest {
                pg: Some(pg_ref(map, pg)),
                since: version - 1,
            })
            .await?
            .into_inner()
            .entries;
        Ok(entries.into_iter().find(|entry| entry.version == version))
    }

    /// Peers an erasure-coded PG whose up set `up` changed since it was last
    /// peered (`reference` names its new interval): settles the writes left
    /// prepared (rolled forward where some shard committed them, dropped
    /// elsewhere), finds the newest history that at least `k` shards hold, and
    /// rebuilds every other shard from them.
    pub(super) async fn peer_erasure(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        up: &UpSet,
        reference: PgRef,
    ) -> Result<(), Status> {
        let code = code(pool);
        let shards = members(up);
        let mut infos = self.shard_infos(map, pg, &shards, reference, log).await?;

        // Shards of the PG's earlier intervals may hold writes the up set lacks
        // (every shard moved at once): they can be sources too.
        let probed = self.probe_prior(map, pg, up, reference).await?;
        self.check_not_down(
            map,
            pool,
            pg,
            infos
                .iter()
                .map(|(_, info)| info)
                .chain(probed.iter().map(|(_, info)| info)),
        )?;
        let prior: Vec<(Member, PgInfoReply)> = probed
            .into_iter()
            .filter(|(_, info)| info.last > 0)
            .filter_map(|(osd, info)| Some(((info.shard? as usize, osd), info)))
            .collect();
        let mut pending: Vec<LogEntry> = infos
            .iter()
            .filter_map(|(_, info)| info.pending.clone())
            .collect();
        pending.sort_by_key(|entry| entry.version);
        pending.dedup_by(|a, b| pg::same_entry(a, b));
        for entry in &pending {
            let mut committed = false;
            for ((_, osd), info) in &infos {
                if info.last >= entry.version
                    && self
                        .entry_of(map, pg, *osd, entry.version)
                        .await?
                        .is_some_and(|held| pg::same_entry(&held, entry))
                {
                    committed = true;
                    break;
                }
            }
            tracing::info!(%pg, version = entry.version, committed, "settling a prepared write");
            log.dirty = true;
            for ((_, osd), info) in &infos {
                if info
                    .pending
                    .as_ref()
                    .is_some_and(|held| pg::same_entry(held, entry))
                {
                    self.resolve_at(map, pg, *osd, reference, entry, committed)?
                        .await?;
                }
            }
        }
        if !pending.is_empty() {
            let store = self.store.clone();
            let fresh = blocking(move || pg::load(&store, pg)).await?;
            log.reloaded(fresh);
            infos = self.shard_infos(map, pg, &shards, reference, log).await?;
        }

        // A copy is a source for the shard position it holds.
        let stored = |((position, _), info): &(Member, PgInfoReply)| held_position(*position, info);
        let holders = |point: (u64, u64)| -> Vec<Member> {
            infos
                .iter()
                .chain(&prior)
                .filter(|(_, info)| (info.last_epoch, info.last) == point)
                .filter_map(|copy| Some((stored(copy)?, copy.0.1)))
                .collect()
        };
        let positions = |sources: &[Member]| {
            let mut positions: Vec<usize> = sources.iter().map(|(position, _)| *position).collect();
            positions.sort_unstable();
            positions.dedup();
            positions.len()
        };
        let mut points: Vec<(u64, u64)> = infos
            .iter()
            .chain(&prior)
            .filter(|copy| stored(copy).is_some())
            .map(|(_, info)| (info.last_epoch, info.last))
            .collect();
        points.sort_unstable_by(|a, b| b.cmp(a));
        points.dedup();
        // The newest history that k shards hold. A newer one fewer shards hold
        // was never acknowledged (every up shard, at least k + 1, commits a write
        // before it is), as when a primary stopped between its own commit and the
        // others': its holders are rolled back with the rest.
        let mut sources: Vec<Member> = points
            .iter()
            .map(|&point| holders(point))
            .find(|sources| positions(sources) >= code.k)
            .unwrap_or_else(|| holders(points.first().copied().unwrap_or_default()));
        let copies: Vec<String> = infos
            .iter()
            .chain(&prior)
            .map(|((position, osd), info)| {
                let held = info
                    .shard
                    .map_or("none".to_owned(), |shard| shard.to_string());
                format!(
                    "osd.{osd} at {position} holds shard {held} to {}'{}",
                    info.last_epoch, info.last
                )
            })
            .collect();
        let incomplete = |sources: &[Member]| {
            (positions(sources) < code.k).then(|| {
                Status::unavailable(format!(
                    "PG {pg} is incomplete: {} of its shards hold its newest writes and {} are needed; waiting for more of its OSDs ({})",
                    positions(sources),
                    code.k,
                    copies.join(", ")
                ))
            })
        };
        if let Some(status) = incomplete(&sources) {
            return Err(status);
        }
        let source = sources[0].1;
        let (auth, auth_oldest) = if source == self.id {
            let store = self.store.clone();
            blocking(move || pg::log_since(&store, pg, 0)).await?
        } else {
            let mut client = self.peer_client(map, source)?;
            let entries = whole_log(&mut client, pg_ref(map, pg)).await?;
            let oldest = entries.first().map_or(0, |entry| entry.version);
            (entries, oldest)
        };
        // The objects each copy misses (left by an earlier peering whose recovery
        // has not finished): a copy is no source for those.
        let mut missing_of: BTreeMap<u32, BTreeSet<Vec<u8>>> = infos
            .iter()
            .chain(&prior)
            .map(|((_, osd), info)| (*osd, info.missing.iter().cloned().collect()))
            .collect();
        let holding =
            |sources: &[Member], missing_of: &BTreeMap<u32, BTreeSet<Vec<u8>>>, name: &[u8]| {
                sources
                    .iter()
                    .copied()
                    .filter(|(_, osd)| {
                        !missing_of
                            .get(osd)
                            .is_some_and(|names| names.contains(name))
                    })
                    .collect::<Vec<Member>>()
            };
        // Copies that are sources for another position are rebuilt last: until
        // then their shards serve the others' rebuilds.
        let mut targets: Vec<&(Member, PgInfoReply)> = infos
            .iter()
            .filter(|copy| !sources.contains(&copy.0))
            .collect();
        targets.sort_by_key(|((_, osd), _)| sources.iter().any(|(_, source)| source == osd));
        for ((position, osd), info) in targets {
            // A source whose shard is being replaced serves no more rebuilds.
            sources.retain(|(_, source)| source != osd);
            if let Some(status) = incomplete(&sources) {
                return Err(status);
            }
            let source = sources[0].1;
            let theirs = if held_position(*position, info) != Some(*position) {
                None
            } else if *osd == self.id {
                let store = self.store.clone();
                Some(blocking(move || pg::log_since(&store, pg, 0)).await?.0)
            } else {
                let mut client = self.peer_client(map, *osd)?;
                Some(whole_log(&mut client, pg_ref(map, pg)).await?)
            };
            let plan = match &theirs {
                Some(theirs) => pg::catch_up(&auth, auth_oldest, theirs),
                None => CatchUp::Backfill,
            };
            let (names, entries, keep, rewind_from) = match plan {
                CatchUp::Level => continue,
                CatchUp::Backfill => {
                    // The source's own missing objects are named too: their
                    // newest data is elsewhere.
                    let names = pg::backfill_names(
                        self.names_at(map, pg, source).await?,
                        missing_of.get(&source).into_iter().flatten(),
                    );
                    (names.clone(), auth.clone(), Some(names), None)
                }
                CatchUp::Entries {
                    from,
                    names,
                    entries,
                } => (names, entries, None, Some(from)),
            };
            // The copy takes the entries now, and the shards of their objects
            // after the PG goes active (see `recover_shards`), when enough up
            // shards at their own positions hold them; the others are rebuilt
            // first, from every source, earlier intervals' OSDs among them.
            let (lazy, eager): (Vec<Vec<u8>>, Vec<Vec<u8>>) = names.into_iter().partition(|name| {
                let up_holders: Vec<Member> = holding(&sources, &missing_of, name)
                    .into_iter()
                    .filter(|member| shards.contains(member))
                    .collect();
                positions(&up_holders) >= code.k
            });
            tracing::info!(%pg, osd, shard = position, backfill = keep.is_some(), lazy = lazy.len(), eager = eager.len(), "bringing a shard level");
            if keep.is_some() && !lazy.is_empty() {
                log.backfilled.insert(*osd);
            }
            let mut delivery = Delivery {
                entries,
                keep,
                rewind_from,
                missing: lazy,
                ..Delivery::default()
            };
            if !eager.is_empty() {
                let _recovering = self.recovering(pg, delivery.keep.is_some(), false).await;
                for name in eager {
                    let holders = holding(&sources, &missing_of, &name);
                    if positions(&holders) < code.k {
                        // Unfound until OSDs that hold it come back.
                        delivery.missing.push(name);
                        continue;
                    }
                    self.recovery_pause().await;
                    self.metrics.recovered_objects.inc();
                    let state = self
                        .rebuild_shard(map, code, pg, &name, &holders, *position)
                        .await?;
                    self.install_shard(
                        map,
                        pg,
                        (*position, *osd),
                        Delivery::objects(vec![state]),
                        log,
                    )
                    .await?;
                }
            }
            let missing = self
                .install_shard(map, pg, (*position, *osd), delivery, log)
                .await?;
            missing_of.insert(*osd, missing);
            // Level now, at its own position.
            sources.push((*position, *osd));
        }
        log.peer_missing = shards
            .iter()
            .filter(|(_, osd)| *osd != self.id)
            .map(|(_, osd)| (*osd, missing_of.remove(osd).unwrap_or_default()))
            .collect();
        Ok(())
    }

    /// Brings the newest data of one object of an erasure-coded PG to every up
    /// shard that misses it, rebuilt from `k` shards that hold it. A client
    /// operation on the object waits for this, not for the whole PG's recovery.
    pub(super) async fn recover_shards(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        name: &[u8],
    ) -> Result<(), Status> {
        let code = code(pool);
        // Whether an up copy misses the object, as peering found it (`None`: a
        // copy this peering did not hear from, which is neither source nor target).
        let lacks = |osd: u32| {
            if osd == self.id {
                Some(log.missing.contains(name))
            } else {
                log.peer_missing.get(&osd).map(|names| names.contains(name))
            }
        };
        let up = members(&self.mapping(map, pg)?.up);
        let lacking: Vec<Member> = up
            .iter()
            .copied()
            .filter(|(_, osd)| lacks(*osd) == Some(true))
            .collect();
        let mut holders: Vec<Member> = up
            .iter()
            .copied()
            .filter(|(_, osd)| lacks(*osd) == Some(false))
            .collect();
        if holders.len() < code.k {
            // OSDs of earlier intervals, at the positions no up holder has.
            for (osd, info) in self.prior_holders(map, pg, name).await? {
                if let Some(shard) = info.shard.map(|shard| shard as usize)
                    && !holders.iter().any(|(position, _)| *position == shard)
                {
                    holders.push((shard, osd));
                }
            }
        }
        if holders.len() < code.k {
            let held: Vec<String> = holders
                .iter()
                .map(|(position, osd)| format!("shard {position} on osd.{osd}"))
                .collect();
            return Err(Status::unavailable(format!(
                "object '{}' of PG {pg} is unfound: {} shards of its newest version are up ({}) and {} are needed; \
                 start the OSDs that held it",
                String::from_utf8_lossy(name),
                holders.len(),
                held.join(", "),
                code.k
            )));
        }
        for member in lacking {
            let state = self
                .rebuild_shard(map, code, pg, name, &holders, member.0)
                .await?;
            self.install_shard(map, pg, member, Delivery::objects(vec![state]), log)
                .await?;
            if let Some(names) = log.peer_missing.get_mut(&member.1) {
                names.remove(name);
            }
            self.metrics.recovered_objects.inc();
        }
        Ok(())
    }

    /// Every object name of `osd`'s copy of the PG.
    async fn names_at(&self, map: &ClusterMap, pg: PgId, osd: u32) -> Result<Vec<Vec<u8>>, Status> {
        if osd == self.id {
            let store = self.store.clone();
            return blocking(move || pg::names(&store, pg)).await;
        }
        let mut client = self.peer_client(map, osd)?;
        self.peer_names(&mut client, map, pg).await
    }

    /// Shard `position` of an object, rebuilt from `k` of the `sources` (shards
    /// that hold the PG's newest history).
    pub(super) async fn rebuild_shard(
        &self,
        map: &ClusterMap,
        code: Code,
        pg: PgId,
        name: &[u8],
        sources: &[Member],
        position: usize,
    ) -> Result<ObjectState, Status> {
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; code.k + code.m];
        let mut xattrs = Vec::new();
        let mut failures = Vec::new();
        for &(source, osd) in sources {
            if pieces.iter().flatten().count() == code.k {
                break;
            }
            match self.object_state(map, pg, name, osd).await {
                Ok(state) if !state.exists => return Ok(state),
                Ok(state) => {
                    pieces[source] = Some(state.data);
                    xattrs = state.xattrs;
                }
                Err(status) => failures.push(format!("osd.{osd}: {}", status.message())),
            }
        }
        if pieces.iter().flatten().count() < code.k {
            return Err(Status::unavailable(format!(
                "PG {pg}: shard {position} of '{}' cannot be rebuilt: fewer than {} shards could be read ({})",
                String::from_utf8_lossy(name),
                code.k,
                failures.join("; ")
            )));
        }
        let mut rebuilt = code.rebuild(pieces).map_err(Status::internal)?;
        Ok(ObjectState {
            name: name.to_vec(),
            exists: true,
            data: std::mem::take(&mut rebuilt[position]),
            xattrs,
            omap: Vec::new(),
        })
    }

    /// Installs a delivery in a shard's copy of the PG (this OSD's own, or a
    /// peer's by a push). Returns the objects that copy still misses.
    async fn install_shard(
        &self,
        map: &ClusterMap,
        pg: PgId,
        (position, osd): Member,
        delivery: Delivery,
        log: &mut PgLog,
    ) -> Result<BTreeSet<Vec<u8>>, Status> {
        let delivery = Delivery {
            shard: Some(position as u32),
            ..delivery
        };
        if osd == self.id {
            self.install_here(pg, delivery, log).await?;
            return Ok(log.missing.clone());
        }
        let reply = self
            .peer_client(map, osd)?
            .push_objects(self.push_request(map, pg, delivery))
            .await?
            .into_inner();
        Ok(reply.missing.into_iter().collect())
    }

    /// Rebuilds the bad shards scrub found of one object from the good ones; marks
    /// each shard it rebuilt as repaired.
    pub(super) async fn repair_shards(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        name: &[u8],
        bad: &mut [Inconsistency],
        log: &mut PgLog,
    ) -> Result<(), Status> {
        if bad.is_empty() {
            return Ok(());
        }
        let shards = members(&self.mapping(map, pg)?.up);
        let sources: Vec<Member> = shards
            .iter()
            .copied()
            .filter(|(_, osd)| !bad.iter().any(|copy| copy.osd == *osd))
            .collect();
        for copy in bad.iter_mut() {
            let Some(&(position, osd)) = shards.iter().find(|(_, osd)| *osd == copy.osd) else {
                continue;
            };
            let state = self
                .rebuild_shard(map, code(pool), pg, name, &sources, position)
                .await?;
            let delivery = Delivery {
                objects: vec![state],
                ..Delivery::default()
            };
            self.install_shard(map, pg, (position, osd), delivery, log)
                .await?;
            tracing::warn!(%pg, osd, shard = position, object = %String::from_utf8_lossy(name), reason = %copy.reason, "rebuilt a bad shard");
            copy.repaired = true;
        }
        Ok(())
    }

    /// For a deep scrub of an erasure-coded object of `size` bytes whose shards
    /// agree on their metadata: reads every up shard whole and checks them
    /// against the code. Returns the OSDs whose shards disagree, with the reason.
    pub(super) async fn check_parity(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        name: &[u8],
        size: u64,
    ) -> Result<Vec<(u32, String)>, Status> {
        let code = code(pool);
        let shards = members(&self.mapping(map, pg)?.up);
        let length = code.shard_size(size);
        let mut reads = JoinSet::new();
        for (position, osd) in shards.iter().copied() {
            let read = self.shard_range(map, pg, osd, name, 0..length)?;
            reads.spawn(async move { (position, read.await) });
        }
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; code.k + code.m];
        while let Some(done) = reads.join_next().await {
            let (position, reply) =
                done.map_err(|error| Status::internal(format!("shard read task: {error}")))?;
            // A shard that cannot be read was reported by the comparison of the
            // copies' metadata; the others are checked without it.
            if let Ok(reply) = reply.inspect_err(|status| {
                tracing::warn!(%pg, position, error = %status.message(), "shard unreadable during deep scrub");
            }) {
                pieces[position] = Some(reply.data);
            }
        }
        let wrong = code.inconsistent(&pieces).map_err(Status::internal)?;
        Ok(shards
            .into_iter()
            .filter(|(position, _)| wrong.contains(position))
            .map(|(position, osd)| {
                (
                    osd,
                    format!("shard {position} does not match the code over the other shards"),
                )
            })
            .collect())
    }

    /// Rebuilds shard `member` of an object, which its OSD could not read, from
    /// the PG's other up shards.
    async fn rebuild_damaged(
        &self,
        map: &ClusterMap,
        code: Code,
        pg: PgId,
        name: &[u8],
        member: Member,
        log: &mut PgLog,
    ) -> Result<(), Status> {
        let sources: Vec<Member> = members(&self.mapping(map, pg)?.up)
            .into_iter()
            .filter(|other| *other != member)
            .collect();
        let state = self
            .rebuild_shard(map, code, pg, name, &sources, member.0)
            .await?;
        let delivery = Delivery {
            objects: vec![state],
            ..Delivery::default()
        };
        self.install_shard(map, pg, member, delivery, log).await?;
        tracing::warn!(%pg, osd = member.1, shard = member.0, object = %String::from_utf8_lossy(name), "rebuilt an unreadable shard");
        Ok(())
    }
}
