//! The database layer: the only place that builds SQL.
//!
//! Two ways in:
//! - platform work (`orgs`, `api_tokens`) runs as the connecting owner role, outside any tenant;
//! - tenant work goes through [`begin_tenant`], which switches the transaction to the restricted
//!   `gateway_app` role and sets `app.tenant_id` / `app.role` with `set_config(..., true)`, so
//!   row-level security applies and nothing survives the transaction on the pooled connection.
//!
//! Queries on tenant tables also filter by `tenant_id` themselves: RLS is defence in depth.

pub mod businesses;
pub mod jobs;
pub mod webhooks;
pub mod structured;
pub mod orgs;
pub mod plugins;
pub mod tokens;
pub mod users;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::Result;

/// The restricted role tenant transactions run as (created by the first migration).
pub const APP_ROLE: &str = "gateway_app";

/// Notification channel that tells every replica to drop cached tokens and org plans.
pub const INVALIDATE_CHANNEL: &str = "gateway_invalidate";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens the pool. Acquisition and statements are bounded so that a dead database turns into
/// a prompt 503, never a hung request.
pub async fn connect(opts: PgConnectOptions, max_connections: u32) -> Result<PgPool> {
    let opts = opts
        .options([("statement_timeout", "10s"), ("lock_timeout", "5s")])
        .application_name("gateway")
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(opts);
    Ok(pool)
}

/// A second pool to the same database with the same settings: background work (job workers)
/// gets connections of its own, so it can never starve requests of theirs.
pub fn sibling_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(PgConnectOptions::clone(&pool.connect_options()))
}

pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Opens a tenant transaction: restricted role, tenant id and caller role set for this
/// transaction only, in one round trip after `BEGIN`.
pub async fn begin_tenant(
    pool: &PgPool,
    tenant: Uuid,
    role: &str,
) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    enter_tenant(&mut tx, tenant, role, None).await?;
    Ok(tx)
}

/// [`begin_tenant`] with this transaction's own statement timeout (plugin invocations, whose
/// grants set it), still in one round trip after `BEGIN`.
pub async fn begin_tenant_limited(
    pool: &PgPool,
    tenant: Uuid,
    role: &str,
    statement_timeout_ms: u64,
) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    enter_tenant(&mut tx, tenant, role, Some(statement_timeout_ms)).await?;
    Ok(tx)
}

/// Opens a platform-scope transaction as the owner role: the `platform_access` policies
/// (migration 0004) let it read endpoints and claim jobs across orgs. Only the two
/// cross-tenant operations use it (`webhooks::resolve`, `jobs::depth`; claims hold a
/// session in this scope, `jobs::claim_connection`).
pub async fn begin_platform(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', true)").execute(&mut *tx).await?;
    Ok(tx)
}

/// Switches an open transaction into a tenant's context (and, if given, sets its statement
/// timeout).
pub async fn enter_tenant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    role: &str,
    statement_timeout_ms: Option<u64>,
) -> Result<()> {
    sqlx::query(
        "SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true), \
         set_config('app.role', $3, true), \
         set_config('statement_timeout', COALESCE($4, current_setting('statement_timeout')), true)",
    )
    .bind(APP_ROLE)
    .bind(tenant.to_string())
    .bind(role)
    .bind(statement_timeout_ms.map(|ms| ms.to_string()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Leaves the tenant context inside the same transaction (back to the owner role), for the
/// few platform writes that must commit atomically with tenant writes.
pub async fn leave_tenant(tx: &mut Transaction<'static, Postgres>) -> Result<()> {
    sqlx::query("SELECT set_config('role', 'none', true), set_config('app.tenant_id', '', true)")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `SELECT 1`: is the database reachable?
pub async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Tells every replica (this one included) to drop cached credentials and plans.
pub async fn notify_invalidate<'e>(exec: impl sqlx::PgExecutor<'e>) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, 'all')").bind(INVALIDATE_CHANNEL).execute(exec).await?;
    Ok(())
}
