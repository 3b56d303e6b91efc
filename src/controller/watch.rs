//! Change events from the table's DynamoDB stream, mapped to the job they concern. A spec change
//! or deletion request triggers the job at once; a worker's progress write (run items) triggers
//! it after a short delay, so a busy run is reconciled at most every few seconds however many
//! chunks finish. The operator's own status writes and the lease are ignored.

use std::time::Duration;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;

/// What a stream record means for the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Reconcile this job after this delay.
    Job(String, Duration),
}

/// Delay after a progress write before the job's status is refreshed.
pub const PROGRESS_DELAY: Duration = Duration::from_secs(2);

/// Maps an item's key to an event. Pure.
pub fn event_for(pk: &str, sk: &str) -> Option<Event> {
    if let Some(job) = pk.strip_prefix("JOB#") {
        return match sk {
            "SPEC" => Some(Event::Job(job.to_string(), Duration::ZERO)),
            _ => None,
        };
    }
    if let Some(rest) = pk.strip_prefix("RUN#") {
        let job = rest.split('#').next()?;
        if sk == "META" {
            return None;
        }
        return Some(Event::Job(job.to_string(), PROGRESS_DELAY));
    }
    None
}

/// Where reading a shard starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A shard open when the operator started: only what comes next (the resync covers the
    /// past).
    Latest,
    /// A shard that appeared later: all of it.
    TrimHorizon,
    /// Re-opened after an expired iterator or a failed read: after the last record delivered.
    After(String),
}

/// What is known of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shard {
    parent: Option<String>,
    /// The next iterator; `None`: open one from `start`.
    iterator: Option<String>,
    start: Start,
    /// The sequence number of the last record delivered.
    last: Option<String>,
    /// Read to its end (closed): never read again.
    finished: bool,
}

/// Every shard of the stream and how far each was read: plain data, decisions without I/O.
///
/// - A shard is read once: a closed shard read to its end is remembered as finished for as long
///   as DescribeStream lists it (24 h), not re-discovered and replayed.
/// - A child is read only after its parent is finished (or no longer listed), so one item's
///   records arrive in order across a split.
/// - A shard whose iterator expired or failed is re-opened after the last record delivered.
#[derive(Debug, Default)]
pub struct Shards {
    known: std::collections::BTreeMap<String, Shard>,
    started: bool,
}

impl Shards {
    /// Takes in one complete DescribeStream listing (every page): new shards are added (from
    /// LATEST on the first listing if open, skipped if already closed then; from TRIM_HORIZON
    /// later), shards no longer listed are forgotten.
    pub fn listed(&mut self, shards: &[(String, Option<String>, bool)]) {
        let first = !self.started;
        self.started = true;
        let ids: std::collections::BTreeSet<&String> = shards.iter().map(|(id, _, _)| id).collect();
        self.known.retain(|id, _| ids.contains(id));
        for (id, parent, closed) in shards {
            self.known.entry(id.clone()).or_insert_with(|| Shard {
                parent: parent.clone(),
                iterator: None,
                start: if first {
                    Start::Latest
                } else {
                    Start::TrimHorizon
                },
                last: None,
                // History from before the operator started is the resync's.
                finished: first && *closed,
            });
        }
    }

    /// The shards to read now: not finished, and their parent finished or gone.
    pub fn readable(&self) -> Vec<String> {
        self.known
            .iter()
            .filter(|(_, s)| !s.finished)
            .filter(|(_, s)| {
                s.parent
                    .as_ref()
                    .and_then(|p| self.known.get(p))
                    .is_none_or(|p| p.finished)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The iterator to read `id` with, or where to open one.
    pub fn position(&self, id: &str) -> Result<String, Start> {
        match self.known.get(id) {
            Some(Shard {
                iterator: Some(it), ..
            }) => Ok(it.clone()),
            Some(s) => Err(s.start.clone()),
            None => Err(Start::TrimHorizon),
        }
    }

    /// An iterator was opened for `id`.
    pub fn opened(&mut self, id: &str, iterator: String) {
        if let Some(s) = self.known.get_mut(id) {
            s.iterator = Some(iterator);
        }
    }

    /// A read of `id` returned records up to `last` (if any) and the next iterator (`None`: the
    /// shard is closed and read to its end).
    pub fn read(&mut self, id: &str, last: Option<String>, next: Option<String>) {
        if let Some(s) = self.known.get_mut(id) {
            if last.is_some() {
                s.last = last;
            }
            s.finished = next.is_none();
            s.iterator = next;
        }
    }

    /// The iterator of `id` expired or failed: re-open it after the last record delivered (or
    /// where it started, if nothing was).
    pub fn lost(&mut self, id: &str) {
        if let Some(s) = self.known.get_mut(id) {
            s.iterator = None;
            if let Some(seq) = &s.last {
                s.start = Start::After(seq.clone());
            }
        }
    }
}

/// How often the stream's shard list is read again (shards roll over every few hours).
pub const DESCRIBE_EVERY: Duration = Duration::from_secs(10);

/// Every shard of the stream, all pages of DescribeStream.
async fn describe(
    client: &Client,
    stream_arn: &str,
) -> Result<Vec<(String, Option<String>, bool)>, String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(after.take())
            .send()
            .await
            .map_err(|e| crate::aws::describe(&e))?;
        let Some(d) = page.stream_description() else {
            break;
        };
        for shard in d.shards() {
            let Some(id) = shard.shard_id() else { continue };
            let closed = shard
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_some());
            out.push((
                id.to_string(),
                shard.parent_shard_id().map(str::to_string),
                closed,
            ));
        }
        match d.last_evaluated_shard_id() {
            Some(last) => after = Some(last.to_string()),
            None => break,
        }
    }
    Ok(out)
}

