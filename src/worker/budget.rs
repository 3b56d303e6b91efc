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
//!   shared by its tasks, and it paces all of a task's requests together. Without
//!   `maxRequestsPerSecond` there is no ceiling and no pacing until S3 first answers SlowDown.
//! - S3 grants each prefix reads (GET, HEAD: 5,500 a second) and writes (PUT, COPY, POST,
//!   DELETE: 3,500) apart, and a SlowDown is about the rate of its [`Kind`]. So each kind has
//!   its own AIMD rate, under the ceiling: refused copies slow the copies, not the listings
//!   beside them, and the listings S3 accepts say nothing about the copies it refuses.
//! - A SlowDown cuts its kind's rate to [`DECREASE`] × the rate in use: the lower of the
//!   kind's allowed rate and what S3 accepted of that kind from the task in the last whole
//!   second (answers other than 503). Cutting from what S3 accepted finds the grant in one
//!   step, however far above it an unpaced task started.
//! - Before a whole second of answers (a kind's seconds count from its first request), the cut
//!   is a guess: from what S3 accepted so far, but at least [`GUESS`] of what was sent (the
//!   refusals of a burst come back before the answers S3 accepted). The first measure replaces
//!   it.
//! - Refusals that are under [`NOISE_SHARE`] of the answers to their kind of this second and
//!   the last do not cut: S3 answers a rate above its grant with a growing share of refusals,
//!   while a few 503s at any rate (a partition moving, a server restarting) are retried and
//!   otherwise ignored. Cutting on every one would drive the rate to the floor under a steady
//!   trickle of them.
//! - Refusals of requests sent before a cut say nothing about the new rate: they never cut
//!   again (but a guess gives way to the first measure). A refusal of a request sent after the
//!   cut does, as soon as it comes back: cuts follow each other one round trip apart while S3
//!   keeps refusing what was sent at the new rate.
//! - After a cut the kind's rate climbs linearly, by 1/[`RECOVERY_STEPS`] of the ceiling (of
//!   the rate before the cut, without a ceiling) per second, back to the ceiling (without one,
//!   for as long as S3 accepts: a pace far above what the task can send costs nothing). It
//!   climbs by at least [`FLOOR`] per second, so a cut made from the few answers of a cold
//!   start is soon undone.
//! - A rate never drops below [`FLOOR`] requests per second.
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
/// Seconds of additive increase to climb from zero back to the ceiling.
pub const RECOVERY_STEPS: f64 = 10.0;
/// Below this share of refused answers (over this second and the last), refusals are noise:
/// the SDK retries them, paced, and the rate is not cut.
pub const NOISE_SHARE: f64 = 0.1;
/// A cut from less than a second of answers takes at least this share of the requests sent
/// meanwhile as the rate in use.
pub const GUESS: f64 = 0.25;
/// The lowest rate a cut leaves, in requests per second.
pub const FLOOR: f64 = 1.0;

/// One task's share of a job-wide budget of `per_job` requests per second over `tasks` tasks.
pub fn share(per_job: Option<u32>, tasks: u32) -> Option<f64> {
    per_job.map(|r| (f64::from(r) / f64::from(tasks.max(1))).ceil().max(FLOOR))
}

/// The two request rates S3 grants per prefix apart: 5,500 GET and HEAD a second (reads) and
/// 3,500 PUT, COPY, POST and DELETE (writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

