//! The responder (SPEC.md §5.2-§5.7): a pure function from a catalog and a query to the
//! response, with no sockets, files or clock. The serving layer adds the binding (which query,
//! for how long), signs, and decides inline or fallback.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use upgram_core::Sha256Digest;

use upgram_core::body::{
    BUCKETS, Binding, Delta, ErrorCode, FileAction, FileEntry, FilePatch, ModuleAnswer, ModuleDocument,
    PATCH_FORMAT_BSDIFF, Package as PackageInfo, Payload, Query, QueryFile, QueryModule, Requires, Response, Status,
    UpgradeInfo,
};
use upgram_core::merge::is_implied_current;
use upgram_core::version::Version;

use crate::catalog::model::{Blob, Catalog, Module, Release, ReleaseFile, matches_any};
use crate::catalog::rollout::RolloutState;
use crate::doorkeeper::Doorkeeper;

/// Where payloads are, relative to the response's `base`: `store/<sha256>`.
pub fn store_url(blob: &Blob) -> String {
    // Every file entry of every answer has one: the digest's hex written at once, not char by
    // char through `Display`.
    const PREFIX: &[u8] = b"store/";
    let mut url = Vec::with_capacity(PREFIX.len() + PAYLOAD_HEX_LEN);
    url.extend_from_slice(PREFIX);
    blob.sha256.write_hex(&mut url);
    String::from_utf8(url).unwrap_or_default()
}

fn payload(blob: &Blob) -> Payload<'static> {
    Payload { url: Cow::Owned(store_url(blob)), size: blob.size, sha256: blob.sha256 }
}

/// Answers `query` from `catalog`. `base` is the public URL payloads are under (ending in
/// `/`); `binding` says which query this answers and for how long. Rollout schedules are
/// evaluated at the binding's issue time (SPEC.md §5.10), so every answer of one issue window
/// agrees. A query that asks for a compact answer gets one (SPEC.md §4.4): the modules current
/// at the version asked are left out.
pub fn respond<'c>(catalog: &'c Catalog, query: &Query<'_>, binding: Binding, base: &str) -> Response<'c> {
    let audience = Audience::of(query, binding.issued);
    let mut modules: Vec<ModuleAnswer<'c>> =
        query.modules.iter().map(|m| module_answer(catalog, &audience, m, false)).collect();
    add_dependencies(
        query,
        &mut modules,
        |answer| required_modules(catalog, answer.status, answer.requires.iter().map(|r| r.id.as_ref())),
        |module| module_answer(catalog, &audience, &dependency_query(module), true),
    );
    if query.compact {
        leave_out_current(&mut modules, query, |module, asked| is_implied_current(module, asked));
    }
    Response { binding, base: Some(Cow::Owned(base.to_owned())), compact: query.compact, modules }
}

/// Drops the answers a compact answer implies (`implied` says which). The first answers are
/// those of the query's modules, in query order; dependency answers follow and are always
/// listed.
fn leave_out_current<T>(modules: &mut Vec<T>, query: &Query<'_>, implied: impl Fn(&T, &QueryModule<'_>) -> bool) {
    let mut index = 0;
    modules.retain(|module| {
        let asked = query.modules.get(index);
        index += 1;
        asked.is_none_or(|asked| !implied(module, asked))
    });
}

/// [`respond`], encoded into `out` (canonically: the same bytes as `respond(…).encode(out)`),
/// with each module's answer taken from `cache` when an earlier query asked the same of the
/// same catalog, from the same rollout class (see [`AnswerCache`]). Real queries are distinct
/// as wholes but made of the same few module questions (a module at one of its published
/// versions), so most answers are assembled from bytes encoded once.
pub fn respond_encoded(
    catalog: &Catalog,
    generation: u64,
    query: &Query<'_>,
    binding: Binding,
    base: &str,
    cache: &mut AnswerCache,
    out: &mut Vec<u8>,
) {
    let parts = respond_parts(catalog, generation, query, binding, cache);
    encode_parts(&parts, binding, base, query.compact, out);
}

/// The module answers of [`respond_encoded`], in answer order (the query's modules, then the
/// dependencies; a compact answer leaves out the current ones), each encoded once and shared:
/// the pieces a server assembles the response from, or names as module documents when it does
/// not fit a datagram (SPEC.md §8.5).
pub fn respond_parts(
    catalog: &Catalog,
    generation: u64,
    query: &Query<'_>,
    binding: Binding,
    cache: &mut AnswerCache,
) -> Vec<Arc<EncodedAnswer>> {
    cache.use_generation(generation, catalog);
    let audience = Audience::of(query, binding.issued);
    cache.set_audience(&audience);
    let mut parts: Vec<Arc<EncodedAnswer>> =
        query.modules.iter().map(|m| cache.get(catalog, &audience, m, false)).collect();
    add_dependencies(
        query,
        &mut parts,
        |part| required_modules(catalog, part.status, part.requires.iter().map(AsRef::as_ref)),
        |module| cache.get(catalog, &audience, &dependency_query(module), true),
    );
    if query.compact {
        leave_out_current(&mut parts, query, |part, _| part.implied);
    }
    parts
}

