//! Reading an S3 Inventory report: the manifest once per task, then rows of one data file as
//! pages of listing entries, for a lister (a whole file, from its cursor) or a copier (one
//! chunk's rows). CSV files are streamed through gzip; Parquet files are read a row group at a
//! time with ranged GETs of the footer and of the needed columns only. The decisions (what a
//! row means, which rows a range holds) are in `inventory`.
//!
//! Every GET names the inventory bucket's expected owner; the report is in the source bucket's
//! region (S3 Inventory delivers to a bucket in the same region), so the source client reads it.

use std::sync::Arc;

use aws_sdk_s3::Client;
use bytes::{Buf, Bytes};
use parquet::file::reader::{ChunkReader, FileReader, Length};
use parquet::record::Field;
use tokio::sync::mpsc;

use super::copy::{CopyError, s3_err};
use super::inventory::{self, CHUNK_ROWS, Format, Manifest, Row};
use super::plan::Entry;
use crate::model::CopyJobSpec;

/// Errors reading a report: S3 refused a read, or the report is not what its manifest says.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    S3(#[from] CopyError),
    #[error("S3 Inventory {what}: {message}")]
    Invalid { what: String, message: String },
}

/// Rows read from a data file, [`CHUNK_ROWS`] at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The last row (0-based) this page read.
    pub last_row: Option<u64>,
    /// The rows' entries: current versions under the source prefix.
    pub entries: Vec<Entry>,
    /// No rows follow (end of the file, or of the rows asked for).
    pub end: bool,
}

/// A report, its manifest read and checked against the job.
pub struct Inventory {
    pub manifest: Manifest,
    /// The manifest's URI (errors name it).
    pub uri: String,
    client: Client,
    owner: String,
    prefix: String,
}

fn invalid(what: impl Into<String>, message: impl Into<String>) -> InventoryError {
    InventoryError::Invalid {
        what: what.into(),
        message: message.into(),
    }
}

impl Inventory {
    /// Reads and checks the manifest that `spec.source.inventory` names.
    pub async fn load(
        client: Client,
        spec: &CopyJobSpec,
    ) -> Result<Option<Inventory>, InventoryError> {
        let Some(input) = &spec.source.inventory else {
            return Ok(None);
        };
        let (bucket, key) = crate::model::validate::parse_s3_uri(&input.manifest)
            .map_err(|m| invalid("manifest", m))?;
        let owner = input
            .account
            .clone()
            .unwrap_or_else(|| spec.source.account.clone());
        let body = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .expected_bucket_owner(&owner)
            .send()
            .await
            .map_err(|e| s3_err("GetObject", bucket, e))?
            .body
            .collect()
            .await
            .map_err(|e| invalid(input.manifest.clone(), format!("reading it failed: {e}")))?
            .into_bytes();
        let manifest = inventory::parse_manifest(&input.manifest, &body, &spec.source.bucket)
            .map_err(|m| invalid("manifest", m))?;
        Ok(Some(Inventory {
            manifest,
            uri: input.manifest.clone(),
            client,
            owner,
            prefix: spec.source.prefix.clone(),
        }))
    }

    fn file_name(&self, file: usize) -> String {
        format!(
            "s3://{}/{}",
            self.manifest.bucket,
            self.manifest
                .files
                .get(file)
                .map_or("?", |f| f.key.as_str())
        )
    }

