//! The leader election's decisions, pure and with time passed in, and the fence that keeps a
//! replica that lost (or may have lost) its lease from changing anything.
//!
//! The rules, after client-go's `leaderelection`:
//! - **Nobody compares clocks.** The lease record carries a `version` that changes on every
//!   renewal. A standby takes over only after it has seen the *same* record (holder and
//!   version) for a full lease duration on its own monotonic clock ([`judge`]). A leader whose
//!   clock runs ahead or behind cannot be deposed early, and a standby's clock cannot make it
//!   take over early.
//! - **A leader fences itself.** It counts its lease from the moment it *sent* the renewal that
//!   succeeded: valid until `sent + ttl − margin` on its monotonic clock ([`Fence`]). A standby
//!   starts counting no earlier than the write it saw, so the leader's validity ends before any
//!   standby can take over, by `margin` at least. Every mutating step and every mutating AWS
//!   request asks the fence first; a process frozen (SIGSTOP, a VM pause, a long GC-like stall)
//!   wakes up with an expired fence and sends nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The lease record as a replica reads it: who holds it and which renewal this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: String,
    pub version: String,
}

/// A record a standby has been watching, and since when (on its own clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub record: Record,
    pub since: Instant,
}

/// What a replica that does not lead should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Write the lease for itself: nobody holds it (`seen: None`), it holds it already, or the
    /// holder stopped renewing (`seen`: the version that must still be there).
    Take { seen: Option<String> },
    /// Someone else renews it, or has not been silent for a full lease yet.
    Wait,
}

/// Decides whether a replica named `me` may claim the lease, given the record it just read
/// and what it saw before. Updates `last`.
pub fn judge(
    me: &str,
    current: Option<&Record>,
    last: &mut Option<Sighting>,
    now: Instant,
    ttl: Duration,
) -> Claim {
    let Some(record) = current else {
        *last = None;
        return Claim::Take { seen: None };
    };
    if record.holder == me {
        // Ours (a restart under the same replica id): renew it.
        *last = None;
        return Claim::Take { seen: None };
    }
    match last {
        Some(s) if s.record == *record => {
            if now.saturating_duration_since(s.since) >= ttl {
                Claim::Take {
                    seen: Some(record.version.clone()),
                }
            } else {
                Claim::Wait
            }
        }
        _ => {
            *last = Some(Sighting {
                record: record.clone(),
                since: now,
            });
            Claim::Wait
        }
    }
}

/// How much of a lease a leader gives up, to cover requests in flight and clock-rate drift:
/// a fifth of it, at least 500 ms (less if the lease is shorter than 1 s).
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(500)).min(ttl / 2)
}

/// Until when (monotonic) this replica may change things. Shared by the runtime, which grants
/// and revokes it, and by every AWS client and apply step, which ask it.
#[derive(Debug)]
pub struct Fence {
    origin: Instant,
    /// Nanoseconds after `origin`; 0: not leading.
    valid_until: AtomicU64,
}

impl Default for Fence {
    fn default() -> Self {
        Fence {
            origin: Instant::now(),
            valid_until: AtomicU64::new(0),
        }
    }
}

impl Fence {
    /// A renewal sent at `sent` succeeded: valid until `sent + ttl − margin`.
    pub fn grant(&self, sent: Instant, ttl: Duration) {
        let until = (sent + ttl).checked_sub(margin(ttl)).unwrap_or(sent);
        let nanos = until.saturating_duration_since(self.origin).as_nanos();
        self.valid_until.store(
            u64::try_from(nanos).unwrap_or(u64::MAX).max(1),
            Ordering::SeqCst,
        );
    }

    /// The lease is lost or given up.
    pub fn revoke(&self) {
        self.valid_until.store(0, Ordering::SeqCst);
    }

    /// Whether this replica may change things at `now`.
    pub fn valid_at(&self, now: Instant) -> bool {
        let until = self.valid_until.load(Ordering::SeqCst);
        until != 0
            && u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
                .unwrap_or(u64::MAX)
                < until
    }

    pub fn valid(&self) -> bool {
        self.valid_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, version: &str) -> Record {
        Record {
            holder: holder.into(),
            version: version.into(),
        }
    }

    #[test]
    fn a_standby_takes_over_only_after_seeing_the_same_record_for_a_full_lease() {
        let ttl = Duration::from_secs(15);
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let take = |v: &str| Claim::Take {
            seen: Some(v.into()),
        };
        // (time, record read, expected decision)
        let cases: Vec<(Instant, Option<Record>, Claim)> = vec![
            (s(0), Some(rec("a", "1")), Claim::Wait),
            // The leader renews: the clock starts over.
            (s(10), Some(rec("a", "2")), Claim::Wait),
            (s(20), Some(rec("a", "2")), Claim::Wait),
            // 15 s of the same record: take it, on condition that it is still version 2.
            (s(25), Some(rec("a", "2")), take("2")),
            // Another standby was faster: a new holder, a new clock.
            (s(26), Some(rec("c", "9")), Claim::Wait),
            (s(40), Some(rec("c", "9")), Claim::Wait),
            (s(41), Some(rec("c", "9")), take("9")),
            // Released (deleted): take at once.
            (s(42), None, Claim::Take { seen: None }),
            // Our own record (restarted under the same id): renew at once.
            (s(43), Some(rec("me", "5")), Claim::Take { seen: None }),
        ];
        let mut last = None;
        for (i, (now, record, want)) in cases.into_iter().enumerate() {
            let got = judge("me", record.as_ref(), &mut last, now, ttl);
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn a_fence_holds_from_the_renewals_send_time_for_the_lease_less_the_margin() {
        let ttl = Duration::from_secs(15);
        let f = Fence::default();
        let sent = Instant::now();
        assert!(!f.valid_at(sent), "not leading yet");
        f.grant(sent, ttl);
        let cases = [
            (Duration::ZERO, true),
            (Duration::from_secs(11), true),
            // 15 s − 3 s of margin.
            (Duration::from_millis(11_999), true),
            (Duration::from_secs(12), false),
            (Duration::from_secs(60), false),
        ];
        for (after, want) in cases {
            assert_eq!(f.valid_at(sent + after), want, "{after:?} after the send");
        }
        f.revoke();
        assert!(!f.valid_at(sent));
    }

    #[test]
    fn the_margin_is_a_fifth_of_the_lease_at_least_half_a_second() {
        let cases = [(15_000, 3_000), (3_000, 600), (2_000, 500), (600, 300)];
        for (ttl, want) in cases {
            assert_eq!(
                margin(Duration::from_millis(ttl)),
                Duration::from_millis(want),
                "ttl {ttl} ms"
            );
        }
    }
}
