//! `upgram-server`: the upgram reference server command. So far: `keygen` and `key-info`.
//!
//! Exit codes: 0 success; 1 the key file could not be made or read; 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use upgram_core::sign::ReplySigner;
use upgram_server::keys;

/// The upgram reference server.
#[derive(Parser)]
#[command(name = "upgram-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new Ed25519 signing key; prints the public key clients pin.
    Keygen {
        /// Where to write the key (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Print the public key and key id of a key file.
    KeyInfo {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
}

fn describe(signer: &ReplySigner) {
    println!(
        "public key: {}",
        hex_encode(signer.verifying_key().as_bytes())
    );
    println!("key id:     {}", signer.key_id());
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Keygen { out, force } => keys::generate(&out, force),
        Command::KeyInfo { key } => keys::load(&key),
    };
    match outcome {
        Ok(signer) => {
            describe(&signer);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upgram-server: {e}");
            ExitCode::from(1)
        }
    }
}
