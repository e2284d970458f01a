//! # upgram-client
//!
//! The client half of upgram: the library an updater embeds and the `upgram` command. It puts
//! sockets, HTTP and files around [`upgram_core`]. So far it has [`inspect`]: decoding any
//! datagram or document for a person to read. Transport, verification, state and the apply
//! engine follow (issues 4 and 5).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod inspect;
