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
use crate::plugin::host::credentials::{CredentialSource, Pacer};
use crate::plugin::host::log::{self, OrgLogRate};
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
    /// The last grant the host refused (`table crm_events (write)`, `locks`): the reason a
    /// plugin's failure is logged with, whatever the plugin made of the refusal.
    pub refused: Option<String>,
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
    /// Where the org's provider credentials come from (`None`: nowhere, so none is added).
    pub credentials: Option<Arc<dyn CredentialSource>>,
    /// Pacing of calls with a credential, shared by every invocation.
    pub pacer: Arc<Pacer>,
}

/// `log`: the tags every line carries, and what the invocation may still write
/// (`plugin::host::log`).
pub struct LogState {
    pub request_id: String,
    pub org: Uuid,
    pub plugin: String,
    /// Lines written or dropped so far.
    pub lines: u32,
    /// Bytes of plugin text still allowed.
    pub budget: usize,
    /// Lines dropped over the invocation's lines or bytes, and over the org's rate.
    pub over_budget: u32,
    pub over_rate: u32,
    /// The org's plugin log rate, shared by every invocation.
    pub rate: Arc<OrgLogRate>,
}

impl LogState {
    pub fn new(request_id: String, org: Uuid, plugin: String, rate: Arc<OrgLogRate>) -> LogState {
        LogState { request_id, org, plugin, lines: 0, budget: log::BUDGET, over_budget: 0, over_rate: 0, rate }
    }
}

/// Caps the linear memory (and tables) of one instance and remembers whether the cap was hit,
/// so the resulting trap can be reported as resource exhaustion rather than a bug. The cap is
/// on the sum of all the instance's memories: a component with several memories gets no
/// more than one with a single memory.
pub struct MemoryLimiter {
    pub max_memory: usize,
    pub hit: bool,
    /// Bytes of all the instance's memories so far. A growth allowed here that then fails
    /// (past the memory's own declared maximum) stays counted: wasmtime also reports some
    /// failures it never asked about, so taking growth back could undercount, and a guest
    /// that keeps asking for what it cannot have only brings its own end closer.
    total: usize,
}

impl MemoryLimiter {
    pub fn new(max_memory: usize) -> MemoryLimiter {
        MemoryLimiter { max_memory, hit: false, total: 0 }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    // A new memory is announced as growing from 0 to its initial size.
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        match self.total.checked_add(grow) {
            Some(total) if total <= self.max_memory => {
                self.total = total;
                Ok(true)
            }
            _ => {
                self.hit = true;
                Ok(false)
            }
        }
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > 100_000 {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_cap_is_on_the_sum_of_an_instances_memories() {
        let mut l = MemoryLimiter::new(16 * MIB);
        // Two memories created at 6 MiB each, then one grows by 4: 16 MiB, at the cap.
        assert!(l.memory_growing(0, 6 * MIB, None).unwrap());
        assert!(l.memory_growing(0, 6 * MIB, None).unwrap());
        assert!(l.memory_growing(6 * MIB, 10 * MIB, None).unwrap());
        assert!(!l.hit);
        // One more page in either memory is past it, although each memory alone is not.
        assert!(!l.memory_growing(6 * MIB, 6 * MIB + 65536, None).unwrap());
        assert!(l.hit);
    }
}
