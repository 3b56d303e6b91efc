//! Label selectors (`-l key=value,key!=value,key,!key`), as kubectl reads them: a job matches
//! when every requirement holds. Pure.

use std::collections::BTreeMap;
use std::fmt;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String, String),
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    Absent(String),
}

/// Every requirement must hold; an empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// Parses `-l`'s value. The error names the requirement and what is allowed.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key(part, k)?, value(part, v)?)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(key(part, k)?, value(part, v)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(key(part, k)?)
            } else {
                Requirement::Exists(key(part, part)?)
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether a job with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }
}

fn key(part: &str, k: &str) -> Result<String, String> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!(
            "label selector `{part}`: the key `{k}` is not a label key; allowed: key=value, key==value, key!=value, key or !key, comma-separated, keys of letters, digits, `-`, `_`, `.` and `/`"
        ))
    }
}

fn value(part: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "label selector `{part}`: the value `{v}` is not a label value; allowed: at most 63 letters, digits, `-`, `_` and `.`"
        ))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::Exists(k) => k.clone(),
                Requirement::Absent(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_as_kubectl_reads_them() {
        let team_a = labels(&[("team", "a"), ("tier", "gold")]);
        let team_b = labels(&[("team", "b")]);
        let none = labels(&[]);
        // (selector, matches team_a, team_b, none)
        let cases = [
            ("team=a", true, false, false),
            ("team==a", true, false, false),
            ("team!=a", false, true, true),
            ("tier", true, false, false),
            ("!tier", false, true, true),
            ("team=a,tier=gold", true, false, false),
            ("team=a,tier!=gold", false, false, false),
            (" team = b ", false, true, false),
            ("team=", false, false, false),
        ];
        for (text, a, b, n) in cases {
            let s = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (s.matches(&team_a), s.matches(&team_b), s.matches(&none)),
                (a, b, n),
                "{text}"
            );
        }
    }

    #[test]
    fn a_malformed_selector_is_refused_naming_the_requirement() {
        for (text, names) in [
            ("", "``"),
            ("team=a,,x", "``"),
            ("=a", "`=a`"),
            ("team=a b", "`team=a b`"),
            ("te am", "`te am`"),
        ] {
            let e = Selector::parse(text).expect_err(text);
            assert!(e.contains(names) && e.contains("allowed"), "{text}: {e}");
        }
    }
}
