//! The database layer: the only place that builds SQL.
//!
//! Three ways in:
//! - platform tables (`orgs`, `api_tokens`, the plugin registry) are reached as the connecting
//!   owner role, outside any tenant, with any executor;
//! - tenant tables are reached only through a [`TenantTx`] ([`begin_tenant`]): the transaction
//!   runs as the restricted `gateway_app` role with `app.tenant_id` / `app.role` set by
//!   `set_config(..., true)`, so row-level security applies and nothing survives the
//!   transaction on the pooled connection. Every function on a tenant table takes the
//!   `TenantTx` and filters by its org: there is no way to pass a second, different tenant;
//! - the two cross-tenant reads (resolving a webhook endpoint, queue depth) and job claims run
//!   in the platform scope ([`PlatformTx`], [`jobs::ClaimConnection`]), which only the owner
//!   role's `platform_access` policies honour.
//!
//! Queries on tenant tables also filter by `tenant_id` themselves: RLS is defence in depth.

pub mod agent_runs;
pub mod history;
pub mod businesses;
pub mod campaigns;
pub mod jobs;
pub mod webhooks;
pub mod structured;
pub mod optimizations;
pub mod orgs;
pub mod plugins;
pub mod plugin_storage;
pub mod providers;
pub mod ratelimit;
pub mod schedules;
pub mod secrets;
mod scope;
pub mod seed;
pub mod settings;
pub mod stats;
pub mod tokens;
pub mod users;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

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

pub use scope::{begin_platform, begin_tenant, begin_tenant_limited, enter_tenant, PlatformTx, TenantTx};

/// Tells every replica (this one included) to drop cached credentials and plans.
pub async fn notify_invalidate<'e>(exec: impl sqlx::PgExecutor<'e>) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, 'all')").bind(INVALIDATE_CHANNEL).execute(exec).await?;
    Ok(())
}
