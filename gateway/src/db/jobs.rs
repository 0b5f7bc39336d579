//! The job queue (`jobs`) and its attempt log (`agent_runs`).
//!
//! Claiming is the one cross-tenant operation: it runs with `app.scope = 'platform'` (see
//! migration 0004) and takes, for up to `batch` orgs with runnable work (in random order, so
//! no org is always first), the oldest runnable jobs up to the org's free concurrency, with
//! `FOR UPDATE SKIP LOCKED` so concurrent claimers (other workers, other replicas) never take
//! the same job. A claim is a lease: `run_at` becomes the lease's end, after which a job still
//! `processing` (its worker died) is runnable again.
//!
//! Finishing an attempt runs in the job's tenant context.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

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
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventData {
    pub id: Uuid,
    pub provider: String,
    pub event_key: String,
    pub event_type: Option<String>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

/// Claims up to `batch` runnable jobs, at most `org_cap` running per org, leased for
/// `lease_secs`; returns them with the webhook events they refer to.
pub async fn claim(pool: &PgPool, worker: &str, batch: i64, org_cap: i64, lease_secs: f64) -> Result<(Vec<Claimed>, Vec<EventData>)> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', true)").execute(&mut *tx).await?;
    let claimed: Vec<Claimed> = sqlx::query_as(
        "WITH RECURSIVE orgs(t) AS ( \
             (SELECT tenant_id FROM jobs WHERE status IN ('pending', 'processing') AND run_at <= now() \
              ORDER BY tenant_id LIMIT 1) \
             UNION ALL \
             SELECT (SELECT j.tenant_id FROM jobs j \
                     WHERE j.status IN ('pending', 'processing') AND j.run_at <= now() AND j.tenant_id > o.t \
                     ORDER BY j.tenant_id LIMIT 1) \
             FROM orgs o WHERE o.t IS NOT NULL), \
         chosen AS (SELECT t FROM orgs WHERE t IS NOT NULL ORDER BY random() LIMIT $1), \
         picked AS ( \
             SELECT c.id FROM chosen o CROSS JOIN LATERAL ( \
                 SELECT j.id FROM jobs j \
                 WHERE j.tenant_id = o.t AND j.status IN ('pending', 'processing') AND j.run_at <= now() \
                 ORDER BY j.run_at \
                 LIMIT GREATEST(0, $2 - (SELECT count(*) FROM jobs r \
                                          WHERE r.tenant_id = o.t AND r.status = 'processing' AND r.run_at > now())) \
                 FOR UPDATE SKIP LOCKED) c \
             LIMIT $1) \
         UPDATE jobs SET status = 'processing', attempts = jobs.attempts + 1, \
                run_at = now() + make_interval(secs => $3), locked_by = $4, updated_at = now() \
         FROM picked WHERE jobs.id = picked.id \
         RETURNING jobs.id, jobs.tenant_id, jobs.kind, jobs.ref_id, jobs.attempts, jobs.max_attempts, jobs.retry_base_ms",
    )
    .bind(batch)
    .bind(org_cap)
    .bind(lease_secs)
    .bind(worker)
    .fetch_all(&mut *tx)
    .await?;
    let refs: Vec<Uuid> = claimed.iter().filter(|c| c.kind == "webhook").filter_map(|c| c.ref_id).collect();
    let events = if refs.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT id, provider, event_key, event_type, body, content_type FROM webhook_events WHERE id = ANY($1)",
        )
        .bind(&refs)
        .fetch_all(&mut *tx)
        .await?
    };
    tx.commit().await?;
    Ok((claimed, events))
}

/// How an attempt ended.
pub enum Finish<'a> {
    Done,
    /// Failed; retried at `retry_at`, or dead when `None`.
    Failed { error: &'a str, retry_at: Option<DateTime<Utc>> },
}

/// Records an attempt (an `agent_runs` row) and moves the job on, in the job's tenant
/// context. `false` when the job was no longer ours (the lease expired and another worker
/// took it): nothing is changed then.
pub async fn finish(pool: &PgPool, job: &Claimed, worker: &str, run_id: Uuid, started: DateTime<Utc>, outcome: Finish<'_>) -> Result<bool> {
    let mut tx = crate::db::begin_tenant(pool, job.tenant_id, "system").await?;
    let (status, error, run_at, run_status) = match &outcome {
        Finish::Done => ("done", None, None, "succeeded"),
        Finish::Failed { error, retry_at: Some(at) } => ("pending", Some(*error), Some(*at), "failed"),
        Finish::Failed { error, retry_at: None } => ("dead", Some(*error), None, "failed"),
    };
    let updated: Option<Uuid> = sqlx::query_scalar(
        "WITH u AS ( \
             UPDATE jobs SET status = $4, last_error = $5, run_at = COALESCE($6, run_at), locked_by = NULL, \
                    last_run_id = $7, updated_at = now(), \
                    finished_at = CASE WHEN $4 IN ('done', 'dead') THEN now() END \
             WHERE tenant_id = $1 AND id = $2 AND status = 'processing' AND attempts = $3 AND locked_by = $8 \
             RETURNING id, kind, ref_id), \
         r AS ( \
             INSERT INTO agent_runs (id, tenant_id, job_id, kind, attempt, status, error, input, worker, started_at) \
             SELECT $7, $1, u.id, u.kind, $3, $9, $5, jsonb_build_object('ref_id', u.ref_id), $8, $10 FROM u) \
         SELECT id FROM u",
    )
    .bind(job.tenant_id)
    .bind(job.id)
    .bind(job.attempts)
    .bind(status)
    .bind(error)
    .bind(run_at)
    .bind(run_id)
    .bind(worker)
    .bind(run_status)
    .bind(started)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(updated.is_some())
}

/// Queue depth by org and status (platform scope), for the periodic metrics line.
pub async fn depth(pool: &PgPool) -> Result<Vec<(Uuid, String, i64)>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', true)").execute(&mut *tx).await?;
    let rows = sqlx::query_as(
        "SELECT tenant_id, status, count(*) FROM jobs WHERE status IN ('pending', 'processing', 'dead') \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}