/// Encodes the response made of `parts` (from [`respond_parts`]) into `out`, canonically.
pub fn encode_parts(parts: &[Arc<EncodedAnswer>], binding: Binding, base: &str, compact: bool, out: &mut Vec<u8>) {
    // The head (binding, base, flags) takes under 256 bytes besides the base: one allocation.
    out.reserve(256 + base.len() + parts.iter().map(|p| p.bytes.len()).sum::<usize>());
    Response::encode_from_parts(&binding, Some(base), compact, parts.iter().map(|p| &*p.bytes), out);
}

/// A module's answer encoded once, with what the dependency walk needs of it. It is also the
/// module document a fallback may name (SPEC.md §8.5): hashed at most once, and given to the
/// document store once per validity window.
#[derive(Debug)]
pub struct EncodedAnswer {
    /// The `<module>` element.
    bytes: Bytes,
    /// The module it answers.
    module: Box<str>,
    /// The SHA-256 of `bytes`, computed when first needed.
    sha256: OnceLock<Sha256Digest>,
    /// The `<doc/>` element a module-document fallback names it with, encoded when first
    /// needed.
    element: OnceLock<Box<[u8]>>,
    /// Until when (unix time) the document store was last asked to keep it; 0 if never.
    kept_until: AtomicU64,
    /// The store's count of early evictions when it was last asked to keep it.
    kept_evictions: AtomicU64,
    status: Status,
    /// The ids the answer requires.
    requires: Box<[Box<str>]>,
    /// A compact answer leaves it out: current at the version asked, nothing else to say.
    implied: bool,
}

impl EncodedAnswer {
    /// The `<module>` element: the module document.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The module it answers.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The SHA-256 of the module document (computed once).
    pub fn sha256(&self) -> Sha256Digest {
        *self.sha256.get_or_init(|| Sha256Digest::of(&self.bytes))
    }

    /// The `<doc/>` element naming this module document in a fallback (SPEC.md §8.5), encoded
    /// once.
    pub fn element(&self) -> &[u8] {
        self.element.get_or_init(|| {
            let document = ModuleDocument {
                module: Cow::Borrowed(&self.module),
                size: self.bytes.len() as u64,
                sha256: self.sha256(),
            };
            let mut element = Vec::new();
            document.encode_element(&mut element);
            element.into()
        })
    }

    /// Whether the document store must be asked to keep this document until `until`, the
    /// store having evicted `evictions` documents early so far: true once per later `until`, so
    /// a document shared by many answers of one window is handed over once, and again once
    /// the store has evicted anything since (this document may be among them).
    pub fn needs_keeping(&self, until: u64, evictions: u64) -> bool {
        // Nearly always already handed over for this window: plain loads, no locked
        // read-modify-write, in that case.
        if self.kept_evictions.load(Ordering::Relaxed) == evictions && self.kept_until.load(Ordering::Relaxed) >= until
        {
            return false;
        }
        let evicted_since = self.kept_evictions.swap(evictions, Ordering::Relaxed) != evictions;
        let later = self.kept_until.fetch_max(until, Ordering::Relaxed) < until;
        evicted_since || later
    }
}

/// The most module answers an [`AnswerCache`] keeps, and the most bytes of them.
const MAX_CACHED_ANSWERS: usize = 16_384;
const MAX_CACHED_ANSWER_BYTES: usize = 32 << 20;

/// What the rollouts of one catalog make an answer depend on besides its question, reduced to
/// classes within which every answer agrees (SPEC.md §5.10): a release is offered to a query by
/// its channel, by whether its bucket is below each schedule's percentage, and by which schedule
/// steps have started at the issue time.
#[derive(Debug, Default)]
struct RolloutClasses {
    /// The time of every schedule step of the catalog, ascending: two issue times with as many
    /// steps started see the same percentage in every schedule.
    step_times: Vec<u64>,
    /// For each bucket, how many distinct schedule percentages are at most that bucket: two
    /// buckets of one class are below the same percentages.
    bucket_class: Vec<u8>,
}

