//! The job queue (`jobs`) and its attempt log (`agent_runs`).
//!
//! Claiming is the one cross-tenant operation: it runs with `app.scope = 'platform'` (see
//! migration 0004) and takes, for up to `batch` orgs with runnable work (in random order, so
//! no org is always first), the oldest runnable jobs up to the org's free concurrency, with
//! `FOR UPDATE SKIP LOCKED` so concurrent claimers (other workers, other replicas) never take
//! the same job. A claim is a lease: `run_at` becomes the lease's end, after which a job still
//! `processing` (its worker died) is runnable again. Leases are ended sooner by
//! [`heartbeat`]: a job whose worker stopped beating (migration 0005's `job_workers`), or that
//! an earlier incarnation of the same replica left behind, is released at once.
//!
//! Finishing attempts runs in the jobs' tenant context, several attempts of one org per
//! transaction.
//!
//! `jobs` is partitioned by `finished_at` (migration 0008): a live job has none and lives in
//! the default partition, so every statement about live jobs says `finished_at IS NULL`, and
//! reads that one partition however long the history. Finishing a job moves it into its day.
//! A webhook job's `created_at` is its event's `received_at`, the event's partition key.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;
use crate::role::Actor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: String,
    pub ref_id: Option<Uuid>,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    pub max_attempts: i32,
    pub retry_base_ms: i32,
    /// What a `provider_sync` job is to do (`{"op", ...}`); `None` for webhook jobs.
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct EventData {
    pub id: Uuid,
    pub provider: String,
    pub event_key: String,
    pub event_type: Option<String>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

/// Opens the claimer's own connection: outside the pool, in the platform scope for its whole
/// session, and used for nothing but claims, so a claim is one statement and one round trip.
pub async fn claim_connection(pool: &PgPool) -> Result<ClaimConnection> {
    use sqlx::ConnectOptions;
    let mut conn = pool.connect_options().as_ref().clone().connect().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', false)").execute(&mut conn).await?;
    Ok(ClaimConnection(conn))
}

/// A session in the platform scope, good for nothing but [`claim`].
pub struct ClaimConnection(sqlx::PgConnection);

/// A claimed job and, for webhook jobs, its event.
pub struct ClaimedJob {
    pub job: Claimed,
    pub event: Option<EventData>,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    #[sqlx(flatten)]
    job: Claimed,
    event_provider: Option<String>,
    event_key: Option<String>,
    event_type: Option<String>,
    event_body: Option<Vec<u8>>,
    event_content_type: Option<String>,
}

/// Claims up to `batch` runnable jobs, at most `org_cap` running per org, leased for
/// `lease_secs`, with the webhook events they refer to; on a [`claim_connection`].
pub async fn claim(conn: &mut ClaimConnection, worker: &str, batch: i64, org_cap: i64, lease_secs: f64) -> Result<Vec<ClaimedJob>> {
    let rows: Vec<ClaimRow> = sqlx::query_as(
        "WITH RECURSIVE orgs(t) AS ( \
             (SELECT tenant_id FROM jobs WHERE finished_at IS NULL AND status IN ('pending', 'processing') AND run_at <= now() \
              ORDER BY tenant_id LIMIT 1) \
             UNION ALL \
             SELECT (SELECT j.tenant_id FROM jobs j \
                     WHERE j.finished_at IS NULL AND j.status IN ('pending', 'processing') AND j.run_at <= now() AND j.tenant_id > o.t \
                     ORDER BY j.tenant_id LIMIT 1) \
             FROM orgs o WHERE o.t IS NOT NULL), \
         chosen AS (SELECT t FROM orgs WHERE t IS NOT NULL ORDER BY random() LIMIT $1), \
         picked AS ( \
             SELECT c.id FROM chosen o CROSS JOIN LATERAL ( \
                 SELECT j.id FROM jobs j \
                 WHERE j.finished_at IS NULL AND j.tenant_id = o.t AND j.status IN ('pending', 'processing') AND j.run_at <= now() \
                 ORDER BY j.run_at \
                 LIMIT GREATEST(0, $2 - (SELECT count(*) FROM jobs r \
                                          WHERE r.finished_at IS NULL AND r.tenant_id = o.t AND r.status = 'processing' \
                                            AND r.run_at > now())) \
                 FOR UPDATE SKIP LOCKED) c \
             LIMIT $1), \
         u AS ( \
             UPDATE jobs SET status = 'processing', attempts = jobs.attempts + 1, \
                    run_at = now() + make_interval(secs => $3), locked_by = $4, updated_at = now() \
             FROM picked WHERE jobs.finished_at IS NULL AND jobs.id = picked.id \
             RETURNING jobs.id, jobs.tenant_id, jobs.kind, jobs.ref_id, jobs.attempts, jobs.max_attempts, jobs.retry_base_ms, \
                       jobs.payload, jobs.created_at) \
         SELECT u.*, e.provider AS event_provider, e.event_key, e.event_type, e.body AS event_body, \
                e.content_type AS event_content_type \
         FROM u LEFT JOIN webhook_events e ON u.kind = 'webhook' AND e.tenant_id = u.tenant_id AND e.id = u.ref_id \
              AND e.received_at = u.created_at",
    )
    .bind(batch)
    .bind(org_cap)
    .bind(lease_secs)
    .bind(worker)
    .fetch_all(&mut conn.0)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let event = match (r.job.ref_id, r.event_provider, r.event_key, r.event_body) {
                (Some(id), Some(provider), Some(event_key), Some(body)) => Some(EventData {
                    id,
                    provider,
                    event_key,
                    event_type: r.event_type,
                    body,
                    content_type: r.event_content_type,
                }),
                _ => None,
            };
            ClaimedJob { job: r.job, event }
        })
        .collect())
}

