//! `vs3`: a virtual S3 server for benchmarks of one job over 10⁷–10⁹ objects, on the `s3s`
//! crate. The source bucket's keys are a sorted function of an index, so a bucket costs no
//! disk and a LIST page costs O(page + log n). CopyObject into the destination bucket sets the
//! key's bit in a bitmap (a second copy of a key sets its bit in a second bitmap), so the
//! benchmark can check that every key was copied once. Latency is spent in sleeps; each prefix
//! partition has S3's request budget (3,500 copies/s and 5,500 reads/s by default: "Best
//! practices design patterns: optimizing Amazon S3 performance"), and a request over it gets
//! 503 SlowDown.
//!
//! ```text
//! vs3 --port P [--keys N] [--layout flat|one-prefix|many-prefixes] [--latency-ms 20]
//!     [--copy-rate 3500] [--read-rate 5500] [--partition-chars 0] [--size 4096]
//!     [--source src] [--destination dst] [--inventory csv|parquet] [--inventory-files 10]
//! ```
//!
//! With `--inventory`, bucket `inventory` holds an S3 Inventory report of the source bucket
//! (`src/all/2026-11-30T00-00Z/manifest.json` and its data files), served by GetObject with
//! byte ranges; `inventory_gets` and `source_lists` in the stats show what a run read.
//!
//! Stats: `GET /vs3/stats` (a GetObject) answers one JSON object of counters.
//! Operations: ListObjectsV2 (prefix, start-after, continuation token, max-keys; no delimiter),
//! CopyObject (with `x-amz-copy-source-if-match`), HeadObject, HeadBucket, GetBucketLocation,
//! ListMultipartUploads (always empty). Everything else is NotImplemented.

mod inventory;
mod keys;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use keys::{Bitmap, Layout};

struct Config {
    port: u16,
    keys: u64,
    layout: Layout,
    latency: Duration,
    copy_rate: f64,
    read_rate: f64,
    partition_chars: usize,
    size: i64,
    source: String,
    destination: String,
    inventory: Option<String>,
    inventory_files: u64,
}

fn parse_args() -> Config {
    let mut c = Config {
        port: 0,
        keys: 1_000_000,
        layout: Layout::Flat,
        latency: Duration::from_millis(20),
        copy_rate: 3500.0,
        read_rate: 5500.0,
        partition_chars: 0,
        size: 4096,
        source: "src".into(),
        destination: "dst".into(),
        inventory: None,
        inventory_files: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            panic!("flags take a value: {pair:?}")
        };
        let bad = |what: &str| -> ! { panic!("{flag} {value}: expected {what}") };
        match flag.as_str() {
            "--port" => c.port = value.parse().unwrap_or_else(|_| bad("a port")),
            "--keys" => c.keys = value.parse().unwrap_or_else(|_| bad("a count")),
            "--layout" => c.layout = Layout::parse(value).unwrap_or_else(|| bad("flat|one-prefix|many-prefixes")),
            "--latency-ms" => c.latency = Duration::from_millis(value.parse().unwrap_or_else(|_| bad("milliseconds"))),
            "--copy-rate" => c.copy_rate = value.parse().unwrap_or_else(|_| bad("requests per second")),
            "--read-rate" => c.read_rate = value.parse().unwrap_or_else(|_| bad("requests per second")),
            "--partition-chars" => c.partition_chars = value.parse().unwrap_or_else(|_| bad("a count")),
            "--size" => c.size = value.parse().unwrap_or_else(|_| bad("bytes")),
            "--source" => c.source = value.clone(),
            "--destination" => c.destination = value.clone(),
            "--inventory" => c.inventory = Some(value.clone()),
            "--inventory-files" => c.inventory_files = value.parse().unwrap_or_else(|_| bad("a count")),
            _ => panic!("unknown flag {flag}"),
        }
    }
    c
}

