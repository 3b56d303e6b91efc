//! The worker's scheduler as plain data, time passed in: one [`Scheduler`] holds everything a
//! task knows about its work (the leases it holds, the chunks its listers kept for it, the
//! partitions it is listing or knows are listed, the units it is copying, its idle backoff,
//! whether it is stopping) and decides what to try next for a free work slot, which listing
//! partitions are worth a claim, which leases are due for renewal, how long a task that found
//! no work waits before it asks again, and when a chunk given back after a failure may be
//! claimed again. No IO; table-tested. The worker calls it under one lock and does the IO the
//! answers call for. (The request budget's AIMD state is in `budget.rs`.)

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::aws::ErrorKind;

/// What a task knows when a work slot is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Chunks being copied, and copy permits free.
    pub copying: usize,
    pub free_copies: usize,
    /// Chunks its listers kept for it, waiting.
    pub kept: usize,
    /// Partitions it is listing, and the most it lists at once.
    pub listing: usize,
    pub max_listers: usize,
    /// Whether the idle backoff lets it query the claim index now.
    pub index_open: bool,
}

/// One way to fill a free work slot, tried in the order [`steps`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Copy a chunk this task's lister kept (no claim needed).
    CopyKept,
    /// Claim a listing partition.
    ClaimPartition,
    /// Claim a chunk from the claim index.
    ClaimChunk,
}

/// Whether the task should take on another chunk: only when none is being copied or copy
/// permits are free. A chunk waiting for permits is held (and renewed) for nothing, and its
/// objects are not copied sooner.
pub fn may_copy(s: &Slot) -> bool {
    s.copying == 0 || s.free_copies > 0
}

/// The ways to fill a free slot, in order: a kept chunk first (it is already leased), then a
/// partition to list (listing makes the work that keeps every task busy), then the claim index.
/// A kept chunk, when there is one and copying may take it, is the only step: the claim of
/// anything else waits for the next slot.
pub fn steps(s: &Slot) -> Vec<Step> {
    let copy = may_copy(s);
    if copy && s.kept > 0 {
        return vec![Step::CopyKept];
    }
    let mut steps = Vec::new();
    if s.listing < s.max_listers {
        steps.push(Step::ClaimPartition);
    }
    if copy && s.index_open {
        steps.push(Step::ClaimChunk);
    }
    steps
}

/// What a task knows about the run's listing partitions it did not get: listed completely
/// (never claimable again) or held by another task until a time. Saves conditional writes that
/// would fail.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Partitions {
    done: HashSet<u32>,
    busy_until: HashMap<u32, u64>,
}

impl Partitions {
    /// Partition `i` is listed completely.
    pub fn done(&mut self, i: u32) {
        self.done.insert(i);
    }

    /// Another task holds partition `i` until `until` (epoch ms).
    pub fn held_until(&mut self, i: u32, until: u64) {
        self.busy_until.insert(i, until);
    }

    /// The partitions of `0..count` worth a claim at `now`, starting at `start` and wrapping (so
    /// tasks start at different ones): not listed, not held by another task whose lease cannot
    /// have run out yet, and not held by this task (`mine`).
    pub fn candidates(
        &self,
        count: u32,
        start: u32,
        now: u64,
        mine: impl Fn(u32) -> bool,
    ) -> Vec<u32> {
        (0..count)
            .map(|k| (start + k) % count.max(1))
            .filter(|i| {
                !self.done.contains(i)
                    && self.busy_until.get(i).is_none_or(|until| *until < now)
                    && !mine(*i)
            })
            .collect()
    }
}

/// The leases a task holds (sort key → the expiry it last wrote, epoch ms).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leases {
    held: HashMap<String, u64>,
}

impl Leases {
    pub fn hold(&mut self, sk: impl Into<String>, expiry: u64) {
        self.held.insert(sk.into(), expiry);
    }

    pub fn release(&mut self, sk: &str) -> bool {
        self.held.remove(sk).is_some()
    }

    pub fn holds(&self, sk: &str) -> bool {
        self.held.contains_key(sk)
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.held.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Leases to renew at `now`: those with less than half of `lease_ms` left. Renewing at half
    /// life instead of on every heartbeat costs a chunk one write per half lease it is held
    /// (none for most chunks, copied in less), and still leaves half a lease for retries.
    pub fn due(&self, now: u64, lease_ms: u64) -> Vec<String> {
        let mut due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, expiry)| expiry.saturating_sub(now) < lease_ms / 2)
            .map(|(sk, _)| sk.clone())
            .collect();
        due.sort();
        due
    }

    /// Records a renewal (if the lease is still held: a unit may have finished meanwhile).
    pub fn renewed(&mut self, sk: &str, expiry: u64) {
        if let Some(e) = self.held.get_mut(sk) {
            *e = expiry;
        }
    }
}

