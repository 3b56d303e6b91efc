//! An S3 Inventory report of the virtual source bucket, generated at startup and served from
//! memory in bucket `inventory`: `src/all/2026-11-30T00-00Z/manifest.json` and its data files
//! under `src/all/data/`, in CSV (gzip) or Parquet, with the Bucket, Key, Size and ETag fields
//! (the layout of "Locating your inventory list", S3 User Guide).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;

use crate::keys::{self, Layout};

pub const BUCKET: &str = "inventory";
pub const MANIFEST: &str = "src/all/2026-11-30T00-00Z/manifest.json";

/// Builds the report: `files` data files splitting keys `0..n` in order.
pub fn build(format: &str, files: u64, layout: &Layout, n: u64, size: i64, source: &str) -> HashMap<String, Bytes> {
    let mut out = HashMap::new();
    let mut listed = Vec::new();
    for f in 0..files {
        let (from, to) = (f * n / files, (f + 1) * n / files);
        let (key, body) = match format {
            "csv" => (format!("src/all/data/{f:04}.csv.gz"), csv(layout, n, from, to, size, source)),
            "parquet" => (format!("src/all/data/{f:04}.parquet"), parquet(layout, n, from, to, size, source)),
            other => panic!("--inventory {other}: expected csv or parquet"),
        };
        listed.push(format!("{{\"key\":\"{key}\",\"size\":{},\"MD5checksum\":\"\"}}", body.len()));
        out.insert(key, Bytes::from(body));
    }
    let (file_format, schema) = match format {
        "csv" => ("CSV", "Bucket, Key, Size, ETag".to_string()),
        _ => ("Parquet", "message s3.inventory { required binary bucket (STRING); required binary key (STRING); optional int64 size; optional binary e_tag (STRING); }".to_string()),
    };
    let manifest = format!(
        "{{\"sourceBucket\":\"{source}\",\"destinationBucket\":\"arn:aws:s3:::{BUCKET}\",\"version\":\"2016-11-30\",\"creationTimestamp\":\"1764460800000\",\"fileFormat\":\"{file_format}\",\"fileSchema\":\"{schema}\",\"files\":[{}]}}",
        listed.join(",")
    );
    out.insert(MANIFEST.to_string(), Bytes::from(manifest));
    out
}

fn csv(layout: &Layout, n: u64, from: u64, to: u64, size: i64, source: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in from..to {
        // Generated keys need no URL-encoding: [0-9a-f/].
        writeln!(gz, "\"{source}\",\"{}\",\"{size}\",\"{}\"", layout.key(i, n), keys::etag(i)).unwrap();
    }
    gz.finish().unwrap()
}

fn parquet(layout: &Layout, n: u64, from: u64, to: u64, size: i64, source: &str) -> Vec<u8> {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message s3.inventory { required binary bucket (STRING); required binary key (STRING); optional int64 size; optional binary e_tag (STRING); }",
        )
        .unwrap(),
    );
    let props = Arc::new(WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY).build());
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    let group = 100_000u64;
    let mut at = from;
    while at < to {
        let end = (at + group).min(to);
        let rows = (end - at) as usize;
        let all = vec![1i16; rows];
        let mut g = w.next_row_group().unwrap();
        let mut col = 0;
        while let Some(mut c) = g.next_column().unwrap() {
            match col {
                0 => c.typed::<ByteArrayType>().write_batch(&vec![ByteArray::from(source); rows], None, None),
                1 => c.typed::<ByteArrayType>().write_batch(&(at..end).map(|i| ByteArray::from(layout.key(i, n).as_str())).collect::<Vec<_>>(), None, None),
                2 => c.typed::<Int64Type>().write_batch(&vec![size; rows], Some(&all), None),
                _ => c.typed::<ByteArrayType>().write_batch(&(at..end).map(|i| ByteArray::from(keys::etag(i).as_str())).collect::<Vec<_>>(), Some(&all), None),
            }
            .unwrap();
            c.close().unwrap();
            col += 1;
        }
        g.close().unwrap();
        at = end;
    }
    w.close().unwrap();
    out
}
