//! The copy engine: listing key ranges and copying objects server-side with the destination
//! credentials — CopyObject up to the multipart threshold, UploadPartCopy in parallel above it —
//! keeping metadata, content headers, tags, storage class, encryption and (when asked) ACLs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, EncodingType, MetadataDirective, RequestPayer,
    ServerSideEncryption, StorageClass, TaggingDirective,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tokio::sync::Semaphore;

use super::budget::{Kind, RateLimiter};
use super::plan::{self, Entry, Range};
use crate::aws::{ErrorKind, describe, error_code, kind};
use crate::model::CopyJobSpec;

/// User-metadata key holding the source ETag on copies whose ETag cannot equal the source's
/// (multipart copies, multipart sources), so a later run can tell they are identical.
pub const SOURCE_ETAG_KEY: &str = "ferry-source-etag";

/// Characters left alone in an `x-amz-copy-source` value: unreserved ones and `/`.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Errors that stop a chunk (it is released and retried later), as opposed to per-object
/// failures, which are recorded and counted.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("S3 {op} on s3://{bucket} failed: {message}")]
    S3 {
        op: &'static str,
        bucket: String,
        message: String,
        kind: ErrorKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stopped before finishing (shutdown)")]
    Cancelled,
}

/// Why one object was not copied; recorded with its key, never fatal for the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFailure {
    pub key: String,
    pub code: String,
    pub reason: String,
}

/// What happened to one object.
#[derive(Debug)]
pub enum Copied {
    Done {
        bytes: u64,
    },
    /// Copied, but with a caveat worth reporting (e.g. the ACL could not be set).
    DoneWithNote {
        bytes: u64,
        note: ObjectFailure,
    },
    Failed(ObjectFailure),
    /// Copied without recording the source ETag, and the copy's ETag differs from it; only
    /// [`Copier::copy`] sees this (it copies again, recording the ETag).
    Diverged {
        bytes: u64,
    },
}

/// Copies objects of one job with the destination role's credentials.
#[derive(Debug, Clone)]
pub struct Copier {
    /// Client in the source region (listing, HEAD, tagging, ACL reads).
    pub src: Client,
    /// Client in the destination region (copies, destination listing).
    pub dst: Client,
    /// Client in the region of the `copy.reportUri` bucket (the destination client when the
    /// job has no report): S3 answers a request signed for another region with 301, which the
    /// SDK does not follow.
    pub report: Client,
    pub spec: Arc<CopyJobSpec>,
    pub limiter: Option<Arc<RateLimiter>>,
    /// Concurrent UploadPartCopy calls per multipart object.
    pub part_concurrency: usize,
    /// Set once a plain CopyObject returned an ETag other than the source's: SSE-KMS on either
    /// side (or SSE-C) makes ETags that are not the MD5 of the data, so from then on every copy
    /// records the source ETag (see [`SOURCE_ETAG_KEY`]) for the next run to compare.
    pub etags_diverge: Arc<AtomicBool>,
}

pub(crate) fn s3_err<E>(op: &'static str, bucket: &str, err: SdkError<E, HttpResponse>) -> CopyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    CopyError::S3 {
        op,
        bucket: bucket.to_string(),
        message: describe(&err),
        kind: kind(&err),
        source: Box::new(err),
    }
}

/// Per-object failure, or a chunk-stopping error if the failure is transient (the SDK already
/// retried it) — the chunk is then retried as a whole later.
fn object_err<E>(
    op: &'static str,
    bucket: &str,
    key: &str,
    err: SdkError<E, HttpResponse>,
) -> Result<Copied, CopyError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if kind(&err).is_retryable() {
        return Err(s3_err(op, bucket, err));
    }
    Ok(Copied::Failed(ObjectFailure {
        key: key.to_string(),
        code: error_code(&err),
        reason: format!("{op}: {}", describe(&err)),
    }))
}

