//! Client operations at a PG's primary: a request names one object and a list of
//! operations; its mutations run first ([`write`]), as one log entry on every up
//! copy, then its reads ([`read`]). Listings page through a PG ([`list`]), and
//! whole objects stream in chunks ([`stream`]).
//!
//! Every path checks the request, follows the map to the sender's epoch, refuses
//! a request for a PG this OSD does not lead, and reaches the pool's kind only
//! through its [`Backend`](crate::backend::Backend).

pub mod list;
pub mod read;
pub mod request;
pub mod stream;
pub mod write;

pub use request::op;
