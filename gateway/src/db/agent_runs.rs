//! `agent_runs` as the API lists them, and the
//! outputs runners record beside an attempt (docs/optimizer.md, "Jobs and agent_runs").

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: Uuid,
    pub job_id: Option<Uuid>,
    pub kind: String,
    pub attempt: i32,
    pub status: String,
    pub error: Option<String>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// The org's runs, newest first, filtered by whichever of kind, status and job are given.
pub async fn list(tx: &mut TenantTx, kind: Option<&str>, status: Option<&str>, job: Option<Uuid>, limit: i64) -> Result<Vec<RunRow>> {
    Ok(sqlx::query_as(
        "SELECT id, job_id, kind, attempt, status, error, input, output, started_at, finished_at FROM agent_runs \
         WHERE tenant_id = $1 AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR status = $3) \
           AND ($4::uuid IS NULL OR job_id = $4) \
         ORDER BY finished_at DESC, id LIMIT $5",
    )
    .bind(tx.org())
    .bind(kind)
    .bind(status)
    .bind(job)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// Sets the output of an attempt already recorded (`run_id` = the `agent_runs` row's id).
pub async fn set_output(tx: &mut TenantTx, run_id: Uuid, output: &Value) -> Result<bool> {
    let done = sqlx::query("UPDATE agent_runs SET output = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tx.org())
        .bind(run_id)
        .bind(output)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A run that did not happen because a recent one covers it: status `skipped`, no job.
pub async fn record_skipped(tx: &mut TenantTx, kind: &str, input: &Value, output: &Value, worker: &str) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO agent_runs (tenant_id, job_id, kind, attempt, status, input, output, worker, started_at) \
         VALUES ($1, NULL, $2, 0, 'skipped', $3, $4, $5, now()) RETURNING id",
    )
    .bind(tx.org())
    .bind(kind)
    .bind(input)
    .bind(output)
    .bind(worker)
    .fetch_one(tx.conn())
    .await?)
}

/// Whether a job of `kind` is pending or running, or finished within `within_secs`.
pub async fn recent_job(tx: &mut TenantTx, kind: &str, within_secs: f64) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT CASE WHEN status IN ('pending', 'processing') THEN 'a run is ' || status \
                     ELSE 'a run finished at ' || to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') END \
         FROM jobs WHERE tenant_id = $1 AND kind = $2 \
           AND (status IN ('pending', 'processing') OR finished_at > now() - make_interval(secs => $3)) \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tx.org())
    .bind(kind)
    .bind(within_secs)
    .fetch_optional(tx.conn())
    .await?)
}
