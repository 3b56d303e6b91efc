//! Splitting a key range into listing partitions without a delimiter: a few `ListObjectsV2`
//! probes (`StartAfter`, `MaxKeys=1`) find which characters keys actually use, and the range
//! is cut at those prefixes. Works the same on hash-named flat buckets, on data under one
//! prefix and on many prefixes. No IO of its own: the caller passes a [`Keyspace`] that answers
//! "the first key after this one", so the algorithm is table-tested on in-memory key sets.
//!
//! # How
//! 1. The first key `f` of the range (one probe).
//! 2. The longest prefix every key of the range shares: a binary search over the prefixes of
//!    `f`, asking for the first key after `f[..d]` followed by the largest character (a key
//!    sorting after every key that starts with `f[..d]`). None means all keys start with it.
//!    About `log2(len f)` probes; it skips `data/` or `logs/2026/` in one go.
//! 3. Groups are expanded heaviest first: the group of keys starting with `q` is replaced by one
//!    group per next character, found by "skip" probes (the first key after `q c MAX` has the
//!    next character in use). Each child gets an equal share of its parent's estimated weight.
//! 4. When the probe budget is spent, groups still heavier than one range are split on paper by
//!    the alphabet their parent level used (hash names repeat their alphabet at every
//!    position). Such a guess can only cost balance, never correctness.
//! 5. Boundaries are picked at the weight quantiles. A group's boundary is its prefix `q`:
//!    keys `<= q` fall in the range before, every key starting with `q` after it.
//!
//! # Guarantees
//! - The boundaries are strictly increasing and lie inside the range, so the ranges they cut
//!   tile it exactly (each key in exactly one range) whatever the probes answered.
//! - At most `budget` probes.
//!
//! # Caveats
//! - Weights are estimates (equal shares per character). A skewed keyspace gets uneven ranges;
//!   the work queue evens that out, since any task copies any listed chunk.

use std::future::Future;

use super::plan::Range;

/// A character sorting after every other: `q` followed by it sorts after every key starting
/// with `q` (short of keys that themselves contain it).
const MAX_CHAR: char = char::MAX;

/// Probes the planner spends at most: the first LIST requests of a run.
pub const PLAN_PROBES: usize = 40;

/// The answer to one probe: the first key of the range after a given key.
pub trait Keyspace {
    type Error;
    /// The first key (relative, in S3's UTF-8 byte order) after `after`, or from the start of
    /// the listed space when `None`. May return keys beyond the range being split; the splitter
    /// ignores them.
    fn first_after(
        &mut self,
        after: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>>;
}

/// One group of keys: those starting with `prefix` followed by a character in `span` (both
/// ends included), or every key starting with `prefix` when `span` is `None`.
#[derive(Debug, Clone)]
struct Group {
    prefix: String,
    span: Option<(char, char)>,
    /// The group's first key, when a probe found it.
    first: Option<String>,
    weight: f64,
    /// The characters its parent level used: the guess for its own next characters.
    alphabet: Vec<char>,
    /// No probe can split it further (expanded already, or a single key).
    settled: bool,
}

impl Group {
    /// Keys before this string belong to the groups before.
    fn boundary(&self) -> String {
        match self.span {
            None => self.prefix.clone(),
            Some((a, _)) => format!("{}{a}", self.prefix),
        }
    }

