//! The optimizer's changes (`campaign_optimizations`, migration 0007), their audit trail
//! (`optimization_transitions`, written by the table's trigger) and the one tenant setting
//! the optimizer reads (`tenant_settings`; the settings routes write it).
//!
//! The state machine lives in the database: an illegal transition raises a check violation
//! naming [`TRANSITION_CONSTRAINT`], which callers map to 409 `CONFLICT`. Every function that
//! moves a change first sets the transaction's `app.actor`, which the audit trigger records.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;

/// The constraint the state-machine trigger names when it refuses a transition.
pub const TRANSITION_CONSTRAINT: &str = "campaign_optimizations_transition";
/// The unique index that lets a change be rolled back once.
pub const ONE_ROLLBACK_CONSTRAINT: &str = "campaign_optimizations_one_rollback";
/// The job kind of optimizer runs (`jobs.kind`).
pub const RUN_KIND: &str = "optimizer";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OptimizationRow {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub optimization_type: String,
    pub summary: String,
    pub rationale: String,
    pub changes: Value,
    pub source: String,
    pub agent: String,
    pub base_version: i32,
    pub result_version: Option<i32>,
    pub status: String,
    pub rollback_of: Option<Uuid>,
    /// The change that rolled this one back, if any.
    pub rolled_back_by_change: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub error: Option<String>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub applied_by: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
    pub rolled_back_by: Option<String>,
    pub rolled_back_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// `expires_at` is past (by the database's clock).
    pub expired: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ROW: &str = "o.id, o.campaign_id, o.optimization_type, o.summary, o.rationale, o.changes, o.source, o.agent, \
     o.base_version, o.result_version, o.status, o.rollback_of, \
     (SELECT r.id FROM campaign_optimizations r WHERE r.tenant_id = o.tenant_id AND r.rollback_of = o.id) AS rolled_back_by_change, \
     o.run_id, o.job_id, o.error, o.reviewed_by, o.reviewed_at, o.applied_by, o.applied_at, o.rolled_back_by, \
     o.rolled_back_at, o.expires_at, o.expires_at <= now() AS expired, o.created_at, o.updated_at";

/// A change to store (always `proposed`).
#[derive(Debug, Clone)]
pub struct NewOptimization {
    pub campaign_id: Uuid,
    pub optimization_type: String,
    pub summary: String,
    pub rationale: String,
    pub changes: Value,
    pub source: String,
    pub agent: String,
    pub base_version: i32,
    pub dedupe_key: String,
    pub rollback_of: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
}

/// Sets who the audit trigger records for the rest of this transaction (`user:<uuid>`,
/// `system:auto`, `system:sync`, ...).
pub async fn set_actor(tx: &mut TenantTx, actor: &str) -> Result<()> {
    sqlx::query("SELECT set_config('app.actor', $1, true)").bind(actor).execute(tx.conn()).await?;
    Ok(())
}

/// Stores a proposal; `None` when one with the same `dedupe_key` exists (nothing new).
pub async fn insert(tx: &mut TenantTx, actor: &str, new: &NewOptimization) -> Result<Option<OptimizationRow>> {
    set_actor(tx, actor).await?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO campaign_optimizations (tenant_id, campaign_id, optimization_type, summary, rationale, changes, source, \
                                             agent, base_version, dedupe_key, rollback_of, run_id, job_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT ON CONSTRAINT campaign_optimizations_dedupe_key_key DO NOTHING RETURNING id",
    )
    .bind(tx.org())
    .bind(new.campaign_id)
    .bind(&new.optimization_type)
    .bind(&new.summary)
    .bind(&new.rationale)
    .bind(&new.changes)
    .bind(&new.source)
    .bind(&new.agent)
    .bind(new.base_version)
    .bind(&new.dedupe_key)
    .bind(new.rollback_of)
    .bind(new.run_id)
    .bind(new.job_id)
    .fetch_optional(tx.conn())
    .await?;
    match id {
        Some(id) => get(tx, id, false).await,
        None => Ok(None),
    }
}

/// Newest first, optionally of one status and/or campaign.
pub async fn list(tx: &mut TenantTx, status: Option<&str>, campaign: Option<Uuid>, limit: i64) -> Result<Vec<OptimizationRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ROW} FROM campaign_optimizations o WHERE o.tenant_id = $1 \
         AND ($2::text IS NULL OR o.status = $2) AND ($3::uuid IS NULL OR o.campaign_id = $3) \
         ORDER BY o.created_at DESC, o.id LIMIT $4"
    ))
    .bind(tx.org())
    .bind(status)
    .bind(campaign)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// A `proposed` change still open to review, with its campaign's name (the console's queue).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingRow {
    #[sqlx(flatten)]
    pub change: OptimizationRow,
    pub campaign_name: String,
}

