//! Catalogs built in code, shared by the server's integration tests.
#![allow(dead_code)]

use upgram_core::Sha256Digest;
use upgram_core::records::{Record, RecordFile};
use upgram_core::version::Version;
use upgram_server::catalog::{Blob, Module, Release, ReleaseFile};

pub fn v(text: &str) -> Version<'static> {
    text.parse().expect("version")
}

pub fn blob(name: &str) -> Blob {
    Blob { sha256: Sha256Digest::of(name.as_bytes()), size: name.len() as u64 }
}

pub fn file(id: &str, version: &str) -> ReleaseFile {
    ReleaseFile { id: id.into(), version: v(version), blob: blob(&format!("{id}@{version}")), executable: false }
}

pub fn release(version: &str, files: Vec<ReleaseFile>) -> Release {
    Release::new(v(version), files)
}

pub fn module(id: &str, releases: Vec<Release>) -> Module {
    Module::new(id, releases)
}

/// An encoded record file with records `(id, content)`, ids ascending.
pub fn record_file(entries: &[(u64, &str)]) -> Vec<u8> {
    let records = entries.iter().map(|(id, content)| Record { id: *id, content: content.as_bytes() }).collect();
    RecordFile::from_records(records).expect("ids ascending, contents not empty").to_vec()
}
