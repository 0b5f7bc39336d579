//! Fail-soft chains (docs/optimizer.md, "Fail-soft chains"): the secondary steps a provider's
//! reply webhook (or a plugin route with `chain`) enqueues after its critical write, each as a
//! job of its own, and the runners of two of them: `stats` (recount the campaign's step
//! statistics) and `notify` (POST the event to the org's own `notify_url`, signed like
//! Standard Webhooks). The `optimizer` step's runner is the optimizer's, not this module's.
//!
//! Enqueueing happens inside the critical write's transaction, so the steps exist exactly
//! when the write does; their failures are their own jobs' attempts (`agent_runs`) and never
//! reach back into it.

use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::jobs::{self, Attempt, Claimed};
use crate::db::{self, TenantTx};
use crate::jobs::Ran;
use crate::plugin::bindings::outbound_http::OutgoingRequest;
use crate::plugin::bindings::types::Header;
use crate::plugin::host::credentials::CredentialSource;
use crate::policy::ChainStep;
use crate::role::Actor;
use crate::state::AppState;

/// Attempts of a chain step's job, and the first retry's delay.
pub const STEP_MAX_ATTEMPTS: i32 = 5;
pub const STEP_RETRY_BASE_MS: i32 = 1000;
/// How long the tenant's webhook may take to answer.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// What is read of its answer (nothing of it is kept).
const NOTIFY_MAX_RESPONSE: usize = 64 * 1024;

/// The associated data `tenant_settings.notify_secret` is sealed with: the org, behind a
/// prefix no other sealed secret uses.
pub fn notify_aad(org: Uuid) -> Vec<u8> {
    let mut aad = b"notify-secret\0".to_vec();
    aad.extend_from_slice(org.as_bytes());
    aad
}

/// A fresh notify secret as shown to the tenant (`whsec_` + base64 of 32 random bytes, the
/// Standard Webhooks form; the key is those bytes).
pub fn new_notify_secret() -> String {
    crate::webhooks::generate_secret(crate::webhooks::Scheme::StandardWebhooks).0
}

/// The event a chain runs for.
#[derive(Debug, Clone)]
pub struct ChainEvent {
    /// `reply.received` (a provider's reply webhook) or `crm.tracked` (`POST /v1/crm/track`).
    pub event: String,
    pub campaign_id: Option<String>,
    pub lead_id: Option<String>,
    pub event_id: Option<String>,
}

impl ChainEvent {
    /// The event a provider adapter's answer describes, when it is a fresh reply (the
    /// adapter says `duplicate: true` for a repeated one, which runs no chain again).
    pub fn from_adapter_answer(body: &[u8], event_id: Uuid) -> Option<ChainEvent> {
        let v: Value = serde_json::from_slice(body).ok()?;
        if v["kind"] != "reply.received" || v["duplicate"] == true {
            return None;
        }
        Some(ChainEvent {
            event: "reply.received".into(),
            campaign_id: v["campaign_id"].as_str().map(str::to_string),
            lead_id: v["lead_id"].as_str().map(str::to_string),
            event_id: Some(event_id.to_string()),
        })
    }

    /// The event a plugin route's 2xx answer describes: its `event_id` (and `campaign_id`,
    /// `lead_id` when it names them); an idempotent replay (`idempotent: true`) runs none.
    pub fn from_route_answer(route: &str, body: &[u8]) -> Option<ChainEvent> {
        let v: Value = serde_json::from_slice(body).ok()?;
        if v["idempotent"] == true {
            return None;
        }
        let event = if route == "crm_track" { "crm.tracked".to_string() } else { format!("{route}.succeeded") };
        Some(ChainEvent {
            event,
            campaign_id: v["campaign_id"].as_str().map(str::to_string),
            lead_id: v["lead_id"].as_str().map(str::to_string),
            event_id: v["event_id"].as_str().map(str::to_string),
        })
    }

    /// A step's job payload (docs/optimizer.md, "Jobs and agent_runs"); `None`: the step
    /// needs what this event does not have (`stats` and `optimizer` need a campaign).
    fn payload(&self, step: ChainStep) -> Option<Value> {
        match step {
            ChainStep::Stats => Some(json!({ "campaign_id": self.campaign_id.as_ref()?, "event_id": self.event_id })),
            ChainStep::Optimizer => {
                Some(json!({ "trigger": "chain", "campaign_id": self.campaign_id.as_ref()?, "event_id": self.event_id }))
            }
            ChainStep::Notify => Some(json!({
                "event": self.event, "campaign_id": self.campaign_id, "lead_id": self.lead_id,
                "event_id": self.event_id, "occurred_at": Utc::now(),
            })),
        }
    }
}

/// Enqueues one job per step, in the caller's transaction; returns how many.
pub async fn enqueue(tx: &mut TenantTx, steps: &[ChainStep], event: &ChainEvent, ref_id: Option<Uuid>) -> crate::Result<usize> {
    let mut n = 0;
    for step in steps {
        if let Some(payload) = event.payload(*step) {
            match step {
                // Runs coalesce: one waiting run per campaign covers every reply until it starts.
                ChainStep::Optimizer => {
                    db::optimizations::enqueue_run(tx, ref_id, &payload, STEP_MAX_ATTEMPTS, STEP_RETRY_BASE_MS).await?;
                }
                _ => {
                    db::jobs::enqueue(tx, step.kind(), ref_id, &payload, STEP_MAX_ATTEMPTS, STEP_RETRY_BASE_MS).await?;
                }
            }
            n += 1;
        }
    }
    Ok(n)
}

