//! # upgram-server
//!
//! The reference server of upgram: it puts sockets, HTTP, files and a catalog around
//! [`upgram_core`]. [`keys`]: making and loading the Ed25519 key that signs every reply
//! (SPEC.md §10.3); [`catalog`]: the catalog of releases in memory and on disk; [`publish`]:
//! turning release folders into catalog releases; [`rollout`]: channels, phased rollouts, pause,
//! resume and withdrawal of published releases; [`responder`]: the answer to a query;
//! [`server`]: what a worker does with one datagram, without sockets; [`documents`]: the bounded
//! store of fallback documents and their files; [`udp`], [`http`] and [`serve`]: the sockets and
//! the `serve` command around them; [`intake`]: where accepted install reports go; [`reports`]:
//! install reports stored in SQLite or PostgreSQL, and releases halted by them; [`metrics`] and
//! [`ratelimit`].

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod catalog;
pub mod documents;
mod doorkeeper;
mod durable;
pub mod http;
pub mod intake;
pub mod keys;
pub mod metrics;
pub mod publish;
pub mod ratelimit;
pub mod reports;
pub mod responder;
pub mod rollout;
pub mod serve;
pub mod server;
pub mod udp;
