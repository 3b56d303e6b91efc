//! A task's S3 request budget: its share of the job's `run.maxRequestsPerSecond`, cut
//! multiplicatively when S3 answers SlowDown (503) and raised back additively (AIMD), and the
//! pacer every S3 request of the task waits on.
//!
//! [`Aimd`] is plain data with time passed in (milliseconds), so its rules are table-tested;
//! [`RateLimiter`] is the thin async shell that the copier awaits and that the S3 clients'
//! [`crate::aws::PaceThrottled`] interceptor feeds.
//!
//! Rules:
//! - The ceiling is `maxRequestsPerSecond / parallelism` (rounded up): the job's budget is
//!   shared by its tasks. Without `maxRequestsPerSecond` there is no ceiling and no pacing until
//!   S3 first answers SlowDown.
//! - A SlowDown cuts the rate to [`DECREASE`] × the rate in use: the lower of the allowed rate
//!   and what S3 accepted from the task in the last second (answers other than 503). Cutting
//!   from what S3 accepted finds the grant in one step, however far above it an unpaced task
//!   started.
//! - Refusals that are under [`NOISE_SHARE`] of the answers of this second and the last do not
//!   cut: S3 answers a rate above its grant with a growing share of refusals, while a few 503s
//!   at any rate (a partition moving, a server restarting) are retried and otherwise ignored.
//!   Cutting on every one would drive the rate to the floor under a steady trickle of them.
//! - Refusals of requests sent before a cut say nothing about the new rate: after a cut, no
//!   other cut comes until the requests already given send slots at the old rate have gone out,
//!   and then [`COOLDOWN_MS`] more for their answers.
//! - After a cut the rate climbs linearly, by 1/[`RECOVERY_STEPS`] of the ceiling (of the rate
//!   before the cut, without a ceiling) per second, back to the ceiling (without one, for as long
//!   as S3 accepts: a pace far above what the task can send costs nothing). It climbs by at least
//!   [`FLOOR`] per second, so a cut made from the few answers of a cold start is soon undone.
//! - The rate never drops below [`FLOOR`] requests per second.
//!
//! The SDK's own adaptive retry mode would be a second controller fighting this one, so the
//! worker's S3 clients use the standard retry mode (their one retry layer), and its retries of
//! a SlowDown wait for a slot of this pacer ([`crate::aws::PaceThrottled`]): a retry is a
//! request like any other.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Factor applied on SlowDown to the rate S3 accepted. Not TCP's 0.5 or CUBIC's 0.7: those cut
/// the rate sent, which may be far above the grant; this cuts the rate measured under the grant.
pub const DECREASE: f64 = 0.9;
/// After a cut, no other until the slots taken at the old rate have passed and this many
/// milliseconds more (time for their answers).
pub const COOLDOWN_MS: u64 = 1_000;
/// Seconds of additive increase to climb from zero back to the ceiling.
pub const RECOVERY_STEPS: f64 = 10.0;
/// Below this share of refused answers (over this second and the last), refusals are noise:
/// the SDK retries them, paced, and the rate is not cut.
pub const NOISE_SHARE: f64 = 0.1;
/// The lowest rate a cut leaves, in requests per second.
pub const FLOOR: f64 = 1.0;

