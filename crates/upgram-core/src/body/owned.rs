//! Owned and borrowed copies of decoded answers (SPEC.md §4.4).
//!
//! A decoded [`Response`] borrows its strings from the bytes it was decoded from. A client that
//! keeps the answers of a check after their datagrams are gone takes them with `into_owned`
//! (one allocation per string the decoder borrowed, none per string it already owned), and
//! hands them out again with `as_borrowed`, which copies no string at all.

use std::borrow::Cow;

use super::response::{
    Delta, FileAction, FileEntry, FilePatch, ModuleAnswer, Package, Payload, Requires, Response, UpgradeInfo,
};

/// `text` owned: moved if it already is, else copied once.
fn owned(text: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(text.into_owned())
}

/// `text` borrowed, whether the copy it comes from owns it or not.
fn borrowed(text: &str) -> Cow<'_, str> {
    Cow::Borrowed(text)
}

impl Response<'_> {
    /// This response with every string owned (see the module documentation).
    pub fn into_owned(self) -> Response<'static> {
        Response {
            binding: self.binding,
            base: self.base.map(owned),
            compact: self.compact,
            modules: self.modules.into_iter().map(ModuleAnswer::into_owned).collect(),
        }
    }

    /// An equal response whose strings all borrow from `self`: no string is copied.
    pub fn as_borrowed(&self) -> Response<'_> {
        Response {
            binding: self.binding,
            base: self.base.as_deref().map(borrowed),
            compact: self.compact,
            modules: self.modules.iter().map(ModuleAnswer::as_borrowed).collect(),
        }
    }
}

impl ModuleAnswer<'_> {
    /// This answer with every string owned (see the module documentation).
    pub fn into_owned(self) -> ModuleAnswer<'static> {
        ModuleAnswer {
            id: owned(self.id),
            status: self.status,
            latest: self.latest.map(|v| v.into_owned()),
            code: self.code,
            full: self.full,
            forced: self.forced,
            floor: self.floor.map(|v| v.into_owned()),
            rollback: self.rollback,
            dependency: self.dependency,
            upgrade: self.upgrade.into_owned(),
            requires: self.requires.into_iter().map(Requires::into_owned).collect(),
            frequent: self.frequent.into_iter().map(owned).collect(),
        }
    }

    /// An equal answer whose strings all borrow from `self`: no string is copied, and only a
    /// file list, a list of requirements or of frequent files allocates (its vector).
    pub fn as_borrowed(&self) -> ModuleAnswer<'_> {
        ModuleAnswer {
            id: borrowed(&self.id),
            status: self.status,
            latest: self.latest.as_ref().map(|v| v.as_borrowed()),
            code: self.code,
            full: self.full,
            forced: self.forced,
            floor: self.floor.as_ref().map(|v| v.as_borrowed()),
            rollback: self.rollback,
            dependency: self.dependency,
            upgrade: self.upgrade.as_borrowed(),
            requires: self.requires.iter().map(Requires::as_borrowed).collect(),
            frequent: self.frequent.iter().map(|file| borrowed(file)).collect(),
        }
    }
}

impl UpgradeInfo<'_> {
    fn into_owned(self) -> UpgradeInfo<'static> {
        match self {
            UpgradeInfo::None => UpgradeInfo::None,
            UpgradeInfo::Package(package) => {
                UpgradeInfo::Package(Package { payload: package.payload.into_owned(), args: package.args.map(owned) })
            }
            UpgradeInfo::Files(files) => UpgradeInfo::Files(files.into_iter().map(FileEntry::into_owned).collect()),
        }
    }

    fn as_borrowed(&self) -> UpgradeInfo<'_> {
        match self {
            UpgradeInfo::None => UpgradeInfo::None,
            UpgradeInfo::Package(package) => UpgradeInfo::Package(Package {
                payload: package.payload.as_borrowed(),
                args: package.args.as_deref().map(borrowed),
            }),
            UpgradeInfo::Files(files) => UpgradeInfo::Files(files.iter().map(FileEntry::as_borrowed).collect()),
        }
    }
}

