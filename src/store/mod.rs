//! The job store: the only module that speaks DynamoDB. One table holds the job specs, their
//! statuses, the worker's run items (chunks, leases, progress) and the operator's lease.
//!
//! Keys (single-table design; `pk`/`sk` strings, sparse GSI `gsi1` on `gsi1pk`/`gsi1sk`
//! projecting every attribute, and sparse GSI `gsi2` on `gsi2pk`/`gsi2sk` projecting keys only,
//! the claim index of chunks; see [`runs`]):
//!
//! | item              | pk                  | sk              | gsi1pk / gsi1sk   | written by |
//! |-------------------|---------------------|-----------------|-------------------|------------|
//! | job spec          | `JOB#<name>`        | `SPEC`          | `JOB` / `<name>`  | CLI        |
//! | job status        | `JOB#<name>`        | `STATUS`        | `JOB` / `<name>`  | operator   |
//! | run metadata      | `RUN#<job>#<run>`   | `META`          | `RUNS#<job>` / run| worker     |
//! | chunk + lease     | `RUN#<job>#<run>`   | `CHUNK#<n>`     | (gsi2: `OPEN#…`)  | worker     |
//! | task progress     | `RUN#<job>#<run>`   | `TASK#<task>`   |                   | worker     |
//! | first failures    | `RUN#<job>#<run>`   | `FAIL#<key>`    |                   | worker     |
//! | operator lease    | `LEASE#operator`    | `LEASE`         |                   | operator   |
//!
//! Spec and status are separate items with separate version counters, so the CLI and the
//! operator never overwrite each other. Every write to a shared item is conditional on the
//! version it read, the item's absence or the lease owner; a failed condition is reported as
//! [`StoreError::Conflict`] (or `false` for lease operations), never swallowed. A worker task's
//! own heartbeat item and the idempotent failure records are plain puts.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TableStatus,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

pub mod lease;
pub mod meter;
pub mod runs;

use crate::aws::{ErrorKind, describe, kind};
use crate::model::{CopyJob, CopyJobStatus};

/// Default table name.
pub const DEFAULT_TABLE: &str = "ferry";
const GSI: &str = "gsi1";
/// The claim index (keys only): chunks not done, by the time they become claimable.
const CLAIM_INDEX: &str = "gsi2";
const JOBS_PARTITION: &str = "JOB";

type Item = HashMap<String, AttributeValue>;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost a race: someone changed the item after we read it.
    #[error("{what} was changed concurrently (conditional write failed); read it again and retry")]
    Conflict { what: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("DynamoDB {op} on table `{table}` failed: {message}")]
    Aws {
        op: &'static str,
        table: String,
        message: String,
        kind: ErrorKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("item {key} in table `{table}` is malformed: {why}")]
    Malformed {
        table: String,
        key: String,
        why: String,
    },
    #[error("table `{table}` did not become ACTIVE within {seconds} s")]
    NotReady { table: String, seconds: u64 },
}

impl StoreError {
    /// The error's kind, for retry decisions and metrics.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Conflict { .. } => ErrorKind::Conflict,
            StoreError::Aws { kind, .. } => *kind,
            StoreError::NotReady { .. } => ErrorKind::Retryable,
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Malformed { .. } => ErrorKind::Invalid,
        }
    }
}

/// Jobs page by page (see [`Store::job_pages`]). A job's spec and status items share their
/// index sort key (the name), so they are adjacent in the index, but a page may end between
/// them: the items of a page's last name wait for the next page.
pub struct JobPages<'a> {
    store: &'a Store,
    limit: Option<i32>,
    start: Option<Item>,
    carry: Vec<Item>,
    done: bool,
}

impl JobPages<'_> {
    /// The next page's jobs; `None` when every job was returned.
    pub async fn next(&mut self) -> Result<Option<Vec<StoredJob>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let store = self.store;
        let mut out = store
            .client
            .query()
            .table_name(&store.table)
            .index_name(GSI)
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(":p", s(JOBS_PARTITION))
            .set_exclusive_start_key(self.start.take())
            .set_limit(self.limit)
            .send()
            .await
            .map_err(|e| store.aws_err("Query", e))?;
        let mut items = std::mem::take(&mut self.carry);
        items.extend(out.items.take().unwrap_or_default());
        match out.last_evaluated_key.take() {
            Some(k) if !k.is_empty() => {
                self.start = Some(k);
                let last = items
                    .last()
                    .and_then(|i| get_s(i, "gsi1sk"))
                    .map(str::to_string);
                let split = items
                    .iter()
                    .rposition(|i| get_s(i, "gsi1sk").map(str::to_string) != last)
                    .map_or(0, |p| p + 1);
                self.carry = items.split_off(split);
            }
            _ => self.done = true,
        }
        store.assemble(items, false).map(Some)
    }
}

