//! The admission filter of the workers' caches (a TinyLFU-style doorkeeper): a key is kept
//! from the second time it comes. Real queries are mostly distinct, so keeping everything
//! would copy and hold each new entry only to drop them all when the cache fills (and drop
//! the popular entries with them); with the doorkeeper, an entry seen once costs a fingerprint,
//! and one that repeats is kept at its second coming and served from the cache from its third.

use std::hash::BuildHasher as _;

/// Fingerprints of the keys seen, one per slot, a slot chosen by the fingerprint's low bits,
/// the slot holding its high 32 bits: a newer key takes the slot of an older one. Bounded (4
/// bytes a slot), no allocation after the first, O(1). A fingerprint can match another key's,
/// which only keeps an entry one coming early.
#[derive(Debug)]
pub(crate) struct Doorkeeper {
    seen: Box<[u32]>,
    hasher: foldhash::fast::RandomState,
}

impl Doorkeeper {
    /// A doorkeeper for a cache of at most `capacity` entries: it remembers about four times
    /// as many keys.
    pub(crate) fn for_capacity(capacity: usize) -> Self {
        let slots = capacity.saturating_mul(4).next_power_of_two().max(1);
        Self { seen: vec![0; slots].into_boxed_slice(), hasher: foldhash::fast::RandomState::default() }
    }

    /// Whether `key` (in the variant `salt`) was seen before, here or in an earlier window of
    /// the cache. Records it as seen.
    pub(crate) fn admit(&mut self, key: &[u8], salt: u64) -> bool {
        let fingerprint = self.hasher.hash_one(key) ^ salt;
        // Never 0, the mark of an empty slot.
        let kept = ((fingerprint >> 32) as u32).max(1);
        let mask = self.seen.len() - 1;
        let Some(slot) = self.seen.get_mut((fingerprint as usize) & mask) else { return false };
        let seen = *slot == kept;
        *slot = kept;
        seen
    }
}
