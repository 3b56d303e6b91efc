//! Run items: the worker's partitions (listing work), chunks (copy work) with their leases, task
//! heartbeats and progress, and the first per-object failures. All under `pk = RUN#<job>#<run>`.
//!
//! Leases are a pair `owner`/`leaseExpiry` (epoch milliseconds) taken with a conditional update
//! that succeeds only if the item is free, expired or already ours; renewals and releases are
//! conditional on still being the owner, so a worker that lost its lease can never overwrite the
//! work of the one that took it over.
//!
//! # The claim index
//! A chunk not done carries `gsi2pk = OPEN#<job>#<run>#<shard>` (one of [`CLAIM_SHARDS`]) and
//! `gsi2sk = <ready>#<id>`, `ready` being the epoch millisecond from which it may be claimed: its
//! `notBefore` while pending, the expiry its lease was taken with while leased. A claimer reads a
//! few entries of one shard with `gsi2sk < now` (keys only, eventually consistent), then claims
//! one with a conditional write on the chunk item itself, which alone decides. Renewals move
//! only `leaseExpiry`, not the index key, so they cost one write unit; an index entry left behind
//! by a renewal costs one failed claim, which puts the entry right. Completion removes the entry.
//! Nothing scans the run to find work.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use super::{Store, StoreError, get_n, get_s, n, now_rfc3339, s};
use crate::keyrange::Range;
use crate::model::Progress;

type Item = HashMap<String, AttributeValue>;

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Shards of the claim index per run: claims spread over this many index partitions.
pub const CLAIM_SHARDS: u32 = 8;

/// The claim index partition of shard `shard` of a run.
pub fn claim_pk(job: &str, run: &str, shard: u32) -> String {
    format!("OPEN#{job}#{run}#{shard:02}")
}

/// The claim index sort key of a chunk claimable from `ready` (epoch ms).
fn ready_sk(ready: u64, id: &str) -> String {
    format!("{ready:013}#{id}")
}

/// The sort key of listing partition `index`.
pub fn partition_sk(index: u32) -> String {
    format!("PART#{index:04}")
}

/// Whether a sort key names a chunk (else a partition).
pub fn is_chunk(sk: &str) -> bool {
    sk.starts_with("CHUNK#")
}

/// The partition key of a run's items.
pub fn run_pk(job: &str, run: &str) -> String {
    format!("RUN#{job}#{run}")
}

/// The sort key of an object's failure record: `FAIL#` and 32 hex digits of a digest of the
/// object key, so that any S3 key (up to 1,024 bytes) fits DynamoDB's 1,024-byte sort key.
pub fn failure_sk(key: &str) -> String {
    format!("FAIL#{}", crate::digest::hex(&[key.as_bytes()], 32))
}

fn runs_gsi_pk(job: &str) -> String {
    format!("RUNS#{job}")
}

/// A run as the job's runs index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub run: String,
    /// When the operator created it (RFC 3339).
    pub created_at: String,
    /// Its items' DynamoDB TTL (Unix seconds), once its history has run out.
    pub expires_at: Option<u64>,
}

/// The TTL attribute of run items (the table's TimeToLiveSpecification).
pub const EXPIRES_AT: &str = "expiresAt";

/// A run's metadata: the spec it copies and the listing partitions.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMeta {
    pub generation: u64,
    /// The job document (JSON) at `generation`.
    pub document: String,
    /// Partition boundaries; `None` until the first worker has planned them.
    pub boundaries: Option<Vec<String>>,
}

/// State of a partition or chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkState {
    Pending,
    Leased,
    Done,
}

impl WorkState {
    fn parse(v: Option<&str>) -> WorkState {
        match v {
            Some("done") => WorkState::Done,
            Some("leased") => WorkState::Leased,
            _ => WorkState::Pending,
        }
    }
}

/// Outcome of asking for the run's planner lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Planning {
    /// The partitions are planned: these are their boundaries.
    Planned(Vec<String>),
    /// This task plans (the lease is its own).
    Mine,
    /// Another task is planning, with its lease until `until` (epoch ms).
    Held { until: u64 },
}

/// Outcome of trying to claim a partition.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Claimed(Partition),
    /// Another task holds a lease on it until `until` (epoch ms).
    Held {
        until: u64,
    },
    /// Completely listed.
    Done,
}

/// A listing partition as claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub index: u32,
    pub range: Range,
    /// Upper bound of the last chunk written (relative key); listing resumes after it.
    pub cursor: Option<String>,
    /// Sequence number of the next chunk.
    pub next_seq: u64,
    pub listed_objects: u64,
    pub listed_bytes: u64,
}

/// A chunk of copy work.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: String,
    pub range: Range,
    pub state: WorkState,
    pub owner: Option<String>,
    pub lease_expiry: u64,
    pub attempts: u64,
}

