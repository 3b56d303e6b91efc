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
pub fn load(paths: &[PathBuf]) -> Result<Vec<Document>, Problems> {
    let files = expand_paths(paths)?;
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(text) => parse_text(file, &text, &mut docs, &mut problems),
            Err(e) => problems.push(Problem::file(file, &format!("cannot read: {e}"))),
        }
    }
    problems.extend(validate::duplicate_names(&docs));
    if problems.is_empty() {
        Ok(docs)
    } else {
        Err(Problems(problems))
    }
}

/// Parses one file's text (all its documents) and validates each job.
pub fn parse_text(file: &Path, text: &str, docs: &mut Vec<Document>, problems: &mut Vec<Problem>) {
    let is_json = file.extension().and_then(|e| e.to_str()) == Some("json");
    let values: Vec<Result<Value, String>> = if is_json {
        vec![serde_json::from_str::<Value>(text).map_err(|e| e.to_string())]
    } else {
        let mut values = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let value: Result<Value, serde_yaml_ng::Error> = serde::Deserialize::deserialize(doc);
            let failed = value.is_err();
            values.push(value.map_err(|e| e.to_string()));
            if failed {
                // After a syntax error the parser cannot find the next document.
                break;
            }
        }
        values
    };
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
}