/// Follows every shard of the stream from now on and sends events until the receiver is gone.
/// Reads each shard every `poll`; lists the shards every `describe_every`.
pub async fn follow(
    client: Client,
    stream_arn: String,
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
    poll: Duration,
    describe_every: Duration,
) {
    let mut shards = Shards::default();
    let mut last_describe: Option<tokio::time::Instant> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        if last_describe.is_none_or(|t| t.elapsed() >= describe_every) {
            match describe(&client, &stream_arn).await {
                Ok(list) => {
                    shards.listed(&list);
                    last_describe = Some(tokio::time::Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot describe the table's stream; relying on resyncs");
                    last_describe = Some(tokio::time::Instant::now());
                }
            }
        }
        for id in shards.readable() {
            let iterator = match shards.position(&id) {
                Ok(it) => it,
                Err(start) => {
                    let (kind, seq) = match start {
                        Start::Latest => (ShardIteratorType::Latest, None),
                        Start::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
                        Start::After(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq)),
                    };
                    let opened = client
                        .get_shard_iterator()
                        .stream_arn(&stream_arn)
                        .shard_id(&id)
                        .shard_iterator_type(kind)
                        .set_sequence_number(seq)
                        .send()
                        .await;
                    match opened {
                        Ok(o) => match o.shard_iterator() {
                            Some(it) => {
                                shards.opened(&id, it.to_string());
                                it.to_string()
                            }
                            // No iterator: the shard has nothing more to give.
                            None => {
                                shards.read(&id, None, None);
                                continue;
                            }
                        },
                        Err(e) => {
                            tracing::debug!(shard = %id, error = %crate::aws::describe(&e), "cannot open the shard; trying again");
                            continue;
                        }
                    }
                }
            };
            match client.get_records().shard_iterator(&iterator).send().await {
                Ok(out) => {
                    let mut last = None;
                    for record in out.records() {
                        let Some(d) = record.dynamodb() else { continue };
                        last = d.sequence_number().map(str::to_string).or(last);
                        let Some(keys) = d.keys() else { continue };
                        let get = |k: &str| {
                            keys.get(k)
                                .and_then(|v| v.as_s().ok())
                                .cloned()
                                .unwrap_or_default()
                        };
                        if let Some(ev) = event_for(&get("pk"), &get("sk")) {
                            let _ = tx.send(ev);
                        }
                    }
                    shards.read(&id, last, out.next_shard_iterator().map(str::to_string));
                }
                Err(e) => {
                    let expired = e
                        .as_service_error()
                        .is_some_and(|s| s.is_expired_iterator_exception());
                    if expired {
                        tracing::debug!(shard = %id, "shard iterator expired; re-opening after the last record read");
                    } else {
                        tracing::debug!(shard = %id, error = %crate::aws::describe(&e), "stream read failed; re-opening the shard");
                    }
                    shards.lost(&id);
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_map_to_jobs_and_the_operators_own_writes_are_ignored() {
        let cases = [
            (
                "JOB#logs",
                "SPEC",
                Some(Event::Job("logs".into(), Duration::ZERO)),
            ),
            ("JOB#logs", "STATUS", None),
            (
                "RUN#logs#g1r1",
                "CHUNK#0001#00000002",
                Some(Event::Job("logs".into(), PROGRESS_DELAY)),
            ),
            (
                "RUN#logs#g1r1",
                "TASK#s0a1",
                Some(Event::Job("logs".into(), PROGRESS_DELAY)),
            ),
            ("RUN#logs#g1r1", "META", None),
            ("LEASE#operator", "LEASE", None),
        ];
        for (pk, sk, want) in cases {
            assert_eq!(event_for(pk, sk), want, "{pk} {sk}");
        }
    }

    fn listing(shards: &[(&str, Option<&str>, bool)]) -> Vec<(String, Option<String>, bool)> {
        shards
            .iter()
            .map(|(id, p, c)| (id.to_string(), p.map(str::to_string), *c))
            .collect()
    }

    #[test]
    fn shards_are_read_once_parents_before_children_and_reopened_after_the_last_record() {
        let mut s = Shards::default();
        // At start: an old closed shard (history: skipped) and an open one (from LATEST).
        s.listed(&listing(&[("old", None, true), ("p", Some("old"), false)]));
        assert_eq!(s.readable(), ["p"]);
        assert_eq!(s.position("p"), Err(Start::Latest));
        s.opened("p", "it-1".into());
        s.read("p", Some("7".into()), Some("it-2".into()));
        assert_eq!(s.position("p"), Ok("it-2".into()));
        // The iterator expires: re-open after record 7.
        s.lost("p");
        assert_eq!(s.position("p"), Err(Start::After("7".into())));
        // p splits: its child waits until p is read to its end.
        s.listed(&listing(&[
            ("old", None, true),
            ("p", Some("old"), true),
            ("c", Some("p"), false),
        ]));
        assert_eq!(s.readable(), ["p"]);
        s.opened("p", "it-3".into());
        s.read("p", Some("9".into()), None);
        assert_eq!(s.readable(), ["c"]);
        assert_eq!(s.position("c"), Err(Start::TrimHorizon));
        // Listed again and again while AWS keeps them (24 h): p is not read again.
        for _ in 0..3 {
            s.listed(&listing(&[
                ("old", None, true),
                ("p", Some("old"), true),
                ("c", Some("p"), false),
            ]));
            assert_eq!(s.readable(), ["c"]);
        }
        // Trimmed parents are forgotten; a child whose parent is gone is readable.
        s.listed(&listing(&[("c", Some("p"), false)]));
        assert_eq!(s.readable(), ["c"]);
    }

    /// A DynamoDB Streams endpoint that serves a scripted stream over HTTP, so `follow` runs
    /// against the real SDK client: one shard per DescribeStream page, two records per
    /// GetRecords, and expired iterators on demand.
    mod fake {
        use std::sync::{Arc, Mutex};

        use axum::http::{HeaderMap, StatusCode};
        use serde_json::{Value, json};

        #[derive(Default)]
        pub struct Shard {
            pub id: String,
            pub parent: Option<String>,
            /// (sequence number, job name)
            pub records: Vec<(u64, String)>,
            pub closed: bool,
        }

        #[derive(Default)]
        pub struct Stream {
            pub shards: Vec<Shard>,
            pub describes: usize,
            pub opened: usize,
            /// Answer this many GetRecords with ExpiredIteratorException.
            pub expire: usize,
        }

        pub type Shared = Arc<Mutex<Stream>>;

        fn answer(body: Value) -> (StatusCode, [(&'static str, &'static str); 1], String) {
            (
                StatusCode::OK,
                [("content-type", "application/x-amz-json-1.0")],
                body.to_string(),
            )
        }

        pub async fn handle(
            state: axum::extract::State<Shared>,
            headers: HeaderMap,
            body: String,
        ) -> (StatusCode, [(&'static str, &'static str); 1], String) {
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string();
            let req: Value = serde_json::from_str(&body).unwrap_or_default();
            let mut st = state.lock().unwrap();
            match target.as_str() {
                "DescribeStream" => {
                    st.describes += 1;
                    let start = req["ExclusiveStartShardId"].as_str();
                    let i = start.map_or(0, |id| {
                        st.shards
                            .iter()
                            .position(|s| s.id == id)
                            .map_or(0, |i| i + 1)
                    });
                    let page: Vec<Value> = st.shards[i..]
                        .iter()
                        .take(1)
                        .map(|s| {
                            let mut range = json!({"StartingSequenceNumber": "1"});
                            if s.closed {
                                range["EndingSequenceNumber"] = json!("999");
                            }
                            let mut v = json!({"ShardId": s.id, "SequenceNumberRange": range});
                            if let Some(p) = &s.parent {
                                v["ParentShardId"] = json!(p);
                            }
                            v
                        })
                        .collect();
                    let mut d = json!({"StreamArn": "arn:stream", "StreamStatus": "ENABLED", "Shards": page});
                    if i + 1 < st.shards.len() {
                        d["LastEvaluatedShardId"] = json!(st.shards[i].id);
                    }
                    answer(json!({"StreamDescription": d}))
                }
                "GetShardIterator" => {
                    st.opened += 1;
                    let id = req["ShardId"].as_str().unwrap_or_default();
                    let shard = st.shards.iter().find(|s| s.id == id).expect("shard");
                    let pos = match req["ShardIteratorType"].as_str() {
                        Some("LATEST") => shard.records.len(),
                        Some("AFTER_SEQUENCE_NUMBER") => {
                            let seq: u64 = req["SequenceNumber"]
                                .as_str()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            shard.records.iter().filter(|(n, _)| *n <= seq).count()
                        }
                        _ => 0,
                    };
                    answer(json!({"ShardIterator": format!("{id}/{pos}")}))
                }
                "GetRecords" => {
                    if st.expire > 0 {
                        st.expire -= 1;
                        return (
                            StatusCode::BAD_REQUEST,
                            [("content-type", "application/x-amz-json-1.0")],
                            json!({"__type": "com.amazonaws.dynamodb.v20120810#ExpiredIteratorException", "message": "Iterator expired"}).to_string(),
                        );
                    }
                    let it = req["ShardIterator"].as_str().unwrap_or_default();
                    let (id, pos) = it.split_once('/').expect("iterator");
                    let pos: usize = pos.parse().expect("position");
                    let shard = st.shards.iter().find(|s| s.id == id).expect("shard");
                    let end = (pos + 2).min(shard.records.len());
                    let records: Vec<Value> = shard.records[pos..end]
                        .iter()
                        .map(|(n, job)| {
                            json!({"eventID": n.to_string(), "eventName": "MODIFY", "dynamodb": {
                                "Keys": {"pk": {"S": format!("JOB#{job}")}, "sk": {"S": "SPEC"}},
                                "SequenceNumber": n.to_string(), "SizeBytes": 10,
                                "StreamViewType": "KEYS_ONLY"}})
                        })
                        .collect();
                    let mut out = json!({"Records": records});
                    if !(shard.closed && end == shard.records.len()) {
                        out["NextShardIterator"] = json!(format!("{id}/{end}"));
                    }
                    answer(out)
                }
                other => panic!("unexpected {other}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn following_a_stream_across_a_split_and_an_expired_iterator_delivers_each_record_once() {
        use std::sync::{Arc, Mutex};
        let stream: fake::Shared = Arc::new(Mutex::new(fake::Stream::default()));
        {
            let mut st = stream.lock().unwrap();
            // History from before the operator started, in a shard closed long ago and in the
            // open one: not delivered (the resync covers it).
            st.shards.push(fake::Shard {
                id: "s0".into(),
                records: vec![(1, "ancient".into())],
                closed: true,
                ..Default::default()
            });
            st.shards.push(fake::Shard {
                id: "s1".into(),
                parent: Some("s0".into()),
                records: vec![(2, "old".into())],
                ..Default::default()
            });
        }
        let app = axum::Router::new()
            .route("/", axum::routing::post(fake::handle))
            .with_state(Arc::clone(&stream));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let conf = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(aws_credential_types::Credentials::new(
                "k", "s", None, None, "test",
            ))
            .build();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(follow(
            Client::from_conf(conf),
            "arn:stream".into(),
            tx,
            Duration::from_millis(10),
            Duration::from_millis(50),
        ));
        let until = async |what: &str, f: &dyn Fn(&fake::Stream) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !f(&stream.lock().unwrap()) {
                assert!(std::time::Instant::now() < deadline, "waiting for {what}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let mut got: Vec<String> = Vec::new();
        let mut receive = async |n: usize| {
            while got.len() < n {
                match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                    Ok(Some(Event::Job(job, _))) => got.push(job),
                    other => panic!("after {got:?}: {other:?}"),
                }
            }
            got.clone()
        };
        until("s1 to be opened", &|st| st.opened >= 1).await;
        stream.lock().unwrap().shards[1].records.extend([
            (3, "a".into()),
            (4, "b".into()),
            (5, "c".into()),
        ]);
        assert_eq!(receive(3).await, ["a", "b", "c"]);
        // The iterator expires: the shard is re-opened after record 5, not replayed.
        {
            let mut st = stream.lock().unwrap();
            st.expire = 1;
            st.shards[1].records.push((6, "d".into()));
        }
        assert_eq!(receive(4).await, ["a", "b", "c", "d"]);
        // s1 splits: its last record and its child's first arrive together; DescribeStream
        // lists the child on its third page.
        {
            let mut st = stream.lock().unwrap();
            st.shards[1].records.push((7, "e".into()));
            st.shards[1].closed = true;
            st.shards.push(fake::Shard {
                id: "s2".into(),
                parent: Some("s1".into()),
                records: vec![(8, "f".into())],
                ..Default::default()
            });
        }
        assert_eq!(receive(6).await, ["a", "b", "c", "d", "e", "f"]);
        // Three more listings of the closed parent and its child: nothing is replayed.
        let seen = stream.lock().unwrap().describes;
        until("three more describe cycles", &|st| st.describes >= seen + 9).await;
        stream.lock().unwrap().shards[2]
            .records
            .push((9, "g".into()));
        assert_eq!(receive(7).await, ["a", "b", "c", "d", "e", "f", "g"]);
        assert!(rx.try_recv().is_err(), "nothing delivered twice");
    }
}