    /// Reads rows `first..=last` (`None`: to the end) of data file `file`, in pages sent to the
    /// returned channel; the last page has `end` set. Dropping the receiver stops the read.
    pub fn read(
        self: &Arc<Self>,
        file: usize,
        first: u64,
        last: Option<u64>,
    ) -> mpsc::Receiver<Result<Page, InventoryError>> {
        let (tx, rx) = mpsc::channel(2);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = match this.manifest.format {
                Format::Csv => this.read_csv(file, first, last, &tx).await,
                Format::Parquet => this.read_parquet(file, first, last, &tx).await,
            };
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    /// Reads every page of rows `first..=last` of `file` into one list of entries.
    pub async fn entries(
        self: &Arc<Self>,
        file: usize,
        first: u64,
        last: Option<u64>,
    ) -> Result<Vec<Entry>, InventoryError> {
        let mut rx = self.read(file, first, last);
        let mut out = Vec::new();
        while let Some(page) = rx.recv().await {
            let page = page?;
            out.extend(page.entries);
            if page.end {
                return Ok(out);
            }
        }
        Err(invalid(self.file_name(file), "the read stopped early"))
    }

    async fn get(
        &self,
        file: usize,
        range: Option<String>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, InventoryError> {
        let f = self
            .manifest
            .files
            .get(file)
            .ok_or_else(|| invalid(self.uri.clone(), format!("has no data file {file}")))?;
        let out = self
            .client
            .get_object()
            .bucket(&self.manifest.bucket)
            .key(&f.key)
            .expected_bucket_owner(&self.owner)
            .set_range(range.clone())
            .send()
            .await
            .map_err(|e| s3_err("GetObject", &self.manifest.bucket, e))?;
        let total = match out.content_range() {
            Some(r) => r.rsplit('/').next().and_then(|t| t.parse::<u64>().ok()),
            None => out.content_length().and_then(|l| u64::try_from(l).ok()),
        };
        // The object must be the one the manifest describes (its size; a ranged read gives
        // the total in Content-Range).
        if (range.is_none() || total.is_some()) && total != Some(f.size) {
            return Err(invalid(
                self.file_name(file),
                format!(
                    "is {} bytes but the manifest says {}; the report changed or is corrupt",
                    total.map_or("an unknown number of".into(), |t| t.to_string()),
                    f.size
                ),
            ));
        }
        Ok(out)
    }

    async fn read_csv(
        &self,
        file: usize,
        first: u64,
        last: Option<u64>,
        tx: &mpsc::Sender<Result<Page, InventoryError>>,
    ) -> Result<(), InventoryError> {
        let columns = self
            .manifest
            .columns
            .ok_or_else(|| invalid(self.uri.clone(), "CSV without columns"))?;
        let body = self.get(file, None).await?.body.into_async_read();
        let bridge = tokio_util::io::SyncIoBridge::new(body);
        let (prefix, name, tx) = (self.prefix.clone(), self.file_name(file), tx.clone());
        tokio::task::spawn_blocking(move || {
            let gz = flate2::read::MultiGzDecoder::new(bridge);
            let rows = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(gz)
                .into_records()
                .map(|r| {
                    r.map_err(|e| e.to_string())
                        .and_then(|rec| inventory::csv_row(&rec, &columns))
                });
            page_rows(rows, first, last, &prefix, &name, &tx);
        })
        .await
        .map_err(|e| invalid(self.file_name(file), format!("reader failed: {e}")))?;
        Ok(())
    }

    async fn read_parquet(
        &self,
        file: usize,
        first: u64,
        last: Option<u64>,
        tx: &mpsc::Sender<Result<Page, InventoryError>>,
    ) -> Result<(), InventoryError> {
        let name = self.file_name(file);
        let size = self.manifest.files[file].size;
        let bad = |m: String| invalid(name.clone(), m);
        if size < 12 {
            return Err(bad(format!("{size} bytes is too small for Parquet")));
        }
        let tail = self.range(file, size - 8, 8).await?;
        if &tail[4..] != b"PAR1" {
            return Err(bad("is not a Parquet file (no PAR1 footer)".into()));
        }
        let meta_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        let footer_at = size
            .checked_sub(8 + meta_len)
            .ok_or_else(|| bad("has a footer longer than the file".into()))?;
        let footer = self.range(file, footer_at, meta_len + 8).await?;
        let meta = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(
            &footer[..meta_len as usize],
        )
        .map_err(|e| bad(format!("has an unreadable footer: {e}")))?;
        let root = meta.file_metadata().schema();
        let wanted = [
            "key",
            "size",
            "e_tag",
            "storage_class",
            "is_latest",
            "is_delete_marker",
        ];
        let fields: Vec<_> = root
            .get_fields()
            .iter()
            .filter(|f| wanted.contains(&f.name()))
            .cloned()
            .collect();
        let projection = parquet::schema::types::Type::group_type_builder(root.name())
            .with_fields(fields)
            .build()
            .map_err(|e| bad(format!("projection: {e}")))?;
        let columns: Vec<usize> = (0..meta.file_metadata().schema_descr().num_columns())
            .filter(|&i| {
                let path = meta
                    .file_metadata()
                    .schema_descr()
                    .column(i)
                    .path()
                    .string();
                wanted.contains(&path.as_str())
            })
            .collect();
        let mut start = 0u64;
        let mut sent_end = false;
        for (g, group) in meta.row_groups().iter().enumerate() {
            let rows = u64::try_from(group.num_rows()).unwrap_or(0);
            let (g_first, g_last) = (start, start + rows);
            start += rows;
            if rows == 0 || g_last <= first {
                continue;
            }
            if last.is_some_and(|l| g_first > l) {
                break;
            }
            // The footer and this group's projected column chunks: all the reader touches.
            let mut pieces = vec![(footer_at, footer.clone())];
            for &c in &columns {
                let (at, len) = group.column(c).byte_range();
                pieces.push((at, self.range(file, at, len).await?));
            }
            let sparse = Sparse { len: size, pieces };
            let (projection, prefix, name, tx) = (
                projection.clone(),
                self.prefix.clone(),
                name.clone(),
                tx.clone(),
            );
            let is_last_group = g + 1 == meta.row_groups().len();
            let ended = tokio::task::spawn_blocking(move || {
                let options = parquet::file::serialized_reader::ReadOptionsBuilder::new()
                    .with_predicate(Box::new(move |_, i| i == g))
                    .build();
                let reader =
                    match parquet::file::serialized_reader::SerializedFileReader::new_with_options(
                        sparse, options,
                    ) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ =
                                tx.blocking_send(Err(invalid(name, format!("row group {g}: {e}"))));
                            return true;
                        }
                    };
                let iter = match reader.get_row_iter(Some(projection)) {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(invalid(name, format!("row group {g}: {e}"))));
                        return true;
                    }
                };
                let rows = iter.map(|r| {
                    r.map_err(|e| e.to_string())
                        .and_then(|row| parquet_row(&row))
                });
                let from = first.saturating_sub(g_first);
                let upto = last.map(|l| l - g_first);
                let more_follow = !is_last_group && last.is_none_or(|l| l >= g_last);
                page_group(rows, g_first, from, upto, more_follow, &prefix, &name, &tx)
            })
            .await
            .map_err(|e| bad(format!("reader failed: {e}")))?;
            if ended {
                sent_end = true;
                break;
            }
        }
        if !sent_end {
            let _ = tx
                .send(Ok(Page {
                    last_row: None,
                    entries: Vec::new(),
                    end: true,
                }))
                .await;
        }
        Ok(())
    }

    async fn range(&self, file: usize, at: u64, len: u64) -> Result<Bytes, InventoryError> {
        let out = self
            .get(file, Some(format!("bytes={at}-{}", at + len - 1)))
            .await?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| invalid(self.file_name(file), format!("reading failed: {e}")))?
            .into_bytes();
        if bytes.len() as u64 != len {
            return Err(invalid(
                self.file_name(file),
                format!("a ranged read returned {} bytes, not {len}", bytes.len()),
            ));
        }
        Ok(bytes)
    }
}

