//! Where each field of a YAML document is: a map from field paths as problems name them
//! (`spec.source.bucket`, `spec.ecs.subnets[0]`) to their line and column, read with
//! serde-saphyr's `Spanned`. Used only to place the problems of a document already parsed.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column.
pub type LineCol = (u64, u64);

/// A document's nodes with their positions.
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Spanned<Node>>()? {
            items.push(n);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<serde_json::Value>()? {
            let key = match k {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
}

fn walk(path: &str, node: &Spanned<Node>, out: &mut HashMap<String, LineCol>) {
    out.insert(
        path.to_string(),
        (node.referenced.line(), node.referenced.column()),
    );
    match &node.value {
        Node::Map(entries) => {
            for (k, v) in entries {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, v, out);
            }
        }
        Node::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), v, out);
            }
        }
        Node::Leaf => {}
    }
}

/// The position of every field of every document of `text`; empty if it cannot be read.
pub fn positions(text: &str) -> Vec<HashMap<String, LineCol>> {
    let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
    let Ok(docs) = serde_saphyr::from_multiple_with_options::<Spanned<Node>>(text, options) else {
        return Vec::new();
    };
    docs.iter()
        .map(|d| {
            let mut out = HashMap::new();
            walk("", d, &mut out);
            out
        })
        .collect()
}

/// The position of `path`, or of its nearest ancestor that the document has (a missing field
/// is placed at the object that lacks it).
pub fn find(map: &HashMap<String, LineCol>, path: &str) -> Option<LineCol> {
    let mut p = path;
    loop {
        if let Some(at) = map.get(p) {
            return Some(*at);
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_placed_at_their_line_and_column() {
        let text =
            "a: 1\nspec:\n  source:\n    bucket: x\n  list:\n    - one\n    - two\n---\nb: 2\n";
        let docs = positions(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(find(&docs[0], "spec.source.bucket"), Some((4, 13)));
        assert_eq!(find(&docs[0], "spec.list[1]"), Some((7, 7)));
        assert_eq!(
            find(&docs[0], "spec.source.roleArn"),
            Some((4, 5)),
            "a missing field is placed at the object that lacks it"
        );
        assert_eq!(find(&docs[1], "b"), Some((9, 4)));
        assert_eq!(find(&docs[0], "nothing"), None);
    }
}
