//! Webhook endpoints, their sealed secrets and received events (tenant tables).
//!
//! Everything here runs in a tenant transaction (`begin_tenant`) and filters by `tenant_id`
//! itself, except [`resolve`], which maps an endpoint id to its org before any credential is
//! known and therefore runs with `app.scope = 'platform'` (see migration 0004).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;

/// The channel that wakes job workers (payload unused).
pub const JOBS_CHANNEL: &str = "gateway_jobs";

pub async fn create_endpoint(
    tx: &mut TenantTx,
    provider: &str,
    scheme: &str,
    created_by: Option<Uuid>,
) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (tenant_id, provider, scheme, created_by) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(tx.org())
    .bind(provider)
    .bind(scheme)
    .bind(created_by)
    .fetch_one(tx.conn())
    .await?)
}

pub async fn add_secret(tx: &mut TenantTx, endpoint: Uuid, sealed: &[u8]) -> Result<()> {
    sqlx::query("INSERT INTO webhook_secrets (tenant_id, endpoint_id, sealed) VALUES ($1, $2, $3)")
        .bind(tx.org())
        .bind(endpoint)
        .bind(sealed)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Ends every secret of the endpoint at `until` at the latest (a rotation's grace period).
pub async fn expire_secrets(tx: &mut TenantTx, endpoint: Uuid, until: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_secrets SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), $3) \
         WHERE tenant_id = $1 AND endpoint_id = $2",
    )
    .bind(tx.org())
    .bind(endpoint)
    .bind(until)
    .execute(tx.conn())
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: Uuid,
    pub provider: String,
    pub scheme: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// An endpoint of this org, locked for update (rotation and disabling serialise on it).
pub async fn endpoint_for_update(tx: &mut TenantTx, id: Uuid) -> Result<Option<EndpointRow>> {
    Ok(sqlx::query_as(
        "SELECT id, provider, scheme, created_at, disabled_at FROM webhook_endpoints \
         WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tx.org())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?)
}

pub async fn list_endpoints(tx: &mut TenantTx) -> Result<Vec<EndpointRow>> {
    Ok(sqlx::query_as(
        "SELECT id, provider, scheme, created_at, disabled_at FROM webhook_endpoints \
         WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1000",
    )
    .bind(tx.org())
    .fetch_all(tx.conn())
    .await?)
}

pub async fn disable_endpoint(tx: &mut TenantTx, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE webhook_endpoints SET disabled_at = now() WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL")
        .bind(tx.org())
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// What ingress needs to know about an endpoint: its org, provider, scheme and every secret
/// that has not expired.
pub struct Resolved {
    pub org: Uuid,
    pub provider: String,
    pub scheme: String,
    pub disabled: bool,
    /// `(sealed secret, expires_at)`.
    pub secrets: Vec<(Vec<u8>, Option<DateTime<Utc>>)>,
}

/// `(org, provider, scheme, disabled, sealed secret, expires_at)`, one row per live secret.
type ResolveRow = (Uuid, String, String, bool, Option<Vec<u8>>, Option<DateTime<Utc>>);

/// Maps an endpoint id to its org and secrets, before any tenant is known (platform scope).
pub async fn resolve(pool: &PgPool, id: Uuid) -> Result<Option<Resolved>> {
    let mut tx = crate::db::begin_platform(pool).await?;
    let rows: Vec<ResolveRow> = sqlx::query_as(
        "SELECT e.tenant_id, e.provider, e.scheme, e.disabled_at IS NOT NULL, s.sealed, s.expires_at \
         FROM webhook_endpoints e \
         LEFT JOIN webhook_secrets s ON s.tenant_id = e.tenant_id AND s.endpoint_id = e.id \
              AND (s.expires_at IS NULL OR s.expires_at > now()) \
         WHERE e.id = $1 ORDER BY s.id DESC",
    )
    .bind(id)
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    let Some(first) = rows.first() else { return Ok(None) };
    let mut r = Resolved { org: first.0, provider: first.1.clone(), scheme: first.2.clone(), disabled: first.3, secrets: vec![] };
    for row in rows {
        if let Some(sealed) = row.4 {
            r.secrets.push((sealed, row.5));
        }
    }
    Ok(Some(r))
}

/// Stores an event and its job in one statement (and wakes the workers); `None` when the
/// event key was seen before: nothing is written then. The key is recorded in
/// `webhook_event_keys` (migration 0008), which outlives the event itself: a provider's retry
/// after the event has left the history is still a duplicate. The job's `created_at` is the
/// event's `received_at`, its partition key, so the job's claim finds it in one partition.
#[allow(clippy::too_many_arguments)]
pub async fn store_event(
    tx: &mut TenantTx,
    endpoint: Uuid,
    provider: &str,
    event_key: &str,
    event_type: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
    max_attempts: i32,
    retry_base_ms: i32,
) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "WITH k AS ( \
             INSERT INTO webhook_event_keys (tenant_id, endpoint_id, event_key, event_id) \
             VALUES ($1, $2, $4, gen_random_uuid()) \
             ON CONFLICT ON CONSTRAINT webhook_event_keys_pkey DO NOTHING RETURNING event_id, received_at), \
         e AS ( \
             INSERT INTO webhook_events (id, tenant_id, endpoint_id, provider, event_key, event_type, body, content_type, received_at) \
             SELECT k.event_id, $1, $2, $3, $4, $5, $6, $7, k.received_at FROM k RETURNING id, received_at), \
         j AS ( \
             INSERT INTO jobs (tenant_id, kind, ref_id, max_attempts, retry_base_ms, created_at) \
             SELECT $1, 'webhook', id, $8, $9, received_at FROM e RETURNING id) \
         SELECT e.id FROM e, (SELECT pg_notify($10, '') FROM j) n",
    )
    .bind(tx.org())
    .bind(endpoint)
    .bind(provider)
    .bind(event_key)
    .bind(event_type)
    .bind(body)
    .bind(content_type)
    .bind(max_attempts)
    .bind(retry_base_ms)
    .bind(JOBS_CHANNEL)
    .fetch_optional(tx.conn())
    .await?)
}

