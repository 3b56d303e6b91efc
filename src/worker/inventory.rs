//! S3 Inventory as a run's object list, the pure part: the manifest read and checked against the
//! job, the columns of its data files, one row turned into a listing [`Entry`], and the
//! *positions* that let the rest of the worker treat an inventory like a keyspace. No IO: the
//! reading is `inventory_read`.
//!
//! # Positions
//! A run over an inventory is partitioned and chunked exactly like a listed one, by ranges
//! `(after, upto]` of strings, but the strings are positions in the report, not keys: row `r`
//! (0-based) of data file `f` is `"{f:06}.{r:012}"`. Partition `f` is file `f`; a chunk is a run
//! of rows of one file. Leases, the claim index, `notBefore` and the planner lease are the same
//! code; only reading a range differs (rows of a file instead of ListObjectsV2).
//!
//! The format is the one AWS documents at
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html> (the
//! manifest) and <https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory.html>
//! (the fields; in CSV the key is URL-encoded).

use serde::Deserialize;

use super::plan::{Entry, Range};

/// Most data files a manifest may list: one listing partition each, and their boundaries are
/// kept in the run's META item (400 KB at most; 14 bytes each).
pub const MAX_FILES: usize = 10_000;

/// Rows a lister reads per chunk.
pub const CHUNK_ROWS: u64 = 1000;

/// The data files' format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Gzip-compressed CSV, columns as `fileSchema` names them, keys URL-encoded.
    Csv,
    /// Apache Parquet, columns named in snake case (`key`, `size`, `e_tag`, …).
    Parquet,
}

/// One data file of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub key: String,
    /// Its size as the manifest gives it; the object read must have it.
    pub size: u64,
}

/// A manifest, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The bucket that holds the data files (the manifest's `destinationBucket`).
    pub bucket: String,
    pub format: Format,
    /// CSV only: where each field is (Parquet files name their columns).
    pub columns: Option<Columns>,
    pub files: Vec<DataFile>,
    /// When the report began scanning the bucket (epoch ms).
    pub created_ms: u64,
}

/// Column positions in a CSV data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub key: usize,
    pub size: usize,
    pub etag: usize,
    pub storage_class: Option<usize>,
    pub is_latest: Option<usize>,
    pub is_delete_marker: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    source_bucket: String,
    destination_bucket: String,
    file_format: String,
    #[serde(default)]
    file_schema: String,
    #[serde(default)]
    creation_timestamp: Option<String>,
    files: Vec<RawFile>,
}

#[derive(Deserialize)]
struct RawFile {
    key: String,
    size: u64,
}

/// Reads and checks a manifest (`uri` names it in errors): it must describe an inventory of
/// `source_bucket` in CSV or Parquet with the Size and ETag fields, and list 1 to [`MAX_FILES`]
/// data files.
pub fn parse_manifest(uri: &str, body: &[u8], source_bucket: &str) -> Result<Manifest, String> {
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| format!("{uri} is not an S3 Inventory manifest: {e}"))?;
    if raw.source_bucket != source_bucket {
        return Err(format!(
            "{uri} is the inventory of bucket `{}`, not of the job's source bucket `{source_bucket}`; allowed: a report of spec.source.bucket",
            raw.source_bucket
        ));
    }
    let bucket = raw
        .destination_bucket
        .strip_prefix("arn:aws:s3:::")
        .unwrap_or(&raw.destination_bucket)
        .to_string();
    let (format, columns) = match raw.file_format.as_str() {
        "CSV" => (
            Format::Csv,
            Some(csv_columns(&raw.file_schema).map_err(|m| format!("{uri}: {m}"))?),
        ),
        "Parquet" => {
            parquet_schema_has_fields(&raw.file_schema).map_err(|m| format!("{uri}: {m}"))?;
            (Format::Parquet, None)
        }
        other => {
            return Err(format!(
                "{uri}: fileFormat `{other}` is not supported; allowed: CSV, Parquet"
            ));
        }
    };
    // The data files are read only where S3 writes them: the manifest's own bucket, under its
    // configuration directory (the destination session may read nothing else).
    let (home, dir) = crate::model::validate::inventory_report_prefix(uri)
        .ok_or_else(|| format!("`{uri}` is not an S3 URI"))?;
    if bucket != home {
        return Err(format!(
            "{uri} puts its data files in bucket `{bucket}`; allowed: the manifest's bucket `{home}`"
        ));
    }
    if let Some(f) = raw.files.iter().find(|f| !f.key.starts_with(dir)) {
        return Err(format!(
            "{uri} lists data file `{}` outside the report's directory `{dir}`",
            f.key
        ));
    }
    if raw.files.is_empty() || raw.files.len() > MAX_FILES {
        return Err(format!(
            "{uri} lists {} data files; allowed: 1 to {MAX_FILES}",
            raw.files.len()
        ));
    }
    Ok(Manifest {
        bucket,
        format,
        columns,
        files: raw
            .files
            .into_iter()
            .map(|f| DataFile {
                key: f.key,
                size: f.size,
            })
            .collect(),
        created_ms: raw
            .creation_timestamp
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    })
}