/// The `proposed`, unexpired changes of this org, newest first, at most `limit`.
pub async fn pending(tx: &mut TenantTx, limit: i64) -> Result<Vec<PendingRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ROW}, c.name AS campaign_name FROM campaign_optimizations o \
         JOIN campaigns c ON c.tenant_id = o.tenant_id AND c.id = o.campaign_id \
         WHERE o.tenant_id = $1 AND o.status = 'proposed' AND o.expires_at > now() \
         ORDER BY o.created_at DESC, o.id LIMIT $2"
    ))
    .bind(tx.org())
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// How many `proposed`, unexpired changes this org has.
pub async fn pending_count(tx: &mut TenantTx) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM campaign_optimizations WHERE tenant_id = $1 AND status = 'proposed' AND expires_at > now()",
    )
    .bind(tx.org())
    .fetch_one(tx.conn())
    .await?)
}

/// Changes per status among those that entered their current state (`updated_at`) in the
/// last `hours` hours.
pub async fn recent_counts(tx: &mut TenantTx, hours: i32) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT status, count(*) FROM campaign_optimizations \
         WHERE tenant_id = $1 AND updated_at > now() - make_interval(hours => $2) GROUP BY status",
    )
    .bind(tx.org())
    .bind(hours)
    .fetch_all(tx.conn())
    .await?)
}

/// A change of this org; `lock` holds its row until commit (approve, reject and rollback
/// serialise on it).
pub async fn get(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Option<OptimizationRow>> {
    let sql = format!(
        "SELECT {ROW} FROM campaign_optimizations o WHERE o.tenant_id = $1 AND o.id = $2{}",
        if lock { " FOR UPDATE OF o" } else { "" }
    );
    Ok(sqlx::query_as(&sql).bind(tx.org()).bind(id).fetch_optional(tx.conn()).await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransitionRow {
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// Oldest first.
pub async fn transitions(tx: &mut TenantTx, id: Uuid) -> Result<Vec<TransitionRow>> {
    Ok(sqlx::query_as(
        "SELECT from_status, to_status, actor, at FROM optimization_transitions \
         WHERE tenant_id = $1 AND optimization_id = $2 ORDER BY id",
    )
    .bind(tx.org())
    .bind(id)
    .fetch_all(tx.conn())
    .await?)
}

/// What a transition records beside the new status.
#[derive(Debug, Default, Clone)]
pub struct Transition<'a> {
    pub error: Option<&'a str>,
    pub result_version: Option<i32>,
    pub job_id: Option<Uuid>,
}

/// Moves a change to `to` as `actor` (the trigger refuses what the state machine does not
/// allow). Reviewing (`approved`, `rejected`) records the reviewer, `approved` also as
/// `applied_by`; `applied` and `rolled_back` their time (and `rolled_back_by`).
pub async fn transition(tx: &mut TenantTx, id: Uuid, actor: &str, to: &str, with: Transition<'_>) -> Result<OptimizationRow> {
    set_actor(tx, actor).await?;
    sqlx::query(
        "UPDATE campaign_optimizations SET status = $3, \
             error = COALESCE($5, error), \
             result_version = COALESCE($6, result_version), \
             job_id = COALESCE($7, job_id), \
             reviewed_by = CASE WHEN $3 IN ('approved', 'rejected') THEN $4 ELSE reviewed_by END, \
             reviewed_at = CASE WHEN $3 IN ('approved', 'rejected') THEN now() ELSE reviewed_at END, \
             applied_by = CASE WHEN $3 = 'approved' THEN $4 ELSE applied_by END, \
             applied_at = CASE WHEN $3 = 'applied' THEN now() ELSE applied_at END, \
             rolled_back_by = CASE WHEN $3 = 'rolled_back' THEN $4 ELSE rolled_back_by END, \
             rolled_back_at = CASE WHEN $3 = 'rolled_back' THEN now() ELSE rolled_back_at END \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tx.org())
    .bind(id)
    .bind(to)
    .bind(actor)
    .bind(with.error.map(bounded))
    .bind(with.result_version)
    .bind(with.job_id)
    .execute(tx.conn())
    .await?;
    get(tx, id, false).await?.ok_or(crate::Error::Db(sqlx::Error::RowNotFound))
}

/// The `proposed` changes of `campaign` for the same asset and field as `except`, computed
/// on an older version: a newer proposal replaces them. Returns their ids.
pub async fn older_proposals(
    tx: &mut TenantTx,
    campaign: Uuid,
    asset_type: &str,
    asset_id: &str,
    field: &str,
    base_version: i32,
    except: Uuid,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM campaign_optimizations \
         WHERE tenant_id = $1 AND campaign_id = $2 AND status = 'proposed' AND id <> $7 AND base_version < $6 \
           AND changes -> 0 ->> 'asset_type' = $3 AND changes -> 0 ->> 'asset_id' = $4 AND changes -> 0 ->> 'field' = $5 \
         ORDER BY created_at, id FOR UPDATE",
    )
    .bind(tx.org())
    .bind(campaign)
    .bind(asset_type)
    .bind(asset_id)
    .bind(field)
    .bind(base_version)
    .bind(except)
    .fetch_all(tx.conn())
    .await?)
}

/// `tenant_settings.require_manual_approval` and `llm_model` (no row: `true`, `None`).
pub async fn settings(tx: &mut TenantTx) -> Result<(bool, Option<String>)> {
    let row: Option<(bool, Option<String>)> =
        sqlx::query_as("SELECT require_manual_approval, llm_model FROM tenant_settings WHERE tenant_id = $1")
            .bind(tx.org())
            .fetch_optional(tx.conn())
            .await?;
    Ok(row.unwrap_or((true, None)))
}

/// A sequence version's sync outcome (`sync_status`, `sync_error`).
pub async fn sequence_sync(tx: &mut TenantTx, campaign: Uuid, version: i32) -> Result<Option<(String, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT sync_status, sync_error FROM campaign_sequences WHERE tenant_id = $1 AND campaign_id = $2 AND version = $3",
    )
    .bind(tx.org())
    .bind(campaign)
    .bind(version)
    .fetch_optional(tx.conn())
    .await?)
}

