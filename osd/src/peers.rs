//! Everything this OSD sends to other OSDs: one connection cache, one typed
//! `send_*` function per call of the OSD protocol, and one fan-out helper that
//! sends to a set of OSDs at once and collects each one's answer.
//!
//! The receiving side of each call is a `handle_*` function of [`crate::replica`];
//! a reader always knows which side runs. Peer answers come back as [`OsdError`]s
//! (converted at [`crate::server::status`]), so no caller looks at a gRPC status.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lcpfs_core::map::ClusterMap;
use lcpfs_core::pg::PgId;
use lcpfs_proto::connections::OsdConnections;
use lcpfs_proto::osd_client::OsdClient;
use lcpfs_proto::tls::Tls;
use lcpfs_proto::{
    EcCommitRequest, LeaseReply, LeaseRequest, ListReply, ListRequest, ObjectState, PgInfoReply,
    PgLogRequest, PgRef, PullRequest, PushReply, PushRequest, ReadShardReply, ReadShardRequest,
    ReplicateRequest, ScrubMapRequest, ScrubObject,
};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::error::{OsdError, Result};
use crate::pg::{Entry, entry};

/// How long one call to a peer may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Objects per page when a peer's copy of a PG is listed whole.
const LIST_PAGE: u32 = 1000;

/// The connections to the other OSDs (a cheap handle: clones share them).
#[derive(Clone)]
pub struct Peers {
    connections: Arc<OsdConnections>,
}

/// A PG named at `map`'s epoch, for requests that do not peer it.
pub fn pg_ref(map: &ClusterMap, pg: PgId) -> PgRef {
    PgRef {
        epoch: map.epoch,
        pool: pg.pool,
        pg_seed: pg.seed,
        interval: 0,
        probe: false,
    }
}

impl Peers {
    /// Connections with mutual TLS (`tls`) or plain ones.
    pub fn new(tls: Option<Tls>) -> Self {
        Peers {
            connections: Arc::new(OsdConnections::new(tls, Some(CALL_TIMEOUT))),
        }
    }

    /// A client of `osd` at the address `map` gives it.
    fn client(&self, map: &ClusterMap, osd: u32) -> Result<OsdClient<Channel>> {
        let addr = map
            .osds
            .get(&osd)
            .map(|info| info.addr.as_str())
            .ok_or_else(|| OsdError::Internal(format!("osd.{osd} is not in the map")))?;
        self.connections
            .get(addr)
            .map_err(|_| OsdError::Internal(format!("bad OSD address {addr:?} in the map")))
    }

    /// A read lease request (or release) to `osd`; also the heartbeat between
    /// OSDs sharing PGs.
    pub async fn send_lease(
        &self,
        map: &ClusterMap,
        osd: u32,
        request: LeaseRequest,
    ) -> Result<LeaseReply> {
        Ok(self.client(map, osd)?.lease(request).await?.into_inner())
    }

    /// `osd`'s info of its copy of a PG (peering; `reference.probe` for an OSD of
    /// an earlier interval, which creates no copy to answer).
    pub async fn send_pg_info(
        &self,
        map: &ClusterMap,
        osd: u32,
        reference: PgRef,
    ) -> Result<PgInfoReply> {
        Ok(self
            .client(map, osd)?
            .pg_info(reference)
            .await?
            .into_inner())
    }

    /// `osd`'s log entries of a PG after version `since` (0: the whole log).
    pub async fn send_pg_log(
        &self,
        map: &ClusterMap,
        osd: u32,
        pg: PgId,
        since: u64,
    ) -> Result<Vec<Entry>> {
        let request = PgLogRequest {
            pg: Some(pg_ref(map, pg)),
            since,
        };
        let entries = self.client(map, osd)?.pg_log(request).await?.into_inner();
        Ok(entry::from_wire(entries.entries))
    }

    /// Whole objects of `osd`'s copy of a PG.
    pub async fn send_pull(
        &self,
        map: &ClusterMap,
        osd: u32,
        pg: PgId,
        names: Vec<Vec<u8>>,
    ) -> Result<Vec<ObjectState>> {
        let request = PullRequest {
            pg: Some(pg_ref(map, pg)),
            names,
        };
        Ok(self
            .client(map, osd)?
            .pull_objects(request)
            .await?
            .into_inner()
            .objects)
    }

    /// Installs objects, log entries or markers in `osd`'s copy of a PG.
    pub async fn send_push(
        &self,
        map: &ClusterMap,
        osd: u32,
        push: PushRequest,
    ) -> Result<PushReply> {
        Ok(self
            .client(map, osd)?
            .push_objects(push)
            .await?
            .into_inner())
    }