impl RolloutClasses {
    fn of(catalog: &Catalog) -> Self {
        let steps = || catalog.modules.values().flat_map(|m| m.releases.iter()).flat_map(|r| r.rollout.schedule.iter());
        let mut step_times: Vec<u64> = steps().filter_map(|s| s.at).collect();
        step_times.sort_unstable();
        step_times.dedup();
        let percents: BTreeSet<u8> = steps().map(|s| s.percent).collect();
        let bucket_class =
            (0..BUCKETS).map(|bucket| u8::try_from(percents.range(..=bucket).count()).unwrap_or(u8::MAX)).collect();
        Self { step_times, bucket_class }
    }

    /// Writes the class of `audience` (channel, bucket class, schedule step count) to `key`.
    fn write_key(&self, audience: &Audience<'_>, key: &mut Vec<u8>) {
        key.clear();
        key.extend_from_slice(audience.channel.as_bytes());
        key.push(0);
        // No bucket is outside every partial rollout: a class of its own.
        let class = audience.bucket.map_or(u8::MAX, |b| self.bucket_class.get(usize::from(b)).copied().unwrap_or(0));
        key.push(class);
        let started = self.step_times.partition_point(|&at| at <= audience.now);
        key.extend_from_slice(&u64::try_from(started).unwrap_or(u64::MAX).to_le_bytes());
        // Answers with patches go only to queries that asked for them.
        key.push(u8::from(audience.patches));
    }
}

/// Encoded module answers by question (module id, installed version, file-level entries,
/// dependency or asked) and by rollout class (channel, the bucket's place among the catalog's
/// rollout percentages, how many schedule steps have started at the issue time), for one
/// catalog generation; one per worker, so no lock. An answer is kept from the second time its
/// question comes: questions with file-level entries are mostly asked once, and would otherwise
/// fill the cache and push out the questions every query asks. Bounded in count and bytes: when
/// full it starts again empty (every step stays O(1) amortized, with no search for what to
/// evict).
#[derive(Debug)]
pub struct AnswerCache {
    entries: HashMap<Box<[u8]>, Arc<EncodedAnswer>, foldhash::fast::RandomState>,
    doorkeeper: Doorkeeper,
    /// The catalog generation the entries are for; `None` before the first query.
    generation: Option<u64>,
    classes: RolloutClasses,
    bytes: usize,
    /// The rollout class of the current query, the start of every key.
    audience_key: Vec<u8>,
    /// The key being looked up, reused.
    key: Vec<u8>,
}

impl Default for AnswerCache {
    fn default() -> Self {
        Self {
            entries: HashMap::default(),
            doorkeeper: Doorkeeper::for_capacity(MAX_CACHED_ANSWERS),
            generation: None,
            classes: RolloutClasses::default(),
            bytes: 0,
            audience_key: Vec::new(),
            key: Vec::new(),
        }
    }
}

impl AnswerCache {
    /// Empties the cache when the catalog changed, and learns the new catalog's rollouts.
    fn use_generation(&mut self, generation: u64, catalog: &Catalog) {
        if self.generation != Some(generation) {
            self.clear();
            self.classes = RolloutClasses::of(catalog);
            self.generation = Some(generation);
        }
    }