/// One task's share of a job-wide budget of `per_job` requests per second over `tasks` tasks.
pub fn share(per_job: Option<u32>, tasks: u32) -> Option<f64> {
    per_job.map(|r| (f64::from(r) / f64::from(tasks.max(1))).ceil().max(FLOOR))
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Cut {
    at_ms: u64,
    /// No other cut before this: the slots taken at the old rate, and their answers.
    quiet_until_ms: u64,
    /// The rate right after the cut.
    rate: f64,
    /// Additive increase per second.
    step: f64,
}

/// The AIMD state of one task's request rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    ceiling: Option<f64>,
    cut: Option<Cut>,
    cuts: u64,
    /// Requests sent and answers S3 accepted in the second `second` and in the one before it.
    second: u64,
    this: Count,
    last: Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Count {
    sent: u32,
    accepted: u32,
    refused: u32,
}

impl Aimd {
    pub fn new(ceiling: Option<f64>) -> Aimd {
        Aimd {
            ceiling,
            cut: None,
            cuts: 0,
            second: 0,
            this: Count::default(),
            last: Count::default(),
        }
    }

    /// The allowed rate at `now_ms` in requests per second; `None` when nothing limits it.
    pub fn rate(&self, now_ms: u64) -> Option<f64> {
        let Some(c) = self.cut else {
            return self.ceiling;
        };
        let climbed = c.rate + c.step * now_ms.saturating_sub(c.at_ms) as f64 / 1000.0;
        Some(self.ceiling.map_or(climbed, |top| climbed.min(top)))
    }

    /// Counts a request sent at `now_ms`.
    pub fn sent(&mut self, now_ms: u64) {
        self.roll(now_ms);
        self.this.sent = self.this.sent.saturating_add(1);
    }

    /// Counts an answer S3 accepted (anything but SlowDown) at `now_ms`.
    pub fn accepted(&mut self, now_ms: u64) {
        self.roll(now_ms);
        self.this.accepted = self.this.accepted.saturating_add(1);
    }

    /// Requests sent, and answers S3 accepted, in the last whole second, or in the current one
    /// if it sent more.
    pub fn observed(&mut self, now_ms: u64) -> (f64, f64) {
        self.roll(now_ms);
        let c = if self.last.sent >= self.this.sent {
            self.last
        } else {
            self.this
        };
        (f64::from(c.sent), f64::from(c.accepted))
    }

    fn roll(&mut self, now_ms: u64) {
        let s = now_ms / 1000;
        if s != self.second {
            self.last = if s == self.second + 1 {
                self.this
            } else {
                Count::default()
            };
            self.this = Count::default();
            self.second = s;
        }
    }

    /// S3 answered SlowDown at `now_ms`, when the send slots already taken reach to
    /// `queued_until_ms`. Returns the new rate when this cut it, `None` when it fell in the
    /// quiet time of the previous cut.
    pub fn throttled(&mut self, now_ms: u64, queued_until_ms: u64) -> Option<f64> {
        self.roll(now_ms);
        self.this.refused = self.this.refused.saturating_add(1);
        if let Some(c) = self.cut
            && now_ms < c.quiet_until_ms
        {
            return None;
        }
        if self.refused_share() < NOISE_SHARE {
            return None;
        }
        // What S3 accepted; what was sent if it accepted nothing yet (a cold start).
        let (sent, accepted) = self.observed(now_ms);
        let in_use = if accepted > 0.0 { accepted } else { sent };
        let before = match self.rate(now_ms) {
            Some(r) => r.min(in_use),
            None => in_use,
        }
        .max(FLOOR);
        let rate = (before * DECREASE).max(FLOOR);
        let step = (self.ceiling.unwrap_or(before) / RECOVERY_STEPS).max(FLOOR);
        self.cut = Some(Cut {
            at_ms: now_ms,
            quiet_until_ms: now_ms.max(queued_until_ms) + COOLDOWN_MS,
            rate,
            step,
        });
        self.cuts += 1;
        Some(rate)
    }

    /// The share of answers in this second and the last that were refusals.
    fn refused_share(&self) -> f64 {
        let refused = f64::from(self.this.refused + self.last.refused);
        let accepted = f64::from(self.this.accepted + self.last.accepted);
        refused / (refused + accepted).max(1.0)
    }

    /// How many cuts SlowDown answers caused.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }
}

/// The pacer shared by all of a task's S3 requests: [`Aimd`] plus the next free send slot.
#[derive(Debug)]
pub struct RateLimiter {
    origin: Instant,
    state: Mutex<(Aimd, Instant)>,
    slowdowns: std::sync::atomic::AtomicU64,
}

/// Takes the next send slot of `state` (the AIMD state and when the next slot is free) at
/// `now`: how long the request waits for it. Unpaced (no rate): at once.
fn take_slot(state: &mut (Aimd, Instant), now: Instant, now_ms: u64) -> Duration {
    let (aimd, next) = state;
    aimd.sent(now_ms);
    match aimd.rate(now_ms) {
        None => {
            *next = now;
            Duration::ZERO
        }
        Some(rate) => {
            let slot = (*next).max(now);
            *next = slot + Duration::from_secs_f64(1.0 / rate.max(FLOOR));
            slot - now
        }
    }
}

impl RateLimiter {
    /// A limiter with this ceiling in requests per second (`None`: unpaced until a SlowDown).
    pub fn new(ceiling: Option<f64>) -> RateLimiter {
        let now = Instant::now();
        RateLimiter {
            origin: now,
            state: Mutex::new((Aimd::new(ceiling), now)),
            slowdowns: Default::default(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.duration_since(self.origin).as_millis() as u64
    }

    /// Takes the next send slot for one request and returns how long to wait for it.
    pub fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        take_slot(&mut guard, now, self.ms(now))
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// S3 answered an attempt with anything but a 503 or 429.
    pub fn accepted(&self) {
        let now_ms = self.ms(Instant::now());
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.accepted(now_ms);
    }

    /// S3 answered an attempt with SlowDown (or another 503): cuts the rate, and returns the
    /// wait for the slot of its retry.
    pub fn throttled(&self) -> Duration {
        self.slowdowns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let now_ms = self.ms(now);
        // The cut and the retry's slot under one lock: no request takes a slot at the old
        // rate in between.
        let wait = {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let queued_until_ms = self.ms(guard.1);
            if let Some(rate) = guard.0.throttled(now_ms, queued_until_ms) {
                tracing::debug!(rate, "S3 asked to slow down: request rate cut");
            }
            take_slot(&mut guard, now, now_ms)
        };
        tracing::trace!(wait_ms = wait.as_millis() as u64, "SlowDown: retry paced");
        wait
    }

    /// SlowDown answers seen and the cuts they caused, for the task's closing log line.
    pub fn summary(&self) -> (u64, u64) {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (
            self.slowdowns.load(std::sync::atomic::Ordering::Relaxed),
            guard.0.cuts(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_budget_is_shared_by_its_tasks_rounding_up() {
        for (per_job, tasks, want) in [
            (None, 4, None),
            (Some(100), 1, Some(100.0)),
            (Some(100), 3, Some(34.0)),
            (Some(800), 16, Some(50.0)),
            (Some(2), 8, Some(1.0)),
            (Some(5), 0, Some(5.0)),
        ] {
            assert_eq!(share(per_job, tasks), want, "{per_job:?} over {tasks}");
        }
    }

    /// Sends `n` requests spread over the second that starts at `from_ms`, `accepted` of
    /// which S3 accepts.
    fn answered(a: &mut Aimd, from_ms: u64, n: u64, accepted: u64) {
        for i in 0..n {
            let at = from_ms + i * 1000 / n.max(1);
            a.sent(at);
            if i < accepted {
                a.accepted(at);
            }
        }
    }

    /// Sends `n` requests spread over the second that starts at `from_ms`, all accepted.
    fn send(a: &mut Aimd, from_ms: u64, n: u64) {
        answered(a, from_ms, n, n);
    }

    /// `k` SlowDowns at `at_ms` (slots taken up to `queued_until_ms`); the cut they made, if
    /// any (at most one).
    fn refuse(a: &mut Aimd, at_ms: u64, queued_until_ms: u64, k: u64) -> Option<f64> {
        let cuts: Vec<f64> = (0..k)
            .filter_map(|_| a.throttled(at_ms, queued_until_ms))
            .collect();
        assert!(cuts.len() <= 1, "{cuts:?}");
        cuts.first().copied()
    }

    #[test]
    fn slowdowns_cut_the_rate_in_use_and_it_climbs_back_linearly_to_the_ceiling() {
        // (ceiling, requests sent in the second before the SlowDowns, of which S3 accepted,
        //  rate right after the cut, rate 5 s later, rate 60 s later). The others are refused
        //  at the start of the next second.
        let cases = [
            // Sending above the ceiling's worth: 100 accepted -> 90, then +10/s.
            (Some(100.0), 120, 100, Some(90.0), Some(100.0), Some(100.0)),
            // Sending below the ceiling: the cut is from what was accepted, the climb by the
            // ceiling.
            (Some(100.0), 40, 30, Some(27.0), Some(77.0), Some(100.0)),
            // No ceiling: cut from what was accepted, climb by 1/10 of it.
            (None, 200, 150, Some(135.0), Some(210.0), Some(1035.0)),
            // A cold start with nothing accepted yet: cut from what was sent, climb by 1/s.
            (None, 8, 0, Some(7.2), Some(12.2), Some(67.2)),
            // A tiny budget never goes below the floor.
            (Some(1.0), 2, 1, Some(1.0), Some(1.0), Some(1.0)),
        ];
        for (ceiling, sent, accepted, cut, later, much_later) in cases {
            let mut a = Aimd::new(ceiling);
            answered(&mut a, 9_000, sent, accepted);
            let at = 10_000;
            let round = |r: Option<f64>| r.map(|r| (r * 1000.0).round() / 1000.0);
            let what = format!("{ceiling:?} {sent} {accepted}");
            assert_eq!(
                round(refuse(&mut a, at, at, sent - accepted)),
                cut,
                "{what}"
            );
            assert_eq!(round(a.rate(at)), cut, "{what}");
            assert_eq!(round(a.rate(at + 5_000)), later, "{what}");
            assert_eq!(round(a.rate(at + 60_000)), much_later, "{what}");
        }
    }

    #[test]
    fn slowdowns_within_the_cooldown_count_as_one_cut() {
        let mut a = Aimd::new(Some(100.0));
        answered(&mut a, 0, 120, 100);
        // The requests that were in flight come back refused together: one cut.
        assert_eq!(refuse(&mut a, 1_000, 1_000, 20), Some(90.0));
        for ms in [1_001, 1_200, 1_999] {
            assert_eq!(a.throttled(ms, ms), None, "at {ms}");
        }
        assert_eq!(a.cuts(), 1);
        // A SlowDown after the cooldown cuts again, from what S3 accepted meanwhile.
        answered(&mut a, 1_000, 70, 66);
        assert_eq!(a.throttled(2_000, 2_000).map(|r| r.round()), Some(59.0));
        assert_eq!(a.cuts(), 2);
    }

    #[test]
    fn refusals_of_requests_queued_before_a_cut_do_not_cut_again() {
        let mut a = Aimd::new(Some(10.0));
        answered(&mut a, 0, 12, 10);
        // At the cut, slots at the old rate are taken up to 3 s from now.
        assert_eq!(refuse(&mut a, 1_000, 4_000, 2), Some(9.0));
        // Their refusals come back until then and a second after: no new cut.
        for ms in [2_500, 4_000, 4_999] {
            assert_eq!(a.throttled(ms, ms), None, "at {ms}");
        }
        // A refusal after that is about the new rate.
        answered(&mut a, 4_000, 8, 7);
        assert!(a.throttled(5_000, 5_000).is_some());
        assert_eq!(a.cuts(), 2);
    }

    #[test]
    fn a_cut_after_a_storm_of_refusals_goes_to_the_rate_s3_accepted_in_one_step() {
        // An unpaced task sent 40 a second to a prefix that grants 10.
        let mut a = Aimd::new(None);
        answered(&mut a, 0, 40, 10);
        // The cut is to 0.9 of the 10 accepted, not of the 40 sent.
        assert_eq!(refuse(&mut a, 999, 999, 30), Some(9.0));
        // Before any answer came back, the cut is from what was sent.
        let mut cold = Aimd::new(None);
        answered(&mut cold, 0, 8, 0);
        assert_eq!(cold.throttled(100, 100).map(|r| r.round()), Some(7.0));
    }

    #[test]
    fn repeated_slowdowns_converge_under_the_budget_s3_grants() {
        // Four tasks without a ceiling against a prefix that grants 875 requests/s: each
        // second, S3 accepts 875 of them, shared in proportion, and refuses the rest. The average rate settles between
        // 0.7 of the grant and the grant.
        let mut tasks: Vec<Aimd> = (0..4).map(|_| Aimd::new(None)).collect();
        let mut sum_tail = 0.0;
        for s in 0..120u64 {
            let now = s * 1000;
            let rates: Vec<f64> = tasks
                .iter()
                .map(|a| a.rate(now).unwrap_or(400.0).min(400.0))
                .collect();
            let total: f64 = rates.iter().sum();
            for (a, r) in tasks.iter_mut().zip(&rates) {
                let accepted = if total > 875.0 { r * 875.0 / total } else { *r };
                answered(a, now, *r as u64, accepted as u64);
                refuse(a, now + 999, now + 999, (*r - accepted) as u64);
            }
            if s >= 60 {
                sum_tail += total;
            }
        }
        let mean = sum_tail / 60.0;
        assert!((0.7 * 875.0..=875.0 * 1.1).contains(&mean), "{mean}");
    }

    #[test]
    fn sporadic_refusals_at_any_rate_do_not_drive_the_rate_to_the_floor() {
        // A task that could send 50 a second; S3 refuses one request in 20 whatever the rate
        // (503s that are not about the rate). It is never cut.
        let mut a = Aimd::new(None);
        for s in 0..60u64 {
            let now = s * 1000;
            answered(&mut a, now, 50, 47);
            for i in 0..3 {
                assert_eq!(a.throttled(now + 300 * i, now), None, "second {s}");
            }
        }
        assert_eq!((a.cuts(), a.rate(60_000)), (0, None));
        // A share of refusals over a tenth is about the rate.
        answered(&mut a, 60_000, 50, 40);
        assert!(refuse(&mut a, 60_999, 60_999, 10).is_some());
    }

    #[test]
    fn the_request_counter_forgets_seconds_that_passed_without_requests() {
        let mut a = Aimd::new(None);
        send(&mut a, 0, 50);
        assert_eq!(a.observed(1_500), (50.0, 50.0));
        assert_eq!(a.observed(5_000), (0.0, 0.0));
    }
}