#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub provider: String,
    pub event_type: Option<String>,
    pub received_at: DateTime<Utc>,
    pub status: Option<String>,
    pub attempts: Option<i32>,
    pub max_attempts: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const EVENT_COLUMNS: &str = "e.id, e.endpoint_id, e.provider, e.event_type, e.received_at, j.status, j.attempts, \
     j.max_attempts, j.last_error, j.run_at AS next_attempt_at, j.finished_at";

/// Newest first; `status` is the job's (`pending`, `processing`, `done`, `dead`).
pub async fn list_events(tx: &mut TenantTx, status: Option<&str>, limit: i64) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events e \
         LEFT JOIN jobs j ON j.tenant_id = e.tenant_id AND j.ref_id = e.id AND j.kind = 'webhook' \
         WHERE e.tenant_id = $1 AND ($2::text IS NULL OR j.status = $2) \
         ORDER BY e.received_at DESC, e.id LIMIT $3"
    ))
    .bind(tx.org())
    .bind(status)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn event(tx: &mut TenantTx, id: Uuid) -> Result<Option<EventRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events e \
         LEFT JOIN jobs j ON j.tenant_id = e.tenant_id AND j.ref_id = e.id AND j.kind = 'webhook' \
         WHERE e.tenant_id = $1 AND e.id = $2"
    ))
    .bind(tx.org())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?)
}

/// Puts a dead event's job back in the queue with fresh attempts; `false` if it is not dead.
pub async fn replay(tx: &mut TenantTx, event: Uuid) -> Result<bool> {
    let n: Option<Uuid> = sqlx::query_scalar(
        "WITH r AS ( \
             UPDATE jobs SET status = 'pending', attempts = 0, run_at = now(), locked_by = NULL, \
                    finished_at = NULL, updated_at = now() \
             WHERE tenant_id = $1 AND kind = 'webhook' AND ref_id = $2 AND status = 'dead' RETURNING id) \
         SELECT r.id FROM r, (SELECT pg_notify($3, '')) n",
    )
    .bind(tx.org())
    .bind(event)
    .bind(JOBS_CHANNEL)
    .fetch_optional(tx.conn())
    .await?;
    Ok(n.is_some())
}