impl Kind {
    fn of(read_only: bool) -> Kind {
        if read_only { Kind::Read } else { Kind::Write }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Cut {
    /// When the cut was made: refusals of requests sent until then do not cut again.
    at_ms: u64,
    /// The rate right after the cut.
    rate: f64,
    /// Additive increase per second.
    step: f64,
    /// Made from less than a second of answers.
    guessed: bool,
}

/// The AIMD state of one task's request rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    ceiling: Option<f64>,
    /// The last cut of each [`Kind`].
    cut: [Option<Cut>; 2],
    cuts: u64,
    /// Requests sent and their answers, per [`Kind`], in the kind's second `second` and in
    /// the one before it. A kind's seconds count from its first request, so its first whole
    /// second ends a second after it.
    second: [u64; 2],
    this: [Count; 2],
    last: [Count; 2],
    /// When the task first sent a request of each [`Kind`].
    first_sent_ms: [Option<u64>; 2],
}

/// What the task sent of a kind and what S3 accepted of it over the window a cut is made from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    pub sent: f64,
    pub accepted: f64,
    /// The window is a whole second in which the task was sending; otherwise it is the part of
    /// the current one since the task started, where what S3 accepted is no rate yet.
    pub whole: bool,
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
            cut: [None; 2],
            cuts: 0,
            second: [0; 2],
            this: Default::default(),
            last: Default::default(),
            first_sent_ms: [None; 2],
        }
    }

    /// The ceiling that paces all requests together, in requests per second; `None` when the
    /// job sets no budget.
    pub fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    /// The rate a cut leaves to requests of `kind` at `now_ms`, climbing back; `None` once it
    /// is back at the ceiling or when nothing was cut.
    pub fn cut_rate(&self, now_ms: u64, kind: Kind) -> Option<f64> {
        let c = self.cut[kind as usize]?;
        let climbed = c.rate + c.step * now_ms.saturating_sub(c.at_ms) as f64 / 1000.0;
        match self.ceiling {
            Some(top) if climbed >= top => None,
            _ => Some(climbed),
        }
    }

    /// The rate allowed to requests of `kind` at `now_ms` in requests per second; `None`
    /// when nothing limits it.
    pub fn rate(&self, now_ms: u64, kind: Kind) -> Option<f64> {
        self.cut_rate(now_ms, kind).or(self.ceiling)
    }

    /// Counts a request of `kind` sent at `now_ms`.
    pub fn sent(&mut self, now_ms: u64, kind: Kind) {
        self.first_sent_ms[kind as usize].get_or_insert(now_ms);
        self.roll(now_ms, kind);
        let c = &mut self.this[kind as usize];
        c.sent = c.sent.saturating_add(1);
    }

    /// Counts an answer S3 accepted (anything but SlowDown) to a request of `kind` at `now_ms`.
    pub fn accepted(&mut self, now_ms: u64, kind: Kind) {
        self.roll(now_ms, kind);
        let c = &mut self.this[kind as usize];
        c.accepted = c.accepted.saturating_add(1);
    }

    /// Requests of `kind` sent, and answers to them S3 accepted, in the last whole second, or
    /// in the current one if it sent more.
    pub fn observed(&mut self, now_ms: u64, kind: Kind) -> Seen {
        self.roll(now_ms, kind);
        let (last, this) = (self.last[kind as usize], self.this[kind as usize]);
        // Seconds count from the kind's first request: any second before this one is whole.
        let (c, whole) = if last.sent >= this.sent {
            (last, self.second[kind as usize] > 0)
        } else {
            (this, false)
        };
        Seen {
            sent: f64::from(c.sent),
            accepted: f64::from(c.accepted),
            whole,
        }
    }

    fn roll(&mut self, now_ms: u64, kind: Kind) {
        let k = kind as usize;
        let s = now_ms.saturating_sub(self.first_sent_ms[k].unwrap_or(0)) / 1000;
        if s != self.second[k] {
            self.last[k] = if s == self.second[k] + 1 {
                self.this[k]
            } else {
                Count::default()
            };
            self.this[k] = Count::default();
            self.second[k] = s;
        }
    }

    /// S3 answered SlowDown at `now_ms` to a request of `kind` sent at `sent_ms`. Returns the
    /// kind's new rate when this cut it, `None` when the request went out before the last cut
    /// or the refusal was noise.
    pub fn throttled(&mut self, now_ms: u64, sent_ms: u64, kind: Kind) -> Option<f64> {
        self.roll(now_ms, kind);
        let c = &mut self.this[kind as usize];
        c.refused = c.refused.saturating_add(1);
        if self.refused_share(kind) < NOISE_SHARE {
            return None;
        }
        let seen = self.observed(now_ms, kind);
        if let Some(c) = self.cut[kind as usize]
            && sent_ms <= c.at_ms
            && !(c.guessed && seen.whole)
        {
            // A request sent at the old rate; but a guess gives way to the first measure.
            return None;
        }
        // A measure: what S3 accepted in a whole second. A guess, from less than a second of
        // answers (the refusals of a burst come back before the answers S3 accepted, so what it
        // accepted so far is no rate yet): at least a share of what the task sent meanwhile.
        // The first measure replaces it.
        let in_use = if seen.whole {
            seen.accepted
        } else {
            seen.accepted.max(GUESS * seen.sent)
        };
        let before = match self.rate(now_ms, kind) {
            Some(r) => r.min(in_use),
            None => in_use,
        }
        .max(FLOOR);
        let rate = (before * DECREASE).max(FLOOR);
        let step = (self.ceiling.unwrap_or(before) / RECOVERY_STEPS).max(FLOOR);
        self.cut[kind as usize] = Some(Cut {
            at_ms: now_ms,
            rate,
            step,
            guessed: !seen.whole,
        });
        self.cuts += 1;
        Some(rate)
    }

    /// The share of answers to requests of `kind`, in this second and the last, that were
    /// refusals.
    fn refused_share(&self, kind: Kind) -> f64 {
        let (this, last) = (self.this[kind as usize], self.last[kind as usize]);
        let refused = f64::from(this.refused + last.refused);
        let accepted = f64::from(this.accepted + last.accepted);
        refused / (refused + accepted).max(1.0)
    }

    /// How many cuts SlowDown answers caused.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }
}

