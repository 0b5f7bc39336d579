//! `orgs`: a platform table, read and written outside any tenant.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::Result;

pub async fn create<'e>(exec: impl PgExecutor<'e>, name: &str, plan: &str) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO orgs (id, name, plan) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(plan)
        .execute(exec)
        .await?;
    Ok(id)
}

/// Returns false when no such org exists.
pub async fn set_plan<'e>(exec: impl PgExecutor<'e>, org: Uuid, plan: &str) -> Result<bool> {
    let r = sqlx::query("UPDATE orgs SET plan = $2 WHERE id = $1")
        .bind(org)
        .bind(plan)
        .execute(exec)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn plan_of<'e>(exec: impl PgExecutor<'e>, org: Uuid) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT plan FROM orgs WHERE id = $1")
        .bind(org)
        .fetch_optional(exec)
        .await?)
}

/// Every org with its plan, oldest first (the operator console).
pub async fn list<'e>(exec: impl PgExecutor<'e>) -> Result<Vec<(Uuid, String, String)>> {
    Ok(sqlx::query_as("SELECT id, name, plan FROM orgs ORDER BY created_at, id LIMIT 1000")
        .fetch_all(exec)
        .await?)
}
