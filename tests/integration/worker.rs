//! `ferry worker` against moto with two accounts: source in 111111111111 / eu-west-1,
//! destinations in 222222222222 (us-east-1 and ap-southeast-2).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use ferry::model::CopyJob;
use ferry::store::Store;
use tokio::sync::Semaphore;

use crate::support::{Emulator, eventually, s3, spawn_ferry, wait_child};

const SRC_ACCOUNT: &str = "111111111111";
const DST_ACCOUNT: &str = "222222222222";
const SRC_REGION: &str = "eu-west-1";

pub struct World {
    pub emu: Emulator,
    pub store: Store,
    pub src: Client,
    pub dst_cfg: SdkConfig,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new() -> World {
        let emu = Emulator::start();
        let store = Store::from_config(&emu.sdk_config().await, "ferry");
        store.init().await.expect("init");
        let src = s3(&emu.account_config(SRC_ACCOUNT).await, SRC_REGION);
        let dst_cfg = emu.account_config(DST_ACCOUNT).await;
        World {
            emu,
            store,
            src,
            dst_cfg,
            dir: tempfile::tempdir().expect("tmp"),
        }
    }

    pub fn dst(&self, region: &str) -> Client {
        s3(&self.dst_cfg, region)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Stores a job copying `src_bucket/src_prefix` to `dst_bucket/dst_prefix` in `dst_region`.
    pub async fn job(
        &self,
        name: &str,
        src: (&str, &str),
        dst: (&str, &str, &str),
        copy: &str,
        run: &str,
    ) -> CopyJob {
        let yaml = format!(
            r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: {name} }}
spec:
  source: {{ account: "{SRC_ACCOUNT}", region: {SRC_REGION}, bucket: {}, prefix: "{}", roleArn: "arn:aws:iam::{SRC_ACCOUNT}:role/src" }}
  destination: {{ account: "{DST_ACCOUNT}", region: {}, bucket: {}, prefix: "{}", roleArn: "arn:aws:iam::{DST_ACCOUNT}:role/dst" }}
  copy: {{ {copy} }}
  run: {{ {run} }}
"#,
            src.0, src.1, dst.2, dst.0, dst.1
        );
        let job: CopyJob = serde_saphyr::from_str(&yaml).expect("job yaml");
        let problems = ferry::model::validate::validate(&job);
        assert!(problems.is_empty(), "{problems:?}");
        self.store.create_spec(&job, None).await.expect("store job");
        self.grant_source(&job).await;
        job
    }

    /// Does what the operator does before any task runs: puts ferry's statement for `job` into
    /// the source bucket's policy, so the destination role may list and read the source (the
    /// strict layer, like S3, refuses cross-account reads the bucket policy does not allow).
    pub async fn grant_source(&self, job: &CopyJob) {
        let bucket = &job.spec.source.bucket;
        let current = match self.src.get_bucket_policy().bucket(bucket).send().await {
            Ok(p) => p.policy().map(str::to_string),
            Err(_) => None,
        };
        if let Some(doc) = ferry::controller::policy::merge(current.as_deref(), job, "0123abcd4567")
            .expect("merge ferry's statement")
        {
            self.src
                .put_bucket_policy()
                .bucket(bucket)
                .policy(doc)
                .send()
                .await
                .expect("source bucket policy");
        }
    }

    /// Runs `ferry worker` to completion and asserts that it exits 0 (with its log if not).
    pub async fn run_worker_ok(&self, job: &str, run: &str, task: &str, extra: &[(&str, &str)]) {
        let code = self.run_worker(job, run, task, extra).await;
        assert_eq!(
            code,
            0,
            "worker {task} exited {code}:\n{}",
            std::fs::read_to_string(self.log(task)).unwrap_or_default()
        );
    }

    /// Runs `ferry worker` to completion and returns its exit code.
    pub async fn run_worker(
        &self,
        job: &str,
        run: &str,
        task: &str,
        extra: &[(&str, &str)],
    ) -> i32 {
        let mut env = self.emu.worker_env(job, run, task);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let log = self.log(task);
        let mut child = spawn_ferry(&["worker"], &env, &log);
        wait_child(&mut child, Duration::from_secs(600), &log).await
    }
}

pub async fn create_bucket(client: &Client, bucket: &str, region: &str) {
    let mut req = client.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    req.send().await.expect("create bucket");
}

/// An object to seed.
#[derive(Debug, Clone, Default)]
pub struct Obj {
    pub key: String,
    pub body: Vec<u8>,
    pub meta: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub tagging: Option<String>,
    pub storage_class: Option<&'static str>,
}

impl Obj {
    pub fn new(key: &str, body: &[u8]) -> Obj {
        Obj {
            key: key.into(),
            body: body.to_vec(),
            ..Obj::default()
        }
    }
}

pub async fn seed(client: &Client, bucket: &str, objects: Vec<Obj>) {
    let sem = Arc::new(Semaphore::new(16));
    let mut set = tokio::task::JoinSet::new();
    for o in objects {
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        let (client, bucket) = (client.clone(), bucket.to_string());
        set.spawn(async move {
            let _p = permit;
            let mut req = client
                .put_object()
                .bucket(&bucket)
                .key(&o.key)
                .body(ByteStream::from(o.body.clone()))
                .set_content_type(o.content_type.clone())
                .set_cache_control(o.cache_control.clone())
                .set_tagging(o.tagging.clone());
            for (k, v) in &o.meta {
                req = req.metadata(k, v);
            }
            if let Some(c) = o.storage_class {
                req = req.storage_class(c.into());
            }
            req.send()
                .await
                .unwrap_or_else(|e| panic!("put {}: {e:?}", o.key));
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("seed task");
    }
}

/// key -> (size, etag) of every object under `prefix`.
pub async fn listing(client: &Client, bucket: &str, prefix: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.expect("list").contents() {
            out.insert(o.key().unwrap().to_string(), o.size().unwrap_or(0) as u64);
        }
    }
    out
}

/// Keys with more than one version (copied more than once into a versioned bucket).
pub async fn copied_twice(client: &Client, bucket: &str) -> Vec<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut marker: (Option<String>, Option<String>) = (None, None);
    loop {
        let out = client
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(marker.0.take())
            .set_version_id_marker(marker.1.take())
            .send()
            .await
            .expect("list versions");
        for v in out.versions() {
            *counts.entry(v.key().unwrap().to_string()).or_default() += 1;
        }
        if out.is_truncated() == Some(true) {
            marker = (
                out.next_key_marker().map(String::from),
                out.next_version_id_marker().map(String::from),
            );
        } else {
            break;
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect()
}

pub async fn enable_versioning(client: &Client, bucket: &str) {
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
}

/// The awkward keys every copier must survive.
pub fn awkward_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "a b+c%/ü.txt",
        "space in name.txt",
        "plus+sign",
        "percent%20literal",
        "percent%2Fslash",
        "hash#tag",
        "question?mark",
        "unicode/日本語/ファイル.txt",
        "caf\u{e9}-nfc",
        "cafe\u{301}-nfd",
        "double//slash",
        "/leading-slash",
        "trailing-slash/",
        "./dot",
        "../dotdot",
        "emoji/🚀.bin",
        "amp&ersand=eq;semi",
        "quote'\"<angle>",
        "back\\slash",
        "tilde~x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let base = "long/";
    keys.push(format!("{base}{}", "k".repeat(1024 - base.len())));
    keys
}

/// The awkward keys shortened to fit under a 3-byte prefix (`in/`, `out/` maps to 4: the
/// longest source key is 1,024 bytes, and so is S3's limit, KeyTooLongError beyond it).
fn under_prefix_keys() -> Vec<String> {
    awkward_keys()
        .into_iter()
        .map(|k| {
            let mut k = k;
            while k.len() > 1020 {
                k.pop();
            }
            k
        })
        .collect()
}

async fn head_of(
    client: &Client,
    bucket: &str,
    key: &str,
) -> (
    Vec<u8>,
    BTreeMap<String, String>,
    Option<String>,
    Option<String>,
) {
    let got = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    let meta: BTreeMap<String, String> = got
        .metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != "ferry-source-etag")
        .collect();
    let (ct, cc) = (
        got.content_type().map(String::from),
        got.cache_control().map(String::from),
    );
    let body = got
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec();
    (body, meta, ct, cc)
}

