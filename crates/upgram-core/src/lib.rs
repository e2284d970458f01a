//! # upgram-core
//!
//! The upgram protocol without I/O: it reads no socket, no file and no clock (callers pass
//! `now` in). Everything here is specified in `protocol-spec/SPEC.md`; each module names its
//! section.
//!
//! - [`wire`]: the fixed 20-byte header and the frame around the body (§3), parsed with nom;
//! - [`body`]: the XML bodies, query, response, fallback and error (§4), decoded with quick-xml,
//!   borrowing strings from the input;
//! - [`message`]: whole datagrams decoded, and the verification of signed replies (§10.4);
//! - [`fallback`]: the inline-or-URL decision and reply signing for servers (§8);
//! - [`sign`], [`cookie`]: Ed25519 reply signatures, one per answer or one per batch of answers
//!   with Merkle audit paths, and stateless anti-amplification cookies (§10);
//! - [`version`]: version syntax and total order (§6);
//! - [`records`]: record files and record deltas (§7);
//! - [`exchange`]: one query part's exchange with the servers as a state machine, for a driver
//!   that owns the socket and the clock (§2.2-§2.4);
//! - [`merge`]: splitting a query into parts that fit a datagram, and merging their answers
//!   (§2.6);
//! - [`plan`]: the upgrade planner, dependencies first (§5.6);
//! - [`limits`]: every size limit (§10.8).
//!
//! Every datagram, both directions, is at most [`limits::MAX_DATAGRAM_LEN`] = 1024 bytes: the
//! encoder refuses to write more and the decoder refuses to read more.
#![forbid(unsafe_code)]
// Library code never panics on input: no unwrap, expect or panic outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod body;
pub mod cookie;
pub mod digest;
pub mod error;
pub mod exchange;
pub mod fallback;
pub mod limits;
pub mod merge;
pub mod message;
pub mod plan;
pub mod records;
pub mod sign;
pub mod version;
pub mod wire;

pub use digest::Sha256Digest;
pub use error::{BodyError, DecodeError, EncodeError};
pub use limits::MAX_DATAGRAM_LEN;
pub use message::{Datagram, Message};
