//! The transaction types that decide which rows a statement can reach.
//!
//! A [`TenantTx`] is the only handle to tenant tables: it carries its org and [`Actor`], so a
//! tenant-table function cannot be called outside a tenant transaction, nor with another
//! tenant than the one the database was told about. A [`PlatformTx`] is the platform scope
//! for the few cross-tenant reads. Neither exposes its connection outside `db`.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::Result;
use crate::role::Actor;

use super::APP_ROLE;

/// A transaction in one org's context: role `gateway_app`, `app.tenant_id` and `app.role` set
/// for this transaction only.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    org: Uuid,
    actor: Actor,
}

/// Opens a tenant transaction, `BEGIN` and its settings in one round trip.
pub async fn begin_tenant(pool: &PgPool, org: Uuid, actor: Actor) -> Result<TenantTx> {
    let tx = pool.begin_with(begin_sql(org, actor, None, None)).await?;
    Ok(TenantTx { tx, org, actor })
}

/// `BEGIN` and the tenant settings as one simple-protocol query (two statements, one round
/// trip). The only values are the host's own, written into the text: a constant role name,
/// a UUID's canonical form, an actor's fixed name and numbers, none of which can carry a
/// quote; everything that comes from a request is bound in later statements.
fn begin_sql(org: Uuid, actor: Actor, statement_timeout_ms: Option<u64>, idle_timeout_ms: Option<u64>) -> String {
    let safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    assert!(safe(APP_ROLE) && safe(actor.as_str()), "role and actor names are plain identifiers");
    let mut sql = format!(
        "BEGIN; SELECT set_config('role', '{APP_ROLE}', true), set_config('app.tenant_id', '{}', true), \
         set_config('app.role', '{}', true)",
        org.hyphenated(),
        actor.as_str()
    );
    if let Some(ms) = statement_timeout_ms {
        sql.push_str(&format!(", set_config('statement_timeout', '{ms}', true)"));
    }
    if let Some(ms) = idle_timeout_ms {
        sql.push_str(&format!(", set_config('idle_in_transaction_session_timeout', '{ms}', true)"));
    }
    sql
}

/// [`begin_tenant`] with this transaction's own statement timeout and idle bound (plugin
/// invocations, whose grants set them), still in one round trip with `BEGIN`. A transaction
/// left idle longer than `idle_timeout_ms` (a plugin holding its connection while it sleeps
/// or spins) is ended by the database, which frees the connection's locks and snapshot.
pub async fn begin_tenant_limited(
    pool: &PgPool,
    org: Uuid,
    actor: Actor,
    statement_timeout_ms: u64,
    idle_timeout_ms: u64,
) -> Result<TenantTx> {
    let tx = pool.begin_with(begin_sql(org, actor, Some(statement_timeout_ms), Some(idle_timeout_ms))).await?;
    Ok(TenantTx { tx, org, actor })
}

/// Switches an open (owner) transaction into a tenant's context, for work that must commit
/// atomically with platform writes; [`TenantTx::leave`] steps back out.
pub async fn enter_tenant(
    tx: Transaction<'static, Postgres>,
    org: Uuid,
    actor: Actor,
    statement_timeout_ms: Option<u64>,
) -> Result<TenantTx> {
    enter(tx, org, actor, statement_timeout_ms).await
}

/// One statement: role, tenant, actor, and the optional statement timeout.
async fn enter(
    mut tx: Transaction<'static, Postgres>,
    org: Uuid,
    actor: Actor,
    statement_timeout_ms: Option<u64>,
) -> Result<TenantTx> {
    sqlx::query(
        "SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true), \
         set_config('app.role', $3, true), \
         set_config('statement_timeout', COALESCE($4, current_setting('statement_timeout')), true)",
    )
    .bind(APP_ROLE)
    .bind(org.to_string())
    .bind(actor.as_str())
    .bind(statement_timeout_ms.map(|ms| ms.to_string()))
    .execute(&mut *tx)
    .await?;
    Ok(TenantTx { tx, org, actor })
}

impl TenantTx {
    pub fn org(&self) -> Uuid {
        self.org
    }

    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// The connection, for `db`'s tenant-table functions (which filter by [`TenantTx::org`]).
    pub(in crate::db) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    pub async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }

    /// Leaves the tenant context inside the same transaction (back to the owner role), for the
    /// few platform writes that must commit atomically with tenant writes.
    pub async fn leave(mut self) -> Result<Transaction<'static, Postgres>> {
        sqlx::query("SELECT set_config('role', 'none', true), set_config('app.tenant_id', '', true)")
            .execute(&mut *self.tx)
            .await?;
        Ok(self.tx)
    }

    /// Tells every replica to drop cached credentials and plans, when this transaction commits.
    pub async fn notify_invalidate(&mut self) -> Result<()> {
        super::notify_invalidate(&mut *self.tx).await
    }

    /// The raw connection, still inside this tenant transaction, for code outside the gateway
    /// that tests or measures the database layer itself (the row-level-security suite runs
    /// SQL `db` would never build, to prove the database refuses it on its own; the CRM
    /// benchmark's native ceiling). Gateway code never calls it.
    #[doc(hidden)]
    pub fn raw_connection(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// A transaction in the platform scope (`app.scope = 'platform'`, owner role): the
/// `platform_access` policies let it read every org's rows of the tables they name.
pub struct PlatformTx {
    tx: Transaction<'static, Postgres>,
}

/// Opens a platform-scope transaction. Only `db`'s cross-tenant reads use it.
pub async fn begin_platform(pool: &PgPool) -> Result<PlatformTx> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', true)").execute(&mut *tx).await?;
    Ok(PlatformTx { tx })
}

impl PlatformTx {
    pub(in crate::db) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}
