//! A dependency as an operator writes it, `ID>=VERSION` (SPEC.md §5.6, `<requires id min>`):
//! the syntax of `requires = [...]` in a module file and of `publish --depends`.

use std::fmt;
use std::str::FromStr;

use upgram_core::body::value::is_valid_module_id;
use upgram_core::version::Version;

/// A module a release needs first, and its minimum version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The required module's id.
    pub module: String,
    /// The lowest acceptable version of it.
    pub min: Version<'static>,
}

impl FromStr for Requirement {
    type Err = String;

    /// Parses `ID>=VERSION`; spaces around `>=` are allowed.
    ///
    /// ```
    /// use upgram_server::catalog::Requirement;
    /// let r: Requirement = "main-module>=5.1".parse()?;
    /// assert_eq!((r.module.as_str(), r.min.as_str()), ("main-module", "5.1"));
    /// # Ok::<(), String>(())
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((module, min)) = text.split_once(">=") else {
            return Err(format!("{text:?} is not a requirement: expected ID>=VERSION, such as \"main-module>=5.1\""));
        };
        let (module, min) = (module.trim(), min.trim());
        if !is_valid_module_id(module) {
            return Err(format!("{module:?} is not a module id (1 to 128 of A-Z a-z 0-9 . _ -)"));
        }
        let min: Version<'static> = min.parse().map_err(|e| format!("{min:?} is not a version: {e}"))?;
        Ok(Requirement { module: module.to_owned(), min })
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}>={}", self.module, self.min)
    }
}
