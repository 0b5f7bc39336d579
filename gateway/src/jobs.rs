//! Job workers: every replica claims runnable jobs from the `jobs` table (see `db::jobs` for
//! the claim: `FOR UPDATE SKIP LOCKED`, leases, per-org caps) and runs them.
//!
//! A `webhook` job runs its provider's adapter plugin (the internal route named by
//! `[providers.<name>].route`) with the stored event as the request body, in the event's org,
//! in a fresh instance and one transaction, like any plugin request. A 2xx answer finishes
//! the job; anything else is a failed attempt, retried with exponential backoff and jitter
//! until `max_attempts`, then `dead` (replayable through the API).
//!
//! When the adapter writes to the database, its transaction also marks the job done and
//! records the attempt: its effects and its completion commit together (or not at all, e.g.
//! when the lease was lost to another worker meanwhile). An adapter that writes nothing
//! (only outbound HTTP, say) is recorded afterwards, so its calls are at least once; adapters
//! get the event id (`webhook-event-id`) and the attempt number (`x-job-attempt`) to stay
//! idempotent.
//!
//! A `provider_sync` job runs the same way through its provider's adapter (see
//! `provider_sync`); its adapter's 429 with `retry-after` defers the job without using up an
//! attempt, and a dead one marks what it was about `failed`.
//!
//! Workers have their own pool (`GATEWAY_JOB_DB_CONNECTIONS`) and claim on a connection of
//! their own: a backlog of slow adapters can never take the connections requests need.
//!
//! Workers wake on `NOTIFY gateway_jobs` (sent in the transaction that enqueues), when a job
//! of theirs finishes, when a retry they scheduled comes due, and every [`POLL`] regardless.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use std::collections::HashMap;

use tokio::sync::{mpsc, watch, Semaphore};
use uuid::Uuid;

use crate::db::jobs::{self, Attempt, Claimed, ClaimedJob, EventData};
use crate::state::AppState;

/// The polling backstop when no notification arrives.
pub const POLL: Duration = Duration::from_secs(1);
/// Jobs claimed per round trip at most.
const BATCH: usize = 32;
/// Longest backoff between attempts.
const MAX_BACKOFF_MS: u64 = 3_600_000;
/// How often queue depth is logged.
const DEPTH_EVERY: Duration = Duration::from_secs(10);

/// How often a replica's workers say they are alive (and release dead workers' jobs).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A worker with no heartbeat for this long is dead: its jobs are released.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Settings {
    /// This replica's lasting identity (kept across restarts): the jobs an earlier run left
    /// `processing` are released as soon as it starts again.
    pub replica: String,
    pub workers: usize,
    pub org_concurrency: u32,
    pub lease: Duration,
    /// Connections of the workers' own pool (adapters' transactions and recording attempts).
    pub db_connections: u32,
}

/// Runs `request` through `provider`'s adapter (the internal plugin route its policy names) in
/// `org`, as a job does: a fresh instance, one transaction ended by `before_commit`, the
/// org's provider credentials available to its grants, and the invocation counted. `Err`:
/// the adapter cannot run at all (its text becomes the job's `last_error`).
pub(crate) async fn invoke_adapter(
    state: &AppState,
    pool: &sqlx::PgPool,
    provider: &str,
    org: Uuid,
    request_id: &str,
    request: crate::plugin::bindings::types::Request,
    before_commit: crate::plugin::BeforeCommit<'static>,
) -> Result<(Arc<crate::plugin::LoadedPlugin>, crate::plugin::Outcome), String> {
    let route = {
        let routing = state.routing();
        let p = routing.policies.providers.get(provider).ok_or_else(|| format!("provider {provider:?} is not in the policies"))?;
        p.route.clone().ok_or_else(|| format!("provider {provider:?} has no route in the policies (it is only called out to)"))?
    };
    invoke_route(state, pool, &route, org, request_id, request, before_commit).await
}

