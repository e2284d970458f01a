//! A check from the client's side, around the exchanges: the query split into parts that each
//! fit a datagram (SPEC.md §2.6), and the answers of every part merged into one list.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use crate::body::{FileAction, ModuleAnswer, Payload, Query, QueryModule, Response, UpgradeInfo};
use crate::error::EncodeError;
use crate::limits::max_query_body_len;

/// The modules of a query: `installed` as given, then each id of `install` that `installed`
/// does not name, without a version (SPEC.md §4.3: "install it").
pub fn with_installs<'a>(mut installed: Vec<QueryModule<'a>>, install: &[&'a str]) -> Vec<QueryModule<'a>> {
    for id in install {
        if !installed.iter().any(|m| m.id == *id) {
            installed.push(QueryModule { id: Cow::Borrowed(id), version: None, files: vec![] });
        }
    }
    installed
}

/// The encoded bodies of the parts of a query about `modules`, each with room left for the
/// largest trailer the query may carry (see [`max_query_body_len`]). A module that does not fit
/// alone with all its file entries goes with as many as fit, possibly none (SPEC.md §2.6): the
/// server answers it at module level, which still covers every change.
pub fn split_query(modules: Vec<QueryModule<'_>>, nonce_bound: bool) -> Result<Vec<Vec<u8>>, EncodeError> {
    split_query_for(&Query::new(Vec::new()), modules, nonce_bound)
}

/// [`split_query`] for an installation on a channel and with a bucket: every part carries the
/// `channel` and `bucket` of `audience` (whose own modules are not used).
pub fn split_query_for<'a>(
    audience: &Query<'a>,
    modules: Vec<QueryModule<'a>>,
    nonce_bound: bool,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let room = max_query_body_len(nonce_bound);
    let modules = modules.into_iter().map(|module| fit_alone(audience, module, room)).collect();
    let parts = audience.split_modules(modules, room)?;
    Ok(parts.iter().map(Query::to_vec).collect())
}

/// `module` with as many of its file entries (in order) as let it fit `room` alone.
fn fit_alone<'a>(audience: &Query<'a>, mut module: QueryModule<'a>, room: usize) -> QueryModule<'a> {
    let alone_len = |module: &QueryModule<'a>, files: usize| {
        let mut trimmed = module.clone();
        trimmed.files.truncate(files);
        Query { channel: audience.channel.clone(), bucket: audience.bucket, modules: vec![trimmed] }.to_vec().len()
    };
    if alone_len(&module, module.files.len()) <= room {
        return module;
    }
    // The most entries that fit: the length grows with every entry kept.
    let (mut fits, mut too_many) = (0, module.files.len());
    while too_many - fits > 1 {
        let middle = fits + (too_many - fits) / 2;
        if alone_len(&module, middle) <= room { fits = middle } else { too_many = middle }
    }
    module.files.truncate(fits);
    module
}

/// Makes every payload URL of `module` absolute against `response` (SPEC.md §4.2), with
/// [`Response::resolve_url`].
pub fn resolve_urls(module: &mut ModuleAnswer<'_>, response: &Response<'_>) {
    let fix = |payload: &mut Payload<'_>| {
        let resolved = match response.resolve_url(&payload.url) {
            Cow::Owned(url) => Some(url),
            Cow::Borrowed(_) => None,
        };
        if let Some(url) = resolved {
            payload.url = Cow::Owned(url);
        }
    };
    match &mut module.upgrade {
        UpgradeInfo::Package(package) => fix(&mut package.payload),
        UpgradeInfo::Files(files) => {
            for file in files {
                match &mut file.action {
                    FileAction::Replace(payload) => fix(payload),
                    FileAction::Incremental { payload, delta } => {
                        fix(payload);
                        fix(&mut delta.payload);
                    }
                    FileAction::Delete => {}
                }
            }
        }
        UpgradeInfo::None => {}
    }
}

/// The merged module answers of the responses to every part of one query (SPEC.md §2.6),
/// ordered by module id, every payload URL absolute: a module's own answer beats a dependency
/// entry; among dependency entries the newest `issued` wins; a module listed twice in one
/// response, or listing a file twice, is dropped (a server error the client must not act on).
pub fn merge_answers<'a>(responses: impl IntoIterator<Item = Response<'a>>) -> Vec<ModuleAnswer<'a>> {
    let mut own: BTreeMap<String, ModuleAnswer<'a>> = BTreeMap::new();
    let mut dependencies: BTreeMap<String, (u64, ModuleAnswer<'a>)> = BTreeMap::new();
    for mut response in responses {
        let issued = response.binding.issued;
        let modules = std::mem::take(&mut response.modules);
        let mut seen = HashSet::new();
        let twice: HashSet<String> =
            modules.iter().filter(|m| !seen.insert(m.id.as_ref())).map(|m| m.id.to_string()).collect();
        for mut module in modules {
            let id = module.id.to_string();
            if twice.contains(&id) || lists_a_file_twice(&module) {
                continue;
            }
            resolve_urls(&mut module, &response);
            if module.dependency {
                if dependencies.get(&id).is_none_or(|(at, _)| *at < issued) {
                    dependencies.insert(id, (issued, module));
                }
            } else {
                own.insert(id, module);
            }
        }
    }
    for (id, (_, module)) in dependencies {
        own.entry(id).or_insert(module);
    }
    own.into_values().collect()
}

