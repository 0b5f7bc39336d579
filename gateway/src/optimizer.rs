//! The optimizer's changes under the tenant's control (`docs/optimizer.md`): the one approve
//! path (a person's approval and auto mode's `system:auto` both call [`approve`]), reject,
//! rollback (a recorded change approved through the same path), the provider-sync outcome
//! that settles an `applying` change ([`settle`]), and the `optimizer` job ([`run`]), which
//! refreshes step statistics, asks the `optimizer` plugin route for proposals and stores the
//! ones that hold, in the plugin's own transaction.
//!
//! Applying writes a new sequence version (or the campaign's status) and a `provider_sync`
//! job in the same transaction, exactly as the campaigns API does, with `optimization_id`
//! in the job's payload so the runner can settle the change when the provider has it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::jobs::{self, Attempt, Claimed};
use crate::db::optimizations::{self as store, NewOptimization, OptimizationRow, Transition};
use crate::db::{self, campaigns, TenantTx};
use crate::error::{violated_constraint, ApiError, Code};
use crate::jobs::Ran;
use crate::plugin::bindings::types::{Header, Request, Response};
use crate::plugin::Outcome;
use crate::role::Actor;
use crate::state::AppState;

/// The job kind (`jobs.kind`).
pub const KIND: &str = store::RUN_KIND;
/// The plugin route a run invokes.
pub const ROUTE: &str = "optimizer";
/// Who applies a change in auto mode.
pub const AUTO: &str = "system:auto";
/// Who settles a change from the provider-sync outcome.
pub const SYNC: &str = "system:sync";
/// Who stores proposals and supersedes older ones (the run itself).
pub const PROPOSER: &str = "system:optimizer";
/// The `agent` of the plugin's proposals.
const AGENT: &str = "optimizer";
/// The model asked when the org names none.
const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// An optimizer run's retries: a failed model or plugin is retried, not hammered.
pub const RUN_MAX_ATTEMPTS: i32 = 3;
pub const RUN_RETRY_BASE_MS: i32 = 5000;
/// Proposals one run considers at most.
const MAX_PROPOSALS: usize = 200;
/// Campaigns a run without `campaign_id` examines (the plugin's own bound).
const MAX_CAMPAIGNS: usize = 20;

/// The providers' `max_attempts` and `retry_base_ms`, owned, so a job's commit hook can
/// enqueue sync jobs with them.
#[derive(Debug, Clone, Default)]
pub struct Retries(HashMap<String, (i32, i32)>);

impl Retries {
    pub fn of(state: &AppState) -> Retries {
        let routing = state.routing();
        Retries(routing.policies.providers.iter().map(|(n, p)| (n.clone(), (p.max_attempts as i32, p.retry_base_ms as i32))).collect())
    }

    /// A provider no longer declared gets the defaults: its job fails and settles `failed`.
    fn of_provider(&self, provider: &str) -> (i32, i32) {
        self.0.get(provider).copied().unwrap_or((5, 1000))
    }
}

/// Why approve, reject or rollback did not happen.
#[derive(Debug)]
pub enum Refused {
    NotFound,
    /// 409 `CONFLICT`; `commit`: the transaction holds a transition to keep (`expired`,
    /// `superseded`).
    Conflict { message: String, commit: bool },
    Db(crate::Error),
}

impl From<crate::Error> for Refused {
    /// The trigger's refusal and the one-rollback index are conflicts, not faults.
    fn from(e: crate::Error) -> Refused {
        match &e {
            crate::Error::Db(d) if matches!(violated_constraint(d), Some(store::TRANSITION_CONSTRAINT | store::ONE_ROLLBACK_CONSTRAINT)) => {
                Refused::Conflict { message: "the change moved on meanwhile".into(), commit: false }
            }
            _ => Refused::Db(e),
        }
    }
}

impl Refused {
    pub fn commit(&self) -> bool {
        matches!(self, Refused::Conflict { commit: true, .. })
    }

    pub fn into_api(self) -> ApiError {
        match self {
            Refused::NotFound => ApiError::not_found(),
            Refused::Conflict { message, .. } => ApiError::new(Code::Conflict, message),
            Refused::Db(e) => ApiError::from(e),
        }
    }
}

fn conflict<T>(message: impl Into<String>, commit: bool) -> Result<T, Refused> {
    Err(Refused::Conflict { message: message.into(), commit })
}