/// A key as listed with `encoding-type=url`: percent-encoded, with `+` for a space.
pub(crate) fn decode_listed_key(raw: &str) -> String {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The `x-amz-copy-source` value for a key.
pub fn copy_source(bucket: &str, key: &str) -> String {
    format!("{}/{}", bucket, utf8_percent_encode(key, COPY_SOURCE))
}

/// Which side of the copy a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl Copier {
    fn payer(&self) -> Option<RequestPayer> {
        self.spec
            .source
            .requester_pays
            .then_some(RequestPayer::Requester)
    }

    /// Waits for a send slot of the task's request budget for a request of `kind`.
    async fn throttle(&self, kind: Kind) {
        if let Some(l) = &self.limiter {
            l.acquire(kind).await;
        }
    }

    /// Lists the objects of `range` (keys relative to the side's prefix), up to `limit` entries
    /// when given. Returns the entries and whether the range has more.
    pub async fn list(
        &self,
        side: Side,
        range: &Range,
        limit: Option<usize>,
    ) -> Result<(Vec<Entry>, bool), CopyError> {
        let (client, bucket, prefix, owner) = match side {
            Side::Source => (
                &self.src,
                &self.spec.source.bucket,
                &self.spec.source.prefix,
                &self.spec.source.account,
            ),
            Side::Destination => (
                &self.dst,
                &self.spec.destination.bucket,
                &self.spec.destination.prefix,
                &self.spec.destination.account,
            ),
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let start_after = range.after.as_ref().map(|a| format!("{prefix}{a}"));
        let narrowed = format!("{prefix}{}", range.common_prefix());
        loop {
            self.throttle(Kind::Read).await;
            let page = limit.map(|l| (l - out.len()).min(1000) as i32);
            let mut req = client
                .list_objects_v2()
                .bucket(bucket)
                .expected_bucket_owner(owner)
                .prefix(&narrowed)
                .encoding_type(EncodingType::Url)
                .set_max_keys(page)
                .set_continuation_token(token.take());
            if out.is_empty() {
                req = req.set_start_after(start_after.clone());
            }
            if side == Side::Source {
                req = req.set_request_payer(self.payer());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| s3_err("ListObjectsV2", bucket, e))?;
            for o in resp.contents() {
                let raw = o.key().unwrap_or_default();
                let key = decode_listed_key(raw);
                let rel = key
                    .strip_prefix(prefix.as_str())
                    .unwrap_or(&key)
                    .to_string();
                if range.upto.as_deref().is_some_and(|u| rel.as_str() > u) {
                    return Ok((out, false));
                }
                out.push(Entry {
                    rel,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    storage_class: o.storage_class().map(|c| c.as_str().to_string()),
                });
                if limit.is_some_and(|l| out.len() >= l) {
                    let more = resp.is_truncated() == Some(true)
                        || o.key() != resp.contents().last().and_then(|l| l.key());
                    return Ok((out, more));
                }
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok((out, false)),
            }
        }
    }

    /// The first source key (relative to the source prefix) after `after`, or the first of
    /// all: one ListObjectsV2 with `MaxKeys=1`, a probe of the planner (see `worker::split`).
    pub async fn first_source_key(&self, after: Option<&str>) -> Result<Option<String>, CopyError> {
        let (bucket, prefix) = (&self.spec.source.bucket, &self.spec.source.prefix);
        self.throttle(Kind::Read).await;
        let resp = self
            .src
            .list_objects_v2()
            .bucket(bucket)
            .expected_bucket_owner(&self.spec.source.account)
            .prefix(prefix)
            .set_start_after(after.map(|a| format!("{prefix}{a}")))
            .max_keys(1)
            .encoding_type(EncodingType::Url)
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(|e| s3_err("ListObjectsV2", bucket, e))?;
        Ok(resp.contents().first().map(|o| {
            let key = decode_listed_key(o.key().unwrap_or_default());
            key.strip_prefix(prefix.as_str())
                .unwrap_or(&key)
                .to_string()
        }))
    }

    fn keys(&self, rel: &str) -> (String, String) {
        let src = format!("{}{rel}", self.spec.source.prefix);
        let dst = plan::destination_key(
            &self.spec.source.prefix,
            &self.spec.destination.prefix,
            &src,
        );
        (src, dst)
    }

    fn storage_class(&self, src: &Entry) -> Option<StorageClass> {
        match (&self.spec.destination.storage_class, &src.storage_class) {
            (Some(c), _) => Some(StorageClass::from(c.as_str())),
            (None, Some(c)) if c != "STANDARD" => Some(StorageClass::from(c.as_str())),
            _ => None,
        }
    }

    /// Whether the destination object records `src`'s ETag (see [`SOURCE_ETAG_KEY`]):
    /// `Ok(Ok(true))` identical, `Ok(Ok(false))` differs or is gone, `Ok(Err(_))` the HEAD was
    /// refused (HeadObject needs `s3:GetObject` on the destination): reported, never taken for
    /// "differs", which would recopy silently.
    pub async fn verify(&self, src: &Entry) -> Result<Result<bool, ObjectFailure>, CopyError> {
        let (_, dst_key) = self.keys(&src.rel);
        self.throttle(Kind::Read).await;
        let head = self
            .dst
            .head_object()
            .bucket(&self.spec.destination.bucket)
            .key(&dst_key)
            .expected_bucket_owner(&self.spec.destination.account)
            .send()
            .await;
        match head {
            Ok(h) => Ok(Ok(h
                .metadata()
                .and_then(|m| m.get(SOURCE_ETAG_KEY))
                .is_some_and(|e| e == &src.etag))),
            Err(e) if kind(&e) == ErrorKind::NotFound => Ok(Ok(false)),
            Err(e) => match object_err("HeadObject", &self.spec.destination.bucket, &dst_key, e)? {
                Copied::Failed(mut f) => {
                    f.reason = format!(
                        "{} (comparing with the destination copy; the destination role needs s3:GetObject there)",
                        f.reason
                    );
                    Ok(Err(f))
                }
                _ => Ok(Ok(false)),
            },
        }
    }

    /// Copies a listed object. An object rewritten since it was listed fails the copy's
    /// `x-amz-copy-source-if-match`; it is then looked up again and its current version copied,
    /// and one deleted since is recorded as not found. Returns the entry actually copied.
    pub async fn copy_listed(
        &self,
        src: Entry,
        stop: &AtomicBool,
    ) -> Result<(Entry, Copied), CopyError> {
        match self.copy(&src, stop).await? {
            Copied::Failed(f) if f.code == "PreconditionFailed" => {
                match self.current(&src).await? {
                    Some(now) => {
                        let copied = self.copy(&now, stop).await?;
                        Ok((now, copied))
                    }
                    None => Ok((
                        src,
                        Copied::Failed(ObjectFailure {
                            key: f.key,
                            code: "NoSuchKey".into(),
                            reason: "deleted from the source after it was listed".into(),
                        }),
                    )),
                }
            }
            other => Ok((src, other)),
        }
    }

    /// The source object as it is now (`None` if it is gone).
    async fn current(&self, src: &Entry) -> Result<Option<Entry>, CopyError> {
        let (src_key, _) = self.keys(&src.rel);
        let bucket = &self.spec.source.bucket;
        self.throttle(Kind::Read).await;
        match self
            .src
            .head_object()
            .bucket(bucket)
            .key(&src_key)
            .expected_bucket_owner(&self.spec.source.account)
            .set_request_payer(self.payer())
            .send()
            .await
        {
            Ok(h) => Ok(Some(Entry {
                rel: src.rel.clone(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                etag: h.e_tag().unwrap_or_default().to_string(),
                storage_class: h.storage_class().map(|c| c.as_str().to_string()),
            })),
            Err(e) if kind(&e) == ErrorKind::NotFound => Ok(None),
            // Cannot tell (e.g. HEAD denied): keep the entry; the copy's own failure is recorded.
            Err(e) if !kind(&e).is_retryable() => Ok(Some(src.clone())),
            Err(e) => Err(s3_err("HeadObject", bucket, e)),
        }
    }

    /// Copies one object. `stop` aborts a multipart copy between parts.
    pub async fn copy(&self, src: &Entry, stop: &AtomicBool) -> Result<Copied, CopyError> {
        let threshold = self.spec.copy.multipart_threshold_mib * 1024 * 1024;
        let multipart_source = src.etag.contains('-');
        let record = multipart_source
            || self.spec.destination.kms_key_id.is_some()
            || self.etags_diverge.load(Ordering::Relaxed);
        let result = if src.size > threshold {
            self.copy_multipart(src, threshold, stop).await?
        } else {
            match self.copy_single(src, record).await? {
                // The copy's ETag is not the source's (SSE-KMS on either side): the next run
                // could not tell it is identical, so copy it again recording the source ETag,
                // and record it on every later copy of this task.
                Copied::Diverged { .. } => {
                    self.etags_diverge.store(true, Ordering::Relaxed);
                    tracing::info!(key = %super::shown_key(&src.rel), "copies get ETags other than their sources' (SSE-KMS?): recording source ETags from now on");
                    self.copy_single(src, true).await?
                }
                other => other,
            }
        };
        match result {
            Copied::Done { bytes } if self.spec.copy.acl => self.copy_acl(src, bytes).await,
            other => Ok(other),
        }
    }

    /// Source metadata, content headers and (if kept) tags, read for copies that must set them.
    async fn read_source(
        &self,
        key: &str,
    ) -> Result<Result<SourceHeaders, ObjectFailure>, CopyError> {
        let bucket = &self.spec.source.bucket;
        self.throttle(Kind::Read).await;
        let head = match self
            .src
            .head_object()
            .bucket(bucket)
            .key(key)
            .expected_bucket_owner(&self.spec.source.account)
            .set_request_payer(self.payer())
            .send()
            .await
        {
            Ok(h) => h,
            Err(e) => {
                return match object_err("HeadObject", bucket, key, e)? {
                    Copied::Failed(f) => Ok(Err(f)),
                    _ => Ok(Err(ObjectFailure {
                        key: key.into(),
                        code: "HeadObject".into(),
                        reason: "unexpected".into(),
                    })),
                };
            }
        };
        let mut tagging = None;
        if self.spec.copy.tags {
            self.throttle(Kind::Read).await;
            match self
                .src
                .get_object_tagging()
                .bucket(bucket)
                .key(key)
                .expected_bucket_owner(&self.spec.source.account)
                .set_request_payer(self.payer())
                .send()
                .await
            {
                Ok(t) => {
                    let pairs: Vec<String> = t
                        .tag_set()
                        .iter()
                        .map(|t| {
                            format!(
                                "{}={}",
                                utf8_percent_encode(t.key(), NON_ALPHANUMERIC),
                                utf8_percent_encode(t.value(), NON_ALPHANUMERIC)
                            )
                        })
                        .collect();
                    if !pairs.is_empty() {
                        tagging = Some(pairs.join("&"));
                    }
                }
                Err(e) => {
                    if let Copied::Failed(f) = object_err("GetObjectTagging", bucket, key, e)? {
                        return Ok(Err(f));
                    }
                }
            }
        }
        Ok(Ok(SourceHeaders {
            metadata: head.metadata().cloned().unwrap_or_default(),
            content_type: head.content_type().map(str::to_string),
            cache_control: head.cache_control().map(str::to_string),
            content_disposition: head.content_disposition().map(str::to_string),
            content_encoding: head.content_encoding().map(str::to_string),
            content_language: head.content_language().map(str::to_string),
            tagging,
        }))
    }

    /// CopyObject. With `record_etag` the metadata is replaced by the source's plus the source
    /// ETag (needs a HeadObject first); otherwise S3 copies metadata and tags itself.
    async fn copy_single(&self, src: &Entry, record_etag: bool) -> Result<Copied, CopyError> {
        let (src_key, dst_key) = self.keys(&src.rel);
        let bucket = &self.spec.destination.bucket;
        let copy = &self.spec.copy;
        let mut req = self
            .dst
            .copy_object()
            .bucket(bucket)
            .key(&dst_key)
            .expected_bucket_owner(&self.spec.destination.account)
            .copy_source(copy_source(&self.spec.source.bucket, &src_key))
            .expected_source_bucket_owner(&self.spec.source.account)
            .copy_source_if_match(&src.etag)
            .set_storage_class(self.storage_class(src))
            .set_request_payer(self.payer())
            .tagging_directive(if copy.tags {
                TaggingDirective::Copy
            } else {
                TaggingDirective::Replace
            });
        if let Some(k) = &self.spec.destination.kms_key_id {
            req = req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(k);
        }
        if record_etag {
            let headers = match self.read_source(&src_key).await? {
                Ok(h) => h,
                Err(f) => return Ok(Copied::Failed(f)),
            };
            let mut metadata = if copy.metadata {
                headers.metadata.clone()
            } else {
                HashMap::new()
            };
            metadata.insert(SOURCE_ETAG_KEY.into(), src.etag.clone());
            req = req
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(metadata));
            if copy.metadata {
                req = req
                    .set_content_type(headers.content_type)
                    .set_cache_control(headers.cache_control)
                    .set_content_disposition(headers.content_disposition)
                    .set_content_encoding(headers.content_encoding)
                    .set_content_language(headers.content_language);
            }
        } else {
            req = req.metadata_directive(if copy.metadata {
                MetadataDirective::Copy
            } else {
                MetadataDirective::Replace
            });
        }
        self.throttle(Kind::Write).await;
        match req.send().await {
            Ok(out)
                if !record_etag
                    && out
                        .copy_object_result()
                        .and_then(|r| r.e_tag())
                        .is_some_and(|e| e != src.etag) =>
            {
                Ok(Copied::Diverged { bytes: src.size })
            }
            Ok(_) => Ok(Copied::Done { bytes: src.size }),
            Err(e) => object_err("CopyObject", bucket, &src_key, e),
        }
    }

    async fn copy_multipart(
        &self,
        src: &Entry,
        threshold: u64,
        stop: &AtomicBool,
    ) -> Result<Copied, CopyError> {
        let (src_key, dst_key) = self.keys(&src.rel);
        let bucket = self.spec.destination.bucket.clone();
        let headers = match self.read_source(&src_key).await? {
            Ok(h) => h,
            Err(f) => return Ok(Copied::Failed(f)),
        };
        let copy = &self.spec.copy;
        let mut metadata = if copy.metadata {
            headers.metadata.clone()
        } else {
            HashMap::new()
        };
        metadata.insert(SOURCE_ETAG_KEY.into(), src.etag.clone());
        let mut create = self
            .dst
            .create_multipart_upload()
            .bucket(&bucket)
            .key(&dst_key)
            .expected_bucket_owner(&self.spec.destination.account)
            .set_metadata(Some(metadata))
            .set_storage_class(self.storage_class(src))
            .set_tagging(if copy.tags {
                headers.tagging.clone()
            } else {
                None
            });
        if copy.metadata {
            create = create
                .set_content_type(headers.content_type)
                .set_cache_control(headers.cache_control)
                .set_content_disposition(headers.content_disposition)
                .set_content_encoding(headers.content_encoding)
                .set_content_language(headers.content_language);
        }
        if let Some(k) = &self.spec.destination.kms_key_id {
            create = create
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(k);
        }
        self.throttle(Kind::Write).await;
        let upload = match create.send().await {
            Ok(u) => u,
            Err(e) => return object_err("CreateMultipartUpload", &bucket, &src_key, e),
        };
        let Some(upload_id) = upload.upload_id().map(str::to_string) else {
            return Ok(Copied::Failed(ObjectFailure {
                key: src_key,
                code: "NoUploadId".into(),
                reason: "CreateMultipartUpload returned no upload id".into(),
            }));
        };
        let upload = OpenUpload {
            client: self.dst.clone(),
            bucket: bucket.clone(),
            key: dst_key.clone(),
            owner: self.spec.destination.account.clone(),
            id: upload_id.clone(),
            open: true,
        };
        let result = self
            .copy_parts(src, &src_key, &dst_key, &upload_id, threshold, stop)
            .await;
        let outcome = match result {
            Ok(parts) => {
                self.throttle(Kind::Write).await;
                let done = self
                    .dst
                    .complete_multipart_upload()
                    .bucket(&bucket)
                    .key(&dst_key)
                    .expected_bucket_owner(&self.spec.destination.account)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match done {
                    Ok(_) => {
                        upload.completed();
                        return Ok(Copied::Done { bytes: src.size });
                    }
                    Err(e) => object_err("CompleteMultipartUpload", &bucket, &src_key, e),
                }
            }
            Err(failed) => failed,
        };
        upload.abort().await;
        outcome
    }

    async fn copy_parts(
        &self,
        src: &Entry,
        src_key: &str,
        dst_key: &str,
        upload_id: &str,
        threshold: u64,
        stop: &AtomicBool,
    ) -> Result<Vec<CompletedPart>, Result<Copied, CopyError>> {
        let part = plan::part_size(src.size, threshold.min(plan::DEFAULT_PART));
        let ranges = plan::parts(src.size, part);
        let sem = Arc::new(Semaphore::new(self.part_concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        let source = copy_source(&self.spec.source.bucket, src_key);
        for (i, (start, end)) in ranges.into_iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                set.abort_all();
                return Err(Err(CopyError::Cancelled));
            }
            let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
                break;
            };
            let this = self.clone();
            let (source, dst_key, upload_id, etag) = (
                source.clone(),
                dst_key.to_string(),
                upload_id.to_string(),
                src.etag.clone(),
            );
            let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
            set.spawn(async move {
                let _permit = permit;
                this.throttle(Kind::Write).await;
                let r = this
                    .dst
                    .upload_part_copy()
                    .bucket(&this.spec.destination.bucket)
                    .key(&dst_key)
                    .expected_bucket_owner(&this.spec.destination.account)
                    .expected_source_bucket_owner(&this.spec.source.account)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(source)
                    .copy_source_if_match(etag)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .set_request_payer(this.payer())
                    .send()
                    .await;
                (number, r)
            });
        }
        let mut parts = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (number, r) = joined.map_err(|e| {
                Ok(Copied::Failed(ObjectFailure {
                    key: src_key.into(),
                    code: "TaskFailed".into(),
                    reason: e.to_string(),
                }))
            })?;
            match r {
                Ok(out) => parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(
                            out.copy_part_result()
                                .and_then(|p| p.e_tag())
                                .map(str::to_string),
                        )
                        .build(),
                ),
                Err(e) => {
                    set.abort_all();
                    return Err(object_err(
                        "UploadPartCopy",
                        &self.spec.destination.bucket,
                        src_key,
                        e,
                    ));
                }
            }
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    /// Copies the source object's ACL grants (as `x-amz-grant-*` headers) to the copy, except
    /// the grants to the source object's owner: replayed, they would give the source account
    /// control of the copy. The copy's owner (the destination account) keeps its own rights.
    async fn copy_acl(&self, src: &Entry, bytes: u64) -> Result<Copied, CopyError> {
        let (src_key, dst_key) = self.keys(&src.rel);
        self.throttle(Kind::Read).await;
        let acl = match self
            .src
            .get_object_acl()
            .bucket(&self.spec.source.bucket)
            .key(&src_key)
            .expected_bucket_owner(&self.spec.source.account)
            .set_request_payer(self.payer())
            .send()
            .await
        {
            Ok(a) => a,
            Err(e) => {
                return Ok(
                    match object_err("GetObjectAcl", &self.spec.source.bucket, &src_key, e)? {
                        Copied::Failed(note) => Copied::DoneWithNote { bytes, note },
                        other => other,
                    },
                );
            }
        };
        let source_owner = acl.owner().and_then(|o| o.id());
        let mut grants: HashMap<&str, Vec<String>> = HashMap::new();
        for g in acl.grants() {
            let (Some(grantee), Some(perm)) = (g.grantee(), g.permission()) else {
                continue;
            };
            if grantee.id().is_some() && grantee.id() == source_owner {
                continue;
            }
            let who = if let Some(id) = grantee.id() {
                format!("id=\"{id}\"")
            } else if let Some(uri) = grantee.uri() {
                format!("uri=\"{uri}\"")
            } else {
                continue;
            };
            grants.entry(perm.as_str()).or_default().push(who);
        }
        let joined = |p: &str| grants.get(p).map(|v| v.join(", "));
        self.throttle(Kind::Write).await;
        let put = self
            .dst
            .put_object_acl()
            .bucket(&self.spec.destination.bucket)
            .key(&dst_key)
            .expected_bucket_owner(&self.spec.destination.account)
            .set_grant_full_control(joined("FULL_CONTROL"))
            .set_grant_read(joined("READ"))
            .set_grant_read_acp(joined("READ_ACP"))
            .set_grant_write_acp(joined("WRITE_ACP"))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Copied::Done { bytes }),
            Err(e) => {
                let code = error_code(&e);
                let reason = if code == "AccessControlListNotSupported" {
                    "ACL not copied: the destination bucket has ACLs disabled (Object Ownership BucketOwnerEnforced)".to_string()
                } else {
                    format!("ACL not copied: PutObjectAcl: {}", describe(&e))
                };
                match kind(&e).is_retryable() {
                    true => Err(s3_err("PutObjectAcl", &self.spec.destination.bucket, e)),
                    false => Ok(Copied::DoneWithNote {
                        bytes,
                        note: ObjectFailure {
                            key: src_key,
                            code,
                            reason,
                        },
                    }),
                }
            }
        }
    }

    /// Deletes destination objects (relative keys) in batches of 1,000. Returns how many were
    /// deleted and the per-key failures.
    pub async fn delete(&self, rels: &[String]) -> Result<(u64, Vec<ObjectFailure>), CopyError> {
        let bucket = &self.spec.destination.bucket;
        let mut deleted = 0;
        let mut failures = Vec::new();
        for batch in rels.chunks(1000) {
            let objects: Vec<_> = batch
                .iter()
                .filter_map(|r| {
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key(format!("{}{r}", self.spec.destination.prefix))
                        .build()
                        .ok()
                })
                .collect();
            let Ok(delete) = aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
            else {
                continue;
            };
            self.throttle(Kind::Write).await;
            let out = self
                .dst
                .delete_objects()
                .bucket(bucket)
                .expected_bucket_owner(&self.spec.destination.account)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_err("DeleteObjects", bucket, e))?;
            for e in out.errors() {
                failures.push(ObjectFailure {
                    key: e.key().unwrap_or_default().to_string(),
                    code: e.code().unwrap_or("Unknown").to_string(),
                    reason: format!("DeleteObjects: {}", e.message().unwrap_or_default()),
                });
            }
            deleted += batch.len() as u64 - out.errors().len() as u64;
        }
        Ok((deleted, failures))
    }

    /// The region of `bucket` (owned by the destination account), from GetBucketLocation, which
    /// S3 answers from any region; `None` if it cannot be read.
    pub async fn bucket_region(&self, bucket: &str) -> Option<String> {
        let out = self
            .dst
            .get_bucket_location()
            .bucket(bucket)
            .expected_bucket_owner(&self.spec.destination.account)
            .send()
            .await;
        match out {
            Ok(o) => Some(match o.location_constraint().map(|c| c.as_str()) {
                None | Some("") => "us-east-1".to_string(),
                Some("EU") => "eu-west-1".to_string(),
                Some(r) => r.to_string(),
            }),
            Err(e) => {
                tracing::warn!(bucket, error = %describe(&e), "cannot read the report bucket's region; using the destination region");
                None
            }
        }
    }

    /// Aborts the incomplete multipart uploads under the destination prefix that `job`'s
    /// workers initiated (see [`initiated_by_job`]); uploads of anyone else are left alone.
    /// Returns how many were aborted. Needs `s3:ListBucketMultipartUploads` and
    /// `s3:AbortMultipartUpload` on the destination.
    pub async fn sweep_uploads(&self, job: &str) -> Result<u64, CopyError> {
        let dst = &self.spec.destination;
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        let mut aborted = 0;
        loop {
            self.throttle(Kind::Read).await;
            let page = self
                .dst
                .list_multipart_uploads()
                .bucket(&dst.bucket)
                .expected_bucket_owner(&dst.account)
                .prefix(&dst.prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| s3_err("ListMultipartUploads", &dst.bucket, e))?;
            for u in page.uploads() {
                let ours = u
                    .initiator()
                    .and_then(|i| i.id())
                    .is_some_and(|id| initiated_by_job(id, job));
                if let (true, Some(key), Some(id)) = (ours, u.key(), u.upload_id()) {
                    self.throttle(Kind::Write).await;
                    abort_upload(&self.dst, &dst.bucket, key, &dst.account, id).await;
                    aborted += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(aborted);
            }
        }
    }

    /// Writes a chunk's failures as JSON lines to the job's report location.
    pub async fn write_report(
        &self,
        job: &str,
        run: &str,
        chunk: &str,
        failures: &[ObjectFailure],
    ) -> Result<(), CopyError> {
        let Some(uri) = &self.spec.copy.report_uri else {
            return Ok(());
        };
        let Ok((bucket, prefix)) = crate::model::validate::parse_s3_uri(uri) else {
            return Ok(());
        };
        let mut body = String::new();
        for f in failures {
            let line = serde_json::json!({ "job": job, "run": run, "key": f.key, "code": f.code, "reason": f.reason });
            body.push_str(&line.to_string());
            body.push('\n');
        }
        let key = format!("{prefix}{job}/{run}/{}.jsonl", chunk.replace('#', "-"));
        self.report
            .put_object()
            .bucket(bucket)
            .key(key)
            .expected_bucket_owner(&self.spec.destination.account)
            .content_type("application/x-ndjson")
            .body(body.into_bytes().into())
            .send()
            .await
            .map_err(|e| s3_err("PutObject", bucket, e))?;
        Ok(())
    }
}

