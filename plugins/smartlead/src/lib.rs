//! `smartlead`: the email-outreach adapter over Smartlead's REST API (docs/providers.md).
//!
//! Smartlead authenticates with `?api_key=` on every call; the host adds it (the route's
//! `credentials` grant, `inject = "query:api_key"`), so no URL built here carries it.
//!
//! - Campaigns: `POST /campaigns/create`, `POST /campaigns/{id}/status` with `START` (not
//!   `ACTIVE`), `PAUSED`, `STOPPED` (final at Smartlead, and in the campaigns API).
//! - Sequences cannot change while a campaign is ACTIVE: an active campaign is paused, its
//!   sequence saved (existing steps keep their ids, by `seq_number`), and started again, even
//!   when the save was refused.
//! - Leads: `POST /campaigns/{id}/leads`, 400 per call. Smartlead's answer has counts, not ids:
//!   a lead's id is learned from its webhooks (`sl_email_lead_id`) or, for a lead action, looked
//!   up by email (`GET /leads/?email=`).
//! - Webhooks: one user-level webhook (`POST /webhook/create`) for the events normalised below,
//!   in both documented spellings (`event_type`/`event`, `EMAIL_REPLY`/`EMAIL_REPLIED`, ...).

use gateway_plugin_sdk::serde_json::{json, Map, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError, Request, Response};
use outreach::text::{self, first, id_text};
use outreach::{Adapter, Api, CallError, Event, Inbox, Lead, LeadAction, Message, Normalised, Pair, Status, Step};

struct Smartlead;

impl sdk::Guest for Smartlead {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        outreach::handle::<Smartlead>(req)
    }
}

sdk::export_plugin!(Smartlead);

/// The events registered, each normalised by [`Smartlead::normalise`].
const EVENTS: &[&str] = &[
    "EMAIL_SENT",
    "EMAIL_OPEN",
    "EMAIL_LINK_CLICK",
    "EMAIL_REPLY",
    "EMAIL_BOUNCE",
    "LEAD_UNSUBSCRIBED",
    "LEAD_CATEGORY_UPDATED",
    "CAMPAIGN_STATUS_CHANGED",
];

/// Inbox pages read at most (100 accounts each).
const MAX_PAGES: usize = 50;

fn campaign_path(campaign: &str, rest: &str) -> String {
    format!("/campaigns/{}{rest}", text::query_value(campaign))
}

fn id_of(answer: &J) -> Option<String> {
    id_text(first(answer, &["/id", "/data/id", "/campaign_id", "/webhook_id", "/data/webhook_id"]))
}

/// A lead as Smartlead's `lead_list` takes it; custom fields are strings there.
fn lead_json(l: &Lead) -> J {
    let mut custom = Map::new();
    if let Some(fields) = l.custom_fields.as_object() {
        for (k, v) in fields {
            let v = match v {
                J::String(s) => s.clone(),
                J::Null => continue,
                other => other.to_string(),
            };
            custom.insert(k.clone(), J::String(v));
        }
    }
    json!({
        "email": l.email, "first_name": l.first_name, "last_name": l.last_name,
        "company_name": l.company, "custom_fields": custom,
    })
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Active => "START",
        Status::Paused => "PAUSED",
        Status::Stopped => "STOPPED",
    }
}

impl Adapter for Smartlead {
    const NAME: &'static str = "smartlead";
    const CAPABILITY: &'static str = "email_outreach";
    const LEAD_BATCH: usize = 400;
    const NEEDS_SENDER: bool = false;

    fn check_key(api: &Api) -> Result<(), CallError> {
        api.get("/campaigns", &[]).map(drop)
    }

    fn register_webhook(api: &Api, url: &str) -> Result<String, CallError> {
        let map: Map<String, J> = EVENTS.iter().map(|e| (e.to_string(), J::Bool(true))).collect();
        let answer = api.post(
            "/webhook/create",
            &[],
            &json!({"name": "gateway", "webhook_url": url, "association_type": "user", "event_type_map": map}),
        )?;
        Ok(id_of(&answer).unwrap_or_else(|| "registered".into()))
    }

    fn list_inboxes(api: &Api) -> Result<Vec<Inbox>, CallError> {
        let mut out = Vec::new();
        for page in 0..MAX_PAGES {
            let offset = (page * 100).to_string();
            let answer = api.get("/email-accounts/", &[("offset", &offset), ("limit", "100")])?;
            let items = answer.as_array().or_else(|| answer.pointer("/data").and_then(J::as_array)).cloned().unwrap_or_default();
            out.extend(items.iter().filter_map(inbox));
            if items.len() < 100 {
                break;
            }
        }
        Ok(out)
    }

