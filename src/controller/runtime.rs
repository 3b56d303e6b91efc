//! The runtime around `reconcile`: the leader campaign, the work queue's dispatcher, stream
//! events and periodic resyncs. It knows nothing of what a job is; `reconcile.rs` does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, Semaphore};
use tracing::Instrument;

use super::queue::{Backoff, Outcome, Queue};
use super::reconcile::needs_attention;
use super::{Action, Context, ReconcileError, http, leader, reconcile, watch};
use crate::model::CopyJobStatus;

/// State shared by the operator's tasks.
pub(super) struct Shared {
    queue: Mutex<Queue>,
    notify: Notify,
    pub(super) leading: AtomicBool,
    pub(super) store_ok: AtomicBool,
}

impl Shared {
    async fn trigger(&self, job: &str, after: Duration) {
        self.queue.lock().await.trigger(job, Instant::now() + after);
        self.notify.notify_one();
    }
}

/// Runs the operator until SIGTERM/SIGINT: serves HTTP, campaigns for the lease, and while it
/// leads, watches the stream, resyncs and reconciles.
pub async fn run_operator(
    ctx: Arc<Context>,
    listen: std::net::SocketAddr,
    holder: String,
) -> Result<(), std::io::Error> {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::new(Backoff::default())),
        notify: Notify::new(),
        leading: AtomicBool::new(false),
        store_ok: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(http::serve(listener, Arc::clone(&ctx), Arc::clone(&shared)));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = campaign(Arc::clone(&ctx), Arc::clone(&shared), holder.clone()) => {}
    }
    // Dropping the campaign aborted the reconciles; the fence stops any write still on its way.
    ctx.fence.revoke();
    if shared.leading.load(Ordering::Relaxed) {
        if let Err(e) = ctx.lease_store.release_leader_lease(&holder).await {
            tracing::warn!(error = %e, "could not release the leader lease; it expires by itself");
        }
    }
    http.abort();
    tracing::info!("operator stopped");
    Ok(())
}

/// Milliseconds of a lease, for the store.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(15_000)
}

