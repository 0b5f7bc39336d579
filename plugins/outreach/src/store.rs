//! The local state an adapter reads and writes (migrations/0006_providers.sql), through
//! `tenant-db`: the host scopes every statement to the job's org, so nothing here names
//! `tenant_id`. Values from providers are cut to the columns' limits before they are written.

use gateway_plugin_sdk::db::{self, DbError, Filtered, Row, Value};
use gateway_plugin_sdk::serde_json::Value as J;

use crate::text::cut;
use crate::{Campaign, Inbox, Lead};

const NOW: &str = "now";

fn s(r: &Row, c: &str) -> Option<String> {
    r.str(c).map(str::to_string)
}

pub fn campaign(provider: &str, id: &str) -> Result<Option<Campaign>, DbError> {
    let row = db::select("campaigns")
        .columns(&["id", "name", "channel", "status", "provider_id", "sync_status"])
        .eq("id", Value::uuid(id))
        .eq("provider", Value::text(provider))
        .fetch_one()?;
    Ok(row.map(|r| to_campaign(&r)))
}

pub fn campaign_by_provider_id(provider: &str, provider_id: &str) -> Result<Option<Campaign>, DbError> {
    let row = db::select("campaigns")
        .columns(&["id", "name", "channel", "status", "provider_id", "sync_status"])
        .eq("provider", Value::text(provider))
        .eq("provider_id", Value::text(&cut(provider_id, 200)))
        .fetch_one()?;
    Ok(row.map(|r| to_campaign(&r)))
}

fn to_campaign(r: &Row) -> Campaign {
    Campaign {
        id: s(r, "id").unwrap_or_default(),
        name: s(r, "name").unwrap_or_default(),
        channel: s(r, "channel").unwrap_or_default(),
        status: s(r, "status").unwrap_or_default(),
        provider_id: s(r, "provider_id"),
        sync_status: s(r, "sync_status").unwrap_or_default(),
    }
}

/// The campaign now exists at the provider as `provider_id`.
pub fn campaign_created(id: &str, provider_id: &str) -> Result<(), DbError> {
    db::update("campaigns")
        .set("provider_id", Value::text(&cut(provider_id, 200)))
        .set("sync_status", Value::text("synced"))
        .set("sync_error", Value::Null)
        .set("updated_at", Value::timestamp(NOW))
        .eq("id", Value::uuid(id))
        .execute()?;
    Ok(())
}

pub fn campaign_sync(id: &str, error: Option<&str>) -> Result<(), DbError> {
    db::update("campaigns")
        .set("sync_status", Value::text(if error.is_some() { "failed" } else { "synced" }))
        .set("sync_error", Value::opt_text(error))
        .set("updated_at", Value::timestamp(NOW))
        .eq("id", Value::uuid(id))
        .execute()?;
    Ok(())
}

/// A status the provider reports on its own (a campaign that completed, or was stopped there).
pub fn campaign_status(id: &str, status: &str) -> Result<(), DbError> {
    db::update("campaigns")
        .set("status", Value::text(status))
        .set("updated_at", Value::timestamp(NOW))
        .eq("id", Value::uuid(id))
        .ne("status", Value::text(status))
        .execute()?;
    Ok(())
}

/// A sequence snapshot's steps (`None`: no such version).
pub fn sequence(campaign_id: &str, version: i64) -> Result<Option<J>, DbError> {
    let row = db::select("campaign_sequences")
        .columns(&["steps"])
        .eq("campaign_id", Value::uuid(campaign_id))
        .eq("version", Value::Integer(version))
        .fetch_one()?;
    Ok(row.and_then(|r| r.get("steps").map(db::value_to_json)))
}

pub fn sequence_sync(campaign_id: &str, version: i64, error: Option<&str>) -> Result<(), DbError> {
    db::update("campaign_sequences")
        .set("sync_status", Value::text(if error.is_some() { "failed" } else { "synced" }))
        .set("sync_error", Value::opt_text(error))
        .eq("campaign_id", Value::uuid(campaign_id))
        .eq("version", Value::Integer(version))
        .execute()?;
    Ok(())
}

const LEAD_COLUMNS: &[&str] = &[
    "id", "identity", "email", "profile_url", "first_name", "last_name", "company", "custom_fields", "provider_id", "status",
    "sync_status",
];

fn to_lead(r: &Row) -> Lead {
    Lead {
        id: s(r, "id").unwrap_or_default(),
        identity: s(r, "identity").unwrap_or_default(),
        email: s(r, "email"),
        profile_url: s(r, "profile_url"),
        first_name: s(r, "first_name"),
        last_name: s(r, "last_name"),
        company: s(r, "company"),
        custom_fields: r.get("custom_fields").map(db::value_to_json).unwrap_or(J::Null),
        provider_id: s(r, "provider_id"),
        status: s(r, "status").unwrap_or_default(),
        sync_status: s(r, "sync_status").unwrap_or_default(),
    }
}

pub fn lead(campaign_id: &str, id: &str) -> Result<Option<Lead>, DbError> {
    let row = db::select("campaign_leads")
        .columns(LEAD_COLUMNS)
        .eq("campaign_id", Value::uuid(campaign_id))
        .eq("id", Value::uuid(id))
        .fetch_one()?;
    Ok(row.as_ref().map(to_lead))
}

