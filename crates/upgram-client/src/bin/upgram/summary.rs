//! What `upgram update` and `upgram install` print: the plan of a dry run, and after a run
//! one line per planned module (outcome, versions, bytes downloaded) and a total. Each as a
//! table for people or as one JSON object for scripts, whose shape is documented in README.md
//! and kept stable.

use indicatif::HumanBytes;
use serde_json::{Value, json};
use upgram_client::flows::{ModuleOutcome, Outcome, PatchCounts, PlanLine};

use crate::output::table;
use crate::progress_bars::DownloadBars;

/// A module that `upgram install` found installed already: id and version.
pub type AlreadyInstalled = (String, String);

/// The line that says how many optional upgrades were left out, if any.
fn declined_line(declined: usize) -> Option<String> {
    (declined > 0).then(|| {
        let s = if declined == 1 { "" } else { "s" };
        format!("{declined} optional upgrade{s} not applied (pass --yes)")
    })
}

/// The plan, dependencies first: a table, or `{"dry_run": true, "modules": [...],
/// "declined": [...]}` (the optional upgrades left out).
pub fn plan(lines: &[PlanLine], declined: &[PlanLine], already: Option<&[AlreadyInstalled]>, json: bool) -> String {
    let entry = |l: &PlanLine| json!({ "id": l.id, "from": l.from, "to": l.to, "forced": l.forced });
    if json {
        let modules: Vec<Value> = lines.iter().map(entry).collect();
        let declined: Vec<Value> = declined.iter().map(entry).collect();
        let mut out = json!({ "dry_run": true, "modules": modules, "declined": declined });
        add_already(&mut out, already);
        return out.to_string();
    }
    let text = plan_table(lines);
    match declined_line(declined.len()) {
        Some(line) => with_already(format!("{text}\n{line}"), already),
        None => with_already(text, already),
    }
}

fn plan_table(lines: &[PlanLine]) -> String {
    if lines.is_empty() {
        return "nothing to do".into();
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let flags = if l.forced { "forced".to_owned() } else { String::new() };
            vec![l.id.clone(), l.from.clone().unwrap_or_else(|| "-".into()), l.to.clone(), flags]
        })
        .collect();
    table(&["MODULE", "FROM", "TO", "FLAGS"], &rows)
}

/// One module of a run's summary.
struct Row {
    id: String,
    outcome: &'static str,
    from: Option<String>,
    to: Option<String>,
    downloaded: u64,
    restart_needed: bool,
    /// The trigger a deferred module waits for.
    trigger: Option<String>,
    detail: String,
}

impl Row {
    fn new(outcome: &ModuleOutcome, lines: &[PlanLine], bars: &DownloadBars) -> Row {
        let planned = lines.iter().find(|l| l.id == outcome.id);
        let mut row = Row {
            id: outcome.id.clone(),
            outcome: "",
            from: planned.and_then(|l| l.from.clone()),
            to: planned.map(|l| l.to.clone()),
            downloaded: bars.downloaded(&outcome.id),
            restart_needed: false,
            trigger: None,
            detail: String::new(),
        };
        match &outcome.outcome {
            Outcome::Upgraded(from, to) => {
                row.outcome = if from.is_some() { "upgraded" } else { "installed" };
                (row.from, row.to) = (from.clone(), Some(to.clone()));
            }
            Outcome::UpgradedNeedsRestart(from, to) => {
                row.outcome = if from.is_some() { "upgraded" } else { "installed" };
                (row.from, row.to) = (from.clone(), Some(to.clone()));
                row.restart_needed = true;
                row.detail = "restart needed".into();
            }
            Outcome::Deferred { from, to, trigger, reason } => {
                row.outcome = "deferred";
                (row.from, row.to) = (from.clone(), Some(to.clone()));
                row.trigger = Some(trigger.to_string());
                row.detail = format!("waits for {trigger}: {reason}");
            }
            Outcome::Skipped(why) => (row.outcome, row.detail) = ("skipped", why.clone()),
            Outcome::Failed(why) => (row.outcome, row.detail) = ("failed", why.to_string()),
            _ => row.outcome = "unknown",
        }
        row
    }

