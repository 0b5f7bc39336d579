//! `users` (tenant table): a person's membership and role in one org. Call inside a tenant
//! transaction.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::Result;

/// Creates the user, or updates the role of the existing user with that email; returns the id.
pub async fn upsert<'e>(exec: impl PgExecutor<'e>, tenant: Uuid, email: &str, role: &str) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO users (id, tenant_id, email, role) VALUES ($1, $2, $3, $4) \
         ON CONFLICT ON CONSTRAINT users_tenant_email_key DO UPDATE SET role = EXCLUDED.role \
         RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(email)
    .bind(role)
    .fetch_one(exec)
    .await?)
}

pub async fn exists<'e>(exec: impl PgExecutor<'e>, tenant: Uuid, user: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2)")
        .bind(tenant)
        .bind(user)
        .fetch_one(exec)
        .await?)
}
