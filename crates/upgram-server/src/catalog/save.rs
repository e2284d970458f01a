//! Writing a module file, `CATALOG/modules/<id>.toml`, in the layout that
//! [`crate::catalog::load()`] reads and a person can edit: one `[[release]]` per release, oldest
//! first, each with its `[[release.file]]`, `[[release.deleted]]` and `[[release.delta]]`
//! tables.
//!
//! The file is replaced atomically: written to a hidden temporary file in `modules/`, synced,
//! renamed over the old one, and the folder synced. A reader sees the old module or the new
//! one, never a mix, and a crash at any point leaves one of the two.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use upgram_core::body::value::is_valid_module_id;

use super::error::CatalogError;
use super::load::{MODULES_DIR, module_file};
use super::model::{Blob, Module, Release};
use super::rollout::{Rollout, default_channels, format_time};
use super::store::sync_dir;
use crate::durable::{self, Replace};

/// A point in [`save_module_with`] where a crash test may stop the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaveStage {
    /// The temporary file is written and synced; the old module file is still in place.
    BeforeRename,
    /// The new module file is in place.
    AfterRename,
}

/// Writes `module` to `dir/modules/<id>.toml` atomically (creating `modules/` if needed).
pub fn save_module(dir: &Path, module: &Module) -> Result<(), CatalogError> {
    save_module_with(dir, module, &|_| {})
}

/// [`save_module`], calling `at` at each [`SaveStage`].
pub(crate) fn save_module_with(dir: &Path, module: &Module, at: &dyn Fn(SaveStage)) -> Result<(), CatalogError> {
    if !is_valid_module_id(&module.id) {
        return Err(CatalogError::Layout {
            file: module_file(&module.id),
            message: format!("{:?} is not a module id", module.id),
        });
    }
    let folder = dir.join(MODULES_DIR);
    fs::create_dir_all(&folder).map_err(CatalogError::io(&folder))?;
    let name = format!("{}.toml", module.id);
    replace_file(&folder, &name, render_module(module).as_bytes(), at)
}

/// Replaces `folder/name` with `bytes` atomically and durably: a hidden temporary file in the
/// same folder, written, synced, renamed over the old file, then the folder synced.
pub(crate) fn replace_file(
    folder: &Path,
    name: &str,
    bytes: &[u8],
    at: &dyn Fn(SaveStage),
) -> Result<(), CatalogError> {
    let temp = durable::write_temp(folder, name, bytes, None).map_err(CatalogError::from_write)?;
    at(SaveStage::BeforeRename);
    durable::place(&temp, &folder.join(name), Replace::Overwrite).map_err(CatalogError::from_write)?;
    at(SaveStage::AfterRename);
    sync_dir(folder)
}

/// The TOML text of a module file.
pub(crate) fn render_module(module: &Module) -> String {
    let mut out = String::new();
    out.push_str("# upgram module file: written by `upgram-server publish`, checked on load.\n");
    out.push_str("# Releases oldest first; a file's version is the release that last changed it.\n");
    line(&mut out, "id", &string(&module.id));
    if !module.frequent.is_empty() {
        line(&mut out, "frequent", &strings(&module.frequent));
    }
    for release in &module.releases {
        render_release(&mut out, release);
    }
    out
}

fn render_release(out: &mut String, release: &Release) {
    out.push_str("\n[[release]]\n");
    line(out, "version", &string(release.version.as_str()));
    for (key, set) in [("forced", release.forced), ("full", release.full), ("rollback", release.rollback)] {
        if set {
            line(out, key, "true");
        }
    }
    if release.channels != default_channels() {
        line(out, "channels", &strings(&release.channels));
    }
    if release.rollout != Rollout::default() {
        let mut table = format!("state = {}", string(release.rollout.state.as_str()));
        if !release.rollout.schedule.is_empty() {
            let steps: Vec<String> = release
                .rollout
                .schedule
                .iter()
                .map(|step| match step.at {
                    Some(at) => format!("{{ percent = {}, at = {} }}", step.percent, format_time(at)),
                    None => format!("{{ percent = {} }}", step.percent),
                })
                .collect();
            let _ = write!(table, ", schedule = [{}]", steps.join(", "));
        }
        if let Some(halt) = release.rollout.halt {
            let _ = write!(
                table,
                ", halt = {{ share = {:?}, window = {}, min = {} }}",
                f64::from(halt.share_permille) / 1000.0,
                halt.window,
                halt.min
            );
        }
        if let Some(at) = release.rollout.resumed {
            let _ = write!(table, ", resumed = {}", format_time(at));
        }
        line(out, "rollout", &format!("{{ {table} }}"));
    }
    if !release.requires.is_empty() {
        let requires: Vec<String> = release.requires.iter().map(|(id, min)| format!("{id}>={min}")).collect();
        line(out, "requires", &strings(&requires));
    }
    if let Some(package) = &release.package {
        let mut table = blob_fields(&package.blob);
        if let Some(args) = &package.args {
            let _ = write!(table, ", args = {}", string(args));
        }
        line(out, "package", &format!("{{ {table} }}"));
    }
    for file in &release.files {
        out.push_str("\n[[release.file]]\n");
        line(out, "id", &string(&file.id));
        line(out, "version", &string(file.version.as_str()));
        blob_lines(out, &file.blob);
        if file.executable {
            line(out, "executable", "true");
        }
    }
    for deleted in &release.deleted {
        out.push_str("\n[[release.deleted]]\n");
        line(out, "id", &string(&deleted.id));
        line(out, "version", &string(deleted.version.as_str()));
    }
    for delta in &release.deltas {
        out.push_str("\n[[release.delta]]\n");
        line(out, "file", &string(&delta.file));
        line(out, "from", &string(delta.from.as_str()));
        blob_lines(out, &delta.blob);
    }
    for patch in &release.patches {
        out.push_str("\n[[release.patch]]\n");
        line(out, "file", &string(&patch.file));
        line(out, "from", &string(patch.from.as_str()));
        line(out, "base_sha256", &string(&patch.base_sha256.to_hex()));
        blob_lines(out, &patch.blob);
    }
}

fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

fn blob_lines(out: &mut String, blob: &Blob) {
    line(out, "sha256", &string(&blob.sha256.to_hex()));
    line(out, "size", &blob.size.to_string());
}

fn blob_fields(blob: &Blob) -> String {
    format!("sha256 = {}, size = {}", string(&blob.sha256.to_hex()), blob.size)
}

fn strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