    fn changed(&self) -> bool {
        matches!(self.outcome, "upgraded" | "installed")
    }
}

/// The summary of a run: a table and a total line, or one JSON object.
#[derive(Default)]
pub struct RunSummary {
    rows: Vec<Row>,
    /// Files made from binary patches, and files that fell back to the whole file.
    patches: PatchCounts,
}

impl RunSummary {
    /// The summary of `outcomes`, with the versions of the plan `lines` for modules not applied
    /// and the bytes `bars` counted.
    pub fn new(outcomes: &[ModuleOutcome], lines: &[PlanLine], bars: &DownloadBars) -> Self {
        Self { rows: outcomes.iter().map(|o| Row::new(o, lines, bars)).collect(), patches: PatchCounts::default() }
    }

    /// The summary with how binary patches went.
    pub fn with_patches(self, patches: PatchCounts) -> Self {
        Self { patches, ..self }
    }

    fn count(&self, outcome: &str) -> usize {
        self.rows.iter().filter(|r| r.outcome == outcome).count()
    }

    fn total(&self) -> u64 {
        self.rows.iter().map(|r| r.downloaded).sum()
    }

    /// The text to print: JSON, or the table and its total line (and how many optional
    /// upgrades were `declined`).
    pub fn render(&self, already: Option<&[AlreadyInstalled]>, declined: usize, json: bool) -> String {
        if json {
            return self.json(already).to_string();
        }
        let mut text = self.table();
        if let Some(line) = declined_line(declined) {
            text = format!("{text}\n{line}");
        }
        with_already(text, already)
    }

    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.outcome.into(),
                    r.from.clone().unwrap_or_else(|| "-".into()),
                    r.to.clone().unwrap_or_else(|| "-".into()),
                    HumanBytes(r.downloaded).to_string(),
                    r.detail.clone(),
                ]
            })
            .collect();
        let total = format!(
            "{} installed, {} upgraded, {} deferred, {} skipped, {} failed; {} downloaded",
            self.count("installed"),
            self.count("upgraded"),
            self.count("deferred"),
            self.count("skipped"),
            self.count("failed"),
            HumanBytes(self.total()),
        );
        let total = match (self.patches.used, self.patches.fell_back) {
            (0, 0) => total,
            (used, 0) => format!("{total} ({used} files from binary patches)"),
            (used, fell_back) => {
                format!("{total} ({used} files from binary patches, {fell_back} fetched whole after a failed patch)")
            }
        };
        if rows.is_empty() {
            return format!("nothing to do\n{total}");
        }
        format!("{}\n{total}", table(&["MODULE", "OUTCOME", "FROM", "TO", "DOWNLOADED", "DETAIL"], &rows))
    }

    fn json(&self, already: Option<&[AlreadyInstalled]>) -> Value {
        let modules: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "outcome": r.outcome, "from": r.from, "to": r.to,
                    "downloaded_bytes": r.downloaded, "restart_needed": r.restart_needed, "trigger": r.trigger,
                    "detail": r.detail,
                })
            })
            .collect();
        let changed = self.rows.iter().filter(|r| r.changed()).count();
        let mut out = json!({
            "modules": modules,
            "total": {
                "installed": self.count("installed"), "upgraded": self.count("upgraded"),
                "deferred": self.count("deferred"),
                "skipped": self.count("skipped"), "failed": self.count("failed"),
                "changed": changed, "downloaded_bytes": self.total(),
                "patches_used": self.patches.used, "patches_fell_back": self.patches.fell_back,
            },
        });
        add_already(&mut out, already);
        out
    }
}

fn add_already(out: &mut Value, already: Option<&[AlreadyInstalled]>) {
    let (Some(already), Some(object)) = (already, out.as_object_mut()) else { return };
    let list: Vec<Value> = already.iter().map(|(id, version)| json!({ "id": id, "version": version })).collect();
    object.insert("already_installed".into(), Value::Array(list));
}

fn with_already(text: String, already: Option<&[AlreadyInstalled]>) -> String {
    let mut lines: Vec<String> = already
        .unwrap_or_default()
        .iter()
        .map(|(id, version)| format!("{id} is already installed ({version}): left as it is"))
        .collect();
    lines.push(text);
    lines.join("\n")
}
