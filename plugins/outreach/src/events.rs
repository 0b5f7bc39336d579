//! `POST /webhooks/{provider}`: a stored provider event, normalised by the adapter into
//! [`Event`] and written here, idempotently (a replay or a duplicate delivery changes nothing):
//!
//! 1. for a reply, the CRM event first (`email.replied` / `linkedin.replied`, at most once per
//!    event key: `props.idemKey`), with ids only: never the message text;
//! 2. `campaign_activity`, once per (event key, kind);
//! 3. `campaign_messages` for sent messages and replies, once per event key;
//! 4. the lead: its provider id, its status (bounced, unsubscribed, replied), its category;
//!    the campaign: a status the provider reached on its own (completed, stopped).
//!
//! Events for campaigns the gateway does not know (made elsewhere at the provider) and event
//! types outside the vocabulary are answered 200 with `ignored`, so the provider's retries
//! and the job queue are not spent on them.

use gateway_plugin_sdk::db::{self, Value};
use gateway_plugin_sdk::serde_json::{json, Map, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError, Request, Response};

use crate::text::cut;
use crate::{crm, store, Adapter};

/// The normalised vocabulary (`campaign_activity.kind`).
pub const KINDS: &[&str] = &[
    "reply.received",
    "message.sent",
    "message.opened",
    "link.clicked",
    "bounced",
    "unsubscribed",
    "lead.category_changed",
    "connection.accepted",
    "campaign.status_changed",
];

/// What an adapter made of a webhook body.
// One per invocation, never stored in bulk: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Normalised {
    Event(Event),
    /// Not an event the gateway keeps (the reason is answered).
    Ignored(&'static str),
}

/// A provider event in the gateway's terms.
#[derive(Debug, Default, PartialEq)]
pub struct Event {
    /// One of [`KINDS`].
    pub kind: &'static str,
    /// The provider's campaign id.
    pub campaign: String,
    /// The provider's id for the lead.
    pub lead_provider_id: Option<String>,
    /// Values the lead's `identity` (or `profile_url`) may have, most likely first.
    pub lead_identities: Vec<String>,
    /// The lead's normalised email, when the event carries one (CRM identity).
    pub lead_email: Option<String>,
    /// The lead's LinkedIn profile URL (CRM identity `external_id` `linkedin:<url>`).
    pub lead_profile_url: Option<String>,
    pub lead_name: Option<String>,
    pub seq_number: Option<i64>,
    pub message: Option<Message>,
    /// RFC 3339 (checked with [`crate::text::timestamp`]); `None`: the time of processing.
    pub occurred_at: Option<String>,
    pub category: Option<String>,
    /// A campaign status the provider reached on its own (`completed`, `stopped`).
    pub campaign_status: Option<&'static str>,
}

#[derive(Debug, Default, PartialEq)]
pub struct Message {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub provider_message_id: Option<String>,
}

pub fn run<A: Adapter>(req: &Request) -> Result<Response, HandlerError> {
    let key = match req.header("webhook-event-key") {
        Some(k) if !k.is_empty() && k.len() <= 512 => k.to_string(),
        _ => return Err(sdk::invalid("header webhook-event-key is required (1 to 512 bytes)")),
    };
    let body = req.json_value()?;
    if !body.is_object() {
        return Err(sdk::invalid_with("event failed validation", json!([{"field": "body", "problem": "must be a JSON object"}])));
    }
    let event = match A::normalise(&body) {
        Ok(Normalised::Event(e)) => e,
        Ok(Normalised::Ignored(why)) => return sdk::json(200, &json!({"ok": true, "ignored": why})),
        Err(m) => return Err(sdk::invalid(&m)),
    };
    let out = apply::<A>(&event, &key)?;
    sdk::json(200, &out)
}

