//! The catalog in memory (SPEC.md §5): modules, their releases, and for each release the files
//! it holds, the files it deleted, the record deltas that lead to it, its dependencies and its
//! flags. Loaded from and written to disk by [`crate::catalog::load()`] and the publisher; read by
//! the responder, which never sees the disk.

use std::collections::BTreeMap;

use upgram_core::Sha256Digest;
use upgram_core::version::Version;

use super::rollout::{Rollout, default_channels};

/// Everything the server answers from. Immutable once loaded: a reload builds a new one and
/// swaps it in whole, so a query never sees a mix of two catalogs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Catalog-wide settings.
    pub settings: Settings,
    /// Modules by id.
    pub modules: BTreeMap<String, Module>,
}

/// Catalog-wide settings (`catalog.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Critical-file patterns (\[0082\]): a release that changes a matching file is answered with
    /// its install package. Default `*.dll *.so *.dylib *.xml`.
    pub critical: Vec<String>,
    /// Record-file patterns: files in the record format (SPEC.md §7), published with deltas.
    pub record_files: Vec<String>,
    /// A file that changed in at least this many of the module's last `frequent_window`
    /// releases is frequent (\[0078\]).
    pub frequent_changes: usize,
    /// How many recent releases the frequent-file statistic looks at.
    pub frequent_window: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            critical: ["*.dll", "*.so", "*.dylib", "*.xml"].map(String::from).to_vec(),
            record_files: vec!["*.rec".into()],
            frequent_changes: 3,
            frequent_window: 5,
        }
    }
}

/// One module and its releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The module id.
    pub id: String,
    /// Releases in ascending version order (the loader sorts and rejects duplicates).
    pub releases: Vec<Release>,
    /// The module's frequently updated files, as the publisher computed them.
    pub frequent: Vec<String>,
}

/// A content-addressed payload in the store: `store/<sha256>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blob {
    /// Its SHA-256, which is also its name in the store.
    pub sha256: Sha256Digest,
    /// Its length.
    pub size: u64,
}

/// One release of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its version.
    pub version: Version<'static>,
    /// Users may not decline it; it is a floor for every later release.
    pub forced: bool,
    /// Upgrading to it replaces every file.
    pub full: bool,
    /// Clients on a newer version may be sent back to this one (a signed rollback).
    pub rollback: bool,
    /// Modules it needs first, with their minimum versions.
    pub requires: Vec<(String, Version<'static>)>,
    /// Its install package, if it has one.
    pub package: Option<Package>,
    /// Every file of the module at this release.
    pub files: Vec<ReleaseFile>,
    /// Files that existed before and are gone at this release, with the version that deleted
    /// them.
    pub deleted: Vec<DeletedFile>,
    /// Record deltas to this release's record files from their earlier versions.
    pub deltas: Vec<DeltaRef>,
    /// Binary patches to this release's files from earlier contents of them (SPEC.md §5.12).
    pub patches: Vec<PatchRef>,
    /// The channels it is published to (at least one; sorted, each once).
    pub channels: Vec<String>,
    /// Who is offered it, and since when (SPEC.md §5.10).
    pub rollout: Rollout,
}

/// An install package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The package file.
    pub blob: Blob,
    /// Arguments for the installer.
    pub args: Option<String>,
}

/// A file as it is at a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    /// File id (a relative path).
    pub id: String,
    /// The version in which its content or its executable flag last changed.
    pub version: Version<'static>,
    /// Its content.
    pub blob: Blob,
    /// It is a program: clients make it executable (SPEC.md §5.4).
    pub executable: bool,
}

/// A file deleted by a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedFile {
    /// File id.
    pub id: String,
    /// The release version that deleted it.
    pub version: Version<'static>,
}

/// A record delta document that turns one version of a record file into this release's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRef {
    /// File id.
    pub file: String,
    /// The file version it applies to.
    pub from: Version<'static>,
    /// The delta document.
    pub blob: Blob,
}

/// A binary patch (bsdiff, SPEC.md §5.12) that turns an earlier content of a file into the
/// content it has at this release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchRef {
    /// File id.
    pub file: String,
    /// The file version of the base.
    pub from: Version<'static>,
    /// The SHA-256 of the base: what a client's file must hash to for the patch to apply.
    pub base_sha256: Sha256Digest,
    /// The patch.
    pub blob: Blob,
}

impl Module {
    /// A module with `releases` (ascending) and no frequent files.
    pub fn new(id: impl Into<String>, releases: Vec<Release>) -> Self {
        Self { id: id.into(), releases, frequent: Vec::new() }
    }

    /// The newest release.
    pub fn latest(&self) -> Option<&Release> {
        self.releases.last()
    }

    /// The release with exactly this version (by the version order: `1.2` is `1.2.0`).
    pub fn release(&self, version: &Version<'_>) -> Option<&Release> {
        self.releases.iter().find(|r| r.version == *version)
    }
}

impl Release {
    /// A plain release of `files`: not forced, not full, no rollback, no dependency, no package,
    /// no deletion, no delta; on the default channel, offered to everyone.
    pub fn new(version: Version<'static>, files: Vec<ReleaseFile>) -> Self {
        Self {
            version,
            forced: false,
            full: false,
            rollback: false,
            requires: Vec::new(),
            package: None,
            files,
            deleted: Vec::new(),
            deltas: Vec::new(),
            patches: Vec::new(),
            channels: default_channels(),
            rollout: Rollout::default(),
        }
    }

    /// Whether it is published to `channel`.
    pub fn on_channel(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == channel)
    }

    /// The file with this id, if the release has it.
    pub fn file(&self, id: &str) -> Option<&ReleaseFile> {
        self.files.iter().find(|f| f.id == id)
    }
}

/// Whether `path` matches the glob `pattern`: `*` matches any run of characters (including
/// `/`), `?` any one character, ASCII letters case-insensitively (SPEC.md §5.3).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), path.as_bytes());
    // The usual pattern, `*.ext`: a suffix comparison, with no backtracking over the path.
    if let Some(suffix) = p.strip_prefix(b"*")
        && !suffix.iter().any(|&c| c == b'*' || c == b'?')
    {
        return s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
    }
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((star_p, star_s)) = star {
            pi = star_p + 1;
            si = star_s + 1;
            star = Some((star_p, star_s + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `path` matches any of `patterns`.
pub fn matches_any(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (pattern, path, expected) in [
            ("*.dll", "bin/core.DLL", true),
            ("*.dll", "bin/core.dll.bak", false),
            ("*.xml", "a.xml", true),
            ("lib/*.so", "lib/x/y.so", true),
            ("lib/?.so", "lib/ab.so", false),
            ("*", "", true),
            ("", "a", false),
            ("*a*b", "xxaxxb", true),
            ("*.DLL", "x.dll", true),
            ("*.dll", "dll", false),
            ("*.dll", "lib/part-000.dat", false),
        ] {
            assert_eq!(glob_match(pattern, path), expected, "{pattern} vs {path}");
        }
    }
}
