//! `crm-track`: CRM event ingestion (seeds 000 and 001) as a sandboxed plugin.
//!
//! - `POST /v1/crm/track`: validate, honour idempotency, resolve the contact atomically
//!   (advisory locks on every normalised identity, then external_id → email → phone), record
//!   the event and its outbox messages. One invocation is one transaction: all or nothing.
//! - `GET /v1/crm/contacts/{contact_id}`: the contact, its identities, its latest events.
//! - `GET /v1/crm/events?contact_id=&type=&limit=&before=`: events, newest first.
//!
//! The gateway has already checked the caller, the org, the body size, that the body is JSON,
//! and that any `business_id` is one the caller belongs to. Tenant scoping is the host's job:
//! nothing here names `tenant_id`.

mod validate;

use gateway_plugin_sdk::db::{self, Filtered, Row, Value};
use gateway_plugin_sdk::encoding::{hex, is_uuid};
use gateway_plugin_sdk::serde_json::{json, Map, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError, Request, Response};
use sha2::{Digest, Sha256};

use validate::{Identity, Track};

struct CrmTrack;

impl sdk::Guest for CrmTrack {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        match (req.method.as_str(), req.param("contact_id")) {
            ("POST", _) => track(&req),
            ("GET", Some(id)) => contact(id),
            ("GET", None) => events(&req),
            _ => Err(sdk::not_found()),
        }
    }
}

sdk::export_plugin!(CrmTrack);

fn track(req: &Request) -> Result<Response, HandlerError> {
    let body = req.json_value()?;
    let header_key = req.header("idempotency-key").map(str::to_string);
    let mut t = validate::track(&body, header_key)?;
    let request_hash = hex(&Sha256::digest(&req.body));

    if let Some(key) = &t.idem_key {
        // Never wait on a twin: if the same key is being processed right now, say so.
        if !db::try_lock(&format!("idem:{key}"))? {
            return Err(sdk::conflict("IDEMPOTENCY_IN_FLIGHT", "a request with this Idempotency-Key is in progress"));
        }
        let first = db::select("crm_events")
            .columns(&["id", "contact_id", "request_hash"])
            .json_eq("props", &["idemKey"], key)
            .fetch_one()?;
        if let Some(first) = first {
            if first.str("request_hash") != Some(request_hash.as_str()) {
                return Err(sdk::unprocessable(
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used with a different request body",
                ));
            }
            return sdk::json(200, &json!({
                "ok": true, "idempotent": true,
                "event_id": first.str("id"), "contact_id": first.str("contact_id"),
            }));
        }
        t.props.insert("idemKey".into(), J::String(key.clone()));
    }

    let resolved = resolve_contact(&t).inspect_err(|_| sdk::log::info("crm_track_contact_resolve_failed", &[]))?;

    let conflicts = if resolved.conflicts.is_empty() { Value::Null } else { Value::json(&json!(resolved.conflicts)) };
    let event = db::insert("crm_events")
        .columns(&["contact_id", "business_id", "type", "props", "request_hash", "conflicts"])
        .row(vec![
            Value::uuid(&resolved.contact_id),
            Value::opt_uuid(t.business_id.as_deref()),
            Value::text(&t.kind),
            Value::json(&J::Object(t.props.clone())),
            Value::text(&request_hash),
            conflicts,
        ])
        .returning(&["id", "created_at"])
        .execute()?;
    let event = Row::first(event).ok_or_else(|| sdk::failed("event not stored"))?;
    let event_id = event.str("id").unwrap_or_default().to_string();

    let mut outbox = db::insert("crm_outbox").columns(&["topic", "payload"]).row(vec![
        Value::text("event.tracked.v1"),
        Value::json(&json!({
            "event_id": event_id, "contact_id": resolved.contact_id, "type": t.kind,
            "business_id": t.business_id, "created_at": event.str("created_at"),
        })),
    ]);
    if resolved.created || resolved.linked > 0 {
        outbox = outbox.row(vec![
            Value::text("contact.updated.v1"),
            Value::json(&json!({
                "contact_id": resolved.contact_id, "created": resolved.created, "identities_linked": resolved.linked,
            })),
        ]);
    }
    outbox.execute()?;

    // Ids and the event type only: no emails or phones in logs (the host adds org and request id).
    sdk::log::info("event_tracked", &[("event_id", &event_id), ("contact_id", &resolved.contact_id), ("type", &t.kind)]);
    sdk::json(200, &json!({ "ok": true, "event_id": event_id, "contact_id": resolved.contact_id }))
}

struct Resolved {
    contact_id: String,
    created: bool,
    linked: u32,
    conflicts: Vec<J>,
}

