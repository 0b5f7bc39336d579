//! `users` (tenant table): a person's membership and role in one org. Call inside a tenant
//! transaction.

use uuid::Uuid;

use super::TenantTx;
use crate::role::Role;
use crate::error::Result;

/// Creates the user, or updates the role of the existing user with that email; returns the id.
pub async fn upsert(tx: &mut TenantTx, email: &str, role: Role) -> Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO users (id, tenant_id, email, role) VALUES ($1, $2, $3, $4) \
         ON CONFLICT ON CONSTRAINT users_tenant_email_key DO UPDATE SET role = EXCLUDED.role \
         RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(tx.org())
    .bind(email)
    .bind(role.as_str())
    .fetch_one(tx.conn())
    .await?)
}

pub async fn exists(tx: &mut TenantTx, user: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2)")
        .bind(tx.org())
        .bind(user)
        .fetch_one(tx.conn())
        .await?)
}