impl FileEntry<'_> {
    fn into_owned(self) -> FileEntry<'static> {
        FileEntry {
            id: owned(self.id),
            version: self.version.into_owned(),
            action: match self.action {
                FileAction::Replace(payload) => FileAction::Replace(payload.into_owned()),
                FileAction::Delete => FileAction::Delete,
                FileAction::Incremental { payload, delta } => FileAction::Incremental {
                    payload: payload.into_owned(),
                    delta: Delta { from: delta.from.into_owned(), payload: delta.payload.into_owned() },
                },
            },
            frequent: self.frequent,
            executable: self.executable,
            patch: self.patch.map(|patch| FilePatch {
                format: owned(patch.format),
                from: patch.from.into_owned(),
                base_sha256: patch.base_sha256,
                payload: patch.payload.into_owned(),
            }),
        }
    }

    fn as_borrowed(&self) -> FileEntry<'_> {
        FileEntry {
            id: borrowed(&self.id),
            version: self.version.as_borrowed(),
            action: match &self.action {
                FileAction::Replace(payload) => FileAction::Replace(payload.as_borrowed()),
                FileAction::Delete => FileAction::Delete,
                FileAction::Incremental { payload, delta } => FileAction::Incremental {
                    payload: payload.as_borrowed(),
                    delta: Delta { from: delta.from.as_borrowed(), payload: delta.payload.as_borrowed() },
                },
            },
            frequent: self.frequent,
            executable: self.executable,
            patch: self.patch.as_ref().map(|patch| FilePatch {
                format: borrowed(&patch.format),
                from: patch.from.as_borrowed(),
                base_sha256: patch.base_sha256,
                payload: patch.payload.as_borrowed(),
            }),
        }
    }
}

impl Payload<'_> {
    fn into_owned(self) -> Payload<'static> {
        Payload { url: owned(self.url), size: self.size, sha256: self.sha256 }
    }

    fn as_borrowed(&self) -> Payload<'_> {
        Payload { url: borrowed(&self.url), size: self.size, sha256: self.sha256 }
    }
}

impl Requires<'_> {
    fn into_owned(self) -> Requires<'static> {
        Requires { id: owned(self.id), min: self.min.into_owned() }
    }

    fn as_borrowed(&self) -> Requires<'_> {
        Requires { id: borrowed(&self.id), min: self.min.as_borrowed() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sha256Digest;
    use crate::body::{Binding, Status};
    use crate::version::Version;

    /// A response with every kind of string an answer holds.
    fn rich() -> Vec<u8> {
        let v = |t: &str| Version::parse(t).unwrap().into_owned();
        let payload = |url: &str| Payload { url: url.to_owned().into(), size: 3, sha256: Sha256Digest::of(b"x") };
        let mut files = ModuleAnswer::new("files", Status::Update, Some(v("2.0")));
        files.floor = Some(v("1.5"));
        files.frequent = vec!["db/a".into()];
        files.requires = vec![Requires { id: "lib".into(), min: v("1") }];
        files.upgrade = UpgradeInfo::Files(vec![
            FileEntry {
                id: "bin/a".into(),
                version: v("2.0"),
                action: FileAction::Replace(payload("a")),
                frequent: false,
                executable: true,
                patch: Some(FilePatch {
                    format: "bsdiff".into(),
                    from: v("1.0"),
                    base_sha256: Sha256Digest::of(b"b"),
                    payload: payload("a.patch"),
                }),
            },
            FileEntry {
                id: "db/a".into(),
                version: v("2.0"),
                action: FileAction::Incremental {
                    payload: payload("db"),
                    delta: Delta { from: v("1.0"), payload: payload("db.delta") },
                },
                frequent: true,
                executable: false,
                patch: None,
            },
            FileEntry {
                id: "gone".into(),
                version: v("2.0"),
                action: FileAction::Delete,
                frequent: false,
                executable: false,
                patch: None,
            },
        ]);
        let mut package = ModuleAnswer::new("pkg", Status::Update, Some(v("3")));
        package.upgrade = UpgradeInfo::Package(Package { payload: payload("p&amp;q"), args: Some("/quiet".into()) });
        let binding = Binding { query: Sha256Digest::of(b"q"), issued: 10, expires: 20 };
        let modules = vec![files, package, ModuleAnswer::new("cur", Status::Current, Some(v("1")))];
        Response { binding, base: Some("http://h.example/".into()), compact: false, modules }.to_vec()
    }

    #[test]
    fn owned_and_borrowed_copies_equal_the_decoded_response() {
        let bytes = rich();
        let decoded = Response::decode(&bytes).unwrap();
        let owned = decoded.clone().into_owned();
        assert_eq!(owned, decoded);
        assert!(owned.modules.iter().all(|m| matches!(m.id, Cow::Owned(_))));
        let again = owned.as_borrowed();
        assert_eq!(again, decoded);
        assert!(again.modules.iter().all(|m| matches!(m.id, Cow::Borrowed(_))));
        assert_eq!(again.to_vec(), bytes, "the copies encode to the same bytes");
    }
}