/// The one asset a change touches (`changes[0]`).
#[derive(Debug, Clone)]
struct Item {
    asset_type: String,
    asset_id: String,
    field: String,
    previous_value: Value,
    new_value: Value,
}

fn item(change: &OptimizationRow) -> Option<Item> {
    let c = change.changes.get(0)?;
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    Some(Item {
        asset_type: s("asset_type")?,
        asset_id: s("asset_id")?,
        field: s("field")?,
        previous_value: c.get("previous_value").cloned().unwrap_or(Value::Null),
        new_value: c.get("new_value").cloned().unwrap_or(Value::Null),
    })
}

/// The user behind an actor `user:<uuid>` (a sequence version's `created_by`).
fn user_of(actor: &str) -> Option<Uuid> {
    actor.strip_prefix("user:").and_then(|u| Uuid::parse_str(u).ok())
}

/// The index of step `seq` in a version's steps.
fn step_index(steps: &Value, seq: &str) -> Option<usize> {
    let seq: i64 = seq.parse().ok()?;
    steps.as_array()?.iter().position(|s| s.get("seq_number").and_then(Value::as_i64) == Some(seq))
}

/// Approves a `proposed` change as `actor` and starts applying it, in `tx`, with the change
/// and its campaign locked (see `docs/optimizer.md`, "Approve"). `Ok`: the change, now
/// `applying`.
pub async fn approve(tx: &mut TenantTx, retries: &Retries, id: Uuid, actor: &str) -> Result<OptimizationRow, Refused> {
    let change = store::get(tx, id, true).await?.ok_or(Refused::NotFound)?;
    if change.status != "proposed" {
        return conflict(format!("the change is {}; only a proposed change can be approved", change.status), false);
    }
    if change.expired {
        store::transition(tx, id, actor, "expired", Transition::default()).await?;
        return conflict("the change expired before it was reviewed", true);
    }
    let campaign = campaigns::campaign(tx, change.campaign_id, true).await?.ok_or(Refused::NotFound)?;
    let Some(it) = item(&change) else {
        return conflict("the change names no asset", false);
    };
    let stale = if campaign.sequence_version != change.base_version {
        Some(format!("the campaign is at version {}, the change was computed on {}", campaign.sequence_version, change.base_version))
    } else if campaign.status == "stopped" {
        Some("the campaign is stopped".to_string())
    } else if it.asset_type == "campaign" && Some(campaign.status.as_str()) != it.previous_value.as_str() {
        Some(format!("the campaign is {} now", campaign.status))
    } else {
        None
    };
    if let Some(why) = stale {
        store::transition(tx, id, actor, "superseded", Transition { error: Some(&why), ..Default::default() }).await?;
        return conflict(format!("the campaign changed since the change was computed ({why}); it is superseded"), true);
    }
    store::transition(tx, id, actor, "approved", Transition::default()).await?;
    let (max_attempts, retry_base_ms) = retries.of_provider(&campaign.provider);
    let (payload, result_version) = match it.asset_type.as_str() {
        "sequence_step" => {
            let current = campaigns::latest_sequence(tx, campaign.id).await?;
            let mut steps = current.map(|s| s.steps).unwrap_or(Value::Array(vec![]));
            let Some(i) = step_index(&steps, &it.asset_id) else {
                return conflict(format!("step {} is not in the campaign's sequence", it.asset_id), false);
            };
            steps[i][&it.field] = it.new_value.clone();
            let saved = campaigns::save_sequence(tx, campaign.id, &steps, user_of(actor)).await?;
            let payload = json!({ "op": "put_sequence", "provider": campaign.provider, "campaign_id": campaign.id,
                                   "version": saved.version, "optimization_id": id });
            (payload, Some(saved.version))
        }
        "campaign" => {
            let Some(status) = it.new_value.as_str() else {
                return conflict("the change's new status is not a status", false);
            };
            campaigns::set_campaign_status(tx, campaign.id, status).await?;
            let payload = json!({ "op": "set_status", "provider": campaign.provider, "campaign_id": campaign.id,
                                   "status": status, "optimization_id": id });
            (payload, None)
        }
        other => return conflict(format!("the change's asset type {other:?} cannot be applied"), false),
    };
    let job = campaigns::enqueue_sync(tx, Some(campaign.id), &payload, max_attempts, retry_base_ms).await?;
    let row = store::transition(tx, id, actor, "applying", Transition { result_version, job_id: Some(job), ..Default::default() }).await?;
    tracing::info!(org_id = %tx.org(), optimization_id = %id, campaign_id = %campaign.id, job_id = %job, actor, "optimization_approved");
    Ok(row)
}