/// A token bucket per prefix partition (the first `partition_chars` characters of the key).
struct Budget {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Budget {
    fn new(rate: f64) -> Budget {
        Budget {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's token from `partition`; `false` when the partition is over budget.
    fn take(&self, partition: &str) -> bool {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap();
        let (tokens, at) = map
            .entry(partition.to_string())
            .or_insert((self.rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct Counters {
    lists: AtomicU64,
    source_lists: AtomicU64,
    inventory_gets: AtomicU64,
    lists_before_first_copy: AtomicU64,
    copies: AtomicU64,
    heads: AtomicU64,
    slowdowns: AtomicU64,
    precondition_failed: AtomicU64,
    /// Microseconds since start of the first and last successful copy (+1; 0 = none).
    first_copy_us: AtomicU64,
    last_copy_us: AtomicU64,
}

struct Vs3 {
    cfg: Config,
    copied: Bitmap,
    again: Bitmap,
    copies: Budget,
    reads: Budget,
    n: Counters,
    started: Instant,
    report: HashMap<String, bytes::Bytes>,
}

fn timestamp() -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
}

fn slow_down() -> S3Error {
    S3Error::with_message(S3ErrorCode::SlowDown, "Please reduce your request rate.")
}

impl Vs3 {
    fn partition<'k>(&self, key: &'k str) -> &'k str {
        match key.char_indices().nth(self.cfg.partition_chars) {
            Some((i, _)) => &key[..i],
            None => key,
        }
    }

    async fn pause(&self) {
        if !self.cfg.latency.is_zero() {
            tokio::time::sleep(self.cfg.latency).await;
        }
    }

    fn read(&self, key: &str) -> S3Result<()> {
        if self.reads.take(self.partition(key)) {
            Ok(())
        } else {
            self.n.slowdowns.fetch_add(1, Ordering::Relaxed);
            Err(slow_down())
        }
    }

    fn object(&self, i: u64) -> Object {
        Object {
            key: Some(self.cfg.layout.key(i, self.cfg.keys)),
            size: Some(self.cfg.size),
            e_tag: Some(ETag::Strong(keys::etag(i))),
            last_modified: Some(timestamp()),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            ..Object::default()
        }
    }

    fn stats(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let us = |a: &AtomicU64| g(a).saturating_sub(1) as f64 / 1e6;
        format!(
            "{{\"keys\":{},\"source_lists\":{},\"inventory_gets\":{},\"lists\":{},\"lists_before_first_copy\":{},\"copies\":{},\"distinct\":{},\"copied_twice\":{},\"heads\":{},\"slowdowns\":{},\"precondition_failed\":{},\"first_copy_s\":{},\"last_copy_s\":{},\"uptime_s\":{}}}",
            self.cfg.keys,
            g(&self.n.source_lists),
            g(&self.n.inventory_gets),
            g(&self.n.lists),
            g(&self.n.lists_before_first_copy),
            g(&self.n.copies),
            self.copied.count(),
            self.again.count(),
            g(&self.n.heads),
            g(&self.n.slowdowns),
            g(&self.n.precondition_failed),
            us(&self.n.first_copy_us),
            us(&self.n.last_copy_us),
            self.started.elapsed().as_secs_f64(),
        )
    }

    fn no_bucket(&self, bucket: &str) -> S3Result<()> {
        if bucket == self.cfg.source || bucket == self.cfg.destination {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }
}

#[async_trait::async_trait]
impl S3 for Vs3 {
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.no_bucket(&input.bucket)?;
        self.pause().await;
        let prefix = input.prefix.clone().unwrap_or_default();
        self.read(&prefix)?;
        self.n.lists.fetch_add(1, Ordering::Relaxed);
        if input.bucket == self.cfg.source {
            self.n.source_lists.fetch_add(1, Ordering::Relaxed);
        }
        if self.n.first_copy_us.load(Ordering::Relaxed) == 0 {
            self.n.lists_before_first_copy.fetch_add(1, Ordering::Relaxed);
        }
        let (layout, n) = (&self.cfg.layout, self.cfg.keys);
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let mut i = match &input.continuation_token {
            Some(t) => t.parse::<u64>().map_err(|_| s3_error!(InvalidArgument, "bad continuation token"))?,
            None => {
                let after = input.start_after.as_deref().unwrap_or("");
                let from = layout.first_above(after, n);
                from.max(layout.first_at_least(&prefix, n))
            }
        };
        let destination = input.bucket == self.cfg.destination;
        let mut contents = Vec::new();
        let mut truncated = false;
        loop {
            if destination {
                match self.copied.next_set(i, n) {
                    Some(j) => i = j,
                    None => break,
                }
            }
            if i >= n {
                break;
            }
            let key = layout.key(i, n);
            if !key.starts_with(prefix.as_str()) {
                break;
            }
            if contents.len() == max {
                truncated = true;
                break;
            }
            contents.push(self.object(i));
            i += 1;
        }
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            max_keys: Some(max as i32),
            key_count: Some(contents.len() as i32),
            is_truncated: Some(truncated),
            next_continuation_token: truncated.then(|| i.to_string()),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            encoding_type: input.encoding_type,
            contents: Some(contents),
            ..ListObjectsV2Output::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        if input.bucket != self.cfg.destination {
            return Err(s3_error!(AccessDenied, "copies go to the destination bucket"));
        }
        let CopySource::Bucket { bucket, key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented));
        };
        if **bucket != *self.cfg.source {
            return Err(s3_error!(NoSuchBucket));
        }
        self.pause().await;
        if !self.copies.take(self.partition(&input.key)) {
            self.n.slowdowns.fetch_add(1, Ordering::Relaxed);
            return Err(slow_down());
        }
        let Some(i) = self.cfg.layout.index(key, self.cfg.keys) else {
            return Err(s3_error!(NoSuchKey));
        };
        if input.key != **key {
            return Err(s3_error!(InvalidArgument, "vs3 copies a key to the same key"));
        }
        let etag = keys::etag(i);
        if let Some(ETagCondition::ETag(want)) = &input.copy_source_if_match
            && want.value() != etag
        {
            self.n.precondition_failed.fetch_add(1, Ordering::Relaxed);
            return Err(s3_error!(PreconditionFailed));
        }
        if self.copied.set(i) {
            self.again.set(i);
        }
        let us = self.started.elapsed().as_micros() as u64 + 1;
        let _ = self.n.first_copy_us.compare_exchange(0, us, Ordering::Relaxed, Ordering::Relaxed);
        self.n.last_copy_us.fetch_max(us, Ordering::Relaxed);
        self.n.copies.fetch_add(1, Ordering::Relaxed);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(timestamp()),
                ..CopyObjectResult::default()
            }),
            ..CopyObjectOutput::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        self.no_bucket(&input.bucket)?;
        self.pause().await;
        self.read(&input.key)?;
        self.n.heads.fetch_add(1, Ordering::Relaxed);
        let i = self
            .cfg
            .layout
            .index(&input.key, self.cfg.keys)
            .filter(|i| input.bucket == self.cfg.source || self.copied.get(*i))
            .ok_or_else(|| s3_error!(NoSuchKey))?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(self.cfg.size),
            e_tag: Some(ETag::Strong(keys::etag(i))),
            last_modified: Some(timestamp()),
            ..HeadObjectOutput::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        if req.input.bucket == inventory::BUCKET {
            let body = self.report.get(&req.input.key).ok_or_else(|| s3_error!(NoSuchKey))?;
            self.pause().await;
            self.n.inventory_gets.fetch_add(1, Ordering::Relaxed);
            let total = body.len() as u64;
            let (part, content_range) = match &req.input.range {
                None => (body.clone(), None),
                Some(r) => {
                    let at = r.check(total).map_err(|_| s3_error!(InvalidRange))?;
                    (
                        body.slice(at.start as usize..at.end as usize),
                        Some(format!("bytes {}-{}/{total}", at.start, at.end - 1)),
                    )
                }
            };
            return Ok(S3Response::new(GetObjectOutput {
                content_length: Some(part.len() as i64),
                content_range,
                e_tag: Some(ETag::Strong(format!("{total:x}"))),
                body: Some(StreamingBlob::from(s3s::Body::from(part))),
                ..GetObjectOutput::default()
            }));
        }
        if req.input.bucket != "vs3" || req.input.key != "stats" {
            return Err(s3_error!(NotImplemented, "vs3 serves GetObject of vs3/stats only"));
        }
        let body = self.stats();
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(body.len() as i64),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            ..GetObjectOutput::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.no_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.no_bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.no_bucket(&req.input.bucket)?;
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(req.input.bucket),
            is_truncated: Some(false),
            ..ListMultipartUploadsOutput::default()
        }))
    }
}

/// Every request may do everything: the server holds no data worth guarding.
struct AllowAll;

#[async_trait::async_trait]
impl s3s::access::S3Access for AllowAll {
    async fn check(&self, _cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let cfg = parse_args();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port))
        .await
        .expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("address").port();
    let n = cfg.keys;
    let report = match &cfg.inventory {
        Some(format) => inventory::build(format, cfg.inventory_files, &cfg.layout, n, cfg.size, &cfg.source),
        None => HashMap::new(),
    };
    let vs3 = Vs3 {
        report,
        copied: Bitmap::new(n),
        again: Bitmap::new(n),
        copies: Budget::new(cfg.copy_rate),
        reads: Budget::new(cfg.read_rate),
        n: Counters::default(),
        started: Instant::now(),
        cfg,
    };
    println!("vs3 listening on 127.0.0.1:{port} with {n} keys");
    let mut builder = s3s::service::S3ServiceBuilder::new(vs3);
    // Requests are signed with the benchmark's test credentials; the stats are read unsigned.
    builder.set_auth(s3s::auth::SimpleAuth::from_single("test", "test"));
    builder.set_access(AllowAll);
    let service = builder.build();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
