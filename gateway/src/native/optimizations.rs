//! The optimizer's change log and review routes (`docs/optimizer.md`, "Routes"): list and
//! read changes with their transitions, approve, reject, roll back, and start a run. The
//! state changes themselves are `crate::optimizer`'s (the path auto mode shares).

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{parse_or_default, uuid_param};
use crate::db::{self, campaigns, optimizations as store, TenantTx};
use crate::error::ApiError;
use crate::optimizer::{self, Refused, Retries};
use crate::phases::{Call, Reply};

const STATES: &[&str] = &["proposed", "approved", "rejected", "expired", "superseded", "applying", "applied", "failed", "rolled_back"];

fn org(call: &Call<'_>) -> Result<Uuid, ApiError> {
    call.caller.org.ok_or_else(ApiError::not_found)
}

async fn begin(call: &Call<'_>) -> Result<TenantTx, ApiError> {
    Ok(db::begin_tenant(&call.state.pool, org(call)?, call.caller.role.into()).await?)
}

/// Who the audit trail records for this caller: their user, else their role and token (a
/// super-admin acting in an org).
fn actor(call: &Call<'_>) -> String {
    // A super-admin acting in an org has no user: its token names it, as in the console.
    match call.caller.user {
        Some(u) => format!("user:{u}"),
        None => format!("{}:{}", call.caller.role.as_str(), call.caller.token_id),
    }
}

pub fn change_json(o: &store::OptimizationRow) -> Value {
    json!({
        "optimization_id": o.id, "campaign_id": o.campaign_id, "optimization_type": o.optimization_type,
        "summary": o.summary, "rationale": o.rationale, "source": o.source, "agent": o.agent, "status": o.status,
        "base_version": o.base_version, "result_version": o.result_version, "changes": o.changes,
        "rollback_of": o.rollback_of, "rolled_back_by_change": o.rolled_back_by_change, "error": o.error,
        "job_id": o.job_id, "run_id": o.run_id, "reviewed_by": o.reviewed_by, "reviewed_at": o.reviewed_at,
        "applied_by": o.applied_by, "applied_at": o.applied_at, "rolled_back_by": o.rolled_back_by,
        "rolled_back_at": o.rolled_back_at, "expires_at": o.expires_at, "created_at": o.created_at, "updated_at": o.updated_at,
    })
}

/// `GET /v1/optimizations?status=&campaign_id=&limit=`: newest first.
pub async fn list(call: Call<'_>) -> Result<Reply, ApiError> {
    let status = match call.query_param("status") {
        None | Some("") => None,
        Some(s) if STATES.contains(&s) => Some(s),
        Some(_) => return Err(ApiError::invalid("status", &format!("must be one of {}", STATES.join(", ")))),
    };
    let campaign = match call.query_param("campaign_id") {
        None | Some("") => None,
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| ApiError::invalid("campaign_id", "must be a UUID"))?),
    };
    let limit = match call.query_param("limit") {
        None | Some("") => 50,
        Some(v) => v.parse::<i64>().ok().filter(|n| (1..=200).contains(n)).ok_or_else(|| ApiError::invalid("limit", "must be 1 to 200"))?,
    };
    let mut tx = begin(&call).await?;
    let rows = store::list(&mut tx, status, campaign, limit).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, json!({ "optimizations": rows.iter().map(change_json).collect::<Vec<_>>() })))
}

/// `GET /v1/optimizations/{optimization_id}`: the change with its transitions.
pub async fn get(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "optimization_id")?;
    let mut tx = begin(&call).await?;
    let o = store::get(&mut tx, id, false).await?.ok_or_else(ApiError::not_found)?;
    let transitions = store::transitions(&mut tx, id).await?;
    tx.commit().await?;
    let mut out = change_json(&o);
    out["transitions"] = transitions.iter().map(|t| json!({ "from": t.from_status, "to": t.to_status, "actor": t.actor, "at": t.at })).collect();
    Ok(Reply::json(StatusCode::OK, out))
}

/// Ends a review transaction: the change on success; on a refusal, what the refusal keeps
/// (an `expired` or `superseded` change) is committed before the 409.
async fn conclude(tx: TenantTx, done: Result<store::OptimizationRow, Refused>, status: StatusCode) -> Result<Reply, ApiError> {
    match done {
        Ok(row) => {
            tx.commit().await?;
            Ok(Reply::json(status, change_json(&row)))
        }
        Err(refused) => {
            if refused.commit() {
                tx.commit().await?;
            } else {
                let _ = tx.rollback().await;
            }
            Err(refused.into_api())
        }
    }
}

/// `POST /v1/optimizations/{optimization_id}/approve` → 202 the change (`applying`).
pub async fn approve(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "optimization_id")?;
    let retries = Retries::of(call.state);
    let mut tx = begin(&call).await?;
    let done = optimizer::approve(&mut tx, &retries, id, &actor(&call)).await;
    conclude(tx, done, StatusCode::ACCEPTED).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: Option<String>,
}

/// `POST /v1/optimizations/{optimization_id}/reject {"reason"?}` → 200 the change.
pub async fn reject(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "optimization_id")?;
    let body: RejectBody = parse_or_default(&call)?;
    let reason = match body.reason.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) if r.chars().count() <= 500 && !r.chars().any(|c| c.is_control() && c != '\n') => Some(r.to_string()),
        Some(_) => return Err(ApiError::invalid("reason", "must be at most 500 characters, without control characters")),
    };
    let mut tx = begin(&call).await?;
    let done = optimizer::reject(&mut tx, id, &actor(&call), reason.as_deref()).await;
    conclude(tx, done, StatusCode::OK).await
}

/// `POST /v1/optimizations/{optimization_id}/rollback` → 202 the rollback change.
pub async fn rollback(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "optimization_id")?;
    let retries = Retries::of(call.state);
    let mut tx = begin(&call).await?;
    let done = optimizer::rollback(&mut tx, &retries, id, &actor(&call)).await;
    conclude(tx, done, StatusCode::ACCEPTED).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    campaign_id: Option<String>,
}

/// `POST /v1/optimizations/run {"campaign_id"?}` → 202 `{"job_id", "run": "queued"}`.
pub async fn run(call: Call<'_>) -> Result<Reply, ApiError> {
    let body: RunBody = parse_or_default(&call)?;
    let campaign = match body.campaign_id.as_deref() {
        None => None,
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| ApiError::invalid("campaign_id", "must be a UUID"))?),
    };
    let mut tx = begin(&call).await?;
    if let Some(c) = campaign {
        campaigns::campaign(&mut tx, c, false).await?.ok_or_else(ApiError::not_found)?;
    }
    let mut payload = json!({ "trigger": "manual" });
    if let Some(c) = campaign {
        payload["campaign_id"] = json!(c);
    }
    let job = store::enqueue_run(&mut tx, campaign, &payload, optimizer::RUN_MAX_ATTEMPTS, optimizer::RUN_RETRY_BASE_MS).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org(&call)?, job_id = %job, "optimizer_run_queued");
    Ok(Reply::json(StatusCode::ACCEPTED, json!({ "job_id": job, "run": "queued" })))
}