/// Rejects a `proposed` change as `actor` (`reason` kept in its `error`).
pub async fn reject(tx: &mut TenantTx, id: Uuid, actor: &str, reason: Option<&str>) -> Result<OptimizationRow, Refused> {
    let change = store::get(tx, id, true).await?.ok_or(Refused::NotFound)?;
    if change.status != "proposed" {
        return conflict(format!("the change is {}; only a proposed change can be rejected", change.status), false);
    }
    let row = store::transition(tx, id, actor, "rejected", Transition { error: reason, ..Default::default() }).await?;
    tracing::info!(org_id = %tx.org(), optimization_id = %id, actor, "optimization_rejected");
    Ok(row)
}

/// Rolls back an `applied` change as `actor`: a new change of type `rollback` (previous and
/// new swapped) approved through [`approve`], and the original `rolled_back`. `Ok`: the
/// rollback change (`applying`).
pub async fn rollback(tx: &mut TenantTx, retries: &Retries, id: Uuid, actor: &str) -> Result<OptimizationRow, Refused> {
    let original = store::get(tx, id, true).await?.ok_or(Refused::NotFound)?;
    if original.status != "applied" {
        return conflict(format!("the change is {}; only an applied change can be rolled back", original.status), false);
    }
    if matches!(original.optimization_type.as_str(), "stop_campaign" | "rollback") {
        return conflict(format!("a {} change cannot be rolled back", original.optimization_type), false);
    }
    let campaign = campaigns::campaign(tx, original.campaign_id, true).await?.ok_or(Refused::NotFound)?;
    let Some(it) = item(&original) else {
        return conflict("the change names no asset", false);
    };
    let current = match it.asset_type.as_str() {
        "sequence_step" => {
            let steps = campaigns::latest_sequence(tx, campaign.id).await?.map(|s| s.steps).unwrap_or(Value::Null);
            step_index(&steps, &it.asset_id).map(|i| steps[i].get(&it.field).cloned().unwrap_or(Value::Null))
        }
        _ => Some(Value::from(campaign.status.clone())),
    };
    if current.as_ref() != Some(&it.new_value) {
        return conflict("the asset no longer holds the change's value: something changed it since", false);
    }
    let summary: String = format!("Roll back: {}", original.summary).chars().take(500).collect();
    let new = NewOptimization {
        campaign_id: campaign.id,
        optimization_type: "rollback".into(),
        summary,
        rationale: format!("Restores the value change {} replaced, at {actor}'s request.", original.id),
        changes: json!([{ "asset_type": it.asset_type, "asset_id": it.asset_id, "field": it.field,
                          "previous_value": it.new_value, "new_value": it.previous_value,
                          "auto_applied": false, "agent": original.agent }]),
        source: "rollback".into(),
        agent: original.agent.clone(),
        base_version: campaign.sequence_version,
        dedupe_key: format!("rollback:{}", original.id),
        rollback_of: Some(original.id),
        run_id: None,
        job_id: None,
    };
    let Some(inserted) = store::insert(tx, actor, &new).await? else {
        return conflict("the change was already rolled back", false);
    };
    let row = approve(tx, retries, inserted.id, actor).await?;
    store::transition(tx, original.id, actor, "rolled_back", Transition::default()).await?;
    tracing::info!(org_id = %tx.org(), optimization_id = %original.id, rollback_id = %row.id, actor, "optimization_rolled_back");
    Ok(row)
}

fn text<'a>(payload: &'a Value, key: &str) -> Option<&'a str> {
    payload.get(key).and_then(Value::as_str)
}

fn uuid(payload: &Value, key: &str) -> Option<Uuid> {
    text(payload, key).and_then(|t| Uuid::parse_str(t).ok())
}