    /// Splits the group on paper: by the guessed alphabet, or evenly by code point over its
    /// span. `None` when it cannot be split.
    fn guess(&self, pieces: usize) -> Option<Vec<Group>> {
        let child = |prefix: String, span, weight| Group {
            prefix,
            span,
            first: None,
            weight,
            alphabet: self.alphabet.clone(),
            settled: true,
        };
        match self.span {
            None if self.alphabet.len() > 1 => {
                let share = self.weight / self.alphabet.len() as f64;
                Some(
                    self.alphabet
                        .iter()
                        .map(|c| child(format!("{}{c}", self.prefix), None, share))
                        .collect(),
                )
            }
            None => None,
            Some((a, b)) => {
                let (a, b) = (a as u32, b as u32);
                let width = b - a + 1;
                let pieces = (pieces as u32).clamp(2, width.max(2));
                if width < 2 {
                    return None;
                }
                let mut out = Vec::new();
                for k in 0..pieces {
                    let from = a + width * k / pieces;
                    let to = a + width * (k + 1) / pieces - 1;
                    let (Some(from), Some(to)) = (valid_char(from, true), valid_char(to, false))
                    else {
                        continue;
                    };
                    if from > to {
                        continue;
                    }
                    let weight =
                        self.weight * f64::from(to as u32 - from as u32 + 1) / f64::from(width);
                    out.push(if from == to {
                        child(format!("{}{from}", self.prefix), None, weight)
                    } else {
                        child(self.prefix.clone(), Some((from, to)), weight)
                    });
                }
                (out.len() > 1).then_some(out)
            }
        }
    }
}

/// The char at code point `v`, or the nearest one up (`up`) or down across the surrogate gap.
fn valid_char(v: u32, up: bool) -> Option<char> {
    char::from_u32(v).or_else(|| {
        if up {
            char::from_u32(0xE000)
        } else {
            char::from_u32(0xD7FF)
        }
    })
}

/// What a split found and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Strictly increasing boundaries inside the range (see [`super::plan::ranges_from`]).
    pub boundaries: Vec<String>,
    /// Probes spent.
    pub probes: usize,
}

struct Prober<'a, K> {
    keys: &'a mut K,
    range: &'a Range,
    probes: usize,
    budget: usize,
}

impl<K: Keyspace> Prober<'_, K> {
    fn left(&self) -> usize {
        self.budget.saturating_sub(self.probes)
    }

    /// The first key of the range after `after` (the range's own start if `None`).
    async fn next(&mut self, after: Option<&str>) -> Result<Option<String>, K::Error> {
        let after = after.or(self.range.after.as_deref());
        self.probes += 1;
        let key = self.keys.first_after(after).await?;
        Ok(key.filter(|k| self.range.contains(k) && after.is_none_or(|a| k.as_str() > a)))
    }
}

/// `q` followed by [`MAX_CHAR`]: the first key after it is the first one not starting with `q`.
fn past(q: &str) -> String {
    let mut s = String::with_capacity(q.len() + 4);
    s.push_str(q);
    s.push(MAX_CHAR);
    s
}

/// The prefix of `key` of `n` characters.
fn chars_prefix(key: &str, n: usize) -> &str {
    match key.char_indices().nth(n) {
        Some((i, _)) => &key[..i],
        None => key,
    }
}

