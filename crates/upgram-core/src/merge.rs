//! A check from the client's side, around the exchanges: the query split into parts that each
//! fit a datagram and whose compact answers are expected to fit one too (SPEC.md §2.6), compact
//! answers expanded against their parts (§4.4), and the answers of every part merged into one
//! list.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::body::{FileAction, ModuleAnswer, Payload, Query, QueryModule, Response, Status, UpgradeInfo};
use crate::error::EncodeError;
use crate::limits::{HEADER_LEN, MAX_DATAGRAM_LEN, max_query_body_len};
use crate::sign::{Nonce, SignatureBlock};

/// Bytes a client sets aside in a part's predicted answer for the `<response>` element itself
/// (`for`, `issued`, `expires`, a written `base` attribute of up to 90 bytes, `compact`; SPEC.md
/// §2.6).
pub const ANSWER_OVERHEAD: usize = 256;

/// The answer bytes a client predicts for a module asked with a version (SPEC.md §2.6): a
/// compact answer leaves a current module out, so this is what a non-current answer of about
/// 320 bytes costs when one module in ten is behind.
pub const EXPECTED_ANSWER_LEN: usize = 32;

/// The answer bytes a client predicts for a module asked without a version (an install, never
/// current).
pub const INSTALL_ANSWER_LEN: usize = 320;

/// The room for an inline answer's body that a client packs for: a datagram less the header,
/// key id and signature, a fresh server cookie and, for nonce-bound queries, the nonce
/// (SPEC.md §2.6). A batch trailer does not count: a server signs alone an answer that has no
/// room for one.
pub const fn max_answer_body_len(nonce_bound: bool) -> usize {
    let nonce = if nonce_bound { Nonce::LEN } else { 0 };
    MAX_DATAGRAM_LEN - HEADER_LEN - SignatureBlock::LEN - crate::cookie::ServerCookie::LEN - nonce
}

/// The answer bytes predicted for `module` by default (SPEC.md §2.6): [`INSTALL_ANSWER_LEN`]
/// when it is asked without a version, else [`EXPECTED_ANSWER_LEN`].
pub fn predicted_answer_len(module: &QueryModule<'_>) -> usize {
    if module.version.is_none() { INSTALL_ANSWER_LEN } else { EXPECTED_ANSWER_LEN }
}

/// Why a client refuses a verified compact answer (SPEC.md §4.4, §10.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// The compact answer lists a module its query did not ask about, without
    /// `dependency="1"`: the client could not tell what the marker covers.
    #[error("compact answer lists module `{id}`, which its query did not ask about")]
    NotAsked {
        /// The module listed.
        id: String,
    },
    /// The answer is compact, but its query did not ask for a compact answer.
    #[error("compact answer to a query that did not ask for one")]
    Unrequested,
}

impl CompactError {
    /// The stable name of this error (SPEC.md §9.3, verification layer).
    pub fn name(&self) -> &'static str {
        match self {
            Self::NotAsked { .. } => "not-asked",
            Self::Unrequested => "unrequested-compact",
        }
    }
}

/// The answer `response` in today's form, given the query it answers (whose SHA-256 is its
/// `for`, already verified): a compact answer gets, for every module of `query` asked with a
/// version and not listed, `<module status="current" latest="that version"/>`, in query order,
/// followed by the dependency entries. An answer that is not compact comes back unchanged.
///
/// Fails if a compact answer lists a module `query` did not ask (without `dependency="1"`),
/// or if `query` did not ask for a compact answer. [`expand_compact_taking`] does the same
/// without copying the ids and versions of the modules it adds.
pub fn expand_compact<'a>(response: Response<'a>, query: &Query<'_>) -> Result<Response<'a>, CompactError> {
    let Some(positions) = listed_positions(&response, query)? else { return Ok(response) };
    let implied = |asked: &QueryModule<'_>| {
        let version = asked.version.as_ref()?;
        let id = Cow::Owned(asked.id.to_string());
        Some(ModuleAnswer::new(id, Status::Current, Some(version.clone().into_owned())))
    };
    Ok(expand_in_order(response, &positions, query.modules.iter(), implied))
}