const NEEDED: &str = "the report needs the optional fields Size and ETag (turn them on in the inventory configuration)";

/// Where the fields are in a CSV `fileSchema` such as `Bucket, Key, Size, ETag`.
pub fn csv_columns(schema: &str) -> Result<Columns, String> {
    let names: Vec<&str> = schema.split(',').map(str::trim).collect();
    let at = |n: &str| names.iter().position(|c| *c == n);
    let need =
        |n: &str| at(n).ok_or_else(|| format!("fileSchema `{schema}` has no {n} field; {NEEDED}"));
    Ok(Columns {
        key: need("Key")?,
        size: need("Size")?,
        etag: need("ETag")?,
        storage_class: at("StorageClass"),
        is_latest: at("IsLatest"),
        is_delete_marker: at("IsDeleteMarker"),
    })
}

fn parquet_schema_has_fields(schema: &str) -> Result<(), String> {
    for (field, name) in [("key", "Key"), ("size", "Size"), ("e_tag", "ETag")] {
        let present = schema
            .split(';')
            .any(|f| f.split_whitespace().any(|w| w == field));
        if !present {
            return Err(format!(
                "fileSchema has no {field} column ({name}); {NEEDED}"
            ));
        }
    }
    Ok(())
}

/// One row of a report, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub storage_class: Option<String>,
    /// False for a noncurrent version or a delete marker (a report of all versions).
    pub current: bool,
}

/// A CSV record as a [`Row`]; `Err` names what is wrong with it.
pub fn csv_row(record: &csv::StringRecord, c: &Columns) -> Result<Row, String> {
    let field = |i: usize| {
        record
            .get(i)
            .ok_or_else(|| format!("has {} fields, the schema more", record.len()))
    };
    let flag = |i: Option<usize>| {
        i.and_then(|i| record.get(i))
            .filter(|v| !v.is_empty())
            .map(|v| v == "true")
    };
    let size = field(c.size)?;
    Ok(Row {
        key: super::copy::decode_listed_key(field(c.key)?),
        size: if size.is_empty() {
            0
        } else {
            size.parse()
                .map_err(|_| format!("Size `{size}` is not a number"))?
        },
        etag: field(c.etag)?.to_string(),
        storage_class: c
            .storage_class
            .and_then(|i| record.get(i))
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        current: flag(c.is_latest) != Some(false) && flag(c.is_delete_marker) != Some(true),
    })
}

/// The listing entry for a row: `None` for a noncurrent version, a delete marker, or a key
/// outside the job's source prefix.
pub fn entry(row: Row, prefix: &str) -> Option<Entry> {
    if !row.current {
        return None;
    }
    let rel = row.key.strip_prefix(prefix)?.to_string();
    Some(Entry {
        rel,
        size: row.size,
        etag: quoted(&row.etag),
        storage_class: row.storage_class,
    })
}

/// An ETag as listings give it, in quotes (a report gives it bare).
fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

/// A chunk's entries in key order, each key once, as a listing gives them (the merge needs it;
/// a report's rows need not be sorted).
pub fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    entries.dedup_by(|a, b| a.rel == b.rel);
    entries
}

/// The position of row `row` of file `file`.
pub fn position(file: usize, row: u64) -> String {
    format!("{file:06}.{row:012}")
}

/// Partition boundaries for `files` data files: partition `f` holds exactly file `f`'s rows.
pub fn boundaries(files: usize) -> Vec<String> {
    // `~` sorts after every digit: the boundary follows every row of its file.
    (0..files.saturating_sub(1))
        .map(|f| format!("{f:06}.~"))
        .collect()
}

/// The rows of file `file` that `range` holds: from the first (0-based) to the last, inclusive
/// (`None`: to the end of the file).
pub fn rows(file: usize, range: &Range) -> (u64, Option<u64>) {
    let row_of = |p: &str| -> Option<u64> {
        let (f, r) = p.split_once('.')?;
        (f.parse::<usize>().ok()? == file).then(|| r.parse::<u64>().ok())?
    };
    let first = range.after.as_deref().and_then(row_of).map_or(0, |r| r + 1);
    let last = range.upto.as_deref().and_then(row_of);
    (first, last)
}