/// Enqueues an `optimizer` job and wakes the workers when the transaction commits; or, when a
/// run over the same campaign (or over all of them) is already waiting and not yet started,
/// returns that one: a burst of replies or clicks is one run, not one model call each.
pub async fn enqueue_run(tx: &mut TenantTx, campaign: Option<Uuid>, payload: &Value, max_attempts: i32, retry_base_ms: i32) -> Result<Uuid> {
    if let Some(waiting) = waiting_run(tx, payload.get("campaign_id").and_then(Value::as_str)).await? {
        return Ok(waiting);
    }
    super::jobs::enqueue(tx, RUN_KIND, campaign, payload, max_attempts, retry_base_ms).await
}

/// An `optimizer` job of this org over `campaign` (its payload's `campaign_id`, `None`: all)
/// that no worker has started yet.
async fn waiting_run(tx: &mut TenantTx, campaign: Option<&str>) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM jobs WHERE finished_at IS NULL AND tenant_id = $1 AND kind = $2 AND status = 'pending' AND attempts = 0 \
           AND payload->>'campaign_id' IS NOT DISTINCT FROM $3 ORDER BY created_at LIMIT 1",
    )
    .bind(tx.org())
    .bind(RUN_KIND)
    .bind(campaign)
    .fetch_optional(tx.conn())
    .await?)
}

/// Whether a change of the campaign that set this asset's field to `new_value` was rejected
/// or rolled back: what a person turned down is not proposed again.
pub async fn turned_down(tx: &mut TenantTx, campaign: Uuid, asset_type: &str, asset_id: &str, field: &str, new_value: &Value) -> Result<bool> {
    let item = serde_json::json!([{ "asset_type": asset_type, "asset_id": asset_id, "field": field, "new_value": new_value }]);
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM campaign_optimizations WHERE tenant_id = $1 AND campaign_id = $2 \
                        AND status IN ('rejected', 'rolled_back') AND changes @> $3)",
    )
    .bind(tx.org())
    .bind(campaign)
    .bind(item)
    .fetch_one(tx.conn())
    .await?)
}

/// Errors are stored within the column's 500-character bound.
fn bounded(text: &str) -> String {
    text.chars().take(500).collect()
}