/// [`expand_compact`], taking the ids and versions of the modules a compact answer leaves out
/// from `query` rather than copying them: for a client that keeps the answers, not the query.
pub fn expand_compact_taking<'a>(response: Response<'a>, query: Query<'a>) -> Result<Response<'a>, CompactError> {
    let Some(positions) = listed_positions(&response, &query)? else { return Ok(response) };
    let implied = |asked: QueryModule<'a>| {
        let version = asked.version?;
        Some(ModuleAnswer::new(asked.id, Status::Current, Some(version)))
    };
    Ok(expand_in_order(response, &positions, query.modules.into_iter(), implied))
}

/// Where each module a compact answer lists goes: the index in `query` of the module it
/// answers, or `None` for a dependency entry. `None` as a whole for an answer that is not
/// compact; the errors of [`check_compact`].
fn listed_positions(response: &Response<'_>, query: &Query<'_>) -> Result<Option<Vec<Option<usize>>>, CompactError> {
    if !response.compact {
        return Ok(None);
    }
    if !query.compact {
        return Err(CompactError::Unrequested);
    }
    // A part asks about a few dozen modules at most and lists fewer: a scan beats a map.
    let mut asked: Option<HashMap<&str, usize>> = None;
    let mut position = |id: &str| {
        if query.modules.len() <= 64 {
            return query.modules.iter().position(|m| m.id == id);
        }
        let asked = asked.get_or_insert_with(|| {
            let mut first = HashMap::with_capacity(query.modules.len());
            for (index, module) in query.modules.iter().enumerate() {
                first.entry(module.id.as_ref()).or_insert(index);
            }
            first
        });
        asked.get(id).copied()
    };
    let mut positions = Vec::with_capacity(response.modules.len());
    for module in &response.modules {
        if module.dependency {
            positions.push(None);
            continue;
        }
        let Some(index) = position(&module.id) else {
            return Err(CompactError::NotAsked { id: module.id.to_string() });
        };
        positions.push(Some(index));
    }
    Ok(Some(positions))
}

/// The modules of a compact `response` in query order: for each module `asked` yields, the
/// entries listed for it (at `positions`), or else what `implied` makes of it; then the
/// dependency entries, as listed.
fn expand_in_order<'a, A>(
    response: Response<'a>,
    positions: &[Option<usize>],
    asked: impl ExactSizeIterator<Item = A>,
    implied: impl Fn(A) -> Option<ModuleAnswer<'a>>,
) -> Response<'a> {
    let Response { binding, base, modules: listed, .. } = response;
    // The listed entries by the query position they answer, in listed order within one.
    let mut own: Vec<(usize, usize)> =
        positions.iter().enumerate().filter_map(|(at, position)| position.map(|p| (p, at))).collect();
    own.sort_by_key(|&(position, _)| position);
    let mut listed: Vec<Option<ModuleAnswer<'a>>> = listed.into_iter().map(Some).collect();
    let mut modules = Vec::with_capacity(asked.len() + listed.len() - own.len());
    let mut next = own.iter().peekable();
    for (position, module) in asked.enumerate() {
        let mut answered = false;
        while let Some(&(_, at)) = next.next_if(|(p, _)| *p == position) {
            modules.extend(listed[at].take());
            answered = true;
        }
        if !answered {
            modules.extend(implied(module));
        }
    }
    let dependencies = positions.iter().zip(&mut listed).filter(|(position, _)| position.is_none());
    modules.extend(dependencies.filter_map(|(_, module)| module.take()));
    Response { binding, base, compact: false, modules }
}

/// Whether [`expand_compact`] accepts `response` as an answer to `query`, without expanding
/// it: an answer that is not compact always; a compact one if `query` asked for one and every
/// module it lists without `dependency="1"` was asked.
pub fn check_compact(response: &Response<'_>, query: &Query<'_>) -> Result<(), CompactError> {
    listed_positions(response, query).map(|_| ())
}

/// Whether `module` is exactly what a compact answer leaves out for `asked`: current at the
/// version asked, with nothing else to say (SPEC.md §4.4).
pub fn is_implied_current(module: &ModuleAnswer<'_>, asked: &QueryModule<'_>) -> bool {
    module.status == Status::Current
        && asked.version.is_some()
        && module.latest.as_ref().map(|v| v.as_str()) == asked.version.as_ref().map(|v| v.as_str())
        && module.id == asked.id
        && *module == ModuleAnswer::new(module.id.clone(), Status::Current, module.latest.clone())
}