/// Runs `request` through the internal plugin route `route_id` in `org`, as a job does (see
/// [`invoke_adapter`], which resolves a provider's route to this).
pub(crate) async fn invoke_route(
    state: &AppState,
    pool: &sqlx::PgPool,
    route_id: &str,
    org: Uuid,
    request_id: &str,
    request: crate::plugin::bindings::types::Request,
    before_commit: crate::plugin::BeforeCommit<'static>,
) -> Result<(Arc<crate::plugin::LoadedPlugin>, crate::plugin::Outcome), String> {
    let routing = state.routing();
    let policies = &routing.policies;
    let route = policies.route(route_id).ok_or_else(|| format!("route {route_id:?} is not in the policies"))?;
    let crate::policy::Target::Plugin(name) = &route.target else {
        return Err(format!("route {:?} does not target a plugin", route.id));
    };
    let plugin = state.plugin(name).ok_or_else(|| format!("plugin {name:?} is not loaded"))?;
    let (schema, grants) = state.plugin_grants(route, name);
    let started = std::time::Instant::now();
    let outcome = state
        .runtime
        .invoke(
            &plugin,
            crate::plugin::Invocation {
                label: &route.id,
                grants,
                sandbox: route.sandbox,
                pool,
                schema,
                org,
                user: None,
                role: crate::role::Role::Member,
                request_id,
                request,
                before_commit: Some(before_commit),
                credentials: Some(state.providers.clone()),
            },
        )
        .await;
    state.metrics.plugin_invocation(&plugin.name, &plugin.version, outcome.kind(), started.elapsed());
    if !matches!(outcome, crate::plugin::Outcome::Response(_)) {
        state.console.hourly.plugin_failed(org);
    }
    Ok((plugin, outcome))
}

/// The running workers of this replica.
pub struct Workers {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Workers {
    pub fn start(state: Arc<AppState>, settings: Settings) -> Option<Workers> {
        if settings.workers == 0 {
            tracing::info!("job workers disabled (GATEWAY_JOB_WORKERS=0)");
            return None;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(state, settings, stopped));
        Some(Workers { stop, task })
    }

    /// Stops claiming and waits (up to `grace`) for running jobs; those still running after
    /// it are re-run elsewhere when their lease ends.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            tracing::warn!("job workers did not finish within the grace period; their leases will expire");
        }
    }
}

/// `<replica>/<incarnation>`: unique per process, and recognisably this replica's.
fn worker_id(replica: &str) -> String {
    format!("{replica}/{}", &Uuid::new_v4().simple().to_string()[..12])
}

