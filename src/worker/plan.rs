//! The worker's pure decisions: how the keyspace is split into listing partitions, how a large
//! object is cut into parts, how keys map from source to destination, and — given the sorted
//! source and destination listings of one chunk — what to copy, skip or delete. No IO.

use crate::model::{CopyOptions, Overwrite};

/// Smallest multipart part S3 accepts (except the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// Largest part, and largest CopyObject.
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// Most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Largest part ferry picks by default: enough parallelism for multi-GiB objects.
pub const DEFAULT_PART: u64 = 256 * 1024 * 1024;

pub use crate::keyrange::Range;

/// Most listing partitions for a run of `parallelism` tasks: four listers per task keep it
/// busy with room to spare (one lister pages through S3 about as fast as a task copies small
/// objects), and more would only cost: every partition has listings, a lease and store writes
/// of its own.
pub fn partition_limit(parallelism: u32) -> usize {
    (4 * parallelism as usize).clamp(4, 64)
}

/// The ranges `(after, upto]` that sorted `boundaries` cut the keyspace into; they tile it
/// exactly, so each key belongs to exactly one range.
pub fn ranges_from(boundaries: &[String]) -> Vec<Range> {
    let mut ranges = Vec::with_capacity(boundaries.len() + 1);
    let mut after: Option<String> = None;
    for b in boundaries {
        ranges.push(Range {
            after: after.clone(),
            upto: Some(b.clone()),
        });
        after = Some(b.clone());
    }
    ranges.push(Range { after, upto: None });
    ranges
}

/// Part size for a multipart copy of `size` bytes: within S3's limits (5 MiB–5 GiB, at most
/// 10,000 parts), `preferred` when that fits.
pub fn part_size(size: u64, preferred: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    let mib = 1024 * 1024;
    preferred
        .max(needed)
        .div_ceil(mib)
        .saturating_mul(mib)
        .clamp(MIN_PART, MAX_PART)
}

/// Inclusive byte ranges of the parts of a `size`-byte object.
pub fn parts(size: u64, part: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + part).min(size) - 1;
        out.push((start, end));
        start = end + 1;
    }
    out
}

/// Maps a source key to its destination key.
pub fn destination_key(src_prefix: &str, dst_prefix: &str, key: &str) -> String {
    format!(
        "{dst_prefix}{}",
        key.strip_prefix(src_prefix).unwrap_or(key)
    )
}

/// One object of a listing, relative to the listed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key relative to the prefix.
    pub rel: String,
    pub size: u64,
    pub etag: String,
    pub storage_class: Option<String>,
}

/// What to do with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copy the source object (`replace`: the destination has one that differs).
    Copy { src: Entry, replace: bool },
    /// Sizes match but ETags differ (a multipart copy or SSE-KMS): the destination's recorded
    /// source ETag decides.
    Verify { src: Entry, dst: Entry },
    /// Already identical, or kept by the overwrite policy.
    Skip { src: Entry },
    /// Destination-only object, deleted because the job asks for it.
    Delete { dst: Entry },
}

/// Filter of relative keys by the job's include/exclude globs.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl Filter {
    /// Builds the filter; patterns were validated with the job, so a bad one matches nothing.
    pub fn new(opts: &CopyOptions) -> Filter {
        let build = |pats: &[String]| {
            if pats.is_empty() {
                return None;
            }
            let mut b = globset::GlobSetBuilder::new();
            for p in pats {
                if let Ok(g) = globset::GlobBuilder::new(p).literal_separator(true).build() {
                    b.add(g);
                }
            }
            b.build().ok()
        };
        Filter {
            include: build(&opts.include),
            exclude: build(&opts.exclude),
        }
    }

    pub fn matches(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(rel))
            && self.exclude.as_ref().is_none_or(|s| !s.is_match(rel))
    }
}