/// How long a task that found nothing to claim waits before asking the store again: doubling
/// from [`IDLE_FIRST_MS`] to [`IDLE_MAX_MS`], back to nothing as soon as a claim succeeds. An idle
/// task thus costs a few reads a second at first and one every few seconds after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Idle {
    /// No claim before this time (epoch ms).
    pub until: u64,
    /// The current pause (0: not idle).
    pub pause: u64,
}

pub const IDLE_FIRST_MS: u64 = 250;
pub const IDLE_MAX_MS: u64 = 5_000;

impl Idle {
    pub fn may_claim(&self, now: u64) -> bool {
        now >= self.until
    }

    /// A claim found nothing (or the store asked to slow down) at `now`.
    pub fn found_nothing(&mut self, now: u64) {
        self.pause = (self.pause * 2).clamp(IDLE_FIRST_MS, IDLE_MAX_MS);
        self.until = now + self.pause;
    }

    /// A claim succeeded.
    pub fn found_work(&mut self) {
        *self = Idle::default();
    }
}

/// Why a unit of copy work gave its chunk back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// S3 kept answering SlowDown to one of its requests beyond the client's retries. That is a
    /// rate signal, not a fault of the chunk: the request budget has cut the task's rate
    /// already, and any task may copy the chunk again after a short pause.
    Throttled,
    /// Anything else that a retry may cure (a timeout, a lost connection, a 500).
    Other,
}

impl Failure {
    /// The failure an error of `kind` is: throttling (S3's SlowDown, DynamoDB's throughput
    /// errors, as `aws::error` classifies them) or anything else.
    pub fn of(kind: ErrorKind) -> Failure {
        match kind {
            ErrorKind::Throttled => Failure::Throttled,
            _ => Failure::Other,
        }
    }
}

/// How long a chunk given back for [`Failure::Throttled`] waits, whatever its attempts.
pub const THROTTLED_PAUSE_MS: u64 = 1_000;

/// When a chunk given back after its `attempts`-th failed attempt may be claimed again, with
/// `jitter` (0.0–1.0) taking off up to half of the pause so tasks do not retry in step:
/// - throttled: [`THROTTLED_PAUSE_MS`], not growing. In a SlowDown storm many chunks fail
///   this way, some more than once; a pause doubling with them left the last chunks of a run
///   waiting minutes while every task was idle.
/// - otherwise: exponential from 1 s to 5 minutes, so that a chunk failing on every task
///   does not spin through them.
pub fn not_before(now: u64, attempts: u64, failure: Failure, jitter: f64) -> u64 {
    let base = match failure {
        Failure::Throttled => THROTTLED_PAUSE_MS,
        Failure::Other => 1_000u64
            .saturating_mul(1 << attempts.saturating_sub(1).min(16))
            .min(300_000),
    };
    let off = (base as f64 * jitter.clamp(0.0, 1.0) / 2.0) as u64;
    now + base - off
}

/// A task's scheduling state. `C` is what a kept chunk carries (the chunk and the listing its
/// lister read, if any); the scheduler only queues it.
#[derive(Debug)]
pub struct Scheduler<C> {
    leases: Leases,
    /// Chunks leased to this task and waiting for a copy slot: those its listers wrote (ready
    /// at once, oldest first) and, ahead of them, those whose copy S3 throttled (ready after a
    /// pause; see [`Scheduler::copy_throttled`]).
    kept: VecDeque<Kept<C>>,
    max_kept: usize,
    /// Partitions this task is listing (it holds their leases).
    listing: BTreeSet<u32>,
    max_listers: usize,
    partitions: Partitions,
    /// Chunks this task is copying.
    copying: usize,
    idle: Idle,
    stopping: bool,
}

/// A chunk leased to this task, waiting to be copied from `ready` (epoch ms).
#[derive(Debug)]
struct Kept<C> {
    sk: String,
    ready: u64,
    chunk: C,
}