/// A Parquet row as a report [`Row`].
fn parquet_row(row: &parquet::record::Row) -> Result<Row, String> {
    let mut out = Row {
        key: String::new(),
        size: 0,
        etag: String::new(),
        storage_class: None,
        current: true,
    };
    let mut has_key = false;
    for (name, value) in row.get_column_iter() {
        match (name.as_str(), value) {
            ("key", Field::Str(k)) => {
                out.key.clone_from(k);
                has_key = true;
            }
            ("size", Field::Long(n)) => out.size = u64::try_from(*n).unwrap_or(0),
            ("size", Field::Int(n)) => out.size = u64::try_from(*n).unwrap_or(0),
            ("e_tag", Field::Str(e)) => out.etag.clone_from(e),
            ("storage_class", Field::Str(c)) if !c.is_empty() => {
                out.storage_class = Some(c.clone())
            }
            ("is_latest", Field::Bool(false)) | ("is_delete_marker", Field::Bool(true)) => {
                out.current = false;
            }
            _ => {}
        }
    }
    if !has_key {
        return Err("a row without a key".into());
    }
    Ok(out)
}

/// Sends rows `first..=last` of a whole file in pages.
fn page_rows(
    rows: impl Iterator<Item = Result<Row, String>>,
    first: u64,
    last: Option<u64>,
    prefix: &str,
    name: &str,
    tx: &mpsc::Sender<Result<Page, InventoryError>>,
) {
    page_group(rows, 0, first, last, false, prefix, name, tx);
}

/// Sends rows `from..=upto` (relative to a group starting at row `base`) in pages of
/// [`CHUNK_ROWS`]; returns whether the last page sent had `end` (no rows follow). With
/// `more_follow`, running out of this group's rows is not the end.
#[allow(clippy::too_many_arguments)]
fn page_group(
    rows: impl Iterator<Item = Result<Row, String>>,
    base: u64,
    from: u64,
    upto: Option<u64>,
    more_follow: bool,
    prefix: &str,
    name: &str,
    tx: &mpsc::Sender<Result<Page, InventoryError>>,
) -> bool {
    let mut page = Page::default();
    let mut in_page = 0u64;
    for (i, row) in rows.enumerate() {
        let i = i as u64;
        if i < from {
            continue;
        }
        if upto.is_some_and(|u| i > u) {
            break;
        }
        let row = match row {
            Ok(r) => r,
            Err(m) => {
                let _ = tx.blocking_send(Err(invalid(name, format!("row {}: {m}", base + i + 1))));
                return true;
            }
        };
        if in_page == CHUNK_ROWS {
            if tx.blocking_send(Ok(std::mem::take(&mut page))).is_err() {
                return true;
            }
            in_page = 0;
        }
        page.entries.extend(inventory::entry(row, prefix));
        page.last_row = Some(base + i);
        in_page += 1;
    }
    let reached_upto = upto.is_some_and(|u| page.last_row == Some(base + u));
    if more_follow && !reached_upto {
        // The next group continues this page's rows: send what is full, keep counting there.
        if in_page > 0 && tx.blocking_send(Ok(page)).is_err() {
            return true;
        }
        return false;
    }
    page.end = true;
    let _ = tx.blocking_send(Ok(page));
    true
}