    fn create_campaign(api: &Api, name: &str) -> Result<String, CallError> {
        let answer = api.post("/campaigns/create", &[], &json!({"name": name}))?;
        id_of(&answer).ok_or_else(|| CallError::Failed("Smartlead created a campaign but named no id".into()))
    }

    fn set_status(api: &Api, campaign: &str, status: Status) -> Result<Option<&'static str>, CallError> {
        api.post(&campaign_path(campaign, "/status"), &[], &json!({"status": status_word(status)}))?;
        Ok(None)
    }

    fn put_sequence(api: &Api, campaign: &str, active: bool, steps: &[Step]) -> Result<(), CallError> {
        // Existing steps keep their ids (`id: null` would add a step beside them).
        let existing = match api.get(&campaign_path(campaign, "/sequences"), &[]) {
            Ok(j) => j,
            Err(CallError::Rejected { .. }) => J::Null,
            Err(e) => return Err(e),
        };
        let body = json!({"sequences": sequence_json(steps, &existing)});
        if active {
            api.post(&campaign_path(campaign, "/status"), &[], &json!({"status": "PAUSED"}))?;
        }
        let saved = api.post(&campaign_path(campaign, "/sequences"), &[], &body);
        // Started again whatever the save's outcome: a refused edit must not leave it paused.
        let restarted = if active { api.post(&campaign_path(campaign, "/status"), &[], &json!({"status": "START"})) } else { Ok(J::Null) };
        saved?;
        restarted.map(drop)
    }

    fn add_leads(api: &Api, campaign: &str, leads: &[Pair<'_>]) -> Result<Vec<Option<String>>, CallError> {
        let list: Vec<J> = leads.iter().map(|p| lead_json(p.lead)).collect();
        api.post(
            &campaign_path(campaign, "/leads"),
            &[],
            &json!({
                "lead_list": list,
                "settings": {
                    "ignore_global_block_list": false,
                    "ignore_unsubscribe_list": false,
                    "ignore_duplicate_leads_in_other_campaign": false,
                },
            }),
        )?;
        Ok(vec![None; leads.len()])
    }

    fn lead_action(api: &Api, campaign: &str, lead: &Lead, action: LeadAction) -> Result<Option<String>, CallError> {
        let (lead_id, learned) = match &lead.provider_id {
            Some(id) => (id.clone(), None),
            None => {
                let email = lead.email.as_deref().unwrap_or_default();
                let found = api.get("/leads/", &[("email", email)])?;
                let id = id_of(&found).ok_or_else(|| CallError::rejected(404, "lead not found at Smartlead"))?;
                (id.clone(), Some(id))
            }
        };
        let (path, body) = match action {
            LeadAction::Pause => ("/pause", json!({})),
            LeadAction::Resume => ("/resume", json!({"resume_lead_with_delay_days": 0})),
            LeadAction::Unsubscribe => ("/unsubscribe", json!({})),
        };
        api.post(&campaign_path(campaign, &format!("/leads/{}{path}", text::query_value(&lead_id))), &[], &body)?;
        Ok(learned)
    }

    fn normalise(body: &J) -> Result<Normalised, String> {
        Ok(normalise(body))
    }
}

fn inbox(a: &J) -> Option<Inbox> {
    let status = match text::text(a.get("status")) {
        Some(s) => s.to_lowercase(),
        None if a.get("is_smtp_success") == Some(&J::Bool(false)) || a.get("is_imap_success") == Some(&J::Bool(false)) => "error".into(),
        None => "active".into(),
    };
    Some(Inbox {
        provider_id: id_text(a.get("id"))?,
        address: text::text(first(a, &["/from_email", "/email"])),
        name: text::text(first(a, &["/from_name", "/name"])),
        status: Some(status),
    })
}

/// Steps as Smartlead's `sequences`, numbered from 1, reusing the ids of `existing` steps.
fn sequence_json(steps: &[Step], existing: &J) -> Vec<J> {
    let items = existing.as_array().or_else(|| existing.pointer("/data").and_then(J::as_array));
    let id_for = |n: usize| {
        items?.iter().find(|s| s.get("seq_number").and_then(J::as_u64) == Some(n as u64)).and_then(|s| s.get("id")).cloned()
    };
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": id_for(i + 1).unwrap_or(J::Null),
                "seq_number": i + 1,
                "subject": s.subject,
                "email_body": s.body,
                "seq_delay_details": {"delay_in_days": s.delay_days},
            })
        })
        .collect()
}