/// The encoded bodies of the parts of a query about `modules`, each asking for a compact
/// answer (SPEC.md §2.6): a part ends where its query would not fit a datagram with the
/// largest trailer it may carry, or where its predicted answer, [`ANSWER_OVERHEAD`] plus
/// `predict` of each module, would not fit [`max_answer_body_len`]. A module predicted too
/// large alone goes in a part of its own. Modules too large alone with all their file entries
/// go with as many as fit, as in [`split_query`].
pub fn pack_query(
    modules: Vec<QueryModule<'_>>,
    nonce_bound: bool,
    predict: impl Fn(&QueryModule<'_>) -> usize,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    pack_query_for(&Query::new(Vec::new()), modules, nonce_bound, predict)
}

/// [`pack_query`] for an installation on a channel and with a bucket: every part carries the
/// `channel` and `bucket` of `audience` (whose own modules are not used) and asks for a
/// compact answer.
pub fn pack_query_for<'a>(
    audience: &Query<'a>,
    modules: Vec<QueryModule<'a>>,
    nonce_bound: bool,
    predict: impl Fn(&QueryModule<'_>) -> usize,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let parts = pack_query_parts(audience, modules, nonce_bound, predict)?;
    Ok(parts.into_iter().map(|part| part.body).collect())
}

/// One part of a packed query: the body to send, and the query it encodes, so that the answer
/// can be checked and expanded (SPEC.md §4.4) without decoding the body again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedPart<'a> {
    /// The encoded query, as [`pack_query_for`] returns it.
    pub body: Vec<u8>,
    /// The query `body` encodes: the modules as packed (file entries trimmed to fit, if they
    /// had to be), with the audience's `channel` and `bucket`, compact.
    pub query: Query<'a>,
}

/// [`pack_query_for`], each part with the query its body encodes.
pub fn pack_query_parts<'a>(
    audience: &Query<'a>,
    modules: Vec<QueryModule<'a>>,
    nonce_bound: bool,
    predict: impl Fn(&QueryModule<'_>) -> usize,
) -> Result<Vec<PackedPart<'a>>, EncodeError> {
    QueryPacker::new(audience, modules, nonce_bound, predict).collect()
}

/// The closing tag of a query: a part's body ends with it.
const QUERY_CLOSE: &[u8] = b"</query>";

/// [`pack_query_parts`] one part at a time, so that a client sends the first parts while it
/// packs the next. Yields the parts [`pack_query_parts`] returns, in order, or the error it
/// returns, after which it yields nothing.
#[derive(Debug)]
pub struct QueryPacker<'a, P> {
    audience: Query<'a>,
    /// The opening tag of every part.
    open: Vec<u8>,
    /// The length of a part asking about no module.
    empty_len: usize,
    query_room: usize,
    answer_room: usize,
    modules: std::vec::IntoIter<QueryModule<'a>>,
    predict: P,
    /// The module that did not fit the part before, and its predicted answer length: it opens
    /// the next part. Its encoding is in `scratch`.
    carried: Option<(QueryModule<'a>, usize)>,
    scratch: Vec<u8>,
    failed: bool,
}

impl<'a, P: Fn(&QueryModule<'_>) -> usize> QueryPacker<'a, P> {
    /// Packs `modules` as [`pack_query_parts`] does.
    pub fn new(audience: &Query<'a>, modules: Vec<QueryModule<'a>>, nonce_bound: bool, predict: P) -> Self {
        let audience = Query { compact: true, ..query_like(audience, Vec::new()) };
        // A query's encoding is its opening tag, each module's encoding in turn, and the
        // closing tag: a part is built by appending each module's bytes once, as it is measured.
        let empty = audience.to_vec();
        let open = empty.strip_suffix(QUERY_CLOSE).unwrap_or(&empty).to_vec();
        Self {
            empty_len: empty.len(),
            open,
            audience,
            query_room: max_query_body_len(nonce_bound),
            answer_room: max_answer_body_len(nonce_bound).saturating_sub(ANSWER_OVERHEAD),
            modules: modules.into_iter(),
            predict,
            carried: None,
            scratch: Vec::new(),
            failed: false,
        }
    }

    /// `module` encoded into `scratch` (with the file entries that fit, if all do not), and
    /// its predicted answer length; an error if it does not fit a part alone.
    fn measure(&mut self, mut module: QueryModule<'a>) -> Result<(QueryModule<'a>, usize), EncodeError> {
        self.scratch.clear();
        module.encode(&mut self.scratch);
        if self.empty_len + self.scratch.len() > self.query_room && !module.files.is_empty() {
            module = fit_alone(&self.audience, module, self.query_room);
            self.scratch.clear();
            module.encode(&mut self.scratch);
        }
        let len = self.empty_len + self.scratch.len();
        if len > self.query_room {
            return Err(EncodeError::TooLarge { len, max: self.query_room });
        }
        let predicted = (self.predict)(&module);
        Ok((module, predicted))
    }
}

