//! The campaigns API's tables (migration 0006, all tenant tables): capabilities and their
//! provisioning, inboxes, campaigns, sequence versions, leads, messages and activity, and the
//! `provider_sync` jobs every write enqueues in its own transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;

/// The job kind of provider calls (`jobs.kind`).
pub const SYNC_KIND: &str = "provider_sync";

/// Enqueues a `provider_sync` job carrying `payload` and wakes the workers when the
/// transaction commits (with the rows the job is about, or not at all).
pub async fn enqueue_sync(tx: &mut TenantTx, ref_id: Option<Uuid>, payload: &Value, max_attempts: i32, retry_base_ms: i32) -> Result<Uuid> {
    super::jobs::enqueue(tx, SYNC_KIND, ref_id, payload, max_attempts, retry_base_ms).await
}

// Capabilities and provisioning.

#[derive(Debug, sqlx::FromRow)]
pub struct CapabilityRow {
    pub capability: String,
    pub provider: String,
    pub updated_at: DateTime<Utc>,
}

/// The provider serving `capability` for this org, if it is enabled; `lock` holds the row
/// until commit (provisioning serialises on it).
pub async fn capability(tx: &mut TenantTx, capability: &str, lock: bool) -> Result<Option<CapabilityRow>> {
    let sql = format!(
        "SELECT capability, provider, updated_at FROM org_capabilities WHERE tenant_id = $1 AND capability = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(sqlx::query_as(&sql).bind(tx.org()).bind(capability).fetch_optional(tx.conn()).await?)
}

pub async fn capabilities(tx: &mut TenantTx) -> Result<Vec<CapabilityRow>> {
    Ok(sqlx::query_as("SELECT capability, provider, updated_at FROM org_capabilities WHERE tenant_id = $1 ORDER BY capability")
        .bind(tx.org())
        .fetch_all(tx.conn())
        .await?)
}

/// Sets the provider of a capability. A different provider than before drops the
/// capability's provisioning (it was for the other provider).
pub async fn set_capability(tx: &mut TenantTx, capability: &str, provider: &str) -> Result<CapabilityRow> {
    sqlx::query("DELETE FROM provisioning WHERE tenant_id = $1 AND capability = $2 AND provider <> $3")
        .bind(tx.org())
        .bind(capability)
        .bind(provider)
        .execute(tx.conn())
        .await?;
    Ok(sqlx::query_as(
        "INSERT INTO org_capabilities (tenant_id, capability, provider) VALUES ($1, $2, $3) \
         ON CONFLICT ON CONSTRAINT org_capabilities_pkey DO UPDATE SET provider = EXCLUDED.provider, updated_at = now() \
         RETURNING capability, provider, updated_at",
    )
    .bind(tx.org())
    .bind(capability)
    .bind(provider)
    .fetch_one(tx.conn())
    .await?)
}

#[derive(Debug, sqlx::FromRow)]
pub struct ProvisioningRow {
    pub capability: String,
    pub provider: String,
    pub status: String,
    pub reason: Option<String>,
    pub job_id: Option<Uuid>,
    pub webhook_endpoint_id: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

pub async fn provisioning(tx: &mut TenantTx, capability: &str) -> Result<Option<ProvisioningRow>> {
    Ok(sqlx::query_as(
        "SELECT capability, provider, status, reason, job_id, webhook_endpoint_id, updated_at FROM provisioning \
         WHERE tenant_id = $1 AND capability = $2",
    )
    .bind(tx.org())
    .bind(capability)
    .fetch_optional(tx.conn())
    .await?)
}

/// Marks a capability's provisioning as requested (pending, by `job`).
pub async fn start_provisioning(tx: &mut TenantTx, capability: &str, provider: &str, job: Uuid, endpoint: Uuid) -> Result<()> {
    sqlx::query(
        "INSERT INTO provisioning (tenant_id, capability, provider, status, job_id, webhook_endpoint_id) \
         VALUES ($1, $2, $3, 'pending', $4, $5) \
         ON CONFLICT ON CONSTRAINT provisioning_pkey DO UPDATE SET provider = EXCLUDED.provider, status = 'pending', \
             reason = NULL, job_id = EXCLUDED.job_id, webhook_endpoint_id = EXCLUDED.webhook_endpoint_id, \
             requested_at = now(), updated_at = now()",
    )
    .bind(tx.org())
    .bind(capability)
    .bind(provider)
    .bind(job)
    .bind(endpoint)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A provisioning job that is dead: `failed` with its last error (only while that job is
/// still the capability's latest).
pub async fn fail_provisioning(tx: &mut TenantTx, capability: &str, job: Uuid, reason: &str) -> Result<()> {
    sqlx::query(
        "UPDATE provisioning SET status = 'failed', reason = $4, updated_at = now() \
         WHERE tenant_id = $1 AND capability = $2 AND job_id = $3 AND status = 'pending'",
    )
    .bind(tx.org())
    .bind(capability)
    .bind(job)
    .bind(bounded(reason))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The newest active webhook endpoint of this org for `provider` with `scheme`.
pub async fn live_endpoint(tx: &mut TenantTx, provider: &str, scheme: &str) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints WHERE tenant_id = $1 AND provider = $2 AND scheme = $3 \
         AND disabled_at IS NULL ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tx.org())
    .bind(provider)
    .bind(scheme)
    .fetch_optional(tx.conn())
    .await?)
}

/// An active endpoint's scheme and its newest live sealed secret (`None` when the endpoint is
/// gone or disabled).
pub async fn endpoint_secret(tx: &mut TenantTx, endpoint: Uuid) -> Result<Option<(String, Option<Vec<u8>>)>> {
    Ok(sqlx::query_as(
        "SELECT e.scheme, (SELECT s.sealed FROM webhook_secrets s WHERE s.tenant_id = e.tenant_id AND s.endpoint_id = e.id \
                           AND (s.expires_at IS NULL OR s.expires_at > now()) ORDER BY s.id DESC LIMIT 1) \
         FROM webhook_endpoints e WHERE e.tenant_id = $1 AND e.id = $2 AND e.disabled_at IS NULL",
    )
    .bind(tx.org())
    .bind(endpoint)
    .fetch_optional(tx.conn())
    .await?)
}

// Inboxes.

#[derive(Debug, sqlx::FromRow)]
pub struct InboxRow {
    pub id: Uuid,
    pub provider: String,
    pub address: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub synced_at: DateTime<Utc>,
}

pub async fn inboxes(tx: &mut TenantTx) -> Result<Vec<InboxRow>> {
    Ok(sqlx::query_as(
        "SELECT id, provider, address, name, status, synced_at FROM inboxes WHERE tenant_id = $1 \
         ORDER BY provider, address, id LIMIT 1000",
    )
    .bind(tx.org())
    .fetch_all(tx.conn())
    .await?)
}

// Campaigns.

#[derive(Debug, sqlx::FromRow)]
pub struct CampaignRow {
    pub id: Uuid,
    pub name: String,
    pub channel: String,
    pub provider: String,
    pub provider_id: Option<String>,
    pub status: String,
    pub sync_status: String,
    pub sync_error: Option<String>,
    pub sequence_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CAMPAIGN: &str =
    "id, name, channel, provider, provider_id, status, sync_status, sync_error, sequence_version, created_at, updated_at";

pub async fn create_campaign(tx: &mut TenantTx, name: &str, channel: &str, provider: &str, created_by: Option<Uuid>) -> Result<CampaignRow> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO campaigns (tenant_id, name, channel, provider, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING {CAMPAIGN}"
    ))
    .bind(tx.org())
    .bind(name)
    .bind(channel)
    .bind(provider)
    .bind(created_by)
    .fetch_one(tx.conn())
    .await?)
}