/// Settles the `applying` change a `provider_sync` job carried (`optimization_id` in its
/// payload), in the transaction that records the job's end: `dead` is the dead job's error;
/// otherwise the adapter answered 2xx, and the target's `sync_status` says whether it synced
/// (`applied`) or recorded the provider's refusal (`failed`, with its `sync_error`).
pub async fn settle(tx: &mut TenantTx, payload: &Value, dead: Option<&str>) -> crate::Result<()> {
    let Some(id) = uuid(payload, "optimization_id") else { return Ok(()) };
    let Some(change) = store::get(tx, id, true).await? else { return Ok(()) };
    if change.status != "applying" {
        return Ok(());
    }
    let failure = match dead {
        Some(e) => Some(e.to_string()),
        None => match text(payload, "op") {
            Some("put_sequence") => {
                let version = payload.get("version").and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok()).unwrap_or(0);
                match store::sequence_sync(tx, change.campaign_id, version).await? {
                    Some((status, error)) if status == "failed" => Some(error.unwrap_or_else(|| "the provider refused the sequence".into())),
                    _ => None,
                }
            }
            _ => match campaigns::campaign(tx, change.campaign_id, false).await? {
                Some(c) if c.sync_status == "failed" => Some(c.sync_error.unwrap_or_else(|| "the provider refused the status".into())),
                _ => None,
            },
        },
    };
    let to = if failure.is_some() { "failed" } else { "applied" };
    store::transition(tx, id, SYNC, to, Transition { error: failure.as_deref(), ..Default::default() }).await?;
    tracing::info!(org_id = %tx.org(), optimization_id = %id, status = to, "optimization_settled");
    Ok(())
}

/// What a run's commit hook needs, owned.
#[derive(Clone)]
struct RunContext {
    retries: Retries,
    auto: bool,
    campaign: Option<Uuid>,
    job: Uuid,
    run: Uuid,
}

/// The campaigns a run examines: the one it names, or the org's newest active ones.
async fn examined(tx: &mut TenantTx, campaign: Option<Uuid>) -> crate::Result<Vec<Uuid>> {
    Ok(match campaign {
        Some(c) => campaigns::campaign(tx, c, false).await?.map(|c| vec![c.id]).unwrap_or_default(),
        None => campaigns::campaigns(tx, 500).await?.into_iter().filter(|c| c.status == "active").take(MAX_CAMPAIGNS).map(|c| c.id).collect(),
    })
}

