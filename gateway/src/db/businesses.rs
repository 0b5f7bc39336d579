//! `businesses` and `business_members` (tenant tables). Call inside a tenant transaction.

use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;

pub async fn create(tx: &mut TenantTx, name: &str, owner: Option<Uuid>) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO businesses (id, tenant_id, name, owner_id) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tx.org())
        .bind(name)
        .bind(owner)
        .execute(tx.conn())
        .await?;
    Ok(id)
}

/// The owner of a business of this tenant: `None` if there is no such business,
/// `Some(None)` if it has no owner.
pub async fn owner_of(tx: &mut TenantTx, business: Uuid) -> Result<Option<Option<Uuid>>> {
    Ok(sqlx::query_scalar("SELECT owner_id FROM businesses WHERE tenant_id = $1 AND id = $2")
        .bind(tx.org())
        .bind(business)
        .fetch_optional(tx.conn())
        .await?)
}

/// Adds a member; returns false if they already were one.
pub async fn add_member(tx: &mut TenantTx, business: Uuid, user: Uuid) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO business_members (tenant_id, business_id, user_id) VALUES ($1, $2, $3) \
         ON CONFLICT ON CONSTRAINT business_members_pkey DO NOTHING",
    )
    .bind(tx.org())
    .bind(business)
    .bind(user)
    .execute(tx.conn())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether `user` owns `business` or is on its team (seed 001's rule).
pub async fn is_owner_or_member(tx: &mut TenantTx, business: Uuid, user: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM businesses b WHERE b.tenant_id = $1 AND b.id = $2 AND \
           (b.owner_id = $3 OR EXISTS (SELECT 1 FROM business_members m \
              WHERE m.tenant_id = $1 AND m.business_id = $2 AND m.user_id = $3)))",
    )
    .bind(tx.org())
    .bind(business)
    .bind(user)
    .fetch_one(tx.conn())
    .await?)
}