fn payload_str<'a>(job: &'a Claimed, key: &str) -> Option<&'a str> {
    job.payload.as_ref().and_then(|p| p[key].as_str())
}

/// Records a successful attempt in `tx` with its output (the attempt row first, then its
/// `output`), and commits; a lost lease records nothing.
async fn succeed(mut tx: TenantTx, worker: &str, done: &Attempt, output: &Value) -> Result<Ran, String> {
    let db_err = |e: crate::Error| crate::error::loggable(&e);
    let ours = !jobs::finish_on(&mut tx, worker, std::slice::from_ref(done)).await.map_err(db_err)?.is_empty();
    if !ours {
        let _ = tx.rollback().await;
        return Err("the job's lease was lost before its attempt could be recorded".into());
    }
    db::agent_runs::set_output(&mut tx, done.run_id, output).await.map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(Ran::Recorded(done.clone()))
}

/// `stats`: recounts the campaign's `campaign_step_stats`, and records the attempt, in one
/// transaction.
pub async fn run_stats(pool: &sqlx::PgPool, worker: &str, job: &Claimed, done: &Attempt) -> Result<Ran, String> {
    let campaign = payload_str(job, "campaign_id")
        .and_then(|c| Uuid::parse_str(c).ok())
        .ok_or("the payload names no campaign_id")?;
    let db_err = |e: crate::Error| crate::error::loggable(&e);
    let mut tx = db::begin_tenant(pool, job.tenant_id, Actor::System).await.map_err(db_err)?;
    let steps = db::stats::refresh(&mut tx, campaign).await.map_err(db_err)?;
    succeed(tx, worker, done, &json!({ "campaign_id": campaign, "steps": steps })).await
}

/// `notify`: POSTs `{"type", "campaign_id", "lead_id", "event_id", "occurred_at"}` to the
/// org's `notify_url`, signed with its notify secret (`webhook-id` is the job's id, the same
/// on every retry, so the receiver can drop repeats). No `notify_url`: done, `skipped`.
pub async fn run_notify(state: &AppState, pool: &sqlx::PgPool, worker: &str, job: &Claimed, done: &Attempt) -> Result<Ran, String> {
    let db_err = |e: crate::Error| crate::error::loggable(&e);
    let org = job.tenant_id;
    let mut tx = db::begin_tenant(pool, org, Actor::System).await.map_err(db_err)?;
    let settings = db::settings::get(&mut tx, false).await.map_err(db_err)?;
    let Some((url, sealed)) = settings.and_then(|s| Some((s.notify_url?, s.notify_secret))) else {
        return succeed(tx, worker, done, &json!({ "skipped": "no notify_url" })).await;
    };
    // Nothing is held open while the tenant's server answers.
    tx.commit().await.map_err(db_err)?;
    let secret = sealed
        .and_then(|s| state.endpoints.key().open_bound(&notify_aad(org), &s))
        .ok_or("the notify secret does not open with this gateway's secret key")?;
    let secret = zeroize::Zeroizing::new(secret);
    let text = std::str::from_utf8(&secret).map_err(|_| "the notify secret is not text")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.strip_prefix("whsec_").unwrap_or(text))
        .map_err(|_| "the notify secret is not a whsec_ secret")?;
    let key = zeroize::Zeroizing::new(key);
    let p = job.payload.clone().unwrap_or(Value::Null);
    let body = json!({
        "type": p["event"], "campaign_id": p["campaign_id"], "lead_id": p["lead_id"],
        "event_id": p["event_id"], "occurred_at": p["occurred_at"],
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let id = format!("msg_{}", job.id.simple());
    let ts = Utc::now().timestamp();
    let signature = crate::webhooks::verify::sign_standard(&key, &id, ts, &body);
    let request = OutgoingRequest {
        method: "POST".into(),
        url: url.clone(),
        headers: vec![
            Header { name: "content-type".into(), value: "application/json".into() },
            Header { name: "user-agent".into(), value: "gateway-notify/1".into() },
            Header { name: "webhook-id".into(), value: id.clone() },
            Header { name: "webhook-timestamp".into(), value: ts.to_string() },
            Header { name: "webhook-signature".into(), value: signature },
        ],
        body,
    };
    let (policy, allow_private) = state.providers.addresses();
    let sent = crate::plugin::host::outbound_http::send_checked(&state.runtime.tls, policy, allow_private, &url, request, NOTIFY_MAX_RESPONSE);
    let answer = tokio::time::timeout(NOTIFY_TIMEOUT, sent).await;
    // The URL is the tenant's and may carry a token in its path: logs name the org and job.
    let answer = match answer {
        Err(_) => return Err(format!("notify_url did not answer within {} s", NOTIFY_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("notify_url: {e:?}")),
        Ok(Ok(a)) => a,
    };
    tracing::info!(org_id = %org, job_id = %job.id, status = answer.status, "chain_notify_sent");
    if !(200..=299).contains(&answer.status) {
        return Err(format!("notify_url answered {}", answer.status));
    }
    let tx = db::begin_tenant(pool, org, Actor::System).await.map_err(db_err)?;
    succeed(tx, worker, done, &json!({ "status": answer.status, "webhook_id": id })).await
}
