//! The OSD's gRPC service: thin handlers that check the caller's certificate where
//! a call is for OSDs only, decode, call the layer that does the work ([`crate::ops`]
//! for clients, [`crate::replica`] for peers, [`crate::scrub`]), and encode. An
//! [`OsdError`](crate::error::OsdError) becomes a status here, in [`status`], and
//! nowhere else.

pub mod status;

use std::future::Future;
use std::sync::Arc;

use lcpfs_core::pg::PgId;
use lcpfs_proto::osd_server::Osd;
use lcpfs_proto::tls;
use lcpfs_proto::{
    DataChunk, EcCommitReply, EcCommitRequest, EchoMessage, LeaseReply, LeaseRequest, ListReply,
    ListRequest, OpReply, OpRequest, PgInfoReply, PgLogReply, PgLogRequest, PgRef, PullReply,
    PullRequest, PushReply, PushRequest, ReadShardReply, ReadShardRequest, ReplicateReply,
    ReplicateRequest, ScrubMapReply, ScrubMapRequest, ScrubReply, ScrubRequest,
};
use tonic::{Request, Response, Status, Streaming};

use crate::error::OsdError;
use crate::node::{self, Node};
use crate::ops::{self, stream};
use crate::pg::entry;
use crate::{lease, replica, scrub};

/// The OSD protocol served over a [`Node`].
pub struct OsdServer {
    node: Arc<Node>,
}

impl OsdServer {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        OsdServer { node }
    }

    /// Runs a handler's work on the node, on a task of its own, to its end: a
    /// caller that gives up (a timeout, a dropped connection) cancels only its
    /// wait, never a change half-made to a PG (its lock would be released while
    /// the store work it started still runs, and the next request could
    /// interleave with it).
    async fn to_completion<T, Work>(
        &self,
        work: impl FnOnce(Arc<Node>) -> Work,
    ) -> Result<T, OsdError>
    where
        T: Send + 'static,
        Work: Future<Output = Result<T, OsdError>> + Send + 'static,
    {
        tokio::spawn(work(self.node.clone()))
            .await
            .map_err(|error| OsdError::Internal(format!("a request's task failed: {error}")))?
    }
}

/// A handler's answer.
fn reply<T>(result: Result<T, OsdError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Osd for OsdServer {
    async fn op(&self, request: Request<OpRequest>) -> Result<Response<OpReply>, Status> {
        let request = request.into_inner();
        reply(
            self.to_completion(|node| async move { ops::op(&node, request).await })
                .await,
        )
    }

    type ReadStreamStream = tokio_stream::Iter<std::vec::IntoIter<Result<DataChunk, Status>>>;

    async fn read_stream(
        &self,
        request: Request<OpRequest>,
    ) -> Result<Response<Self::ReadStreamStream>, Status> {
        let (data, epoch) = stream::read_whole(&self.node, request.into_inner()).await?;
        let chunks: Vec<Result<DataChunk, Status>> =
            stream::chunks(&data, epoch).into_iter().map(Ok).collect();
        Ok(Response::new(tokio_stream::iter(chunks)))
    }

    async fn write_stream(
        &self,
        request: Request<Streaming<DataChunk>>,
    ) -> Result<Response<OpReply>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the write stream sent nothing"))?;
        let mut assembly = stream::Assembly::begin(first, self.node.config.max_object_size)?;
        while let Some(chunk) = chunks.message().await? {
            assembly.push(&chunk.data)?;
        }
        reply(
            self.to_completion(|node| async move { assembly.finish(&node).await })
                .await,
        )
    }

    async fn replicate(
        &self,
        request: Request<ReplicateRequest>,
    ) -> Result<Response<ReplicateReply>, Status> {
        tls::require(&request, &["osd"], "Osd.Replicate")?;
        let request = request.into_inner();
        let epoch = self
            .to_completion(|node| async move { replica::handle_replicate(&node, request).await })
            .await;
        reply(epoch.map(|epoch| ReplicateReply { epoch }))
    }

    async fn pg_info(&self, request: Request<PgRef>) -> Result<Response<PgInfoReply>, Status> {
        tls::require(&request, &["osd"], "Osd.PgInfo")?;
        let request = request.into_inner();
        reply(
            self.to_completion(|node| async move { replica::handle_pg_info(&node, request).await })
                .await,
        )
    }

    async fn pg_log(&self, request: Request<PgLogRequest>) -> Result<Response<PgLogReply>, Status> {
        tls::require(&request, &["osd"], "Osd.PgLog")?;
        let entries = replica::handle_pg_log(&self.node, request.into_inner()).await;
        reply(entries.map(|entries| PgLogReply {
            entries: entry::to_wire(entries),
        }))
    }

    async fn pull_objects(
        &self,
        request: Request<PullRequest>,
    ) -> Result<Response<PullReply>, Status> {
        tls::require(&request, &["osd"], "Osd.PullObjects")?;
        let objects = replica::handle_pull(&self.node, request.into_inner()).await;
        reply(objects.map(|objects| PullReply { objects }))
    }

    async fn push_objects(
        &self,
        request: Request<PushRequest>,
    ) -> Result<Response<PushReply>, Status> {
        tls::require(&request, &["osd"], "Osd.PushObjects")?;
        let request = request.into_inner();
        reply(
            self.to_completion(|node| async move { replica::handle_push(&node, request).await })
                .await,
        )
    }

    async fn scrub_map(
        &self,
        request: Request<ScrubMapRequest>,
    ) -> Result<Response<ScrubMapReply>, Status> {
        tls::require(&request, &["osd"], "Osd.ScrubMap")?;
        let objects = replica::handle_scrub_map(&self.node, request.into_inner()).await;
        reply(objects.map(|objects| ScrubMapReply { objects }))
    }

    async fn scrub(&self, request: Request<ScrubRequest>) -> Result<Response<ScrubReply>, Status> {
        let request = request.into_inner();
        let pg = async {
            let map = self.node.map_at_least(request.epoch).await?;
            let pool = node::pool(&map, request.pool)?;
            node::pg_of(pool, request.pg_seed)
        };
        let pg: PgId = pg.await?;
        reply(
            self.to_completion(|node| async move {
                scrub::scrub_pg(&node, pg, request.deep, request.repair).await
            })
            .await,
        )
    }

    async fn ec_commit(
        &self,
        request: Request<EcCommitRequest>,
    ) -> Result<Response<EcCommitReply>, Status> {
        tls::require(&request, &["osd"], "Osd.EcCommit")?;
        let request = request.into_inner();
        reply(
            self.to_completion(
                |node| async move { replica::handle_ec_commit(&node, request).await },
            )
            .await,
        )
    }

    async fn read_shard(
        &self,
        request: Request<ReadShardRequest>,
    ) -> Result<Response<ReadShardReply>, Status> {
        tls::require(&request, &["osd"], "Osd.ReadShard")?;
        reply(replica::handle_read_shard(&self.node, request.into_inner()).await)
    }

    async fn lease(&self, request: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        tls::require(&request, &["osd"], "Osd.Lease")?;
        Ok(Response::new(lease::handle_lease(
            &self.node,
            request.into_inner(),
        )))
    }

    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        reply(ops::list::list(&self.node, request.into_inner()).await)
    }
}