/// Whether the file list of `module` names a file twice.
fn lists_a_file_twice(module: &ModuleAnswer<'_>) -> bool {
    let UpgradeInfo::Files(files) = &module.upgrade else { return false };
    let mut seen = HashSet::new();
    files.iter().any(|file| !seen.insert(file.id.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sha256Digest;
    use crate::body::{Binding, FileEntry, Package, Status};
    use crate::limits::MAX_DATAGRAM_LEN;
    use crate::version::Version;
    use crate::wire::{Frame, QueryOptions};

    fn v(text: &str) -> Version<'static> {
        Version::parse(text).unwrap().into_owned()
    }

    fn response(issued: u64, base: Option<&str>, modules: Vec<ModuleAnswer<'static>>) -> Response<'static> {
        let binding = Binding { query: Sha256Digest::of(b"q"), issued, expires: issued + 300 };
        Response { binding, base: base.map(|b| Cow::Owned(b.to_owned())), modules }
    }

    fn payload(url: &str) -> Payload<'static> {
        Payload { url: Cow::Owned(url.to_owned()), size: 1, sha256: Sha256Digest::of(b"x") }
    }

    fn file(id: &str, action: FileAction<'static>) -> FileEntry<'static> {
        FileEntry { id: Cow::Owned(id.to_owned()), version: v("2"), action, frequent: false, executable: false }
    }

    #[test]
    fn own_answers_beat_dependency_entries_and_the_newest_dependency_wins() {
        let mut dep_old = ModuleAnswer::new("lib", Status::Update, Some(v("1.0")));
        dep_old.dependency = true;
        let mut dep_new = ModuleAnswer::new("lib", Status::Update, Some(v("2.0")));
        dep_new.dependency = true;
        let mut shared = ModuleAnswer::new("core", Status::Update, Some(v("9.0")));
        shared.dependency = true;
        let own_core = ModuleAnswer::new("core", Status::Current, Some(v("1.0")));
        let merged = merge_answers([
            response(200, None, vec![dep_new, shared]),
            response(100, None, vec![dep_old, own_core.clone()]),
        ]);
        let ids: Vec<_> = merged.iter().map(|m| (m.id.to_string(), m.latest.clone())).collect();
        assert_eq!(ids, vec![("core".to_owned(), Some(v("1.0"))), ("lib".to_owned(), Some(v("2.0")))]);
        assert_eq!(merged[0], own_core);
    }

    #[test]
    fn a_module_listed_twice_in_one_response_is_dropped() {
        let a = ModuleAnswer::new("twice", Status::Current, Some(v("1")));
        let b = ModuleAnswer::new("twice", Status::Update, Some(v("2")));
        let other = ModuleAnswer::new("other", Status::Current, Some(v("1")));
        let merged = merge_answers([response(1, None, vec![a, b, other])]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].id, "other");
    }

    #[test]
    fn a_module_listing_a_file_twice_is_dropped() {
        let mut bad = ModuleAnswer::new("bad", Status::Update, Some(v("2")));
        bad.upgrade = UpgradeInfo::Files(vec![file("a", FileAction::Delete), file("a", FileAction::Delete)]);
        let mut good = ModuleAnswer::new("good", Status::Update, Some(v("2")));
        good.upgrade = UpgradeInfo::Files(vec![file("a", FileAction::Delete), file("b", FileAction::Delete)]);
        let merged = merge_answers([response(1, None, vec![bad, good])]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].id, "good");
    }

    #[test]
    fn a_module_too_large_alone_goes_with_the_file_entries_that_fit() {
        use crate::body::QueryFile;
        let names: Vec<String> = (0..200).map(|i| format!("share/a-rather-long-file-name-{i:04}.dat")).collect();
        let files: Vec<QueryFile<'_>> =
            names.iter().map(|n| QueryFile { id: n.as_str().into(), version: v("1.0") }).collect();
        let big = QueryModule { id: "big".into(), version: Some(v("1.0")), files };
        let small = QueryModule { id: "small".into(), version: Some(v("1.0")), files: vec![] };
        for nonce_bound in [false, true] {
            let parts = split_query(vec![big.clone(), small.clone()], nonce_bound).unwrap();
            let asked: Vec<String> = parts
                .iter()
                .flat_map(|p| Query::decode(p).unwrap().modules.into_iter().map(|m| m.id.into_owned()))
                .collect();
            assert_eq!(asked, ["big", "small"], "every module is asked about, once");
            let first = Query::decode(&parts[0]).unwrap();
            let kept = first.modules[0].files.len();
            assert!(kept > 0 && kept < names.len(), "{kept} file entries kept");
            assert!(parts[0].len() <= max_query_body_len(nonce_bound));
            // One more entry would not have fitted.
            let mut more = big.clone();
            more.files.truncate(kept + 1);
            assert!(Query::new(vec![more]).to_vec().len() > max_query_body_len(nonce_bound));
            assert_eq!(first.modules[0].files[..], big.files[..kept]);
        }
    }

    #[test]
    fn relative_urls_resolve_against_their_own_responses_base() {
        let mut package = ModuleAnswer::new("pkg", Status::Update, Some(v("2")));
        package.upgrade = UpgradeInfo::Package(Package { payload: payload("store/a"), args: None });
        let mut files = ModuleAnswer::new("files", Status::Update, Some(v("2")));
        files.upgrade = UpgradeInfo::Files(vec![
            file("abs", FileAction::Replace(payload("https://cdn.example/x"))),
            file("rel", FileAction::Replace(payload("store/b"))),
            file("gone", FileAction::Delete),
        ]);
        let merged = merge_answers([
            response(1, Some("http://one.example/"), vec![package]),
            response(1, Some("http://two.example/"), vec![files]),
            response(1, None, vec![ModuleAnswer::new("none", Status::Current, None)]),
        ]);
        let UpgradeInfo::Files(files) = &merged[0].upgrade else { panic!("files") };
        let urls: Vec<_> = files
            .iter()
            .filter_map(|f| match &f.action {
                FileAction::Replace(p) => Some(p.url.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(urls, ["https://cdn.example/x", "http://two.example/store/b"]);
        let UpgradeInfo::Package(package) = &merged[2].upgrade else { panic!("package") };
        assert_eq!(package.payload.url, "http://one.example/store/a");
    }

    #[test]
    fn downgrades_without_a_signed_rollback_are_refused() {
        use crate::plan::refuses_downgrade;
        let installed = v("2.0");
        let mut answer = ModuleAnswer::new("m", Status::Update, Some(v("1.0")));
        assert!(refuses_downgrade(&answer, Some(&installed)));
        assert!(!refuses_downgrade(&answer, None), "nothing installed: an install, not a downgrade");
        answer.rollback = true;
        assert!(!refuses_downgrade(&answer, Some(&installed)));
        answer.rollback = false;
        answer.latest = Some(v("3.0"));
        assert!(!refuses_downgrade(&answer, Some(&installed)));
        answer.latest = Some(v("1.0"));
        answer.status = Status::Current;
        assert!(!refuses_downgrade(&answer, Some(&installed)), "only an update offers anything");
    }

    #[test]
    fn installs_are_added_once_without_a_version() {
        let installed = vec![QueryModule { id: "core".into(), version: Some(v("1.0")), files: vec![] }];
        let modules = with_installs(installed, &["core", "new", "new"]);
        let ids: Vec<_> = modules.iter().map(|m| (m.id.as_ref(), m.version.is_some())).collect();
        assert_eq!(ids, [("core", true), ("new", false)]);
    }

    #[test]
    fn every_part_fits_a_datagram_with_the_largest_trailer() {
        use crate::cookie::{ClientCookie, ServerCookie};
        use crate::sign::Nonce;
        let ids: Vec<String> = (0..300).map(|i| format!("module-with-a-long-name-{i:04}")).collect();
        for nonce_bound in [false, true] {
            let modules = ids
                .iter()
                .map(|id| QueryModule { id: id.as_str().into(), version: Some(v("1.2.3")), files: vec![] })
                .collect();
            let parts = split_query(modules, nonce_bound).unwrap();
            assert!(parts.len() > 1);
            for body in &parts {
                let options = QueryOptions {
                    client_cookie: Some(ClientCookie::default()),
                    server_cookie: Some(ServerCookie([1; 16])),
                    nonce: nonce_bound.then_some(Nonce([2; 16])),
                    pad_to: 0,
                };
                let datagram = Frame::query(7, body, &options).to_vec().unwrap();
                assert!(datagram.len() <= MAX_DATAGRAM_LEN);
            }
            let asked: usize = parts.iter().map(|p| Query::decode(p).unwrap().modules.len()).sum();
            assert_eq!(asked, ids.len());
        }
    }
}