impl Chunk {
    fn from_item(item: &Item) -> Chunk {
        Chunk {
            id: opt_s(item, "sk").unwrap_or_default(),
            range: range_of(item),
            state: WorkState::parse(get_s(item, "state")),
            owner: opt_s(item, "owner"),
            lease_expiry: get_n(item, "leaseExpiry").unwrap_or(0),
            attempts: get_n(item, "attempts").unwrap_or(0),
        }
    }
}

/// Attributes read by queries over a run's items (what summaries need).
const SUMMARY_ATTRIBUTES: [(&str, &str); 19] = [
    ("#a0", "pk"),
    ("#a1", "sk"),
    ("#st", "state"),
    ("#a3", "owner"),
    ("#a4", "leaseExpiry"),
    ("#a5", "attempts"),
    ("#a6", "after"),
    ("#a7", "upto"),
    ("#a8", "listedObjects"),
    ("#a9", "listedBytes"),
    ("#a10", "copied"),
    ("#a11", "copiedBytes"),
    ("#a12", "skipped"),
    ("#a13", "skippedBytes"),
    ("#a14", "failed"),
    ("#a15", "deleted"),
    ("#a16", "heartbeat"),
    ("#a17", "credentialRefreshes"),
    ("#a18", "objects"),
];

/// A chunk a lister is about to write.
#[derive(Debug, Clone, Copy)]
pub struct NewChunk<'a> {
    pub range: &'a Range,
    pub objects: u64,
    pub bytes: u64,
    /// The partition's last chunk.
    pub last: bool,
    /// Lease the chunk to its lister at once.
    pub keep: bool,
}

/// Counters a chunk records when done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub skipped_bytes: u64,
    pub failed: u64,
    pub deleted: u64,
}

/// Overall state of a run, summed from its items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub partitions_total: Option<usize>,
    pub partitions_done: usize,
    pub chunks_total: usize,
    pub chunks_done: usize,
    /// Final counters: listing from partitions, the rest from done chunks.
    pub progress: Progress,
    /// Live tasks (heartbeat) and their counters since they started.
    pub tasks: Vec<TaskProgress>,
}

impl RunSummary {
    /// Every partition listed and every chunk copied.
    pub fn complete(&self) -> bool {
        self.partitions_total
            .is_some_and(|t| t == self.partitions_done)
            && self.chunks_done == self.chunks_total
    }

    /// Counts one of the run's items.
    fn add(&mut self, item: &Item) {
        let sk = get_s(item, "sk").unwrap_or_default();
        let done = get_s(item, "state") == Some("done");
        let num = |k: &str| get_n(item, k).unwrap_or(0);
        if sk.starts_with("PART#") {
            self.partitions_done += usize::from(done);
            self.progress.objects_listed += num("listedObjects");
            self.progress.bytes_listed += num("listedBytes");
        } else if sk.starts_with("CHUNK#") {
            self.chunks_total += 1;
            if done {
                self.chunks_done += 1;
                self.progress.objects_copied += num("copied");
                self.progress.bytes_copied += num("copiedBytes");
                self.progress.objects_skipped += num("skipped");
                self.progress.bytes_skipped += num("skippedBytes");
                self.progress.objects_failed += num("failed");
                self.progress.objects_deleted += num("deleted");
            }
        } else if let Some(task) = sk.strip_prefix("TASK#") {
            self.tasks.push(TaskProgress {
                task: task.to_string(),
                heartbeat_ms: num("heartbeat"),
                state: opt_s(item, "state").unwrap_or_default(),
                copied: num("copied"),
                copied_bytes: num("copiedBytes"),
                credential_refreshes: num("credentialRefreshes"),
            });
        }
    }
}

/// A run's items read a page at a time (a strongly consistent Query of `pk = RUN#…`, at most
/// 1 MB a page): what walks a whole run holds one page in memory, not the run. A run of 10⁷
/// objects has 10⁴ chunk items, and holding them all at once cost a worker 46 MiB.
struct RunPages<'a> {
    store: &'a Store,
    pk: String,
    prefix: &'a str,
    filter: Option<&'a str>,
    summary: bool,
    start: Option<Item>,
    done: bool,
}

impl<'a> RunPages<'a> {
    /// `filter` is a filter expression over `#st` (the item's state) and `:done`; `summary`
    /// reads only [`SUMMARY_ATTRIBUTES`].
    fn new(
        store: &'a Store,
        job: &str,
        run: &str,
        prefix: &'a str,
        filter: Option<&'a str>,
        summary: bool,
    ) -> RunPages<'a> {
        RunPages {
            store,
            pk: run_pk(job, run),
            prefix,
            filter,
            summary,
            start: None,
            done: false,
        }
    }

    /// The next page's items, or `None` after the last page.
    async fn next(&mut self) -> Result<Option<Vec<Item>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let mut req = self
            .store
            .client()
            .query()
            .table_name(self.store.table())
            .expression_attribute_values(":pk", s(&self.pk))
            .consistent_read(true)
            .set_exclusive_start_key(self.start.take());
        req = if self.prefix.is_empty() {
            req.key_condition_expression("pk = :pk")
        } else {
            req.key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":p", s(self.prefix))
        };
        if let Some(f) = self.filter {
            req = req
                .filter_expression(f)
                .expression_attribute_names("#st", "state")
                .expression_attribute_values(":done", s("done"));
        }
        if self.summary {
            let aliases: Vec<&str> = SUMMARY_ATTRIBUTES.iter().map(|(alias, _)| *alias).collect();
            req = req.projection_expression(aliases.join(", "));
            for (alias, name) in SUMMARY_ATTRIBUTES {
                req = req.expression_attribute_names(alias, name);
            }
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.store.aws_err("Query", e))?;
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => self.start = Some(k),
            _ => self.done = true,
        }
        Ok(Some(out.items.unwrap_or_default()))
    }
}

