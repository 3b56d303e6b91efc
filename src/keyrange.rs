//! Key ranges `(after, upto]`: how partitions and chunks of a run name their share of the
//! keyspace. Shared by the store (which records them) and the worker (which plans and lists
//! them); depends on nothing.

/// Key range `(after, upto]` of a partition or chunk, relative to the source prefix. `None`
/// bounds are open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub after: Option<String>,
    pub upto: Option<String>,
}

impl Range {
    pub fn contains(&self, rel: &str) -> bool {
        self.after.as_deref().is_none_or(|a| rel > a)
            && self.upto.as_deref().is_none_or(|u| rel <= u)
    }

    /// The longest prefix every key of the range starts with: the common prefix of both bounds
    /// (keys sorted between two strings share their common prefix). Listing with it instead of
    /// the bare job prefix lets the server skip keys outside the range.
    pub fn common_prefix(&self) -> &str {
        match (self.after.as_deref(), self.upto.as_deref()) {
            (Some(a), Some(u)) => {
                let len = a
                    .char_indices()
                    .zip(u.chars())
                    .take_while(|((_, x), y)| x == y)
                    .last()
                    .map_or(0, |((i, c), _)| i + c.len_utf8());
                &a[..len]
            }
            _ => "",
        }
    }
}