impl<C> Scheduler<C> {
    /// A task that keeps at most `max_kept` chunks and lists at most `max_listers` partitions
    /// at once.
    pub fn new(max_kept: usize, max_listers: usize) -> Scheduler<C> {
        Scheduler {
            leases: Leases::default(),
            kept: VecDeque::new(),
            max_kept,
            listing: BTreeSet::new(),
            max_listers,
            partitions: Partitions::default(),
            copying: 0,
            idle: Idle::default(),
            stopping: false,
        }
    }

    /// What the task knows when a work slot is free, with `free_copies` copy permits.
    pub fn slot(&self, free_copies: usize, now: u64) -> Slot {
        Slot {
            copying: self.copying,
            free_copies,
            kept: self.kept.iter().filter(|k| k.ready <= now).count(),
            listing: self.listing.len(),
            max_listers: self.max_listers,
            index_open: self.idle.may_claim(now),
        }
    }

    /// Whether a claim may start at all: not once the task is stopping.
    pub fn claiming(&self) -> bool {
        !self.stopping
    }

    /// Stop claiming and keeping chunks (SIGTERM).
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Whether a lister should keep the chunk it writes for this task.
    pub fn may_keep(&self) -> bool {
        self.kept.len() < self.max_kept && !self.stopping
    }

    /// A lister wrote a chunk leased to this task until `expiry`.
    pub fn kept(&mut self, sk: String, expiry: u64, chunk: C) {
        self.leases.hold(sk.clone(), expiry);
        self.kept.push_back(Kept {
            sk,
            ready: 0,
            chunk,
        });
    }

    /// The first kept chunk ready at `now`, to copy now.
    pub fn take_kept(&mut self, now: u64) -> Option<C> {
        let i = self.kept.iter().position(|k| k.ready <= now)?;
        self.kept.remove(i).map(|k| k.chunk)
    }

    /// Kept chunks not started, to give back on the way out; their leases are dropped.
    pub fn drain_kept(&mut self) -> Vec<C> {
        let kept: Vec<Kept<C>> = self.kept.drain(..).collect();
        kept.into_iter()
            .map(|k| {
                self.leases.release(&k.sk);
                k.chunk
            })
            .collect()
    }

    /// The partitions of `0..count` worth a claim at `now`, starting at `start` (see
    /// [`Partitions::candidates`]), less those this task lists.
    pub fn partition_candidates(&self, count: u32, start: u32, now: u64) -> Vec<u32> {
        self.partitions
            .candidates(count, start, now, |i| self.listing.contains(&i))
    }

    /// Another task answered a claim of partition `i`: listed, or held until a time.
    pub fn partition_done(&mut self, i: u32) {
        self.partitions.done(i);
    }

    pub fn partition_held_until(&mut self, i: u32, until: u64) {
        self.partitions.held_until(i, until);
    }

    /// This task claimed partition `i` (lease `sk`, until `expiry`) and lists it.
    pub fn listing_started(&mut self, i: u32, sk: String, expiry: u64) {
        self.leases.hold(sk, expiry);
        self.listing.insert(i);
    }

    /// This task stopped listing partition `i`: listed to its end (`done`) or not.
    pub fn listing_ended(&mut self, i: u32, sk: &str, done: bool) {
        self.listing.remove(&i);
        self.leases.release(sk);
        if done {
            self.partitions.done(i);
        }
    }

    /// This task claimed a chunk from the claim index: the idle backoff ends.
    pub fn chunk_claimed(&mut self, sk: String, expiry: u64) {
        self.leases.hold(sk, expiry);
        self.idle.found_work();
    }

    pub fn copy_started(&mut self) {
        self.copying += 1;
    }

    /// A chunk's copy ended (copied, failed or abandoned): its lease is dropped.
    pub fn copy_ended(&mut self, sk: &str) {
        self.copying = self.copying.saturating_sub(1);
        self.leases.release(sk);
    }

    /// A chunk's copy ended because S3 kept answering SlowDown ([`Failure::Throttled`]): the
    /// task keeps its lease and copies it again from `ready`, ahead of its other kept chunks.
    /// Given back to the claim index instead, such chunks waited there for a task with a free
    /// slot and no chunk of its own, which in a run that lists ahead is its end: over 10⁷
    /// keys, a hundred of them were left for the last minutes of the run. A stopping task gives
    /// it back ([`Scheduler::drain_kept`]).
    pub fn copy_throttled(&mut self, sk: String, ready: u64, chunk: C) {
        self.copying = self.copying.saturating_sub(1);
        self.kept.push_front(Kept { sk, ready, chunk });
    }

