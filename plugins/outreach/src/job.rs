//! `POST /provider/{op}`: one provider-sync job (docs/providers.md, "Sync jobs").
//!
//! The job body is validated before anything else runs (a malformed job is a 400 and writes
//! nothing). Then the op runs, and its outcome becomes the job's:
//!
//! | provider says | the adapter | the job |
//! |---|---|---|
//! | 2xx | writes provider ids, `sync_status = 'synced'` | done (200) |
//! | 429 (or the host's pacing) | keeps what earlier batches wrote | 429 + `retry-after`: rescheduled, no attempt used |
//! | 5xx, connect error, timeout | writes nothing (rolled back) | `unavailable`: retried with backoff |
//! | other 4xx | `sync_status = 'failed'`, `sync_error = 'PROVIDER_REJECTED: <status> <reason>'` | done (200) |
//!
//! Ops are idempotent under retries: a campaign that already has its provider id is not
//! created again, leads already `synced` are not sent again, a provisioned webhook is not
//! registered again.

use gateway_plugin_sdk::encoding::is_uuid;
use gateway_plugin_sdk::serde_json::{json, Map, Value as J};
use gateway_plugin_sdk::{self as sdk, Header, HandlerError, Request, Response};

use crate::api::{Api, CallError};
use crate::{store, Adapter, Campaign, LeadAction, Pair, Status, Step};

/// Leads per job at most (the campaigns API takes 1 000 per request).
pub const MAX_LEADS: usize = 1000;

/// A validated job.
#[derive(Debug, PartialEq)]
pub enum Op {
    Provision { webhook_url: String },
    CreateCampaign { campaign_id: String },
    SetStatus { campaign_id: String, status: Status },
    PutSequence { campaign_id: String, version: i64 },
    AddLeads { campaign_id: String, lead_ids: Vec<String> },
    LeadAction { campaign_id: String, lead_id: String, action: LeadAction },
    SyncInboxes,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Provision { .. } => "provision",
            Op::CreateCampaign { .. } => "create_campaign",
            Op::SetStatus { .. } => "set_status",
            Op::PutSequence { .. } => "put_sequence",
            Op::AddLeads { .. } => "add_leads",
            Op::LeadAction { .. } => "lead_action",
            Op::SyncInboxes => "sync_inboxes",
        }
    }
}