/// The pacer's clock: the AIMD state, the next free slot under the ceiling, and the next free
/// slot of each [`Kind`] under its cut.
#[derive(Debug)]
struct Slots {
    aimd: Aimd,
    any: Instant,
    kind: [Instant; 2],
}

impl Slots {
    /// Takes the next send slot for a request of `kind` at `now`: how long it waits for it.
    /// First a slot under the ceiling, then, from there, one under the kind's cut; unpaced
    /// (no ceiling, no cut): at once.
    fn take(&mut self, now: Instant, now_ms: u64, kind: Kind) -> Duration {
        let mut at = now;
        if let Some(rate) = self.aimd.ceiling() {
            at = self.any.max(now);
            self.any = at + Duration::from_secs_f64(1.0 / rate.max(FLOOR));
        }
        if let Some(rate) = self.aimd.cut_rate(now_ms, kind) {
            let next = &mut self.kind[kind as usize];
            at = (*next).max(at);
            *next = at + Duration::from_secs_f64(1.0 / rate.max(FLOOR));
        }
        at - now
    }
}

/// The pacer shared by all of a task's S3 requests.
#[derive(Debug)]
pub struct RateLimiter {
    origin: Instant,
    state: Mutex<Slots>,
    slowdowns: std::sync::atomic::AtomicU64,
}

