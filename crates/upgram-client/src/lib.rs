//! # upgram-client
//!
//! The client half of upgram: the library an updater embeds and the `upgram` command. It puts
//! sockets, HTTP and files around [`upgram_core`]:
//!
//! - [`client`]: the embedding API, `Client::builder().server(..).public_key(..).build()?` and
//!   `client.check(&installed).await?`;
//! - [`transport`]: exchanges over UDP with retransmission, failover and cookies;
//! - [`fetch`]: fallback documents over HTTP(S), capped and verified, through a [`fetch::Fetcher`]
//!   an embedder may replace;
//! - [`state`]: the installation's state file;
//! - [`inspect`]: decoding any datagram or document for a person to read.
//!
//! - [`apply`]: one module's file list applied all or nothing, with rollback and `recover`;
//! - [`journal`]: the append-only, checksummed journal the apply engine writes before each step;
//! - [`package`]: install packages run without a shell, under a timeout, exit codes mapped;
//! - [`paths`]: where a file id lands under the installation root, symbolic links refused;
//! - [`staging`]: payloads downloaded, resumed, capped, hash-checked and synced before use, and
//!   watched by a [`staging::Progress`] of the embedder's;
//!
//! - [`update`]: plan, stage and apply the answers: file lists, record deltas, install
//!   packages; busy modules deferred, the running `upgram` replaced by self-update;
//! - [`defer`]: deferred replacement of busy files with its triggers, the pluggable in-use check
//!   and plug-in manager, and `apply-pending`;
//! - [`selfupdate`]: the new `upgram` tested, handed over to, and swapped in once the old one
//!   has exited \[0120\].

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod apply;
pub mod client;
pub mod config;
pub mod defer;
pub mod fetch;
pub mod inspect;
pub mod journal;
mod mode;
pub mod package;
pub mod paths;
pub mod selfupdate;
pub mod staging;
pub mod state;
pub mod transport;
pub mod update;

pub use client::{CheckReport, Client, ClientBuilder, ClientError, ModuleResult};