/// The byte ranges of a Parquet file fetched so far: enough for its footer and the column
/// chunks of one row group. A read outside them is an error, never a silent refetch.
struct Sparse {
    len: u64,
    pieces: Vec<(u64, Bytes)>,
}

impl Sparse {
    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        for (at, bytes) in &self.pieces {
            // Pieces can be adjacent: a read starting where one ends belongs to the next.
            let end = at + bytes.len() as u64;
            if start >= *at && start < end {
                let from = (start - at) as usize;
                let to = length.map_or(bytes.len(), |l| from + l);
                if to <= bytes.len() {
                    return Ok(bytes.slice(from..to));
                }
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "bytes {start}+{length:?} were not fetched"
        )))
    }
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str) -> Result<Row, String> {
        Ok(Row {
            key: format!("p/{key}"),
            size: 1,
            etag: "e".into(),
            storage_class: None,
            current: true,
        })
    }

    fn pages(
        n: u64,
        from: u64,
        upto: Option<u64>,
        more_follow: bool,
    ) -> (Vec<(Option<u64>, usize, bool)>, bool) {
        let (tx, mut rx) = mpsc::channel(1000);
        let rows = (0..n).map(|i| row(&format!("{i:05}")));
        let ended = page_group(rows, 100, from, upto, more_follow, "p/", "f", &tx);
        drop(tx);
        let mut out = Vec::new();
        while let Ok(p) = rx.try_recv() {
            let p = p.unwrap();
            out.push((p.last_row, p.entries.len(), p.end));
        }
        (out, ended)
    }

    #[test]
    fn rows_are_paged_by_a_thousand_and_the_last_page_says_it_ends() {
        type Case = (
            u64,
            u64,
            Option<u64>,
            bool,
            Vec<(Option<u64>, usize, bool)>,
            bool,
        );
        let cases: Vec<Case> = vec![
            // A whole group of 2,500 rows starting at row 100.
            (
                2500,
                0,
                None,
                false,
                vec![
                    (Some(1099), 1000, false),
                    (Some(2099), 1000, false),
                    (Some(2599), 500, true),
                ],
                true,
            ),
            // Exactly two pages: the second is the end, no empty page after it.
            (
                2000,
                0,
                None,
                false,
                vec![(Some(1099), 1000, false), (Some(2099), 1000, true)],
                true,
            ),
            // One chunk's rows from the middle.
            (
                5000,
                1000,
                Some(1999),
                false,
                vec![(Some(2099), 1000, true)],
                true,
            ),
            // A group that more groups follow: full pages go out, the end is not claimed.
            (
                1500,
                0,
                None,
                true,
                vec![(Some(1099), 1000, false), (Some(1599), 500, false)],
                false,
            ),
            // A chunk that ends inside a group that others follow ends there.
            (1500, 0, Some(499), true, vec![(Some(599), 500, true)], true),
            // An empty file is one empty last page.
            (0, 0, None, false, vec![(None, 0, true)], true),
        ];
        for (n, from, upto, more, want, ended) in cases {
            assert_eq!(
                pages(n, from, upto, more),
                (want, ended),
                "{n} {from} {upto:?} {more}"
            );
        }
    }

    #[test]
    fn a_parquet_read_outside_the_fetched_ranges_is_an_error() {
        let s = Sparse {
            len: 100,
            pieces: vec![
                (10, Bytes::from_static(b"0123456789")),
                (90, Bytes::from_static(b"abcdefghij")),
            ],
        };
        assert_eq!(s.get_bytes(12, 3).unwrap(), Bytes::from_static(b"234"));
        assert_eq!(s.get_bytes(92, 8).unwrap(), Bytes::from_static(b"cdefghij"));
        assert!(s.get_bytes(18, 5).is_err());
        // Adjacent pieces: a read at the first one's end is the second one's start.
        let adjacent = Sparse {
            len: 20,
            pieces: vec![
                (0, Bytes::from_static(b"0123456789")),
                (10, Bytes::from_static(b"abcdefghij")),
            ],
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut adjacent.get_read(10).unwrap(), &mut rest).unwrap();
        assert_eq!(rest, "abcdefghij");
        assert!(s.get_bytes(50, 1).is_err());
    }
}
