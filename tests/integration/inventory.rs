//! Runs whose object list is an S3 Inventory report (CSV and Parquet) on moto: the report is
//! read in place of listing the source, checked against the job, and objects changed or
//! deleted since the report are handled as an aged listing's are.
//!
//! The report's layout follows
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html>: a
//! `manifest.json` naming the source bucket, the format, the schema and the data files, in a
//! bucket of the source's region.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use ferry::model::CopyJob;

use crate::worker::{Obj, World, create_bucket, listing, seed};

const SRC_ACCOUNT: &str = "111111111111";
const DST_ACCOUNT: &str = "222222222222";
const SRC_REGION: &str = "eu-west-1";
const INVENTORY_BUCKET: &str = "inventory-reports";

/// One row of a report.
#[derive(Clone)]
struct Row {
    key: String,
    size: u64,
    etag: String,
    latest: bool,
    delete_marker: bool,
}

fn md5_hex(body: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn row(key: &str, body: &[u8]) -> Row {
    Row {
        key: key.to_string(),
        size: body.len() as u64,
        etag: md5_hex(body),
        latest: true,
        delete_marker: false,
    }
}

/// A key as S3 Inventory writes it in CSV: URL-encoded, a space as `+`.
fn url_encoded(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'~' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn csv_gz(bucket: &str, rows: &[Row]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for r in rows {
        writeln!(
            gz,
            "\"{bucket}\",\"{}\",\"{}\",\"{}\",\"{}\",\"{}\",\"STANDARD\"",
            url_encoded(&r.key),
            r.latest,
            r.delete_marker,
            r.size,
            r.etag
        )
        .unwrap();
    }
    gz.finish().unwrap()
}

const CSV_SCHEMA: &str = "Bucket, Key, IsLatest, IsDeleteMarker, Size, ETag, StorageClass";

const PARQUET_SCHEMA: &str = "message s3.inventory { required binary bucket (STRING); required binary key (STRING); optional boolean is_latest; optional boolean is_delete_marker; optional int64 size; optional binary e_tag (STRING); }";

/// A Parquet data file with row groups of `group` rows.
fn parquet(bucket: &str, rows: &[Row], group: usize) -> Vec<u8> {
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = Arc::new(parquet::schema::parser::parse_message_type(PARQUET_SCHEMA).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    for part in rows.chunks(group) {
        let mut g = w.next_row_group().unwrap();
        let bytes = |f: &dyn Fn(&Row) -> String| -> Vec<ByteArray> {
            part.iter()
                .map(|r| ByteArray::from(f(r).as_str()))
                .collect()
        };
        let all = vec![1i16; part.len()];
        let mut col = 0;
        while let Some(mut c) = g.next_column().unwrap() {
            match col {
                0 => c.typed::<ByteArrayType>().write_batch(
                    &bytes(&|_| bucket.to_string()),
                    None,
                    None,
                ),
                1 => c
                    .typed::<ByteArrayType>()
                    .write_batch(&bytes(&|r| r.key.clone()), None, None),
                2 => c.typed::<BoolType>().write_batch(
                    &part.iter().map(|r| r.latest).collect::<Vec<_>>(),
                    Some(&all),
                    None,
                ),
                3 => c.typed::<BoolType>().write_batch(
                    &part.iter().map(|r| r.delete_marker).collect::<Vec<_>>(),
                    Some(&all),
                    None,
                ),
                4 => c.typed::<Int64Type>().write_batch(
                    &part.iter().map(|r| r.size as i64).collect::<Vec<_>>(),
                    Some(&all),
                    None,
                ),
                _ => c.typed::<ByteArrayType>().write_batch(
                    &bytes(&|r| r.etag.clone()),
                    Some(&all),
                    None,
                ),
            }
            .unwrap();
            c.close().unwrap();
            col += 1;
        }
        g.close().unwrap();
    }
    w.close().unwrap();
    out
}

/// Puts a report of `source` (its data files and manifest) under `prefix` of the inventory
/// bucket, and lets the destination role read it, as the inventory bucket's owner does.
async fn publish(
    w: &World,
    source: &str,
    prefix: &str,
    format: &str,
    files: Vec<Vec<u8>>,
) -> String {
    let ext = if format == "CSV" { "csv.gz" } else { "parquet" };
    let mut listed = Vec::new();
    for (i, body) in files.into_iter().enumerate() {
        let key = format!("{prefix}data/{i:04}.{ext}");
        listed.push(
            serde_json::json!({"key": key, "size": body.len(), "MD5checksum": md5_hex(&body)}),
        );
        w.src
            .put_object()
            .bucket(INVENTORY_BUCKET)
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await
            .expect("put data file");
    }
    let schema = if format == "CSV" {
        CSV_SCHEMA
    } else {
        PARQUET_SCHEMA
    };
    let manifest = serde_json::json!({
        "sourceBucket": source,
        "destinationBucket": format!("arn:aws:s3:::{INVENTORY_BUCKET}"),
        "version": "2016-11-30",
        "creationTimestamp": "1764460800000",
        "fileFormat": format,
        "fileSchema": schema,
        "files": listed,
    });
    let key = format!("{prefix}manifest.json");
    w.src
        .put_object()
        .bucket(INVENTORY_BUCKET)
        .key(&key)
        .body(ByteStream::from(serde_json::to_vec(&manifest).unwrap()))
        .send()
        .await
        .expect("put manifest");
    format!("s3://{INVENTORY_BUCKET}/{key}")
}

async fn inventory_bucket(w: &World) {
    create_bucket(&w.src, INVENTORY_BUCKET, SRC_REGION).await;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DestinationReadsReports",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{DST_ACCOUNT}:role/dst")},
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{INVENTORY_BUCKET}/*"),
        }]
    });
    w.src
        .put_bucket_policy()
        .bucket(INVENTORY_BUCKET)
        .policy(policy.to_string())
        .send()
        .await
        .expect("inventory bucket policy");
}

/// Stores a job reading the report at `manifest`, and grants its source as the operator does.
async fn job(w: &World, name: &str, src: (&str, &str), dst: &str, manifest: &str) -> CopyJob {
    let yaml = format!(
        r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: {name} }}
spec:
  source: {{ account: "{SRC_ACCOUNT}", region: {SRC_REGION}, bucket: {}, prefix: "{}", roleArn: "arn:aws:iam::{SRC_ACCOUNT}:role/src", inventory: {{ manifest: "{manifest}" }} }}
  destination: {{ account: "{DST_ACCOUNT}", region: us-east-1, bucket: {dst}, roleArn: "arn:aws:iam::{DST_ACCOUNT}:role/dst" }}
  run: {{ parallelism: 2 }}
"#,
        src.0, src.1
    );
    let job: CopyJob = serde_saphyr::from_str(&yaml).expect("job yaml");
    let problems = ferry::model::validate::validate(&job);
    assert!(problems.is_empty(), "{problems:?}");
    w.store.create_spec(&job, None).await.expect("store job");
    w.grant_source(&job).await;
    job
}

/// GETs of the report's data file whose key ends with `suffix`.
fn report_reads(w: &World, suffix: &str) -> usize {
    w.emu
        .strict_requests()
        .iter()
        .filter(|q| {
            q["bucket"] == INVENTORY_BUCKET
                && q["key"].as_str().is_some_and(|k| k.ends_with(suffix))
                && q["operation"].as_str().unwrap_or("").starts_with("GET")
        })
        .count()
}

/// Requests the run made to the source bucket that list it.
fn source_lists(w: &World, bucket: &str) -> usize {
    w.emu
        .strict_requests()
        .iter()
        .filter(|q| {
            q["bucket"] == bucket && q["operation"].as_str().unwrap_or("").contains("list-type")
        })
        .count()
}

fn body(i: usize) -> Vec<u8> {
    format!("object {i}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_inventory_drives_the_run_without_listing_the_source_and_copies_objects_as_they_are_now()
 {
    let w = World::new().await;
    create_bucket(&w.src, "src-inv", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-inv", "us-east-1").await;
    inventory_bucket(&w).await;
    // 3,000 objects under data/, with keys a CSV report must URL-encode.
    let keys: Vec<String> = (0..3000)
        .map(|i| match i % 3 {
            0 => format!("data/{i:05}"),
            1 => format!("data/{i:05} with space+plus"),
            _ => format!("data/{i:05}/ü%20é"),
        })
        .collect();
    let mut objects: Vec<Obj> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Obj::new(k, &body(i)))
        .collect();
    objects.push(Obj::new("other/outside-prefix", b"x"));
    seed(&w.src, "src-inv", objects).await;
    // The report, sorted by key as S3 writes it, in two files.
    let mut rows: Vec<Row> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| row(k, &body(i)))
        .collect();
    // Changed since the report: listed with its old ETag, copied as it is now.
    rows[7].etag = md5_hex(b"what it was before");
    rows[7].size = 18;
    // Deleted since the report: recorded as not found.
    rows.push(row("data/99999-deleted-since", b"gone"));
    // A noncurrent version and a delete marker of a report of all versions: not copied.
    rows.push(Row {
        latest: false,
        ..row("data/99999-old-version", b"old")
    });
    rows.push(Row {
        delete_marker: true,
        ..row("data/99999-delete-marker", b"")
    });
    rows.push(row("other/outside-prefix", b"x"));
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    // The first file has more chunks than its lister keeps for its task (one copying, two
    // waiting): the others are claimed from the index and their rows read again from the file.
    // 3,000 rows outside the source prefix after its 2,600 objects make sure of it at no cost
    // in copies, whatever the timing.
    let (one, two) = rows.split_at(2600);
    let mut one = one.to_vec();
    one.extend((0..3000).map(|i| row(&format!("other/pad-{i:05}"), b"")));
    let manifest = publish(
        &w,
        "src-inv",
        "src-inv/all/2026-11-30T00-00Z/",
        "CSV",
        vec![csv_gz("src-inv", &one), csv_gz("src-inv", two)],
    )
    .await;
    // Written after the report: not in it, not copied.
    seed(
        &w.src,
        "src-inv",
        vec![Obj::new("data/written-later", b"new")],
    )
    .await;
    job(&w, "inv", ("src-inv", "data/"), "dst-inv", &manifest).await;
    let before = source_lists(&w, "src-inv");
    let (a, b) = tokio::join!(
        w.run_worker_ok("inv", "r1", "ia", &[]),
        w.run_worker_ok("inv", "r1", "ib", &[])
    );
    let _ = (a, b);
    assert_eq!(
        source_lists(&w, "src-inv") - before,
        0,
        "the run listed the source"
    );
    let s = w.store.run_summary("inv", "r1").await.unwrap();
    assert!(s.complete(), "{s:?}");
    assert_eq!(s.partitions_total, Some(2), "one partition per data file");
    assert_eq!(s.progress.objects_copied, 3000);
    let reads = report_reads(&w, "data/0000.csv.gz");
    assert!(
        reads >= 2,
        "a chunk claimed from the index read its rows again: {reads} GETs of the file"
    );
    assert_eq!(
        s.progress.objects_failed, 1,
        "the object deleted since the report"
    );
    let want: BTreeMap<String, u64> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                k.strip_prefix("data/").unwrap().to_string(),
                body(i).len() as u64,
            )
        })
        .collect();
    assert_eq!(listing(&w.dst("us-east-1"), "dst-inv", "").await, want);
    let failures = w.store.failures("inv", "r1").await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].0.contains("deleted-since"), "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_inventory_is_read_a_row_group_at_a_time_and_every_listed_object_is_copied() {
    let w = World::new().await;
    create_bucket(&w.src, "src-pq", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-pq", "us-east-1").await;
    inventory_bucket(&w).await;
    let keys: Vec<String> = (0..3500)
        .map(|i| {
            format!(
                "{:012x}",
                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
            )
        })
        .collect();
    seed(
        &w.src,
        "src-pq",
        keys.iter()
            .enumerate()
            .map(|(i, k)| Obj::new(k, &body(i)))
            .collect(),
    )
    .await;
    let mut rows: Vec<Row> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| row(k, &body(i)))
        .collect();
    rows.push(Row {
        delete_marker: true,
        ..row("zz-deleted", b"")
    });
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    // Row groups of 700 rows: chunks of 1,000 rows cross them, and the chunks the lister does
    // not keep are read again from only the row groups that hold them.
    let manifest = publish(
        &w,
        "src-pq",
        "src-pq/all/2026-11-30T00-00Z/",
        "Parquet",
        vec![parquet("src-pq", &rows, 700)],
    )
    .await;
    job(&w, "pq", ("src-pq", ""), "dst-pq", &manifest).await;
    let before = source_lists(&w, "src-pq");
    w.run_worker_ok("pq", "r1", "pa", &[]).await;
    assert_eq!(
        source_lists(&w, "src-pq") - before,
        0,
        "the run listed the source"
    );
    let s = w.store.run_summary("pq", "r1").await.unwrap();
    assert!(s.complete(), "{s:?}");
    assert_eq!(
        (s.progress.objects_copied, s.progress.objects_failed),
        (3500, 0)
    );
    let got = listing(&w.dst("us-east-1"), "dst-pq", "").await;
    assert_eq!(got.len(), 3500);
    // The lister's reads (the footer's 2, then the 5 projected columns of each of the 5 row
    // groups) and at least one more: a chunk's own.
    let lister = 2 + 5 * 5;
    assert!(
        report_reads(&w, "data/0000.parquet") > lister,
        "a chunk claimed from the index read its row groups again"
    );
    assert!(keys.iter().all(|k| got.contains_key(k)));
}

#[tokio::test]
async fn a_manifest_of_another_bucket_stops_the_task_as_bad_input_and_copies_nothing() {
    let w = World::new().await;
    create_bucket(&w.src, "src-mine", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-mine", "us-east-1").await;
    inventory_bucket(&w).await;
    seed(&w.src, "src-mine", vec![Obj::new("a", b"a")]).await;
    let manifest = publish(
        &w,
        "someone-elses",
        "someone-elses/all/2026-11-30T00-00Z/",
        "CSV",
        vec![csv_gz("someone-elses", &[row("a", b"a")])],
    )
    .await;
    job(&w, "mine", ("src-mine", ""), "dst-mine", &manifest).await;
    let code = w.run_worker("mine", "r1", "ma", &[]).await;
    let log = std::fs::read_to_string(w.log("ma")).unwrap();
    assert_eq!(code, 2, "bad input exits 2: {log}");
    assert!(
        log.contains(
            "is the inventory of bucket `someone-elses`, not of the job's source bucket `src-mine`"
        ),
        "{log}"
    );
    assert!(
        listing(&w.dst("us-east-1"), "dst-mine", "")
            .await
            .is_empty()
    );
}