    /// Makes the keys that follow those of `audience`'s rollout class.
    fn set_audience(&mut self, audience: &Audience<'_>) {
        self.classes.write_key(audience, &mut self.audience_key);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// How many answers are kept, and their bytes.
    pub fn kept(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }

    /// The encoded answer to `asked` for `audience` (whose class [`Self::set_audience`] set),
    /// made and kept if it is not there yet.
    fn get(
        &mut self,
        catalog: &Catalog,
        audience: &Audience<'_>,
        asked: &QueryModule<'_>,
        dependency: bool,
    ) -> Arc<EncodedAnswer> {
        self.key.clear();
        self.key.extend_from_slice(&self.audience_key);
        question_key(asked, dependency, &mut self.key);
        if let Some(found) = self.entries.get(self.key.as_slice()) {
            return found.clone();
        }
        let answer = module_answer(catalog, audience, asked, dependency);
        let mut bytes = Vec::with_capacity(256);
        answer.encode(&mut bytes);
        let requires = answer.requires.iter().map(|r| Box::from(r.id.as_ref())).collect();
        let implied = !dependency && is_implied_current(&answer, asked);
        let encoded = Arc::new(EncodedAnswer {
            bytes: Bytes::from(bytes),
            module: Box::from(answer.id.as_ref()),
            sha256: OnceLock::new(),
            element: OnceLock::new(),
            kept_until: AtomicU64::new(0),
            kept_evictions: AtomicU64::new(0),
            status: answer.status,
            requires,
            implied,
        });
        if !self.doorkeeper.admit(&self.key, 0) {
            return encoded;
        }
        let size = self.key.len() + encoded.bytes.len();
        if self.entries.len() >= MAX_CACHED_ANSWERS || self.bytes + size > MAX_CACHED_ANSWER_BYTES {
            self.clear();
        }
        if size <= MAX_CACHED_ANSWER_BYTES {
            self.bytes += size;
            self.entries.insert(self.key.as_slice().into(), encoded.clone());
        }
        encoded
    }
}

/// Appends the question a query module asks to `key` (ids and versions never contain NUL):
/// `id NUL version NUL (file NUL version NUL)* asked-or-dependency`.
fn question_key(asked: &QueryModule<'_>, dependency: bool, key: &mut Vec<u8>) {
    key.extend_from_slice(asked.id.as_bytes());
    key.push(0);
    match &asked.version {
        Some(version) => key.extend_from_slice(version.as_str().as_bytes()),
        None => key.push(b'-'),
    }
    key.push(0);
    for file in &asked.files {
        key.extend_from_slice(file.id.as_bytes());
        key.push(0);
        key.extend_from_slice(file.version.as_str().as_bytes());
        key.push(0);
    }
    key.push(if dependency { b'd' } else { b'a' });
}

/// What the answer for a module pulled in as a dependency answers: an install.
fn dependency_query(module: &Module) -> QueryModule<'_> {
    QueryModule { id: Cow::Borrowed(module.id.as_str()), version: None, files: vec![] }
}

/// The answer for one module of a query, or for a dependency, with its requirements checked:
/// an update whose requirements the catalog cannot meet for `audience` answers error 21
/// instead (§5.6).
fn module_answer<'c>(
    catalog: &'c Catalog,
    audience: &Audience<'_>,
    asked: &QueryModule<'_>,
    dependency: bool,
) -> ModuleAnswer<'c> {
    let mut answer = answer(catalog, audience, asked);
    answer.dependency = dependency;
    if answer.status == Status::Update
        && let Err(code) = check_requirements(catalog, audience, &answer)
        && let Some(module) = catalog.modules.get(answer.id.as_ref())
    {
        return error_answer(module, code);
    }
    answer
}

/// The catalog's modules an answer of `status` requiring `ids` pulls in: those of an update.
fn required_modules<'c, 'i>(
    catalog: &'c Catalog,
    status: Status,
    ids: impl Iterator<Item = &'i str>,
) -> Vec<&'c Module> {
    if status != Status::Update {
        return Vec::new();
    }
    ids.filter_map(|id| catalog.modules.get(id)).collect()
}

/// Who a query comes from, as far as rollouts care: its channel, its bucket, and the time the
/// answer is issued at.
#[derive(Debug, Clone, Copy)]
pub struct Audience<'q> {
    /// The channel the installation follows.
    pub channel: &'q str,
    /// Its rollout bucket, if it sent one.
    pub bucket: Option<u8>,
    /// Unix time the schedules are evaluated at.
    pub now: u64,
    /// The client applies bsdiff patches (the query's `patch` attribute names the format):
    /// its answers may carry them (SPEC.md §5.12).
    pub patches: bool,
}

impl<'q> Audience<'q> {
    /// The audience of `query`, at unix time `now`.
    pub fn of(query: &'q Query<'_>, now: u64) -> Self {
        Self {
            channel: query.channel_or_default(),
            bucket: query.bucket,
            now,
            patches: query.accepts_patch(PATCH_FORMAT_BSDIFF),
        }
    }

    /// Whether an installation of this audience that does not have `release` is offered it.
    pub fn is_offered(&self, release: &Release) -> bool {
        release.on_channel(self.channel) && release.rollout.offers(release.forced, self.bucket, self.now)
    }

    /// The newest release of `module` this audience is offered (SPEC.md §5.10).
    pub fn latest<'c>(&self, module: &'c Module) -> Option<&'c Release> {
        module.releases.iter().rev().find(|r| self.is_offered(r))
    }
}

/// The answer for one query module (§5.2).
fn answer<'c>(catalog: &'c Catalog, audience: &Audience<'_>, asked: &QueryModule<'_>) -> ModuleAnswer<'c> {
    let Some(module) = catalog.modules.get(asked.id.as_ref()) else {
        return ModuleAnswer::new(Cow::Owned(asked.id.to_string()), Status::Unknown, None);
    };
    let latest = audience.latest(module);
    let mut answer = match (&asked.version, latest) {
        (None, Some(latest)) => install(catalog, module, audience, latest),
        (Some(installed), Some(latest)) if *installed == latest.version => {
            current(catalog, module, audience, latest, &asked.files)
        }
        (Some(installed), Some(latest)) if *installed < latest.version => {
            upgrade(catalog, module, audience, latest, installed, &asked.files)
        }
        (Some(installed), latest) => newer_than_offered(catalog, module, audience, latest, installed, &asked.files),
        (None, None) => error_answer(module, ErrorCode::NoRelease),
    };
    add_frequent_hint(&mut answer, module, &asked.files);
    answer
}

