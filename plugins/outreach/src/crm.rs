//! The CRM side of a reply: the contact resolved as `crm-track` resolves it (advisory locks on
//! every identity in a fixed order, then the first identity that names a contact, in priority
//! order external_id, email), the event recorded once per `props.idemKey`, and its outbox
//! messages. The lock keys are crm-track's, so a reply and a tracked event for the same
//! identity serialise.

use gateway_plugin_sdk::db::{self, Filtered, Row, Value};
use gateway_plugin_sdk::serde_json::{json, Map, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError};

pub struct Identity {
    /// `external_id` or `email` (contact_identities.type).
    pub kind: &'static str,
    pub value: String,
}

/// Records a CRM event of type `kind` for the contact of `identities` (priority order);
/// the event's id, or `None` when this `props.idemKey` was recorded before.
pub fn record(kind: &str, identities: &[Identity], name: Option<&str>, props: Map<String, J>) -> Result<Option<String>, HandlerError> {
    let idem = props.get("idemKey").and_then(J::as_str).unwrap_or_default().to_string();
    let seen = db::select("crm_events").columns(&["id"]).json_eq("props", &["idemKey"], &idem).fetch_one()?;
    if seen.is_some() {
        return Ok(None);
    }
    let mut keys: Vec<String> = identities.iter().map(|i| format!("identity:{}:{}", i.kind, i.value)).collect();
    keys.sort();
    for k in &keys {
        db::lock(k)?;
    }
    let mut found = Vec::new();
    for i in identities {
        let row = db::select("contact_identities")
            .columns(&["contact_id"])
            .eq("type", Value::text(i.kind))
            .eq("value", Value::text(&i.value))
            .fetch_one()?;
        found.push(row.and_then(|r| r.str("contact_id").map(str::to_string)));
    }
    let (contact_id, created) = match found.iter().flatten().next() {
        Some(id) => (id.clone(), false),
        None => {
            let rows = db::insert("crm_contacts").columns(&["name"]).row(vec![Value::opt_text(name)]).returning(&["id"]).execute()?;
            let id = Row::first(rows).and_then(|r| r.str("id").map(str::to_string)).ok_or_else(|| sdk::failed("contact not created"))?;
            (id, true)
        }
    };
    let mut linked = 0;
    let unlinked: Vec<&Identity> = identities.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(i, _)| i).collect();
    if !unlinked.is_empty() {
        let mut ins = db::insert("contact_identities").columns(&["type", "value", "contact_id"]);
        for i in unlinked {
            ins = ins.row(vec![Value::text(i.kind), Value::text(&i.value), Value::uuid(&contact_id)]);
        }
        linked = ins.on_conflict_do_nothing(&["type", "value"]).execute()?.affected;
    }
    let event = db::insert("crm_events")
        .columns(&["contact_id", "type", "props"])
        .row(vec![Value::uuid(&contact_id), Value::text(kind), Value::json(&J::Object(props))])
        .returning(&["id", "created_at"])
        .execute()?;
    let event = Row::first(event).ok_or_else(|| sdk::failed("event not stored"))?;
    let event_id = event.str("id").unwrap_or_default().to_string();
    let mut outbox = db::insert("crm_outbox").columns(&["topic", "payload"]).row(vec![
        Value::text("event.tracked.v1"),
        Value::json(&json!({
            "event_id": event_id, "contact_id": contact_id, "type": kind,
            "business_id": null, "created_at": event.str("created_at"),
        })),
    ]);
    if created || linked > 0 {
        outbox = outbox.row(vec![
            Value::text("contact.updated.v1"),
            Value::json(&json!({"contact_id": contact_id, "created": created, "identities_linked": linked})),
        ]);
    }
    outbox.execute()?;
    Ok(Some(event_id))
}