    pub fn copying(&self) -> usize {
        self.copying
    }

    /// A claim found nothing, or the store asked to slow down, at `now`.
    pub fn found_nothing(&mut self, now: u64) {
        self.idle.found_nothing(now);
    }

    /// How long a task with nothing under way waits before it looks for work again: until the
    /// claim index may be asked again, or a kept chunk is ready, whichever is sooner.
    pub fn idle_left(&self, now: u64) -> u64 {
        let index = self.idle.until.saturating_sub(now);
        self.kept
            .iter()
            .map(|k| k.ready.saturating_sub(now))
            .fold(index, u64::min)
    }

    pub fn holds(&self, sk: &str) -> bool {
        self.leases.holds(sk)
    }

    /// Every lease held, sorted.
    pub fn leases(&self) -> Vec<String> {
        self.leases.keys()
    }

    /// Leases to renew at `now` (see [`Leases::due`]).
    pub fn due(&self, now: u64, lease_ms: u64) -> Vec<String> {
        self.leases.due(now, lease_ms)
    }

    pub fn renewed(&mut self, sk: &str, expiry: u64) {
        self.leases.renewed(sk, expiry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a task's life, for the scheduler's table tests.
    #[derive(Debug, Clone, Copy)]
    enum Event {
        Listing(u32),
        ListingEnded(u32, bool),
        Kept(&'static str),
        TakeKept,
        Claimed(&'static str),
        CopyStarted,
        CopyEnded(&'static str),
        /// S3 throttled the copy of a chunk; it is copied again after `ready`.
        Throttled(&'static str, u64),
        FoundNothing,
        Stop,
    }

    fn part(i: u32) -> String {
        format!("P{i}")
    }

    fn apply(s: &mut Scheduler<&'static str>, e: Event, now: u64) {
        match e {
            Event::Listing(i) => s.listing_started(i, part(i), now + 60_000),
            Event::ListingEnded(i, done) => s.listing_ended(i, &part(i), done),
            Event::Kept(c) => s.kept(c.to_string(), now + 60_000, c),
            Event::TakeKept => {
                s.take_kept(now);
            }
            Event::Claimed(c) => s.chunk_claimed(c.to_string(), now + 60_000),
            Event::CopyStarted => s.copy_started(),
            Event::CopyEnded(c) => s.copy_ended(c),
            Event::Throttled(c, ready) => s.copy_throttled(c.to_string(), ready, c),
            Event::FoundNothing => s.found_nothing(now),
            Event::Stop => s.stop(),
        }
    }

    #[test]
    fn the_scheduler_follows_a_tasks_units_through_claim_keep_copy_and_release() {
        use Event::*;
        use Step::*;
        // (events so far, steps for a free slot with 8 free copy permits, leases held)
        let cases: Vec<(Vec<Event>, Vec<Step>, Vec<&str>)> = vec![
            (vec![], vec![ClaimPartition, ClaimChunk], vec![]),
            // Listing one partition; its lister kept a chunk: the chunk goes first.
            (
                vec![Listing(0), Kept("c1")],
                vec![CopyKept],
                vec!["P0", "c1"],
            ),
            // The kept chunk is being copied: list more, or claim.
            (
                vec![Listing(0), Kept("c1"), TakeKept, CopyStarted],
                vec![ClaimPartition, ClaimChunk],
                vec!["P0", "c1"],
            ),
            // Its copy ended and the listing too: nothing held, the partition is done.
            (
                vec![
                    Listing(0),
                    Kept("c1"),
                    TakeKept,
                    CopyStarted,
                    CopyEnded("c1"),
                    ListingEnded(0, true),
                ],
                vec![ClaimPartition, ClaimChunk],
                vec![],
            ),
            // Four listers: no fifth partition.
            (
                vec![Listing(0), Listing(1), Listing(2), Listing(3)],
                vec![ClaimChunk],
                vec!["P0", "P1", "P2", "P3"],
            ),
            // An empty claim index: the task idles, and only listing is tried.
            (vec![FoundNothing], vec![ClaimPartition], vec![]),
            // A claimed chunk ends the idle backoff.
            (
                vec![FoundNothing, Claimed("c2")],
                vec![ClaimPartition, ClaimChunk],
                vec!["c2"],
            ),
        ];
        for (events, want_steps, want_leases) in cases {
            let mut s = Scheduler::new(2, 4);
            for e in &events {
                apply(&mut s, *e, 1_000);
            }
            assert_eq!(steps(&s.slot(8, 1_000)), want_steps, "after {events:?}");
            assert_eq!(s.leases(), want_leases, "after {events:?}");
        }
    }

    #[test]
    fn a_chunk_s3_throttled_keeps_its_lease_and_is_copied_again_after_its_pause_before_the_others()
    {
        use Event::*;
        let mut s = Scheduler::new(2, 4);
        for e in [
            Kept("c1"),
            Kept("c2"),
            TakeKept,
            CopyStarted,
            Throttled("c1", 2_000),
        ] {
            apply(&mut s, e, 1_000);
        }
        assert_eq!(s.leases(), vec!["c1", "c2"], "nothing is given back");
        assert_eq!(s.copying(), 0);
        // Before its pause ends, the other kept chunk is the one to copy.
        assert_eq!(s.slot(8, 1_500).kept, 1);
        assert_eq!(s.take_kept(1_500), Some("c2"));
        assert_eq!(s.slot(8, 1_500).kept, 0);
        assert_eq!(
            steps(&s.slot(8, 1_500)),
            vec![Step::ClaimPartition, Step::ClaimChunk]
        );
        assert_eq!(s.take_kept(1_500), None);
        apply(&mut s, FoundNothing, 1_500);
        assert_eq!(
            s.idle_left(1_500),
            250,
            "the claim index's pause is the shorter"
        );
        apply(&mut s, FoundNothing, 1_600);
        assert_eq!(
            s.idle_left(1_600),
            400,
            "the throttled chunk's pause is the shorter"
        );
        // After it, the throttled chunk goes first.
        apply(&mut s, Kept("c3"), 1_900);
        assert_eq!(steps(&s.slot(8, 2_000)), vec![Step::CopyKept]);
        assert_eq!(s.take_kept(2_000), Some("c1"));
        assert_eq!(s.take_kept(2_000), Some("c3"));
        // A stopping task gives a throttled chunk back with the rest.
        apply(&mut s, Throttled("c1", 9_000), 2_000);
        apply(&mut s, Stop, 2_000);
        assert_eq!(s.drain_kept(), vec!["c1"]);
        assert_eq!(s.leases(), vec!["c2", "c3"]);
    }

    #[test]
    fn a_partition_is_a_candidate_again_unless_this_task_listed_it_to_its_end() {
        use Event::*;
        let cases = [
            (vec![], vec![0, 1, 2]),
            (vec![Listing(1)], vec![0, 2]),
            (vec![Listing(1), ListingEnded(1, true)], vec![0, 2]),
            // A lister that failed gives the partition back to every task, itself included.
            (vec![Listing(1), ListingEnded(1, false)], vec![0, 1, 2]),
        ];
        for (events, want) in cases {
            let mut s: Scheduler<&str> = Scheduler::new(2, 4);
            for e in &events {
                apply(&mut s, *e, 0);
            }
            assert_eq!(s.partition_candidates(3, 0, 0), want, "after {events:?}");
        }
    }

    #[test]
    fn a_stopping_task_keeps_nothing_and_gives_back_what_it_kept() {
        let mut s = Scheduler::new(2, 4);
        assert!(s.may_keep() && s.claiming());
        apply(&mut s, Event::Kept("c1"), 0);
        apply(&mut s, Event::Kept("c2"), 0);
        assert!(!s.may_keep(), "two kept is the most");
        apply(&mut s, Event::TakeKept, 0);
        assert!(s.may_keep());
        apply(&mut s, Event::Stop, 0);
        assert!(!s.may_keep() && !s.claiming());
        assert_eq!(s.drain_kept(), vec!["c2"]);
        assert_eq!(
            s.leases(),
            vec!["c1"],
            "the chunk being copied keeps its lease"
        );
    }

    #[test]
    fn a_free_slot_takes_a_kept_chunk_else_a_partition_else_the_claim_index() {
        let slot = |copying, free_copies, kept, listing, index_open| Slot {
            copying,
            free_copies,
            kept,
            listing,
            max_listers: 4,
            index_open,
        };
        use Step::*;
        let cases = [
            // Nothing running: a kept chunk is all it takes.
            (slot(0, 64, 1, 0, true), vec![CopyKept]),
            // No kept chunk: list first, then the index.
            (slot(0, 64, 0, 0, true), vec![ClaimPartition, ClaimChunk]),
            // All listers busy: only the index.
            (slot(1, 10, 0, 4, true), vec![ClaimChunk]),
            // The index is in its idle backoff: only a partition.
            (slot(1, 10, 0, 1, false), vec![ClaimPartition]),
            // Copies use every permit: no chunk, kept or claimed, but listing goes on.
            (slot(2, 0, 1, 1, true), vec![ClaimPartition]),
            (slot(2, 0, 0, 4, true), vec![]),
        ];
        for (s, want) in cases {
            assert_eq!(steps(&s), want, "{s:?}");
        }
    }

    #[test]
    fn partitions_listed_or_held_elsewhere_are_not_claimed_until_their_lease_could_end() {
        let mut p = Partitions::default();
        p.done(1);
        p.held_until(2, 5_000);
        let mine = |i: u32| i == 4;
        let cases = [
            // (start, now, candidates)
            (0, 1_000, vec![0, 3, 5]),
            (3, 1_000, vec![3, 5, 0]),
            (0, 5_001, vec![0, 2, 3, 5]),
        ];
        for (start, now, want) in cases {
            assert_eq!(p.candidates(6, start, now, mine), want, "{start} {now}");
        }
        assert_eq!(p.candidates(0, 0, 0, mine), Vec::<u32>::new());
    }

    #[test]
    fn leases_are_renewed_once_half_of_them_has_passed() {
        let mut l = Leases::default();
        l.hold("CHUNK#a", 60_000);
        l.hold("CHUNK#b", 40_000);
        l.hold("PART#0001", 100_000);
        let cases = [
            (0, vec![]),
            (10_001, vec!["CHUNK#b"]),
            (30_001, vec!["CHUNK#a", "CHUNK#b"]),
            (70_001, vec!["CHUNK#a", "CHUNK#b", "PART#0001"]),
        ];
        for (now, want) in cases {
            assert_eq!(l.due(now, 60_000), want, "at {now}");
        }
        l.renewed("CHUNK#b", 70_001 + 60_000);
        assert_eq!(l.due(70_001, 60_000), vec!["CHUNK#a", "PART#0001"]);
        l.release("CHUNK#a");
        l.renewed("CHUNK#a", 999_999);
        assert!(
            !l.holds("CHUNK#a"),
            "a renewal does not bring back a dropped lease"
        );
    }

    #[test]
    fn an_idle_task_backs_off_to_a_ceiling_and_resets_on_work() {
        let mut idle = Idle::default();
        assert!(idle.may_claim(0));
        let mut pauses = Vec::new();
        let mut now = 1_000;
        for _ in 0..8 {
            idle.found_nothing(now);
            assert!(!idle.may_claim(now));
            pauses.push(idle.pause);
            now = idle.until;
            assert!(idle.may_claim(now));
        }
        assert_eq!(pauses, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        idle.found_work();
        assert_eq!(idle, Idle::default());
    }

    #[test]
    fn only_throttling_errors_are_a_throttled_failure() {
        let cases = [
            (ErrorKind::Throttled, Failure::Throttled),
            (ErrorKind::Retryable, Failure::Other),
            (ErrorKind::NotFound, Failure::Other),
            (ErrorKind::Conflict, Failure::Other),
            (ErrorKind::AccessDenied, Failure::Other),
        ];
        for (kind, failure) in cases {
            assert_eq!(Failure::of(kind), failure, "{kind:?}");
        }
    }

    #[test]
    fn a_failed_chunk_waits_longer_after_each_attempt_within_bounds_unless_s3_only_slowed_it_down()
    {
        use Failure::{Other, Throttled};
        let cases = [
            (1, Other, 0.0, 1_000),
            (2, Other, 0.0, 2_000),
            (3, Other, 0.0, 4_000),
            (3, Other, 1.0, 2_000),
            (9, Other, 0.0, 256_000),
            (10, Other, 0.0, 300_000),
            (60, Other, 0.5, 225_000),
            (0, Other, 0.0, 1_000),
            // A SlowDown is the budget's business: the chunk waits a second however often.
            (1, Throttled, 0.0, 1_000),
            (9, Throttled, 0.0, 1_000),
            (60, Throttled, 1.0, 500),
        ];
        for (attempts, failure, jitter, wait) in cases {
            assert_eq!(
                not_before(7, attempts, failure, jitter) - 7,
                wait,
                "attempt {attempts}, {failure:?}, jitter {jitter}"
            );
        }
    }
}