/// Seed 001's atomic resolution, inside the invocation's transaction.
fn resolve_contact(t: &Track) -> Result<Resolved, HandlerError> {
    // Locks in a fixed (sorted) order, so two requests naming the same identities in a
    // different order cannot deadlock.
    let mut keys: Vec<String> = t.identities.iter().map(|i| format!("identity:{}:{}", i.kind, i.value)).collect();
    keys.sort();
    for k in &keys {
        db::lock(k)?;
    }
    // Priority order: external_id, email, phone (validate::track sorts them so).
    let mut matches: Vec<(&Identity, Option<String>)> = Vec::new();
    for i in &t.identities {
        let found = db::select("contact_identities")
            .columns(&["contact_id"])
            .eq("type", Value::text(i.kind))
            .eq("value", Value::text(&i.value))
            .fetch_one()?;
        matches.push((i, found.and_then(|r| r.str("contact_id").map(str::to_string))));
    }
    let primary = matches.iter().find_map(|(_, m)| m.clone());
    let (contact_id, created) = match primary {
        Some(id) => (id, false),
        None => {
            let rows = db::insert("crm_contacts")
                .columns(&["name", "business_id"])
                .row(vec![Value::opt_text(t.name.as_deref()), Value::opt_uuid(t.business_id.as_deref())])
                .returning(&["id"])
                .execute()?;
            let row = Row::first(rows).ok_or_else(|| sdk::failed("contact not created"))?;
            (row.str("id").unwrap_or_default().to_string(), true)
        }
    };
    // Two identities pointing at two contacts: keep the higher-priority one, do not merge,
    // and record the disagreement on the event.
    let conflicts: Vec<J> = matches
        .iter()
        .filter_map(|(i, m)| match m {
            Some(other) if *other != contact_id => Some(json!({ "type": i.kind, "contact_id": other })),
            _ => None,
        })
        .collect();
    let unlinked: Vec<&Identity> = matches.iter().filter(|(_, m)| m.is_none()).map(|(i, _)| *i).collect();
    let mut linked = 0;
    if !unlinked.is_empty() {
        let mut ins = db::insert("contact_identities").columns(&["type", "value", "contact_id"]);
        for i in &unlinked {
            ins = ins.row(vec![Value::text(i.kind), Value::text(&i.value), Value::uuid(&contact_id)]);
        }
        linked = ins.on_conflict_do_nothing(&["type", "value"]).execute()?.affected as u32;
    }
    if !created && t.name.is_some() {
        db::update("crm_contacts")
            .set("name", Value::text(t.name.as_deref().unwrap_or_default()))
            .set("updated_at", Value::timestamp("now"))
            .eq("id", Value::uuid(&contact_id))
            .where_null("name")
            .execute()?;
    }
    Ok(Resolved { contact_id, created, linked, conflicts })
}

fn contact(id: &str) -> Result<Response, HandlerError> {
    if !is_uuid(id) {
        return Err(sdk::not_found());
    }
    let c = db::select("crm_contacts")
        .columns(&["id", "name", "business_id", "created_at", "updated_at"])
        .eq("id", Value::uuid(id))
        .fetch_one()?
        .ok_or_else(sdk::not_found)?;
    let identities = db::select("contact_identities")
        .columns(&["type", "value", "created_at"])
        .eq("contact_id", Value::uuid(id))
        .order_by("created_at", false)
        .limit(100)
        .fetch()?;
    let events = db::select("crm_events")
        .columns(&["id", "type", "props", "business_id", "conflicts", "created_at"])
        .eq("contact_id", Value::uuid(id))
        .order_by("created_at", true)
        .limit(20)
        .fetch()?;
    let mut out = c.to_json();
    out["identities"] = J::Array(Row::all(identities).iter().map(Row::to_json).collect());
    out["events"] = J::Array(Row::all(events).iter().map(Row::to_json).collect());
    sdk::json(200, &out)
}

fn events(req: &Request) -> Result<Response, HandlerError> {
    let mut problems = Vec::new();
    let limit = match req.query_param("limit") {
        None => 50,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => {
                problems.push(json!({"field": "limit", "problem": "must be 1 to 200"}));
                0
            }
        },
    };
    let mut q = db::select("crm_events")
        .columns(&["id", "contact_id", "type", "props", "business_id", "created_at"])
        .order_by("created_at", true);
    if let Some(c) = req.query_param("contact_id") {
        if !is_uuid(&c) {
            problems.push(json!({"field": "contact_id", "problem": "must be a UUID"}));
        }
        q = q.eq("contact_id", Value::uuid(&c));
    }
    if let Some(t) = req.query_param("type") {
        q = q.eq("type", Value::text(&t));
    }
    if let Some(b) = req.query_param("before") {
        q = q.lt("created_at", Value::timestamp(&b));
    }
    if !problems.is_empty() {
        return Err(sdk::invalid_with("query failed validation", J::Array(problems)));
    }
    let rows = Row::all(q.limit(limit).fetch()?);
    let next = (rows.len() as u32 == limit).then(|| rows.last().and_then(|r| r.str("created_at")).map(str::to_string)).flatten();
    let items: Vec<J> = rows.iter().map(Row::to_json).collect();
    let mut out = Map::new();
    out.insert("events".into(), J::Array(items));
    out.insert("next_before".into(), next.map(J::String).unwrap_or(J::Null));
    sdk::json(200, &J::Object(out))
}