/// Newest first.
pub async fn campaigns(tx: &mut TenantTx, limit: i64) -> Result<Vec<CampaignRow>> {
    Ok(sqlx::query_as(&format!("SELECT {CAMPAIGN} FROM campaigns WHERE tenant_id = $1 ORDER BY created_at DESC, id LIMIT $2"))
        .bind(tx.org())
        .bind(limit)
        .fetch_all(tx.conn())
        .await?)
}

/// A campaign of this org; `lock` holds it until commit (writes to a campaign serialise on it).
pub async fn campaign(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Option<CampaignRow>> {
    let sql = format!("SELECT {CAMPAIGN} FROM campaigns WHERE tenant_id = $1 AND id = $2{}", if lock { " FOR UPDATE" } else { "" });
    Ok(sqlx::query_as(&sql).bind(tx.org()).bind(id).fetch_optional(tx.conn()).await?)
}

/// A new status, to be synced.
pub async fn set_campaign_status(tx: &mut TenantTx, id: Uuid, status: &str) -> Result<CampaignRow> {
    Ok(sqlx::query_as(&format!(
        "UPDATE campaigns SET status = $3, sync_status = 'pending', sync_error = NULL, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2 RETURNING {CAMPAIGN}"
    ))
    .bind(tx.org())
    .bind(id)
    .bind(status)
    .fetch_one(tx.conn())
    .await?)
}

/// A dead sync job of the campaign itself (create or status).
pub async fn fail_campaign(tx: &mut TenantTx, id: Uuid, error: &str) -> Result<()> {
    sqlx::query("UPDATE campaigns SET sync_status = 'failed', sync_error = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2")
        .bind(tx.org())
        .bind(id)
        .bind(bounded(error))
        .execute(tx.conn())
        .await?;
    Ok(())
}

// Sequences.

#[derive(Debug, sqlx::FromRow)]
pub struct SequenceRow {
    pub version: i32,
    pub steps: Value,
    pub sync_status: String,
    pub sync_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn latest_sequence(tx: &mut TenantTx, campaign: Uuid) -> Result<Option<SequenceRow>> {
    Ok(sqlx::query_as(
        "SELECT version, steps, sync_status, sync_error, created_at FROM campaign_sequences \
         WHERE tenant_id = $1 AND campaign_id = $2 ORDER BY version DESC LIMIT 1",
    )
    .bind(tx.org())
    .bind(campaign)
    .fetch_optional(tx.conn())
    .await?)
}

/// Saves `steps` as the campaign's next version (the campaign row is the counter).
pub async fn save_sequence(tx: &mut TenantTx, campaign: Uuid, steps: &Value, created_by: Option<Uuid>) -> Result<SequenceRow> {
    Ok(sqlx::query_as(
        "WITH c AS ( \
             UPDATE campaigns SET sequence_version = sequence_version + 1, updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 RETURNING sequence_version) \
         INSERT INTO campaign_sequences (tenant_id, campaign_id, version, steps, created_by) \
         SELECT $1, $2, c.sequence_version, $3, $4 FROM c \
         RETURNING version, steps, sync_status, sync_error, created_at",
    )
    .bind(tx.org())
    .bind(campaign)
    .bind(steps)
    .bind(created_by)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn fail_sequence(tx: &mut TenantTx, campaign: Uuid, version: i32, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE campaign_sequences SET sync_status = 'failed', sync_error = $4 \
         WHERE tenant_id = $1 AND campaign_id = $2 AND version = $3",
    )
    .bind(tx.org())
    .bind(campaign)
    .bind(version)
    .bind(bounded(error))
    .execute(tx.conn())
    .await?;
    Ok(())
}

// Leads.

/// A validated lead, its identity normalised.
#[derive(Debug, Clone)]
pub struct NewLead {
    pub identity: String,
    pub email: Option<String>,
    pub profile_url: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub custom_fields: Value,
}

#[derive(Debug, sqlx::FromRow)]
pub struct LeadRow {
    pub id: Uuid,
    pub email: Option<String>,
    pub profile_url: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub custom_fields: Value,
    pub status: String,
    pub category: Option<String>,
    pub provider_id: Option<String>,
    pub sync_status: String,
    pub sync_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const LEAD: &str = "id, email, profile_url, first_name, last_name, company, custom_fields, status, category, provider_id, \
     sync_status, sync_error, created_at, updated_at";

/// Inserts the leads whose identity the campaign does not hold yet (one statement); returns
/// the inserted ones, in input order.
pub async fn add_leads(tx: &mut TenantTx, campaign: Uuid, leads: &[NewLead]) -> Result<Vec<LeadRow>> {
    let col = |f: fn(&NewLead) -> Option<String>| leads.iter().map(f).collect::<Vec<Option<String>>>();
    let identities: Vec<String> = leads.iter().map(|l| l.identity.clone()).collect();
    let custom: Vec<String> = leads.iter().map(|l| l.custom_fields.to_string()).collect();
    Ok(sqlx::query_as(&format!(
        "WITH i AS ( \
             INSERT INTO campaign_leads (tenant_id, campaign_id, identity, email, profile_url, first_name, last_name, \
                                         company, custom_fields) \
             SELECT $1, $2, t.identity, t.email, t.profile_url, t.first_name, t.last_name, t.company, t.custom::jsonb \
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) \
                  AS t(identity, email, profile_url, first_name, last_name, company, custom) \
             ON CONFLICT ON CONSTRAINT campaign_leads_identity_key DO NOTHING \
             RETURNING {LEAD}, identity) \
         SELECT {LEAD} FROM i ORDER BY array_position($3::text[], i.identity)"
    ))
    .bind(tx.org())
    .bind(campaign)
    .bind(&identities)
    .bind(col(|l| l.email.clone()))
    .bind(col(|l| l.profile_url.clone()))
    .bind(col(|l| l.first_name.clone()))
    .bind(col(|l| l.last_name.clone()))
    .bind(col(|l| l.company.clone()))
    .bind(&custom)
    .fetch_all(tx.conn())
    .await?)
}

/// Oldest first.
pub async fn leads(tx: &mut TenantTx, campaign: Uuid, limit: i64) -> Result<Vec<LeadRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {LEAD} FROM campaign_leads WHERE tenant_id = $1 AND campaign_id = $2 ORDER BY created_at, id LIMIT $3"
    ))
    .bind(tx.org())
    .bind(campaign)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn lead(tx: &mut TenantTx, campaign: Uuid, lead: Uuid) -> Result<Option<LeadRow>> {
    Ok(sqlx::query_as(&format!("SELECT {LEAD} FROM campaign_leads WHERE tenant_id = $1 AND campaign_id = $2 AND id = $3"))
        .bind(tx.org())
        .bind(campaign)
        .bind(lead)
        .fetch_optional(tx.conn())
        .await?)
}

/// A new lead status, to be synced.
pub async fn set_lead_status(tx: &mut TenantTx, campaign: Uuid, lead: Uuid, status: &str) -> Result<LeadRow> {
    Ok(sqlx::query_as(&format!(
        "UPDATE campaign_leads SET status = $4, sync_status = 'pending', sync_error = NULL, updated_at = now() \
         WHERE tenant_id = $1 AND campaign_id = $2 AND id = $3 RETURNING {LEAD}"
    ))
    .bind(tx.org())
    .bind(campaign)
    .bind(lead)
    .bind(status)
    .fetch_one(tx.conn())
    .await?)
}

/// Dead sync jobs of leads: those not synced since are `failed` with the error.
pub async fn fail_leads(tx: &mut TenantTx, campaign: Uuid, leads: &[Uuid], error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE campaign_leads SET sync_status = 'failed', sync_error = $4, updated_at = now() \
         WHERE tenant_id = $1 AND campaign_id = $2 AND id = ANY($3) AND sync_status <> 'synced'",
    )
    .bind(tx.org())
    .bind(campaign)
    .bind(leads)
    .bind(bounded(error))
    .execute(tx.conn())
    .await?;
    Ok(())
}

// Messages and activity.

#[derive(Debug, sqlx::FromRow)]
pub struct MessageRow {
    pub id: Uuid,
    pub lead_id: Option<Uuid>,
    pub direction: String,
    pub seq_number: Option<i32>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub provider_message_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

const MESSAGE: &str = "id, lead_id, direction, seq_number, subject, body, provider_message_id, occurred_at";

/// Inbound messages of the campaign, newest first.
pub async fn replies(tx: &mut TenantTx, campaign: Uuid, limit: i64) -> Result<Vec<MessageRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {MESSAGE} FROM campaign_messages WHERE tenant_id = $1 AND campaign_id = $2 AND direction = 'inbound' \
         ORDER BY occurred_at DESC, id LIMIT $3"
    ))
    .bind(tx.org())
    .bind(campaign)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// A lead's messages both ways, oldest first (a conversation).
