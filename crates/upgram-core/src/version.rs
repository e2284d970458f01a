//! TEMPORARY placeholder; replaced by the real module.
use serde::{Serialize, Serializer};
use std::borrow::Cow;
/// v
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version<'a>(Cow<'a, str>);
/// e
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad version {0}")]
pub struct VersionError(String);
impl<'a> Version<'a> {
    /// p
    pub fn parse(text: &'a str) -> Result<Self, VersionError> {
        Self::from_cow(Cow::Borrowed(text))
    }
    /// p
    pub fn from_cow(text: Cow<'a, str>) -> Result<Self, VersionError> {
        if text.is_empty()
            || text.len() > 64
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(VersionError(text.into_owned()));
        }
        Ok(Self(text))
    }
    /// s
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// o
    pub fn into_owned(self) -> Version<'static> {
        Version(Cow::Owned(self.0.into_owned()))
    }
}
impl std::fmt::Display for Version<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl Serialize for Version<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