fn error_answer<'c>(module: &'c Module, code: ErrorCode) -> ModuleAnswer<'c> {
    let mut answer = ModuleAnswer::new(Cow::Borrowed(module.id.as_str()), Status::Error, None);
    answer.code = Some(code.code());
    answer
}

fn requires_of(release: &Release) -> Vec<Requires<'_>> {
    release.requires.iter().map(|(id, min)| Requires { id: Cow::Borrowed(id), min: min.as_borrowed() }).collect()
}

/// The flags over the releases of the audience's channel in `(after, latest]` (§5.5), withdrawn
/// ones left out; `after = None` means all.
fn set_flags(
    answer: &mut ModuleAnswer<'_>,
    module: &Module,
    audience: &Audience<'_>,
    after: Option<&Version<'_>>,
    latest: &Version<'_>,
) {
    let span = module.releases.iter().filter(|r| {
        after.is_none_or(|a| r.version > *a)
            && r.version <= *latest
            && r.on_channel(audience.channel)
            && r.rollout.state != RolloutState::Withdrawn
    });
    for release in span {
        answer.full |= release.full;
        if release.forced {
            answer.forced = true;
            answer.floor = Some(release.version.clone());
        }
    }
}

fn update_answer<'c>(module: &'c Module, latest: &'c Release) -> ModuleAnswer<'c> {
    let mut answer =
        ModuleAnswer::new(Cow::Borrowed(module.id.as_str()), Status::Update, Some(latest.version.as_borrowed()));
    answer.requires = requires_of(latest);
    answer
}

/// A module that is not installed: everything of `latest` (§5.2 step 2).
fn install<'c>(
    catalog: &'c Catalog,
    module: &'c Module,
    audience: &Audience<'_>,
    latest: &'c Release,
) -> ModuleAnswer<'c> {
    let mut answer = update_answer(module, latest);
    set_flags(&mut answer, module, audience, None, &latest.version);
    let entries: Vec<FileEntry<'c>> = latest.files.iter().map(|f| replace_entry(module, f)).collect();
    choose_upgrade(catalog, module, latest, answer, entries)
}

/// A module at the latest version: the file-level answer only (§5.2 step 3).
fn current<'c>(
    catalog: &'c Catalog,
    module: &'c Module,
    audience: &Audience<'_>,
    latest: &'c Release,
    asked: &[QueryFile<'_>],
) -> ModuleAnswer<'c> {
    let mut answer =
        ModuleAnswer::new(Cow::Borrowed(module.id.as_str()), Status::Current, Some(latest.version.as_borrowed()));
    let entries: Vec<FileEntry<'c>> =
        asked.iter().filter_map(|file| file_level_entry(catalog, module, audience, latest, file)).collect();
    if !entries.is_empty() {
        answer.upgrade = UpgradeInfo::Files(entries);
    }
    answer
}

/// An installed version older than the latest (§5.2 step 4).
fn upgrade<'c>(
    catalog: &'c Catalog,
    module: &'c Module,
    audience: &Audience<'_>,
    latest: &'c Release,
    installed: &Version<'_>,
    asked: &[QueryFile<'_>],
) -> ModuleAnswer<'c> {
    let mut answer = update_answer(module, latest);
    set_flags(&mut answer, module, audience, Some(installed), &latest.version);
    let asked_ids: HashSet<&str> = asked.iter().map(|f| f.id.as_ref()).collect();
    let installed_release = module.release(installed);
    let mut entries: Vec<FileEntry<'c>> = Vec::new();
    for file in &latest.files {
        if asked_ids.contains(file.id.as_str()) {
            continue;
        }
        if answer.full || file.version > *installed {
            let from = installed_release.and_then(|r| r.file(&file.id)).map(|f| &f.version);
            entries.push(changed_entry(catalog, module, audience, latest, file, from));
        }
    }
    for id in deleted_since(module, latest, installed) {
        if !asked_ids.contains(id) {
            entries.push(delete_entry(id, &latest.version));
        }
    }
    entries.extend(asked.iter().filter_map(|f| file_level_entry(catalog, module, audience, latest, f)));
    choose_upgrade(catalog, module, latest, answer, entries)
}

