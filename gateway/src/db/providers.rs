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

/// A configuration with the names (never the values) of its secrets, sorted.
#[derive(Debug, Clone)]
pub struct Summary {
    pub config: Config,
    pub secret_names: Vec<String>,
}

/// A configuration with its sealed secrets `(name, sealed)`.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub config: Config,
    pub secrets: Vec<(String, Vec<u8>)>,
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
    let row = config_on(&mut tx, org, provider).await?;
    tx.commit().await?;
    Ok(row)
}

async fn config_on(tx: &mut Transaction<'static, Postgres>, org: Uuid, provider: &str) -> Result<Option<Config>> {
    let row: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT provider, base_url, updated_at FROM provider_configs WHERE tenant_id = $1 AND provider = $2",
    )
    .bind(org)
    .bind(provider)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(provider, base_url, updated_at)| Config { provider, base_url, updated_at }))
}

async fn secret_names(tx: &mut Transaction<'static, Postgres>, org: Uuid, provider: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT name FROM provider_secrets WHERE tenant_id = $1 AND provider = $2 ORDER BY name")
        .bind(org)
        .bind(provider)
        .fetch_all(&mut **tx)
        .await?)
}

async fn org_exists(tx: &mut Transaction<'static, Postgres>, org: Uuid) -> Result<bool> {
    Ok(super::orgs::plan_of(&mut **tx, org).await?.is_some())
}

/// Replaces the org's configuration of `provider` and all its secrets, in one transaction
/// that also tells every replica to drop cached copies. `None`: no such org.
pub async fn put(pool: &PgPool, org: Uuid, provider: &str, base_url: &str, secrets: &[(String, Vec<u8>)]) -> Result<Option<Summary>> {
    let mut tx = begin_owner_scoped(pool, org).await?;
    // Locks the org row: a concurrent delete of the org cannot slip between check and write.
    let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM orgs WHERE id = $1 FOR KEY SHARE")
        .bind(org)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let updated_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO provider_configs (tenant_id, provider, base_url) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, provider) DO UPDATE SET base_url = EXCLUDED.base_url, updated_at = now() \
         RETURNING updated_at",
    )
    .bind(org)
    .bind(provider)
    .bind(base_url)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM provider_secrets WHERE tenant_id = $1 AND provider = $2")
        .bind(org)
        .bind(provider)
        .execute(&mut *tx)
        .await?;
    for (name, sealed) in secrets {
        sqlx::query("INSERT INTO provider_secrets (tenant_id, provider, name, sealed) VALUES ($1, $2, $3, $4)")
            .bind(org)
            .bind(provider)
            .bind(name)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
    }
    super::notify_invalidate(&mut *tx).await?;
    tx.commit().await?;
    let mut secret_names: Vec<String> = secrets.iter().map(|(n, _)| n.clone()).collect();
    secret_names.sort();
    Ok(Some(Summary {
        config: Config { provider: provider.to_string(), base_url: base_url.to_string(), updated_at },
        secret_names,
    }))
}

/// The org's configuration of `provider` with its secrets' names. `None`: no such org;
/// `Some(None)`: the org has not configured it.
pub async fn get(pool: &PgPool, org: Uuid, provider: &str) -> Result<Option<Option<Summary>>> {
    let mut tx = begin_owner_scoped(pool, org).await?;
    if !org_exists(&mut tx, org).await? {
        return Ok(None);
    }
    let summary = match config_on(&mut tx, org, provider).await? {
        Some(config) => Some(Summary { secret_names: secret_names(&mut tx, org, provider).await?, config }),
        None => None,
    };
    tx.commit().await?;
    Ok(Some(summary))
}

/// Every provider the org has configured, by name. `None`: no such org.
pub async fn list(pool: &PgPool, org: Uuid) -> Result<Option<Vec<Summary>>> {
    let mut tx = begin_owner_scoped(pool, org).await?;
    if !org_exists(&mut tx, org).await? {
        return Ok(None);
    }
    let configs: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT provider, base_url, updated_at FROM provider_configs WHERE tenant_id = $1 ORDER BY provider",
    )
    .bind(org)
    .fetch_all(&mut *tx)
    .await?;
    let names: Vec<(String, String)> =
        sqlx::query_as("SELECT provider, name FROM provider_secrets WHERE tenant_id = $1 ORDER BY provider, name")
            .bind(org)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Some(
        configs
            .into_iter()
            .map(|(provider, base_url, updated_at)| Summary {
                secret_names: names.iter().filter(|(p, _)| *p == provider).map(|(_, n)| n.clone()).collect(),
                config: Config { provider, base_url, updated_at },
            })
            .collect(),
    ))
}

/// Removes the org's configuration of `provider` and its secrets (and tells every replica).
/// False when there was none (or no such org).
pub async fn delete(pool: &PgPool, org: Uuid, provider: &str) -> Result<bool> {
    let mut tx = begin_owner_scoped(pool, org).await?;
    let r = sqlx::query("DELETE FROM provider_configs WHERE tenant_id = $1 AND provider = $2")
        .bind(org)
        .bind(provider)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    super::notify_invalidate(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// The org's configuration of `provider` with its sealed secrets, for the host that injects
/// them.
pub async fn sealed(pool: &PgPool, org: Uuid, provider: &str) -> Result<Option<Sealed>> {
    let mut tx = begin_owner_scoped(pool, org).await?;
    let Some(config) = config_on(&mut tx, org, provider).await? else {
        tx.commit().await?;
        return Ok(None);
    };
    let secrets: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT name, sealed FROM provider_secrets WHERE tenant_id = $1 AND provider = $2 ORDER BY name")
            .bind(org)
            .bind(provider)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Some(Sealed { config, secrets }))
}