/// A worker task's heartbeat and live counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskProgress {
    pub task: String,
    pub heartbeat_ms: u64,
    pub state: String,
    pub copied: u64,
    pub copied_bytes: u64,
    pub credential_refreshes: u64,
}

fn opt_s(item: &Item, key: &str) -> Option<String> {
    get_s(item, key).map(str::to_string)
}

fn boundaries_of(item: &Item) -> Option<Vec<String>> {
    item.get("boundaries")
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
}

fn range_of(item: &Item) -> Range {
    Range {
        after: opt_s(item, "after"),
        upto: opt_s(item, "upto"),
    }
}

impl Store {
    /// Reads a run's metadata.
    pub async fn get_run(&self, job: &str, run: &str) -> Result<Option<RunMeta>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(run_pk(job, run)))
            .key("sk", s("META"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.aws_err("GetItem", e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let key = run_pk(job, run);
        Ok(Some(RunMeta {
            generation: get_n(item, "generation")
                .ok_or_else(|| self.malformed(&key, "run without generation"))?,
            document: opt_s(item, "document")
                .ok_or_else(|| self.malformed(&key, "run without document"))?,
            boundaries: boundaries_of(item),
        }))
    }

    /// Creates a run's metadata if it does not exist; returns what is stored either way.
    pub async fn ensure_run(
        &self,
        job: &str,
        run: &str,
        generation: u64,
        document: &str,
    ) -> Result<RunMeta, StoreError> {
        let put = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(run_pk(job, run)))
            .item("sk", s("META"))
            .item("job", s(job))
            .item("run", s(run))
            // Indexed so the finalizer can find every run of a job.
            .item("gsi1pk", s(runs_gsi_pk(job)))
            .item("gsi1sk", s(run))
            .item("generation", n(generation))
            .item("document", s(document))
            .item("createdAt", s(now_rfc3339()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => {}
            Err(e) if super::condition_failed(&e) => {}
            Err(e) => return Err(self.aws_err("PutItem", e)),
        }
        self.get_run(job, run)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("run {job}/{run}"),
            })
    }

    /// An update of a run's META item.
    fn meta_update(&self, job: &str, run: &str) -> UpdateItemFluentBuilder {
        self.client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(run_pk(job, run)))
            .key("sk", s("META"))
    }

    /// Takes the run's planner lease unless the partitions are planned already: one task
    /// probes the source while the others wait for its plan instead of walking the bucket too.
    /// A planner that dies loses the lease when it expires, and the next task plans.
    pub async fn claim_planner(
        &self,
        job: &str,
        run: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Planning, StoreError> {
        let now = now_ms();
        let res = self
            .meta_update(job, run)
            .update_expression("SET planner = :me, plannerExpiry = :e")
            .condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(boundaries) \
                 AND (attribute_not_exists(planner) OR plannerExpiry < :now OR planner = :me)",
            )
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":e", n(now + lease_ms))
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(Planning::Mine),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    let Some(item) = c.item() else {
                        return Err(StoreError::NotFound {
                            what: format!("run {job}/{run}"),
                        });
                    };
                    Ok(match boundaries_of(item) {
                        Some(b) => Planning::Planned(b),
                        None => Planning::Held {
                            until: get_n(item, "plannerExpiry").unwrap_or(0),
                        },
                    })
                }
                _ => Err(self.aws_err("UpdateItem", e)),
            },
        }
    }

    /// Records the partition boundaries once: the first writer wins, later ones get its plan.
    pub async fn set_boundaries(
        &self,
        job: &str,
        run: &str,
        boundaries: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let list = AttributeValue::L(boundaries.iter().map(|b| s(b.as_str())).collect());
        let res = self
            .meta_update(job, run)
            .update_expression("SET boundaries = :b")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(boundaries)")
            .expression_attribute_values(":b", list)
            .send()
            .await;
        match res {
            Ok(_) => Ok(boundaries.to_vec()),
            Err(e) if super::condition_failed(&e) => self
                .get_run(job, run)
                .await?
                .and_then(|m| m.boundaries)
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("run {job}/{run}"),
                }),
            Err(e) => Err(self.aws_err("UpdateItem", e)),
        }
    }

    /// Claims listing partition `index` (creating its item on first claim) if it is not done and
    /// free, expired or ours. `None` if someone else holds it or it is done.
    pub async fn claim_partition(
        &self,
        job: &str,
        run: &str,
        index: u32,
        range: &Range,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Claim, StoreError> {
        let now = now_ms();
        // The range is fixed when the item is created: `after`/`upto` are only written if absent.
        let mut update = "SET #o = :o, leaseExpiry = :e, #st = :leased, nextSeq = if_not_exists(nextSeq, :zero), \
                          listedObjects = if_not_exists(listedObjects, :zero), \
                          listedBytes = if_not_exists(listedBytes, :zero)"
            .to_string();
        if range.after.is_some() {
            update.push_str(", #after = if_not_exists(#after, :after)");
        }
        if range.upto.is_some() {
            update.push_str(", upto = if_not_exists(upto, :upto)");
        }
        let mut req = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(run_pk(job, run)))
            .key("sk", s(partition_sk(index)))
            .update_expression(update)
            .condition_expression(
                "attribute_not_exists(pk) OR (#st <> :done AND (leaseExpiry < :now OR #o = :o))",
            )
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":e", n(now + lease_ms))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":leased", s("leased"))
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":zero", n(0))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            );
        if let Some(a) = &range.after {
            req = req
                .expression_attribute_names("#after", "after")
                .expression_attribute_values(":after", s(a.as_str()));
        }
        if let Some(u) = &range.upto {
            req = req.expression_attribute_values(":upto", s(u.as_str()));
        }
        match req.send().await {
            Ok(out) => {
                let item = out.attributes().cloned().unwrap_or_default();
                Ok(Claim::Claimed(Partition {
                    index,
                    range: range_of(&item),
                    cursor: opt_s(&item, "cursor"),
                    next_seq: get_n(&item, "nextSeq").unwrap_or(0),
                    listed_objects: get_n(&item, "listedObjects").unwrap_or(0),
                    listed_bytes: get_n(&item, "listedBytes").unwrap_or(0),
                }))
            }
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c)) => {
                    let done = c.item().and_then(|i| get_s(i, "state")) == Some("done");
                    let until = c.item().and_then(|i| get_n(i, "leaseExpiry")).unwrap_or(0);
                    Ok(if done { Claim::Done } else { Claim::Held { until } })
                }
                _ => Err(self.aws_err("UpdateItem", e)),
            },
        }
    }

    /// Writes the next chunk of a partition and advances its cursor, as long as `owner` still
    /// holds the partition. A chunk already written by an earlier holder is kept; the returned
    /// partition then continues after that chunk. The new chunk is pending, or — with `keep` —
    /// already leased to `owner`, who saves a claim by copying it next; it is returned then.
    pub async fn add_chunk(
        &self,
        job: &str,
        run: &str,
        part: &Partition,
        new: NewChunk<'_>,
        owner: &str,
        lease_ms: u64,
    ) -> Result<(Partition, Option<Chunk>), StoreError> {
        let NewChunk {
            range,
            objects,
            bytes,
            last,
            keep,
        } = new;
        let pk = run_pk(job, run);
        let id = format!("CHUNK#{:04}#{:08}", part.index, part.next_seq);
        let lease_expiry = now_ms() + lease_ms;
        let shard = (part.index + part.next_seq as u32) % CLAIM_SHARDS;
        let ready = if keep { lease_expiry } else { 0 };
        let mut put = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(pk.as_str()))
            .item("sk", s(id.as_str()))
            .item("objects", n(objects))
            .item("gsi2pk", s(claim_pk(job, run, shard)))
            .item("gsi2sk", s(ready_sk(ready, &id)))
            .condition_expression("attribute_not_exists(pk)");
        put = if keep {
            put.item("state", s("leased"))
                .item("owner", s(owner))
                .item("leaseExpiry", n(lease_expiry))
                .item("attempts", n(1))
        } else {
            put.item("state", s("pending")).item("attempts", n(0))
        };
        if let Some(a) = &range.after {
            put = put.item("after", s(a.as_str()));
        }
        if let Some(u) = &range.upto {
            put = put.item("upto", s(u.as_str()));
        }
        let (range, objects, bytes, kept) = match put.send().await {
            Ok(_) => {
                let kept = keep.then(|| Chunk {
                    id: id.clone(),
                    range: range.clone(),
                    state: WorkState::Leased,
                    owner: Some(owner.to_string()),
                    lease_expiry,
                    attempts: 1,
                });
                (range.clone(), objects, bytes, kept)
            }
            Err(e) if super::condition_failed(&e) => {
                let existing = self.get_item(&pk, &id).await?.unwrap_or_default();
                (
                    range_of(&existing),
                    get_n(&existing, "objects").unwrap_or(0),
                    0,
                    None,
                )
            }
            Err(e) => return Err(self.aws_err("PutItem", e)),
        };
        let mut update =
            "SET nextSeq = :seq, leaseExpiry = :e ADD listedObjects :o, listedBytes :b".to_string();
        let mut req = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(pk.as_str()))
            .key("sk", s(partition_sk(part.index)))
            .condition_expression("#o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":seq", n(part.next_seq + 1))
            .expression_attribute_values(":e", n(now_ms() + lease_ms))
            .expression_attribute_values(":o", n(objects))
            .expression_attribute_values(":b", n(bytes));
        if let Some(u) = &range.upto {
            update = update.replacen("SET ", "SET #cursor = :c, ", 1);
            req = req
                .expression_attribute_names("#cursor", "cursor")
                .expression_attribute_values(":c", s(u.as_str()));
        }
        if last || range.upto.is_none() {
            update = update.replacen("SET ", "SET #st = :done, ", 1);
            req = req
                .expression_attribute_names("#st", "state")
                .expression_attribute_values(":done", s("done"));
        }
        req.update_expression(update).send().await.map_err(|e| {
            self.write_err(
                "UpdateItem",
                &format!("partition {} of run {run}", part.index),
                e,
            )
        })?;
        let next = Partition {
            index: part.index,
            range: part.range.clone(),
            cursor: range.upto.clone(),
            next_seq: part.next_seq + 1,
            listed_objects: part.listed_objects + objects,
            listed_bytes: part.listed_bytes + bytes,
        };
        Ok((next, kept))
    }

    async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.aws_err("GetItem", e))?;
        Ok(out.item().cloned())
    }

    /// Up to `limit` chunk ids of claim shard `shard` that are claimable now by the index
    /// (keys only, eventually consistent: the claim's condition decides).
    pub async fn claimable(
        &self,
        job: &str,
        run: &str,
        shard: u32,
        limit: i32,
    ) -> Result<Vec<String>, StoreError> {
        self.index_entries(job, run, shard, Some(now_ms()), limit)
            .await
    }

    /// Up to `limit` chunk ids of claim shard `shard`, those ready before `ready_before` (epoch
    /// ms) when given, else any. Keys only and eventually consistent: a GSI serves no strongly
    /// consistent read.
    async fn index_entries(
        &self,
        job: &str,
        run: &str,
        shard: u32,
        ready_before: Option<u64>,
        limit: i32,
    ) -> Result<Vec<String>, StoreError> {
        let mut req = self
            .client()
            .query()
            .table_name(self.table())
            .index_name(super::CLAIM_INDEX)
            .expression_attribute_values(":p", s(claim_pk(job, run, shard)))
            .limit(limit);
        req = match ready_before {
            Some(t) => req
                .key_condition_expression("gsi2pk = :p AND gsi2sk < :now")
                .expression_attribute_values(":now", s(ready_sk(t, ""))),
            None => req.key_condition_expression("gsi2pk = :p"),
        };
        let out = req.send().await.map_err(|e| self.aws_err("Query", e))?;
        Ok(out.items().iter().filter_map(|i| opt_s(i, "sk")).collect())
    }

    /// Every chunk of a run that is not done: a read of the whole run, for people and tests
    /// (`ferry describe`, assertions). Workers find work through the claim index instead.
    pub async fn open_chunks(&self, job: &str, run: &str) -> Result<Vec<Chunk>, StoreError> {
        let items = self
            .query_prefix(job, run, "CHUNK#", Some("#st <> :done"), true)
            .await?;
        Ok(items.iter().map(Chunk::from_item).collect())
    }

    /// Every item of a run under `prefix` (optionally filtered), collected: for reads that are
    /// bounded (failures) or made for people (`open_chunks`). Reads of a whole run that the
    /// operator or the workers repeat go through [`RunPages`] a page at a time.
    async fn query_prefix(
        &self,
        job: &str,
        run: &str,
        prefix: &str,
        filter: Option<&str>,
        summary: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut pages = RunPages::new(self, job, run, prefix, filter, summary);
        let mut items = Vec::new();
        while let Some(page) = pages.next().await? {
            items.extend(page);
        }
        Ok(items)
    }

    /// Takes a chunk's lease if it is pending (and past its `notBefore`) or its lease expired,
    /// and returns the chunk as claimed. `None`: someone else has it, or it is done. A claim that
    /// fails on a live lease puts the chunk's stale index entry right (see the module docs).
    pub async fn claim_chunk(
        &self,
        job: &str,
        run: &str,
        id: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Option<Chunk>, StoreError> {
        let now = now_ms();
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(run_pk(job, run)))
            .key("sk", s(id))
            .update_expression(
                "SET #o = :me, leaseExpiry = :e, #st = :leased, gsi2sk = :ready ADD attempts :one",
            )
            .condition_expression(
                "attribute_exists(gsi2pk) AND ((#st = :pending AND (attribute_not_exists(notBefore) OR notBefore < :now)) \
                 OR (#st = :leased AND leaseExpiry < :now))",
            )
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":e", n(now + lease_ms))
            .expression_attribute_values(":ready", s(ready_sk(now + lease_ms, id)))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":leased", s("leased"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(Chunk::from_item(
                out.attributes().unwrap_or(&HashMap::new()),
            ))),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    if let Some(item) = c.item() {
                        self.reindex(job, run, id, item).await?;
                    }
                    Ok(None)
                }
                _ => Err(self.aws_err("UpdateItem", e)),
            },
        }
    }

    /// Moves a chunk's claim index entry to when it can really be claimed, after a claim found
    /// it early: a renewed lease, or a `notBefore` ahead. Best effort: a lost race is harmless.
    async fn reindex(&self, job: &str, run: &str, id: &str, item: &Item) -> Result<(), StoreError> {
        let ready = match get_s(item, "state") {
            Some("leased") => get_n(item, "leaseExpiry").unwrap_or(0),
            Some("pending") => get_n(item, "notBefore").unwrap_or(0),
            _ => return Ok(()),
        };
        let want = ready_sk(ready, id);
        if get_s(item, "gsi2pk").is_none() || get_s(item, "gsi2sk") == Some(want.as_str()) {
            return Ok(());
        }
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(run_pk(job, run)))
            .key("sk", s(id))
            .update_expression("SET gsi2sk = :want")
            .condition_expression("attribute_exists(gsi2pk) AND gsi2sk = :seen")
            .expression_attribute_values(":want", s(want))
            .expression_attribute_values(":seen", s(get_s(item, "gsi2sk").unwrap_or_default()))
            .send()
            .await;
        self.applied(res).map(|_| ())
    }

    /// An update of `sk` conditional on `owner` holding its lease.
    fn held_by(&self, job: &str, run: &str, sk: &str, owner: &str) -> UpdateItemFluentBuilder {
        self.client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(run_pk(job, run)))
            .key("sk", s(sk))
            .condition_expression("#o = :me AND #st = :leased")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":leased", s("leased"))
    }

    /// `true` if a conditional update was applied, `false` if its condition failed.
    fn applied(
        &self,
        res: Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>>,
    ) -> Result<bool, StoreError> {
        Ok(self.updated(res)?.is_some())
    }

    /// The output of a conditional update, `None` if its condition failed.
    fn updated(
        &self,
        res: Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>>,
    ) -> Result<Option<UpdateItemOutput>, StoreError> {
        match res {
            Ok(out) => Ok(Some(out)),
            Err(e) if super::condition_failed(&e) => Ok(None),
            Err(e) => Err(self.aws_err("UpdateItem", e)),
        }
    }

    /// Extends a lease (`sk` is a chunk or partition) while `owner` holds it. `false`: lost.
    pub async fn renew_lease(
        &self,
        job: &str,
        run: &str,
        sk: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let res = self
            .held_by(job, run, sk, owner)
            .update_expression("SET leaseExpiry = :e")
            .expression_attribute_values(":e", n(now_ms() + lease_ms))
            .send()
            .await;
        self.applied(res)
    }

    /// Gives a chunk back, claimable again from `not_before` (epoch ms; now on shutdown, later
    /// after a failure so that a failing chunk does not spin). `false`: it was not ours.
    pub async fn release_chunk(
        &self,
        job: &str,
        run: &str,
        id: &str,
        owner: &str,
        not_before: u64,
    ) -> Result<bool, StoreError> {
        let res = self
            .held_by(job, run, id, owner)
            .update_expression(
                "SET leaseExpiry = :zero, #st = :pending, notBefore = :nb, gsi2sk = :ready REMOVE #o",
            )
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":nb", n(not_before))
            .expression_attribute_values(":ready", s(ready_sk(not_before, id)))
            .send()
            .await;
        self.applied(res)
    }

    /// Gives a partition's lease back (on shutdown) so another task can take the work at once.
    pub async fn release_lease(
        &self,
        job: &str,
        run: &str,
        sk: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .held_by(job, run, sk, owner)
            .update_expression("SET leaseExpiry = :zero, #st = :pending REMOVE #o")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        self.applied(res)
    }

    /// Marks a chunk done with its counters, if `owner` still holds it. `false`: the lease was
    /// lost and another task owns (or finished) the chunk; its counters win.
    pub async fn complete_chunk(
        &self,
        job: &str,
        run: &str,
        id: &str,
        owner: &str,
        c: &ChunkCounts,
    ) -> Result<bool, StoreError> {
        let res = self
            .held_by(job, run, id, owner)
            .update_expression(
                "SET #st = :done, copied = :c, copiedBytes = :cb, skipped = :s, skippedBytes = :sb, \
                 failed = :f, deleted = :d, doneAt = :t REMOVE gsi2pk, gsi2sk, notBefore",
            )
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":c", n(c.copied))
            .expression_attribute_values(":cb", n(c.copied_bytes))
            .expression_attribute_values(":s", n(c.skipped))
            .expression_attribute_values(":sb", n(c.skipped_bytes))
            .expression_attribute_values(":f", n(c.failed))
            .expression_attribute_values(":d", n(c.deleted))
            .expression_attribute_values(":t", s(now_rfc3339()))
            .send()
            .await;
        self.applied(res)
    }

    /// Writes a task's heartbeat and live counters (unconditional: only that task writes it).
    pub async fn put_task(&self, job: &str, run: &str, t: &TaskProgress) -> Result<(), StoreError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(run_pk(job, run)))
            .item("sk", s(format!("TASK#{}", t.task)))
            .item("heartbeat", n(t.heartbeat_ms))
            .item("state", s(t.state.as_str()))
            .item("copied", n(t.copied))
            .item("copiedBytes", n(t.copied_bytes))
            .item("credentialRefreshes", n(t.credential_refreshes))
            .send()
            .await
            .map_err(|e| self.aws_err("PutItem", e))?;
        Ok(())
    }

    /// Records one of the first per-object failures of a run (idempotent per key). The sort key
    /// is a digest of the object key: an S3 key may have 1,024 bytes, a DynamoDB sort key no
    /// more than 1,024 in all (DynamoDB "Service, account, and table quotas"); the key itself
    /// is kept as an attribute.
    pub async fn put_failure(
        &self,
        job: &str,
        run: &str,
        key: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(run_pk(job, run)))
            .item("sk", s(failure_sk(key)))
            .item("key", s(key))
            .item("reason", s(reason))
            .item("at", s(now_rfc3339()))
            .send()
            .await
            .map_err(|e| self.aws_err("PutItem", e))?;
        Ok(())
    }

    /// The failures recorded for a run: (key, reason), in the order of their digests.
    pub async fn failures(
        &self,
        job: &str,
        run: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let items = self.query_prefix(job, run, "FAIL#", None, false).await?;
        Ok(items
            .iter()
            .map(|i| {
                (
                    opt_s(i, "key").unwrap_or_default(),
                    opt_s(i, "reason").unwrap_or_default(),
                )
            })
            .collect())
    }

    /// The ids of every run of a job.
    pub async fn list_runs(&self, job: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .run_records(job)
            .await?
            .into_iter()
            .map(|r| r.run)
            .collect())
    }

    /// Every run of a job, with its creation time and TTL.
    pub async fn run_records(&self, job: &str) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client()
                .query()
                .table_name(self.table())
                .index_name(super::GSI)
                .key_condition_expression("gsi1pk = :p")
                .expression_attribute_values(":p", s(runs_gsi_pk(job)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.aws_err("Query", e))?;
            runs.extend(out.items().iter().filter_map(|i| {
                Some(RunRecord {
                    run: opt_s(i, "run")?,
                    created_at: opt_s(i, "createdAt").unwrap_or_default(),
                    expires_at: super::get_n(i, EXPIRES_AT),
                })
            }));
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(runs),
            }
        }
    }

    /// Gives every item of a run the TTL `at` (Unix seconds), 16 items at a time (DynamoDB has
    /// no batched UpdateItem; each stamp costs what deleting the item would, while the deletion
    /// TTL then does is free), its META item last (so a stamping cut short is taken up again:
    /// the run is listed as not expiring until META has it). Returns how many items were
    /// stamped. An item gone meanwhile is skipped.
    pub async fn expire_run(&self, job: &str, run: &str, at: u64) -> Result<usize, StoreError> {
        const IN_FLIGHT: usize = 16;
        let (meta, rest) = self.run_sort_keys(job, run).await?;
        let mut stamped = 0;
        for batch in rest.chunks(IN_FLIGHT).chain(meta.chunks(IN_FLIGHT)) {
            let mut set = tokio::task::JoinSet::new();
            for sk in batch {
                let (store, pk, sk) = (self.clone(), run_pk(job, run), sk.clone());
                set.spawn(async move { store.stamp_expiry(pk, sk, at).await });
            }
            while let Some(done) = set.join_next().await {
                match done {
                    Ok(result) => stamped += usize::from(result?),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => {}
                }
            }
        }
        Ok(stamped)
    }

    /// Sets one run item's TTL; `false` if the item is gone.
    async fn stamp_expiry(&self, pk: String, sk: String, at: u64) -> Result<bool, StoreError> {
        let res = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression("SET #e = :e")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_values(":e", n(at))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if super::condition_failed(&e) => Ok(false),
            Err(e) => Err(self.aws_err("UpdateItem", e)),
        }
    }

    /// Removes every record of a job: its runs' items, its status and, last, its spec (only if
    /// deletion was requested). Safe to repeat after an interruption.
    pub async fn delete_job_records(&self, job: &str) -> Result<(), StoreError> {
        for run in self.list_runs(job).await? {
            // META last, so an interrupted delete can still find the run.
            let (meta, rest) = self.run_sort_keys(job, &run).await?;
            let pk = run_pk(job, &run);
            self.delete_items(&pk, &rest).await?;
            self.delete_items(&pk, &meta).await?;
        }
        self.delete_items(&super::job_pk(job), &["STATUS".to_string()])
            .await?;
        let res = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(super::job_pk(job)))
            .key("sk", s("SPEC"))
            .condition_expression(
                "attribute_not_exists(pk) OR attribute_exists(deletionRequestedAt)",
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if super::condition_failed(&e) => Err(StoreError::Conflict {
                what: format!("copyjob/{job} (deletion was withdrawn)"),
            }),
            Err(e) => Err(self.aws_err("DeleteItem", e)),
        }
    }

    /// The sort keys of a run's items, read a page at a time: (its META item, the rest).
    async fn run_sort_keys(
        &self,
        job: &str,
        run: &str,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let (mut meta, mut rest) = (Vec::new(), Vec::new());
        let mut pages = RunPages::new(self, job, run, "", None, true);
        while let Some(page) = pages.next().await? {
            for sk in page.iter().filter_map(|i| opt_s(i, "sk")) {
                if sk == "META" {
                    meta.push(sk)
                } else {
                    rest.push(sk)
                }
            }
        }
        Ok((meta, rest))
    }

    /// Deletes the items `pk`/`sks` in batches of 25, resending what DynamoDB left unprocessed.
    async fn delete_items(&self, pk: &str, sks: &[String]) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
        for batch in sks.chunks(25) {
            let mut requests: Vec<WriteRequest> = Vec::new();
            for sk in batch {
                let key: Item = [("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))].into();
                let del = DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map_err(|e| self.malformed("batch", e.to_string()))?;
                requests.push(WriteRequest::builder().delete_request(del).build());
            }
            // Unprocessed items are a partial success, not an error: send them again, a
            // bounded number of times.
            for round in 0..8u32 {
                if requests.is_empty() {
                    break;
                }
                let out = self
                    .client()
                    .batch_write_item()
                    .request_items(self.table(), requests.clone())
                    .send()
                    .await
                    .map_err(|e| self.aws_err("BatchWriteItem", e))?;
                requests = out
                    .unprocessed_items()
                    .and_then(|m| m.get(self.table()))
                    .cloned()
                    .unwrap_or_default();
                if !requests.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
                }
            }
            if !requests.is_empty() {
                return Err(StoreError::NotReady {
                    table: self.table().to_string(),
                    seconds: 0,
                });
            }
        }
        Ok(())
    }

    /// Whether a read that costs O(shards + partitions), not O(run), shows the run has work
    /// left: a chunk in the claim index (pending or leased: done chunks leave it), or a
    /// listing partition not listed to its end. The index is eventually consistent, so `true`
    /// may be stale by a moment and `false` proves nothing: only [`Store::run_complete`] (a
    /// read of the whole run) says a run is complete. An idle worker asks this first, and the
    /// whole run is read once, at its end, instead of every few seconds while others copy
    /// the last chunks.
    pub async fn run_has_open_work(&self, job: &str, run: &str) -> Result<bool, StoreError> {
        for shard in 0..CLAIM_SHARDS {
            if !self
                .index_entries(job, run, shard, None, 1)
                .await?
                .is_empty()
            {
                return Ok(true);
            }
        }
        let mut sum = RunSummary::default();
        match self.get_run(job, run).await?.and_then(|m| m.boundaries) {
            Some(b) => sum.partitions_total = Some(b.len() + 1),
            None => return Ok(true),
        }
        let mut pages = RunPages::new(self, job, run, "PART#", None, true);
        while let Some(page) = pages.next().await? {
            for item in &page {
                sum.add(item);
            }
        }
        Ok(sum.partitions_total != Some(sum.partitions_done))
    }

    /// Whether every partition of the run is listed and every chunk done, read strongly
    /// consistent: [`Store::run_has_open_work`] first, then the run's chunks filtered to those
    /// not done, so the pages that come back hold only those (the read costs the whole run's
    /// units, but a worker holds no more than a page of keys). A run whose partitions are all
    /// listed has all its chunks written, so none can appear after this read.
    pub async fn run_complete(&self, job: &str, run: &str) -> Result<bool, StoreError> {
        if self.run_has_open_work(job, run).await? {
            return Ok(false);
        }
        let mut pages = RunPages::new(self, job, run, "CHUNK#", Some("#st <> :done"), false);
        while let Some(page) = pages.next().await? {
            if !page.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sums a run's items into its progress and completion state.
    pub async fn run_summary(&self, job: &str, run: &str) -> Result<RunSummary, StoreError> {
        let mut sum = RunSummary::default();
        if let Some(meta) = self.get_run(job, run).await? {
            sum.partitions_total = meta.boundaries.map(|b| b.len() + 1);
        }
        let mut pages = RunPages::new(self, job, run, "", None, true);
        while let Some(page) = pages.next().await? {
            for item in &page {
                sum.add(item);
            }
        }
        Ok(sum)
    }
}
