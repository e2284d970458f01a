//! Embedding the upgram client in an updater, without the command line.
//!
//! Run: `cargo run -p upgram-client --example embed -- SERVER:PORT PUBLIC_KEY_HEX ROOT [--apply]`
//! (for instance against `upgram-server serve` on the demo catalog, see README.md).
//!
//! It shows what an embedder does: build a [`Client`] with servers and pinned keys, open the
//! [`Installation`] (read-only to look, with its lock to change it — opening with the lock also
//! repairs whatever a crash interrupted), check it, act on the typed per-module results (here:
//! print them and the plan, dependencies first), and with `--apply` run the same update as
//! `upgram update --yes`, with the default hooks. An embedder with its own HTTP stack passes it
//! with `.fetcher(..)` (any type implementing `upgram_client::fetch::Fetcher`).

use std::net::SocketAddr;
use std::path::PathBuf;

use upgram_client::flows::{self, Optional, Outcome, plan_lines};
use upgram_client::hooks::Hooks;
use upgram_client::{Client, Installation};
use upgram_core::plan::Choice;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(server), Some(key), Some(root)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: embed SERVER:PORT PUBLIC_KEY_HEX ROOT [--apply]");
        std::process::exit(2);
    };
    let apply = args.next().as_deref() == Some("--apply");
    let server: SocketAddr = server.parse()?;
    let key = upgram_client::config::parse_public_key(&key)?;
    let root = PathBuf::from(root);
    let client = Client::builder().server(server).public_key(key).build()?;

    if !apply {
        let installation = Installation::open_read_only(&root)?;
        let report = flows::check(&installation, &client).await?;
        let state = installation.state();
        for result in report.results(&state) {
            println!(
                "{:<16} {:>8} -> {:<8} {:?} {}",
                result.id,
                result.installed.as_deref().unwrap_or("-"),
                result.latest.as_deref().unwrap_or("-"),
                result.status,
                result.how
            );
        }
        for (i, step) in plan_lines(&report.modules(), &state, &Choice::All)?.iter().enumerate() {
            println!("step {}: {} -> {}", i + 1, step.id, step.to);
        }
        return Ok(());
    }

    let installation = Installation::open_locked(&root)?;
    let report = flows::update(&installation, &client, Optional::Take, false, &Hooks::default()).await?;
    for line in &report.outcomes {
        match &line.outcome {
            Outcome::Upgraded(from, to) => println!("{}: {} -> {to}", line.id, from.as_deref().unwrap_or("-")),
            other => println!("{}: {other:?}", line.id),
        }
    }
    Ok(())
}
