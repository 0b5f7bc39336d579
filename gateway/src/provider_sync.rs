//! `provider_sync` jobs: the campaigns API's writes, carried to the provider by its adapter
//! plugin (`docs/providers.md`, "Authors: the adapter contract").
//!
//! The job's payload (`{"op", "provider", ...}`) names the provider; its adapter is the
//! internal route `[providers.<name>].route`. The runner calls it like a webhook adapter:
//! fresh instance, the job's org, role `member`, one transaction that also records the
//! attempt, with `POST /provider/{op}` and the payload plus `base_url` (the org's configured
//! one) and, for `provision`, `webhook_url`. A 2xx finishes the job; a 429 with `retry-after`
//! puts it back for then without using up an attempt; anything else is a failed attempt. When
//! the job is dead, [`bury`] marks what it was about `failed` with the last error.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use crate::db::jobs::{self, Attempt, Claimed};
use crate::db::{self, campaigns as store, TenantTx};
use crate::jobs::Ran;
use crate::plugin::bindings::types::{Header, Request, Response};
use crate::plugin::Outcome;
use crate::role::Actor;
use crate::state::AppState;

/// The job kind (`jobs.kind`).
pub const KIND: &str = store::SYNC_KIND;
/// The longest `retry-after` honoured; a longer one waits this long.
const MAX_RETRY_AFTER_SECS: i64 = 24 * 3600;

fn text<'a>(payload: &'a Value, key: &str) -> Option<&'a str> {
    payload.get(key).and_then(Value::as_str)
}

fn uuid(payload: &Value, key: &str) -> Option<Uuid> {
    text(payload, key).and_then(|t| Uuid::parse_str(t).ok())
}

/// A 429 answer's wait: its `retry-after` in seconds (1 to a day); `None` without a usable one.
fn retry_after(r: &Response) -> Option<i64> {
    if r.status != 429 {
        return None;
    }
    let v = r.headers.iter().find(|h| h.name.eq_ignore_ascii_case("retry-after"))?;
    let secs: i64 = v.value.trim().parse().ok()?;
    Some(secs.clamp(1, MAX_RETRY_AFTER_SECS))
}

/// The attempt a 429 answer records: pending again at now + `secs`, the attempt given back.
fn deferral(done: &Attempt, secs: i64) -> Attempt {
    Attempt {
        status: "deferred",
        error: Some(format!("rate limited; retry after {secs}s")),
        retry_at: Some(Utc::now() + chrono::Duration::seconds(secs)),
        ..done.clone()
    }
}

/// Why an answer that is neither a 2xx nor a usable 429 failed: its status and, when its body
/// says one, its `error_code` (never the rest of the body: it may quote the provider).
fn failed_answer(plugin: &str, r: &Response) -> String {
    let code = serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v.get("error_code").and_then(Value::as_str).map(str::to_string));
    match code {
        Some(c) => format!("{plugin} answered {}: {}", r.status, c.chars().take(64).collect::<String>()),
        None => format!("{plugin} answered {}", r.status),
    }
}

/// The URL the provider is to call for this org's endpoint: `GATEWAY_PUBLIC_URL` +
/// `/v1/webhooks/{id}`, with `?secret=` for `url-token` endpoints (opened from its sealed form
/// only here, never stored in the clear).
async fn webhook_url(state: &AppState, pool: &sqlx::PgPool, org: Uuid, endpoint: Uuid) -> Result<String, String> {
    let mut tx = db::begin_tenant(pool, org, Actor::System).await.map_err(|e| format!("UNAVAILABLE: {}", crate::error::loggable(&e)))?;
    let found = store::endpoint_secret(&mut tx, endpoint).await.map_err(|e| format!("UNAVAILABLE: {}", crate::error::loggable(&e)))?;
    let _ = tx.commit().await;
    let (scheme, sealed) = found.ok_or("WEBHOOK_ENDPOINT_GONE: the endpoint to register is disabled or deleted")?;
    let url = format!("{}/v1/webhooks/{endpoint}", state.public_url());
    if scheme != "url-token" {
        return Ok(url);
    }
    let token = sealed
        .and_then(|s| state.endpoints.key().open(endpoint, &s))
        .and_then(|k| String::from_utf8(k).ok())
        .ok_or("WEBHOOK_ENDPOINT_GONE: the endpoint has no usable secret")?;
    Ok(format!("{url}?secret={token}"))
}

