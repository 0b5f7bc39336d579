//! `optimizer`: proposes changes to a tenant's campaigns from their per-step statistics
//! (`docs/optimizer.md`, "The plugin contract"). It only proposes (read grants only): the
//! host stores, reviews, applies and rolls back.
//!
//! With `llm` in the request it asks the org's chat-completions model, one call per campaign,
//! through `outbound-http` without a key (the host injects `authorization: Bearer …` for the
//! org's configured `openai` origin and redacts the key from the answer). When the model
//! fails (a non-2xx, a 429, a timeout, an answer it cannot use), the campaign gets the
//! deterministic rules, the rest of the run too (a failing model is not asked again; nor is
//! it after [`logic::MODEL_BUDGET`], so the run ends inside its sandbox), and the answer says
//! `"llm": "failed: <reason>"`. The pure parts are in [`logic`].

pub mod logic;

use gateway_plugin_sdk::db::{self, Filtered, Row, Value};
use gateway_plugin_sdk::http::{self, HttpError, OutgoingRequest};
use gateway_plugin_sdk::serde_json::{json, Value as J};
use gateway_plugin_sdk::{self as sdk, Header, HandlerError, Request, Response};

use logic::{Campaign, Llm, Stat, Step};

struct Optimizer;

fn db_err(e: db::DbError) -> HandlerError {
    sdk::failed(&db::describe(&e))
}

/// The campaign's latest version (steps) and its step counts; `None` before its first version.
fn load(row: &Row) -> Result<Option<Campaign>, HandlerError> {
    let id = row.str("id").unwrap_or_default().to_string();
    let version = row.int("sequence_version").unwrap_or(0);
    if version <= 0 {
        return Ok(None);
    }
    let seq = db::select("campaign_sequences")
        .columns(&["steps"])
        .eq("campaign_id", Value::uuid(&id))
        .eq("version", Value::Integer(version))
        .fetch_one()
        .map_err(db_err)?;
    let steps: Vec<Step> = seq
        .map(|r| r.to_json()["steps"].as_array().map(|a| a.iter().filter_map(Step::from_json).collect()).unwrap_or_default())
        .unwrap_or_default();
    let stats = Row::all(
        db::select("campaign_step_stats")
            .columns(&["seq_number", "sent", "opened", "clicked", "replied", "bounced", "unsubscribed"])
            .eq("campaign_id", Value::uuid(&id))
            .fetch()
            .map_err(db_err)?,
    )
    .iter()
    .map(|s| {
        let n = |c: &str| s.int(c).unwrap_or(0);
        Stat {
            seq_number: n("seq_number"),
            sent: n("sent"),
            opened: n("opened"),
            clicked: n("clicked"),
            replied: n("replied"),
            bounced: n("bounced"),
            unsubscribed: n("unsubscribed"),
        }
    })
    .collect();
    Ok(Some(Campaign {
        id,
        channel: row.str("channel").unwrap_or_default().to_string(),
        status: row.str("status").unwrap_or_default().to_string(),
        version,
        steps,
        stats,
    }))
}

/// Asks the model about one campaign: its proposals, or a short reason it gave none.
fn ask(llm: &Llm, c: &Campaign) -> Result<Vec<J>, String> {
    let req = OutgoingRequest {
        method: "POST".into(),
        url: format!("{}/chat/completions", llm.base_url),
        // No authorization: the host adds the org's key for its configured origin.
        headers: vec![
            Header { name: "content-type".into(), value: "application/json".into() },
            Header { name: "accept".into(), value: "application/json".into() },
        ],
        body: logic::chat_request(&llm.model, c).to_string().into_bytes(),
    };
    let resp = http::send(&req).map_err(|e| match e {
        HttpError::Timeout => "timeout".to_string(),
        HttpError::NotAllowed(_) => "not allowed (is provider openai configured at this base_url?)".to_string(),
        HttpError::ForbiddenAddress(_) => "forbidden address".to_string(),
        HttpError::DnsFailed(_) => "dns failed".to_string(),
        HttpError::ConnectFailed(_) => "connect failed".to_string(),
        HttpError::ResponseTooLarge(_) => "answer too large".to_string(),
        HttpError::InvalidRequest(_) | HttpError::Protocol(_) => "protocol error".to_string(),
    })?;
    if !(200..300).contains(&resp.status) {
        return Err(logic::status_reason(resp.status));
    }
    logic::read_completion(c, &resp.body)
}

impl sdk::Guest for Optimizer {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        // The host calls exactly `/optimize`; a prefix before it is a test route's.
        if !(req.path == "/optimize" || req.path.ends_with("/optimize")) || req.method != "POST" {
            return Err(sdk::not_found());
        }
        let input = logic::parse_input(&req.json_value()?).map_err(|p| sdk::invalid_with("request failed validation", J::Array(p)))?;
        let mut q = db::select("campaigns").columns(&["id", "channel", "status", "sequence_version"]);
        q = match &input.campaign_id {
            Some(id) => q.eq("id", Value::uuid(id)),
            None => q.eq("status", Value::text("active")).order_by("created_at", true).limit(logic::MAX_CAMPAIGNS),
        };
        let started = std::time::Instant::now();
        let rows = Row::all(q.fetch().map_err(db_err)?);
        let mut proposals = Vec::new();
        let mut failure: Option<String> = None;
        let mut asked = 0;
        for row in &rows {
            let Some(c) = load(row)? else { continue };
            if input.llm.is_some() && failure.is_none() && started.elapsed() > logic::MODEL_BUDGET {
                failure = Some(format!("out of time after asking about {asked} campaigns"));
            }
            let from_model = match (&input.llm, &failure) {
                (Some(llm), None) => {
                    asked += 1;
                    ask(llm, &c).map_err(|reason| {
                        sdk::log::warn("optimizer_llm_failed", &[("reason", &reason)]);
                        failure = Some(reason);
                    })
                    .ok()
                }
                _ => None,
            };
            proposals.extend(from_model.unwrap_or_else(|| logic::rules(&c)));
        }
        let llm = match (&input.llm, failure) {
            (None, _) => "not_configured".to_string(),
            (Some(_), None) => "used".to_string(),
            (Some(_), Some(reason)) => format!("failed: {reason}"),
        };
        sdk::json(200, &json!({ "proposals": proposals, "examined": rows.len(), "llm": llm }))
    }
}

sdk::export_plugin!(Optimizer);