impl<'a, P: Fn(&QueryModule<'_>) -> usize> Iterator for QueryPacker<'a, P> {
    type Item = Result<PackedPart<'a>, EncodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut body: Vec<u8> = Vec::new();
        let mut current: Vec<QueryModule<'a>> = Vec::new();
        let mut answer_len = 0;
        loop {
            let next = match self.carried.take() {
                Some(carried) => Some(Ok(carried)),
                None => self.modules.next().map(|module| self.measure(module)),
            };
            let (module, predicted) = match next {
                None => break,
                Some(Ok(measured)) => measured,
                Some(Err(error)) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            };
            let module_len = self.scratch.len();
            if !body.is_empty()
                && (body.len() + QUERY_CLOSE.len() + module_len > self.query_room
                    || answer_len + predicted > self.answer_room)
            {
                self.carried = Some((module, predicted));
                break;
            }
            if body.is_empty() {
                body.reserve(self.query_room);
                body.extend_from_slice(&self.open);
            }
            body.extend_from_slice(&self.scratch);
            answer_len += predicted;
            current.push(module);
        }
        if body.is_empty() {
            return None;
        }
        body.extend_from_slice(QUERY_CLOSE);
        Some(Ok(PackedPart { body, query: query_like(&self.audience, current) }))
    }
}

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

/// `audience` (its `compact`, `channel` and `bucket`) asking about `modules`.
fn query_like<'a>(audience: &Query<'a>, modules: Vec<QueryModule<'a>>) -> Query<'a> {
    Query {
        compact: audience.compact,
        channel: audience.channel.clone(),
        bucket: audience.bucket,
        patch: audience.patch.clone(),
        module_docs: audience.module_docs,
        modules,
    }
}

/// `module` with as many of its file entries (in order) as let it fit `room` alone, in a query
/// with the attributes of `audience`.
fn fit_alone<'a>(audience: &Query<'a>, mut module: QueryModule<'a>, room: usize) -> QueryModule<'a> {
    let alone_len = |module: &QueryModule<'a>, files: usize| {
        let mut trimmed = module.clone();
        trimmed.files.truncate(files);
        query_like(audience, vec![trimmed]).to_vec().len()
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
    if response.base.is_none() {
        // Every URL of a response without `base` is absolute (SPEC.md §4.2).
        return;
    }
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
                if let Some(patch) = &mut file.patch {
                    fix(&mut patch.payload);
                }
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
/// entry (among own answers the last given wins); among dependency entries the newest `issued`
/// wins (the first given among equals); a module listed twice in one response, or listing a
/// file twice, is dropped (a server error the client must not act on).
///
/// Responses given in query order, as a client packs its parts from a sorted installation,
/// merge in about linear time: their answers are already in id order but for dependencies.
pub fn merge_answers<'a>(responses: impl IntoIterator<Item = Response<'a>>) -> Vec<ModuleAnswer<'a>> {
    let mut responses: Vec<Response<'a>> = responses.into_iter().collect();
    let winners = merge_order(&responses);
    let mut merged = Vec::with_capacity(winners.len());
    for (r, m) in winners {
        // A placeholder that allocates nothing takes the winner's place; each wins once.
        let placeholder = ModuleAnswer::new(Cow::Borrowed(""), Status::Unknown, None);
        let mut module = std::mem::replace(&mut responses[r].modules[m], placeholder);
        resolve_urls(&mut module, &responses[r]);
        merged.push(module);
    }
    merged
}

