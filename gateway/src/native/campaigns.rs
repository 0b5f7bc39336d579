//! The capability-level campaigns API (`docs/providers.md`, "Clients: the campaigns API").
//!
//! The local tables are the source of truth: every write stores its rows and a
//! `provider_sync` job in one tenant transaction and answers at once; the provider's adapter
//! plugin makes the provider call later (`provider_sync`).

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{parse, uuid_param};
use crate::db::{self, campaigns as store, TenantTx};
use crate::error::{ApiError, Code};
use crate::phases::{Call, Reply};

/// Leads one request may add.
const MAX_LEADS: usize = 1000;
/// Steps of one sequence.
const MAX_STEPS: usize = 20;
const MAX_STEP_BODY: usize = 20_000;
const MAX_SUBJECT: usize = 500;
const MAX_DELAY_DAYS: i64 = 365;
const MAX_CUSTOM_FIELDS: usize = 50;
const MAX_CUSTOM_VALUE: usize = 1000;

fn org(call: &Call<'_>) -> Result<Uuid, ApiError> {
    call.caller.org.ok_or_else(ApiError::not_found)
}

async fn begin(call: &Call<'_>) -> Result<TenantTx, ApiError> {
    Ok(db::begin_tenant(&call.state.pool, org(call)?, call.caller.role.into()).await?)
}

/// The capability a channel needs.
pub fn capability_of(channel: &str) -> &'static str {
    match channel {
        "linkedin" => "linkedin_outreach",
        _ => "email_outreach",
    }
}

fn not_enabled(capability: &str) -> ApiError {
    ApiError::new(Code::Conflict, format!("the {capability} capability is not enabled for this org"))
        .with_code("CAPABILITY_NOT_ENABLED".into())
}

fn stopped() -> ApiError {
    ApiError::new(Code::Conflict, "this campaign is stopped; a stopped campaign cannot change").with_code("CAMPAIGN_STOPPED".into())
}

/// `?limit=` (1 to `max`, default `max`).
fn limit(call: &Call<'_>, max: i64) -> Result<i64, ApiError> {
    match call.query_param("limit") {
        None | Some("") => Ok(max),
        Some(v) => v.parse::<i64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| ApiError::invalid("limit", &format!("must be 1 to {max}"))),
    }
}

/// Text the client sends: trimmed, 1..=`max` characters, no control characters (they would
/// reach the provider and the logs of anyone reading its answers).
fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(ApiError::invalid(field, &format!("must be 1 to {max} characters")));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Err(ApiError::invalid(field, "must not contain control characters"));
    }
    Ok(v.to_string())
}

fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(field, v, max).map(Some),
    }
}

/// Enqueues a sync job for `provider` with its policy's retries, in the caller's transaction.
async fn enqueue(call: &Call<'_>, tx: &mut TenantTx, provider: &str, ref_id: Option<Uuid>, payload: Value) -> Result<Uuid, ApiError> {
    let (max_attempts, retry_base_ms) = sync_retries(call, provider);
    Ok(store::enqueue_sync(tx, ref_id, &payload, max_attempts, retry_base_ms).await?)
}

/// `max_attempts` and `retry_base_ms` of the provider's policy (its defaults when the
/// provider is no longer declared: the job then fails and is marked failed when dead).
pub(super) fn sync_retries(call: &Call<'_>, provider: &str) -> (i32, i32) {
    let routing = call.state.routing();
    match routing.policies.providers.get(provider) {
        Some(p) => (p.max_attempts as i32, p.retry_base_ms as i32),
        None => (5, 1000),
    }
}

/// The campaign, locked, if it may change: this org's (else 404), not stopped (409
/// `CAMPAIGN_STOPPED`) and its channel's capability enabled (409 `CAPABILITY_NOT_ENABLED`).
async fn writable(tx: &mut TenantTx, id: Uuid) -> Result<store::CampaignRow, ApiError> {
    let c = store::campaign(tx, id, true).await?.ok_or_else(ApiError::not_found)?;
    if c.status == "stopped" {
        return Err(stopped());
    }
    let capability = capability_of(&c.channel);
    if store::capability(tx, capability, false).await?.is_none() {
        return Err(not_enabled(capability));
    }
    Ok(c)
}

async fn readable(tx: &mut TenantTx, id: Uuid) -> Result<store::CampaignRow, ApiError> {
    store::campaign(tx, id, false).await?.ok_or_else(ApiError::not_found)
}

