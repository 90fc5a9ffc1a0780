//! Whole objects in chunks: a streamed read is a read of the whole object sent
//! back in [`STREAM_CHUNK`]s, and a streamed write is assembled from the chunks a
//! client sends, checked against the size it announced, then written whole.

use lcpfs_proto::connections::STREAM_CHUNK;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{DataChunk, ObjectOp, OpReply, OpRequest, ReadRange, op_result};

use super::request::op;
use super::write::too_big;
use crate::error::{OsdError, Result};
use crate::node::Node;

/// Reads a whole object for a streamed read; returns its data and the epoch.
pub async fn read_whole(node: &Node, mut request: OpRequest) -> Result<(Vec<u8>, u64)> {
    if !request.ops.is_empty() {
        return Err(OsdError::Invalid(
            "a streamed read names only the object: it reads the whole of it".into(),
        ));
    }
    request.ops = vec![ObjectOp {
        op: Some(Op::Read(ReadRange {
            offset: 0,
            length: 0,
        })),
    }];
    let reply = op(node, request).await?;
    let Some(op_result::Result::Data(data)) = reply
        .results
        .into_iter()
        .next()
        .and_then(|result| result.result)
    else {
        return Err(OsdError::Internal(
            "the read of the object returned no data".into(),
        ));
    };
    Ok((data, reply.epoch))
}

/// The chunks of a streamed read: the first carries the object's size and the
/// epoch; an empty object is one empty chunk.
pub fn chunks(data: &[u8], epoch: u64) -> Vec<DataChunk> {
    let mut chunks: Vec<DataChunk> = data
        .chunks(STREAM_CHUNK)
        .map(|piece| DataChunk {
            request: None,
            size: 0,
            epoch,
            data: piece.to_vec(),
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(DataChunk {
            request: None,
            size: 0,
            epoch,
            data: Vec::new(),
        });
    }
    chunks[0].size = data.len() as u64;
    chunks
}

/// A streamed write being received.
pub struct Assembly {
    request: OpRequest,
    size: u64,
    data: Vec<u8>,
}

impl Assembly {
    /// Starts from the stream's first chunk, which names the object and its size
    /// (at most `limit` bytes).
    pub fn begin(first: DataChunk, limit: u64) -> Result<Self> {
        let request = first.request.ok_or_else(|| {
            OsdError::Invalid("the first chunk of a write stream carries no request".into())
        })?;
        if !request.ops.is_empty() {
            return Err(OsdError::Invalid(
                "a streamed write names only the object: it replaces the whole of it".into(),
            ));
        }
        if first.size > limit {
            return Err(too_big(first.size, limit));
        }
        let mut assembly = Assembly {
            request,
            size: first.size,
            data: Vec::with_capacity(first.size as usize),
        };
        assembly.push(&first.data)?;
        Ok(assembly)
    }

    /// Takes the next chunk's data.
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        self.data.extend_from_slice(data);
        if self.data.len() as u64 > self.size {
            return Err(OsdError::Invalid(format!(
                "the write stream sent more than the {} bytes it announced; nothing was written",
                self.size
            )));
        }
        Ok(())
    }

    /// Writes the object once the stream has ended.
    pub async fn finish(self, node: &Node) -> Result<OpReply> {
        if self.data.len() as u64 != self.size {
            return Err(OsdError::Invalid(format!(
                "the write stream ended after {} of the {} bytes it announced; nothing was written",
                self.data.len(),
                self.size
            )));
        }
        let mut request = self.request;
        request.ops = vec![ObjectOp {
            op: Some(Op::WriteFull(self.data)),
        }];
        op(node, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(size: u64, data: &[u8]) -> DataChunk {
        DataChunk {
            request: Some(OpRequest::default()),
            size,
            epoch: 0,
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_read_streams_in_chunks_whose_first_names_the_size() {
        let data = vec![7u8; STREAM_CHUNK * 2 + 5];
        let chunks = chunks(&data, 9);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].size, data.len() as u64);
        assert!(chunks[1..].iter().all(|chunk| chunk.size == 0));
        assert_eq!(
            chunks.iter().map(|chunk| chunk.data.len()).sum::<usize>(),
            data.len()
        );
        let empty = super::chunks(&[], 9);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].data.is_empty() && empty[0].size == 0 && empty[0].epoch == 9);
    }

    #[test]
    fn a_write_stream_must_send_what_it_announced() {
        assert!(
            Assembly::begin(first(10, b"x"), 5).is_err(),
            "over the limit"
        );
        let mut no_request = first(1, b"x");
        no_request.request = None;
        assert!(Assembly::begin(no_request, 5).is_err());
        let mut assembly = Assembly::begin(first(3, b"ab"), 5).unwrap();
        assert!(assembly.push(b"cd").is_err(), "more than announced");
        let assembly = Assembly::begin(first(3, b"abc"), 5).unwrap();
        assert_eq!(assembly.data, b"abc");
    }
}