/// [`merge_answers`] of responses a caller keeps: the merged answers borrow their strings from
/// `responses` (only the payload URLs made absolute are new).
pub fn merge_borrowed<'r>(responses: &'r [Response<'_>]) -> Vec<ModuleAnswer<'r>> {
    let winners = merge_order(responses);
    let mut merged = Vec::with_capacity(winners.len());
    for (r, m) in winners {
        let mut module = responses[r].modules[m].as_borrowed();
        resolve_urls(&mut module, &responses[r]);
        merged.push(module);
    }
    merged
}

/// The answers [`merge_answers`] keeps, as (response, module) indices in id order. Only these
/// pairs move: the answers themselves stay where they are until the winners are known.
fn merge_order(responses: &[Response<'_>]) -> Vec<(usize, usize)> {
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    let (mut order, mut twice) = (Vec::new(), Vec::new());
    for (r, response) in responses.iter().enumerate() {
        mark_listed_twice(&response.modules, &mut order, &mut twice);
        candidates.reserve(response.modules.len());
        for (m, module) in response.modules.iter().enumerate() {
            if !twice[m] && !lists_a_file_twice(module) {
                candidates.push((r, m));
            }
        }
    }
    let module = |&(r, m): &(usize, usize)| &responses[r].modules[m];
    // Stable: among the entries for one id, the order they were given in decides ties.
    candidates.sort_by(|a, b| module(a).id.cmp(&module(b).id));
    let mut winners: Vec<(usize, usize)> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let (new, issued) = (module(&candidate), responses[candidate.0].binding.issued);
        match winners.last_mut() {
            Some(kept) if module(kept).id == new.id => {
                let old = module(kept);
                let beats = !new.dependency || (old.dependency && issued > responses[kept.0].binding.issued);
                if beats {
                    *kept = candidate;
                }
            }
            _ => winners.push(candidate),
        }
    }
    winners
}

/// Sets `twice[i]` for each module of `modules` whose id another one of them has too; `order`
/// is scratch space, kept between calls.
fn mark_listed_twice(modules: &[ModuleAnswer<'_>], order: &mut Vec<usize>, twice: &mut Vec<bool>) {
    twice.clear();
    twice.resize(modules.len(), false);
    // An expanded answer lists its modules in query order, which is id order for a sorted
    // installation: then no id can repeat, and there is nothing to sort.
    if modules.windows(2).all(|pair| pair[0].id < pair[1].id) {
        return;
    }
    order.clear();
    order.extend(0..modules.len());
    order.sort_unstable_by(|&a, &b| modules[a].id.cmp(&modules[b].id));
    for pair in order.windows(2) {
        if modules[pair[0]].id == modules[pair[1]].id {
            twice[pair[0]] = true;
            twice[pair[1]] = true;
        }
    }
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
        Response { binding, base: base.map(|b| Cow::Owned(b.to_owned())), compact: false, modules }
    }

    fn payload(url: &str) -> Payload<'static> {
        Payload { url: Cow::Owned(url.to_owned()), size: 1, sha256: Sha256Digest::of(b"x") }
    }

    fn file(id: &str, action: FileAction<'static>) -> FileEntry<'static> {
        FileEntry {
            id: Cow::Owned(id.to_owned()),
            version: v("2"),
            action,
            frequent: false,
            executable: false,
            patch: None,
        }
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

    /// The rules of [`merge_answers`] as first written, with a map per rule: the referee of
    /// the implementation that moves indices instead of answers.
    fn merge_by_maps<'a>(responses: Vec<Response<'a>>) -> Vec<ModuleAnswer<'a>> {
        use std::collections::BTreeMap;
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

    /// Responses drawn from a small seeded generator: few ids, so that own answers, dependency
    /// entries, ties of `issued`, modules listed twice and files listed twice all meet.
    fn tangled_responses(seed: u64) -> Vec<Response<'static>> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        (0..1 + next(6))
            .map(|_| {
                let issued = 100 + next(3);
                let base = if next(2) == 0 { None } else { Some("http://mirror.example/") };
                let modules = (0..next(7))
                    .map(|_| {
                        let id = format!("m{}", next(6));
                        let mut module = ModuleAnswer::new(id, Status::Update, Some(v(&format!("{}", next(50)))));
                        module.dependency = next(2) == 0;
                        module.upgrade = match next(4) {
                            0 => UpgradeInfo::None,
                            1 => UpgradeInfo::Package(Package { payload: payload("store/p"), args: None }),
                            2 => UpgradeInfo::Files(vec![file(
                                "a",
                                FileAction::Replace(payload("https://cdn.example/a")),
                            )]),
                            _ => UpgradeInfo::Files(vec![file("a", FileAction::Delete), file("a", FileAction::Delete)]),
                        };
                        module
                    })
                    .collect();
                response(issued, base, modules)
            })
            .collect()
    }

    #[test]
    fn merging_by_indices_keeps_every_rule_of_merging_by_maps() {
        for seed in 0..2000 {
            let responses = tangled_responses(seed);
            let expected = merge_by_maps(responses.clone());
            assert_eq!(merge_borrowed(&responses), expected, "seed {seed}");
            assert_eq!(merge_answers(responses), expected, "seed {seed}");
        }
    }

    #[test]
    fn expanding_by_taking_the_query_equals_expanding_by_copying_it() {
        let ids: Vec<String> = (0..200).map(|i| format!("m{i:03}")).collect();
        for asked_count in [3, 70, 200] {
            let mut modules: Vec<QueryModule<'static>> =
                ids[..asked_count].iter().map(|id| asked(id, Some("1.0"))).collect();
            modules[1].version = None;
            // Asked twice: the first asking takes what is listed, the second is implied.
            modules.push(asked(&ids[0], Some("1.0")));
            let query = compact_query(modules);
            let mut dependency = ModuleAnswer::new("lib", Status::Update, Some(v("1")));
            dependency.dependency = true;
            let last = &ids[asked_count - 1];
            let listed = vec![
                ModuleAnswer::new(last.clone(), Status::Update, Some(v("2"))),
                dependency,
                ModuleAnswer::new(ids[0].clone(), Status::Update, Some(v("2"))),
                ModuleAnswer::new(last.clone(), Status::Error, None),
            ];
            let mut answer = response(1, None, listed);
            answer.compact = true;
            let copied = expand_compact(answer.clone(), &query).unwrap();
            let taken = expand_compact_taking(answer, query.clone()).unwrap();
            assert_eq!(taken, copied);
            let order: Vec<(&str, Status)> = copied.modules.iter().map(|m| (m.id.as_ref(), m.status)).collect();
            let mut expected = vec![(ids[0].as_str(), Status::Update)];
            expected.extend(ids[2..asked_count - 1].iter().map(|id| (id.as_str(), Status::Current)));
            expected.extend([
                (last.as_str(), Status::Update),
                (last.as_str(), Status::Error),
                (ids[0].as_str(), Status::Current),
                ("lib", Status::Update),
            ]);
            assert_eq!(order, expected, "{asked_count} asked");
        }
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

    fn asked(id: &str, version: Option<&str>) -> QueryModule<'static> {
        QueryModule { id: Cow::Owned(id.to_owned()), version: version.map(v), files: vec![] }
    }

    fn compact_query(modules: Vec<QueryModule<'static>>) -> Query<'static> {
        Query { compact: true, ..Query::new(modules) }
    }

    #[test]
    fn a_compact_answer_expands_in_query_order_with_dependencies_last() {
        let query = compact_query(vec![asked("a", Some("1.0")), asked("b", Some("2.0")), asked("new", None)]);
        let update = ModuleAnswer::new("b", Status::Update, Some(v("2.1")));
        let mut dependency = ModuleAnswer::new("lib", Status::Update, Some(v("1")));
        dependency.dependency = true;
        let mut answer = response(1, None, vec![dependency.clone(), update.clone()]);
        answer.compact = true;
        let expanded = expand_compact(answer, &query).unwrap();
        let a = ModuleAnswer::new("a", Status::Current, Some(v("1.0")));
        assert_eq!(expanded.modules, [a, update, dependency], "`new` was asked without a version: not covered");
        assert!(!expanded.compact);
    }

    #[test]
    fn a_compact_answer_naming_a_module_not_asked_is_refused() {
        let query = compact_query(vec![asked("a", Some("1.0"))]);
        let mut answer = response(1, None, vec![ModuleAnswer::new("stranger", Status::Current, Some(v("1")))]);
        answer.compact = true;
        let error = expand_compact(answer.clone(), &query).unwrap_err();
        assert_eq!(error, CompactError::NotAsked { id: "stranger".into() });
        assert_eq!(error.name(), "not-asked");
        answer.modules[0].dependency = true;
        assert!(expand_compact(answer, &query).is_ok(), "a dependency entry may name any module");
    }

    #[test]
    fn checking_a_compact_answer_refuses_what_expanding_refuses() {
        // Small parts are scanned, large ones looked up in a set: both ways agree.
        for asked_count in [3, 200] {
            let ids: Vec<String> = (0..asked_count).map(|i| format!("m{i:03}")).collect();
            let mut query = compact_query(ids.iter().map(|id| asked(id, Some("1.0"))).collect());
            let last = ids.last().unwrap().as_str();
            let mut dependency = ModuleAnswer::new("lib", Status::Update, Some(v("1")));
            dependency.dependency = true;
            let listed = |ids: &[&str]| {
                let mut modules: Vec<_> =
                    ids.iter().map(|id| ModuleAnswer::new(id.to_string(), Status::Update, Some(v("2")))).collect();
                modules.push(dependency.clone());
                let mut answer = response(1, None, modules);
                answer.compact = true;
                answer
            };
            let good = listed(&["m000", last]);
            assert_eq!(check_compact(&good, &query), Ok(()));
            assert!(expand_compact(good.clone(), &query).is_ok());
            let bad = listed(&["m000", "stranger"]);
            let error = CompactError::NotAsked { id: "stranger".into() };
            assert_eq!(check_compact(&bad, &query), Err(error.clone()));
            assert_eq!(expand_compact(bad, &query), Err(error));
            query.compact = false;
            assert_eq!(check_compact(&good, &query), Err(CompactError::Unrequested));
            let today = Response { compact: false, ..good };
            assert_eq!(check_compact(&today, &query), Ok(()), "today's form is not checked against the query");
        }
    }

    #[test]
    fn only_a_query_that_asked_gets_a_compact_answer() {
        let mut query = compact_query(vec![asked("a", Some("1.0"))]);
        query.compact = false;
        let mut answer = response(1, None, vec![]);
        assert_eq!(expand_compact(answer.clone(), &query).unwrap(), answer, "today's form passes unchanged");
        answer.compact = true;
        let error = expand_compact(answer, &query).unwrap_err();
        assert_eq!(error.name(), "unrequested-compact");
    }

    #[test]
    fn only_a_bare_current_answer_at_the_version_asked_is_implied() {
        let at = asked("a", Some("1.0"));
        let bare = ModuleAnswer::new("a", Status::Current, Some(v("1.0")));
        assert!(is_implied_current(&bare, &at));
        assert!(!is_implied_current(&bare, &asked("a", Some("1.0.0"))), "the version text asked, exactly");
        assert!(!is_implied_current(&bare, &asked("a", None)));
        assert!(!is_implied_current(&bare, &asked("b", Some("1.0"))));
        let mut hinted = bare.clone();
        hinted.frequent = vec![Cow::Borrowed("db/x")];
        assert!(!is_implied_current(&hinted, &at));
        let mut files = bare.clone();
        files.upgrade = UpgradeInfo::Files(vec![file("db/x", FileAction::Delete)]);
        assert!(!is_implied_current(&files, &at));
        assert!(!is_implied_current(&ModuleAnswer::new("a", Status::Update, Some(v("1.0"))), &at));
    }

    #[test]
    fn packed_parts_ask_for_compact_answers_and_keep_within_both_predictions() {
        let ids: Vec<String> = (0..1000).map(|i| format!("module-{i:04}")).collect();
        let modules = || ids.iter().map(|id| asked(id, Some("1.1"))).collect::<Vec<_>>();
        for nonce_bound in [false, true] {
            let parts = pack_query(modules(), nonce_bound, predicted_answer_len).unwrap();
            let room = max_answer_body_len(nonce_bound) - ANSWER_OVERHEAD;
            let mut asked_ids = Vec::new();
            for body in &parts {
                assert!(body.len() <= max_query_body_len(nonce_bound));
                let query = Query::decode(body).unwrap();
                assert!(query.compact);
                assert!(query.modules.len() * EXPECTED_ANSWER_LEN <= room);
                asked_ids.extend(query.modules.into_iter().map(|m| m.id.into_owned()));
            }
            assert_eq!(asked_ids, ids, "every module once, in order");
            // Full parts: one more module would have broken the prediction.
            let first = Query::decode(&parts[0]).unwrap();
            assert!((first.modules.len() + 1) * EXPECTED_ANSWER_LEN > room);
        }
    }

    #[test]
    fn packed_parts_are_the_encodings_of_their_queries() {
        use crate::body::QueryFile;
        let files = |n: usize| {
            (0..n).map(|i| QueryFile { id: format!("lib/file-{i:03}.so").into(), version: v("1.0") }).collect()
        };
        let mut modules: Vec<QueryModule<'static>> = (0..200)
            .map(|i| QueryModule { id: format!("module-{i:03}").into(), version: Some(v("1.1")), files: files(i % 3) })
            .collect();
        // Too many file entries to fit alone: trimmed to those that fit.
        modules[70].files = files(200);
        modules.push(QueryModule { id: "new".into(), version: None, files: vec![] });
        let audience = Query {
            channel: Some("beta".into()),
            bucket: Some(42),
            patch: Some("bsdiff".into()),
            ..Query::new(vec![])
        };
        for nonce_bound in [false, true] {
            let packed = pack_query_parts(&audience, modules.clone(), nonce_bound, predicted_answer_len).unwrap();
            let parts = pack_query_for(&audience, modules.clone(), nonce_bound, predicted_answer_len).unwrap();
            assert_eq!(parts, packed.iter().map(|p| p.body.clone()).collect::<Vec<_>>());
            assert!(parts.len() > 2);
            let mut asked = 0;
            for (body, part) in parts.iter().zip(&packed) {
                let query = Query::decode(body).unwrap();
                assert_eq!(query, part.query, "a part's query is the one its body encodes");
                assert_eq!(query.to_vec(), *body, "a part is exactly its query's encoding");
                assert!(query.compact && query.channel.as_deref() == Some("beta") && query.bucket == Some(42));
                assert!(body.len() <= max_query_body_len(nonce_bound));
                let trimmed = query.modules.iter().find(|m| m.id == "module-070");
                assert!(trimmed.is_none_or(|m| !m.files.is_empty() && m.files.len() < 200));
                asked += query.modules.len();
            }
            assert_eq!(asked, modules.len());
        }
    }

    #[test]
    fn the_packer_yields_nothing_for_no_module_and_stops_at_its_first_error() {
        let audience = Query::new(vec![]);
        assert_eq!(QueryPacker::new(&audience, vec![], false, predicted_answer_len).count(), 0);
        let mut modules: Vec<QueryModule<'static>> = (0..100).map(|i| asked(&format!("m{i:03}"), Some("1"))).collect();
        // An id far longer than a datagram: no part can hold it.
        modules[60] = asked(&"x".repeat(2000), Some("1"));
        let mut packer = QueryPacker::new(&audience, modules, false, predicted_answer_len);
        let first = packer.next().expect("a part before the module that cannot fit").unwrap();
        assert_eq!(first.query.modules[0].id, "m000");
        let rest: Vec<_> = packer.collect();
        assert!(matches!(rest.last(), Some(Err(EncodeError::TooLarge { .. }))), "{rest:?}");
        assert_eq!(rest.iter().filter(|r| r.is_err()).count(), 1, "nothing after the error");
    }

    #[test]
    fn a_module_predicted_larger_makes_its_part_smaller() {
        let ids: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
        let modules = || ids.iter().map(|id| asked(id, Some("1"))).collect::<Vec<_>>();
        let even = pack_query(modules(), false, predicted_answer_len).unwrap();
        let heavy = pack_query(modules(), false, |m| predicted_answer_len(m) * if m.id == "m000" { 8 } else { 1 });
        let heavy = heavy.unwrap();
        let first_len = |parts: &[Vec<u8>]| Query::decode(&parts[0]).unwrap().modules.len();
        assert!(first_len(&heavy) < first_len(&even));
        assert!(heavy.len() > even.len());
        let alone = pack_query(modules(), false, |m| if m.id == "m050" { 10_000 } else { 1 }).unwrap();
        assert!(
            alone.iter().any(|p| Query::decode(p).unwrap().modules.len() == 1),
            "too large alone: a part of its own"
        );
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
