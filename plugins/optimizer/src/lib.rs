//! `optimizer`: proposes changes to a tenant's campaigns from their per-step statistics
//! (`docs/optimizer.md`, "The plugin contract"). It only proposes: the host stores, reviews,
//! applies and rolls back.
//!
//! Skeleton: the deterministic rules only (no model yet).

use gateway_plugin_sdk::db::{self, Filtered, Row, Value};
use gateway_plugin_sdk::serde_json::{json, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError, Request, Response};

struct Optimizer;

/// Sends before a rate means anything.
const MIN_SENT: i64 = 50;

fn rate(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn rules(campaign: &Row, steps: &[J], stats: &[Row]) -> Vec<J> {
    let id = campaign.str("id").unwrap_or_default();
    let version = campaign.int("sequence_version").unwrap_or(0);
    let channel = campaign.str("channel").unwrap_or_default();
    let mut out = Vec::new();
    let stat = |seq: i64| stats.iter().find(|s| s.int("seq_number") == Some(seq));
    for step in steps {
        let Some(seq) = step.get("seq_number").and_then(J::as_i64) else { continue };
        let Some(s) = stat(seq) else { continue };
        let (sent, opened, replied) = (s.int("sent").unwrap_or(0), s.int("opened").unwrap_or(0), s.int("replied").unwrap_or(0));
        if sent < MIN_SENT {
            continue;
        }
        let open = rate(opened, sent);
        if channel == "email" && open < 0.20 {
            let old = step.get("subject").and_then(J::as_str).unwrap_or_default();
            let new = if old.is_empty() { "A quick question".to_string() } else { format!("Quick question: {old}") };
            let new: String = new.chars().take(500).collect();
            out.push(json!({
                "campaign_id": id, "base_version": version, "optimization_type": "update_subject",
                "asset_type": "sequence_step", "asset_id": seq.to_string(), "field": "subject", "new_value": new,
                "summary": format!("New subject for step {seq}: low open rate"),
                "rationale": format!("Step {seq} was opened {opened} times in {sent} sends ({:.0}%), under the 20% threshold; a shorter, question-style subject usually lifts opens.", open * 100.0),
                "source": "rules",
            }));
        } else if open >= 0.40 && rate(replied, sent) < 0.02 {
            let old = step.get("body").and_then(J::as_str).unwrap_or_default();
            let new = format!("{old}\n\nWould a 15-minute call next week be useful?");
            let new: String = new.chars().take(20_000).collect();
            out.push(json!({
                "campaign_id": id, "base_version": version, "optimization_type": "update_body",
                "asset_type": "sequence_step", "asset_id": seq.to_string(), "field": "body", "new_value": new,
                "summary": format!("Clearer call to action in step {seq}: opened but not answered"),
                "rationale": format!("Step {seq} is opened ({:.0}%) but answered by {replied} of {sent} ({:.1}%); an explicit ask tends to convert attention into replies.", open * 100.0, rate(replied, sent) * 100.0),
                "source": "rules",
            }));
        }
    }
    let (sent, bounced): (i64, i64) = stats.iter().fold((0, 0), |(a, b), s| (a + s.int("sent").unwrap_or(0), b + s.int("bounced").unwrap_or(0)));
    if campaign.str("status") == Some("active") && sent >= MIN_SENT && rate(bounced, sent) > 0.08 {
        out.push(json!({
            "campaign_id": id, "base_version": version, "optimization_type": "pause_campaign",
            "asset_type": "campaign", "asset_id": id, "field": "status", "new_value": "paused",
            "summary": "Pause the campaign: high bounce rate",
            "rationale": format!("{bounced} of {sent} sends bounced ({:.1}%), over the 8% threshold that puts the sending domain's reputation at risk; pause until the list is cleaned.", rate(bounced, sent) * 100.0),
            "source": "rules",
        }));
    }
    out
}

impl sdk::Guest for Optimizer {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        if req.path != "/optimize" {
            return Err(sdk::not_found());
        }
        let body = req.json_value()?;
        let campaign_id = body.get("campaign_id").and_then(J::as_str);
        let mut q = db::select("campaigns").columns(&["id", "channel", "status", "sequence_version"]);
        q = match campaign_id {
            Some(id) => q.eq("id", Value::uuid(id)),
            None => q.eq("status", Value::text("active")).order_by("created_at", true).limit(20),
        };
        let campaigns = Row::all(q.fetch().map_err(|e| sdk::failed(&db::describe(&e)))?);
        let mut proposals = Vec::new();
        for c in &campaigns {
            let id = c.str("id").unwrap_or_default();
            let version = c.int("sequence_version").unwrap_or(0);
            if version <= 0 {
                continue;
            }
            let seq = db::select("campaign_sequences")
                .columns(&["steps"])
                .eq("campaign_id", Value::uuid(id))
                .eq("version", Value::Integer(version))
                .fetch_one()
                .map_err(|e| sdk::failed(&db::describe(&e)))?;
            let steps = seq.map(|r| r.to_json()["steps"].as_array().cloned().unwrap_or_default()).unwrap_or_default();
            let stats = Row::all(
                db::select("campaign_step_stats")
                    .columns(&["seq_number", "sent", "opened", "replied", "bounced"])
                    .eq("campaign_id", Value::uuid(id)).fetch().map_err(|e| sdk::failed(&db::describe(&e)))?,
            );
            proposals.extend(rules(c, &steps, &stats));
        }
        sdk::json(200, &json!({ "proposals": proposals, "examined": campaigns.len(), "llm": "not_configured" }))
    }
}

sdk::export_plugin!(Optimizer);
