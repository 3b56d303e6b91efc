//! The S3 server's copy ceiling, for the worker benchmark (`scripts/bench-worker.sh`): copies
//! keys known in advance (no listing, no store) as fast as the server takes them.
//!
//! Usage: `cargo bench --bench ceiling -- ENDPOINT SRC DST KEYS_FILE MODE [CONCURRENCY]`
//! MODE `copy`: one CopyObject per key. MODE `multipart:PART_MIB`: one multipart upload per key
//! filled with parallel UploadPartCopy calls. KEYS_FILE lines are `key<TAB>size`.
//! Prints `objects=… bytes=… seconds=… objects_per_s=… mib_per_s=…`.

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::sync::Semaphore;

async fn multipart(c: &Client, src: &str, dst: &str, key: &str, size: u64, part: u64) {
    let up = c
        .create_multipart_upload()
        .bucket(dst)
        .key(key)
        .send()
        .await
        .expect("create mpu");
    let id = up.upload_id().expect("upload id").to_string();
    let mut set = tokio::task::JoinSet::new();
    for (i, (a, b)) in ferry::worker::plan::parts(size, part)
        .into_iter()
        .enumerate()
    {
        let (c, dst, key, id, source) = (
            c.clone(),
            dst.to_string(),
            key.to_string(),
            id.clone(),
            ferry::worker::copy::copy_source(src, key),
        );
        set.spawn(async move {
            let n = i as i32 + 1;
            let r = c
                .upload_part_copy()
                .bucket(dst)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .copy_source(source)
                .copy_source_range(format!("bytes={a}-{b}"))
                .send()
                .await
                .expect("upload part copy");
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(
                    r.copy_part_result()
                        .and_then(|p| p.e_tag())
                        .map(String::from),
                )
                .build()
        });
    }
    let mut parts = set.join_all().await;
    parts.sort_by_key(|p| p.part_number());
    c.complete_multipart_upload()
        .bucket(dst)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [endpoint, src, dst, keys_file, mode, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: ceiling ENDPOINT SRC DST KEYS_FILE copy|multipart:PART_MIB [CONCURRENCY]"
        );
        std::process::exit(2);
    };
    let concurrency: usize = rest.first().and_then(|c| c.parse().ok()).unwrap_or(64);
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    let client = Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    );
    let keys: Vec<(String, u64)> = std::fs::read_to_string(keys_file)
        .expect("keys file")
        .lines()
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(k, s)| (k.to_string(), s.parse().unwrap_or(0)))
        })
        .collect();
    let part = mode
        .strip_prefix("multipart:")
        .map(|m| m.parse::<u64>().expect("part MiB") * 1024 * 1024);
    let sem = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let total: u64 = keys.iter().map(|(_, s)| s).sum();
    for (key, size) in keys.clone() {
        let permit = Arc::clone(&sem).acquire_owned().await.expect("semaphore");
        let (c, src, dst) = (client.clone(), src.clone(), dst.clone());
        set.spawn(async move {
            let _p = permit;
            match part {
                Some(part) => multipart(&c, &src, &dst, &key, size, part).await,
                None => {
                    c.copy_object()
                        .bucket(&dst)
                        .key(&key)
                        .copy_source(ferry::worker::copy::copy_source(&src, &key))
                        .send()
                        .await
                        .expect("copy");
                }
            }
        });
    }
    set.join_all().await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "objects={} bytes={total} seconds={secs:.3} objects_per_s={:.1} mib_per_s={:.1}",
        keys.len(),
        keys.len() as f64 / secs,
        total as f64 / 1048576.0 / secs
    );
}
