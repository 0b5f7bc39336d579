//! What a plugin's store holds for one invocation, split into small views so each host
//! interface sees only its own part.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::db::structured::Schema;
use crate::db::TenantTx;
use crate::plugin::bindings::context::CallContext;
use crate::plugin::cpu::CpuMeter;
use crate::plugin::grants::Grants;
use crate::plugin::host::addr::AddressPolicy;
use crate::role::Actor;

/// The store's data for one invocation.
pub struct StoreState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub context: CallContext,
    pub db: DbState,
    pub http: HttpState,
    pub log: LogState,
    /// CPU the invocation has used (see `plugin::cpu`).
    pub cpu: Arc<CpuMeter>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// `tenant-db`: the tenant, the grants, and the invocation's lazily opened transaction.
pub struct DbState {
    pub pool: PgPool,
    pub schema: Arc<Schema>,
    pub grants: Arc<Grants>,
    pub tenant: Uuid,
    pub actor: Actor,
    pub tx: Option<TenantTx>,
    /// The org's connection slots, and the one this invocation holds while its transaction
    /// is open.
    pub slots: Arc<crate::plugin::host::tenant_db::OrgSlots>,
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Set once a statement failed in the database: the transaction can only roll back.
    pub aborted: bool,
    pub statements: u32,
}

/// `outbound-http`: the allowlist and limits.
pub struct HttpState {
    pub grants: Arc<Grants>,
    /// TLS client settings, shared by every invocation.
    pub tls: Arc<rustls::ClientConfig>,
    /// Which destination addresses may be connected to, shared by every invocation.
    pub addresses: Arc<AddressPolicy>,
    pub requests: u32,
    /// Tags for the log line of a refused destination.
    pub request_id: String,
    pub org: Uuid,
    pub plugin: String,
}

/// `log`: the tags every line carries.
pub struct LogState {
    pub request_id: String,
    pub org: Uuid,
    pub plugin: String,
    pub lines: u32,
}

/// Caps linear memory (and tables) of one instance and remembers whether the cap was hit,
/// so the resulting trap can be reported as resource exhaustion rather than a bug.
pub struct MemoryLimiter {
    pub max_memory: usize,
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > 100_000 {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }
}
