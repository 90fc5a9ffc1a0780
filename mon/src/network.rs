//! Raft between monitors over gRPC (`MonRaft` in `proto/lcpfs/v1/mon.proto`).
//!
//! openraft's messages travel JSON-encoded in a `RaftPayload`; the receiving monitor
//! hands them to its Raft and returns openraft's reply (or its error) the same way.
//!
//! It also holds what every monitor gRPC connection shares, served or dialled: the
//! [`channel`] to another monitor and the [`MAX_MESSAGE`] size limit.

use lcpfs_proto::RaftPayload;
use lcpfs_proto::mon_raft_client::MonRaftClient;
use lcpfs_proto::tls::{self, Tls};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::types::{MonNode, TypeConfig};

/// Largest gRPC message a monitor sends or accepts (a full map of a large cluster, a
/// snapshot chunk).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Makes a [`PeerClient`] per peer monitor, over mutual TLS when `tls` is given.
#[derive(Clone, Default)]
pub struct Network {
    pub tls: Option<Tls>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &MonNode) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            channel: channel(&node.addr, self.tls.as_ref()),
        }
    }
}

/// A lazily connected gRPC channel to `addr` (`host:port`); `None` if the address
/// cannot be a URI, which then surfaces as an unreachable peer.
pub fn channel(addr: &str, tls: Option<&Tls>) -> Option<Channel> {
    tls::endpoint(addr, tls).ok().map(|endpoint| {
        endpoint
            .connect_timeout(std::time::Duration::from_secs(1))
            .timeout(std::time::Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_lazy()
    })
}

/// The Raft connection to one peer monitor.
pub struct PeerClient {
    target: u64,
    node: MonNode,
    channel: Option<Channel>,
}

type RpcResult<T, E> = Result<T, RPCError<u64, MonNode, RaftError<u64, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(channel) = self.channel.clone() else {
            let error = std::io::Error::other(format!("bad monitor address {:?}", self.node.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        };
        let mut client = MonRaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let payload = RaftPayload {
            json: serde_json::to_vec(request)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?,
        };
        let call = async {
            match kind {
                Rpc::Append => client.append_entries(payload).await,
                Rpc::Vote => client.vote(payload).await,
                Rpc::Snapshot => client.install_snapshot(payload).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown => {
                        RPCError::Unreachable(Unreachable::new(&status))
                    }
                    _ => RPCError::Network(NetworkError::new(&status)),
                });
            }
            Err(elapsed) => return Err(RPCError::Unreachable(Unreachable::new(&elapsed))),
        };
        let result: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&reply.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|error| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                error,
            ))
        })
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