/// Merge-joins two listings sorted by `rel` (byte order, as S3 lists) into actions.
pub fn merge(src: &[Entry], dst: &[Entry], opts: &CopyOptions, filter: &Filter) -> Vec<Action> {
    let mut out = Vec::with_capacity(src.len());
    let (mut i, mut j) = (0, 0);
    while i < src.len() || j < dst.len() {
        let order = match (src.get(i), dst.get(j)) {
            (Some(s), Some(d)) => s.rel.as_str().cmp(d.rel.as_str()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let s = &src[i];
                i += 1;
                if filter.matches(&s.rel) {
                    out.push(Action::Copy {
                        src: s.clone(),
                        replace: false,
                    });
                }
            }
            std::cmp::Ordering::Greater => {
                let d = &dst[j];
                j += 1;
                if opts.delete_extraneous && filter.matches(&d.rel) {
                    out.push(Action::Delete { dst: d.clone() });
                }
            }
            std::cmp::Ordering::Equal => {
                let (s, d) = (&src[i], &dst[j]);
                i += 1;
                j += 1;
                if !filter.matches(&s.rel) {
                    continue;
                }
                out.push(match opts.overwrite {
                    Overwrite::Never => Action::Skip { src: s.clone() },
                    Overwrite::Always => Action::Copy {
                        src: s.clone(),
                        replace: true,
                    },
                    Overwrite::IfChanged if s.size != d.size => Action::Copy {
                        src: s.clone(),
                        replace: true,
                    },
                    Overwrite::IfChanged if s.etag == d.etag => Action::Skip { src: s.clone() },
                    Overwrite::IfChanged => Action::Verify {
                        src: s.clone(),
                        dst: d.clone(),
                    },
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(rel: &str, size: u64, etag: &str) -> Entry {
        Entry {
            rel: rel.into(),
            size,
            etag: etag.into(),
            storage_class: None,
        }
    }

    #[test]
    fn partitions_tile_the_keyspace_so_every_key_lands_in_exactly_one() {
        let boundaries: Vec<String> = ["a", "c"].iter().map(|s| s.to_string()).collect();
        let ranges = ranges_from(&boundaries);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[0].after, None);
        assert_eq!(ranges.last().unwrap().upto, None);
        for key in [
            "", "0", "a", "a.txt", "a/", "a/x", "b", "b/y", "c/z", "c0", "zz", "ü",
        ] {
            let n = ranges.iter().filter(|r| r.contains(key)).count();
            assert_eq!(n, 1, "{key} is in {n} ranges: {ranges:?}");
        }
    }

    #[test]
    fn no_boundaries_means_one_open_range() {
        assert_eq!(
            ranges_from(&[]),
            vec![Range {
                after: None,
                upto: None
            }]
        );
    }

    #[test]
    fn a_range_is_listed_under_the_common_prefix_of_its_bounds() {
        let r = |a: Option<&str>, u: Option<&str>| Range {
            after: a.map(String::from),
            upto: u.map(String::from),
        };
        let cases = [
            (r(None, None), ""),
            (r(Some("logs/a"), None), ""),
            (r(None, Some("logs/a")), ""),
            (r(Some("logs/2026/01"), Some("logs/2026/03")), "logs/2026/0"),
            (r(Some("p03"), Some("p04")), "p0"),
            (r(Some("a"), Some("b")), ""),
            (r(Some("x/é1"), Some("x/é2")), "x/é"),
            (r(Some("x/éa"), Some("x/èa")), "x/"),
            (r(Some("same"), Some("same")), "same"),
        ];
        for (range, want) in cases {
            assert_eq!(range.common_prefix(), want, "{range:?}");
            for key in ["logs/2026/02x", "p03/k", "x/é1z", "samf"] {
                if range.contains(key) {
                    assert!(key.starts_with(want), "{key} in {range:?}");
                }
            }
        }
    }

    #[test]
    fn partitions_grow_with_parallelism_within_bounds() {
        assert_eq!(partition_limit(1), 4);
        assert_eq!(partition_limit(3), 12);
        assert_eq!(partition_limit(100), 64);
    }

    #[test]
    fn part_sizes_respect_s3_limits() {
        let mib = 1024 * 1024;
        assert_eq!(part_size(12 * mib, 5 * mib), 5 * mib);
        assert_eq!(part_size(12 * mib, 1), MIN_PART, "never below 5 MiB");
        let huge = 5 * 1024 * 1024 * mib; // 5 TiB, the S3 maximum object
        let p = part_size(huge, DEFAULT_PART);
        assert!(huge.div_ceil(p) <= MAX_PARTS, "at most 10,000 parts");
        assert_eq!(
            parts(12 * mib, 5 * mib),
            vec![
                (0, 5 * mib - 1),
                (5 * mib, 10 * mib - 1),
                (10 * mib, 12 * mib - 1)
            ]
        );
        assert_eq!(parts(0, 5 * mib), vec![]);
    }

    #[test]
    fn merge_decides_per_overwrite_policy() {
        let src = vec![
            e("a", 1, "x"),
            e("b", 2, "y"),
            e("c", 3, "z"),
            e("d", 4, "w"),
        ];
        let dst = vec![
            e("a", 1, "x"),
            e("b", 9, "y"),
            e("c", 3, "other"),
            e("e", 5, "v"),
        ];
        let mut opts = CopyOptions::default();
        let f = Filter::new(&opts);
        let kinds = |acts: Vec<Action>| -> Vec<String> {
            acts.iter()
                .map(|a| match a {
                    Action::Copy { src, replace } => format!("copy {} {replace}", src.rel),
                    Action::Verify { src, .. } => format!("verify {}", src.rel),
                    Action::Skip { src } => format!("skip {}", src.rel),
                    Action::Delete { dst } => format!("delete {}", dst.rel),
                })
                .collect()
        };
        assert_eq!(
            kinds(merge(&src, &dst, &opts, &f)),
            ["skip a", "copy b true", "verify c", "copy d false"]
        );
        opts.overwrite = Overwrite::Never;
        assert_eq!(
            kinds(merge(&src, &dst, &opts, &f)),
            ["skip a", "skip b", "skip c", "copy d false"]
        );
        opts.overwrite = Overwrite::Always;
        opts.delete_extraneous = true;
        assert_eq!(
            kinds(merge(&src, &dst, &opts, &f)),
            [
                "copy a true",
                "copy b true",
                "copy c true",
                "copy d false",
                "delete e"
            ]
        );
    }

    #[test]
    fn filters_apply_to_copies_and_deletions() {
        let opts = CopyOptions {
            include: vec!["logs/**".into()],
            exclude: vec!["**/*.tmp".into()],
            delete_extraneous: true,
            ..CopyOptions::default()
        };
        let f = Filter::new(&opts);
        let src = vec![
            e("logs/a.log", 1, "x"),
            e("logs/b.tmp", 1, "x"),
            e("other/c", 1, "x"),
        ];
        let dst = vec![e("logs/old.log", 1, "x"), e("other/keep", 1, "x")];
        let acts = merge(&src, &dst, &opts, &f);
        assert_eq!(
            acts,
            vec![
                Action::Copy {
                    src: e("logs/a.log", 1, "x"),
                    replace: false
                },
                Action::Delete {
                    dst: e("logs/old.log", 1, "x")
                },
            ]
        );
    }

    #[test]
    fn keys_map_from_source_prefix_to_destination_prefix() {
        assert_eq!(
            destination_key("logs/", "archive/logs/", "logs/a b+c"),
            "archive/logs/a b+c"
        );
        assert_eq!(destination_key("", "", "x/"), "x/");
    }
}
