//! What the `upgram` commands print: plain tables for people, or one JSON object for scripts
//! (shapes in README.md; fields may be added, none removed).

use std::io::Write;

use serde_json::{Value, json};
use upgram_client::apply::defer::PendingOutcome;
use upgram_client::apply::recovery::Recovered;
use upgram_client::state::InstalledState;
use upgram_client::{CheckReport, ModuleResult};

/// Prints a line on standard output; a closed pipe (`| head`) is not an error of ours.
pub fn print_line(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A plain table: a header, then rows, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// A check's results: a table, or `{"modules": [...], "exchanges", "inline", "fallbacks"}`:
/// query datagrams sent, answers that came inline, answers that came as fallback documents.
pub fn check(results: &[ModuleResult], report: &CheckReport, json: bool) -> String {
    if json {
        let modules: Vec<Value> = results
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "installed": r.installed, "latest": r.latest, "status": r.status.name(),
                    "how": r.how, "forced": r.forced, "dependency": r.dependency,
                    "downgrade_refused": r.downgrade_refused,
                })
            })
            .collect();
        return json!({
            "modules": modules, "exchanges": report.exchanges, "inline": report.inline(),
            "fallbacks": report.fallbacks,
        })
        .to_string();
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let flags: Vec<&str> =
                [(r.forced, "forced"), (r.dependency, "dependency"), (r.downgrade_refused, "downgrade-refused")]
                    .into_iter()
                    .filter_map(|(on, name)| on.then_some(name))
                    .collect();
            vec![
                r.id.clone(),
                r.installed.clone().unwrap_or_else(|| "-".into()),
                r.latest.clone().unwrap_or_else(|| "-".into()),
                r.status.name().into(),
                r.how.clone(),
                flags.join(","),
            ]
        })
        .collect();
    table(&["MODULE", "INSTALLED", "LATEST", "STATUS", "HOW", "FLAGS"], &rows)
}

/// What is installed and what waits: tables, or `{"modules": [...], "pending": [...]}` (without
/// the cookies of the state file).
pub fn status(state: &InstalledState, interrupted: &[String], json: bool) -> String {
    if json {
        let modules: Vec<Value> = state
            .modules
            .iter()
            .map(|(id, m)| {
                let files: Vec<Value> = m
                    .files
                    .iter()
                    .map(|(file, f)| json!({ "id": file, "version": f.version, "sha256": f.sha256 }))
                    .collect();
                json!({
                    "id": id, "version": m.version, "files": files, "frequent": m.frequent,
                    "restart_needed": m.restart_needed, "interrupted": m.interrupted,
                })
            })
            .collect();
        let pending: Vec<Value> = state
            .pending
            .iter()
            .map(|(id, p)| {
                json!({ "id": id, "to": p.after.version, "trigger": p.trigger.name(), "busy": p.busy, "waits_for": p.waits_for })
            })
            .collect();
        return json!({ "modules": modules, "pending": pending, "unfinished": interrupted }).to_string();
    }
    let rows: Vec<Vec<String>> = state
        .modules
        .iter()
        .map(|(id, m)| vec![id.clone(), m.version.clone(), m.files.len().to_string(), m.frequent.join(" ")])
        .collect();
    let mut out = table(&["MODULE", "VERSION", "FILES", "FREQUENT FILES"], &rows);
    if !state.pending.is_empty() {
        let rows: Vec<Vec<String>> = state
            .pending
            .iter()
            .map(|(id, p)| {
                let why = if p.waits_for.is_empty() {
                    format!("in use: {}", p.busy.join(", "))
                } else {
                    format!("waits for {}", p.waits_for.join(", "))
                };
                vec![id.clone(), p.after.version.clone(), p.trigger.to_string(), why]
            })
            .collect();
        out.push_str("\n\npending upgrades (`upgram apply-pending` completes them):\n");
        out.push_str(&table(&["MODULE", "TO", "TRIGGER", "WHY"], &rows));
    }
    if !interrupted.is_empty() {
        out.push_str(&format!(
            "\n\nunfinished upgrades, interrupted by a crash (`upgram recover` repairs them): {}",
            interrupted.join(", ")
        ));
    }
    out
}

/// What `recover` did: a line, a table, or `{"recovered": [{"module", "action"}]}`.
pub fn recovered(done: &[Recovered], json: bool) -> String {
    if json {
        let list: Vec<Value> = done.iter().map(|r| json!({ "module": r.module(), "action": r.action() })).collect();
        return json!({ "recovered": list }).to_string();
    }
    if done.is_empty() {
        return "nothing to recover".into();
    }
    let rows: Vec<Vec<String>> = done.iter().map(|r| vec![r.module().to_owned(), r.action().to_owned()]).collect();
    table(&["MODULE", "ACTION"], &rows)
}

/// What `apply-pending` did: a table, or `{"modules": [{"module", "outcome", "detail"}]}`.
pub fn pending(outcomes: &[PendingOutcome], json: bool) -> String {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let (outcome, detail) = match o {
                PendingOutcome::Applied { version, .. } => ("applied", format!("now {version}")),
                PendingOutcome::Waiting { reason, .. } => ("waiting", reason.to_string()),
                PendingOutcome::Failed { error, .. } => ("failed", error.to_string()),
                _ => ("unknown", String::new()),
            };
            vec![o.module().to_owned(), outcome.to_owned(), detail]
        })
        .collect();
    if json {
        let list: Vec<Value> =
            rows.iter().map(|r| json!({ "module": r[0], "outcome": r[1], "detail": r[2] })).collect();
        return json!({ "modules": list }).to_string();
    }
    if rows.is_empty() {
        return "nothing pending".into();
    }
    table(&["MODULE", "OUTCOME", "DETAIL"], &rows)
}
