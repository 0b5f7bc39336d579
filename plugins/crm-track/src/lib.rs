//! `crm-track`: CRM event ingestion (seeds 000 and 001) as a sandboxed plugin.
//!
//! - `POST /v1/crm/track`: validate, honour idempotency, resolve the contact atomically
//!   (advisory locks on every normalised identity, then external_id → email → phone), record
//!   the event and its outbox messages. One invocation is one transaction: all or nothing, in
//!   two `tenant-db` batches (three with an idempotency key).
//! - `GET /v1/crm/contacts/{contact_id}`: the contact, its identities, its latest events.
//! - `GET /v1/crm/events?contact_id=&type=&limit=&before=`: events, newest first.
//!
//! The gateway has already checked the caller, the org, the body size, that the body is JSON,
//! and that any `business_id` is one the caller belongs to. Tenant scoping is the host's job:
//! nothing here names `tenant_id`.

mod validate;

use gateway_plugin_sdk::db::{self, Filtered, Row, Step, Value};
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

/// One event in as few round trips as its semantics allow (WIT 0.2 `tenant-db.batch`): the
/// idempotency check when there is a key (it must not wait on a twin, so it goes first, on
/// its own), then the identity locks with the lookups they protect, then every write.
fn track(req: &Request) -> Result<Response, HandlerError> {
    let body = req.json_value()?;
    let header_key = req.header("idempotency-key").map(str::to_string);
    let mut t = validate::track(&body, header_key)?;
    let request_hash = hex(&Sha256::digest(&req.body));

    if let Some(key) = &t.idem_key {
        // Never wait on a twin: if the same key is being processed right now, say so.
        let mut b = db::batch();
        let got = b.try_lock(&format!("idem:{key}"));
        let earlier = b.select(
            db::select("crm_events").columns(&["id", "contact_id", "request_hash"]).json_eq("props", &["idemKey"], key).limit(1),
        );
        let done = b.run()?;
        if !done.locked(got) {
            return Err(sdk::conflict("IDEMPOTENCY_IN_FLIGHT", "a request with this Idempotency-Key is in progress"));
        }
        if let Some(first) = done.first(earlier) {
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

    let found = lookup(&t).inspect_err(|_| sdk::log::info("crm_track_contact_resolve_failed", &[]))?;
    let primary = found.iter().find_map(|(_, m)| m.clone());

    // Every write in one batch. The contact, when there is none yet, is created first and its
    // id used by the statements after it.
    let mut b = db::batch();
    let (contact, contact_step) = match &primary {
        Some(id) => (Value::uuid(id), None),
        None => {
            let c = b.insert(
                db::insert("crm_contacts")
                    .columns(&["name", "business_id"])
                    .row(vec![Value::opt_text(t.name.as_deref()), Value::opt_uuid(t.business_id.as_deref())])
                    .returning(&["id"]),
            );
            (c.cell("id"), Some(c))
        }
    };
    let created = contact_step.is_some();
    // Two identities pointing at two contacts: keep the higher-priority one, do not merge,
    // and record the disagreement on the event.
    let conflicts: Vec<J> = match &primary {
        Some(primary) => found
            .iter()
            .filter_map(|(i, m)| match m {
                Some(other) if other != primary => Some(json!({ "type": i.kind, "contact_id": other })),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let unlinked: Vec<&Identity> = found.iter().filter(|(_, m)| m.is_none()).map(|(i, _)| *i).collect();
    if !unlinked.is_empty() {
        let mut ins = db::insert("contact_identities").columns(&["type", "value", "contact_id"]);
        for i in &unlinked {
            ins = ins.row(vec![Value::text(i.kind), Value::text(&i.value), contact.clone()]);
        }
        b.insert(ins.on_conflict_do_nothing(&["type", "value"]));
    }
    if !created && t.name.is_some() {
        b.update(
            db::update("crm_contacts")
                .set("name", Value::text(t.name.as_deref().unwrap_or_default()))
                .set("updated_at", Value::timestamp("now"))
                .eq("id", contact.clone())
                .where_null("name"),
        );
    }
    let conflicts = if conflicts.is_empty() { Value::Null } else { Value::json(&json!(conflicts)) };
    let event = b.insert(
        db::insert("crm_events")
            .columns(&["contact_id", "business_id", "type", "props", "request_hash", "conflicts"])
            .row(vec![
                contact.clone(),
                Value::opt_uuid(t.business_id.as_deref()),
                Value::text(&t.kind),
                Value::json(&J::Object(t.props.clone())),
                Value::text(&request_hash),
                conflicts,
            ])
            .returning(&["id", "created_at"]),
    );
    // The identities are locked and were looked up under the locks, so every unlinked one is
    // linked by this batch: the count is known before it runs.
    let linked = unlinked.len();
    let contact_fill = |doc: J, mut fill: Vec<(&'static str, db::Earlier)>| {
        if let Some(c) = contact_step {
            fill.push(("contact_id", c.at(0, "id")));
        }
        Value::json_filled(&doc, &fill)
    };
    let known_contact = primary.clone().map(J::String).unwrap_or(J::Null);
    let mut outbox = db::insert("crm_outbox").columns(&["topic", "payload"]).row(vec![
        Value::text("event.tracked.v1"),
        contact_fill(
            json!({ "contact_id": known_contact, "type": t.kind, "business_id": t.business_id }),
            vec![("event_id", event.at(0, "id")), ("created_at", event.at(0, "created_at"))],
        ),
    ]);
    if created || linked > 0 {
        outbox = outbox.row(vec![
            Value::text("contact.updated.v1"),
            contact_fill(json!({ "contact_id": known_contact, "created": created, "identities_linked": linked }), vec![]),
        ]);
    }
    b.insert(outbox);
    let done = b.run()?;

    let event_id = done.first(event).and_then(|r| r.str("id").map(str::to_string)).ok_or_else(|| sdk::failed("event not stored"))?;
    let contact_id = match (primary, contact_step) {
        (Some(id), _) => id,
        (None, Some(step)) => done.first(step).and_then(|r| r.str("id").map(str::to_string)).ok_or_else(|| sdk::failed("contact not created"))?,
        (None, None) => unreachable!("a contact is created when none was found"),
    };
    // Ids and the event type only: no emails or phones in logs (the host adds org and request id).
    sdk::log::info("event_tracked", &[("event_id", &event_id), ("contact_id", &contact_id), ("type", &t.kind)]);
    sdk::json(200, &json!({ "ok": true, "event_id": event_id, "contact_id": contact_id }))
}

/// Seed 001's atomic resolution, first half, in one round trip: advisory locks on every
/// normalised identity, in a fixed (sorted) order so two requests naming the same identities
/// in a different order cannot deadlock, then each identity's contact, looked up under the
/// locks (each statement of a batch sees what committed before it began). Priority order:
/// external_id, email, phone (validate::track sorts them so).
fn lookup(t: &Track) -> Result<Vec<(&Identity, Option<String>)>, HandlerError> {
    let mut keys: Vec<String> = t.identities.iter().map(|i| format!("identity:{}:{}", i.kind, i.value)).collect();
    keys.sort();
    let mut b = db::batch();
    for k in &keys {
        b.lock(k);
    }
    let steps: Vec<Step> = t
        .identities
        .iter()
        .map(|i| {
            b.select(
                db::select("contact_identities")
                    .columns(&["contact_id"])
                    .eq("type", Value::text(i.kind))
                    .eq("value", Value::text(&i.value))
                    .limit(1),
            )
        })
        .collect();
    let done = b.run()?;
    Ok(t.identities.iter().zip(steps).map(|(i, s)| (i, done.first(s).and_then(|r| r.str("contact_id").map(str::to_string)))).collect())
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
