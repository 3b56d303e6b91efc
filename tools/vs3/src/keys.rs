//! Generated keys: `key(i)` is strictly increasing in `i` (S3's byte order), so a listing is a
//! binary search plus a walk, and a key maps back to its index. Plus the copy bitmap.

use std::sync::atomic::{AtomicU64, Ordering};

/// How keys are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 16 hex digits spread evenly over the hash space, no `/`.
    Flat,
    /// `data/` and 16 hex digits.
    OnePrefix,
    /// `pNNNN/` (1,000 prefixes) and 16 hex digits.
    ManyPrefixes,
}

const PREFIXES: u64 = 1000;

fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th of `n` hex names: evenly spaced, jittered inside its slot, so increasing.
fn hex(i: u64, n: u64) -> String {
    let slot = u64::MAX / n.max(1);
    format!("{:016x}", i * slot + splitmix(i) % slot)
}

fn hex_index(s: &str, n: u64) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    let v = u64::from_str_radix(s, 16).ok()?;
    let i = v / (u64::MAX / n.max(1));
    (i < n && hex(i, n) == s).then_some(i)
}

impl Layout {
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "flat" => Some(Layout::Flat),
            "one-prefix" => Some(Layout::OnePrefix),
            "many-prefixes" => Some(Layout::ManyPrefixes),
            _ => None,
        }
    }

    pub fn key(&self, i: u64, n: u64) -> String {
        match self {
            Layout::Flat => hex(i, n),
            Layout::OnePrefix => format!("data/{}", hex(i, n)),
            Layout::ManyPrefixes => {
                let per = n.div_ceil(PREFIXES).max(1);
                format!("p{:04}/{}", i / per, hex(i % per, per))
            }
        }
    }

    /// The index of `key`, if it is one of the `n` keys.
    pub fn index(&self, key: &str, n: u64) -> Option<u64> {
        match self {
            Layout::Flat => hex_index(key, n),
            Layout::OnePrefix => hex_index(key.strip_prefix("data/")?, n),
            Layout::ManyPrefixes => {
                let per = n.div_ceil(PREFIXES).max(1);
                let (p, rest) = key.strip_prefix('p')?.split_once('/')?;
                let p: u64 = p.parse().ok()?;
                let i = p * per + hex_index(rest, per)?;
                (i < n && self.key(i, n) == key).then_some(i)
            }
        }
    }

    /// The first index whose key satisfies `above` (monotone: false, then true).
    fn search(&self, n: u64, above: impl Fn(&str) -> bool) -> u64 {
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if above(&self.key(mid, n)) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// The first index whose key sorts after `after`.
    pub fn first_above(&self, after: &str, n: u64) -> u64 {
        self.search(n, |k| k > after)
    }

    /// The first index whose key sorts at or after `prefix`.
    pub fn first_at_least(&self, prefix: &str, n: u64) -> u64 {
        self.search(n, |k| k >= prefix)
    }
}

/// The ETag of key `i`: 32 hex digits, as S3 gives single-part objects (`ETag::Strong` quotes
/// it on the wire; an inventory report gives it bare).
pub fn etag(i: u64) -> String {
    format!("{:016x}{:016x}", splitmix(i), splitmix(!i))
}

/// A fixed-size concurrent bitmap.
pub struct Bitmap(Vec<AtomicU64>);

impl Bitmap {
    pub fn new(n: u64) -> Bitmap {
        Bitmap((0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    /// Sets bit `i`; `true` if it was set already.
    pub fn set(&self, i: u64) -> bool {
        let bit = 1u64 << (i % 64);
        self.0[(i / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0
    }

    pub fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize].load(Ordering::Relaxed) & (1u64 << (i % 64)) != 0
    }

    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// The first set bit at or after `from` (below `n`).
    pub fn next_set(&self, from: u64, n: u64) -> Option<u64> {
        let mut w = (from / 64) as usize;
        let mut word = self.0.get(w)?.load(Ordering::Relaxed) & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                let i = w as u64 * 64 + u64::from(word.trailing_zeros());
                return (i < n).then_some(i);
            }
            w += 1;
            word = self.0.get(w)?.load(Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_increase_with_their_index_and_map_back_to_it() {
        for layout in [Layout::Flat, Layout::OnePrefix, Layout::ManyPrefixes] {
            for n in [1u64, 7, 1000, 123_457] {
                let mut prev = String::new();
                for i in (0..n).step_by((n as usize / 500).max(1)) {
                    let k = layout.key(i, n);
                    assert!(k > prev, "{layout:?} n={n}: {k} after {prev}");
                    assert_eq!(layout.index(&k, n), Some(i), "{layout:?} {k}");
                    assert_eq!(layout.first_above(&prev, n) <= i, true);
                    assert_eq!(layout.first_at_least(&k, n), i);
                    assert_eq!(layout.first_above(&k, n), i + 1);
                    prev = k;
                }
                assert_eq!(layout.index("zzz", n), None);
            }
        }
    }

    #[test]
    fn the_bitmap_counts_repeats_and_finds_the_next_set_bit() {
        let b = Bitmap::new(200);
        assert!(!b.set(3));
        assert!(b.set(3));
        assert!(!b.set(130));
        assert_eq!(b.count(), 2);
        assert_eq!(b.next_set(0, 200), Some(3));
        assert_eq!(b.next_set(4, 200), Some(130));
        assert_eq!(b.next_set(131, 200), None);
    }
}
