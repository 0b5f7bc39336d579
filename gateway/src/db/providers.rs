//! Provider configuration: an org's base URL per provider and its sealed secrets
//! (`provider_configs`, `provider_secrets`). The restricted role has no privilege on these
//! tables, so no tenant transaction (and no plugin grant) can reach them; they are read and
//! written as the owner role, in a transaction that sets the org, so row-level security
//! still scopes every statement to it, and every statement filters by it too.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::Result;

/// An org's configuration of one provider (no secrets).
#[derive(Debug, Clone)]
pub struct Config {
    pub provider: String,
    pub base_url: String,
    pub updated_at: DateTime<Utc>,
}

/// An owner transaction scoped to `org` by row-level security.
pub(crate) async fn begin_owner_scoped(pool: &PgPool, org: Uuid) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(org.to_string()).execute(&mut *tx).await?;
    Ok(tx)
}

/// The org's configuration of `provider`, if any.
pub async fn config(pool: &PgPool, org: Uuid, provider: &str) -> Result<Option<Config>> {
    let mut tx = begin_owner_scoped(pool, org).await?;
    let row: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT provider, base_url, updated_at FROM provider_configs WHERE tenant_id = $1 AND provider = $2",
    )
    .bind(org)
    .bind(provider)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|(provider, base_url, updated_at)| Config { provider, base_url, updated_at }))
}
