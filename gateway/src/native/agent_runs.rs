//! `GET /v1/agent-runs?kind=&status=&job_id=&limit=` (docs/optimizer.md, "Jobs and
//! agent_runs"): every attempt of the org's jobs, and the runs a recent one made skip.

use http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::db;
use crate::error::ApiError;
use crate::phases::{Call, Reply};

const STATUSES: &[&str] = &["succeeded", "failed", "skipped"];

/// The org's runs, newest first (limit 1–200, default 50).
pub async fn list(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = call.caller.org.ok_or_else(ApiError::not_found)?;
    let kind = call.query_param("kind").filter(|k| !k.is_empty());
    if kind.is_some_and(|k| k.len() > 64 || !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')) {
        return Err(ApiError::invalid("kind", "must be a job kind (lower-case letters and _)"));
    }
    let status = call.query_param("status").filter(|s| !s.is_empty());
    if status.is_some_and(|s| !STATUSES.contains(&s)) {
        return Err(ApiError::invalid("status", "must be succeeded, failed or skipped"));
    }
    let job = match call.query_param("job_id").filter(|j| !j.is_empty()) {
        Some(j) => Some(Uuid::parse_str(j).map_err(|_| ApiError::invalid("job_id", "must be a UUID"))?),
        None => None,
    };
    let limit = match call.query_param("limit") {
        None => 50,
        Some(v) => v.parse::<i64>().ok().filter(|n| (1..=200).contains(n)).ok_or_else(|| ApiError::invalid("limit", "must be 1 to 200"))?,
    };
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let rows = db::agent_runs::list(&mut tx, kind, status, job, limit).await?;
    tx.commit().await?;
    let runs: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "run_id": r.id, "job_id": r.job_id, "kind": r.kind, "attempt": r.attempt, "status": r.status,
                "error": r.error, "input": r.input, "output": r.output, "started_at": r.started_at,
                "finished_at": r.finished_at,
            })
        })
        .collect();
    Ok(Reply::json(StatusCode::OK, json!({ "agent_runs": runs })))
}