/// Says `worker` is alive and releases the jobs of workers that are not, in one statement on
/// a [`claim_connection`]: a processing job whose worker has no heartbeat newer than
/// `stale_secs` (or never had one), or that an earlier incarnation of this replica (a worker id
/// starting with `replica_prefix`) left behind, has its lease ended, so it is runnable again
/// and no longer counted against its org's concurrency. Returns the number released.
pub async fn heartbeat(conn: &mut ClaimConnection, worker: &str, replica_prefix: &str, stale_secs: f64) -> Result<u64> {
    let released = sqlx::query(
        "WITH beat AS ( \
             INSERT INTO job_workers (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()), \
         forgotten AS ( \
             DELETE FROM job_workers WHERE id <> $1 \
                 AND (starts_with(id, $2) OR heartbeat_at < now() - interval '1 hour')) \
         UPDATE jobs j SET run_at = now(), updated_at = now() \
         WHERE j.finished_at IS NULL AND j.status = 'processing' AND j.run_at > now() AND j.locked_by <> $1 \
           AND (starts_with(j.locked_by, $2) \
                OR NOT EXISTS (SELECT 1 FROM job_workers w \
                               WHERE w.id = j.locked_by AND w.heartbeat_at > now() - make_interval(secs => $3)))",
    )
    .bind(worker)
    .bind(replica_prefix)
    .bind(stale_secs)
    .execute(&mut conn.0)
    .await?
    .rows_affected();
    Ok(released)
}

/// Removes `worker`'s heartbeat at a clean stop: whatever it still holds is released by the
/// next heartbeat of any replica instead of waiting for its lease.
pub async fn forget_worker(conn: &mut ClaimConnection, worker: &str) -> Result<()> {
    sqlx::query("DELETE FROM job_workers WHERE id = $1").bind(worker).execute(&mut conn.0).await?;
    Ok(())
}

/// One finished attempt, as the finisher records it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub job: Uuid,
    /// The attempt number the claim gave it (a re-claimed job has a higher one).
    pub attempt: i32,
    /// `done`, `pending` (retry at `retry_at`), `dead`, or `deferred`: back to `pending` at
    /// `retry_at` without using up the attempt (the provider said 429 with `retry-after`).
    pub status: &'static str,
    pub error: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
    pub run_id: Uuid,
    pub started: DateTime<Utc>,
    /// What the run did (`agent_runs.output`), when its runner says.
    pub output: Option<serde_json::Value>,
}

/// Enqueues a job of `kind` carrying `payload` (every kind: webhook jobs have their own, with
/// the event) and wakes the workers when the transaction commits, with the rows the job is
/// about, or not at all.
pub async fn enqueue(tx: &mut TenantTx, kind: &str, ref_id: Option<Uuid>, payload: &serde_json::Value, max_attempts: i32, retry_base_ms: i32) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "WITH j AS ( \
             INSERT INTO jobs (tenant_id, kind, ref_id, max_attempts, retry_base_ms, payload) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id) \
         SELECT j.id FROM j, (SELECT pg_notify($7, '')) n",
    )
    .bind(tx.org())
    .bind(kind)
    .bind(ref_id)
    .bind(max_attempts)
    .bind(retry_base_ms)
    .bind(payload)
    .bind(super::webhooks::JOBS_CHANNEL)
    .fetch_one(tx.conn())
    .await?)
}