fn apply<A: Adapter>(ev: &Event, key: &str) -> Result<J, HandlerError> {
    let Some(campaign) = store::campaign_by_provider_id(A::NAME, &ev.campaign)? else {
        sdk::log::info("provider_event_ignored", &[("provider", A::NAME), ("kind", ev.kind), ("why", "unknown campaign")]);
        return Ok(json!({"ok": true, "ignored": "no campaign with this provider id"}));
    };
    let lead = store::find_lead(&campaign.id, ev.lead_provider_id.as_deref(), &ev.lead_identities)?;
    let lead_id = lead.as_ref().map(|l| l.id.clone());
    // The column is NOT NULL: the time of processing when the provider gave none.
    let occurred_at = Value::timestamp(ev.occurred_at.as_deref().unwrap_or("now"));

    // The CRM write first (seed 000's fail-soft rule: it never waits on a secondary write).
    let mut crm_event = None;
    if ev.kind == "reply.received" {
        let email = lead.as_ref().and_then(|l| l.email.clone()).or_else(|| ev.lead_email.clone());
        let profile = lead.as_ref().and_then(|l| l.profile_url.clone()).or_else(|| ev.lead_profile_url.clone());
        let mut ids = Vec::new();
        if let Some(p) = profile {
            ids.push(crm::Identity { kind: "external_id", value: crate::text::linkedin_identity(&p) });
        }
        if let Some(e) = email {
            ids.push(crm::Identity { kind: "email", value: e });
        }
        let name = lead
            .as_ref()
            .map(|l| [l.first_name.as_deref(), l.last_name.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" "))
            .filter(|n| !n.trim().is_empty())
            .or_else(|| ev.lead_name.clone());
        let channel = if campaign.channel == "linkedin" { "linkedin" } else { "email" };
        let mut props = Map::new();
        props.insert("provider".into(), A::NAME.into());
        props.insert("channel".into(), channel.into());
        props.insert("campaign_id".into(), campaign.id.clone().into());
        props.insert("lead_id".into(), lead_id.clone().map(J::String).unwrap_or(J::Null));
        props.insert("seq_number".into(), ev.seq_number.map(J::from).unwrap_or(J::Null));
        if let Some(m) = ev.message.as_ref().and_then(|m| m.provider_message_id.clone()) {
            props.insert("provider_message_id".into(), cut(&m, 500).into());
        }
        props.insert("event_key".into(), key.into());
        props.insert("idemKey".into(), format!("{}:{}", A::NAME, key).into());
        if !ids.is_empty() {
            crm_event = crm::record(&format!("{channel}.replied"), &ids, name.as_deref().map(|n| cut(n, 200)).as_deref(), props)?;
        }
    }

    let fresh = db::insert("campaign_activity")
        .columns(&["campaign_id", "lead_id", "seq_number", "kind", "event_key", "occurred_at"])
        .row(vec![
            Value::uuid(&campaign.id),
            Value::opt_uuid(lead_id.as_deref()),
            ev.seq_number.map(Value::Integer).unwrap_or(Value::Null),
            Value::text(ev.kind),
            Value::text(key),
            occurred_at.clone(),
        ])
        .on_conflict_do_nothing(&["event_key", "kind"])
        .execute()?
        .affected
        > 0;

    if let Some(m) = &ev.message {
        db::insert("campaign_messages")
            .columns(&["campaign_id", "lead_id", "direction", "seq_number", "subject", "body", "provider_message_id", "event_key", "occurred_at"])
            .row(vec![
                Value::uuid(&campaign.id),
                Value::opt_uuid(lead_id.as_deref()),
                Value::text(m.direction),
                ev.seq_number.map(Value::Integer).unwrap_or(Value::Null),
                Value::opt_text(m.subject.as_deref().map(|s| cut(s, 1000)).as_deref()),
                Value::opt_text(m.body.as_deref().map(|b| cut(b, 100_000)).as_deref()),
                Value::opt_text(m.provider_message_id.as_deref().map(|p| cut(p, 500)).as_deref()),
                Value::text(key),
                occurred_at,
            ])
            .on_conflict_do_nothing(&["event_key"])
            .execute()?;
    }

    if let Some(l) = &lead {
        let status = match ev.kind {
            "bounced" => Some("bounced"),
            "unsubscribed" => Some("unsubscribed"),
            "reply.received" => Some("replied"),
            _ => None,
        };
        store::lead_update(l, ev.lead_provider_id.as_deref(), status, ev.category.as_deref())?;
    }
    if let Some(st) = ev.campaign_status {
        store::campaign_status(&campaign.id, st)?;
    }
    sdk::log::info("provider_event", &[("provider", A::NAME), ("kind", ev.kind), ("campaign_id", &campaign.id)]);
    Ok(json!({
        "ok": true, "kind": ev.kind, "campaign_id": campaign.id, "lead_id": lead_id,
        "duplicate": !fresh, "crm_event_id": crm_event,
    }))
}