/// Splits `range` into about `target` ranges with at most `budget` probes of `keys`.
pub async fn split<K: Keyspace>(
    keys: &mut K,
    range: &Range,
    target: usize,
    budget: usize,
) -> Result<Split, K::Error> {
    let mut p = Prober {
        keys,
        range,
        probes: 0,
        budget,
    };
    let target = target.max(1);
    let Some(first) = p.next(None).await? else {
        return Ok(Split {
            boundaries: Vec::new(),
            probes: p.probes,
        });
    };
    if target == 1 {
        return Ok(Split {
            boundaries: Vec::new(),
            probes: p.probes,
        });
    }
    // 2. The longest shared prefix: "all keys start with f[..d]" holds for d = 0 and, once
    // false, stays false for longer prefixes.
    let (mut lo, mut hi) = (0usize, first.chars().count());
    while lo < hi && p.left() > 0 {
        let mid = (lo + hi).div_ceil(2);
        if p.next(Some(&past(chars_prefix(&first, mid))))
            .await?
            .is_none()
        {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut groups = vec![Group {
        prefix: chars_prefix(&first, lo).to_string(),
        span: None,
        first: Some(first.clone()),
        weight: 1.0,
        alphabet: Vec::new(),
        settled: false,
    }];
    let fine = 1.0 / target as f64;
    // 3. Expand the heaviest group by probes while the budget pays for its whole alphabet.
    while let Some(i) = heaviest(&groups, |g| !g.settled && g.span.is_none()) {
        let needed = groups[i].alphabet.len().max(2) + 1;
        if groups[i].weight <= fine || p.left() < needed {
            break;
        }
        let children = expand(&mut p, &groups[i]).await?;
        groups.splice(i..=i, children);
    }
    // 4. Split what is still heavier than a range by guesses.
    let mut guard = 0;
    while let Some(i) = heaviest(&groups, |_| true)
        && groups[i].weight > fine
        && guard < 8 * target
    {
        guard += 1;
        let Some(i) = heaviest(&groups, |g| g.weight > fine && g.guess(2).is_some()) else {
            break;
        };
        let pieces = (groups[i].weight / fine).ceil() as usize;
        let children = groups[i].guess(pieces).unwrap_or_default();
        groups.splice(i..=i, children);
    }
    // 5. A boundary before a group when a quantile of the weight lies between its midpoint
    // and the previous group's.
    let total: f64 = groups.iter().map(|g| g.weight).sum();
    let quantum = total / target as f64;
    let cuts_below = |x: f64| ((x / quantum + 1e-9).floor() as usize).min(target - 1);
    let mut boundaries: Vec<String> = Vec::new();
    let (mut start, mut prev_mid) = (0.0, 0.0);
    for (i, g) in groups.iter().enumerate() {
        let mid = start + g.weight / 2.0;
        if i > 0 && cuts_below(mid) > cuts_below(prev_mid) {
            boundaries.push(g.boundary());
        }
        prev_mid = mid;
        start += g.weight;
    }
    boundaries.retain(|b| range.contains(b) && range.upto.as_deref() != Some(b.as_str()));
    boundaries.sort();
    boundaries.dedup();
    Ok(Split {
        boundaries,
        probes: p.probes,
    })
}

/// The heaviest group `keep` accepts (the first of equals).
fn heaviest(groups: &[Group], keep: impl Fn(&Group) -> bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, g) in groups.iter().enumerate() {
        if keep(g) && best.is_none_or(|b| g.weight > groups[b].weight) {
            best = Some(i);
        }
    }
    best
}

/// Probes kept back when enumerating an alphabet, to find where it ends if it is cut short.
const RESERVE: usize = 8;

/// Replaces group `g` by one group per next character in use, found with skip probes. When the
/// budget cuts the enumeration short, the characters not enumerated become one span group
/// whose end a binary search finds and whose weight is extrapolated.
async fn expand<K: Keyspace>(p: &mut Prober<'_, K>, g: &Group) -> Result<Vec<Group>, K::Error> {
    let depth = g.prefix.chars().count();
    // The first key of the group that is longer than its prefix.
    let mut key = match &g.first {
        Some(f) if f.as_str() != g.prefix => Some(f.clone()),
        _ => p.next(Some(&g.prefix)).await?,
    };
    let mut found: Vec<(char, String)> = Vec::new();
    let mut cut_short = false;
    while let Some(k) = key.take() {
        if !k.starts_with(g.prefix.as_str()) {
            break;
        }
        let Some(c) = k.chars().nth(depth) else { break };
        let child = format!("{}{c}", g.prefix);
        found.push((c, k));
        if p.left() <= RESERVE {
            cut_short = true;
            break;
        }
        key = p.next(Some(&past(&child))).await?;
    }
    let (Some(&(c_first, _)), Some(&(c_last, _))) = (found.first(), found.last()) else {
        let mut same = g.clone();
        same.settled = true;
        return Ok(vec![same]);
    };
    let mut rest = None;
    if cut_short {
        let c_max = last_char(p, &g.prefix, c_last).await?;
        if let Some(next) = valid_char(c_last as u32 + 1, true).filter(|n| *n <= c_max) {
            let seen = f64::from(c_last as u32 - c_first as u32 + 1);
            let density = found.len() as f64 / seen;
            rest = Some((
                next,
                c_max,
                density * f64::from(c_max as u32 - next as u32 + 1),
            ));
        }
    }
    let alphabet: Vec<char> = found.iter().map(|(c, _)| *c).collect();
    let units = found.len() as f64 + rest.map_or(0.0, |r| r.2);
    let share = g.weight / units;
    let mut children: Vec<Group> = found
        .into_iter()
        .map(|(c, first)| Group {
            prefix: format!("{}{c}", g.prefix),
            span: None,
            first: Some(first),
            weight: share,
            alphabet: alphabet.clone(),
            settled: false,
        })
        .collect();
    if let Some((from, to, n)) = rest {
        children.push(Group {
            prefix: g.prefix.clone(),
            span: Some((from, to)),
            first: None,
            weight: share * n,
            alphabet: alphabet.clone(),
            settled: true,
        });
    }
    Ok(children)
}

/// The largest character following `prefix` in a key of the range, given that `lo` does: a
/// binary search on code points, ASCII first (about 8 probes for ASCII keys).
async fn last_char<K: Keyspace>(
    p: &mut Prober<'_, K>,
    prefix: &str,
    lo: char,
) -> Result<char, K::Error> {
    let depth = prefix.chars().count();
    let above = async |p: &mut Prober<'_, K>, c: char| -> Result<Option<char>, K::Error> {
        let key = p.next(Some(&past(&format!("{prefix}{c}")))).await?;
        Ok(key
            .filter(|k| k.starts_with(prefix))
            .and_then(|k| k.chars().nth(depth)))
    };
    let (mut lo, mut hi) = (lo, char::MAX);
    if lo < '\u{7f}' && p.left() > 0 {
        match above(p, '\u{7f}').await? {
            Some(c) => lo = c,
            None => hi = '\u{7f}',
        }
    }
    while lo < hi && p.left() > 0 {
        let mid = valid_char((lo as u32 + hi as u32).div_ceil(2), false)
            .unwrap_or(lo)
            .max(lo);
        match above(p, mid).await? {
            Some(c) => lo = c.max(lo),
            None if mid == lo => break,
            None => hi = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::worker::plan::ranges_from;

    /// Keys held in memory, answering probes as S3 would (byte order, `StartAfter`).
    struct Keys(BTreeSet<String>);

    impl Keyspace for Keys {
        type Error = std::convert::Infallible;
        async fn first_after(
            &mut self,
            after: Option<&str>,
        ) -> Result<Option<String>, Self::Error> {
            Ok(match after {
                None => self.0.iter().next().cloned(),
                Some(a) => self
                    .0
                    .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    .next()
                    .cloned(),
            })
        }
    }

    fn splitmix(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn hex_keys(n: u64, prefix: &str) -> BTreeSet<String> {
        (0..n)
            .map(|i| format!("{prefix}{:016x}", splitmix(i)))
            .collect()
    }

    /// Layouts, each with the share of its keys the largest of 32 ranges may hold (1/32 would
    /// be perfect; dates guess their alphabets worst).
    fn layouts() -> Vec<(&'static str, BTreeSet<String>, usize)> {
        let many = (0..20_000u64)
            .map(|i| format!("p{:04}/obj-{:05}", i % 1000, i))
            .collect();
        let dates = (0..20_000u64)
            .map(|i| {
                format!(
                    "logs/{}/{:02}/{:02}/part-{i:06}.gz",
                    2024 + i % 3,
                    1 + i % 12,
                    1 + i % 28
                )
            })
            .collect();
        let base62: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
        let b62 = (0..20_000u64)
            .map(|i| {
                let v = splitmix(i);
                (0..10)
                    .map(|k| base62[((v >> (6 * k)) % 62) as usize])
                    .collect()
            })
            .collect();
        vec![
            ("flat hex", hex_keys(100_000, ""), 16),
            ("one prefix", hex_keys(100_000, "data/"), 16),
            ("many prefixes", many, 16),
            ("dates", dates, 3),
            ("flat base62", b62, 8),
        ]
    }

    fn per_range(keys: &BTreeSet<String>, boundaries: &[String]) -> Vec<usize> {
        let ranges = ranges_from(boundaries);
        ranges
            .iter()
            .map(|r| keys.iter().filter(|k| r.contains(k)).count())
            .collect()
    }

    async fn split_all(keys: BTreeSet<String>, target: usize) -> (Split, Vec<usize>, usize) {
        let total = keys.len();
        let mut space = Keys(keys);
        let whole = Range {
            after: None,
            upto: None,
        };
        let s = split(&mut space, &whole, target, PLAN_PROBES)
            .await
            .unwrap();
        let counts = per_range(&space.0, &s.boundaries);
        (s, counts, total)
    }

    #[tokio::test]
    async fn every_layout_is_split_into_balanced_ranges_within_the_probe_budget() {
        for (name, keys, share) in layouts() {
            let (s, counts, total) = split_all(keys, 32).await;
            assert!(s.probes <= PLAN_PROBES, "{name}: {} probes", s.probes);
            assert!(
                s.boundaries.windows(2).all(|w| w[0] < w[1]),
                "{name}: boundaries not increasing: {:?}",
                s.boundaries
            );
            assert_eq!(
                counts.iter().sum::<usize>(),
                total,
                "{name}: ranges tile the keys"
            );
            assert!(
                counts.len() >= 16,
                "{name}: only {} ranges: {:?}",
                counts.len(),
                s.boundaries
            );
            let largest = *counts.iter().max().unwrap();
            assert!(
                largest * share <= total,
                "{name}: the largest range holds {largest} of {total} keys: {counts:?}"
            );
        }
    }

    #[tokio::test]
    async fn hash_named_keys_get_the_ranges_asked_for() {
        let (s, counts, total) = split_all(hex_keys(100_000, ""), 32).await;
        assert!(counts.len() >= 28, "{counts:?}");
        assert!(*counts.iter().max().unwrap() * 16 <= total, "{counts:?}");
        assert!(s.probes <= 40, "{} probes", s.probes);
    }

    #[tokio::test]
    async fn small_and_empty_keyspaces_cost_a_probe_or_a_few() {
        let (s, counts, _) = split_all(BTreeSet::new(), 32).await;
        assert_eq!((s.probes, counts), (1, vec![0]));
        let few: BTreeSet<String> = ["a", "b/1", "b/2"].iter().map(|k| k.to_string()).collect();
        let (s, counts, _) = split_all(few, 32).await;
        assert!(s.probes <= 12, "{} probes", s.probes);
        assert!(counts.iter().all(|c| *c <= 2), "{counts:?}");
        let one: BTreeSet<String> = ["only"].iter().map(|k| k.to_string()).collect();
        let (s, counts, _) = split_all(one, 32).await;
        assert_eq!(counts.iter().sum::<usize>(), 1);
        assert!(s.probes <= 10, "{} probes", s.probes);
        let (s, counts, _) = split_all(hex_keys(1000, ""), 1).await;
        assert_eq!((s.probes, counts.len()), (1, 1));
    }

    #[tokio::test]
    async fn a_part_of_a_range_is_split_inside_its_bounds() {
        let keys = hex_keys(50_000, "");
        let part = Range {
            after: Some("4".into()),
            upto: Some("b".into()),
        };
        let inside = keys.iter().filter(|k| part.contains(k)).count();
        let mut space = Keys(keys);
        let s = split(&mut space, &part, 8, PLAN_PROBES).await.unwrap();
        assert!(s.boundaries.len() >= 6, "{:?}", s.boundaries);
        assert!(
            s.boundaries
                .iter()
                .all(|b| part.contains(b) && Some(b) != part.upto.as_ref())
        );
        let mut ranges = ranges_from(&s.boundaries);
        ranges.first_mut().unwrap().after = part.after.clone();
        ranges.last_mut().unwrap().upto = part.upto.clone();
        let counts: Vec<usize> = ranges
            .iter()
            .map(|r| space.0.iter().filter(|k| r.contains(k)).count())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), inside);
        assert!(*counts.iter().max().unwrap() * 3 <= inside, "{counts:?}");
    }

    #[tokio::test]
    async fn keys_beyond_the_basic_multilingual_plane_split_on_characters_not_bytes() {
        let keys: BTreeSet<String> = (0..2000u32)
            .map(|i| {
                let c = ['é', '日', '𝄞', 'a'][(i % 4) as usize];
                format!("{c}{}/{i:05}", char::from_u32(0x4E00 + i % 50).unwrap())
            })
            .collect();
        let (s, counts, total) = split_all(keys, 8).await;
        assert_eq!(counts.iter().sum::<usize>(), total);
        assert!(counts.len() >= 4, "{:?}", s.boundaries);
    }
}