impl RateLimiter {
    /// A limiter with this ceiling in requests per second (`None`: unpaced until a SlowDown).
    pub fn new(ceiling: Option<f64>) -> RateLimiter {
        let now = Instant::now();
        RateLimiter {
            origin: now,
            state: Mutex::new(Slots {
                aimd: Aimd::new(ceiling),
                any: now,
                kind: [now; 2],
            }),
            slowdowns: Default::default(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Takes the next send slot for one request of `kind` and returns how long to wait for it.
    pub fn reserve(&self, kind: Kind) -> Duration {
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.take(now, self.ms(now), kind)
    }

    /// Waits for the slot of this request of `kind`.
    pub async fn acquire(&self, kind: Kind) {
        let wait = self.reserve(kind);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// An attempt of `kind` went on the wire.
    pub fn sent(&self, kind: Kind) {
        let now_ms = self.ms(Instant::now());
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.aimd.sent(now_ms, kind);
    }

    /// S3 answered an attempt of `kind` with anything but a 503 or 429.
    pub fn accepted(&self, kind: Kind) {
        let now_ms = self.ms(Instant::now());
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.aimd.accepted(now_ms, kind);
    }

    /// S3 answered an attempt of `kind`, sent at `sent`, with SlowDown (or another 503): cuts
    /// the kind's rate, and returns the wait for the slot of its retry.
    pub fn throttled(&self, kind: Kind, sent: Instant) -> Duration {
        self.slowdowns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let now_ms = self.ms(now);
        // The cut and the retry's slot under one lock: no request takes a slot at the old
        // rate in between.
        let wait = {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(rate) = guard.aimd.throttled(now_ms, self.ms(sent), kind) {
                tracing::debug!(rate, ?kind, "S3 asked to slow down: request rate cut");
            }
            guard.take(now, now_ms, kind)
        };
        tracing::trace!(wait_ms = wait.as_millis() as u64, "SlowDown: retry paced");
        wait
    }

    /// SlowDown answers seen and the cuts they caused, for the task's closing log line.
    pub fn summary(&self) -> (u64, u64) {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (
            self.slowdowns.load(std::sync::atomic::Ordering::Relaxed),
            guard.aimd.cuts(),
        )
    }
}

impl crate::aws::Pace for RateLimiter {
    fn sent(&self, read_only: bool) {
        RateLimiter::sent(self, Kind::of(read_only));
    }

    fn answered(&self, read_only: bool, throttled: bool, sent: Instant) -> Duration {
        let kind = Kind::of(read_only);
        if throttled {
            self.throttled(kind, sent)
        } else {
            self.accepted(kind);
            Duration::ZERO
        }
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
            a.sent(at, Kind::Write);
            if i < accepted {
                a.accepted(at, Kind::Write);
            }
        }
    }

    /// Sends `n` requests spread over the second that starts at `from_ms`, all accepted.
    fn send(a: &mut Aimd, from_ms: u64, n: u64) {
        answered(a, from_ms, n, n);
    }

    /// `k` SlowDowns at `at_ms` of writes sent at `sent_ms`; the cut they made, if any (at
    /// most one).
    fn refuse(a: &mut Aimd, at_ms: u64, sent_ms: u64, k: u64) -> Option<f64> {
        let cuts: Vec<f64> = (0..k)
            .filter_map(|_| a.throttled(at_ms, sent_ms, Kind::Write))
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
            // A whole second in which S3 accepted nothing: the floor, climbing by 1/s.
            (None, 8, 0, Some(1.0), Some(6.0), Some(61.0)),
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
            assert_eq!(round(a.rate(at, Kind::Write)), cut, "{what}");
            assert_eq!(round(a.rate(at + 5_000, Kind::Write)), later, "{what}");
            assert_eq!(
                round(a.rate(at + 60_000, Kind::Write)),
                much_later,
                "{what}"
            );
        }
    }

    #[test]
    fn refusals_of_requests_sent_before_a_cut_do_not_cut_again() {
        let mut a = Aimd::new(Some(100.0));
        answered(&mut a, 0, 120, 100);
        // The requests that were in flight come back refused together: one cut.
        assert_eq!(refuse(&mut a, 1_000, 990, 20), Some(90.0));
        // Refusals of requests sent until the cut, however late they come back: none.
        for (at, sent) in [(1_001, 990), (1_500, 1_000), (3_000, 999)] {
            assert_eq!(a.throttled(at, sent, Kind::Write), None, "at {at}");
        }
        assert_eq!(a.cuts(), 1);
        // A refusal of a request sent after the cut is about the new rate, at once: cut from
        // what S3 accepted meanwhile.
        answered(&mut a, 1_000, 70, 66);
        assert_eq!(
            refuse(&mut a, 2_000, 1_500, 10).map(|r| r.round()),
            Some(59.0)
        );
        assert_eq!(a.cuts(), 2);
    }

    #[test]
    fn a_cut_after_a_storm_of_refusals_goes_to_the_rate_s3_accepted_in_one_step() {
        // An unpaced task sent 40 a second to a prefix that grants 10.
        let mut a = Aimd::new(None);
        answered(&mut a, 0, 40, 10);
        // Measured on that whole second, the cut is to 0.9 of the 10 accepted, not of the 40
        // sent.
        assert_eq!(refuse(&mut a, 1_000, 1_000, 30), Some(9.0));
    }

    #[test]
    fn a_cut_from_less_than_a_second_of_answers_is_a_guess_that_gives_way_to_a_measure() {
        // 80 requests went out in the task's first moments, and the first answer is a refusal:
        // nothing accepted yet, so 0.9 of a quarter of them, climbing by a tenth of that a
        // second.
        let mut a = Aimd::new(None);
        answered(&mut a, 0, 80, 0);
        assert_eq!(a.throttled(100, 50, Kind::Write), Some(18.0));
        assert_eq!(a.rate(1_100, Kind::Write), Some(20.0));
        // A refusal of a request sent before the guess is quiet; one sent after it cuts again
        // (the guess is no measure), from the lower of the rate and the guess.
        assert_eq!(a.throttled(150, 90, Kind::Write), None);
        let again = a.throttled(200, 150, Kind::Write).unwrap();
        assert!((16.0..18.0).contains(&again), "{again}");
        // The first whole second measured (S3 accepted 10 of 20) replaces the guess, even for
        // requests sent before it.
        answered(&mut a, 1_000, 20, 10);
        assert_eq!(refuse(&mut a, 2_000, 150, 10), Some(9.0));
        // That measure climbs by a tenth of it a second, and refusals of requests sent before
        // it do not cut again.
        assert_eq!(a.rate(3_000, Kind::Write), Some(10.0));
        assert_eq!(a.throttled(2_100, 1_500, Kind::Write), None);
        assert_eq!(a.cuts(), 3);
    }

    /// Sends `reads` reads and `writes` writes spread over the second that starts at
    /// `from_ms`; S3 accepts every read and `accepted` of the writes.
    fn mixed(a: &mut Aimd, from_ms: u64, reads: u64, writes: u64, accepted: u64) {
        for i in 0..reads {
            let at = from_ms + i * 1000 / reads.max(1);
            a.sent(at, Kind::Read);
            a.accepted(at, Kind::Read);
        }
        for i in 0..writes {
            let at = from_ms + i * 1000 / writes.max(1);
            a.sent(at, Kind::Write);
            if i < accepted {
                a.accepted(at, Kind::Write);
            }
        }
    }

    #[test]
    fn a_refused_write_cuts_the_writes_to_what_s3_accepted_of_them_and_leaves_the_reads_alone() {
        // (reads sent and accepted, writes sent, writes accepted in the second before; the
        //  writes' rate right after the writes' refusals, None when they do not cut). No
        //  ceiling.
        let cases = [
            (0, 40, 10, Some(9.0)),
            // However many reads S3 accepted beside them.
            (20, 20, 10, Some(9.0)),
            (300, 20, 10, Some(9.0)),
            // Half the writes refused among many accepted reads is no noise: the share is the
            // writes'.
            (100, 10, 5, Some(4.5)),
            // One write in 20 refused is noise, however few the reads.
            (5, 40, 38, None),
        ];
        for (reads, writes, accepted, want) in cases {
            let mut a = Aimd::new(None);
            mixed(&mut a, 9_000, reads, writes, accepted);
            let what = format!("{reads} reads, {writes} writes, {accepted} accepted");
            let cut = refuse(&mut a, 10_000, 10_000, writes - accepted)
                .map(|r| (r * 1000.0).round() / 1000.0);
            assert_eq!(cut, want, "{what}");
            assert_eq!(a.rate(10_000, Kind::Read), None, "{what}");
        }
        // Under a ceiling, a cut of the writes leaves the reads at the ceiling.
        let mut a = Aimd::new(Some(50.0));
        mixed(&mut a, 0, 25, 25, 10);
        assert_eq!(refuse(&mut a, 1_000, 1_000, 15), Some(9.0));
        assert_eq!(
            (a.rate(1_000, Kind::Write), a.rate(1_000, Kind::Read)),
            (Some(9.0), Some(50.0))
        );
    }

    #[test]
    fn an_unpaced_task_reading_beside_its_writes_is_cut_under_the_write_grant_in_its_first_second()
    {
        // A task that could send 40 writes and 40 reads a second to a prefix that grants 10
        // writes a second and any reads; the refusals come back within each second.
        let grant = 10.0;
        let mut a = Aimd::new(None);
        let (mut writes_per_s, mut reads_per_s) = (Vec::new(), Vec::new());
        for s in 0..60u64 {
            let now = s * 1000;
            let writes = a.rate(now, Kind::Write).unwrap_or(40.0).min(40.0) as u64;
            let reads = a.rate(now, Kind::Read).unwrap_or(40.0).min(40.0) as u64;
            let accepted = writes.min(grant as u64);
            mixed(&mut a, now, reads, writes, accepted);
            refuse(&mut a, now + 999, now + 999, writes - accepted);
            writes_per_s.push(writes as f64);
            reads_per_s.push(reads);
        }
        // The first second was unpaced (40 writes); the cut in it, a guess from what S3 had
        // accepted so far (at least a quarter of what was sent), holds the writes under the
        // grant at once. The reads go on unpaced.
        assert_eq!(writes_per_s[..2], [40.0, 9.0]);
        assert!(reads_per_s.iter().all(|r| *r == 40), "{reads_per_s:?}");
        let tail = &writes_per_s[20..];
        let mean = tail.iter().sum::<f64>() / tail.len() as f64;
        assert!(
            (0.7 * grant..=grant * 1.1).contains(&mean),
            "{mean}: {writes_per_s:?}"
        );
    }

    #[test]
    fn slots_pace_every_request_under_the_ceiling_and_each_kind_under_its_cut() {
        // Writes cut to 1.8 a second (a slot every 555 ms); (ceiling, requests in order, the
        // wait of each in ms).
        use Kind::{Read as R, Write as W};
        let cases: [(Option<f64>, &[Kind], &[u64]); 3] = [
            // No ceiling: the writes wait for each other, the reads for nothing.
            (None, &[W, W, R, W, R], &[0, 555, 0, 1111, 0]),
            // A ceiling of 10 a second paces all of them; the writes also wait for their cut.
            (Some(10.0), &[W, W, R, R, W], &[0, 555, 200, 300, 1111]),
            // Reads alone under the ceiling.
            (Some(10.0), &[R, R, R], &[0, 100, 200]),
        ];
        for (ceiling, kinds, waits) in cases {
            let mut a = Aimd::new(ceiling);
            mixed(&mut a, 0, 0, 4, 2);
            assert_eq!(refuse(&mut a, 1_000, 1_000, 2), Some(1.8));
            let now = Instant::now();
            let mut slots = Slots {
                aimd: a,
                any: now,
                kind: [now; 2],
            };
            let got: Vec<u64> = kinds
                .iter()
                .map(|k| slots.take(now, 1_000, *k).as_millis() as u64)
                .collect();
            assert_eq!(got, waits, "{ceiling:?} {kinds:?}");
        }
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
                .map(|a| a.rate(now, Kind::Write).unwrap_or(400.0).min(400.0))
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
                assert_eq!(
                    a.throttled(now + 300 * i, now, Kind::Write),
                    None,
                    "second {s}"
                );
            }
        }
        assert_eq!((a.cuts(), a.rate(60_000, Kind::Write)), (0, None));
        // A share of refusals over a tenth is about the rate.
        answered(&mut a, 60_000, 50, 40);
        assert!(refuse(&mut a, 60_999, 60_999, 10).is_some());
    }

    #[test]
    fn the_request_counter_forgets_seconds_that_passed_without_requests() {
        let mut a = Aimd::new(None);
        send(&mut a, 0, 50);
        let seen = |sent, accepted, whole| Seen {
            sent,
            accepted,
            whole,
        };
        // Half a second into the second second: the first one, whole.
        assert_eq!(a.observed(1_500, Kind::Write), seen(50.0, 50.0, true));
        assert_eq!(a.observed(5_000, Kind::Write), seen(0.0, 0.0, true));
    }
}
