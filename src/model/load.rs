//! Reading job files: YAML (multi-document) or JSON, from files or directories, into typed
//! CopyJobs, with every problem located by file, document index and field path.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::types::CopyJob;
use super::validate::{self, Problem};

/// One CopyJob read from a file.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    /// 0-based index of the YAML document in its file.
    pub index: usize,
    pub job: CopyJob,
}

/// Every problem found in a set of files; nothing is returned unless there are none.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Expands files and directories (recursively, `.yaml`, `.yml` and `.json` files, sorted) into
/// the list of job files.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Problems> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut files, &mut problems);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            problems.push(Problem::file(p, "no such file or directory"));
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(Problems(problems))
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<Problem>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::file(dir, &format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, files, problems);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(p);
        }
    }
}

/// Reads and validates every job in `paths`. Returns all jobs, or every problem of every file.
/// `-` among the paths reads standard input (YAML or JSON, at most [`MAX_FILE_BYTES`]), named
/// `<stdin>` in problems.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Document>, Problems> {
    let stdin = Path::new(STDIN);
    let (dash, named): (Vec<PathBuf>, Vec<PathBuf>) =
        paths.iter().cloned().partition(|p| p.as_os_str() == "-");
    let mut files = expand_paths(&named)?;
    if !dash.is_empty() {
        files.insert(0, stdin.to_path_buf());
    }
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        let text = if file == stdin {
            read_bounded_from(std::io::stdin().lock())
        } else {
            read_bounded(file)
        };
        match text {
            Ok(text) => parse_text(file, &text, &mut docs, &mut problems),
            Err(message) => problems.push(Problem::file(file, &message)),
        }
    }
    problems.extend(validate::duplicate_names(&docs));
    if problems.is_empty() {
        Ok(docs)
    } else {
        Err(Problems(problems))
    }
}

/// The largest job file read (1 MiB): a job is a few hundred bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The most YAML nodes a document may expand to. Anchors and aliases are replayed node by node,
/// so a small file can name millions of nodes (one anchored list referenced 10,000 times); a
/// job has about a hundred. Reading stops at this many, in time and memory bounded by it.
pub const MAX_NODES: usize = 100_000;

/// Reads a file of at most [`MAX_FILE_BYTES`] (reading no more than that, whatever its size).
fn read_bounded(file: &Path) -> Result<String, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    read_bounded_from(f)
}

/// How problems name standard input (`-f -`).
pub const STDIN: &str = "<stdin>";

/// Reads at most [`MAX_FILE_BYTES`] from a reader.
fn read_bounded_from(f: impl std::io::Read) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "is larger than {} KiB; allowed: job files of at most 1 MiB",
            MAX_FILE_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("is not UTF-8: {e}"))
}

/// Deserializes a value counting every node against a shared budget: the first node past it
/// fails the document, so alias expansion stops there.
struct Bounded<'a>(&'a std::cell::Cell<usize>);

impl Bounded<'_> {
    fn take<E: serde::de::Error>(&self) -> Result<(), E> {
        match self.0.get().checked_sub(1) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "the document expands to more than {MAX_NODES} values (anchors and aliases count every time they are used); allowed: at most {MAX_NODES}"
            ))),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Bounded(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key_seed(Bounded(self.0))? {
            let key = match k {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let v = map.next_value_seed(Bounded(self.0))?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// One YAML document read under its own node budget (see [`Bounded`]).
struct Doc(Value);

impl<'de> serde::Deserialize<'de> for Doc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Doc, D::Error> {
        let budget = std::cell::Cell::new(MAX_NODES);
        serde::de::DeserializeSeed::deserialize(Bounded(&budget), d).map(Doc)
    }
}

/// Every document of a YAML stream (serde-saphyr: pure Rust, no unsafe C parser), or the first
/// error as `line L, column C: message`. Aliases are limited besides the node budget: a job
/// needs none.
fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = 1_000;
    budget.max_nodes = MAX_NODES;
    budget.max_documents = 1_000;
    let options = serde_saphyr::options! {
        budget: Some(budget),
        with_snippet: false,
        // YAML 1.2: only true/false are booleans (`team: y` is the string "y").
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    match serde_saphyr::from_multiple_with_options::<Doc>(text, options) {
        Ok(docs) => Ok(docs.into_iter().map(|d| d.0).collect()),
        Err(e) => {
            let e = e.without_snippet();
            let mut message = e.to_string();
            // serde-saphyr's advice is for programmers, not for job authors.
            if message.contains("duplicate mapping key") {
                message = message.replace(
                    ", set DuplicateKeyPolicy in Options if acceptable",
                    " (each key may appear once in a mapping)",
                );
            }
            if message.contains("budget breached") {
                let at = message
                    .find(" at line ")
                    .map(|i| message[i..].to_string())
                    .unwrap_or_default();
                message = format!(
                    "the document expands to more than {MAX_NODES} values (anchors and aliases count every time they are used){at}; allowed: at most {MAX_NODES}, and at most 1000 aliases"
                );
            }
            Err(match e.location() {
                Some(at) if !message.contains("line ") => {
                    format!("line {}, column {}: {message}", at.line(), at.column())
                }
                _ => message,
            })
        }
    }
}

/// Parses one file's text (all its documents) and validates each job.
pub fn parse_text(file: &Path, text: &str, docs: &mut Vec<Document>, problems: &mut Vec<Problem>) {
    let is_json = file.extension().and_then(|e| e.to_str()) == Some("json");
    let values: Vec<Result<Value, String>> = if is_json {
        vec![
            serde_json::from_str::<Value>(text)
                .map_err(|e| format!("line {}, column {}: {e}", e.line(), e.column())),
        ]
    } else {
        match yaml_documents(text) {
            Ok(docs) => docs.into_iter().map(Ok).collect(),
            // After a syntax error the parser cannot find the next document.
            Err(e) => vec![Err(e)],
        }
    };
    let first_problem = problems.len();
    for (index, value) in values.into_iter().enumerate() {
        match value {
            Err(e) => problems.push(Problem::new(
                file,
                index,
                "",
                &format!("not valid YAML/JSON: {e}"),
            )),
            Ok(Value::Null) => {}
            Ok(value) => match validate::parse_value(value) {
                Ok(job) => {
                    let found = validate::validate(&job);
                    if found.is_empty() {
                        docs.push(Document {
                            file: file.to_path_buf(),
                            index,
                            job,
                        });
                    } else {
                        problems.extend(found.into_iter().map(|p| p.at(file, index)));
                    }
                }
                Err(found) => problems.extend(found.into_iter().map(|p| p.at(file, index))),
            },
        }
    }
    // Place each field problem of a YAML document at its line and column.
    if problems.len() > first_problem && !is_json {
        let positions = super::locate::positions(text);
        for p in &mut problems[first_problem..] {
            if let Some(map) = p.index.and_then(|i| positions.get(i)) {
                p.at = super::locate::find(map, &p.path);
            }
        }
    }
}
