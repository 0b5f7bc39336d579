//! `api_tokens`: a platform table. Only SHA-256 digests are stored.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::Result;
use crate::role::Role;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Uuid,
    pub role: String,
    pub org_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    /// The org's current plan (joined), for org tokens.
    pub plan: Option<String>,
}

/// The live (not revoked) token with this digest, with its org's plan.
pub async fn find_active<'e>(exec: impl PgExecutor<'e>, digest: &[u8; 32]) -> Result<Option<TokenRow>> {
    Ok(sqlx::query_as::<_, TokenRow>(
        "SELECT t.id, t.role, t.org_id, t.user_id, o.plan \
         FROM api_tokens t LEFT JOIN orgs o ON o.id = t.org_id \
         WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL",
    )
    .bind(&digest[..])
    .fetch_optional(exec)
    .await?)
}

pub async fn insert<'e>(
    exec: impl PgExecutor<'e>,
    digest: &[u8; 32],
    role: Role,
    org: Option<Uuid>,
    user: Option<Uuid>,
) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO api_tokens (id, token_sha256, role, org_id, user_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(&digest[..])
    .bind(role.as_str())
    .bind(org)
    .bind(user)
    .execute(exec)
    .await?;
    Ok(id)
}

/// Returns false when the token does not exist or was already revoked.
pub async fn revoke<'e>(exec: impl PgExecutor<'e>, id: Uuid) -> Result<bool> {
    let r = sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .execute(exec)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn any_active_super_admin<'e>(exec: impl PgExecutor<'e>) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE role = 'super_admin' AND revoked_at IS NULL)",
    )
    .fetch_one(exec)
    .await?)
}

/// Takes a transaction-scoped lock so concurrent starts create one bootstrap token.
pub async fn lock_bootstrap<'e>(exec: impl PgExecutor<'e>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('gateway.bootstrap'))").execute(exec).await?;
    Ok(())
}

/// An org's tokens, newest first, revoked ones included (the operator console).
#[derive(Debug, sqlx::FromRow)]
pub struct Listed {
    pub id: Uuid,
    pub role: String,
    pub user_id: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn list_for_org<'e>(exec: impl PgExecutor<'e>, org: Uuid) -> Result<Vec<Listed>> {
    Ok(sqlx::query_as(
        "SELECT id, role, user_id, created_at, revoked_at FROM api_tokens WHERE org_id = $1 \
         ORDER BY created_at DESC, id LIMIT 500",
    )
    .bind(org)
    .fetch_all(exec)
    .await?)
}