async fn tags_of(client: &Client, bucket: &str, key: &str) -> BTreeMap<String, String> {
    let t = client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("tagging");
    t.tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_of_awkward_keys_is_copied_exactly_and_a_second_run_copies_nothing() {
    let w = World::new().await;
    create_bucket(&w.src, "src-bulk", SRC_REGION).await;
    create_bucket(&w.dst("ap-southeast-2"), "dst-apse2", "ap-southeast-2").await;
    let mut objects = Vec::new();
    for (i, key) in awkward_keys().into_iter().enumerate() {
        let mut o = Obj::new(&key, format!("awkward {i}").as_bytes());
        o.meta = vec![("origin".into(), format!("n{i}"))];
        o.content_type = Some("text/plain; charset=utf-8".into());
        objects.push(o);
    }
    objects.push(Obj::new("zero-byte", b""));
    objects.push(Obj::new("folder-marker/", b""));
    for i in 0..2500 {
        let mut o = Obj::new(
            &format!("p{}/obj-{i:05}", i % 10),
            format!("body of {i}").as_bytes(),
        );
        if i % 50 == 0 {
            o.meta = vec![("idx".into(), i.to_string())];
            o.cache_control = Some("max-age=60".into());
        }
        objects.push(o);
    }
    let mut big = Obj::new(
        "big/multipart.bin",
        &(0..12 * 1024 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    big.meta = vec![("kind".into(), "large".into())];
    big.content_type = Some("application/octet-stream".into());
    big.cache_control = Some("no-cache".into());
    big.tagging = Some("team=platform&tier=gold".into());
    objects.push(big);
    let sample: Vec<String> = objects
        .iter()
        .filter(|o| !o.key.starts_with('p') || o.key.ends_with("00"))
        .map(|o| o.key.clone())
        .collect();
    seed(&w.src, "src-bulk", objects).await;

    w.job(
        "bulk",
        ("src-bulk", ""),
        ("dst-apse2", "", "ap-southeast-2"),
        "multipartThresholdMiB: 5",
        "parallelism: 1",
    )
    .await;
    w.run_worker_ok("bulk", "r1", "t1", &[]).await;

    let dst = w.dst("ap-southeast-2");
    let src_list = listing(&w.src, "src-bulk", "").await;
    let dst_list = listing(&dst, "dst-apse2", "").await;
    assert_eq!(src_list.len(), 2500 + 21 + 3);
    assert_eq!(dst_list, src_list, "same keys and sizes");
    for key in &sample {
        let (sb, sm, sct, scc) = head_of(&w.src, "src-bulk", key).await;
        let (db, dm, dct, dcc) = head_of(&dst, "dst-apse2", key).await;
        assert!(sb == db, "{key}: content differs");
        assert_eq!(
            (sm, sct, scc),
            (dm, dct, dcc),
            "{key}: metadata or content headers differ"
        );
    }
    // Tags are checked in the same-account test below: moto answers GetObjectTagging and
    // TaggingDirective COPY with no tags when the caller is another account (AWS returns them given
    // s3:GetObjectTagging), so a cross-account tag check here would test the emulator.
    let summary = w.store.run_summary("bulk", "r1").await.unwrap();
    assert!(summary.complete());
    assert_eq!(summary.progress.objects_copied, 2524);
    assert_eq!(summary.progress.objects_failed, 0);
    assert!(
        summary.partitions_total.unwrap() > 1,
        "the ten top-level prefixes are listed as separate partitions"
    );

    assert_eq!(w.run_worker("bulk", "r2", "t2", &[]).await, 0);
    let again = w.store.run_summary("bulk", "r2").await.unwrap();
    assert_eq!(
        again.progress.objects_copied, 0,
        "a second run copies nothing, the multipart copy included"
    );
    assert_eq!(again.progress.objects_skipped, 2524);
}

#[tokio::test]
async fn prefixes_map_into_a_us_east_1_bucket_and_same_account_copies_keep_tags() {
    let w = World::new().await;
    create_bucket(&w.src, "src-small", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-use1", "us-east-1").await;
    let mut objects = Vec::new();
    for key in under_prefix_keys() {
        objects.push(Obj::new(&format!("in/{key}"), key.as_bytes()));
    }
    objects.push(Obj::new("outside/not-copied", b"x"));
    seed(&w.src, "src-small", objects).await;
    w.job(
        "small",
        ("src-small", "in/"),
        ("dst-use1", "out/", "us-east-1"),
        "",
        "",
    )
    .await;
    w.run_worker_ok("small", "r1", "t1", &[]).await;
    let dst_list = listing(&w.dst("us-east-1"), "dst-use1", "").await;
    let expected: Vec<String> = under_prefix_keys()
        .iter()
        .map(|k| format!("out/{k}"))
        .collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        dst_list.keys().cloned().collect::<Vec<_>>(),
        expected_sorted
    );

    // Same account (the source account copying within itself): TaggingDirective COPY keeps tags.
    create_bucket(&w.src, "src-same-dst", SRC_REGION).await;
    let mut tagged = Obj::new("tagged.txt", b"t");
    tagged.tagging = Some("a=1&b=two".into());
    let mut tagged_big = Obj::new("tagged-big.bin", &vec![7u8; 6 * 1024 * 1024]);
    tagged_big.tagging = Some("size=big&path=multipart".into());
    tagged_big.meta = vec![("m".into(), "v".into())];
    seed(&w.src, "src-small", vec![tagged, tagged_big]).await;
    let job = format!(
        r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: same }}
spec:
  source: {{ account: "{SRC_ACCOUNT}", region: {SRC_REGION}, bucket: src-small, roleArn: "arn:aws:iam::{SRC_ACCOUNT}:role/src" }}
  destination: {{ account: "{SRC_ACCOUNT}", region: {SRC_REGION}, bucket: src-same-dst, roleArn: "arn:aws:iam::{SRC_ACCOUNT}:role/dst" }}
  copy: {{ include: ["tagged*"], multipartThresholdMiB: 5 }}
"#
    );
    w.store
        .create_spec(&serde_saphyr::from_str(&job).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(w.run_worker("same", "r1", "t1s", &[]).await, 0);
    for key in ["tagged.txt", "tagged-big.bin"] {
        let want = tags_of(&w.src, "src-small", key).await;
        assert!(!want.is_empty());
        assert_eq!(
            tags_of(&w.src, "src-same-dst", key).await,
            want,
            "{key}: tags kept"
        );
    }
    let (_, meta, _, _) = head_of(&w.src, "src-same-dst", "tagged-big.bin").await;
    assert_eq!(
        meta.get("m").map(String::as_str),
        Some("v"),
        "multipart copy keeps metadata"
    );
    assert_eq!(
        listing(&w.src, "src-same-dst", "").await.len(),
        2,
        "include patterns limit the copy"
    );
}

fn bulk(n: usize) -> Vec<Obj> {
    (0..n)
        .map(|i| Obj::new(&format!("d{}/k-{i:05}", i % 8), format!("v{i}").as_bytes()))
        .collect()
}

/// The incomplete multipart uploads of a bucket: (key, initiator id).
async fn uploads(client: &Client, bucket: &str) -> Vec<(String, String)> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list multipart uploads");
    out.uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.initiator()
                    .and_then(|i| i.id())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_multipart_copy_killed_half_way_leaves_no_incomplete_upload_once_the_run_ends() {
    let w = World::new().await;
    create_bucket(&w.src, "src-mpu", SRC_REGION).await;
    let dst = w.dst("us-east-1");
    create_bucket(&dst, "dst-mpu", "us-east-1").await;
    seed(
        &w.src,
        "src-mpu",
        vec![Obj::new("big.bin", &vec![9u8; 16 * 1024 * 1024])],
    )
    .await;
    // Someone else's upload under the same prefix: not ferry's to abort.
    dst.create_multipart_upload()
        .bucket("dst-mpu")
        .key("users-own-upload")
        .send()
        .await
        .expect("a foreign upload");
    // Two requests a second: the four part copies take seconds, time enough to kill the task.
    w.job(
        "mpu",
        ("src-mpu", ""),
        ("dst-mpu", "", "us-east-1"),
        "multipartThresholdMiB: 5",
        "maxRequestsPerSecond: 2",
    )
    .await;
    let mut env = w.emu.worker_env("mpu", "r1", "victim");
    env.push(("FERRY_LEASE_SECONDS".into(), "3".into()));
    let mut victim = spawn_ferry(&["worker"], &env, &w.log("victim"));
    let dst_ref = &dst;
    eventually(
        "the copy's upload to begin",
        Duration::from_secs(60),
        || async { (uploads(dst_ref, "dst-mpu").await.len() == 2).then_some(()) },
    )
    .await;
    victim.kill();
    let left = uploads(&dst, "dst-mpu").await;
    assert!(
        left.iter()
            .any(|(k, who)| k == "big.bin" && who.contains("assumed-role/dst/ferry-mpu-victim")),
        "the killed task left its upload, initiated by its role session: {left:?}"
    );

    let code = w
        .run_worker("mpu", "r1", "rescuer", &[("FERRY_LEASE_SECONDS", "3")])
        .await;
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(w.log("rescuer")).unwrap()
    );
    let head = dst
        .head_object()
        .bucket("dst-mpu")
        .key("big.bin")
        .send()
        .await
        .expect("the copy is complete");
    assert_eq!(head.content_length(), Some(16 * 1024 * 1024));
    let left: Vec<String> = uploads(&dst, "dst-mpu")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        left,
        ["users-own-upload"],
        "ferry's abandoned upload is aborted, the other kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_is_resumed_by_another_and_nothing_is_lost() {
    let w = World::new().await;
    create_bucket(&w.src, "src-kill", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-kill", "us-east-1").await;
    enable_versioning(&w.dst("us-east-1"), "dst-kill").await;
    seed(&w.src, "src-kill", bulk(2000)).await;
    w.job(
        "kill",
        ("src-kill", ""),
        ("dst-kill", "", "us-east-1"),
        "",
        "",
    )
    .await;

    let mut env = w.emu.worker_env("kill", "r1", "victim");
    env.push(("FERRY_LEASE_SECONDS".into(), "3".into()));
    let log = w.log("victim");
    let mut victim = spawn_ferry(&["worker"], &env, &log);
    let store = &w.store;
    eventually(
        "the first worker to copy something",
        Duration::from_secs(120),
        || async {
            let s = store.run_summary("kill", "r1").await.ok()?;
            (s.chunks_done >= 1 || s.tasks.iter().any(|t| t.copied >= 200)).then_some(())
        },
    )
    .await;
    victim.kill();

    let code = w
        .run_worker("kill", "r1", "rescuer", &[("FERRY_LEASE_SECONDS", "3")])
        .await;
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(w.log("rescuer")).unwrap()
    );
    let dst = w.dst("us-east-1");
    assert_eq!(
        listing(&dst, "dst-kill", "").await,
        listing(&w.src, "src-kill", "").await,
        "nothing lost"
    );
    let twice = copied_twice(&dst, "dst-kill").await;
    assert!(
        twice.len() <= 1000,
        "at most one chunk (1,000 keys) copied twice, got {}",
        twice.len()
    );
    let s = w.store.run_summary("kill", "r1").await.unwrap();
    assert!(s.complete());
    assert_eq!(s.progress.objects_copied + s.progress.objects_skipped, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_kept_by_its_own_lister_is_copied_without_listing_the_source_again() {
    // One task: its listers write the chunks and keep the first ones (up to two waiting) with
    // the page they just read; only chunks it claims back from the index are listed again.
    let w = World::new().await;
    create_bucket(&w.src, "src-kept", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-kept", "us-east-1").await;
    seed(&w.src, "src-kept", bulk(300)).await;
    w.job(
        "kept",
        ("src-kept", ""),
        ("dst-kept", "", "us-east-1"),
        "",
        "",
    )
    .await;
    w.run_worker_ok("kept", "r1", "tk", &[]).await;
    let log = std::fs::read_to_string(w.log("tk")).unwrap();
    let probes: usize = log
        .lines()
        .find_map(|l| l.split("probes=").nth(1))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the planner's probes in {log}"));
    let source_lists = w
        .emu
        .strict_requests()
        .iter()
        .filter(|q| {
            q["bucket"] == "src-kept" && q["operation"].as_str().unwrap_or("").contains("list-type")
        })
        .count();
    let s = w.store.run_summary("kept", "r1").await.unwrap();
    assert!(s.complete());
    assert_eq!(s.progress.objects_copied, 300);
    // Each chunk's page was read once by a lister; the rest are copiers' listings.
    let relisted = source_lists - probes - s.chunks_total;
    assert!(
        relisted < s.chunks_total,
        "{relisted} of {} chunks listed again ({source_lists} source LISTs, {probes} probes)",
        s.chunks_total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_bucket_is_split_by_one_planner_without_a_delimiter_and_copied_once() {
    // Hash-named keys with no `/`: a delimited listing finds no common prefix, so before the
    // planner this run had a single partition, and every task walked the bucket to find that.
    let w = World::new().await;
    create_bucket(&w.src, "src-flat", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-flat", "us-east-1").await;
    enable_versioning(&w.dst("us-east-1"), "dst-flat").await;
    let names: Vec<String> = (0..600u64)
        .map(|i| format!("{:012x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16))
        .collect();
    seed(
        &w.src,
        "src-flat",
        names.iter().map(|k| Obj::new(k, b"x")).collect(),
    )
    .await;
    w.job(
        "flat",
        ("src-flat", ""),
        ("dst-flat", "", "us-east-1"),
        "",
        "parallelism: 4",
    )
    .await;
    let tasks = ["fa", "fb", "fc"];
    let mut children: Vec<_> = tasks
        .iter()
        .map(|t| spawn_ferry(&["worker"], &w.emu.worker_env("flat", "r1", t), &w.log(t)))
        .collect();
    for (t, child) in tasks.iter().zip(children.iter_mut()) {
        let code = wait_child(child, Duration::from_secs(600), &w.log(t)).await;
        assert_eq!(
            code,
            0,
            "{t}: {}",
            std::fs::read_to_string(w.log(t)).unwrap()
        );
    }
    let planners: Vec<&str> = tasks
        .iter()
        .copied()
        .filter(|t| {
            std::fs::read_to_string(w.log(t))
                .unwrap()
                .contains("planned the run's listing partitions")
        })
        .collect();
    assert_eq!(planners.len(), 1, "exactly one task plans: {planners:?}");
    let lists: Vec<String> = w
        .emu
        .strict_requests()
        .iter()
        .filter(|q| {
            q["bucket"] == "src-flat" && q["operation"].as_str().unwrap_or("").contains("list-type")
        })
        .map(|q| q["operation"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        lists.iter().all(|op| !op.contains("delimiter")),
        "no listing of the source uses a delimiter: {lists:?}"
    );
    let s = w.store.run_summary("flat", "r1").await.unwrap();
    assert!(s.complete());
    assert!(
        s.partitions_total.unwrap() >= 8,
        "a flat keyspace is split into several partitions (4 per task asked, 16): {:?}",
        s.partitions_total
    );
    assert_eq!(s.progress.objects_copied, 600);
    let dst = w.dst("us-east-1");
    assert_eq!(listing(&dst, "dst-flat", "").await.len(), 600);
    assert_eq!(copied_twice(&dst, "dst-flat").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_run_share_the_chunks_and_copy_no_object_twice() {
    // Lease claims are atomic conditional writes (the strict layer's dynamodb-atomic-writes).
    let w = World::new().await;
    create_bucket(&w.src, "src-two", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-two", "us-east-1").await;
    enable_versioning(&w.dst("us-east-1"), "dst-two").await;
    seed(
        &w.src,
        "src-two",
        (0..800)
            .map(|i| Obj::new(&format!("d{:02}/k-{i:05}", i % 64), b"x"))
            .collect(),
    )
    .await;
    // At 50 requests/s (800 for the job, shared by parallelism 16) a task alone needs at least 16 s for 800 copies, so the second task
    // joins a run with most of its work unclaimed, however fast or loaded the machine is. 64
    // prefixes and parallelism 16 make 64 small chunks: a task holds at most 10 of them at once
    // (8 in work, 2 ready), so most are still open when the second task joins (with 16 chunks
    // of 50 keys, the first task held nearly all that was left, and a loaded CI machine once
    // saw the second task get none).
    w.job(
        "two",
        ("src-two", ""),
        ("dst-two", "", "us-east-1"),
        "",
        "parallelism: 16, maxRequestsPerSecond: 800",
    )
    .await;
    let env = |task: &str| w.emu.worker_env("two", "r1", task);
    let mut wa = spawn_ferry(&["worker"], &env("wa"), &w.log("wa"));
    let copied_by_wa = eventually(
        "the first task copying",
        Duration::from_secs(60),
        || async {
            let s = w.store.run_summary("two", "r1").await.ok()?;
            let t = s.tasks.iter().find(|t| t.task == "wa" && t.copied > 0)?;
            Some(t.copied)
        },
    )
    .await;
    let mut wb = spawn_ferry(&["worker"], &env("wb"), &w.log("wb"));
    let (log_a, log_b) = (w.log("wa"), w.log("wb"));
    let (a, b) = tokio::join!(
        wait_child(&mut wa, Duration::from_secs(600), &log_a),
        wait_child(&mut wb, Duration::from_secs(600), &log_b)
    );
    assert_eq!(
        (a, b),
        (0, 0),
        "{}\n{}",
        std::fs::read_to_string(w.log("wa")).unwrap(),
        std::fs::read_to_string(w.log("wb")).unwrap()
    );
    let dst = w.dst("us-east-1");
    assert_eq!(listing(&dst, "dst-two", "").await.len(), 800);
    assert_eq!(
        copied_twice(&dst, "dst-two").await,
        Vec::<String>::new(),
        "no object copied by both"
    );
    let s = w.store.run_summary("two", "r1").await.unwrap();
    let by_task: BTreeMap<String, u64> =
        s.tasks.iter().map(|t| (t.task.clone(), t.copied)).collect();
    assert_eq!(by_task.values().sum::<u64>(), 800, "{by_task:?}");
    assert!(
        copied_by_wa < 800 && by_task.get("wb").copied().unwrap_or(0) > 0,
        "a task that joins while work is unclaimed copies a share (wa had copied {copied_by_wa} \
         when wb started): {by_task:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_slowdowns_and_dropped_connections_are_retried_and_nothing_is_lost() {
    let w = World::new().await;
    create_bucket(&w.src, "src-faults", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-faults", "us-east-1").await;
    seed(&w.src, "src-faults", bulk(600)).await;
    w.job(
        "faults",
        ("src-faults", ""),
        ("dst-faults", "", "us-east-1"),
        "",
        "",
    )
    .await;
    let proxy = crate::support::faults::FaultProxy::start(w.emu.port).await;
    // Only S3 goes through the proxy; the job store talks to moto directly.
    let code = w
        .run_worker(
            "faults",
            "r1",
            "tf",
            &[
                ("AWS_ENDPOINT_URL_S3", proxy.endpoint.as_str()),
                ("FERRY_COPY_CONCURRENCY", "8"),
            ],
        )
        .await;
    assert_eq!(code, 0, "{}", std::fs::read_to_string(w.log("tf")).unwrap());
    let st = &proxy.stats;
    use std::sync::atomic::Ordering::Relaxed;
    assert!(
        st.slowdowns.load(Relaxed) > 0 && st.drops.load(Relaxed) > 0 && st.cuts.load(Relaxed) > 0,
        "faults were injected: {st:?}"
    );
    drop(proxy);
    assert_eq!(
        listing(&w.dst("us-east-1"), "dst-faults", "").await,
        listing(&w.src, "src-faults", "").await
    );
    let s = w.store.run_summary("faults", "r1").await.unwrap();
    // A chunk interrupted by faults is redone; what it had copied is then skipped, not lost.
    assert_eq!(
        (
            s.progress.objects_copied + s.progress.objects_skipped,
            s.progress.objects_failed
        ),
        (600, 0)
    );
}

/// Sets a bucket's Object Ownership (buckets default to BucketOwnerEnforced: no ACLs).
pub async fn allow_acls(client: &Client, bucket: &str) {
    use aws_sdk_s3::types::{ObjectOwnership, OwnershipControls, OwnershipControlsRule};
    client
        .put_bucket_ownership_controls()
        .bucket(bucket)
        .ownership_controls(
            OwnershipControls::builder()
                .rules(
                    OwnershipControlsRule::builder()
                        .object_ownership(ObjectOwnership::ObjectWriter)
                        .build()
                        .expect("rule"),
                )
                .build()
                .expect("controls"),
        )
        .send()
        .await
        .expect("ownership controls");
}

#[tokio::test]
async fn copied_acls_keep_third_party_grants_and_give_the_source_owner_nothing() {
    let w = World::new().await;
    create_bucket(&w.src, "src-acl", SRC_REGION).await;
    allow_acls(&w.src, "src-acl").await;
    let dst = w.dst("us-east-1");
    create_bucket(&dst, "dst-acl", "us-east-1").await;
    allow_acls(&dst, "dst-acl").await;
    seed(&w.src, "src-acl", vec![Obj::new("shared.txt", b"s")]).await;
    let reader = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    w.src
        .put_object_acl()
        .bucket("src-acl")
        .key("shared.txt")
        .grant_read(format!("id=\"{reader}\""))
        .grant_full_control(format!(
            "id=\"{}\"",
            source_owner(&w.src, "src-acl", "shared.txt").await
        ))
        .send()
        .await
        .expect("source ACL");
    let owner = source_owner(&w.src, "src-acl", "shared.txt").await;
    w.job(
        "acl",
        ("src-acl", ""),
        ("dst-acl", "", "us-east-1"),
        "acl: true",
        "",
    )
    .await;
    assert_eq!(w.run_worker("acl", "r1", "t1", &[]).await, 0);
    let acl = dst
        .get_object_acl()
        .bucket("dst-acl")
        .key("shared.txt")
        .send()
        .await
        .expect("destination ACL");
    let grants: Vec<(String, String)> = acl
        .grants()
        .iter()
        .filter_map(|g| {
            Some((
                g.grantee()?.id()?.to_string(),
                g.permission()?.as_str().to_string(),
            ))
        })
        .collect();
    assert!(
        grants.contains(&(reader.to_string(), "READ".to_string())),
        "{grants:?}"
    );
    assert!(
        !grants.iter().any(|(id, _)| *id == owner),
        "the source owner's grants are not replayed: {grants:?}"
    );
}

async fn source_owner(client: &Client, bucket: &str, key: &str) -> String {
    client
        .get_object_acl()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get ACL")
        .owner()
        .and_then(|o| o.id())
        .expect("owner id")
        .to_string()
}

#[tokio::test]
async fn a_refused_head_of_the_destination_is_reported_and_never_taken_for_a_difference() {
    // Same sizes, other ETags: the worker must compare with the destination's recorded source
    // ETag (HeadObject, which needs s3:GetObject). A role without it is refused; the objects
    // are reported, not recopied over what is there.
    let w = World::new().await;
    create_bucket(&w.src, "src-nohead", SRC_REGION).await;
    let dst = w.dst("us-east-1");
    create_bucket(&dst, "dst-nohead", "us-east-1").await;
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    seed(
        &w.src,
        "src-nohead",
        keys.iter().map(|k| Obj::new(k, b"new")).collect(),
    )
    .await;
    seed(
        &dst,
        "dst-nohead",
        keys.iter().map(|k| Obj::new(k, b"old")).collect(),
    )
    .await;
    let job = w
        .job(
            "nohead",
            ("src-nohead", ""),
            ("dst-nohead", "", "us-east-1"),
            "",
            "",
        )
        .await;
    let mut policy = ferry::permissions::destination_role_policy(&job);
    for st in policy["Statement"].as_array_mut().unwrap() {
        if st["Sid"] == "WriteDestination" {
            st["Action"]
                .as_array_mut()
                .unwrap()
                .retain(|a| a != "s3:GetObject");
        }
    }
    crate::strict::role_with_policy(&w.emu, DST_ACCOUNT, "dst", &policy.to_string()).await;
    w.run_worker_ok("nohead", "r1", "t1", &[]).await;
    let s = w.store.run_summary("nohead", "r1").await.unwrap();
    assert_eq!(
        (s.progress.objects_copied, s.progress.objects_failed),
        (0, 5)
    );
    let failures = w.store.failures("nohead", "r1").await.unwrap();
    assert!(
        failures
            .iter()
            .all(|(_, why)| why.contains("AccessDenied") && why.contains("s3:GetObject")),
        "{failures:?}"
    );
    for k in &keys {
        let body = dst
            .get_object()
            .bucket("dst-nohead")
            .key(k)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(&body[..], b"old", "{k} was not overwritten");
    }
}

#[tokio::test]
async fn a_second_run_into_a_kms_encrypted_destination_copies_nothing() {
    // SSE-KMS objects have ETags that are not the MD5 of their data (the strict layer gives
    // them such ETags, as S3 does): without the source ETag recorded on each copy, every run
    // would copy everything again.
    let w = World::new().await;
    create_bucket(&w.src, "src-kms", SRC_REGION).await;
    let dst = w.dst("us-east-1");
    create_bucket(&dst, "dst-kms", "us-east-1").await;
    dst.put_bucket_encryption()
        .bucket("dst-kms")
        .server_side_encryption_configuration(
            aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                .rules(
                    aws_sdk_s3::types::ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                                .build()
                                .expect("default"),
                        )
                        .build(),
                )
                .build()
                .expect("config"),
        )
        .send()
        .await
        .expect("default encryption");
    seed(&w.src, "src-kms", bulk(20)).await;
    for i in 0..5 {
        w.src
            .put_object()
            .bucket("src-kms")
            .key(format!("kms-source/{i}"))
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .body(ByteStream::from(format!("encrypted {i}").into_bytes()))
            .send()
            .await
            .expect("put SSE-KMS source object");
    }
    w.job("kms", ("src-kms", ""), ("dst-kms", "", "us-east-1"), "", "")
        .await;
    assert_eq!(w.run_worker("kms", "r1", "t1", &[]).await, 0);
    let first = w.store.run_summary("kms", "r1").await.unwrap();
    assert_eq!(first.progress.objects_copied, 25);
    assert_eq!(w.run_worker("kms", "r2", "t2", &[]).await, 0);
    let second = w.store.run_summary("kms", "r2").await.unwrap();
    assert_eq!(
        (
            second.progress.objects_copied,
            second.progress.objects_skipped
        ),
        (0, 25),
        "{}",
        std::fs::read_to_string(w.log("t2")).unwrap()
    );
}

#[tokio::test]
async fn a_1024_byte_key_that_cannot_be_copied_is_reported_and_the_run_still_completes() {
    // The destination prefix makes the copy's key 1,027 bytes: S3 answers KeyTooLongError
    // (the strict layer enforces it). The failure record must still fit DynamoDB's 1,024-byte
    // sort key, and the report must be written.
    let w = World::new().await;
    create_bucket(&w.src, "src-longkey", SRC_REGION).await;
    let dst = w.dst("us-east-1");
    create_bucket(&dst, "dst-longkey", "us-east-1").await;
    create_bucket(&dst, "dst-longkey-reports", "us-east-1").await;
    let long = format!("long/{}", "k".repeat(1019));
    assert_eq!(long.len(), 1024);
    let mut objects = bulk(10);
    objects.push(Obj::new(&long, b"too long once prefixed"));
    seed(&w.src, "src-longkey", objects).await;
    w.job(
        "longkey",
        ("src-longkey", ""),
        ("dst-longkey", "new/", "us-east-1"),
        "reportUri: \"s3://dst-longkey-reports/ferry/\"",
        "",
    )
    .await;
    w.run_worker_ok("longkey", "r1", "tl", &[]).await;
    let s = w.store.run_summary("longkey", "r1").await.unwrap();
    assert!(s.complete());
    assert_eq!(
        (s.progress.objects_copied, s.progress.objects_failed),
        (10, 1)
    );
    let failures = w.store.failures("longkey", "r1").await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, long);
    assert!(failures[0].1.contains("KeyTooLongError"), "{failures:?}");
    let reports = listing(&dst, "dst-longkey-reports", "ferry/longkey/r1/").await;
    assert_eq!(reports.len(), 1, "one report object for the chunk");
    assert_eq!(w.emu.strict_rejections("s3-key-too-long"), 1);
}

#[tokio::test]
async fn archived_objects_are_reported_per_object_and_do_not_fail_the_run() {
    let w = World::new().await;
    create_bucket(&w.src, "src-arch", SRC_REGION).await;
    let dst = w.dst("us-east-1");
    create_bucket(&dst, "dst-arch", "us-east-1").await;
    // The report bucket is in another region than the destination: written with a client of
    // its own region (S3 answers other regions with 301).
    let reports_client = w.dst("eu-central-1");
    create_bucket(&reports_client, "dst-reports", "eu-central-1").await;
    let mut objects = bulk(30);
    for i in 0..3 {
        let mut o = Obj::new(&format!("cold/archived-{i}"), b"frozen");
        o.storage_class = Some("GLACIER");
        objects.push(o);
    }
    seed(&w.src, "src-arch", objects).await;
    w.job(
        "arch",
        ("src-arch", ""),
        ("dst-arch", "", "us-east-1"),
        "reportUri: \"s3://dst-reports/ferry/\"",
        "",
    )
    .await;
    w.run_worker_ok("arch", "r1", "ta", &[]).await;
    let s = w.store.run_summary("arch", "r1").await.unwrap();
    assert!(s.complete());
    assert_eq!(
        (s.progress.objects_copied, s.progress.objects_failed),
        (30, 3)
    );
    let mut failures = w.store.failures("arch", "r1").await.unwrap();
    failures.sort();
    let keys: Vec<&str> = failures.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["cold/archived-0", "cold/archived-1", "cold/archived-2"]
    );
    assert!(
        failures.iter().all(|(_, r)| r.contains("CopyObject")),
        "{failures:?}"
    );
    let reports = listing(&reports_client, "dst-reports", "ferry/arch/r1/").await;
    let mut lines = Vec::new();
    for key in reports.keys() {
        let body = reports_client
            .get_object()
            .bucket("dst-reports")
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap();
        for line in String::from_utf8(body.to_vec()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("report lines are JSON");
            lines.push(v["key"].as_str().unwrap().to_string());
        }
    }
    lines.sort();
    assert_eq!(lines, keys, "the report lists every failed object");
}

#[tokio::test]
async fn objects_changed_or_deleted_after_listing_are_copied_as_they_are_now() {
    use ferry::worker::copy::{Copied, Copier, Side};
    use ferry::worker::plan::Range;

    let w = World::new().await;
    create_bucket(&w.src, "src-aged", SRC_REGION).await;
    let dst = w.dst("us-east-1");
    create_bucket(&dst, "dst-aged", "us-east-1").await;
    seed(&w.src, "src-aged", bulk(20)).await;
    let job = w
        .job(
            "aged",
            ("src-aged", ""),
            ("dst-aged", "", "us-east-1"),
            "",
            "",
        )
        .await;
    // The copier a worker builds: the destination role's clients in both regions.
    let role = w
        .emu
        .role_config(&format!("arn:aws:iam::{DST_ACCOUNT}:role/dst"))
        .await;
    let copier = Copier {
        src: s3(&role, SRC_REGION),
        dst: s3(&role, "us-east-1"),
        report: s3(&role, "us-east-1"),
        spec: std::sync::Arc::new(job.spec.clone()),
        limiter: None,
        part_concurrency: 8,
        etags_diverge: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let all = Range {
        after: None,
        upto: None,
    };
    let (entries, more) = copier.list(Side::Source, &all, None).await.unwrap();
    assert_eq!((entries.len(), more), (20, false));

    // The source moves on after the listing: one object rewritten, one deleted.
    let (changed, deleted) = (entries[3].rel.clone(), entries[7].rel.clone());
    seed(
        &w.src,
        "src-aged",
        vec![Obj::new(&changed, b"rewritten after the listing")],
    )
    .await;
    w.src
        .delete_object()
        .bucket("src-aged")
        .key(&deleted)
        .send()
        .await
        .unwrap();

    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut failed = Vec::new();
    for entry in entries {
        match copier.copy_listed(entry, &stop).await.unwrap() {
            (_, Copied::Done { .. }) => {}
            (e, Copied::Failed(f)) => failed.push((e.rel, f.code, f.reason)),
            (e, other) => panic!("{}: {other:?}", e.rel),
        }
    }
    let (body, ..) = head_of(&dst, "dst-aged", &changed).await;
    assert_eq!(&body[..], b"rewritten after the listing");
    assert_eq!(
        listing(&dst, "dst-aged", "").await,
        listing(&w.src, "src-aged", "").await
    );
    // A deleted source answers CopyObject with 404 NoSuchKey (CopyObject API reference): a
    // failure of that object alone.
    let codes: Vec<(&str, &str)> = failed
        .iter()
        .map(|(k, code, _)| (k.as_str(), code.as_str()))
        .collect();
    assert_eq!(codes, vec![(deleted.as_str(), "NoSuchKey")], "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_credentials_are_refreshed_while_a_long_copy_goes_on() {
    let w = World::new().await;
    create_bucket(&w.src, "src-creds", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-creds", "us-east-1").await;
    seed(&w.src, "src-creds", bulk(300)).await;
    // 300 copies at 15 requests/s last about 20 s; sessions of 12 s must be renewed meanwhile.
    w.job(
        "creds",
        ("src-creds", ""),
        ("dst-creds", "", "us-east-1"),
        "",
        "maxRequestsPerSecond: 15",
    )
    .await;
    let started = std::time::Instant::now();
    let code = w
        .run_worker("creds", "r1", "tc", &[("FERRY_SESSION_SECONDS", "12")])
        .await;
    assert_eq!(code, 0, "{}", std::fs::read_to_string(w.log("tc")).unwrap());
    let elapsed = started.elapsed();
    assert!(
        elapsed > Duration::from_secs(15),
        "the copy outlived a session ({elapsed:?})"
    );
    let s = w.store.run_summary("creds", "r1").await.unwrap();
    let refreshes = s
        .tasks
        .iter()
        .map(|t| t.credential_refreshes)
        .max()
        .unwrap_or(0);
    assert!(
        refreshes >= 2,
        "AssumeRole happened again during the copy (calls: {refreshes})"
    );
    assert_eq!(s.progress.objects_copied, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_s3_slows_down_cuts_its_request_rate_and_still_copies_everything() {
    // The destination bucket grants 10 writes a second (a prefix S3 has not scaled up yet);
    // the job sets no maxRequestsPerSecond, so the task starts unpaced with 8 copies in flight.
    let w = World::new().await;
    create_bucket(&w.src, "src-slow", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-slow", "us-east-1").await;
    seed(&w.src, "src-slow", bulk(150)).await;
    w.emu
        .strict_s3_rates(serde_json::json!({"writesPerSecond": 10}));
    w.job(
        "slow",
        ("src-slow", ""),
        ("dst-slow", "", "us-east-1"),
        "",
        "",
    )
    .await;
    let code = w
        .run_worker(
            "slow",
            "r1",
            "ts",
            &[("FERRY_LOG", "info,ferry::worker::budget=debug")],
        )
        .await;
    let log = std::fs::read_to_string(w.log("ts")).unwrap();
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        listing(&w.dst("us-east-1"), "dst-slow", "").await,
        listing(&w.src, "src-slow", "").await
    );
    let s = w.store.run_summary("slow", "r1").await.unwrap();
    assert_eq!(s.progress.objects_failed, 0, "{log}");
    let field = |name: &str| -> u64 {
        let line = log
            .lines()
            .rfind(|l| l.contains("worker finished"))
            .unwrap_or_default();
        let at = line
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} in {line}"));
        line[at + name.len() + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    let refused = w.emu.strict_rejections("s3-prefix-request-rate");
    eprintln!(
        "{refused} SlowDowns, {} rate cuts, for 150 copies",
        field("rate_cuts")
    );
    assert!(refused > 0, "S3 refused some requests");
    // Unpaced, the task's refusals outnumbered its copies (142 for 150 before the budget);
    // paced, they stay fewer (36-82 measured; most of them the first burst of 64 copies in
    // flight against 10 tokens, before any answer came back). A chunk whose
    // object ran out of attempts is released and copied later; the run still completes.
    assert!(
        refused < 150,
        "fewer refusals than copies: {refused} SlowDowns for 150 copies\n{log}"
    );
    assert_eq!(field("slowdowns"), refused, "the task saw every SlowDown");
    assert!(field("rate_cuts") >= 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_claiming_releases_unfinished_work_and_exits_zero() {
    let w = World::new().await;
    create_bucket(&w.src, "src-term", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-term", "us-east-1").await;
    seed(&w.src, "src-term", bulk(1200)).await;
    w.job(
        "term",
        ("src-term", ""),
        ("dst-term", "", "us-east-1"),
        "",
        "maxRequestsPerSecond: 40",
    )
    .await;
    let mut env = w.emu.worker_env("term", "r1", "tt");
    env.push(("FERRY_SHUTDOWN_GRACE_SECONDS".into(), "2".into()));
    let log = w.log("tt");
    let mut child = spawn_ferry(&["worker"], &env, &log);
    let store = &w.store;
    eventually(
        "the worker to hold chunks",
        Duration::from_secs(60),
        || async {
            let chunks = store.open_chunks("term", "r1").await.ok()?;
            chunks
                .iter()
                .any(|c| c.owner.as_deref() == Some("tt"))
                .then_some(())
        },
    )
    .await;
    let sent = std::time::Instant::now();
    crate::support::signal_pid(child.id(), "TERM");
    let code = wait_child(&mut child, Duration::from_secs(30), &log).await;
    assert_eq!(code, 0, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(
        sent.elapsed() < Duration::from_secs(25),
        "stopped within Fargate's 30 s"
    );
    let held: Vec<_> = w
        .store
        .open_chunks("term", "r1")
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            c.owner.as_deref() == Some("tt") && c.state == ferry::store::runs::WorkState::Leased
        })
        .collect();
    assert!(
        held.is_empty(),
        "no chunk is left leased by the stopped task: {held:?}"
    );
    assert!(
        !w.store.run_summary("term", "r1").await.unwrap().complete(),
        "stopped before the end"
    );
    assert_eq!(w.run_worker("term", "r1", "tt2", &[]).await, 0);
    assert_eq!(
        listing(&w.dst("us-east-1"), "dst-term", "").await.len(),
        1200
    );
}

#[tokio::test]
async fn extraneous_objects_are_deleted_only_when_the_job_asks_and_the_storage_class_is_applied() {
    let w = World::new().await;
    create_bucket(&w.src, "src-sync", SRC_REGION).await;
    let dst = w.dst("us-east-1");
    create_bucket(&dst, "dst-sync", "us-east-1").await;
    seed(&w.src, "src-sync", bulk(20)).await;
    seed(
        &dst,
        "dst-sync",
        vec![Obj::new("m/stale", b"old"), Obj::new("d0/zz-stale", b"old")],
    )
    .await;
    let keep = w
        .job(
            "keep",
            ("src-sync", ""),
            ("dst-sync", "", "us-east-1"),
            "",
            "",
        )
        .await;
    assert!(!keep.spec.copy.delete_extraneous);
    // With FERRY_ASSUME_DESTINATION_ROLE=false the task copies with its own credentials.
    assert_eq!(
        w.run_worker(
            "keep",
            "r1",
            "k1",
            &[("FERRY_ASSUME_DESTINATION_ROLE", "false")]
        )
        .await,
        0
    );
    let own = w.store.run_summary("keep", "r1").await.unwrap();
    assert_eq!(
        own.tasks
            .iter()
            .map(|t| t.credential_refreshes)
            .sum::<u64>(),
        0,
        "no AssumeRole"
    );
    assert_eq!(
        listing(&dst, "dst-sync", "").await.len(),
        22,
        "without deleteExtraneous nothing is deleted"
    );

    let yaml = r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: { name: mirror }
spec:
  source: { account: "111111111111", region: eu-west-1, bucket: src-sync, roleArn: "arn:aws:iam::111111111111:role/src" }
  destination: { account: "222222222222", region: us-east-1, bucket: dst-sync, roleArn: "arn:aws:iam::222222222222:role/dst", storageClass: STANDARD_IA }
  copy: { deleteExtraneous: true, overwrite: Always }
"#;
    w.store
        .create_spec(&serde_saphyr::from_str(yaml).unwrap(), None)
        .await
        .unwrap();
    w.run_worker_ok("mirror", "r1", "m1", &[]).await;
    assert_eq!(
        listing(&dst, "dst-sync", "").await,
        listing(&w.src, "src-sync", "").await,
        "stale objects deleted"
    );
    let s = w.store.run_summary("mirror", "r1").await.unwrap();
    assert_eq!(
        (s.progress.objects_deleted, s.progress.objects_copied),
        (2, 20)
    );
    assert!(
        s.tasks.iter().all(|t| t.credential_refreshes >= 1),
        "the destination role was assumed"
    );
    let head = dst
        .head_object()
        .bucket("dst-sync")
        .key("d1/k-00001")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_destination_session_reaches_only_its_own_jobs_prefixes() {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let w = World::new().await;
    create_bucket(&w.src, "src-shared", SRC_REGION).await;
    create_bucket(&w.dst("us-east-1"), "dst-shared", "us-east-1").await;
    seed(
        &w.src,
        "src-shared",
        vec![Obj::new("a/1", b"a"), Obj::new("b/secret", b"b")],
    )
    .await;
    // Two jobs share the destination role; each puts its grant on the shared source bucket.
    let a = w
        .job(
            "job-a",
            ("src-shared", "a/"),
            ("dst-shared", "a/", "us-east-1"),
            "",
            "",
        )
        .await;
    w.job(
        "job-b",
        ("src-shared", "b/"),
        ("dst-shared", "b/", "us-east-1"),
        "",
        "",
    )
    .await;
    w.run_worker_ok("job-a", "g1r1", "t1", &[]).await;

    let sessions = w.emu.strict_sessions();
    let (arn, policy) = sessions
        .iter()
        .find(|(arn, _)| arn.contains(":assumed-role/dst/ferry-job-a-"))
        .unwrap_or_else(|| panic!("job-a's worker session: {sessions:?}"));
    assert_eq!(
        policy.as_str(),
        Some(ferry::permissions::session_policy(&a).as_str()),
        "{arn} was assumed with job-a's session policy"
    );
    // With that session policy the role reads job-a's prefix, never job-b's, although job-b's
    // grant lets the role itself read it.
    let role = "arn:aws:iam::222222222222:role/dst";
    let narrowed = s3(
        &w.emu.session_config(role, policy.as_str()).await,
        SRC_REGION,
    );
    let whole = s3(&w.emu.role_config(role).await, SRC_REGION);
    let get = |c: &Client, k: &'static str| {
        let c = c.clone();
        async move { c.get_object().bucket("src-shared").key(k).send().await }
    };
    get(&narrowed, "a/1").await.expect("its own prefix");
    let err = get(&narrowed, "b/secret")
        .await
        .expect_err("another job's prefix");
    assert_eq!(err.code(), Some("AccessDenied"));
    get(&whole, "b/secret")
        .await
        .expect("the role itself may read it");
}
