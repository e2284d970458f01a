//! Embedding the upgram client in an updater, without the CLI (C11).
//!
//! Run: `cargo run -p upgram-client --example embed -- SERVER:PORT PUBLIC_KEY_HEX [STATE.json]`
//! (for instance against `upgram-server serve` on the demo catalog, see README.md). With no
//! state file it asks about one module, `main-program` at 1.0.
//!
//! It shows the three things an embedder does: build a [`Client`] with servers and pinned
//! keys, [`Client::check`] an installation, and act on the typed per-module results — here by
//! printing them, then planning the upgrades (`update::plan_lines`, over the core planner). An embedder with its own
//! HTTP stack passes it with `.fetcher(..)` (any type implementing `upgram_client::fetch::Fetcher`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use upgram_client::Client;
use upgram_client::state::{InstalledModule, InstalledState};
use upgram_client::update::plan_lines;
use upgram_core::plan::Choice;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(server), Some(key)) = (args.next(), args.next()) else {
        eprintln!("usage: embed SERVER:PORT PUBLIC_KEY_HEX [STATE.json]");
        std::process::exit(2);
    };
    let server: SocketAddr = server.parse()?;
    let key = upgram_client::config::parse_public_key(&key)?;

    let installed = match args.next().map(PathBuf::from) {
        Some(path) => InstalledState::load(&path)?,
        None => {
            let mut state = InstalledState::default();
            let module = InstalledModule {
                version: "1.0".into(),
                files: BTreeMap::new(),
                frequent: vec![],
                ..Default::default()
            };
            state.modules.insert("main-program".into(), module);
            state
        }
    };

    let client = Client::builder().server(server).public_key(key).build()?;
    let report = client.check(&installed).await?;
    for result in report.results(&installed) {
        println!(
            "{:<16} {:>8} -> {:<8} {:?} {}",
            result.id,
            result.installed.as_deref().unwrap_or("-"),
            result.latest.as_deref().unwrap_or("-"),
            result.status,
            result.how
        );
    }

    let answers = report.modules();
    // Dependencies first, as `upgram update` would apply them.
    for (i, step) in plan_lines(&answers, &installed, &Choice::All)?.iter().enumerate() {
        println!("step {}: {} -> {}", i + 1, step.id, step.to);
    }
    Ok(())
}
