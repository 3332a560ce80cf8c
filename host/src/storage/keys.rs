//! Which idempotency keys a journal may hold, answered from memory: a Bloom filter over
//! every key the file holds, so that a new booking (nearly every booking) learns that no
//! earlier answer exists without reading the journal's index from disk.
//!
//! A Bloom filter has no false negatives: a key it says is absent was never added, and the
//! owner adds every key before its record can be read. A false positive only costs the
//! read it would have cost without the filter. Keys stay in the filter after their record
//! is pruned until it is rebuilt ([`JournalKeys::rebuild`]) from the keys left. It is only
//! valid for a store one process writes: SQLite, which locks its file to one host.
//!
//! The filter is blocked: each key sets 4 bits in one 64-bit word, so a lookup is one
//! memory read. At [`BITS_PER_KEY`] bits per key the false positive rate is about 0.3 %.

use arc_swap::ArcSwap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bits of filter per key it is sized for.
pub const BITS_PER_KEY: usize = 20;

/// The filter is sized for at least this many keys (5 MiB → 4 MiB rounded down to a power
/// of two words): a new store does not rebuild while it grows to its first million.
const MIN_KEYS: usize = 1 << 20;

/// And at most this many words (128 MiB): past that the filter answers "maybe" more often,
/// and each "maybe" costs a read, as it did without the filter.
const MAX_WORDS: usize = 1 << 24;

/// One filter of a fixed size.
struct Filter {
    words: Box<[AtomicU64]>,
    /// Keys added since it was built (including those it was built from).
    added: AtomicUsize,
    /// How many keys it is sized for.
    capacity: usize,
}

impl Filter {
    fn for_keys(keys: usize) -> Filter {
        let wanted = keys.max(MIN_KEYS) * BITS_PER_KEY / 64;
        let words = wanted.next_power_of_two().min(MAX_WORDS);
        Filter {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            added: AtomicUsize::new(0),
            capacity: words * 64 / BITS_PER_KEY,
        }
    }

    /// The word a key lives in, and its 4 bits there.
    fn place(&self, key: &str) -> (usize, u64) {
        let h = hash(key);
        let word = (h as usize) & (self.words.len() - 1);
        let bits = (h >> 32) as u32;
        let mask = (0..4).fold(0u64, |m, i| m | 1 << ((bits >> (6 * i)) & 63));
        (word, mask)
    }

    fn add(&self, key: &str) {
        let (word, mask) = self.place(key);
        self.words[word].fetch_or(mask, Ordering::Release);
        self.added.fetch_add(1, Ordering::Relaxed);
    }

    fn may_hold(&self, key: &str) -> bool {
        let (word, mask) = self.place(key);
        self.words[word].load(Ordering::Acquire) & mask == mask
    }
}

/// The hash of a key, the same in every process (the filter is rebuilt, never saved, but
/// a fixed hash keeps its behaviour reproducible). The memory journal is ordered by it too.
pub(super) fn hash(key: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(key.as_bytes());
    h.finish()
}

/// The keys a journal may hold (see the module documentation).
pub struct JournalKeys {
    filter: ArcSwap<Filter>,
}

impl std::fmt::Debug for JournalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filter = self.filter.load();
        f.debug_struct("JournalKeys")
            .field("bytes", &(filter.words.len() * 8))
            .field("added", &filter.added.load(Ordering::Relaxed))
            .finish()
    }
}

impl JournalKeys {
    /// An empty filter sized for twice `count` keys (and at least a million).
    pub fn with_capacity(count: usize) -> JournalKeys {
        JournalKeys {
            filter: ArcSwap::from_pointee(Filter::for_keys(count.saturating_mul(2))),
        }
    }

    /// False only if `key` was never added: its record is certainly not in the journal.
    pub fn may_hold(&self, key: &str) -> bool {
        self.filter.load().may_hold(key)
    }

    /// Adds `key`; called before its record can be read.
    pub fn add(&self, key: &str) {
        self.filter.load().add(key);
    }

    /// Whether the filter holds more keys than it was sized for, or is four times larger
    /// than the journal's `count` keys need: then a rebuild pays.
    pub fn worth_rebuilding(&self, count: usize) -> bool {
        let filter = self.filter.load();
        let needed = Filter::for_keys(count.saturating_mul(2)).words.len();
        filter.added.load(Ordering::Relaxed) > filter.capacity || filter.words.len() >= needed * 4
    }

    /// Serves `rebuilt` from now on. The caller keeps every new key from being added
    /// between the rebuild's start and this swap (it holds the writer), so none is lost.
    pub fn replace_with(&self, rebuilt: JournalKeys) {
        self.filter.store(rebuilt.filter.into_inner());
    }

    /// The filter's size in bytes.
    pub fn bytes(&self) -> usize {
        self.filter.load().words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> String {
        crate::contract::idempotency::hex(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(i.to_le_bytes()),
        ))
    }

    #[test]
    fn every_added_key_is_held_and_few_others_seem_to_be() {
        let keys: Vec<String> = (0..200_000).map(key).collect();
        let filter = JournalKeys::with_capacity(0);
        for k in &keys[..150_000] {
            filter.add(k);
        }
        for k in &keys[..150_000] {
            assert!(filter.may_hold(k), "a key added is held");
        }
        let false_positives = keys[150_000..]
            .iter()
            .filter(|k| filter.may_hold(k))
            .count();
        // 150,000 keys in a filter sized for 1.7 M: far under its 0.3 % at capacity.
        assert!(false_positives < 50, "{false_positives} of 50,000");
        assert_eq!(filter.bytes(), 4 << 20);
    }

    #[test]
    fn at_capacity_the_false_positive_rate_stays_under_one_percent() {
        let filter = JournalKeys::with_capacity(0);
        let capacity = filter.filter.load().capacity;
        for i in 0..capacity {
            filter.add(&format!("k{i}"));
        }
        let probes = 100_000;
        let hits = (0..probes)
            .filter(|i| filter.may_hold(&format!("absent-{i}")))
            .count();
        assert!(hits * 100 < probes, "{hits} of {probes}");
        assert!(!filter.worth_rebuilding(capacity / 2));
        filter.add("one more");
        assert!(filter.worth_rebuilding(capacity / 2));
    }

    #[test]
    fn a_rebuild_forgets_what_is_gone_and_shrinks_an_oversized_filter() {
        let keys: Vec<String> = (0..1000).map(key).collect();
        let filter = JournalKeys::with_capacity(4_000_000);
        keys.iter().for_each(|k| filter.add(k));
        let big = filter.bytes();
        assert!(
            filter.worth_rebuilding(500),
            "sized for 8 M keys, holding 500"
        );
        let rebuilt = JournalKeys::with_capacity(500);
        keys[500..].iter().for_each(|k| rebuilt.add(k));
        filter.replace_with(rebuilt);
        assert!(filter.bytes() < big);
        assert!(keys[500..].iter().all(|k| filter.may_hold(k)));
        let kept = keys[..500].iter().filter(|k| filter.may_hold(k)).count();
        assert!(kept < 5, "{kept} of the 500 gone keys still seem held");
    }
}