/// An installed version newer than the latest release the installation is offered, or with no
/// release offered at all (§5.2 step 5, §6.4): a rollback to a rollback target or away from a
/// withdrawn release; else the installation keeps the release it has.
fn newer_than_offered<'c>(
    catalog: &'c Catalog,
    module: &'c Module,
    audience: &Audience<'_>,
    latest: Option<&'c Release>,
    installed: &Version<'_>,
    asked: &[QueryFile<'_>],
) -> ModuleAnswer<'c> {
    let installed = module.release(installed);
    let withdrawn = installed.is_some_and(|r| r.rollout.state == RolloutState::Withdrawn);
    match (latest, installed) {
        (Some(latest), _) if latest.rollback || withdrawn => rollback(catalog, module, latest),
        (_, Some(installed)) if !withdrawn => current(catalog, module, audience, installed, asked),
        (Some(latest), _) => {
            ModuleAnswer::new(Cow::Borrowed(module.id.as_str()), Status::Current, Some(latest.version.as_borrowed()))
        }
        (None, _) => error_answer(module, ErrorCode::NoRelease),
    }
}

/// A signed rollback to `latest` (§5.2 step 5, §6.4), complete: every file of `latest`
/// replaced, and every file any release of the module had that `latest` has not deleted
/// (those the release left added included).
fn rollback<'c>(catalog: &'c Catalog, module: &'c Module, latest: &'c Release) -> ModuleAnswer<'c> {
    let mut answer = update_answer(module, latest);
    answer.rollback = true;
    answer.full = true;
    let mut entries: Vec<FileEntry<'c>> = latest.files.iter().map(|f| replace_entry(module, f)).collect();
    let kept: HashSet<&str> = latest.files.iter().map(|f| f.id.as_str()).collect();
    let gone: BTreeSet<&str> = module
        .releases
        .iter()
        .flat_map(|r| r.files.iter())
        .map(|f| f.id.as_str())
        .filter(|id| !kept.contains(id))
        .collect();
    entries.extend(gone.into_iter().map(|id| delete_entry(id, &latest.version)));
    choose_upgrade(catalog, module, latest, answer, entries)
}

/// Files deleted by releases in `(installed, latest]` and not present in `latest`.
fn deleted_since<'c>(module: &'c Module, latest: &'c Release, installed: &Version<'_>) -> BTreeSet<&'c str> {
    module
        .releases
        .iter()
        .filter(|r| r.version > *installed && r.version <= latest.version)
        .flat_map(|r| r.deleted.iter())
        .map(|d| d.id.as_str())
        .filter(|id| latest.file(id).is_none())
        .collect()
}

/// The entry for a file the client named in its query, if its version differs.
fn file_level_entry<'c>(
    catalog: &'c Catalog,
    module: &'c Module,
    audience: &Audience<'_>,
    latest: &'c Release,
    asked: &QueryFile<'_>,
) -> Option<FileEntry<'c>> {
    match latest.file(&asked.id) {
        Some(file) if file.version != asked.version => {
            Some(changed_entry(catalog, module, audience, latest, file, Some(&asked.version)))
        }
        Some(_) => None,
        None if was_ever_in(module, &asked.id) => {
            Some(delete_entry(module_file_id(module, &asked.id)?, &latest.version))
        }
        None => None,
    }
}

fn was_ever_in(module: &Module, id: &str) -> bool {
    module.releases.iter().any(|r| r.file(id).is_some())
}

/// The catalog's own copy of a file id (so the answer borrows from the catalog).
fn module_file_id<'c>(module: &'c Module, id: &str) -> Option<&'c str> {
    module.releases.iter().find_map(|r| r.file(id)).map(|f| f.id.as_str())
}

fn replace_entry<'c>(module: &'c Module, file: &'c ReleaseFile) -> FileEntry<'c> {
    FileEntry {
        id: Cow::Borrowed(&file.id),
        version: file.version.as_borrowed(),
        action: FileAction::Replace(payload(&file.blob)),
        frequent: module.frequent.contains(&file.id),
        executable: file.executable,
        patch: None,
    }
}