/// The job's op and base URL from its path and body; every problem at once.
pub fn parse(path_op: &str, body: &J) -> Result<(Op, Api), HandlerError> {
    let Some(obj) = body.as_object() else {
        return Err(sdk::invalid_with("job failed validation", json!([{"field": "body", "problem": "must be a JSON object"}])));
    };
    let mut problems = Vec::new();
    let mut problem = |field: &str, what: &str| problems.push(json!({"field": field, "problem": what}));
    if let Some(op) = obj.get("op") {
        if op.as_str() != Some(path_op) {
            problem("op", "must match the path's op");
        }
    }
    let api = match obj.get("base_url").and_then(J::as_str) {
        Some(u) => Api::new(u).map_err(|e| problem("base_url", &e)).ok(),
        None => {
            problem("base_url", "is required");
            None
        }
    };
    let uuid = |obj: &Map<String, J>, field: &str, problem: &mut dyn FnMut(&str, &str)| -> String {
        match obj.get(field).and_then(J::as_str) {
            Some(s) if is_uuid(s) => s.to_string(),
            _ => {
                problem(field, "must be a UUID");
                String::new()
            }
        }
    };
    let op = match path_op {
        "provision" => match obj.get("webhook_url").and_then(J::as_str) {
            Some(u) if (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2048 => {
                Some(Op::Provision { webhook_url: u.to_string() })
            }
            _ => {
                problem("webhook_url", "must be an absolute http(s) URL");
                None
            }
        },
        "create_campaign" => Some(Op::CreateCampaign { campaign_id: uuid(obj, "campaign_id", &mut problem) }),
        "set_status" => {
            let campaign_id = uuid(obj, "campaign_id", &mut problem);
            match obj.get("status").and_then(J::as_str).and_then(Status::parse) {
                Some(status) => Some(Op::SetStatus { campaign_id, status }),
                None => {
                    problem("status", "must be one of active, paused, stopped");
                    None
                }
            }
        }
        "put_sequence" => {
            let campaign_id = uuid(obj, "campaign_id", &mut problem);
            match obj.get("version").and_then(J::as_i64) {
                Some(v) if v > 0 && v <= i64::from(i32::MAX) => Some(Op::PutSequence { campaign_id, version: v }),
                _ => {
                    problem("version", "must be a positive integer");
                    None
                }
            }
        }
        "add_leads" => {
            let campaign_id = uuid(obj, "campaign_id", &mut problem);
            match obj.get("lead_ids").and_then(J::as_array) {
                Some(ids) if !ids.is_empty() && ids.len() <= MAX_LEADS && ids.iter().all(|i| i.as_str().is_some_and(is_uuid)) => {
                    let mut lead_ids: Vec<String> = ids.iter().filter_map(|i| i.as_str().map(str::to_string)).collect();
                    let mut seen = std::collections::HashSet::new();
                    lead_ids.retain(|i| seen.insert(i.to_ascii_lowercase()));
                    Some(Op::AddLeads { campaign_id, lead_ids })
                }
                _ => {
                    problem("lead_ids", "must be 1 to 1000 UUIDs");
                    None
                }
            }
        }
        "lead_action" => {
            let campaign_id = uuid(obj, "campaign_id", &mut problem);
            let lead_id = uuid(obj, "lead_id", &mut problem);
            match obj.get("action").and_then(J::as_str).and_then(LeadAction::parse) {
                Some(action) => Some(Op::LeadAction { campaign_id, lead_id, action }),
                None => {
                    problem("action", "must be one of pause, resume, unsubscribe");
                    None
                }
            }
        }
        "sync_inboxes" => Some(Op::SyncInboxes),
        _ => {
            problem("op", "is not one of provision, create_campaign, set_status, put_sequence, add_leads, lead_action, sync_inboxes");
            None
        }
    };
    match (op, api) {
        (Some(op), Some(api)) if problems.is_empty() => Ok((op, api)),
        _ => Err(sdk::invalid_with("job failed validation", J::Array(problems))),
    }
}

/// Where a refusal is recorded.
enum Target<'a> {
    Provisioning,
    Campaign(&'a str),
    Sequence(&'a str, i64),
    Leads(&'a [String]),
    Nothing,
}

pub fn run<A: Adapter>(path_op: &str, req: &Request) -> Result<Response, HandlerError> {
    let (op, api) = parse(path_op, &req.json_value()?)?;
    let (result, target) = match &op {
        Op::Provision { webhook_url } => (provision::<A>(&api, webhook_url), Target::Provisioning),
        Op::CreateCampaign { campaign_id } => (create_campaign::<A>(&api, campaign_id), Target::Campaign(campaign_id)),
        Op::SetStatus { campaign_id, status } => (set_status::<A>(&api, campaign_id, *status), Target::Campaign(campaign_id)),
        Op::PutSequence { campaign_id, version } => {
            (put_sequence::<A>(&api, campaign_id, *version), Target::Sequence(campaign_id, *version))
        }
        // Refusals are recorded per lead inside.
        Op::AddLeads { campaign_id, lead_ids } => (add_leads::<A>(&api, campaign_id, lead_ids), Target::Nothing),
        Op::LeadAction { campaign_id, lead_id, action } => {
            (lead_action::<A>(&api, campaign_id, lead_id, *action), Target::Leads(std::slice::from_ref(lead_id)))
        }
        Op::SyncInboxes => (sync_inboxes::<A>(&api).map(|n| json!({"inboxes": n})), Target::Nothing),
    };
    let name = op.name();
    match result {
        Ok(mut out) => {
            out["ok"] = J::Bool(true);
            out["op"] = name.into();
            sdk::log::info("provider_sync_done", &[("provider", A::NAME), ("op", name)]);
            sdk::json(200, &out)
        }
        Err(e) => outcome::<A>(name, e, target),
    }
}

/// A failed op as the job's answer (see the module's table).
fn outcome<A: Adapter>(op: &str, e: CallError, target: Target<'_>) -> Result<Response, HandlerError> {
    if let Some(error) = e.sync_error() {
        match target {
            Target::Provisioning => store::provisioning(A::CAPABILITY, A::NAME, None, Some(&error))?,
            // A campaign that never reached the provider keeps the reason it has.
            Target::Campaign(_) if error.starts_with("NOT_CREATED") => {}
            Target::Campaign(id) => store::campaign_sync(id, Some(&error))?,
            Target::Sequence(id, v) => store::sequence_sync(id, v, Some(&error))?,
            Target::Leads(ids) => {
                for id in ids {
                    store::lead_sync(id, None, Some(&error))?;
                }
            }
            Target::Nothing => {}
        }
        let code = error.split(':').next().unwrap_or_default().to_string();
        sdk::log::warn("provider_sync_refused", &[("provider", A::NAME), ("op", op), ("code", &code)]);
        return sdk::json(200, &json!({"ok": false, "op": op, "sync_error": error}));
    }
    match e {
        CallError::RateLimited(secs) => {
            sdk::log::info("provider_sync_rate_limited", &[("provider", A::NAME), ("op", op), ("retry_after", &secs.to_string())]);
            let mut r = sdk::json(429, &json!({"ok": false, "op": op, "retry_after": secs}))?;
            r.headers.push(Header { name: "retry-after".into(), value: secs.to_string() });
            Ok(r)
        }
        CallError::Unavailable(m) => Err(HandlerError::Unavailable(m)),
        CallError::Failed(m) => Err(sdk::failed(&m)),
        CallError::Db(h) => Err(h),
        CallError::Rejected { .. } => unreachable!("refusals are recorded above"),
    }
}

fn provision<A: Adapter>(api: &Api, webhook_url: &str) -> Result<J, CallError> {
    A::check_key(api)?;
    let webhook_id = match store::provisioned_webhook(A::CAPABILITY, A::NAME)? {
        Some(id) => id,
        None => A::register_webhook(api, webhook_url)?,
    };
    let inboxes = sync_inboxes::<A>(api)?;
    store::provisioning(A::CAPABILITY, A::NAME, Some(&webhook_id), None)?;
    Ok(json!({"provider_webhook_id": webhook_id, "inboxes": inboxes}))
}

fn sync_inboxes<A: Adapter>(api: &Api) -> Result<u64, CallError> {
    let inboxes = A::list_inboxes(api)?;
    store::upsert_inboxes(A::NAME, &inboxes)?;
    Ok(inboxes.len() as u64)
}

fn create_campaign<A: Adapter>(api: &Api, id: &str) -> Result<J, CallError> {
    let Some(c) = store::campaign(A::NAME, id)? else { return Ok(json!({"ignored": "no such campaign"})) };
    let provider_id = match &c.provider_id {
        // A retry after the provider's answer was written: nothing more to do.
        Some(p) => p.clone(),
        None => match A::find_campaign(api, &c.name)? {
            Some(p) => p,
            None => A::create_campaign(api, &c.name)?,
        },
    };
    store::campaign_created(id, &provider_id)?;
    Ok(json!({"campaign_id": id, "provider_id": provider_id}))
}

/// The campaign's provider id; a campaign not at the provider yet is retried (its create job
/// may still be pending), unless its creation failed for good.
fn provider_campaign<A: Adapter>(api: &Api, c: &Campaign) -> Result<String, CallError> {
    if let Some(p) = &c.provider_id {
        return Ok(p.clone());
    }
    if let Some(p) = A::find_campaign(api, &c.name)? {
        store::campaign_created(&c.id, &p)?;
        return Ok(p);
    }
    if c.sync_status == "failed" {
        return Err(CallError::Rejected { code: "NOT_CREATED", status: None, reason: "the campaign is not at the provider".into() });
    }
    Err(CallError::Unavailable("the campaign is not created at the provider yet".into()))
}

fn set_status<A: Adapter>(api: &Api, id: &str, asked: Status) -> Result<J, CallError> {
    let Some(c) = store::campaign(A::NAME, id)? else { return Ok(json!({"ignored": "no such campaign"})) };
    // The local row is the source of truth: jobs that run late converge on its status.
    let status = Status::parse(&c.status).unwrap_or(asked);
    let pid = provider_campaign::<A>(api, &c)?;
    let note = A::set_status(api, &pid, status)?;
    store::campaign_sync(id, None)?;
    Ok(json!({"campaign_id": id, "status": status.as_str(), "note": note}))
}

/// A snapshot's steps; malformed steps are skipped (the campaigns API validated them).
pub fn steps(doc: &J) -> Vec<Step> {
    doc.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some(Step {
                        subject: s.get("subject").and_then(J::as_str).unwrap_or_default().to_string(),
                        body: s.get("body").and_then(J::as_str)?.to_string(),
                        delay_days: s.get("delay_days").and_then(J::as_i64).unwrap_or(0).max(0),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn put_sequence<A: Adapter>(api: &Api, id: &str, version: i64) -> Result<J, CallError> {
    if let Some(why) = A::SEQUENCE_UNSUPPORTED {
        return Err(CallError::unsupported(why));
    }
    let Some(c) = store::campaign(A::NAME, id)? else { return Ok(json!({"ignored": "no such campaign"})) };
    let Some(doc) = store::sequence(id, version)? else { return Ok(json!({"ignored": "no such sequence version"})) };
    let pid = provider_campaign::<A>(api, &c)?;
    let steps = steps(&doc);
    A::put_sequence(api, &pid, c.status == "active", &steps)?;
    store::sequence_sync(id, version, None)?;
    Ok(json!({"campaign_id": id, "version": version, "steps": steps.len()}))
}

/// Why a lead cannot go to this provider, if it cannot.
fn lead_problem<A: Adapter>(lead: &crate::Lead) -> Option<&'static str> {
    match (A::NEEDS_SENDER, &lead.email, &lead.profile_url) {
        (false, None, _) => Some("INVALID_LEAD: an email campaign's lead needs an email"),
        (true, _, None) => Some("INVALID_LEAD: a LinkedIn campaign's lead needs a profile_url"),
        _ => None,
    }
}

/// Pairs each lead with a sender, round robin (`senders` empty: none).
pub fn pair<'a>(leads: &'a [crate::Lead], senders: &'a [String]) -> Vec<Pair<'a>> {
    leads
        .iter()
        .enumerate()
        .map(|(i, lead)| Pair { lead, sender: (!senders.is_empty()).then(|| senders[i % senders.len()].as_str()) })
        .collect()
}

fn add_leads<A: Adapter>(api: &Api, id: &str, lead_ids: &[String]) -> Result<J, CallError> {
    let Some(c) = store::campaign(A::NAME, id)? else { return Ok(json!({"ignored": "no such campaign"})) };
    let mut leads = Vec::new();
    let (mut skipped, mut invalid) = (0, 0);
    for lid in lead_ids {
        match store::lead(id, lid)? {
            Some(l) if l.sync_status == "synced" => skipped += 1,
            Some(l) => match lead_problem::<A>(&l) {
                Some(why) => {
                    store::lead_sync(&l.id, None, Some(why))?;
                    invalid += 1;
                }
                None => leads.push(l),
            },
            None => skipped += 1,
        }
    }
    if leads.is_empty() {
        return Ok(json!({"added": 0, "already": skipped, "invalid": invalid}));
    }
    let refuse_all = |e: CallError| -> Result<J, CallError> {
        let Some(error) = e.sync_error() else { return Err(e) };
        for l in &leads {
            store::lead_sync(&l.id, None, Some(&error))?;
        }
        Ok(json!({"added": 0, "rejected": leads.len(), "already": skipped, "invalid": invalid, "sync_error": error}))
    };
    let pid = match provider_campaign::<A>(api, &c) {
        Ok(pid) => pid,
        Err(e) => return refuse_all(e),
    };
    let mut senders = Vec::new();
    if A::NEEDS_SENDER {
        senders = store::senders(A::NAME)?;
        if senders.is_empty() {
            sync_inboxes::<A>(api)?;
            senders = store::senders(A::NAME)?;
        }
        if senders.is_empty() {
            let reason = "no active sending account at the provider".into();
            return refuse_all(CallError::Rejected { code: "NO_SENDER", status: None, reason });
        }
    }
    let pairs = pair(&leads, &senders);
    let (mut added, mut rejected) = (0, 0);
    for batch in pairs.chunks(A::LEAD_BATCH) {
        match A::add_leads(api, &pid, batch) {
            Ok(ids) => {
                for (i, p) in batch.iter().enumerate() {
                    store::lead_sync(&p.lead.id, ids.get(i).cloned().flatten().as_deref(), None)?;
                }
                added += batch.len();
            }
            Err(e) => match e.sync_error() {
                Some(error) => {
                    for p in batch {
                        store::lead_sync(&p.lead.id, None, Some(&error))?;
                    }
                    rejected += batch.len();
                }
                // 429: the batches already sent stay recorded (the answer commits them); the
                // retry sends only what is not `synced`.
                None => return Err(e),
            },
        }
    }
    Ok(json!({"added": added, "rejected": rejected, "already": skipped, "invalid": invalid}))
}

fn lead_action<A: Adapter>(api: &Api, id: &str, lead_id: &str, action: LeadAction) -> Result<J, CallError> {
    let Some(c) = store::campaign(A::NAME, id)? else { return Ok(json!({"ignored": "no such campaign"})) };
    let Some(lead) = store::lead(id, lead_id)? else { return Ok(json!({"ignored": "no such lead"})) };
    let pid = provider_campaign::<A>(api, &c)?;
    let learned = A::lead_action(api, &pid, &lead, action)?;
    store::lead_sync(&lead.id, learned.as_deref(), None)?;
    Ok(json!({"campaign_id": id, "lead_id": lead_id}))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0b4e8a52-6a51-4d4c-9b0e-1f1f3c1e8a01";
    const L: &str = "9d0f3e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6";

    fn fields(e: HandlerError) -> Vec<String> {
        let HandlerError::Invalid(p) = e else { panic!("not invalid: {e:?}") };
        let d: J = gateway_plugin_sdk::serde_json::from_str(&p.details.unwrap()).unwrap();
        d.as_array().unwrap().iter().map(|x| x["field"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn jobs_are_validated_whole() {
        let base = "https://server.smartlead.ai/api/v1";
        let (op, _) = parse("add_leads", &json!({"op": "add_leads", "base_url": base, "campaign_id": C, "lead_ids": [L, L]})).unwrap();
        assert_eq!(op, Op::AddLeads { campaign_id: C.into(), lead_ids: vec![L.into()] });
        let (op, _) = parse("set_status", &json!({"base_url": base, "campaign_id": C, "status": "paused"})).unwrap();
        assert_eq!(op, Op::SetStatus { campaign_id: C.into(), status: Status::Paused });
        assert_eq!(parse("sync_inboxes", &json!({"base_url": base})).unwrap().0, Op::SyncInboxes);

        assert_eq!(fields(parse("nope", &json!({"base_url": base})).unwrap_err()), ["op"]);
        assert_eq!(fields(parse("provision", &json!([])).unwrap_err()), ["body"]);
        assert_eq!(fields(parse("create_campaign", &json!({"op": "set_status"})).unwrap_err()), ["op", "base_url", "campaign_id"]);
        assert_eq!(
            fields(parse("lead_action", &json!({"base_url": "https://x.io?api_key=k", "campaign_id": "1", "lead_id": L, "action": "delete"})).unwrap_err()),
            ["base_url", "campaign_id", "action"]
        );
        assert_eq!(fields(parse("add_leads", &json!({"base_url": base, "campaign_id": C, "lead_ids": []})).unwrap_err()), ["lead_ids"]);
        let many: Vec<J> = (0..1001).map(|_| J::from(L)).collect();
        assert_eq!(fields(parse("add_leads", &json!({"base_url": base, "campaign_id": C, "lead_ids": many})).unwrap_err()), ["lead_ids"]);
        assert_eq!(fields(parse("put_sequence", &json!({"base_url": base, "campaign_id": C, "version": 0})).unwrap_err()), ["version"]);
        assert_eq!(fields(parse("provision", &json!({"base_url": base, "webhook_url": "ftp://x"})).unwrap_err()), ["webhook_url"]);
    }

    #[test]
    fn steps_are_read_from_the_snapshot() {
        let doc = json!([{"subject": "Hi", "body": "B1", "delay_days": 0}, {"body": "B2", "delay_days": 3}, {"subject": "no body"}]);
        assert_eq!(
            steps(&doc),
            vec![
                Step { subject: "Hi".into(), body: "B1".into(), delay_days: 0 },
                Step { subject: String::new(), body: "B2".into(), delay_days: 3 }
            ]
        );
    }

    #[test]
    fn senders_are_assigned_round_robin_and_batches_respect_the_cap() {
        let leads: Vec<crate::Lead> = (0..250).map(|i| crate::Lead { id: i.to_string(), ..Default::default() }).collect();
        let senders = vec!["a".to_string(), "b".to_string()];
        let pairs = pair(&leads, &senders);
        assert_eq!(pairs.iter().take(3).map(|p| p.sender.unwrap()).collect::<Vec<_>>(), ["a", "b", "a"]);
        let sizes: Vec<usize> = pairs.chunks(100).map(<[_]>::len).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert!(pair(&leads, &[]).iter().all(|p| p.sender.is_none()));
    }
}