/// An incomplete multipart upload of the destination, aborted unless completed: explicitly on
/// every error path, and from `Drop` when the copy's future is dropped half-way (its task
/// aborted, the worker shutting down), because parts are billed until the upload is aborted
/// (S3 User Guide, "Aborting a multipart upload"). A killed process leaves it behind; the
/// run's sweep ([`Copier::sweep_uploads`]) and the lifecycle rule of buckets ferry creates
/// remove those.
struct OpenUpload {
    client: Client,
    bucket: String,
    key: String,
    owner: String,
    id: String,
    open: bool,
}

impl OpenUpload {
    fn completed(mut self) {
        self.open = false;
    }

    async fn abort(mut self) {
        self.open = false;
        abort_upload(&self.client, &self.bucket, &self.key, &self.owner, &self.id).await;
    }
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, bucket, key, owner, id) = (
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.owner),
            std::mem::take(&mut self.id),
        );
        runtime.spawn(async move { abort_upload(&client, &bucket, &key, &owner, &id).await });
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, owner: &str, id: &str) {
    let abort = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .expected_bucket_owner(owner)
        .upload_id(id)
        .send()
        .await;
    match abort {
        Ok(_) => tracing::debug!(key, upload = id, "aborted multipart upload"),
        Err(e) if kind(&e) == ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(key, upload = id, error = %describe(&e), "could not abort multipart upload")
        }
    }
}