/// Runs one `optimizer` job's attempt (see the module's doc). `Err` is a failed attempt.
pub async fn run(state: &AppState, pool: &sqlx::PgPool, worker: &str, job: &Claimed, done: &Attempt) -> Result<Ran, String> {
    let payload = job.payload.clone().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let trigger = text(&payload, "trigger").unwrap_or("manual").to_string();
    let campaign = uuid(&payload, "campaign_id");
    let org = job.tenant_id;
    let unavailable = |e: crate::Error| format!("UNAVAILABLE: {}", crate::error::loggable(&e));
    // The statistics the plugin reads, recounted first (their own transaction: a failed run
    // still leaves them fresh).
    let (manual, model) = {
        let mut tx = db::begin_tenant(pool, org, Actor::System).await.map_err(unavailable)?;
        for c in examined(&mut tx, campaign).await.map_err(unavailable)? {
            db::stats::refresh(&mut tx, c).await.map_err(unavailable)?;
        }
        let settings = store::settings(&mut tx).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        settings
    };
    let llm_declared = state.routing().policies.providers.contains_key("openai");
    let llm = match llm_declared {
        true => match db::providers::config(pool, org, "openai").await.map_err(unavailable)? {
            Some(c) => json!({ "base_url": c.base_url, "model": model.unwrap_or_else(|| DEFAULT_MODEL.into()) }),
            None => Value::Null,
        },
        false => Value::Null,
    };
    let body = json!({ "trigger": trigger, "campaign_id": campaign, "llm": llm });
    let request = Request {
        method: "POST".into(),
        path: "/optimize".into(),
        params: vec![],
        query: String::new(),
        headers: vec![
            Header { name: "content-type".into(), value: "application/json".into() },
            Header { name: "x-job-id".into(), value: job.id.to_string() },
            Header { name: "x-run-id".into(), value: done.run_id.to_string() },
            Header { name: "x-job-attempt".into(), value: job.attempts.to_string() },
        ],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    };
    let ctx = RunContext { retries: Retries::of(state), auto: !manual, campaign, job: job.id, run: done.run_id };
    let recorded: Arc<Mutex<Option<Attempt>>> = Arc::default();
    let refused: Arc<Mutex<Option<String>>> = Arc::default();
    let (rec, refd, done_c, worker_c, ctx_c) = (recorded.clone(), refused.clone(), done.clone(), worker.to_string(), ctx.clone());
    let before_commit: crate::plugin::BeforeCommit<'static> = Box::new(move |tx: &mut TenantTx, answer: &Response| {
        let parsed = answer_of(answer);
        Box::pin(async move {
            let answer = match parsed {
                Ok(a) => a,
                Err(why) => {
                    *refd.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    return Ok(false);
                }
            };
            let attempt = Attempt { output: Some(store_proposals(tx, &ctx_c, &answer).await?), ..done_c };
            let ours = !jobs::finish_on(tx, &worker_c, std::slice::from_ref(&attempt)).await?.is_empty();
            if ours {
                *rec.lock().unwrap_or_else(|p| p.into_inner()) = Some(attempt);
            }
            Ok(ours)
        })
    });
    let request_id = done.run_id.simple().to_string();
    let (plugin, outcome) = crate::jobs::invoke_route(state, pool, ROUTE, org, &request_id, request, before_commit).await?;
    let recorded = recorded.lock().unwrap_or_else(|p| p.into_inner()).take();
    let refused = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
    match outcome {
        Outcome::Response(_) if recorded.is_some() => Ok(Ran::Recorded(recorded.expect("checked"))),
        // The plugin opened no transaction: its proposals are stored in one of ours.
        Outcome::Response(r) => {
            let answer = answer_of(&r)?;
            let mut tx = db::begin_tenant(pool, org, Actor::System).await.map_err(unavailable)?;
            let attempt = Attempt { output: Some(store_proposals(&mut tx, &ctx, &answer).await.map_err(unavailable)?), ..done.clone() };
            let ours = !jobs::finish_on(&mut tx, worker, std::slice::from_ref(&attempt)).await.map_err(unavailable)?.is_empty();
            if !ours {
                return Err("the job's lease was lost before its attempt could be recorded".into());
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(Ran::Recorded(attempt))
        }
        Outcome::CommitRefused => Err(refused.unwrap_or_else(|| "the job's lease was lost before its attempt could be recorded".into())),
        other => {
            let e = crate::phases::dispatch::plugin_reply(&plugin.version, other).err().map(|e| format!("{}: {}", e.code_str(), e.message));
            let mut msg = e.unwrap_or_else(|| "the optimizer failed".into());
            msg.truncate(msg.floor_char_boundary(500));
            Err(msg)
        }
    }
}

/// The plugin's answer as the contract's JSON, or why it is not (status and `error_code`
/// only: never the rest of the body).
fn answer_of(r: &Response) -> Result<Value, String> {
    let body = serde_json::from_slice::<Value>(&r.body).ok();
    if !(200..=299).contains(&r.status) {
        let code = body.as_ref().and_then(|v| v.get("error_code")).and_then(Value::as_str).map(|c| c.chars().take(64).collect::<String>());
        return Err(match code {
            Some(c) => format!("optimizer answered {}: {c}", r.status),
            None => format!("optimizer answered {}", r.status),
        });
    }
    match body {
        Some(v) if v.get("proposals").is_none_or(Value::is_array) && v.is_object() => Ok(v),
        _ => Err("optimizer answered 2xx without the contract's JSON".into()),
    }
}

