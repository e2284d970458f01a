//! Every size limit of the protocol in one place (SPEC.md §10.8, "Size limits").
//!
//! Both sides enforce these before doing work proportional to the input, so that no input can
//! make a decoder allocate or loop without bound.

/// Largest datagram, in either direction, header and signature included.
pub const MAX_DATAGRAM_LEN: usize = 1024;
/// Length of the fixed binary header.
pub const HEADER_LEN: usize = 20;
/// Longest audit path of a batch-signed reply, in hashes: a batch holds at most
/// 2^6 = [`MAX_BATCH_LEN`] answers. The batch trailer then takes at most
/// 2 + 6 × 32 = 194 bytes (see [`MAX_BATCH_TRAILER_LEN`]), which leaves an answer at least
/// 1024 − 20 − 104 − 194 = 706 bytes of body even with a server cookie and a nonce: an answer
/// with a longer body is signed alone, or in a batch of a shorter path.
pub const MAX_BATCH_DEPTH: usize = 6;
/// Most answers under one batch signature.
pub const MAX_BATCH_LEN: usize = 1 << MAX_BATCH_DEPTH;
/// Largest batch trailer: depth, index and the longest audit path (the root is not carried).
pub const MAX_BATCH_TRAILER_LEN: usize = 2 + 32 * MAX_BATCH_DEPTH;
/// Largest fallback document a client fetches over HTTP.
pub const MAX_DOCUMENT_LEN: usize = 4 * 1024 * 1024;
/// Deepest element nesting accepted in an XML body (known and unknown elements alike).
pub const MAX_XML_DEPTH: usize = 8;
/// Longest attribute value, in bytes after unescaping.
pub const MAX_ATTRIBUTE_LEN: usize = 2048;
/// Longest attribute value as written, before unescaping: room for every byte of a
/// [`MAX_ATTRIBUTE_LEN`] value to be escaped (the longest escape, `&quot;`, is 6 bytes).
pub const MAX_RAW_ATTRIBUTE_LEN: usize = 8 * MAX_ATTRIBUTE_LEN;
/// Most attributes on one element.
pub const MAX_ATTRIBUTES: usize = 16;
/// Most elements in one document.
pub const MAX_ELEMENTS: usize = 250_000;
/// Most modules in one query or response.
pub const MAX_MODULES: usize = 100_000;
/// Most files under one module of a query or response.
pub const MAX_FILES_PER_MODULE: usize = 100_000;
/// Most outcomes in one install report (SPEC.md §4.7); the report must also fit one datagram,
/// so a client sends fewer when their module ids and versions are long.
pub const MAX_OUTCOMES_PER_REPORT: usize = 16;

/// Most patch formats a query names in its `patch` attribute.
pub const MAX_PATCH_FORMATS: usize = 8;
/// Most mirrors in a fallback body.
pub const MAX_MIRRORS: usize = 8;
/// Longest module id.
pub const MAX_MODULE_ID_LEN: usize = 128;
/// Longest file id (a relative path).
pub const MAX_FILE_ID_LEN: usize = 255;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 64;
/// Longest freeze window: `expires - issued` of a signed answer, in seconds.
pub const MAX_VALIDITY_SECS: u64 = 600;
/// How far in the future a signed answer's `issued` may lie, to tolerate clock skew.
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;
/// A server never sends an unvalidated source more than this many times the bytes it received.
pub const AMPLIFICATION_FACTOR: usize = 3;
/// A query at least this long may receive any reply without a cookie round trip.
pub const MIN_UNRESTRICTED_QUERY_LEN: usize = MAX_DATAGRAM_LEN.div_ceil(AMPLIFICATION_FACTOR);
/// The trailer bytes of a query that carries both cookies, client and server (SPEC.md §3.4).
pub const QUERY_COOKIES_LEN: usize = crate::cookie::ClientCookie::LEN + crate::cookie::ServerCookie::LEN;

/// Room for a query body: a datagram less the header and the largest trailer the query may
/// carry (both cookies, and a nonce if it asks for a nonce-bound signature).
pub const fn max_query_body_len(nonce_bound: bool) -> usize {
    let nonce = if nonce_bound { crate::sign::Nonce::LEN } else { 0 };
    MAX_DATAGRAM_LEN - HEADER_LEN - QUERY_COOKIES_LEN - nonce
}