/// A changed file: incremental when it is a record file and `latest` has a delta from the
/// client's version of it (§5.4), else replace, with a binary patch from the client's version
/// when the audience applies patches and `latest` has one (§5.12).
fn changed_entry<'c>(
    catalog: &'c Catalog,
    module: &'c Module,
    audience: &Audience<'_>,
    latest: &'c Release,
    file: &'c ReleaseFile,
    client_version: Option<&Version<'_>>,
) -> FileEntry<'c> {
    let mut entry = replace_entry(module, file);
    let is_record = matches_any(&catalog.settings.record_files, &file.id);
    let delta = client_version
        .filter(|_| is_record)
        .and_then(|from| latest.deltas.iter().find(|d| d.file == file.id && d.from == *from));
    if let Some(delta) = delta {
        entry.action = FileAction::Incremental {
            payload: payload(&file.blob),
            delta: Delta { from: delta.from.as_borrowed(), payload: payload(&delta.blob) },
        };
        return entry;
    }
    let patch = client_version
        .filter(|_| audience.patches)
        .and_then(|from| latest.patches.iter().find(|p| p.file == file.id && p.from == *from));
    entry.patch = patch.map(|patch| FilePatch {
        format: Cow::Borrowed(PATCH_FORMAT_BSDIFF),
        from: patch.from.as_borrowed(),
        base_sha256: patch.base_sha256,
        payload: payload(&patch.blob),
    });
    entry
}

fn delete_entry<'c>(id: &'c str, version: &'c Version<'static>) -> FileEntry<'c> {
    FileEntry {
        id: Cow::Borrowed(id),
        version: version.as_borrowed(),
        action: FileAction::Delete,
        frequent: false,
        executable: false,
        patch: None,
    }
}

/// Package or file list (§5.3): the package when a listed file is critical (error 22 if the
/// release has none), else the file list.
fn choose_upgrade<'c>(
    catalog: &'c Catalog,
    module: &'c Module,
    latest: &'c Release,
    mut answer: ModuleAnswer<'c>,
    entries: Vec<FileEntry<'c>>,
) -> ModuleAnswer<'c> {
    let critical = entries.iter().any(|e| matches_any(&catalog.settings.critical, &e.id));
    if critical || (entries.is_empty() && answer.status == Status::Update) {
        let Some(package) = &latest.package else {
            return error_answer(module, ErrorCode::ModuleError);
        };
        answer.upgrade = UpgradeInfo::Package(PackageInfo {
            payload: payload(&package.blob),
            args: package.args.as_deref().map(Cow::Borrowed),
        });
        return answer;
    }
    if !entries.is_empty() {
        answer.upgrade = UpgradeInfo::Files(entries);
    }
    answer
}

/// The server's frequent list for the module when the query's file entries differ (§5.7).
fn add_frequent_hint<'c>(answer: &mut ModuleAnswer<'c>, module: &'c Module, asked: &[QueryFile<'_>]) {
    if module.frequent.is_empty() || answer.status == Status::Unknown {
        return;
    }
    let asked: BTreeSet<&str> = asked.iter().map(|f| f.id.as_ref()).collect();
    let listed: BTreeSet<&str> = module.frequent.iter().map(String::as_str).collect();
    if asked != listed {
        answer.frequent = module.frequent.iter().map(|f| Cow::Borrowed(f.as_str())).collect();
    }
}

/// Appends answers for modules that updated answers require but the query did not contain,
/// as for modules not installed (§5.6), each once; dependency answers are visited in turn.
/// `required` gives the catalog modules an answer pulls in; `dependency` answers one of them.
fn add_dependencies<'c, T>(
    query: &Query<'_>,
    answers: &mut Vec<T>,
    required: impl Fn(&T) -> Vec<&'c Module>,
    mut dependency: impl FnMut(&'c Module) -> T,
) {
    let mut asked: Option<HashSet<&str>> = None;
    let mut included: BTreeSet<&'c str> = BTreeSet::new();
    let mut i = 0;
    while i < answers.len() {
        for module in required(&answers[i]) {
            let id = module.id.as_str();
            let asked = asked.get_or_insert_with(|| query.modules.iter().map(|m| m.id.as_ref()).collect());
            if asked.contains(id) || !included.insert(id) {
                continue;
            }
            answers.push(dependency(module));
        }
        i += 1;
    }
}

/// Whether every requirement of `answer`, transitively through the latest releases the
/// audience is offered, exists, is new enough, and is free of cycles.
fn check_requirements(catalog: &Catalog, audience: &Audience<'_>, answer: &ModuleAnswer<'_>) -> Result<(), ErrorCode> {
    let mut stack: Vec<(&str, usize)> = vec![(answer.id.as_ref(), 0)];
    let mut on_path: Vec<&str> = vec![answer.id.as_ref()];
    let mut done: HashSet<&str> = HashSet::new();
    while let Some((id, next)) = stack.pop() {
        let requires =
            catalog.modules.get(id).and_then(|m| audience.latest(m)).map(|r| r.requires.as_slice()).unwrap_or(&[]);
        let Some((dep, min)) = requires.get(next) else {
            done.insert(id);
            on_path.pop();
            continue;
        };
        stack.push((id, next + 1));
        let module = catalog.modules.get(dep.as_str()).ok_or(ErrorCode::DependencyUnresolvable)?;
        let latest = audience.latest(module).ok_or(ErrorCode::DependencyUnresolvable)?;
        if latest.version < *min || on_path.contains(&module.id.as_str()) {
            return Err(ErrorCode::DependencyUnresolvable);
        }
        if !done.contains(module.id.as_str()) {
            on_path.push(module.id.as_str());
            stack.push((module.id.as_str(), 0));
        }
    }
    Ok(())
}