/// Records finished attempts of one org (an `agent_runs` row each) and moves their jobs on,
/// in one transaction in the org's tenant context. Returns the jobs that were still ours;
/// a job whose lease expired and was taken by another worker is left alone.
pub async fn finish(pool: &PgPool, org: Uuid, worker: &str, attempts: &[Attempt]) -> Result<Vec<Uuid>> {
    let mut tx = crate::db::begin_tenant(pool, org, Actor::System).await?;
    let finished = finish_on(&mut tx, worker, attempts).await?;
    tx.commit().await?;
    Ok(finished)
}

/// [`finish`] inside a transaction that is already in the org's tenant context (the
/// adapter's own, so that its effects and its job's completion commit together).
pub async fn finish_on(tx: &mut TenantTx, worker: &str, attempts: &[Attempt]) -> Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = attempts.iter().map(|a| a.job).collect();
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    let statuses: Vec<&str> = attempts.iter().map(|a| a.status).collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
    let retry_at: Vec<Option<DateTime<Utc>>> = attempts.iter().map(|a| a.retry_at).collect();
    let runs: Vec<Uuid> = attempts.iter().map(|a| a.run_id).collect();
    let started: Vec<DateTime<Utc>> = attempts.iter().map(|a| a.started).collect();
    let outputs: Vec<Option<String>> = attempts.iter().map(|a| a.output.as_ref().map(|o| o.to_string())).collect();
    let finished: Vec<Uuid> = sqlx::query_scalar(
        "WITH input AS ( \
             SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::timestamptz[], $7::uuid[], $8::timestamptz[], \
                                  $10::text[]) \
                 AS t(id, attempt, status, error, retry_at, run_id, started, output)), \
         u AS ( \
             UPDATE jobs j SET status = CASE WHEN i.status = 'deferred' THEN 'pending' ELSE i.status END, \
                    attempts = j.attempts - CASE WHEN i.status = 'deferred' THEN 1 ELSE 0 END, \
                    last_error = i.error, run_at = COALESCE(i.retry_at, j.run_at), \
                    locked_by = NULL, last_run_id = i.run_id, updated_at = now(), \
                    finished_at = CASE WHEN i.status IN ('done', 'dead') THEN now() END \
             FROM input i \
             WHERE j.finished_at IS NULL AND j.tenant_id = $1 AND j.id = i.id AND j.status = 'processing' \
               AND j.attempts = i.attempt \
               AND j.locked_by = $9 \
             RETURNING j.id, j.kind, j.ref_id, j.payload, i.attempt, i.status, i.error, i.run_id, i.started, i.output), \
         r AS ( \
             INSERT INTO agent_runs (id, tenant_id, job_id, kind, attempt, status, error, input, output, worker, started_at) \
             SELECT run_id, $1, id, kind, attempt, CASE WHEN status = 'done' THEN 'succeeded' ELSE 'failed' END, \
                    error, \
                    jsonb_build_object('ref_id', ref_id) \
                        || CASE WHEN jsonb_typeof(payload) = 'object' THEN payload ELSE '{}'::jsonb END, \
                    output::jsonb, $9, started FROM u) \
         SELECT id FROM u",
    )
    .bind(tx.org())
    .bind(&ids)
    .bind(&numbers)
    .bind(&statuses)
    .bind(&errors)
    .bind(&retry_at)
    .bind(&runs)
    .bind(&started)
    .bind(worker)
    .bind(&outputs)
    .fetch_all(tx.conn())
    .await?;
    Ok(finished)
}

/// Queue depth by org and status (platform scope), for the periodic metrics line.
pub async fn depth(pool: &PgPool) -> Result<Vec<(Uuid, String, i64)>> {
    let mut tx = crate::db::begin_platform(pool).await?;
    let rows = sqlx::query_as(
        "SELECT tenant_id, status, n FROM ( \
             SELECT tenant_id, status, count(*) AS n FROM jobs WHERE finished_at IS NULL GROUP BY 1, 2 \
             UNION ALL \
             SELECT tenant_id, status, count(*) FROM jobs WHERE status = 'dead' GROUP BY 1, 2) d \
         ORDER BY 1, 2",
    )
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The age in seconds of the oldest job still waiting (`pending`), platform scope.
pub async fn oldest_pending_secs(pool: &PgPool) -> Result<Option<f64>> {
    let mut tx = crate::db::begin_platform(pool).await?;
    let age: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - min(created_at))::float8 FROM jobs WHERE finished_at IS NULL AND status = 'pending'",
    )
    .fetch_one(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(age)
}