/// The file a position range belongs to (its partition).
pub fn file_of(range: &Range) -> usize {
    let file = |p: &str| p.split_once('.').and_then(|(f, _)| f.parse::<usize>().ok());
    match (range.after.as_deref(), range.upto.as_deref()) {
        (_, Some(u)) => file(u).unwrap_or(0),
        (Some(a), None) if a.ends_with('~') => file(a).map_or(0, |f| f + 1),
        (Some(a), None) => file(a).unwrap_or(0),
        (None, None) => 0,
    }
}

/// The key range of the destination that holds a chunk's sorted entries: `(before(first),
/// last]`, listed to merge with them. `before` drops the last character of the first key,
/// which sorts before it; the few keys that share that stem and sort before the first are
/// listed too and ignored (the merge never deletes with an inventory).
pub fn destination_span(sorted: &[Entry]) -> Option<Range> {
    let (first, last) = (sorted.first()?, sorted.last()?);
    let mut stem = first.rel.clone();
    stem.pop();
    Some(Range {
        after: (!stem.is_empty()).then_some(stem),
        upto: Some(last.rel.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV_SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass";

    fn manifest(source: &str, format: &str, schema: &str, files: usize) -> Vec<u8> {
        let files: Vec<_> = (0..files)
            .map(|i| serde_json::json!({"key": format!("inv/src/all/data/{i}.csv.gz"), "size": 10, "MD5checksum": "x"}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "sourceBucket": source,
            "destinationBucket": "arn:aws:s3:::inventory-bucket",
            "version": "2016-11-30",
            "creationTimestamp": "1764460800000",
            "fileFormat": format,
            "fileSchema": schema,
            "files": files,
        }))
        .unwrap()
    }

    #[test]
    fn a_csv_manifest_of_the_source_bucket_is_read_with_its_columns() {
        let m = parse_manifest(
            "s3://inventory-bucket/inv/src/all/2026-11-30T00-00Z/manifest.json",
            &manifest("src", "CSV", CSV_SCHEMA, 2),
            "src",
        )
        .unwrap();
        assert_eq!(m.bucket, "inventory-bucket");
        assert_eq!(m.format, Format::Csv);
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.created_ms, 1_764_460_800_000);
        assert_eq!(
            m.columns,
            Some(Columns {
                key: 1,
                size: 5,
                etag: 7,
                storage_class: Some(8),
                is_latest: Some(3),
                is_delete_marker: Some(4),
            })
        );
    }

    #[test]
    fn manifests_that_do_not_fit_the_job_are_refused_with_the_reason() {
        let parquet = "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional int64 size; optional binary e_tag (UTF8);}";
        for (body, why) in [
            (
                manifest("other", "CSV", CSV_SCHEMA, 1),
                "inventory of bucket `other`, not of the job's source bucket `src`",
            ),
            (
                manifest("src", "ORC", CSV_SCHEMA, 1),
                "fileFormat `ORC` is not supported; allowed: CSV, Parquet",
            ),
            (
                manifest("src", "CSV", "Bucket, Key, Size", 1),
                "has no ETag field",
            ),
            (
                manifest(
                    "src",
                    "Parquet",
                    "message s3.inventory { required binary key (UTF8); }",
                    1,
                ),
                "has no size column",
            ),
            (
                manifest("src", "CSV", CSV_SCHEMA, 0),
                "lists 0 data files; allowed: 1 to 10000",
            ),
            (b"{\"not\": 1}".to_vec(), "is not an S3 Inventory manifest"),
        ] {
            let e = parse_manifest(
                "s3://inventory-bucket/inv/src/all/2026-11-30T00-00Z/manifest.json",
                &body,
                "src",
            )
            .unwrap_err();
            assert!(e.contains(why), "{e}");
            assert!(e.contains("manifest.json"), "{e}");
        }
        assert!(
            parse_manifest(
                "s3://inventory-bucket/inv/src/all/2026-11-30T00-00Z/manifest.json",
                &manifest("src", "Parquet", parquet, 1),
                "src"
            )
            .is_ok()
        );
    }

    #[test]
    fn a_manifest_may_name_data_files_only_beside_it() {
        const URI: &str = "s3://inventory-bucket/inv/src/all/2026-11-30T00-00Z/manifest.json";
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut m: serde_json::Value =
                serde_json::from_slice(&manifest("src", "CSV", CSV_SCHEMA, 1)).unwrap();
            f(&mut m);
            serde_json::to_vec(&m).unwrap()
        };
        let elsewhere = edit(&|m| m["files"][0]["key"] = "secrets/all.csv.gz".into());
        let e = parse_manifest(URI, &elsewhere, "src").unwrap_err();
        assert!(
            e.contains(
                "lists data file `secrets/all.csv.gz` outside the report's directory `inv/src/all/`"
            ),
            "{e}"
        );
        let other = edit(&|m| m["destinationBucket"] = "arn:aws:s3:::other".into());
        let e = parse_manifest(URI, &other, "src").unwrap_err();
        assert!(e.contains("puts its data files in bucket `other`; allowed: the manifest's bucket `inventory-bucket`"), "{e}");
    }

    #[test]
    fn csv_rows_are_decoded_and_only_current_versions_under_the_prefix_are_copied() {
        let c = csv_columns(CSV_SCHEMA).unwrap();
        let rec = |fields: &[&str]| csv::StringRecord::from(fields.to_vec());
        for (fields, want) in [
            (
                [
                    "b",
                    "data/a+b%2Bc%C3%A9",
                    "v1",
                    "true",
                    "false",
                    "12",
                    "t",
                    "abc",
                    "STANDARD_IA",
                ],
                Some(("a b+cé", 12, "\"abc\"", Some("STANDARD_IA"))),
            ),
            (
                ["b", "data/x", "", "", "", "0", "t", "\"q\"", ""],
                Some(("x", 0, "\"q\"", None)),
            ),
            (
                [
                    "b", "data/old", "v0", "false", "false", "5", "t", "e", "STANDARD",
                ],
                None,
            ),
            (
                ["b", "data/gone", "v2", "true", "true", "", "t", "", ""],
                None,
            ),
            (["b", "other/x", "", "", "", "5", "t", "e", ""], None),
        ] {
            let row = csv_row(&rec(&fields), &c).unwrap();
            let got = entry(row, "data/");
            let want = want.map(|(rel, size, etag, class)| Entry {
                rel: rel.to_string(),
                size,
                etag: etag.to_string(),
                storage_class: class.map(str::to_string),
            });
            assert_eq!(got, want, "{fields:?}");
        }
        let short = csv_row(&rec(&["b", "k"]), &c).unwrap_err();
        assert!(short.contains("has 2 fields"), "{short}");
        let bad = csv_row(&rec(&["b", "k", "", "", "", "ten", "", "e"]), &c).unwrap_err();
        assert!(bad.contains("Size `ten` is not a number"), "{bad}");
    }

    #[test]
    fn positions_partition_a_report_by_file_and_chunks_by_row() {
        let b = boundaries(3);
        assert_eq!(b, ["000000.~", "000001.~"]);
        let parts = super::super::plan::ranges_from(&b);
        assert_eq!(parts.len(), 3);
        for (f, part) in parts.iter().enumerate() {
            assert_eq!(file_of(part), f, "{part:?}");
            assert_eq!(rows(f, part), (0, None), "{part:?}");
            assert!(part.contains(&position(f, 0)) && part.contains(&position(f, 999_999)));
        }
        // A chunk after the first page of file 1, and the file's last chunk.
        let chunk = Range {
            after: Some(position(1, 999)),
            upto: Some(position(1, 1999)),
        };
        assert_eq!((file_of(&chunk), rows(1, &chunk)), (1, (1000, Some(1999))));
        let tail = Range {
            after: Some(position(2, 1999)),
            upto: None,
        };
        assert_eq!((file_of(&tail), rows(2, &tail)), (2, (2000, None)));
        let single = super::super::plan::ranges_from(&boundaries(1));
        assert_eq!((file_of(&single[0]), rows(0, &single[0])), (0, (0, None)));
    }

    #[test]
    fn a_chunks_destination_span_covers_its_first_and_last_keys() {
        let e = |rel: &str| Entry {
            rel: rel.to_string(),
            size: 0,
            etag: String::new(),
            storage_class: None,
        };
        let span = destination_span(&[e("abc"), e("abd"), e("b/z")]).unwrap();
        assert_eq!(span.after.as_deref(), Some("ab"));
        assert_eq!(span.upto.as_deref(), Some("b/z"));
        for k in ["abc", "abd", "b/z"] {
            assert!(span.contains(k), "{k}");
        }
        let one = destination_span(&[e("a")]).unwrap();
        assert_eq!((one.after, one.upto.as_deref()), (None, Some("a")));
        assert_eq!(destination_span(&[]), None);
    }
}