/// Waits for the lease (`leader::judge`: a holder that stays silent for a full lease on this
/// replica's clock), leads while it holds it, and starts over when it loses it.
async fn campaign(ctx: Arc<Context>, shared: Arc<Shared>, holder: String) {
    let ttl = ctx.timing.lease;
    let poll = ttl / 3;
    let mut last: Option<leader::Sighting> = None;
    loop {
        let read = tokio::time::timeout(poll, ctx.lease_store.leader_lease()).await;
        let claim = match read {
            Ok(Ok(record)) => {
                shared.store_ok.store(true, Ordering::Relaxed);
                let record = record.map(|r| leader::Record {
                    holder: r.holder,
                    version: r.version,
                });
                leader::judge(&holder, record.as_ref(), &mut last, Instant::now(), ttl)
            }
            Ok(Err(e)) => {
                shared.store_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot reach the store to campaign for the lease");
                leader::Claim::Wait
            }
            Err(_) => {
                shared.store_ok.store(false, Ordering::Relaxed);
                tracing::warn!("reading the leader lease timed out");
                leader::Claim::Wait
            }
        };
        if let leader::Claim::Take { seen } = claim {
            let sent = Instant::now();
            let taken = tokio::time::timeout(
                poll,
                ctx.lease_store
                    .claim_leader_lease(&holder, ttl_ms(ttl), seen.as_deref()),
            )
            .await;
            if let Ok(Ok(true)) = taken {
                last = None;
                ctx.fence.grant(sent, ttl);
                tracing::info!(holder = %holder, "acquired the leader lease; reconciling");
                shared.leading.store(true, Ordering::Relaxed);
                ctx.metrics.set_leader(true);
                lead(Arc::clone(&ctx), Arc::clone(&shared), &holder).await;
                shared.leading.store(false, Ordering::Relaxed);
                ctx.metrics.step_down();
                tracing::warn!(holder = %holder, "lost the leader lease; stopped reconciling");
                continue;
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Leads until the lease cannot be renewed: runs the watch, the resync and the dispatcher.
/// Each renewal has a third of the lease to answer; the fence runs from each successful
/// renewal's send time. On loss, the fence is revoked first, then every reconcile is aborted
/// and awaited, so none is still running when the queue starts over.
async fn lead(ctx: Arc<Context>, shared: Arc<Shared>, holder: &str) {
    let ttl = ctx.timing.lease;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_stream(Arc::clone(&ctx), Arc::clone(&shared)));
    tasks.spawn(resync(Arc::clone(&ctx), Arc::clone(&shared)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let dispatcher = tokio::spawn(dispatch(Arc::clone(&ctx), Arc::clone(&shared), stopped));
    loop {
        tokio::time::sleep(ttl / 3).await;
        if !ctx.fence.valid() {
            // The process stalled past its lease (or renewals kept failing): whatever the
            // table says now, this replica stops acting on its own clock.
            tracing::warn!("the leader lease ran out on this replica's clock");
            break;
        }
        let sent = Instant::now();
        let renewed = tokio::time::timeout(
            ttl / 3,
            ctx.lease_store
                .claim_leader_lease(holder, ttl_ms(ttl), None),
        )
        .await;
        match renewed {
            Ok(Ok(true)) => {
                shared.store_ok.store(true, Ordering::Relaxed);
                ctx.fence.grant(sent, ttl);
            }
            Ok(Ok(false)) => break,
            Ok(Err(e)) => {
                shared.store_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot renew the leader lease");
            }
            Err(_) => tracing::warn!("renewing the leader lease timed out"),
        }
    }
    ctx.fence.revoke();
    let _ = stop.send(true);
    if let Err(e) = dispatcher.await {
        tracing::warn!(error = %e, "the dispatcher ended abnormally");
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // A new term starts from a clean queue; no reconcile of the old term is still running.
    *shared.queue.lock().await = Queue::new(Backoff::default());
}

async fn watch_stream(ctx: Arc<Context>, shared: Arc<Shared>) {
    let arn = match ctx.store.stream_arn().await {
        Ok(Some(arn)) => arn,
        Ok(None) => {
            tracing::warn!(
                "the table has no stream; changes are seen on resyncs only (run `ferry init`)"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the table's stream; relying on resyncs");
            return;
        }
    };
    let conf = aws_sdk_dynamodbstreams::config::Builder::from(ctx.roles.base())
        .interceptor(ctx.counter.clone())
        .build();
    let client = aws_sdk_dynamodbstreams::Client::from_conf(conf);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let poll = ctx.timing.stream_poll;
    tokio::spawn(watch::follow(client, arn, tx, poll, watch::DESCRIBE_EVERY));
    while let Some(watch::Event::Job(job, after)) = rx.recv().await {
        shared.trigger(&job, after).await;
    }
}

async fn resync(ctx: Arc<Context>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(ctx.timing.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Page by page: 10,000 jobs are never held at once.
        let now = crate::store::runs::now_ms();
        let (mut seen, mut triggered) = (0, 0);
        let mut pages = ctx.store.job_pages(None);
        loop {
            let jobs = match pages.next().await {
                Ok(Some(jobs)) => jobs,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "resync: cannot list jobs");
                    break;
                }
            };
            seen += jobs.len();
            for job in &jobs {
                if let Some(s) = &job.job.status {
                    ctx.metrics.observe_job(job.name(), s, running_of(s));
                    ctx.metrics.observe_schedule(
                        job.name(),
                        super::plan::schedule_period(&job.job.spec.run, now),
                    );
                }
                if needs_attention(job, ctx.drift_due(job.name()), now) {
                    shared.queue.lock().await.resync(job.name(), Instant::now());
                    shared.notify.notify_one();
                    triggered += 1;
                }
            }
        }
        tracing::debug!(jobs = seen, triggered, "resync");
        // A pass over 10,000 jobs frees megabytes that glibc would otherwise keep resident.
        crate::memory::trim();
    }
}

fn running_of(s: &CopyJobStatus) -> usize {
    s.run
        .as_ref()
        .filter(|r| r.finished_at.is_none())
        .map_or(0, |r| r.tasks.iter().filter(|t| t.arn.is_some()).count())
}

/// Hands due jobs to at most `concurrency` reconciles at once; never the same job twice. The
/// reconciles live in a `JoinSet`: when `stop` turns true they are aborted and awaited before
/// this returns.
async fn dispatch(
    ctx: Arc<Context>,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(ctx.timing.concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    loop {
        // Reap finished reconciles so the set does not grow.
        while running.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let (job, next) = {
            let mut q = shared.queue.lock().await;
            let now = Instant::now();
            let job = q.pop_waited(now).map(|(job, waited)| {
                ctx.metrics.queued_for(waited.as_secs_f64());
                job
            });
            ctx.metrics.observe_queue(q.stats(now));
            (job, q.next_due())
        };
        let Some(job) = job else {
            drop(permit);
            let wait = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = shared.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let shared = Arc::clone(&shared);
        running.spawn(async move {
            let started = Instant::now();
            let span = tracing::info_span!(
                "reconcile",
                job = %job,
                generation = tracing::field::Empty
            );
            let result = reconcile(&job, &ctx).instrument(span).await;
            let outcome = match &result {
                Ok(Action(after)) => Outcome::Requeue(*after),
                Err(e) => super::error_policy(&job, e, &ctx),
            };
            ctx.metrics.reconciled(
                started.elapsed().as_secs_f64(),
                result.as_ref().err().map(ReconcileError::label),
            );
            let jitter = rand::random::<f64>();
            let stats = {
                let mut q = shared.queue.lock().await;
                let now = Instant::now();
                q.finish(&job, outcome, now, jitter);
                q.stats(now)
            };
            ctx.metrics.observe_queue(stats);
            shared.notify.notify_one();
            drop(permit);
        });
    }
    let aborted = running.len();
    running.abort_all();
    while running.join_next().await.is_some() {}
    if aborted > 0 {
        tracing::info!(aborted, "stopped the reconciles under way");
    }
}