/// A job as stored: the spec item and, if the operator wrote one, the status item.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    /// The document as applied, with `status` filled from the status item.
    pub job: CopyJob,
    /// Increments on every spec change (not on label-only or deletion changes).
    pub generation: u64,
    /// Optimistic-lock version of the spec item.
    pub version: u64,
    /// The apply set that created or last applied this job (`ferry apply --applyset`).
    pub applyset: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Set by `ferry delete` or `apply --prune`; the operator finalizes and removes the job.
    pub deletion_requested_at: Option<String>,
    /// Optimistic-lock version of the status item (0: none yet).
    pub status_version: u64,
    /// This incarnation of the job (random, set when the spec item is created; empty for items
    /// written before uids existed).
    pub uid: String,
    /// How many times `ferry rerun` asked for a new run (not part of the spec: no generation).
    pub rerun: u64,
}

impl StoredJob {
    /// A job as it is stored when first created: generation 1, version 1, no status.
    pub fn new(job: CopyJob) -> StoredJob {
        StoredJob {
            job,
            generation: 1,
            version: 1,
            applyset: None,
            created_at: String::new(),
            updated_at: String::new(),
            deletion_requested_at: None,
            status_version: 0,
            uid: String::new(),
            rerun: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.job.metadata.name
    }

    /// The job as `get -o yaml` shows it: with status and the read-only metadata filled in.
    pub fn shown(&self) -> CopyJob {
        let mut job = self.job.clone();
        job.metadata.generation = Some(self.generation);
        job.metadata.creation_timestamp = Some(self.created_at.clone());
        job.metadata.deletion_timestamp = self.deletion_requested_at.clone();
        job.metadata.uid = (!self.uid.is_empty()).then(|| self.uid.clone());
        job
    }
}

/// Result of [`Store::init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyExisted,
    /// The table existed without a stream, which was then turned on.
    StreamEnabled,
}

/// A new job uid: 8 random hex digits (a job's incarnations only need to differ from each
/// other).
pub fn new_uid() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Handle on ferry's table.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: String,
    meter: meter::Meter,
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The current time in RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn job_pk(name: &str) -> String {
    format!("JOB#{name}")
}

impl Store {
    /// A store on `client` as it is (its calls are not metered).
    pub fn new(client: Client, table: impl Into<String>) -> Store {
        Store {
            client,
            table: table.into(),
            meter: meter::Meter::default(),
        }
    }

    /// A store whose client meters every call's capacity (see [`Store::meter`]).
    pub fn from_config(config: &aws_config::SdkConfig, table: impl Into<String>) -> Store {
        let meter = meter::Meter::default();
        let conf = aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(meter.interceptor())
            .build();
        Store {
            client: Client::from_conf(conf),
            table: table.into(),
            meter,
        }
    }

