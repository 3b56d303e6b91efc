//! Run history: which finished runs' items to expire when a new run starts. A job keeps the
//! items of its current run and of its `run.historyLimit` most recent earlier runs (CronJob's
//! `successfulJobsHistoryLimit`); older runs get a DynamoDB TTL attribute (`expiresAt`, now),
//! and DynamoDB deletes them in the background at no write cost. Pure.
//!
//! DynamoDB TTL (Developer Guide, "Using time to live (TTL) in DynamoDB",
//! https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/TTL.html): the attribute
//! holds a Number in Unix epoch seconds; expired items are deleted "within a few days" and may
//! be read until then, so readers skip runs whose `expiresAt` has passed.

use crate::store::runs::RunRecord;

/// The runs to expire: every run but `current` and the `keep` most recent others, that is not
/// expiring already. Newest first by creation time (the run id breaks ties).
pub fn to_expire(records: &[RunRecord], current: &str, keep: usize) -> Vec<String> {
    let mut earlier: Vec<&RunRecord> = records.iter().filter(|r| r.run != current).collect();
    earlier.sort_by(|a, b| (&b.created_at, &b.run).cmp(&(&a.created_at, &a.run)));
    earlier
        .into_iter()
        .skip(keep)
        .filter(|r| r.expires_at.is_none())
        .map(|r| r.run.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(run: &str, created: &str, expiring: bool) -> RunRecord {
        RunRecord {
            run: run.into(),
            created_at: created.into(),
            expires_at: expiring.then_some(1),
        }
    }

    #[test]
    fn older_runs_beyond_the_limit_expire_and_the_current_run_never_does() {
        let runs = [
            rec("u-g1r1", "2026-01-01T00:00:00Z", false),
            rec("u-g1r2", "2026-01-02T00:00:00Z", false),
            rec("u-g2r1", "2026-01-03T00:00:00Z", false),
            rec("u-g2r2", "2026-01-04T00:00:00Z", false),
        ];
        // (keep, current, expired wanted)
        let cases: [(usize, &str, &[&str]); 5] = [
            (3, "u-g2r2", &[]),
            (2, "u-g2r2", &["u-g1r1"]),
            (0, "u-g2r2", &["u-g2r1", "u-g1r2", "u-g1r1"]),
            (1, "u-g1r1", &["u-g2r1", "u-g1r2"]),
            (10, "u-g2r2", &[]),
        ];
        for (keep, current, wanted) in cases {
            assert_eq!(
                to_expire(&runs, current, keep),
                wanted,
                "keep {keep}, current {current}"
            );
        }
        let stamped = [
            rec("u-g1r1", "2026-01-01T00:00:00Z", true),
            rec("u-g1r2", "2026-01-02T00:00:00Z", false),
        ];
        assert!(
            to_expire(&stamped, "u-g1r2", 0).is_empty(),
            "a run already expiring is not stamped again"
        );
    }
}
