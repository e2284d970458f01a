//! `upgram-server`: the upgram reference server command. So far: `keygen`, `key-info` and
//! `publish` (S2).
//!
//! Exit codes: 0 success; 1 the key file could not be made or read, or the release could not
//! be published; 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use upgram_core::sign::ReplySigner;
use upgram_server::keys;
use upgram_server::publish::{self, PublishRequest};

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
    /// Publish a release folder as a new release of a module in a catalog folder.
    Publish(PublishRequest),
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
        Command::Keygen { out, force } => keys::generate(&out, force).map(|s| describe(&s)),
        Command::KeyInfo { key } => keys::load(&key).map(|s| describe(&s)),
        Command::Publish(request) => match publish::publish(&request) {
            Ok(summary) => {
                print!("{summary}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("upgram-server publish: {e}");
                return ExitCode::from(1);
            }
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upgram-server: {e}");
            ExitCode::from(1)
        }
    }
}