async fn run(state: Arc<AppState>, settings: Settings, mut stopped: watch::Receiver<bool>) {
    let worker = worker_id(&settings.replica);
    let pool = crate::db::sibling_pool(&state.pool, settings.db_connections);
    state.metrics.watch_pool("jobs", pool.clone());
    // Alive before the first claim, so no other replica takes this one's jobs for a dead
    // worker's; and the jobs this replica's previous run left behind are released now.
    // It stops when this task ends (or is aborted): `beat_stop` is dropped either way.
    let (beat_stop, beat_stopped) = watch::channel(());
    let beat = tokio::spawn(heartbeat(pool.clone(), worker.clone(), format!("{}/", settings.replica), beat_stopped));
    let permits = Arc::new(Semaphore::new(settings.workers));
    let mut running = tokio::task::JoinSet::new();
    // The first reading at once, so the metric has a value from the start.
    let mut depth_at: Option<tokio::time::Instant> = None;
    let mut conn: Option<jobs::ClaimConnection> = None;
    let (done, finished) = mpsc::unbounded_channel();
    let finisher = tokio::spawn(finisher(state.clone(), pool.clone(), worker.clone(), finished));
    tracing::info!(worker = %worker, workers = settings.workers, org_concurrency = settings.org_concurrency, "job workers started");
    loop {
        if *stopped.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        if depth_at.is_none_or(|at| at.elapsed() >= DEPTH_EVERY) {
            depth_at = Some(tokio::time::Instant::now());
            log_depth(&state, &pool).await;
        }
        // Registered before the claim, so a notification during it is not lost.
        let notified = state.jobs_wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let free = permits.available_permits().min(BATCH);
        let mut claimed_all = false;
        if free > 0 {
            if conn.is_none() {
                match jobs::claim_connection(&pool).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => tracing::warn!(error = %crate::error::loggable(&e), "job claim connection failed"),
                }
            }
            if let Some(c) = conn.as_mut() {
                let lease = settings.lease.as_secs_f64();
                match jobs::claim(c, &worker, free as i64, i64::from(settings.org_concurrency), lease).await {
                    Ok(claimed) => {
                        claimed_all = claimed.len() == free;
                        for ClaimedJob { job, event } in claimed {
                            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
                            let (state, pool, done, worker) = (state.clone(), pool.clone(), done.clone(), worker.clone());
                            running.spawn(async move {
                                execute(&state, &pool, &worker, job, event, &done).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::error::loggable(&e), "claiming jobs failed");
                        conn = None;
                    }
                }
            }
        }
        if claimed_all {
            continue;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stopped.changed() => {}
        }
    }
    while running.join_next().await.is_some() {}
    // The finisher ends once every sender is gone, after recording what is left.
    drop(done);
    let _ = finisher.await;
    drop(beat_stop);
    let _ = beat.await;
    pool.close().await;
    tracing::info!(worker = %worker, "job workers stopped");
}

/// Beats every [`HEARTBEAT`] on a platform-scope connection of its own (a busy claim loop or
/// a slow adapter never delays it), releasing dead workers' jobs as it goes. When the workers
/// are gone (`stopped`'s sender dropped) it removes its row, so anything this replica still
/// held is released by the others at once instead of when its lease ends.
async fn heartbeat(pool: sqlx::PgPool, worker: String, replica_prefix: String, mut stopped: watch::Receiver<()>) {
    let mut conn: Option<jobs::ClaimConnection> = None;
    let mut first = true;
    loop {
        if conn.is_none() {
            match jobs::claim_connection(&pool).await {
                Ok(c) => conn = Some(c),
                Err(e) => tracing::warn!(error = %crate::error::loggable(&e), "job heartbeat connection failed"),
            }
        }
        if let Some(c) = conn.as_mut() {
            let beat = jobs::heartbeat(c, &worker, &replica_prefix, HEARTBEAT_STALE.as_secs_f64());
            match tokio::time::timeout(HEARTBEAT, beat).await {
                Ok(Ok(released)) => {
                    if released > 0 {
                        tracing::warn!(worker = %worker, released, "job_leases_released");
                    }
                    if first {
                        first = false;
                        tracing::info!(worker = %worker, "job worker heartbeat started");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::error::loggable(&e), "job heartbeat failed");
                    conn = None;
                }
                Err(_) => {
                    tracing::warn!("job heartbeat timed out");
                    conn = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = stopped.changed() => break,
        }
    }
    if let Some(c) = conn.as_mut() {
        let _ = tokio::time::timeout(HEARTBEAT, jobs::forget_worker(c, &worker)).await;
    }
}

/// Logs the queue's depth per org and status, and sets `gateway_jobs` (summed over orgs).
async fn log_depth(state: &AppState, pool: &sqlx::PgPool) {
    match jobs::depth(pool).await {
        Ok(rows) => {
            for (org, status, count) in &rows {
                tracing::info!(org_id = %org, status = %status, count, "job_queue_depth");
            }
            state.metrics.job_depth(rows.into_iter().map(|(_, status, count)| (status, count)));
        }
        Err(e) => tracing::debug!(error = %crate::error::loggable(&e), "queue depth unavailable"),
    }
}

/// The delay before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped, with jitter (a
/// random point in its upper half), so that failing jobs of many orgs do not retry in step.
pub fn backoff(base_ms: u32, attempt: i32) -> Duration {
    let exp = (attempt.max(1) - 1).min(30) as u32;
    let full = (u64::from(base_ms)).saturating_mul(1u64 << exp).min(MAX_BACKOFF_MS);
    let jittered = rand::thread_rng().gen_range(full / 2..=full.max(1));
    Duration::from_millis(jittered)
}

/// A finished attempt on its way to the finisher.
struct Finished {
    org: Uuid,
    kind: String,
    attempt: Attempt,
    ms: i64,
}

/// How a job's attempt ended when it did not fail.
pub enum Ran {
    /// Already recorded, in the runner's own transaction (with the adapter's effects).
    Recorded(Attempt),
    /// For the finisher to record.
    Unrecorded(Attempt),
}

/// Runs one claimed job and hands the outcome to the finisher.
async fn execute(state: &AppState, pool: &sqlx::PgPool, worker: &str, job: Claimed, event: Option<EventData>, finished: &mpsc::UnboundedSender<Finished>) {
    let started = Utc::now();
    let run_id = Uuid::new_v4();
    let done = Attempt { job: job.id, attempt: job.attempts, status: "done", error: None, retry_at: None, run_id, started, output: None };
    let outcome = if job.attempts > job.max_attempts {
        // Its last attempt's worker died holding the lease.
        Err::<Ran, _>("the last attempt did not finish (lease expired)".to_string())
    } else {
        match (job.kind.as_str(), event) {
            ("webhook", Some(event)) => crate::webhooks::adapter::run(state, pool, worker, &job, &event, &done)
                .await
                .map(|recorded| if recorded { Ran::Recorded(done.clone()) } else { Ran::Unrecorded(done.clone()) }),
            ("webhook", None) => Err("the event this job refers to is gone".to_string()),
            (crate::provider_sync::KIND, _) => crate::provider_sync::run(state, pool, worker, &job, &done).await,
            (crate::optimizer::KIND, _) => crate::optimizer::run(state, pool, worker, &job, &done).await,
            ("stats", _) => crate::chain::run_stats(pool, worker, &job, &done).await,
            ("notify", _) => crate::chain::run_notify(state, pool, worker, &job, &done).await,
            (kind, _) => Err(format!("no runner for job kind {kind:?}")),
        }
    };
    let ms = || (Utc::now() - started).num_milliseconds();
    let recorded = |a: &Attempt| {
        log_attempt(job.tenant_id, a, ms());
        state.metrics.job_attempt(&job.kind, attempt_outcome(a));
        state.jobs_wake.notify_waiters();
    };
    let attempt = match outcome {
        Ok(Ran::Recorded(a)) => return recorded(&a),
        Ok(Ran::Unrecorded(a)) => a,
        Err(error) if job.attempts < job.max_attempts => {
            let wait = backoff(job.retry_base_ms.max(1) as u32, job.attempts);
            let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            Attempt { status: "pending", error: Some(error), retry_at: Some(at), ..done }
        }
        Err(error) => Attempt { status: "dead", error: Some(error), ..done },
    };
    // A dead sync job also marks what it was about as failed, in the same transaction.
    if attempt.status == "dead" && job.kind == crate::provider_sync::KIND {
        match crate::provider_sync::bury(pool, worker, &job, &attempt).await {
            Ok(true) => return recorded(&attempt),
            Ok(false) => {
                tracing::warn!(job_id = %job.id, org_id = %job.tenant_id, "job_lease_lost");
                state.metrics.job_attempt(&job.kind, "lease_lost");
                return;
            }
            // Left to its lease: it runs again, finds its attempts spent and is buried then.
            Err(e) => {
                tracing::error!(job_id = %job.id, org_id = %job.tenant_id, error = %crate::error::loggable(&e), "job_finish_failed");
                return;
            }
        }
    }
    let _ = finished.send(Finished { org: job.tenant_id, kind: job.kind, attempt, ms: ms() });
}

/// `gateway_job_attempts_total`'s outcome for a recorded attempt.
fn attempt_outcome(a: &Attempt) -> &'static str {
    match a.status {
        "done" => "done",
        "pending" => "retry",
        "deferred" => "deferred",
        _ => "dead",
    }
}

fn log_attempt(org: Uuid, a: &Attempt, ms: i64) {
    match a.status {
        "done" => tracing::info!(job_id = %a.job, org_id = %org, run_id = %a.run_id, attempt = a.attempt, ms, "job_done"),
        "pending" => tracing::warn!(job_id = %a.job, org_id = %org, run_id = %a.run_id, attempt = a.attempt, ms, "job_failed_will_retry"),
        "deferred" => tracing::info!(job_id = %a.job, org_id = %org, run_id = %a.run_id, attempt = a.attempt, ms, "job_deferred"),
        _ => tracing::warn!(job_id = %a.job, org_id = %org, run_id = %a.run_id, attempt = a.attempt, ms, "job_dead"),
    }
}

/// Records finished attempts, batching what has accumulated: one transaction per org for
/// all of them, instead of one per job. A batch that cannot be recorded is logged; its jobs
/// are re-run when their leases end (at least once).
async fn finisher(state: Arc<AppState>, pool: sqlx::PgPool, worker: String, mut rx: mpsc::UnboundedReceiver<Finished>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let mut by_org: HashMap<Uuid, Vec<Finished>> = HashMap::new();
        for f in batch {
            by_org.entry(f.org).or_default().push(f);
        }
        let mut soonest: Option<Duration> = None;
        for (org, items) in by_org {
            let attempts: Vec<Attempt> = items.iter().map(|f| f.attempt.clone()).collect();
            let recorded = match jobs::finish(&pool, org, &worker, &attempts).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(org_id = %org, jobs = attempts.len(), error = %crate::error::loggable(&e), "job_finish_failed");
                    continue;
                }
            };
            for f in &items {
                let a = &f.attempt;
                if !recorded.contains(&a.job) {
                    tracing::warn!(job_id = %a.job, org_id = %org, "job_lease_lost");
                    state.metrics.job_attempt(&f.kind, "lease_lost");
                    continue;
                }
                log_attempt(org, a, f.ms);
                state.metrics.job_attempt(&f.kind, attempt_outcome(a));
                if let Some(at) = a.retry_at {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                }
            }
        }
        // Slots (and orgs' concurrency) are free again in the database: claim more.
        state.jobs_wake.notify_waiters();
        // Wake the claim loop when a retry this replica scheduled is due (sooner than polling).
        if let Some(wait) = soonest.filter(|w| *w < POLL) {
            let wake = state.jobs_wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                wake.notify_waiters();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half_and_is_capped() {
        for attempt in 1..=5 {
            let full = 100u64 << (attempt - 1);
            for _ in 0..50 {
                let d = backoff(100, attempt).as_millis() as u64;
                assert!((full / 2..=full).contains(&d), "attempt {attempt}: {d}");
            }
        }
        assert!(backoff(1_000_000, 40) <= Duration::from_millis(MAX_BACKOFF_MS));
    }
}
