//! `GET|PUT|DELETE /v1/schedules/{kind}` (docs/optimizer.md, "Schedules"): an org's
//! schedule of `kind` (`optimizer`), a five-field cron expression in an IANA time zone.
//! The scheduler (`scheduler.rs`) runs it; SQL is `db::schedules`'.

use chrono::Utc;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::parse;
use crate::db::{self, schedules::ScheduleRow};
use crate::error::ApiError;
use crate::phases::{Call, Reply};
use crate::scheduler::{next_after, parse_cron, parse_zone};

/// Schedulable kinds (`schedules_kind_valid`).
const KINDS: &[&str] = &["optimizer"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSchedule {
    cron: String,
    timezone: String,
    #[serde(default)]
    enabled: Option<bool>,
}

/// The kind in the path; another is a schedule that cannot exist (404).
fn kind<'c>(call: &'c Call<'_>) -> Result<&'c str, ApiError> {
    call.param("kind").filter(|k| KINDS.contains(k)).ok_or_else(ApiError::not_found)
}

fn schedule_json(s: &ScheduleRow) -> serde_json::Value {
    json!({
        "kind": s.kind, "cron": s.cron, "timezone": s.timezone, "enabled": s.enabled,
        "next_run_at": s.next_run_at, "updated_at": s.updated_at,
    })
}

async fn begin(call: &Call<'_>) -> Result<db::TenantTx, ApiError> {
    let org = call.caller.org.ok_or_else(ApiError::not_found)?;
    Ok(db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?)
}

/// `GET /v1/schedules/{kind}`: the schedule; none yet → 404.
pub async fn get(call: Call<'_>) -> Result<Reply, ApiError> {
    let kind = kind(&call)?;
    let mut tx = begin(&call).await?;
    let s = db::schedules::get(&mut tx, kind).await?;
    tx.commit().await?;
    let s = s.ok_or_else(ApiError::not_found)?;
    Ok(Reply::json(StatusCode::OK, schedule_json(&s)))
}

/// `PUT /v1/schedules/{kind} {"cron", "timezone", "enabled"?}`: creates or replaces it, with
/// its next slot computed now (none while disabled).
pub async fn put(call: Call<'_>) -> Result<Reply, ApiError> {
    let kind = kind(&call)?;
    let body: PutSchedule = parse(&call)?;
    let cron_text = body.cron.trim();
    if cron_text.len() > 100 {
        return Err(ApiError::invalid("cron", "must be at most 100 characters"));
    }
    let cron = parse_cron(cron_text).map_err(|p| ApiError::invalid("cron", &p))?;
    let zone_text = body.timezone.trim();
    let zone = parse_zone(zone_text).map_err(|p| ApiError::invalid("timezone", &p))?;
    let enabled = body.enabled.unwrap_or(true);
    let next = match enabled {
        true => Some(next_after(&cron, zone, Utc::now()).ok_or_else(|| ApiError::invalid("cron", "never occurs"))?),
        false => None,
    };
    let mut tx = begin(&call).await?;
    let s = db::schedules::put(&mut tx, kind, cron_text, zone_text, enabled, next, call.caller.user).await?;
    tx.commit().await?;
    tracing::info!(org_id = ?call.caller.org, kind, enabled, next_run_at = ?s.next_run_at, "schedule_saved");
    Ok(Reply::json(StatusCode::OK, schedule_json(&s)))
}

/// `DELETE /v1/schedules/{kind}`: 204; none → 404.
pub async fn delete(call: Call<'_>) -> Result<Reply, ApiError> {
    let kind = kind(&call)?;
    let mut tx = begin(&call).await?;
    let gone = db::schedules::delete(&mut tx, kind).await?;
    tx.commit().await?;
    if !gone {
        return Err(ApiError::not_found());
    }
    tracing::info!(org_id = ?call.caller.org, kind, "schedule_deleted");
    Ok(Reply::no_content())
}
