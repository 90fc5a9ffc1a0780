//! Connections to OSDs by address, made once and shared: the client library and
//! every OSD (for its peers) reach OSDs through one [`OsdConnections`].
//!
//! A connection is lazy (made on first use, remade after a failure by tonic's
//! channel), without Nagle's delay, and allows messages up to [`OSD_MAX_MESSAGE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;

use crate::osd_client::OsdClient;
use crate::tls::{self, Tls};

/// Largest gRPC message of the OSD protocol, either way.
pub const OSD_MAX_MESSAGE: usize = 256 << 20;

/// Bytes per message of a streamed object (`ReadStream`, `WriteStream`).
pub const STREAM_CHUNK: usize = 4 << 20;

/// A cache of connections to OSDs, by the address the map gives them.
pub struct OsdConnections {
    tls: Option<Tls>,
    /// How long one call may take (`None`: as long as the caller waits).
    call_timeout: Option<Duration>,
    clients: Mutex<HashMap<String, OsdClient<Channel>>>,
}

impl OsdConnections {
    /// Connections with mutual TLS (`tls`) or plain ones; each call may take up to
    /// `call_timeout`.
    pub fn new(tls: Option<Tls>, call_timeout: Option<Duration>) -> Self {
        OsdConnections {
            tls,
            call_timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A client of the OSD at `addr` (`HOST:PORT`), made on first use.
    pub fn get(&self, addr: &str) -> Result<OsdClient<Channel>, tonic::transport::Error> {
        let mut clients = self.clients.lock().expect("OSD connection table");
        if let Some(client) = clients.get(addr) {
            return Ok(client.clone());
        }
        let mut endpoint = tls::endpoint(addr, self.tls.as_ref())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        if let Some(timeout) = self.call_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let client = OsdClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(OSD_MAX_MESSAGE)
            .max_encoding_message_size(OSD_MAX_MESSAGE);
        clients.insert(addr.to_owned(), client.clone());
        Ok(client)
    }
}