fn kind(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "EMAIL_SENT" | "FIRST_EMAIL_SENT" => "message.sent",
        "EMAIL_OPEN" | "EMAIL_OPENED" => "message.opened",
        "EMAIL_LINK_CLICK" | "EMAIL_LINK_CLICKED" | "EMAIL_CLICK" | "EMAIL_CLICKED" => "link.clicked",
        "EMAIL_REPLY" | "EMAIL_REPLIED" => "reply.received",
        "EMAIL_BOUNCE" | "EMAIL_BOUNCED" => "bounced",
        "LEAD_UNSUBSCRIBED" | "EMAIL_UNSUBSCRIBED" | "EMAIL_UNSUBSCRIBE" => "unsubscribed",
        "LEAD_CATEGORY_UPDATED" | "LEAD_CATEGORY_CHANGED" => "lead.category_changed",
        "CAMPAIGN_STATUS_CHANGED" | "CAMPAIGN_STATUS_CHANGE" | "CAMPAIGN_STATUS_UPDATED" => "campaign.status_changed",
        _ => return None,
    })
}

/// A Smartlead webhook body in the gateway's vocabulary.
pub fn normalise(body: &J) -> Normalised {
    let Some(event_type) = text::text(first(body, &["/event_type", "/event"])) else {
        return Normalised::Ignored("no event type");
    };
    let Some(kind) = kind(&event_type.trim().to_ascii_uppercase()) else {
        return Normalised::Ignored("event type not normalised");
    };
    let Some(campaign) = id_text(first(body, &["/campaign_id", "/email_campaign_id", "/campaign/id"])) else {
        return Normalised::Ignored("no campaign id");
    };
    let email = text::text(first(body, &["/sl_lead_email", "/lead_email", "/lead/email", "/to_email"])).and_then(|e| text::email(&e));
    let seq_number = first(body, &["/sequence_number", "/seq_number"]).and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()));
    let message = match kind {
        "message.sent" => Some(Message {
            direction: "outbound",
            subject: text::text(first(body, &["/subject", "/sent_message/subject"])),
            body: text::text(first(body, &["/sent_message/text", "/sent_message/html", "/sent_message_body"])),
            provider_message_id: text::text(first(body, &["/sent_message/message_id", "/message_id"])),
        }),
        "reply.received" => Some(Message {
            direction: "inbound",
            subject: text::text(first(body, &["/reply_message/subject", "/subject"])),
            body: text::text(first(body, &["/reply_message/text", "/reply_message/html", "/reply_body", "/preview_text"])),
            provider_message_id: text::text(first(body, &["/reply_message/message_id", "/message_id"])),
        }),
        _ => None,
    };
    let occurred_at = text::text(first(body, &["/event_timestamp", "/reply_message/time", "/sent_message/time", "/time", "/timestamp"]))
        .and_then(|t| text::timestamp(&t));
    let category = (kind == "lead.category_changed")
        .then(|| text::text(first(body, &["/lead_category/new_name", "/lead_category/name", "/lead_category", "/new_category", "/category"])))
        .flatten();
    let campaign_status = (kind == "campaign.status_changed")
        .then(|| text::text(first(body, &["/new_status", "/campaign_status", "/status"])))
        .flatten()
        .and_then(|s| match s.trim().to_ascii_uppercase().as_str() {
            "COMPLETED" => Some("completed"),
            "STOPPED" => Some("stopped"),
            _ => None,
        });
    Normalised::Event(Event {
        kind,
        campaign,
        lead_provider_id: id_text(first(body, &["/sl_email_lead_id", "/lead_id", "/lead/id"])),
        lead_identities: email.iter().cloned().collect(),
        lead_email: email,
        lead_profile_url: None,
        lead_name: text::text(first(body, &["/to_name", "/lead_name"])),
        seq_number,
        message,
        occurred_at,
        category,
        campaign_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: J) -> Event {
        match normalise(&body) {
            Normalised::Event(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_in_both_spellings() {
        let reply = |k: &str, t: &str| {
            json!({
                k: t, "campaign_id": 42, "sequence_number": 2, "sl_email_lead_id": "77", "sl_lead_email": "Ann@Example.com",
                "subject": "Re: hi", "event_timestamp": "2024-05-01T10:00:00Z", "secret_key": "s",
                "reply_message": {"message_id": "<m1@x>", "text": "Sounds good", "time": "2024-05-01T10:00:00Z"},
            })
        };
        let a = event(reply("event_type", "EMAIL_REPLY"));
        assert_eq!(a, event(reply("event", "EMAIL_REPLIED")));
        assert_eq!(a.kind, "reply.received");
        assert_eq!(a.campaign, "42");
        assert_eq!(a.seq_number, Some(2));
        assert_eq!(a.lead_provider_id.as_deref(), Some("77"));
        assert_eq!(a.lead_identities, ["ann@example.com"]);
        let m = a.message.unwrap();
        assert_eq!((m.direction, m.body.as_deref(), m.provider_message_id.as_deref()), ("inbound", Some("Sounds good"), Some("<m1@x>")));
        assert_eq!(a.occurred_at.as_deref(), Some("2024-05-01T10:00:00Z"));
    }

    #[test]
    fn every_kind_is_recognised() {
        for (t, k) in [
            ("EMAIL_SENT", "message.sent"),
            ("FIRST_EMAIL_SENT", "message.sent"),
            ("email_open", "message.opened"),
            ("EMAIL_LINK_CLICK", "link.clicked"),
            ("EMAIL_BOUNCE", "bounced"),
            ("LEAD_UNSUBSCRIBED", "unsubscribed"),
            ("LEAD_CATEGORY_UPDATED", "lead.category_changed"),
            ("CAMPAIGN_STATUS_CHANGED", "campaign.status_changed"),
        ] {
            assert_eq!(event(json!({"event_type": t, "campaign_id": "9"})).kind, k, "{t}");
            assert!(outreach::events::KINDS.contains(&k));
        }
    }

    #[test]
    fn opens_and_clicks_need_no_message_id() {
        let e = event(json!({"event_type": "EMAIL_OPEN", "campaign_id": 9, "stats_id": "s1", "to_email": "b@x.io", "event_timestamp": "not a time"}));
        assert_eq!((e.message, e.occurred_at, e.lead_email.as_deref()), (None, None, Some("b@x.io")));
    }

    #[test]
    fn categories_and_statuses() {
        let e = event(json!({"event_type": "LEAD_CATEGORY_UPDATED", "campaign_id": 9, "lead_category": {"new_name": "Interested"}}));
        assert_eq!(e.category.as_deref(), Some("Interested"));
        let e = event(json!({"event_type": "LEAD_CATEGORY_UPDATED", "campaign_id": 9, "lead_category": "Meeting Booked"}));
        assert_eq!(e.category.as_deref(), Some("Meeting Booked"));
        let e = event(json!({"event_type": "CAMPAIGN_STATUS_CHANGED", "campaign_id": 9, "campaign_status": "COMPLETED"}));
        assert_eq!(e.campaign_status, Some("completed"));
        let e = event(json!({"event_type": "CAMPAIGN_STATUS_CHANGED", "campaign_id": 9, "campaign_status": "ACTIVE"}));
        assert_eq!(e.campaign_status, None);
    }

    #[test]
    fn what_is_ignored() {
        assert_eq!(normalise(&json!({"campaign_id": 1})), Normalised::Ignored("no event type"));
        assert_eq!(normalise(&json!({"event_type": "MANUAL_STEP_REACHED", "campaign_id": 1})), Normalised::Ignored("event type not normalised"));
        assert_eq!(normalise(&json!({"event_type": "EMAIL_REPLY"})), Normalised::Ignored("no campaign id"));
    }

    #[test]
    fn sequences_keep_existing_step_ids() {
        let steps = [Step { subject: "Hi".into(), body: "B1".into(), delay_days: 0 }, Step { subject: "".into(), body: "B2".into(), delay_days: 3 }];
        let seq = sequence_json(&steps, &json!([{"id": 501, "seq_number": 1}]));
        assert_eq!(seq[0], json!({"id": 501, "seq_number": 1, "subject": "Hi", "email_body": "B1", "seq_delay_details": {"delay_in_days": 0}}));
        assert_eq!(seq[1]["id"], J::Null);
        assert_eq!(seq[1]["seq_delay_details"]["delay_in_days"], 3);
    }

    #[test]
    fn leads_as_smartlead_takes_them() {
        let l = Lead {
            email: Some("a@x.io".into()),
            first_name: Some("Ann".into()),
            company: Some("X".into()),
            custom_fields: json!({"size": 10, "tier": "gold", "none": null}),
            ..Default::default()
        };
        assert_eq!(
            lead_json(&l),
            json!({"email": "a@x.io", "first_name": "Ann", "last_name": null, "company_name": "X", "custom_fields": {"size": "10", "tier": "gold"}})
        );
        assert_eq!(status_word(Status::Active), "START");
    }

    #[test]
    fn inboxes_from_email_accounts() {
        let a = inbox(&json!({"id": 5, "from_email": "s@x.io", "from_name": "S", "is_smtp_success": true, "is_imap_success": false})).unwrap();
        assert_eq!(a, Inbox { provider_id: "5".into(), address: Some("s@x.io".into()), name: Some("S".into()), status: Some("error".into()) });
        assert!(inbox(&json!({"from_email": "s@x.io"})).is_none());
    }
}