pub async fn lead_messages(tx: &mut TenantTx, campaign: Uuid, lead: Uuid, limit: i64) -> Result<Vec<MessageRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {MESSAGE} FROM campaign_messages WHERE tenant_id = $1 AND campaign_id = $2 AND lead_id = $3 \
         ORDER BY occurred_at, id LIMIT $4"
    ))
    .bind(tx.org())
    .bind(campaign)
    .bind(lead)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// Counts of one sequence step (`seq_number` `None`: activity tied to no step).
#[derive(Debug, sqlx::FromRow)]
pub struct StepCounts {
    pub seq_number: Option<i32>,
    pub sent: i64,
    pub opened: i64,
    pub clicked: i64,
    pub replied: i64,
    pub bounced: i64,
    pub unsubscribed: i64,
}

pub async fn analytics(tx: &mut TenantTx, campaign: Uuid) -> Result<Vec<StepCounts>> {
    Ok(sqlx::query_as(
        "SELECT seq_number, \
                count(*) FILTER (WHERE kind = 'message.sent') AS sent, \
                count(*) FILTER (WHERE kind = 'message.opened') AS opened, \
                count(*) FILTER (WHERE kind = 'link.clicked') AS clicked, \
                count(*) FILTER (WHERE kind = 'reply.received') AS replied, \
                count(*) FILTER (WHERE kind = 'bounced') AS bounced, \
                count(*) FILTER (WHERE kind = 'unsubscribed') AS unsubscribed \
         FROM campaign_activity WHERE tenant_id = $1 AND campaign_id = $2 \
         GROUP BY seq_number ORDER BY seq_number NULLS LAST",
    )
    .bind(tx.org())
    .bind(campaign)
    .fetch_all(tx.conn())
    .await?)
}

/// Errors are stored within the columns' 500-character bound.
fn bounded(text: &str) -> String {
    text.chars().take(500).collect()
}
