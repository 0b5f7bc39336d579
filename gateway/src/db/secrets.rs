//! Sealed secrets across the tables that hold them (for `gateway secrets reseal`), and each
//! replica's key ring (`secret_key_rings`, a platform table: key ids only).
//!
//! Resealing reads and rewrites one org at a time in an owner transaction scoped to that org
//! by row-level security (as `providers` does: `provider_secrets` is closed to the restricted
//! role), and every rewrite is a compare-and-swap on the old sealed bytes, so a value changed
//! meanwhile (a rotation, a new notify URL) is left as the writer made it.

use sqlx::PgExecutor;
use sqlx::PgPool;
use uuid::Uuid;

use super::providers::begin_owner_scoped;
use crate::error::Result;

/// Which sealed value, and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedRef {
    /// `webhook_secrets.id`, bound to its endpoint.
    Webhook { id: i64, endpoint: Uuid },
    /// `provider_secrets (provider, name)`.
    Provider { provider: String, name: String },
    /// `tenant_settings.notify_secret`.
    Notify,
}

impl std::fmt::Display for SealedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealedRef::Webhook { id, endpoint } => write!(f, "webhook secret {id} of endpoint {endpoint}"),
            SealedRef::Provider { provider, name } => write!(f, "provider secret {provider}/{name}"),
            SealedRef::Notify => f.write_str("notify secret"),
        }
    }
}

/// Every sealed value of one org.
pub async fn sealed_of_org(pool: &PgPool, org: Uuid) -> Result<Vec<(SealedRef, Vec<u8>)>> {
    let mut tx = begin_owner_scoped(pool, org).await?;
    let mut out = Vec::new();
    let rows: Vec<(i64, Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT id, endpoint_id, sealed FROM webhook_secrets WHERE tenant_id = $1 ORDER BY id")
            .bind(org)
            .fetch_all(&mut *tx)
            .await?;
    out.extend(rows.into_iter().map(|(id, endpoint, s)| (SealedRef::Webhook { id, endpoint }, s)));
    let rows: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT provider, name, sealed FROM provider_secrets WHERE tenant_id = $1 ORDER BY provider, name")
            .bind(org)
            .fetch_all(&mut *tx)
            .await?;
    out.extend(rows.into_iter().map(|(provider, name, s)| (SealedRef::Provider { provider, name }, s)));
    let notify: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT notify_secret FROM tenant_settings WHERE tenant_id = $1 AND notify_secret IS NOT NULL")
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
    out.extend(notify.map(|s| (SealedRef::Notify, s)));
    tx.commit().await?;
    Ok(out)
}

/// Replaces sealed values of one org in one transaction, each only if it still holds the old
/// bytes. Returns how many were replaced.
pub async fn replace_sealed(pool: &PgPool, org: Uuid, batch: &[(SealedRef, Vec<u8>, Vec<u8>)]) -> Result<u64> {
    let mut tx = begin_owner_scoped(pool, org).await?;
    let mut n = 0;
    for (what, old, new) in batch {
        let q = match what {
            SealedRef::Webhook { id, .. } => {
                sqlx::query("UPDATE webhook_secrets SET sealed = $3 WHERE tenant_id = $1 AND id = $2 AND sealed = $4").bind(org).bind(id)
            }
            SealedRef::Provider { provider, name } => sqlx::query(
                "UPDATE provider_secrets SET sealed = $4 WHERE tenant_id = $1 AND provider = $2 AND name = $3 AND sealed = $5",
            )
            .bind(org)
            .bind(provider)
            .bind(name),
            SealedRef::Notify => {
                sqlx::query("UPDATE tenant_settings SET notify_secret = $2 WHERE tenant_id = $1 AND notify_secret = $3").bind(org)
            }
        };
        n += q.bind(new).bind(old).execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

/// Records this replica's ring (key ids, newest first) and when it was last seen.
pub async fn record_ring<'e>(exec: impl PgExecutor<'e>, replica: &str, key_ids: &[String]) -> Result<()> {
    sqlx::query(
        "INSERT INTO secret_key_rings (replica, key_ids) VALUES ($1, $2) \
         ON CONFLICT (replica) DO UPDATE SET key_ids = EXCLUDED.key_ids, seen_at = now()",
    )
    .bind(replica)
    .bind(key_ids)
    .execute(exec)
    .await?;
    Ok(())
}

/// The other replicas' rings seen within `within`: `(replica, key ids newest first)`.
pub async fn other_rings<'e>(exec: impl PgExecutor<'e>, replica: &str, within: std::time::Duration) -> Result<Vec<(String, Vec<String>)>> {
    Ok(sqlx::query_as(
        "SELECT replica, key_ids FROM secret_key_rings \
         WHERE replica <> $1 AND seen_at > now() - make_interval(secs => $2) ORDER BY replica",
    )
    .bind(replica)
    .bind(within.as_secs_f64())
    .fetch_all(exec)
    .await?)
}

/// Forgets this replica's ring (on a clean stop).
pub async fn forget_ring<'e>(exec: impl PgExecutor<'e>, replica: &str) -> Result<()> {
    sqlx::query("DELETE FROM secret_key_rings WHERE replica = $1").bind(replica).execute(exec).await?;
    Ok(())
}
