//! The admission filter of the workers' caches (a TinyLFU-style doorkeeper): a key is kept
//! from the second time it comes. Real queries are mostly distinct, so keeping everything
//! would copy and hold each new entry only to drop them all when the cache fills (and drop
//! the popular entries with them); with the doorkeeper, an entry seen once costs a fingerprint,
//! and one that repeats is kept at its second coming and served from the cache from its third.

use std::hash::BuildHasher as _;

use upgram_core::Sha256Digest;

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
        self.admit_fingerprint(self.hasher.hash_one(key) ^ salt)
    }

    /// [`Self::admit`] for a key known by its SHA-256, already computed: its first 8 bytes are
    /// hashed with this doorkeeper's random key, so which keys share a slot cannot be
    /// predicted from outside.
    pub(crate) fn admit_digest(&mut self, digest: &Sha256Digest, salt: u64) -> bool {
        let mut prefix = [0; 8];
        prefix.copy_from_slice(&digest.0[..8]);
        self.admit_fingerprint(self.hasher.hash_one(u64::from_le_bytes(prefix) ^ salt))
    }

    fn admit_fingerprint(&mut self, fingerprint: u64) -> bool {
        // Never 0, the mark of an empty slot.
        let kept = ((fingerprint >> 32) as u32).max(1);
        let mask = self.seen.len() - 1;
        let Some(slot) = self.seen.get_mut((fingerprint as usize) & mask) else { return false };
        let seen = *slot == kept;
        *slot = kept;
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_admitted_from_its_second_coming_in_its_own_variant() {
        let mut doorkeeper = Doorkeeper::for_capacity(16);
        assert!(!doorkeeper.admit(b"a", 0));
        assert!(!doorkeeper.admit(b"a", 1), "another variant is another key");
        assert!(doorkeeper.admit(b"a", 1));
        let digest = Sha256Digest::of(b"a");
        assert!(!doorkeeper.admit_digest(&digest, 0));
        assert!(doorkeeper.admit_digest(&digest, 0));
        // Bounded: a flood of new keys pushes old ones out, and none is admitted on its first.
        let admitted = (0..10_000u32).filter(|i| doorkeeper.admit(&i.to_le_bytes(), 0)).count();
        assert!(admitted < 100, "{admitted} of 10 000 new keys admitted");
        assert_eq!(doorkeeper.seen.len(), 64);
    }
}
