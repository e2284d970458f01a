//! `upgram`: the upgram client command. So far: `upgram inspect FILE|-`.
//!
//! Exit codes: 0 success; 1 the input is not an upgram datagram or body; 2 usage or I/O error.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The upgram client.
#[derive(Parser)]
#[command(name = "upgram", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a datagram (binary or hex) or an XML body and print what it says, as JSON.
    /// Signatures are shown, not verified.
    Inspect {
        /// The file to read, or `-` for standard input.
        input: PathBuf,
    },
}

fn read_input(path: &PathBuf) -> std::io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(path)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { input } => {
            let bytes = match read_input(&input) {
                Ok(bytes) => bytes,
                Err(e) => {
                    eprintln!("upgram inspect: cannot read {}: {e}", input.display());
                    return ExitCode::from(2);
                }
            };
            match upgram_client::inspect::inspect(&bytes) {
                Ok(value) => {
                    // A closed pipe (`| head`) is not an error of ours.
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "{}",
                        serde_json::to_string_pretty(&value).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("upgram inspect: {}: {e}", input.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}