    /// A mutation for `osd`'s copy of a PG (replicated pools), or one shard's part
    /// of it held pending (erasure-coded pools, `request.prepare`).
    pub async fn send_replicate(
        &self,
        map: &ClusterMap,
        osd: u32,
        request: ReplicateRequest,
    ) -> Result<()> {
        self.client(map, osd)?.replicate(request).await?;
        Ok(())
    }

    /// Phase two of an erasure-coded write at shard `osd`: commit it, or drop it.
    /// True when the shard misses the written object afterwards.
    pub async fn send_ec_commit(
        &self,
        map: &ClusterMap,
        osd: u32,
        request: EcCommitRequest,
    ) -> Result<bool> {
        Ok(self
            .client(map, osd)?
            .ec_commit(request)
            .await?
            .into_inner()
            .missing)
    }

    /// A byte range of `osd`'s shard of an object.
    pub async fn send_read_shard(
        &self,
        map: &ClusterMap,
        osd: u32,
        request: ReadShardRequest,
    ) -> Result<ReadShardReply> {
        Ok(self
            .client(map, osd)?
            .read_shard(request)
            .await?
            .into_inner())
    }

    /// `osd`'s scrub view of a range of a PG's objects.
    pub async fn send_scrub_map(
        &self,
        map: &ClusterMap,
        osd: u32,
        request: ScrubMapRequest,
    ) -> Result<Vec<ScrubObject>> {
        Ok(self
            .client(map, osd)?
            .scrub_map(request)
            .await?
            .into_inner()
            .objects)
    }

    /// One page of `osd`'s listing of a PG.
    pub async fn send_list(
        &self,
        map: &ClusterMap,
        osd: u32,
        request: ListRequest,
    ) -> Result<ListReply> {
        Ok(self.client(map, osd)?.list(request).await?.into_inner())
    }

    /// Every object name of `osd`'s copy of a PG, page by page.
    pub async fn send_list_names(
        &self,
        map: &ClusterMap,
        osd: u32,
        pg: PgId,
    ) -> Result<Vec<Vec<u8>>> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        loop {
            let request = ListRequest {
                epoch: map.epoch,
                pool: pg.pool,
                pg_seed: pg.seed,
                start_after: names.last().cloned().unwrap_or_default(),
                limit: LIST_PAGE,
                pg_num: map.pools.get(&pg.pool).map_or(0, |pool| pool.pg_num),
            };
            let page = self.send_list(map, osd, request).await?.entries;
            let done = page.len() < LIST_PAGE as usize;
            names.extend(page.into_iter().map(|entry| entry.name));
            if done {
                return Ok(names);
            }
        }
    }
}

/// Runs `call` for every OSD of `osds` at once and returns each one's answer, in
/// the order they came. A call that panicked counts as that OSD's internal error.
pub async fn fan_out<T, Call, Fut>(
    osds: impl IntoIterator<Item = u32>,
    mut call: Call,
) -> Vec<(u32, Result<T>)>
where
    T: Send + 'static,
    Call: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let mut calls = JoinSet::new();
    let mut started = Vec::new();
    for osd in osds {
        let id = calls.spawn(call(osd)).id();
        started.push((id, osd));
    }
    let mut answers = Vec::with_capacity(started.len());
    while let Some(done) = calls.join_next_with_id().await {
        let (id, answer) = match done {
            Ok((id, answer)) => (id, answer),
            Err(error) => (
                error.id(),
                Err(OsdError::Internal(format!(
                    "a call to a peer failed: {error}"
                ))),
            ),
        };
        if let Some(&(_, osd)) = started.iter().find(|(started, _)| *started == id) {
            answers.push((osd, answer));
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fan_out_answers_for_every_osd_even_one_that_panics() {
        let answers = fan_out([1, 2, 3], |osd| async move {
            match osd {
                2 => Err(OsdError::Unavailable("down".into())),
                3 => panic!("osd.3's call panics"),
                _ => Ok(osd * 10),
            }
        })
        .await;
        let mut answers: Vec<(u32, std::result::Result<u32, String>)> = answers
            .into_iter()
            .map(|(osd, answer)| (osd, answer.map_err(|error| format!("{error:?}"))))
            .collect();
        answers.sort_by_key(|(osd, _)| *osd);
        assert_eq!(answers[0], (1, Ok(10)));
        assert!(matches!(&answers[1], (2, Err(error)) if error.contains("Unavailable")));
        assert!(matches!(&answers[2], (3, Err(error)) if error.contains("Internal")));
    }
}