/// The lead a webhook names: by the provider's lead id, then by identity (email, or each form
/// of a profile URL), then by profile URL.
pub fn find_lead(campaign_id: &str, provider_id: Option<&str>, identities: &[String]) -> Result<Option<Lead>, DbError> {
    let by = |column: &str, value: &str| {
        db::select("campaign_leads")
            .columns(LEAD_COLUMNS)
            .eq("campaign_id", Value::uuid(campaign_id))
            .eq(column, Value::text(value))
            .fetch_one()
    };
    if let Some(p) = provider_id {
        if let Some(r) = by("provider_id", &cut(p, 200))? {
            return Ok(Some(to_lead(&r)));
        }
    }
    for column in ["identity", "profile_url"] {
        for i in identities.iter().filter(|i| !i.is_empty() && i.len() <= 500) {
            if let Some(r) = by(column, i)? {
                return Ok(Some(to_lead(&r)));
            }
        }
    }
    Ok(None)
}

/// The lead reached the provider (its provider id when one is known), or was refused.
pub fn lead_sync(id: &str, provider_id: Option<&str>, error: Option<&str>) -> Result<(), DbError> {
    let mut q = db::update("campaign_leads")
        .set("sync_status", Value::text(if error.is_some() { "failed" } else { "synced" }))
        .set("sync_error", Value::opt_text(error))
        .set("updated_at", Value::timestamp(NOW));
    if let Some(p) = provider_id {
        q = q.set("provider_id", Value::text(&cut(p, 200)));
    }
    q.eq("id", Value::uuid(id)).execute()?;
    Ok(())
}

/// What a webhook says about a lead: the provider's id for it, a new status (never leaving
/// `unsubscribed` or `bounced`), a category.
pub fn lead_update(lead: &Lead, provider_id: Option<&str>, status: Option<&str>, category: Option<&str>) -> Result<(), DbError> {
    let mut q = db::update("campaign_leads").set("updated_at", Value::timestamp(NOW));
    let mut any = false;
    if let (Some(p), None) = (provider_id, &lead.provider_id) {
        q = q.set("provider_id", Value::text(&cut(p, 200)));
        any = true;
    }
    if let Some(st) = status.filter(|st| *st != lead.status && !matches!(lead.status.as_str(), "unsubscribed" | "bounced")) {
        q = q.set("status", Value::text(st));
        any = true;
    }
    if let Some(c) = category {
        q = q.set("category", Value::text(&cut(c, 100)));
        any = true;
    }
    if any {
        q.eq("id", Value::uuid(&lead.id)).execute()?;
    }
    Ok(())
}

/// Sending accounts of `provider` that can send (status active, or unknown), by provider id.
pub fn senders(provider: &str) -> Result<Vec<String>, DbError> {
    let rows = db::select("inboxes")
        .columns(&["provider_id", "status"])
        .eq("provider", Value::text(provider))
        .order_by("provider_id", false)
        .limit(1000)
        .fetch()?;
    Ok(Row::all(rows)
        .iter()
        .filter(|r| matches!(r.str("status"), None | Some("active")))
        .filter_map(|r| s(r, "provider_id"))
        .collect())
}

/// Upserts the provider's sending accounts (one statement).
pub fn upsert_inboxes(provider: &str, inboxes: &[Inbox]) -> Result<u64, DbError> {
    if inboxes.is_empty() {
        return Ok(0);
    }
    let mut q = db::insert("inboxes").columns(&["provider", "provider_id", "address", "name", "status", "synced_at"]);
    for i in inboxes {
        q = q.row(vec![
            Value::text(provider),
            Value::text(&cut(&i.provider_id, 200)),
            Value::opt_text(i.address.as_deref().map(|a| cut(a, 320)).as_deref()),
            Value::opt_text(i.name.as_deref().map(|n| cut(n, 200)).as_deref()),
            Value::opt_text(i.status.as_deref().map(|st| cut(st, 64)).as_deref()),
            Value::timestamp(NOW),
        ]);
    }
    Ok(q.on_conflict_update(&["provider", "provider_id"], &["address", "name", "status", "synced_at"]).execute()?.affected)
}

/// The provider's webhook id from an earlier provisioning, if any.
pub fn provisioned_webhook(capability: &str, provider: &str) -> Result<Option<String>, DbError> {
    let row = db::select("provisioning")
        .columns(&["provider_webhook_id"])
        .eq("capability", Value::text(capability))
        .eq("provider", Value::text(provider))
        .fetch_one()?;
    Ok(row.and_then(|r| s(&r, "provider_webhook_id")))
}

/// Provisioning finished: `ready` with the provider's webhook id, or `failed` with the reason.
pub fn provisioning(capability: &str, provider: &str, webhook_id: Option<&str>, error: Option<&str>) -> Result<(), DbError> {
    let mut q = db::update("provisioning")
        .set("status", Value::text(if error.is_some() { "failed" } else { "ready" }))
        .set("reason", Value::opt_text(error))
        .set("updated_at", Value::timestamp(NOW));
    if let Some(w) = webhook_id {
        q = q.set("provider_webhook_id", Value::text(&cut(w, 200)));
    }
    q.eq("capability", Value::text(capability)).eq("provider", Value::text(provider)).execute()?;
    Ok(())
}
