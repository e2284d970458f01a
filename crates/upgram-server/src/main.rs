//! `upgram-server`: the upgram reference server command: `serve`, `publish`, `promote`,
//! `rollout`, `keygen`, `key-info` and `cookie-secret`.
//!
//! Exit codes: 0 success (for `serve`: stopped by SIGTERM or Ctrl-C); 1 the catalog, a key or a
//! socket could not be loaded or bound (an address another process holds included), the
//! `--public-url` is not one clients can use, or the release could not be published, promoted
//! or changed; 2 usage error.
//! Logs go to standard error, coloured only when it is a terminal (and `NO_COLOR` is unset),
//! as text or, with `--log-format json`, one JSON object per line; `RUST_LOG` (e.g.
//! `RUST_LOG=upgram_server=debug`: an event per query and per HTTP request) sets the level.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use std::io::IsTerminal;

use clap::{Args, Parser, Subcommand, ValueEnum};
use upgram_core::sign::ReplySigner;
use upgram_core::version::Version;
use upgram_server::catalog::HaltRule;
use upgram_server::catalog::{RolloutStep, Schedule};
use upgram_server::keys;
use upgram_server::publish::{self, PublishRequest};
use upgram_server::reports::ReportsConfig;
use upgram_server::rollout::{self, Change};
use upgram_server::serve::{self, ServeOptions};
use upgram_server::server::Config;

/// The command's allocator: faster than the system's for the many small, short-lived
/// allocations of answering queries (see the `mimalloc` feature).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The upgram reference server.
#[derive(Parser)]
#[command(name = "upgram-server", version, about)]
struct Cli {
    /// How log lines on standard error look (the level is set by RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The shape of log lines.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to standard error, at the level `RUST_LOG` sets (default info).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve a catalog: UDP queries, and HTTP for payloads, fallback documents, /metrics and
    /// /healthz. Under systemd (Type=notify) it reports ready once listening.
    Serve(ServeArgs),
    /// Publish a release folder as a new release of a module in a catalog folder.
    Publish(PublishRequest),
    /// Publish a release to one more channel, without publishing it again.
    Promote {
        #[command(flatten)]
        release: ReleaseArgs,
        /// The channel to add it to.
        #[arg(long, value_name = "CHANNEL")]
        channel: String,
    },
    /// Roll a release out by a percentage or a schedule, pause, resume or withdraw it, or show
    /// where releases stand.
    #[command(subcommand)]
    Rollout(RolloutCommand),
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
    /// Make a new cookie secret, to share between every instance of a deployment.
    CookieSecret {
        /// Where to write it (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file (move the old one to --previous-cookie-secret first).
        #[arg(long)]
        force: bool,
    },
}

/// The release a `promote` or `rollout` command is about.
#[derive(Args)]
struct ReleaseArgs {
    /// The catalog folder.
    #[arg(long, value_name = "DIR")]
    catalog: PathBuf,
    /// The module id.
    #[arg(long, value_name = "ID")]
    module: String,
    /// The release's version.
    #[arg(long)]
    version: Version<'static>,
}

/// `upgram-server rollout …`.
#[derive(Subcommand)]
enum RolloutCommand {
    /// Set the share of installations offered the release: a percentage from now on, or a
    /// schedule of percentages at given times.
    Set {
        #[command(flatten)]
        release: ReleaseArgs,
        /// The percentage of installations (by rollout bucket) offered the release from now on.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=100), conflicts_with = "schedule", required_unless_present_any = ["schedule", "halt_share", "halt_window", "halt_min"])]
        percent: Option<u8>,
        /// Steps such as `1%@2026-12-01T10:00Z,10%@2026-12-02T10:00Z,100%@2026-12-03T10:00Z`.
        #[arg(long, value_name = "SCHEDULE")]
        schedule: Option<Schedule>,
        /// The failure share (0 to 1) over its last reports at which the release halts itself
        /// (default 0.2).
        #[arg(long, value_name = "SHARE")]
        halt_share: Option<f64>,
        /// How many of its most recent install reports are judged (default 50).
        #[arg(long, value_name = "N")]
        halt_window: Option<u32>,
        /// How many reports must be in before it is judged (default 20, at most the window).
        #[arg(long, value_name = "N")]
        halt_min: Option<u32>,
    },
    /// Offer the release to no installation that does not have it yet.
    Pause(ReleaseArgs),
    /// Offer the release by its schedule again.
    Resume(ReleaseArgs),
    /// Offer the release to none, and send installations on it back to the release before it
    /// (a complete, signed rollback).
    Withdraw(ReleaseArgs),
    /// Show the channels, percentage and state of a module's releases.
    Status {
        /// The catalog folder.
        #[arg(long, value_name = "DIR")]
        catalog: PathBuf,
        /// The module id.
        #[arg(long, value_name = "ID")]
        module: String,
        /// Only this release.
        #[arg(long)]
        version: Option<Version<'static>>,
        /// Where install reports are read from: sqlite:PATH, postgres://USER@HOST/DATABASE or off
        /// (default: reports.sqlite in the catalog folder, if there is one).
        #[arg(long, value_name = "STORE")]
        reports: Option<ReportsConfig>,
    },
}

