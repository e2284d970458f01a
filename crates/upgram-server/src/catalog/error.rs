//! Why a catalog folder could not be loaded or written: every error names the file, and
//! where it applies the line and the field, so that a person editing the catalog by hand can go
//! straight to the mistake.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a catalog could not be loaded, or a module or blob not written.
///
/// `file` is the path of the offending file relative to the catalog folder
/// (`modules/core.toml`, `catalog.toml`), as a person reads it next to the folder they passed;
/// [`CatalogError::Io`] carries the full path it failed on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// Reading or writing a file or folder failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape: a syntax error, a key the format does not
    /// know, a missing key, or a value of the wrong type (the TOML parser's own diagnosis).
    #[error("{}:{line}: {}{message}", file.display(), FieldOf(field.as_deref(), table.as_deref()))]
    Syntax {
        /// The file, relative to the catalog folder.
        file: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The key the error is at, when the line shows one.
        field: Option<String>,
        /// The table the key belongs to (`[[release.file]]`), when not the top level.
        table: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but means nothing valid: a bad version or id, releases out of
    /// order, a blob missing from the store, a size that does not match…
    #[error("{}:{line}: {}{message}", file.display(), FieldOf(Some(field), table.as_deref()))]
    Invalid {
        /// The file, relative to the catalog folder.
        file: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The key holding the value.
        field: String,
        /// The table the key belongs to (`[[release]]`), when not the top level.
        table: Option<String>,
        /// What is wrong with the value.
        message: String,
    },
    /// An entry of the catalog folder that has no place in the layout (a module file whose
    /// name is not `<module id>.toml`, a folder where a file belongs).
    #[error("{}: {message}", file.display())]
    Layout {
        /// The entry, relative to the catalog folder.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl CatalogError {
    /// The file the error is about (relative to the catalog folder, except for I/O errors).
    pub fn file(&self) -> &Path {
        match self {
            Self::Io { path, .. } => path,
            Self::Syntax { file, .. } | Self::Invalid { file, .. } | Self::Layout { file, .. } => file,
        }
    }

    /// The line the error is at, when it is about a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => Some(*line),
            Self::Io { .. } | Self::Layout { .. } => None,
        }
    }

    /// The field the error is about, when known.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Syntax { field, .. } => field.as_deref(),
            Self::Invalid { field, .. } => Some(field),
            Self::Io { .. } | Self::Layout { .. } => None,
        }
    }

    /// Wraps an I/O error on `path`.
    pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> CatalogError + '_ {
        move |source| CatalogError::Io { path: path.to_owned(), source }
    }
}

/// Renders "field `version` of [[release]]: " (or nothing when the field is unknown).
struct FieldOf<'a>(Option<&'a str>, Option<&'a str>);

impl fmt::Display for FieldOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self(None, None) => Ok(()),
            Self(None, Some(table)) => write!(f, "in {table}: "),
            Self(Some(field), None) => write!(f, "field `{field}`: "),
            Self(Some(field), Some(table)) => write!(f, "field `{field}` of {table}: "),
        }
    }
}