/// Bytes every file entry with a payload takes at least: its SHA-256 in hex.
const PAYLOAD_HEX_LEN: usize = 64;

/// A lower bound on the length of the response body [`respond`] would encode for `query`,
/// computed without building it: for each module asked without file entries that the answer
/// would list file by file, its id plus a payload hash per listed file. Modules whose answer
/// may be a package (a critical file among the entries) or depends on file entries count 0.
///
/// Cheap on purpose: it decides whether an unvalidated source can be sent the answer at all
/// (SPEC.md §10.6) before anything is built or signed. It stops counting at `enough`.
///
/// `now` is the issue time the answer would have (rollouts depend on it).
pub fn least_answer_len(catalog: &Catalog, query: &Query<'_>, now: u64, enough: usize) -> usize {
    least_answer_len_with(catalog, query, now, enough, least_listed_len)
}

/// [`least_answer_len`], with `listed` giving each module's share.
fn least_answer_len_with(
    catalog: &Catalog,
    query: &Query<'_>,
    now: u64,
    enough: usize,
    mut listed: impl FnMut(&Catalog, &Module, &Release, Option<&Version<'_>>) -> usize,
) -> usize {
    let audience = Audience::of(query, now);
    let mut total = 0;
    for asked in query.modules.iter().filter(|m| m.files.is_empty()) {
        let Some(module) = catalog.modules.get(asked.id.as_ref()) else { continue };
        let Some(latest) = audience.latest(module) else { continue };
        total += listed(catalog, module, latest, asked.version.as_ref());
        if total >= enough {
            break;
        }
    }
    total
}

/// Most module questions a [`LeastLengths`] remembers before it starts again.
const MAX_LEAST_LENGTHS: usize = 16_384;

/// [`least_answer_len`] with each module question's share remembered (a module from an
/// installed version to its latest release, for one catalog generation): a module of many
/// files costs a walk of its files and a glob match per file the first time only, so sources
/// that have not proven their address cost little however many distinct queries they send.
#[derive(Debug, Default)]
pub struct LeastLengths {
    generation: u64,
    shares: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    /// The key being looked up, reused.
    key: String,
}

impl LeastLengths {
    /// [`least_answer_len`] of `query` against `catalog`, whose generation is `generation`.
    pub fn least_answer_len(
        &mut self,
        catalog: &Catalog,
        generation: u64,
        query: &Query<'_>,
        now: u64,
        enough: usize,
    ) -> usize {
        if generation != self.generation || self.shares.len() >= MAX_LEAST_LENGTHS {
            self.shares.clear();
            self.generation = generation;
        }
        least_answer_len_with(catalog, query, now, enough, |catalog, module, latest, installed| {
            self.key.clear();
            // Ids and versions hold no NUL, so the key is unambiguous.
            for part in [module.id.as_str(), latest.version.as_str(), installed.map_or("", |v| v.as_str())] {
                self.key.push_str(part);
                self.key.push('\0');
            }
            if let Some(&share) = self.shares.get(self.key.as_str()) {
                return share;
            }
            let share = least_listed_len(catalog, module, latest, installed);
            self.shares.insert(self.key.as_str().into(), share);
            share
        })
    }
}

/// The files an install or an upgrade from `installed` lists for certain, if its answer is a
/// file list (no critical entry), as bytes of ids and payload hashes; 0 otherwise.
fn least_listed_len(catalog: &Catalog, module: &Module, latest: &Release, installed: Option<&Version<'_>>) -> usize {
    let critical = |id: &str| matches_any(&catalog.settings.critical, id);
    if let Some(installed) = installed
        && (*installed >= latest.version || deleted_since(module, latest, installed).into_iter().any(critical))
    {
        return 0;
    }
    let mut len = 0;
    for file in latest.files.iter().filter(|f| installed.is_none_or(|v| f.version > *v)) {
        if critical(&file.id) {
            return 0;
        }
        len += file.id.len() + PAYLOAD_HEX_LEN;
    }
    len
}