/// Runs one `provider_sync` job's attempt. `Err` is a failed attempt (its text becomes the
/// job's `last_error`: codes and statuses, never a credential or a body).
pub async fn run(state: &AppState, pool: &sqlx::PgPool, worker: &str, job: &Claimed, done: &Attempt) -> Result<Ran, String> {
    let payload = job.payload.as_ref().filter(|p| p.is_object()).ok_or("the job has no payload")?;
    let op = text(payload, "op").filter(|op| !op.is_empty() && op.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).ok_or("the payload has no valid op")?;
    let provider_name = text(payload, "provider").ok_or("the payload names no provider")?;
    let config = db::providers::config(pool, job.tenant_id, provider_name)
        .await
        .map_err(|e| format!("UNAVAILABLE: {}", crate::error::loggable(&e)))?
        .ok_or_else(|| format!("PROVIDER_NOT_CONFIGURED: {provider_name} is not configured for this org"))?;
    let mut body = payload.clone();
    body["provider"] = Value::from(provider_name);
    body["base_url"] = Value::from(config.base_url);
    if op == "provision" {
        let endpoint = uuid(payload, "webhook_endpoint_id").ok_or("the payload names no webhook_endpoint_id")?;
        body["webhook_url"] = Value::from(webhook_url(state, pool, job.tenant_id, endpoint).await?);
    }
    let request = Request {
        method: "POST".into(),
        path: format!("/provider/{op}"),
        params: vec![],
        query: String::new(),
        headers: vec![
            Header { name: "content-type".into(), value: "application/json".into() },
            Header { name: "x-job-id".into(), value: job.id.to_string() },
            Header { name: "x-job-attempt".into(), value: job.attempts.to_string() },
            Header { name: "x-job-max-attempts".into(), value: job.max_attempts.to_string() },
        ],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    };
    // What the hook recorded (in the adapter's transaction), or the status it refused.
    let recorded: Arc<Mutex<Option<Attempt>>> = Arc::default();
    let refused: Arc<Mutex<Option<u16>>> = Arc::default();
    let (rec, refd, done_c, worker_c, payload_c) = (recorded.clone(), refused.clone(), done.clone(), worker.to_string(), payload.clone());
    let before_commit: crate::plugin::BeforeCommit<'static> = Box::new(move |tx: &mut TenantTx, answer: &Response| {
        let attempt = match (answer.status, retry_after(answer)) {
            (200..=299, _) => Some(done_c),
            (_, Some(secs)) => Some(deferral(&done_c, secs)),
            _ => None,
        };
        let status = answer.status;
        Box::pin(async move {
            let Some(attempt) = attempt else {
                // A failed answer commits nothing: the attempt is retried from scratch.
                *refd.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                return Ok(false);
            };
            let ours = !jobs::finish_on(tx, &worker_c, std::slice::from_ref(&attempt)).await?.is_empty();
            if ours && attempt.status == "done" {
                // A change being applied by this job is settled with it.
                crate::optimizer::settle(tx, &payload_c, None).await?;
            }
            if ours {
                *rec.lock().unwrap_or_else(|p| p.into_inner()) = Some(attempt);
            }
            Ok(ours)
        })
    });
    let request_id = done.run_id.simple().to_string();
    let (plugin, outcome) =
        crate::jobs::invoke_adapter(state, pool, provider_name, job.tenant_id, &request_id, request, before_commit).await?;
    let recorded = recorded.lock().unwrap_or_else(|p| p.into_inner()).take();
    let refused = *refused.lock().unwrap_or_else(|p| p.into_inner());
    match outcome {
        Outcome::Response(_) if recorded.is_some() => Ok(Ran::Recorded(recorded.expect("checked"))),
        // The adapter opened no transaction: the finisher records the attempt, or, when the
        // job applies a change, one transaction records it and settles the change.
        Outcome::Response(r) if (200..=299).contains(&r.status) => match payload.get("optimization_id") {
            Some(_) => settle_unrecorded(pool, worker, job.tenant_id, payload, done).await,
            None => Ok(Ran::Unrecorded(done.clone())),
        },
        Outcome::Response(r) => match retry_after(&r) {
            Some(secs) => Ok(Ran::Unrecorded(deferral(done, secs))),
            None => Err(failed_answer(&plugin.name, &r)),
        },
        Outcome::CommitRefused => match refused {
            Some(status) => Err(format!("{} answered {status}", plugin.name)),
            None => Err("the job's lease was lost before its attempt could be recorded".into()),
        },
        other => {
            let e = crate::phases::dispatch::plugin_reply(&plugin.version, other).err().map(|e| format!("{}: {}", e.code_str(), e.message));
            let mut msg = e.unwrap_or_else(|| "the adapter failed".into());
            msg.truncate(msg.floor_char_boundary(500));
            Err(msg)
        }
    }
}