fn campaign_json(c: &store::CampaignRow) -> Value {
    json!({
        "campaign_id": c.id, "name": c.name, "channel": c.channel, "provider": c.provider, "provider_id": c.provider_id,
        "status": c.status, "sync_status": c.sync_status, "sync_error": c.sync_error,
        "sequence_version": c.sequence_version, "created_at": c.created_at, "updated_at": c.updated_at,
    })
}

fn lead_json(l: &store::LeadRow) -> Value {
    json!({
        "lead_id": l.id, "email": l.email, "profile_url": l.profile_url, "first_name": l.first_name,
        "last_name": l.last_name, "company": l.company, "custom_fields": l.custom_fields, "status": l.status,
        "category": l.category, "provider_id": l.provider_id, "sync_status": l.sync_status, "sync_error": l.sync_error,
        "created_at": l.created_at, "updated_at": l.updated_at,
    })
}

fn message_json(m: &store::MessageRow) -> Value {
    json!({
        "message_id": m.id, "lead_id": m.lead_id, "direction": m.direction, "seq_number": m.seq_number,
        "subject": m.subject, "body": m.body, "provider_message_id": m.provider_message_id, "occurred_at": m.occurred_at,
    })
}

/// `GET /v1/inboxes`.
pub async fn list_inboxes(call: Call<'_>) -> Result<Reply, ApiError> {
    let mut tx = begin(&call).await?;
    let rows = store::inboxes(&mut tx).await?;
    tx.commit().await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|i| json!({ "inbox_id": i.id, "provider": i.provider, "address": i.address, "name": i.name, "status": i.status, "synced_at": i.synced_at }))
        .collect();
    Ok(Reply::json(StatusCode::OK, json!({ "inboxes": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCampaign {
    name: String,
    channel: String,
}

/// `POST /v1/campaigns {"name", "channel"}` → 201 the campaign, its `create_campaign` job
/// committed with it.
pub async fn create(call: Call<'_>) -> Result<Reply, ApiError> {
    let body: CreateCampaign = parse(&call)?;
    let name = text("name", &body.name, 200)?;
    let channel = match body.channel.as_str() {
        c @ ("email" | "linkedin") => c,
        _ => return Err(ApiError::invalid("channel", "must be \"email\" or \"linkedin\"")),
    };
    let capability = capability_of(channel);
    let mut tx = begin(&call).await?;
    let provider = store::capability(&mut tx, capability, false).await?.ok_or_else(|| not_enabled(capability))?.provider;
    let c = store::create_campaign(&mut tx, &name, channel, &provider, call.caller.user).await?;
    let job = enqueue(&call, &mut tx, &provider, Some(c.id), json!({ "op": "create_campaign", "provider": provider, "campaign_id": c.id })).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org(&call)?, campaign_id = %c.id, job_id = %job, provider = %provider, "campaign_created");
    Ok(Reply::json(StatusCode::CREATED, campaign_json(&c)))
}

/// `GET /v1/campaigns`: newest first.
pub async fn list(call: Call<'_>) -> Result<Reply, ApiError> {
    let limit = limit(&call, 500)?;
    let mut tx = begin(&call).await?;
    let rows = store::campaigns(&mut tx, limit).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, json!({ "campaigns": rows.iter().map(campaign_json).collect::<Vec<_>>() })))
}

/// `GET /v1/campaigns/{campaign_id}`.
pub async fn get(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let mut tx = begin(&call).await?;
    let c = readable(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, campaign_json(&c)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStatus {
    status: String,
}

/// `POST /v1/campaigns/{campaign_id}/status {"status"}`: `active`, `paused` or `stopped`
/// (final).
pub async fn set_status(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let body: SetStatus = parse(&call)?;
    let status = match body.status.as_str() {
        s @ ("active" | "paused" | "stopped") => s,
        _ => return Err(ApiError::invalid("status", "must be \"active\", \"paused\" or \"stopped\"")),
    };
    let mut tx = begin(&call).await?;
    let c = writable(&mut tx, id).await?;
    let c = store::set_campaign_status(&mut tx, c.id, status).await?;
    let job = enqueue(&call, &mut tx, &c.provider, Some(c.id), json!({ "op": "set_status", "provider": c.provider, "campaign_id": c.id, "status": status })).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org(&call)?, campaign_id = %c.id, job_id = %job, status, "campaign_status_set");
    Ok(Reply::json(StatusCode::OK, campaign_json(&c)))
}

fn sequence_json(s: Option<&store::SequenceRow>) -> Value {
    match s {
        Some(s) => json!({ "version": s.version, "steps": s.steps, "sync_status": s.sync_status, "sync_error": s.sync_error, "created_at": s.created_at }),
        None => json!({ "version": 0, "steps": [], "sync_status": Value::Null, "sync_error": Value::Null, "created_at": Value::Null }),
    }
}

/// `GET /v1/campaigns/{campaign_id}/sequence`: the latest version (`version: 0` before any).
pub async fn get_sequence(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let mut tx = begin(&call).await?;
    readable(&mut tx, id).await?;
    let s = store::latest_sequence(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, sequence_json(s.as_ref())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sequence {
    steps: Vec<StepIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepIn {
    subject: Option<String>,
    body: String,
    delay_days: Option<i64>,
}

/// The steps as stored and sent to the adapter: numbered from 1.
fn steps(channel: &str, input: Vec<StepIn>) -> Result<Value, ApiError> {
    if input.is_empty() || input.len() > MAX_STEPS {
        return Err(ApiError::invalid("steps", &format!("must hold 1 to {MAX_STEPS} steps")));
    }
    let mut out = Vec::with_capacity(input.len());
    for (i, s) in input.into_iter().enumerate() {
        let at = |f: &str| format!("steps[{i}].{f}");
        let body = text(&at("body"), &s.body, MAX_STEP_BODY)?;
        let subject = optional_text(&at("subject"), s.subject.as_deref(), MAX_SUBJECT)?;
        match (channel, &subject) {
            ("linkedin", Some(_)) => return Err(ApiError::invalid(&at("subject"), "is not used on the linkedin channel")),
            ("email", None) if i == 0 => return Err(ApiError::invalid(&at("subject"), "is required on the first email step")),
            _ => {}
        }
        let delay = s.delay_days.unwrap_or(0);
        if !(0..=MAX_DELAY_DAYS).contains(&delay) {
            return Err(ApiError::invalid(&at("delay_days"), &format!("must be 0 to {MAX_DELAY_DAYS}")));
        }
        out.push(json!({ "seq_number": i + 1, "subject": subject, "body": body, "delay_days": delay }));
    }
    Ok(Value::Array(out))
}

/// `POST /v1/campaigns/{campaign_id}/sequence {"steps": [...]}` → 201 the new version (every
/// save is one; the `put_sequence` job sends that snapshot).
pub async fn save_sequence(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let body: Sequence = parse(&call)?;
    let mut tx = begin(&call).await?;
    let c = writable(&mut tx, id).await?;
    let steps = steps(&c.channel, body.steps)?;
    let s = store::save_sequence(&mut tx, c.id, &steps, call.caller.user).await?;
    let job = enqueue(&call, &mut tx, &c.provider, Some(c.id), json!({ "op": "put_sequence", "provider": c.provider, "campaign_id": c.id, "version": s.version })).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org(&call)?, campaign_id = %c.id, job_id = %job, version = s.version, "campaign_sequence_saved");
    Ok(Reply::json(StatusCode::CREATED, sequence_json(Some(&s))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLeads {
    leads: Vec<LeadIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeadIn {
    email: Option<String>,
    profile_url: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    company: Option<String>,
    custom_fields: Option<Map<String, Value>>,
}

/// An email address, trimmed and lower-cased; `None` when it is not one.
pub fn normalise_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = e.len() <= 320
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|l| !l.is_empty() && l.len() <= 63)
        && !e.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')'));
    ok.then_some(e)
}

/// A LinkedIn profile URL (`https://[www.]linkedin.com/in/...`) and its identity: host
/// without `www.` and the path, lower-cased, without query, fragment or trailing `/`.
pub fn profile_identity(raw: &str) -> Option<(String, String)> {
    let url = raw.trim();
    if url.len() > 500 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let host = uri.host()?.to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host);
    if host != "linkedin.com" && !host.ends_with(".linkedin.com") {
        return None;
    }
    let path = uri.path().trim_end_matches('/').to_lowercase();
    let slug = path.strip_prefix("/in/").or_else(|| path.strip_prefix("/sales/lead/"))?;
    if slug.is_empty() {
        return None;
    }
    Some((url.to_string(), format!("{host}{path}")))
}

fn custom_fields(field: &str, input: Option<Map<String, Value>>) -> Result<Value, ApiError> {
    let map = input.unwrap_or_default();
    if map.len() > MAX_CUSTOM_FIELDS {
        return Err(ApiError::invalid(field, &format!("must hold at most {MAX_CUSTOM_FIELDS} fields")));
    }
    for (k, v) in &map {
        let at = format!("{field}.{k}");
        if k.is_empty() || k.chars().count() > 64 || k.chars().any(char::is_control) {
            return Err(ApiError::invalid(&at, "names must be 1 to 64 characters"));
        }
        match v {
            Value::String(s) if s.chars().count() > MAX_CUSTOM_VALUE => {
                return Err(ApiError::invalid(&at, &format!("must be at most {MAX_CUSTOM_VALUE} characters")))
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {}
            _ => return Err(ApiError::invalid(&at, "must be a string, number, boolean or null")),
        }
    }
    Ok(Value::Object(map))
}

/// Validates one lead for a campaign on `channel`.
fn lead(channel: &str, i: usize, l: LeadIn) -> Result<store::NewLead, ApiError> {
    let at = |f: &str| format!("leads[{i}].{f}");
    let email = match l.email.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(e) => Some(normalise_email(e).ok_or_else(|| ApiError::invalid(&at("email"), "must be an email address"))?),
    };
    let profile = match l.profile_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => Some(profile_identity(u).ok_or_else(|| {
            ApiError::invalid(&at("profile_url"), "must be a LinkedIn profile URL (https://www.linkedin.com/in/...)")
        })?),
    };
    let identity = match channel {
        "linkedin" => profile.as_ref().map(|(_, id)| id.clone()).ok_or_else(|| ApiError::invalid(&at("profile_url"), "is required on the linkedin channel"))?,
        _ => email.clone().ok_or_else(|| ApiError::invalid(&at("email"), "is required on the email channel"))?,
    };
    Ok(store::NewLead {
        identity,
        email,
        profile_url: profile.map(|(url, _)| url),
        first_name: optional_text(&at("first_name"), l.first_name.as_deref(), 200)?,
        last_name: optional_text(&at("last_name"), l.last_name.as_deref(), 200)?,
        company: optional_text(&at("company"), l.company.as_deref(), 200)?,
        custom_fields: custom_fields(&at("custom_fields"), l.custom_fields)?,
    })
}

/// `POST /v1/campaigns/{campaign_id}/leads {"leads": [...]}` (1 to 1000) → 202
/// `{"added", "duplicates", "leads"}`: leads whose identity (email, or profile URL) the
/// campaign already holds, or that repeat one earlier in the request, are duplicates.
pub async fn add_leads(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let body: AddLeads = parse(&call)?;
    if body.leads.is_empty() || body.leads.len() > MAX_LEADS {
        return Err(ApiError::invalid("leads", &format!("must hold 1 to {MAX_LEADS} leads")));
    }
    let total = body.leads.len();
    let mut tx = begin(&call).await?;
    let c = writable(&mut tx, id).await?;
    let mut seen = std::collections::HashSet::new();
    let mut leads = Vec::with_capacity(total);
    for (i, l) in body.leads.into_iter().enumerate() {
        let l = lead(&c.channel, i, l)?;
        if seen.insert(l.identity.clone()) {
            leads.push(l);
        }
    }
    let added = store::add_leads(&mut tx, c.id, &leads).await?;
    if !added.is_empty() {
        let ids: Vec<Uuid> = added.iter().map(|l| l.id).collect();
        enqueue(&call, &mut tx, &c.provider, Some(c.id), json!({ "op": "add_leads", "provider": c.provider, "campaign_id": c.id, "lead_ids": ids })).await?;
    }
    tx.commit().await?;
    tracing::info!(org_id = %org(&call)?, campaign_id = %c.id, added = added.len(), duplicates = total - added.len(), "campaign_leads_added");
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        json!({ "added": added.len(), "duplicates": total - added.len(), "leads": added.iter().map(lead_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /v1/campaigns/{campaign_id}/leads`: oldest first.
pub async fn list_leads(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let limit = limit(&call, 1000)?;
    let mut tx = begin(&call).await?;
    readable(&mut tx, id).await?;
    let rows = store::leads(&mut tx, id, limit).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, json!({ "leads": rows.iter().map(lead_json).collect::<Vec<_>>() })))
}

/// `POST /v1/campaigns/{campaign_id}/leads/{lead_id}/pause|resume|unsubscribe` → 200 the lead.
/// An unsubscribed lead stays so (409 `LEAD_UNSUBSCRIBED`).
pub async fn lead_action(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let lead_id = uuid_param(&call, "lead_id")?;
    let (action, status) = match call.path.rsplit('/').next() {
        Some("pause") => ("pause", "paused"),
        Some("resume") => ("resume", "active"),
        Some("unsubscribe") => ("unsubscribe", "unsubscribed"),
        _ => return Err(ApiError::not_found()),
    };
    let mut tx = begin(&call).await?;
    let c = writable(&mut tx, id).await?;
    let l = store::lead(&mut tx, c.id, lead_id).await?.ok_or_else(ApiError::not_found)?;
    if l.status == "unsubscribed" && action != "unsubscribe" {
        return Err(ApiError::new(Code::Conflict, "this lead unsubscribed; it cannot be paused or resumed").with_code("LEAD_UNSUBSCRIBED".into()));
    }
    let l = store::set_lead_status(&mut tx, c.id, l.id, status).await?;
    let job = enqueue(
        &call,
        &mut tx,
        &c.provider,
        Some(c.id),
        json!({ "op": "lead_action", "provider": c.provider, "campaign_id": c.id, "lead_id": l.id, "action": action }),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(org_id = %org(&call)?, campaign_id = %c.id, lead_id = %l.id, job_id = %job, action, "campaign_lead_action");
    Ok(Reply::json(StatusCode::OK, lead_json(&l)))
}

/// `GET /v1/campaigns/{campaign_id}/replies`: inbound messages, newest first.
pub async fn replies(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let limit = limit(&call, 500)?;
    let mut tx = begin(&call).await?;
    readable(&mut tx, id).await?;
    let rows = store::replies(&mut tx, id, limit).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, json!({ "replies": rows.iter().map(message_json).collect::<Vec<_>>() })))
}

/// `GET /v1/campaigns/{campaign_id}/leads/{lead_id}/messages`: both ways, oldest first.
pub async fn lead_messages(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let lead_id = uuid_param(&call, "lead_id")?;
    let limit = limit(&call, 500)?;
    let mut tx = begin(&call).await?;
    readable(&mut tx, id).await?;
    store::lead(&mut tx, id, lead_id).await?.ok_or_else(ApiError::not_found)?;
    let rows = store::lead_messages(&mut tx, id, lead_id, limit).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, json!({ "messages": rows.iter().map(message_json).collect::<Vec<_>>() })))
}

/// `GET /v1/campaigns/{campaign_id}/analytics`: counts per sequence step from
/// `campaign_activity`, and totals over all activity (steps included or not).
pub async fn analytics(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "campaign_id")?;
    let mut tx = begin(&call).await?;
    readable(&mut tx, id).await?;
    let rows = store::analytics(&mut tx, id).await?;
    tx.commit().await?;
    let counts = |r: &store::StepCounts| [r.sent, r.opened, r.clicked, r.replied, r.bounced, r.unsubscribed];
    let named = |c: [i64; 6]| {
        json!({ "sent": c[0], "opened": c[1], "clicked": c[2], "replied": c[3], "bounced": c[4], "unsubscribed": c[5] })
    };
    let mut totals = [0i64; 6];
    let mut steps = Vec::new();
    for r in &rows {
        let c = counts(r);
        for (t, n) in totals.iter_mut().zip(c) {
            *t += n;
        }
        if let Some(seq) = r.seq_number {
            let mut step = named(c);
            step["seq_number"] = json!(seq);
            steps.push(step);
        }
    }
    Ok(Reply::json(StatusCode::OK, json!({ "steps": steps, "totals": named(totals) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lower_cased_and_checked() {
        assert_eq!(normalise_email("  Ann@Example.COM ").as_deref(), Some("ann@example.com"));
        for bad in ["", "ann", "ann@", "@example.com", "ann@example", "a b@example.com", "ann@@example.com", "ann@example..com", "<ann@example.com>"] {
            assert_eq!(normalise_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn profile_urls_are_linkedin_profiles_with_a_stable_identity() {
        let (url, id) = profile_identity(" https://www.LinkedIn.com/in/Ann-Lee/ ").unwrap();
        assert_eq!(url, "https://www.LinkedIn.com/in/Ann-Lee/");
        assert_eq!(id, "linkedin.com/in/ann-lee");
        assert_eq!(profile_identity("https://linkedin.com/in/ann-lee?x=1").unwrap().1, id);
        for bad in ["http://linkedin.com/in/ann", "https://evil.com/in/ann", "https://linkedin.com/in/", "https://linkedin.com/company/x", "https://notlinkedin.com/in/ann", "linkedin.com/in/ann"] {
            assert!(profile_identity(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sequences_number_steps_and_check_subjects_per_channel() {
        let step = |subject: Option<&str>, delay: Option<i64>| StepIn { subject: subject.map(str::to_string), body: "Hi".into(), delay_days: delay };
        let s = steps("email", vec![step(Some("Hello"), None), step(None, Some(3))]).unwrap();
        assert_eq!(s[1], json!({"seq_number": 2, "subject": null, "body": "Hi", "delay_days": 3}));
        assert!(steps("email", vec![step(None, None)]).is_err());
        assert!(steps("linkedin", vec![step(Some("x"), None)]).is_err());
        assert!(steps("linkedin", vec![step(None, Some(366))]).is_err());
        assert!(steps("linkedin", vec![]).is_err());
    }
}