/// Checks each proposal, stores those that hold (once: `dedupe_key`), supersedes older
/// proposals for the same asset, and in auto mode approves the new ones as [`AUTO`]; all in
/// `tx`. Returns the run's output.
async fn store_proposals(tx: &mut TenantTx, ctx: &RunContext, answer: &Value) -> crate::Result<Value> {
    let proposals = answer.get("proposals").and_then(Value::as_array).cloned().unwrap_or_default();
    let llm = answer.get("llm").and_then(Value::as_str).unwrap_or("not_configured").chars().take(200).collect::<String>();
    let mut dropped = Vec::new();
    let mut cache: HashMap<Uuid, Option<(campaigns::CampaignRow, Option<campaigns::SequenceRow>)>> = HashMap::new();
    let mut stored = Vec::new();
    for (i, p) in proposals.iter().enumerate() {
        if i >= MAX_PROPOSALS {
            dropped.push(json!({ "index": i, "reason": format!("a run stores at most {MAX_PROPOSALS} proposals") }));
            continue;
        }
        let checked = check(tx, &mut cache, ctx, p).await?;
        let (new, auto) = match checked {
            Ok(ok) => ok,
            Err(reason) => {
                dropped.push(json!({ "index": i, "campaign_id": p.get("campaign_id"), "optimization_type": p.get("optimization_type"), "reason": reason }));
                continue;
            }
        };
        let Some(row) = store::insert(tx, PROPOSER, &new).await? else { continue };
        if let Some(it) = item(&row) {
            for older in store::older_proposals(tx, row.campaign_id, &it.asset_type, &it.asset_id, &it.field, row.base_version, row.id).await? {
                let why = format!("replaced by {}", row.id);
                store::transition(tx, older, PROPOSER, "superseded", Transition { error: Some(&why), ..Default::default() }).await?;
            }
        }
        stored.push((row.id, auto));
    }
    let mut auto_applied = 0;
    for (id, auto) in &stored {
        if !auto {
            continue;
        }
        match approve(tx, &ctx.retries, *id, AUTO).await {
            Ok(_) => auto_applied += 1,
            Err(Refused::Db(e)) => return Err(e),
            Err(other) => tracing::info!(org_id = %tx.org(), optimization_id = %id, refused = ?other, "optimization_not_auto_applied"),
        }
    }
    tracing::info!(org_id = %tx.org(), job_id = %ctx.job, run_id = %ctx.run, proposed = stored.len(), auto_applied, dropped = dropped.len(), "optimizer_run");
    Ok(json!({ "proposed": stored.len(), "auto_applied": auto_applied, "dropped": dropped, "llm": llm }))
}

/// Text a proposal carries: trimmed, 1..=`max` characters, no control characters but line
/// breaks and tabs.
fn bounded_text(v: Option<&Value>, max: usize) -> Option<String> {
    let t = v?.as_str()?.trim();
    let ok = !t.is_empty() && t.chars().count() <= max && !t.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    ok.then(|| t.to_string())
}

