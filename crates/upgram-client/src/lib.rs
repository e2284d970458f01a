//! # upgram-client
//!
//! The client half of upgram: the library an updater embeds, and the `upgram` command (feature
//! `cli`). It puts sockets, HTTP and files around [`upgram_core`].
//!
//! Start with [`Installation`] and [`flows`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use upgram_client::flows::{self, Optional};
//! use upgram_client::{Client, Installation, hooks::Hooks};
//!
//! let client = Client::builder().server("127.0.0.1:7953".parse()?).public_key([0; 32]).build()?;
//! let installation = Installation::open_locked("/opt/app".as_ref())?; // lock, then recovery
//! let report = flows::update(&installation, &client, Optional::Take, false, &Hooks::default()).await?;
//! for line in &report.outcomes {
//!     println!("{}: {:?}", line.id, line.outcome);
//! }
//! # Ok(()) }
//! ```
//!
//! - [`installation`]: [`Installation`], the one handle on an installation: its lock, its
//!   state in memory, recovery when opened with the lock, and every change;
//! - [`flows`]: `check`, `update`, `install`, `apply_pending` and `recover`, as the `upgram`
//!   command offers them;
//! - [`hooks`]: what an embedder plugs in: the in-use check, the plug-in manager, the
//!   confirmation of optional upgrades, download progress;
//! - [`client`]: asking servers, `Client::builder().server(..).public_key(..).build()?`;
//!   [`transport`] runs the exchanges over UDP; [`fetch`] fetches over HTTP(S) through a
//!   [`fetch::Fetcher`] an embedder may replace (the reqwest one is feature `http`);
//!   [`report`] sends install reports, the outcomes of upgrade attempts;
//! - [`staging`]: payloads downloaded, resumed, capped, hash-checked and synced before use;
//! - [`apply`]: the building blocks the installation uses: the all-or-nothing engine, install
//!   packages, deferred upgrades, self-update, recovery;
//! - [`state`], [`layout`], [`journal`], [`paths`], [`fsutil`]: the bookkeeping underneath;
//! - [`inspect`]: decoding any datagram or document for a person to read;
//! - `demo` (feature `demo`): the demonstration the README's first command runs;
//! - `patch` (feature `patch`): applying a binary patch (bsdiff) to a file, bounded and checked.
//!
//! Features: `http` (default: the reqwest fetcher), `cli` (the `upgram` binary and its
//! dependencies), `demo` (the demo, with the reference server in-process), `patch` (binary
//! patches: queries ask for them and updates apply them, falling back to the whole file;
//! off by default for embedders, on with `cli`).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod apply;
pub mod client;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod failpoint;
pub mod fetch;
pub mod flows;
pub mod fsutil;
pub mod hooks;
pub mod inspect;
pub mod installation;
pub mod journal;
pub mod layout;
mod mode;
#[cfg(feature = "patch")]
pub mod patch;
pub mod paths;
pub mod report;
pub mod staging;
pub mod state;
pub mod transport;

pub use client::{CheckReport, Client, ClientBuilder, ClientError, ModuleResult};
pub use installation::{Installation, InstallationError};
