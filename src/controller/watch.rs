//! Change events from the table's DynamoDB stream, mapped to the job they concern. A spec change
//! or deletion request triggers the job at once; a worker's progress write (run items) triggers
//! it after a short delay, so a busy run is reconciled at most every few seconds however many
//! chunks finish. The operator's own status writes and the lease are ignored.

use std::collections::HashMap;
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

/// Follows every shard of the stream from now on and sends events until the receiver is gone.
pub async fn follow(
    client: Client,
    stream_arn: String,
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
    poll: Duration,
) {
    // Shard id -> iterator; shards seen at start begin at LATEST, later ones at TRIM_HORIZON.
    let mut iterators: HashMap<String, Option<String>> = HashMap::new();
    let mut first = true;
    let mut last_describe = tokio::time::Instant::now() - Duration::from_secs(3600);
    loop {
        if tx.is_closed() {
            return;
        }
        if last_describe.elapsed() >= Duration::from_secs(10) || iterators.is_empty() {
            last_describe = tokio::time::Instant::now();
            match client
                .describe_stream()
                .stream_arn(&stream_arn)
                .send()
                .await
            {
                Ok(out) => {
                    let shards = out
                        .stream_description()
                        .map(|d| d.shards().to_vec())
                        .unwrap_or_default();
                    for shard in shards {
                        let Some(id) = shard.shard_id() else { continue };
                        if iterators.contains_key(id) {
                            continue;
                        }
                        let kind = if first {
                            ShardIteratorType::Latest
                        } else {
                            ShardIteratorType::TrimHorizon
                        };
                        let it = client
                            .get_shard_iterator()
                            .stream_arn(&stream_arn)
                            .shard_id(id)
                            .shard_iterator_type(kind)
                            .send()
                            .await
                            .ok()
                            .and_then(|o| o.shard_iterator().map(str::to_string));
                        iterators.insert(id.to_string(), it);
                    }
                    first = false;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::aws::describe(&e), "cannot describe the table's stream; relying on resyncs");
                }
            }
        }
        let ids: Vec<String> = iterators.keys().cloned().collect();
        for id in ids {
            let Some(Some(it)) = iterators.get(&id).cloned() else {
                continue;
            };
            match client.get_records().shard_iterator(&it).send().await {
                Ok(out) => {
                    for record in out.records() {
                        let Some(keys) = record.dynamodb().and_then(|d| d.keys()) else {
                            continue;
                        };
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
                    iterators.insert(id, out.next_shard_iterator().map(str::to_string));
                }
                Err(e) => {
                    tracing::debug!(shard = %id, error = %crate::aws::describe(&e), "stream read failed; re-opening the shard");
                    iterators.remove(&id);
                }
            }
        }
        // Closed shards (no next iterator) are dropped; their children appear on describe.
        iterators.retain(|_, it| it.is_some());
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
}