/// The role session name the worker's destination credentials use for `job` (IAM allows 64
/// characters of `[\w+=,.@-]`); multipart uploads it initiates name it in `Initiator.ID`.
pub fn session_name(job: &str, task: &str) -> String {
    format!("ferry-{job}-{task}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(*c))
        .take(64)
        .collect()
}

/// Whether an upload's `Initiator.ID` (for a role session: its ARN,
/// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`) names a session of `job`'s workers.
pub fn initiated_by_job(initiator: &str, job: &str) -> bool {
    let Some((_, session)) = initiator
        .split_once(":assumed-role/")
        .and_then(|(_, rest)| rest.split_once('/'))
    else {
        return false;
    };
    // `ferry-JOB-TASK`: task ids have no `-`, so job `a` never claims job `a-b`'s sessions.
    session
        .strip_prefix(&session_name(job, ""))
        .is_some_and(|task| !task.contains('-'))
}

/// What a multipart copy (or an ETag-recording copy) must set itself.
#[derive(Debug, Clone, Default)]
struct SourceHeaders {
    metadata: HashMap<String, String>,
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    tagging: Option<String>,
}

impl super::split::Keyspace for &Copier {
    type Error = CopyError;
    async fn first_after(&mut self, after: Option<&str>) -> Result<Option<String>, CopyError> {
        self.first_source_key(after).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_recognised_by_the_session_names_of_their_jobs_workers() {
        let arn = |session: &str| format!("arn:aws:sts::222222222222:assumed-role/dst/{session}");
        let cases = [
            (arn("ferry-a-s0a1"), "a", true),
            (arn("ferry-a-b-s0a1"), "a", false),
            (arn("ferry-a-b-s0a1"), "a-b", true),
            (arn("someone-else"), "a", false),
            (
                "arn:aws:iam::222222222222:user/ferry-a-s0a1".to_string(),
                "a",
                false,
            ),
            (
                "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a".into(),
                "a",
                false,
            ),
        ];
        for (initiator, job, want) in cases {
            assert_eq!(initiated_by_job(&initiator, job), want, "{initiator} {job}");
        }
        let long = "n".repeat(63);
        let session = session_name(&long, "s0a1");
        assert_eq!(session.len(), 64);
        assert!(initiated_by_job(&arn(&session), &long));
    }

    #[test]
    fn listed_keys_are_url_decoded_with_plus_as_space() {
        assert_eq!(decode_listed_key("a+b%2Bc%25%2F%C3%BC"), "a b+c%/ü");
    }

    #[test]
    fn copy_source_encodes_everything_but_slashes_and_unreserved() {
        assert_eq!(
            copy_source("b", "a b+c%/ü.txt"),
            "b/a%20b%2Bc%25/%C3%BC.txt"
        );
        assert_eq!(copy_source("b", "q?x#y"), "b/q%3Fx%23y");
    }
}