/// Runs a `promote` or `rollout` command.
fn run_rollout(command: RolloutCommand) -> ExitCode {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (release, change) = match command {
        RolloutCommand::Status { catalog, module, version, reports } => {
            let reports = match reports {
                Some(reports) => reports,
                None if catalog.join(upgram_server::reports::DEFAULT_SQLITE_FILE).is_file() => ReportsConfig::Beside,
                None => ReportsConfig::Off,
            };
            let store = match reports.open(&catalog) {
                Ok(store) => store,
                Err(e) => return fail("rollout status", e),
            };
            let releases = match store {
                Some(mut store) => {
                    rollout::status_with_reports(&catalog, &module, version.as_ref(), now, store.as_mut())
                }
                None => rollout::status(&catalog, &module, version.as_ref(), now),
            };
            return match releases {
                Ok(releases) => {
                    for release in releases {
                        println!("{release}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail("rollout status", e),
            };
        }
        RolloutCommand::Set { release, percent, schedule, halt_share, halt_window, halt_min } => {
            let steps = match (percent, schedule) {
                (Some(percent), _) => Some(vec![RolloutStep { at: None, percent }]),
                (None, Some(schedule)) => Some(schedule.0),
                (None, None) => None,
            };
            if halt_share.is_some() || halt_window.is_some() || halt_min.is_some() {
                let rule = match halt_rule(&release, halt_share, halt_window, halt_min, now) {
                    Ok(rule) => rule,
                    Err(code) => return code,
                };
                if steps.is_none() {
                    return apply(release, &Change::HaltRule(rule), now);
                }
                if let Err(e) =
                    rollout::change(&release.catalog, &release.module, &release.version, &Change::HaltRule(rule), now)
                {
                    return fail("rollout", e);
                }
            }
            (release, Change::Schedule(steps.unwrap_or_default()))
        }
        RolloutCommand::Pause(release) => (release, Change::Pause),
        RolloutCommand::Resume(release) => (release, Change::Resume),
        RolloutCommand::Withdraw(release) => (release, Change::Withdraw),
    };
    apply(release, &change, now)
}

/// The release's halt rule with the flags given replacing its parts.
fn halt_rule(
    release: &ReleaseArgs,
    share: Option<f64>,
    window: Option<u32>,
    min: Option<u32>,
    now: u64,
) -> Result<HaltRule, ExitCode> {
    let current = rollout::status(&release.catalog, &release.module, Some(&release.version), now)
        .map_err(|e| fail("rollout", e))?
        .first()
        .map(|status| status.halt)
        .unwrap_or_default();
    let share_permille = match share {
        Some(share) if !(0.0..=1.0).contains(&share) => {
            return Err(fail("rollout", format!("--halt-share {share}: a share from 0 to 1, such as 0.2")));
        }
        // In range 0..=1000 by the check above.
        Some(share) => (share * 1000.0).round() as u16,
        None => current.share_permille,
    };
    Ok(HaltRule { share_permille, window: window.unwrap_or(current.window), min: min.unwrap_or(current.min) })
}

fn apply(release: ReleaseArgs, change: &Change, now: u64) -> ExitCode {
    match rollout::change(&release.catalog, &release.module, &release.version, change, now) {
        Ok(status) => {
            println!("{status}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(if matches!(change, Change::Promote { .. }) { "promote" } else { "rollout" }, e),
    }
}

/// Options of `serve`.
#[derive(Args)]
struct ServeArgs {
    /// The catalog folder (catalog.toml, modules/, store/).
    #[arg(long, value_name = "DIR")]
    catalog: PathBuf,
    /// The signing key (from `keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// UDP address to answer queries on; no other process may hold it.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7953")]
    udp: SocketAddr,
    /// HTTP address for payloads, documents, /metrics and /healthz.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7954")]
    http: SocketAddr,
    /// The URL clients reach the HTTP side (or a static copy of store/ and doc/) at, with its
    /// public host: e.g. https://updates.example.com/; `{http}` stands for the HTTP address
    /// bound (only when clients can reach it: not with --http 0.0.0.0:PORT).
    #[arg(long, value_name = "URL")]
    public_url: String,
    /// Cookie secret shared by every instance (from `cookie-secret`).
    #[arg(long, value_name = "FILE")]
    cookie_secret: Option<PathBuf>,
    /// The previous cookie secret, still accepted during a rotation.
    #[arg(long, value_name = "FILE")]
    previous_cookie_secret: Option<PathBuf>,
    /// Also write fallback documents under DIR/doc/, for a static web server or CDN.
    #[arg(long, value_name = "DIR")]
    docs_dir: Option<PathBuf>,
    /// UDP sockets and threads (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Queries per second allowed per source address (over every worker together).
    #[arg(long, value_name = "QPS", default_value_t = 200.0)]
    rate_per_source: f64,
    /// Burst of queries allowed per source address.
    #[arg(long, value_name = "N", default_value_t = 400.0)]
    burst_per_source: f64,
    /// Where install reports are stored: sqlite:PATH, postgres://USER@HOST/DATABASE, or off
    /// (reports are then acknowledged and not kept; default: reports.sqlite in the catalog
    /// folder).
    #[arg(long, value_name = "STORE")]
    reports: Option<ReportsConfig>,
    /// Seconds an answer stays valid (at most 600: the freeze window).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(60..=600))]
    validity: u64,
}

impl ServeArgs {
    fn into_options(self) -> ServeOptions {
        let workers =
            self.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        ServeOptions {
            catalog: self.catalog,
            key: self.key,
            cookie_secret: self.cookie_secret,
            previous_cookie_secret: self.previous_cookie_secret,
            udp: self.udp,
            http: self.http,
            workers,
            config: Config {
                public_url: self.public_url,
                validity_secs: self.validity,
                rate_per_source: self.rate_per_source,
                burst_per_source: self.burst_per_source,
                docs_dir: self.docs_dir,
                workers,
            },
            reports: self.reports.unwrap_or_default(),
            report_sink: None,
        }
    }
}

fn describe(signer: &ReplySigner) {
    println!("public key: {}", hex_encode(signer.verifying_key().as_bytes()));
    println!("key id:     {}", signer.key_id());
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fail(what: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("upgram-server {what}: {error}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => match serve::run(args.into_options()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail("serve", e),
        },
        Command::Publish(request) => match publish::publish(&request) {
            Ok(summary) => {
                print!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => fail("publish", e),
        },
        Command::Promote { release, channel } => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            apply(release, &Change::Promote { channel }, now)
        }
        Command::Rollout(command) => run_rollout(command),
        Command::Keygen { out, force } => match keys::generate(&out, force) {
            Ok(signer) => {
                describe(&signer);
                ExitCode::SUCCESS
            }
            Err(e) => fail("keygen", e),
        },
        Command::KeyInfo { key } => match keys::load(&key) {
            Ok(signer) => {
                describe(&signer);
                ExitCode::SUCCESS
            }
            Err(e) => fail("key-info", e),
        },
        Command::CookieSecret { out, force } => match keys::generate_secret(&out, force) {
            Ok(_) => {
                println!("cookie secret written to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail("cookie-secret", e),
        },
    }
}
