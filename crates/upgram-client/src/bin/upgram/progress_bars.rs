//! The download progress of `upgram update` and `upgram install` a bar per download on
//! standard error, drawn only when standard error is a terminal and the output is not JSON (a
//! script reading `--json`, or a log, gets no escape sequences); and, bars or not, the bytes
//! each module downloaded, for the summary.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use upgram_client::staging::{Download, Progress};

/// Bars for the downloads of one run, and the bytes downloaded per module.
pub struct DownloadBars {
    /// Where bars are drawn; `None`: no bars.
    screen: Option<MultiProgress>,
    /// The bar of each download under way, by URL.
    active: Mutex<HashMap<String, ProgressBar>>,
    /// Bytes received per module.
    downloaded: Mutex<BTreeMap<String, u64>>,
}

impl DownloadBars {
    /// Bars drawn on standard error if `draw`, else only counted.
    pub fn new(draw: bool) -> Self {
        let screen = draw.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { screen, active: Mutex::default(), downloaded: Mutex::default() }
    }

    /// The bytes the downloads of `module` received.
    pub fn downloaded(&self, module: &str) -> u64 {
        self.downloaded.lock().ok().and_then(|d| d.get(module).copied()).unwrap_or(0)
    }

    fn bar(download: &Download<'_>, resumed: u64) -> ProgressBar {
        let bar = ProgressBar::new(download.size);
        // The template is a constant; should it ever not parse, the default style still works.
        if let Ok(style) =
            ProgressStyle::with_template("{msg:24!} [{wide_bar}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>11}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        let name = if download.module.is_empty() {
            download.name.to_owned()
        } else {
            format!("{}: {}", download.module, download.name)
        };
        bar.set_message(name);
        bar.set_position(resumed);
        bar
    }
}

impl Progress for DownloadBars {
    fn started(&self, download: &Download<'_>, resumed: u64) {
        let Some(screen) = &self.screen else { return };
        let bar = screen.add(Self::bar(download, resumed));
        if let Ok(mut active) = self.active.lock() {
            active.insert(download.url.to_owned(), bar);
        }
    }

    fn advanced(&self, download: &Download<'_>, bytes: u64) {
        if let Ok(mut downloaded) = self.downloaded.lock() {
            *downloaded.entry(download.module.to_owned()).or_default() += bytes;
        }
        if let Some(bar) = self.active.lock().ok().and_then(|a| a.get(download.url).cloned()) {
            bar.inc(bytes);
        }
    }

    fn finished(&self, download: &Download<'_>, _complete: bool) {
        // The summary says how each module went; a finished bar only takes room.
        if let Some(bar) = self.active.lock().ok().and_then(|mut a| a.remove(download.url)) {
            bar.finish_and_clear();
            if let Some(screen) = &self.screen {
                screen.remove(&bar);
            }
        }
    }
}