/// One proposal checked against the stored campaign and version (`docs/optimizer.md`, "The
/// plugin contract"): `Ok(Err(reason))` drops it; `Ok(Ok((change, auto)))` is the change to
/// store, `auto` when it is to be applied at once.
async fn check(
    tx: &mut TenantTx,
    cache: &mut HashMap<Uuid, Option<(campaigns::CampaignRow, Option<campaigns::SequenceRow>)>>,
    ctx: &RunContext,
    p: &Value,
) -> crate::Result<Result<(NewOptimization, bool), String>> {
    let Some(cid) = uuid(p, "campaign_id") else { return Ok(Err("campaign_id is not a UUID".into())) };
    if ctx.campaign.is_some_and(|c| c != cid) {
        return Ok(Err("not the campaign this run examined".into()));
    }
    if let std::collections::hash_map::Entry::Vacant(slot) = cache.entry(cid) {
        let found = match campaigns::campaign(tx, cid, false).await? {
            Some(c) => {
                let s = campaigns::latest_sequence(tx, cid).await?;
                Some((c, s))
            }
            None => None,
        };
        slot.insert(found);
    }
    let Some((campaign, sequence)) = cache.get(&cid).and_then(Option::as_ref) else {
        return Ok(Err("not the org's campaign".into()));
    };
    if p.get("base_version").and_then(Value::as_i64) != Some(i64::from(campaign.sequence_version)) {
        return Ok(Err("base_version is not the campaign's current version".into()));
    }
    if campaign.status == "stopped" {
        return Ok(Err("the campaign is stopped".into()));
    }
    let kind = text(p, "optimization_type").unwrap_or_default();
    let (asset_type, field) = match kind {
        "update_subject" => ("sequence_step", "subject"),
        "update_body" => ("sequence_step", "body"),
        "update_delay" => ("sequence_step", "delay_days"),
        "pause_campaign" | "stop_campaign" => ("campaign", "status"),
        _ => return Ok(Err("optimization_type is not one the optimizer may propose".into())),
    };
    if text(p, "asset_type").is_some_and(|a| a != asset_type) || text(p, "field").is_some_and(|f| f != field) {
        return Ok(Err(format!("{kind} changes {asset_type} field {field}")));
    }
    let new_value = p.get("new_value").cloned().unwrap_or(Value::Null);
    let (asset_id, previous) = if asset_type == "sequence_step" {
        let asset_id = match p.get("asset_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Ok(Err("asset_id names no step".into())),
        };
        let steps = match sequence {
            Some(s) if s.version == campaign.sequence_version => &s.steps,
            _ => return Ok(Err("the campaign has no sequence at that version".into())),
        };
        let Some(i) = step_index(steps, &asset_id) else {
            return Ok(Err(format!("step {asset_id} does not exist in version {}", campaign.sequence_version)));
        };
        let valid = match field {
            "subject" => campaign.channel == "email" && bounded_text(Some(&new_value), 500).is_some(),
            "body" => bounded_text(Some(&new_value), 20_000).is_some(),
            _ => new_value.as_i64().is_some_and(|d| (0..=365).contains(&d)),
        };
        if !valid {
            return Ok(Err(format!("new_value is not a valid {field}")));
        }
        (asset_id, steps[i].get(field).cloned().unwrap_or(Value::Null))
    } else {
        if text(p, "asset_id").is_some_and(|a| a != cid.to_string()) {
            return Ok(Err("asset_id is not the campaign".into()));
        }
        let wanted = if kind == "pause_campaign" { "paused" } else { "stopped" };
        if new_value.as_str() != Some(wanted) {
            return Ok(Err(format!("{kind} sets the status {wanted}")));
        }
        if kind == "pause_campaign" && campaign.status != "active" {
            return Ok(Err("pause_campaign for a campaign that is not active".into()));
        }
        (cid.to_string(), Value::from(campaign.status.clone()))
    };
    let new_value = match new_value {
        Value::String(s) => Value::from(s.trim()),
        v => v,
    };
    if previous == new_value {
        return Ok(Err("new_value is the current value".into()));
    }
    // A person said no to exactly this (rejected it, or rolled it back): not proposed again.
    if store::turned_down(tx, cid, asset_type, &asset_id, field, &new_value).await? {
        return Ok(Err("this change was rejected or rolled back before".into()));
    }
    let Some(summary) = bounded_text(p.get("summary"), 500) else { return Ok(Err("summary must be 1 to 500 characters".into())) };
    let Some(rationale) = bounded_text(p.get("rationale"), 4000) else { return Ok(Err("rationale must be 1 to 4000 characters".into())) };
    let source = match text(p, "source") {
        Some(s @ ("rules" | "llm")) => s,
        _ => return Ok(Err("source must be rules or llm".into())),
    };
    // Destructive changes wait for a person whatever the setting.
    let auto = ctx.auto && kind != "stop_campaign";
    let version = campaign.sequence_version;
    Ok(Ok((
        NewOptimization {
            campaign_id: cid,
            optimization_type: kind.to_string(),
            summary,
            rationale,
            changes: json!([{ "asset_type": asset_type, "asset_id": asset_id, "field": field, "previous_value": previous,
                              "new_value": new_value, "auto_applied": auto, "agent": AGENT }]),
            source: source.to_string(),
            agent: AGENT.to_string(),
            base_version: version,
            dedupe_key: format!("{cid}:{version}:{kind}:{asset_type}:{asset_id}:{field}"),
            rollback_of: None,
            run_id: Some(ctx.run),
            job_id: Some(ctx.job),
        },
        auto,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_found_by_their_number() {
        let steps = json!([{"seq_number": 1}, {"seq_number": 2}]);
        assert_eq!(step_index(&steps, "2"), Some(1));
        assert_eq!(step_index(&steps, "3"), None);
        assert_eq!(step_index(&steps, "x"), None);
    }

    #[test]
    fn proposal_text_is_bounded_and_free_of_control_characters() {
        assert_eq!(bounded_text(Some(&json!("  Hi  ")), 5).as_deref(), Some("Hi"));
        assert_eq!(bounded_text(Some(&json!("")), 5), None);
        assert_eq!(bounded_text(Some(&json!("abcdef")), 5), None);
        assert_eq!(bounded_text(Some(&json!("a\u{7}b")), 5), None);
        assert_eq!(bounded_text(Some(&json!(3)), 5), None);
    }

    #[test]
    fn actors_name_users_by_uuid() {
        let u = Uuid::new_v4();
        assert_eq!(user_of(&format!("user:{u}")), Some(u));
        assert_eq!(user_of(AUTO), None);
    }
}
