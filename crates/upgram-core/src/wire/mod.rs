//! The binary layer of a datagram (SPEC.md §3): the fixed header and the frame around the body.

pub mod frame;
pub mod header;

pub use frame::{Frame, QueryOptions, trailer_len};
pub use header::{Flags, Header, MAGIC, MessageKind, PROTOCOL_VERSION, peek_version_and_id};