async fn settle_unrecorded(pool: &sqlx::PgPool, worker: &str, org: Uuid, payload: &Value, done: &Attempt) -> Result<Ran, String> {
    let unavailable = |e: crate::Error| format!("UNAVAILABLE: {}", crate::error::loggable(&e));
    let mut tx = db::begin_tenant(pool, org, Actor::System).await.map_err(unavailable)?;
    if jobs::finish_on(&mut tx, worker, std::slice::from_ref(done)).await.map_err(unavailable)?.is_empty() {
        return Err("the job's lease was lost before its attempt could be recorded".into());
    }
    crate::optimizer::settle(&mut tx, payload, None).await.map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(Ran::Recorded(done.clone()))
}

/// Records a dead attempt and marks what the job was about `failed` with its error, in one
/// tenant transaction. `Ok(false)`: the job was no longer this worker's (nothing changed).
pub async fn bury(pool: &sqlx::PgPool, worker: &str, job: &Claimed, dead: &Attempt) -> crate::Result<bool> {
    let mut tx = db::begin_tenant(pool, job.tenant_id, Actor::System).await?;
    let ours = !jobs::finish_on(&mut tx, worker, std::slice::from_ref(dead)).await?.is_empty();
    if ours {
        if let Some(payload) = &job.payload {
            mark_failed(&mut tx, job.id, payload, dead.error.as_deref().unwrap_or("failed")).await?;
            crate::optimizer::settle(&mut tx, payload, Some(dead.error.as_deref().unwrap_or("failed"))).await?;
        }
    }
    tx.commit().await?;
    Ok(ours)
}

async fn mark_failed(tx: &mut TenantTx, job: Uuid, payload: &Value, error: &str) -> crate::Result<()> {
    let campaign = uuid(payload, "campaign_id");
    match (text(payload, "op").unwrap_or_default(), campaign) {
        ("create_campaign" | "set_status", Some(c)) => store::fail_campaign(tx, c, error).await,
        ("put_sequence", Some(c)) => match payload.get("version").and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok()) {
            Some(v) => store::fail_sequence(tx, c, v, error).await,
            None => Ok(()),
        },
        ("add_leads", Some(c)) => {
            let ids: Vec<Uuid> = payload
                .get("lead_ids")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok())).collect())
                .unwrap_or_default();
            store::fail_leads(tx, c, &ids, error).await
        }
        ("lead_action", Some(c)) => match uuid(payload, "lead_id") {
            Some(lead) => store::fail_leads(tx, c, &[lead], error).await,
            None => Ok(()),
        },
        ("provision", _) => match text(payload, "capability") {
            Some(cap) => store::fail_provisioning(tx, cap, job, error).await,
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry: Option<&str>) -> Response {
        Response {
            status,
            headers: retry.map(|v| vec![Header { name: "Retry-After".into(), value: v.into() }]).unwrap_or_default(),
            body: br#"{"error_code":"PROVIDER_DOWN","error":"secret text"}"#.to_vec(),
        }
    }

    #[test]
    fn only_a_429_with_seconds_defers() {
        assert_eq!(retry_after(&answer(429, Some("7"))), Some(7));
        assert_eq!(retry_after(&answer(429, Some("0"))), Some(1));
        assert_eq!(retry_after(&answer(429, Some("999999"))), Some(MAX_RETRY_AFTER_SECS));
        assert_eq!(retry_after(&answer(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"))), None);
        assert_eq!(retry_after(&answer(429, None)), None);
        assert_eq!(retry_after(&answer(503, Some("5"))), None);
    }

    #[test]
    fn a_failed_answer_names_its_status_and_code_but_not_its_body() {
        let e = failed_answer("smartlead", &answer(502, None));
        assert_eq!(e, "smartlead answered 502: PROVIDER_DOWN");
    }
}