    /// The read and write units this store's calls consumed so far.
    pub fn meter(&self) -> &meter::Meter {
        &self.meter
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn aws_err<E>(&self, op: &'static str, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut message = describe(&err);
        if err.code() == Some("ResourceNotFoundException") {
            message.push_str(&format!(
                " (no table `{}` in this region: run `ferry init`, or check --region and --table)",
                self.table
            ));
        }
        StoreError::Aws {
            op,
            table: self.table.clone(),
            message,
            kind: kind(&err),
            source: Box::new(err),
        }
    }

    /// Maps a failed conditional write to [`StoreError::Conflict`], anything else to `Aws`.
    pub(crate) fn write_err<E>(
        &self,
        op: &'static str,
        what: &str,
        err: SdkError<E, HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if condition_failed(&err) {
            StoreError::Conflict {
                what: what.to_string(),
            }
        } else {
            self.aws_err(op, err)
        }
    }

    pub(crate) fn malformed(&self, key: &str, why: impl Into<String>) -> StoreError {
        StoreError::Malformed {
            table: self.table.clone(),
            key: key.to_string(),
            why: why.into(),
        }
    }

    /// Creates the table (streams on, NEW_AND_OLD_IMAGES) if it does not exist, turns the stream on
    /// if it is off, and waits until the table is ACTIVE. Idempotent.
    pub async fn init(&self) -> Result<InitOutcome, StoreError> {
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let build_err = |e: aws_sdk_dynamodb::error::BuildError| {
            self.malformed("(table definition)", e.to_string())
        };
        let stream = StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .build()
            .map_err(build_err)?;
        let index = |name: &str, pk: &str, sk: &str, projection: ProjectionType| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash).map_err(build_err)?)
                .key_schema(key(sk, KeyType::Range).map_err(build_err)?)
                .projection(Projection::builder().projection_type(projection).build())
                .build()
                .map_err(build_err)
        };
        let gsi = index(GSI, "gsi1pk", "gsi1sk", ProjectionType::All)?;
        let claims = index(CLAIM_INDEX, "gsi2pk", "gsi2sk", ProjectionType::KeysOnly)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk").map_err(build_err)?)
            .attribute_definitions(attr("sk").map_err(build_err)?)
            .attribute_definitions(attr("gsi1pk").map_err(build_err)?)
            .attribute_definitions(attr("gsi1sk").map_err(build_err)?)
            .attribute_definitions(attr("gsi2pk").map_err(build_err)?)
            .attribute_definitions(attr("gsi2sk").map_err(build_err)?)
            .key_schema(key("pk", KeyType::Hash).map_err(build_err)?)
            .key_schema(key("sk", KeyType::Range).map_err(build_err)?)
            .global_secondary_indexes(gsi)
            .global_secondary_indexes(claims.clone())
            .stream_specification(stream.clone())
            .send()
            .await;
        let mut outcome = match created {
            Ok(_) => InitOutcome::Created,
            Err(e) if e.code() == Some("ResourceInUseException") => InitOutcome::AlreadyExisted,
            Err(e) => return Err(self.aws_err("CreateTable", e)),
        };
        self.wait_active().await?;
        self.ensure_ttl().await?;
        if outcome == InitOutcome::AlreadyExisted && !self.has_index(CLAIM_INDEX).await? {
            // A table from before the claim index: add it (online; the table stays usable).
            use aws_sdk_dynamodb::types::{
                CreateGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate,
            };
            let create = CreateGlobalSecondaryIndexAction::builder()
                .index_name(CLAIM_INDEX)
                .set_key_schema(Some(claims.key_schema().to_vec()))
                .set_projection(claims.projection().cloned())
                .build()
                .map_err(build_err)?;
            self.client
                .update_table()
                .table_name(&self.table)
                .attribute_definitions(attr("gsi2pk").map_err(build_err)?)
                .attribute_definitions(attr("gsi2sk").map_err(build_err)?)
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder().create(create).build(),
                )
                .send()
                .await
                .map_err(|e| self.aws_err("UpdateTable", e))?;
            self.wait_active().await?;
        }
        if outcome == InitOutcome::AlreadyExisted && self.stream_arn().await?.is_none() {
            self.client
                .update_table()
                .table_name(&self.table)
                .stream_specification(stream)
                .send()
                .await
                .map_err(|e| self.aws_err("UpdateTable", e))?;
            self.wait_active().await?;
            outcome = InitOutcome::StreamEnabled;
        }
        Ok(outcome)
    }

    /// Turns on DynamoDB TTL on `expiresAt` (run items beyond a job's history limit) unless it is
    /// on or being turned on.
    async fn ensure_ttl(&self) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{TimeToLiveSpecification, TimeToLiveStatus};
        let out = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.aws_err("DescribeTimeToLive", e))?;
        let status = out
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status());
        if matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            return Ok(());
        }
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(runs::EXPIRES_AT)
            .enabled(true)
            .build()
            .map_err(|e| self.malformed("(table definition)", e.to_string()))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| self.aws_err("UpdateTimeToLive", e))?;
        Ok(())
    }

    async fn describe(
        &self,
    ) -> Result<aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput, StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.aws_err("DescribeTable", e))
    }

    async fn has_index(&self, name: &str) -> Result<bool, StoreError> {
        let out = self.describe().await?;
        Ok(out
            .table()
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .any(|g| g.index_name() == Some(name)))
    }

    /// Waits until the table and its indexes are ACTIVE.
    async fn wait_active(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let out = self.describe().await?;
            let table = out.table();
            let indexes_active = table
                .map(|t| t.global_secondary_indexes())
                .unwrap_or_default()
                .iter()
                .all(|g| {
                    g.index_status()
                        .is_none_or(|s| *s == aws_sdk_dynamodb::types::IndexStatus::Active)
                });
            if table.and_then(|t| t.table_status()) == Some(&TableStatus::Active) && indexes_active
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(StoreError::NotReady {
                    table: self.table.clone(),
                    seconds: 120,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// The ARN of the table's stream, if streams are on.
    pub async fn stream_arn(&self) -> Result<Option<String>, StoreError> {
        let out = self.describe().await?;
        let table = out.table();
        let enabled = table
            .and_then(|t| t.stream_specification())
            .is_some_and(|s| s.stream_enabled());
        Ok(if enabled {
            table
                .and_then(|t| t.latest_stream_arn())
                .map(str::to_string)
        } else {
            None
        })
    }

    /// Reads one job (spec and status) with a strongly consistent read.
    pub async fn get_job(&self, name: &str) -> Result<Option<StoredJob>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(job_pk(name)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.aws_err("Query", e))?;
        let mut jobs = self.assemble(out.items().to_vec(), true)?;
        Ok(jobs.pop())
    }

    /// A job that must exist: `NotFound` naming `copyjob/<name>` otherwise.
    pub async fn require_job(&self, name: &str) -> Result<StoredJob, StoreError> {
        self.get_job(name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("copyjob/{name}"),
            })
    }

    /// Lists every job (spec and status), sorted by name.
    pub async fn list_jobs(&self) -> Result<Vec<StoredJob>, StoreError> {
        let mut jobs = Vec::new();
        let mut pages = self.job_pages(None);
        while let Some(page) = pages.next().await? {
            jobs.extend(page);
        }
        Ok(jobs)
    }

    /// Every job, one page of the index at a time (sorted by name), for callers that must not
    /// hold every job at once: the operator's resync of 10,000 jobs. `items_per_page` caps a
    /// page's items (spec and status count one each); `None` leaves DynamoDB's 1 MB pages.
    pub fn job_pages(&self, items_per_page: Option<i32>) -> JobPages<'_> {
        JobPages {
            store: self,
            limit: items_per_page,
            start: None,
            carry: Vec::new(),
            done: false,
        }
    }

    /// Joins spec and status items into jobs. A status without a spec (a job being removed) is
    /// skipped. A malformed item (written around the CLI) fails a `get_job` of that job; a
    /// listing skips it with an error naming the item, so one bad item cannot hide every
    /// other job from the operator.
    fn assemble(&self, items: Vec<Item>, single: bool) -> Result<Vec<StoredJob>, StoreError> {
        let mut specs = Vec::new();
        let mut statuses: HashMap<String, (CopyJobStatus, u64)> = HashMap::new();
        for item in items {
            let pk = get_s(&item, "pk").unwrap_or_default().to_string();
            let parsed = match get_s(&item, "sk") {
                Some("SPEC") => self.parse_spec(&pk, &item).map(|job| specs.push(job)),
                Some("STATUS") => self.parse_status(&pk, &item).map(|status| {
                    statuses.insert(pk.clone(), status);
                }),
                _ => Ok(()),
            };
            match parsed {
                Ok(()) => {}
                Err(e) if single => return Err(e),
                Err(e) => tracing::error!(error = %e, "skipping a malformed job item"),
            }
        }
        for job in &mut specs {
            if let Some((status, version)) = statuses.remove(&job_pk(job.name())) {
                job.job.status = Some(status);
                job.status_version = version;
            }
        }
        specs.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(specs)
    }

    fn parse_status(&self, pk: &str, item: &Item) -> Result<(CopyJobStatus, u64), StoreError> {
        let doc = get_s(item, "status")
            .ok_or_else(|| self.malformed(pk, "status item without `status`"))?;
        let status: CopyJobStatus =
            serde_json::from_str(doc).map_err(|e| self.malformed(pk, format!("status: {e}")))?;
        Ok((status, get_n(item, "version").unwrap_or(0)))
    }

    /// A spec item as a job. Its key must be `JOB#<metadata.name>` and the name may not hold
    /// `#` (job `a`'s run items `RUN#a#…` would otherwise share a prefix with job `a#b`'s).
    /// The spec's other fields are validated by the reader (`model::validate`).
    fn parse_spec(&self, pk: &str, item: &Item) -> Result<StoredJob, StoreError> {
        let doc = get_s(item, "document")
            .ok_or_else(|| self.malformed(pk, "spec item without `document`"))?;
        let job: CopyJob =
            serde_json::from_str(doc).map_err(|e| self.malformed(pk, format!("document: {e}")))?;
        let name = &job.metadata.name;
        if name.contains('#') {
            return Err(self.malformed(
                pk,
                format!("metadata.name `{name}` holds `#`, which would break key scoping; allowed: lowercase letters, digits and `-`"),
            ));
        }
        if pk != job_pk(name) {
            return Err(self.malformed(
                pk,
                format!("metadata.name is `{name}` but the item's key is `{pk}`; allowed: the key `JOB#<metadata.name>`"),
            ));
        }
        let uid = get_s(item, "uid").unwrap_or_default();
        if uid.len() > 16
            || !uid
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(self.malformed(
                pk,
                format!("uid `{uid}` is not ferry's; allowed: up to 16 lowercase hex digits"),
            ));
        }
        Ok(StoredJob {
            job,
            generation: get_n(item, "generation")
                .ok_or_else(|| self.malformed(pk, "no generation"))?,
            version: get_n(item, "version").ok_or_else(|| self.malformed(pk, "no version"))?,
            applyset: get_s(item, "applyset").map(str::to_string),
            created_at: get_s(item, "createdAt").unwrap_or_default().to_string(),
            updated_at: get_s(item, "updatedAt").unwrap_or_default().to_string(),
            deletion_requested_at: get_s(item, "deletionRequestedAt").map(str::to_string),
            status_version: 0,
            uid: uid.to_string(),
            rerun: get_n(item, "rerun").unwrap_or(0),
        })
    }

    /// Creates a job's spec item (generation 1, version 1). Conflict if the job exists.
    pub async fn create_spec(
        &self,
        job: &CopyJob,
        applyset: Option<&str>,
    ) -> Result<(), StoreError> {
        let name = &job.metadata.name;
        let now = now_rfc3339();
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(job_pk(name)))
            .item("sk", s("SPEC"))
            .item("gsi1pk", s(JOBS_PARTITION))
            .item("gsi1sk", s(name.as_str()))
            .item("document", s(spec_document(job)))
            .item("generation", n(1))
            .item("version", n(1))
            .item("uid", s(new_uid()))
            .item("createdAt", s(now.clone()))
            .item("updatedAt", s(now))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(set) = applyset {
            req = req.item("applyset", s(set));
        }
        req.send()
            .await
            .map_err(|e| self.write_err("PutItem", &format!("copyjob/{name}"), e))?;
        Ok(())
    }

    /// An UpdateItem of a job's spec item that moves its version from `expected_version` to the
    /// next: the key and `:v`/`:nv` are set; the caller adds its update and a condition that
    /// includes `version = :v`.
    fn spec_update(
        &self,
        name: &str,
        expected_version: u64,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(job_pk(name)))
            .key("sk", s("SPEC"))
            .expression_attribute_values(":v", n(expected_version))
            .expression_attribute_values(":nv", n(expected_version + 1))
            .expression_attribute_values(":t", s(now_rfc3339()))
    }

    /// Replaces a job's spec if its version is still `expected_version`; sets the generation.
    pub async fn update_spec(
        &self,
        job: &CopyJob,
        generation: u64,
        applyset: Option<&str>,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        let name = &job.metadata.name;
        let mut set =
            "SET document = :d, generation = :g, version = :nv, updatedAt = :t".to_string();
        let mut req = self
            .spec_update(name, expected_version)
            .expression_attribute_values(":d", s(spec_document(job)))
            .expression_attribute_values(":g", n(generation))
            .condition_expression("version = :v AND attribute_not_exists(deletionRequestedAt)");
        if let Some(a) = applyset {
            set.push_str(", applyset = :a");
            req = req.expression_attribute_values(":a", s(a));
        }
        req.update_expression(set)
            .send()
            .await
            .map_err(|e| self.write_err("UpdateItem", &format!("copyjob/{name}"), e))?;
        Ok(())
    }

    /// Marks a job for deletion if its version is still `expected_version`. The operator then
    /// finalizes it and removes its items.
    pub async fn request_deletion(
        &self,
        name: &str,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        self.spec_update(name, expected_version)
            .update_expression("SET deletionRequestedAt = :t, version = :nv")
            .condition_expression("version = :v")
            .send()
            .await
            .map_err(|e| self.write_err("UpdateItem", &format!("copyjob/{name}"), e))?;
        Ok(())
    }

    /// `--dry-run=server` (DynamoDB API reference, TransactWriteItems: a `ConditionCheck` "applies
    /// a condition to an item that is not being modified by the transaction"): has DynamoDB
    /// evaluate the condition the spec write would carry
    /// (absent for a create, `version` and no deletion for an update) in a transaction holding
    /// only a ConditionCheck, which writes nothing. `check: false` does nothing.
    pub async fn check_spec_write(
        &self,
        name: &str,
        expected_version: Option<u64>,
        check: bool,
    ) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem};
        if !check {
            return Ok(());
        }
        let mut cc = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(job_pk(name)))
            .key("sk", s("SPEC"));
        cc = match expected_version {
            None => cc.condition_expression("attribute_not_exists(pk)"),
            Some(v) => cc
                .condition_expression("version = :v AND attribute_not_exists(deletionRequestedAt)")
                .expression_attribute_values(":v", n(v)),
        };
        let cc = cc
            .build()
            .map_err(|e| self.malformed(&job_pk(name), e.to_string()))?;
        let what = format!("copyjob/{name}");
        match self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(cc).build())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
                let cancelled = matches!(
                    e.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(t))
                        if t.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
                );
                if cancelled {
                    Err(StoreError::Conflict { what })
                } else {
                    Err(self.write_err("TransactWriteItems", &what, e))
                }
            }
        }
    }

    /// Asks for a new run of a job (`ferry rerun`) if its version is still `expected_version`:
    /// counts one more rerun, which the operator starts once the current run has finished.
    /// Returns the new count.
    pub async fn request_rerun(
        &self,
        name: &str,
        expected_version: u64,
    ) -> Result<u64, StoreError> {
        let out = self
            .spec_update(name, expected_version)
            .update_expression("SET version = :nv, updatedAt = :t ADD rerun :one")
            .condition_expression("version = :v AND attribute_not_exists(deletionRequestedAt)")
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| self.write_err("UpdateItem", &format!("copyjob/{name}"), e))?;
        Ok(out
            .attributes()
            .and_then(|a| get_n(a, "rerun"))
            .unwrap_or(0))
    }

    /// Writes a job's status if the status item's version is still `expected_version` (0: no
    /// status item yet). Returns the new version. Only the operator calls this.
    pub async fn put_status(
        &self,
        name: &str,
        status: &CopyJobStatus,
        expected_version: u64,
    ) -> Result<u64, StoreError> {
        let doc = serde_json::to_string(status)
            .map_err(|e| self.malformed(&job_pk(name), e.to_string()))?;
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(job_pk(name)))
            .item("sk", s("STATUS"))
            .item("gsi1pk", s(JOBS_PARTITION))
            .item("gsi1sk", s(name))
            .item("status", s(doc))
            .item("version", n(expected_version + 1));
        req = if expected_version == 0 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("version = :v")
                .expression_attribute_values(":v", n(expected_version))
        };
        req.send()
            .await
            .map_err(|e| self.write_err("PutItem", &format!("status of copyjob/{name}"), e))?;
        Ok(expected_version + 1)
    }
}

/// The stored form of a job document: the applied document without status, as JSON.
pub fn spec_document(job: &CopyJob) -> String {
    serde_json::to_string(&job.desired()).unwrap_or_default()
}

/// Whether a write failed only because its condition did not hold.
pub(crate) fn condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    e: &SdkError<E, HttpResponse>,
) -> bool {
    aws_sdk_dynamodb::error::ProvideErrorMetadata::code(e)
        == Some("ConditionalCheckFailedException")
}

pub(crate) fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(crate) fn get_n(item: &Item, key: &str) -> Option<u64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
