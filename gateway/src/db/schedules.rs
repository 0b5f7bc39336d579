//! `schedules` and `schedule_runs` (migration 0007): the per-org schedules' API, and the
//! scheduler's claim of a due slot, which is the one cross-tenant part: it finds a due
//! schedule of any org in the platform scope (`FOR UPDATE SKIP LOCKED`, so replicas never
//! wait on each other), then does that org's work in the same transaction in its tenant
//! context. `schedule_runs`' primary key (tenant, kind, slot) makes a slot run once across
//! replicas and restarts.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;
use crate::role::Actor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub kind: String,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "kind, cron, timezone, enabled, next_run_at, updated_at";

pub async fn get(tx: &mut TenantTx, kind: &str) -> Result<Option<ScheduleRow>> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND kind = $2"))
        .bind(tx.org())
        .bind(kind)
        .fetch_optional(tx.conn())
        .await?)
}

/// Creates or replaces the org's schedule of `kind`.
pub async fn put(
    tx: &mut TenantTx,
    kind: &str,
    cron: &str,
    timezone: &str,
    enabled: bool,
    next_run_at: Option<DateTime<Utc>>,
    updated_by: Option<Uuid>,
) -> Result<ScheduleRow> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO schedules (tenant_id, kind, cron, timezone, enabled, next_run_at, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, kind) DO UPDATE SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, \
             enabled = EXCLUDED.enabled, next_run_at = EXCLUDED.next_run_at, updated_by = EXCLUDED.updated_by, \
             updated_at = now() \
         RETURNING {COLUMNS}"
    ))
    .bind(tx.org())
    .bind(kind)
    .bind(cron)
    .bind(timezone)
    .bind(enabled)
    .bind(next_run_at)
    .bind(updated_by)
    .fetch_one(tx.conn())
    .await?)
}

/// Removes the schedule (and, by cascade, its slots' record); false when there was none.
pub async fn delete(tx: &mut TenantTx, kind: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM schedules WHERE tenant_id = $1 AND kind = $2")
        .bind(tx.org())
        .bind(kind)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// What one claimed slot became.
#[derive(Debug, Clone)]
pub struct SlotRun {
    pub org: Uuid,
    pub kind: String,
    pub slot: DateTime<Utc>,
    /// `enqueued`, `skipped`, or `taken` (the slot was already recorded: nothing done).
    pub outcome: &'static str,
    pub job_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub next_run_at: Option<DateTime<Utc>>,
}

/// How the scheduler decides, for one due schedule.
pub struct SlotRules<'a> {
    pub replica: &'a str,
    /// A job of the schedule's kind pending, running, or finished this recently skips the slot.
    pub recent_secs: f64,
    pub max_attempts: i32,
    pub retry_base_ms: i32,
    /// The next slot after now for (cron, time zone); `None`: the schedule cannot run again.
    pub next: &'a (dyn Fn(&str, &str) -> Option<DateTime<Utc>> + Sync),
}

#[derive(sqlx::FromRow)]
struct Due {
    tenant_id: Uuid,
    kind: String,
    cron: String,
    timezone: String,
    next_run_at: DateTime<Utc>,
}

/// Claims and runs one due slot of any org, in one transaction: the schedule found in the
/// platform scope and locked (`SKIP LOCKED`: another replica holding it is left to it), then
/// in its org's tenant context the slot recorded (`ON CONFLICT DO NOTHING`), the recent-run
/// check, the job or the `skipped` run, and `next_run_at` moved on. `None`: nothing is due.
pub async fn run_one_due(pool: &sqlx::PgPool, rules: &SlotRules<'_>) -> Result<Option<SlotRun>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', true)").execute(&mut *tx).await?;
    let due: Option<Due> = sqlx::query_as(
        "SELECT tenant_id, kind, cron, timezone, next_run_at FROM schedules \
         WHERE enabled AND next_run_at <= now() ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(due) = due else {
        tx.rollback().await?;
        return Ok(None);
    };
    let mut t = super::enter_tenant(tx, due.tenant_id, Actor::System, None).await?;
    let run = claim_slot(&mut t, &due, rules).await?;
    t.commit().await?;
    Ok(Some(run))
}

async fn claim_slot(tx: &mut TenantTx, due: &Due, rules: &SlotRules<'_>) -> Result<SlotRun> {
    let next = (rules.next)(&due.cron, &due.timezone);
    let mut run = SlotRun {
        org: tx.org(),
        kind: due.kind.clone(),
        slot: due.next_run_at,
        outcome: "taken",
        job_id: None,
        run_id: None,
        next_run_at: next,
    };
    let claimed = sqlx::query(
        "INSERT INTO schedule_runs (tenant_id, kind, slot, outcome, replica) VALUES ($1, $2, $3, 'enqueued', $4) \
         ON CONFLICT (tenant_id, kind, slot) DO NOTHING",
    )
    .bind(tx.org())
    .bind(&due.kind)
    .bind(due.next_run_at)
    .bind(rules.replica)
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1;
    if claimed {
        let input = json!({ "trigger": "schedule", "slot": due.next_run_at });
        match super::agent_runs::recent_job(tx, &due.kind, rules.recent_secs).await? {
            Some(reason) => {
                let output = json!({ "skipped": reason });
                let id = super::agent_runs::record_skipped(tx, &due.kind, &input, &output, rules.replica).await?;
                record(tx, due, "skipped", Some(&reason), None, Some(id)).await?;
                (run.outcome, run.run_id) = ("skipped", Some(id));
            }
            None => {
                let job = super::jobs::enqueue(tx, &due.kind, None, &input, rules.max_attempts, rules.retry_base_ms).await?;
                record(tx, due, "enqueued", None, Some(job), None).await?;
                (run.outcome, run.job_id) = ("enqueued", Some(job));
            }
        }
    }
    sqlx::query("UPDATE schedules SET next_run_at = $3 WHERE tenant_id = $1 AND kind = $2")
        .bind(tx.org())
        .bind(&due.kind)
        .bind(next)
        .execute(tx.conn())
        .await?;
    Ok(run)
}

async fn record(tx: &mut TenantTx, due: &Due, outcome: &str, reason: Option<&str>, job: Option<Uuid>, run: Option<Uuid>) -> Result<()> {
    sqlx::query(
        "UPDATE schedule_runs SET outcome = $4, reason = $5, job_id = $6, run_id = $7 \
         WHERE tenant_id = $1 AND kind = $2 AND slot = $3",
    )
    .bind(tx.org())
    .bind(&due.kind)
    .bind(due.next_run_at)
    .bind(outcome)
    .bind(reason.map(|r| r.chars().take(500).collect::<String>()))
    .bind(job)
    .bind(run)
    .execute(tx.conn())
    .await?;
    Ok(())
}

