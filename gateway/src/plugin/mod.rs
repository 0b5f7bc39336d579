//! The plugin runtime: one wasmtime engine, one pre-linked `InstancePre` per loaded plugin,
//! and a fresh store and instance per invocation.
//!
//! A plugin reaches nothing but its imports (`host`), each of which checks the invocation's
//! [`Grants`] before any side effect. An invocation is one database transaction: committed
//! when the handler returns a response, rolled back on a handler error, trap, CPU deadline,
//! memory cap or wall-clock timeout. A failing plugin fails its own invocation and nothing else.
//!
//! This module knows nothing of HTTP routes or error codes: [`Runtime::invoke`] returns an
//! [`Outcome`], and the request pipeline (`phases::dispatch`) or the job workers decide what
//! it means to their callers.
//!
//! # Layout
//!
//! - [`bindings`]: the `bindgen!` of each served WIT version (`wit/plugin.wit`, `wit/0.1.0/`).
//! - [`compat`]: 0.1 components served by the host written for the current version.
//! - [`grants`]: what a plugin may reach and spend ([`Grants`], [`Sandbox`]).
//! - [`host`]: one module per imported WIT interface.
//! - [`state`]: the store's data, split into one small view per interface.

pub mod bindings;
pub mod budget;
pub mod compat;
pub mod cpu;
pub mod failures;
pub mod grants;
pub mod guest;
pub mod host;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::db::structured::Schema;
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::role::{Actor, Role};
pub use grants::{Access, Grants, Sandbox};
use bindings::context::{self as wit_ctx, CallContext};
use bindings::types::{HandlerError, Request, Response};
use state::{DbState, HttpState, LogState, MemoryLimiter, StoreState};

/// The epoch ticks this often; CPU deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// A guest runs at most this many ticks before it yields to the scheduler and its CPU time is
/// checked against its budget.
const SLICE_TICKS: u64 = 1;

/// Bytes of guest stdout / stderr kept per invocation (the rest is dropped).
const STDIO_CAPTURE: usize = 8 * 1024;

/// Lines of each of stdout / stderr logged per invocation (the rest are counted as dropped).
const STDIO_LINES: usize = 20;
/// Component instances that may be live at once (requests in flight, fixtures, jobs). The
/// pools' other totals are this times a component's [`budget::BUDGET`], so that only this
/// count can run out, and a component holds the same share of it whatever it contains.
pub const MAX_LIVE_INSTANCES: u32 = 512;

/// The WIT package versions this gateway serves, side by side; a component's version is the
/// one its `http-handler` export names.
pub const WIT_VERSIONS: &[&str] = &["gateway:plugin@0.1.0", "gateway:plugin@0.2.0"];

/// A compiled, linked plugin, ready to instantiate (cheap to clone: the code is shared).
#[derive(Clone)]
pub struct LoadedPlugin {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub(crate) pre: Pre,
}

/// A linked component of one of the served WIT versions.
#[derive(Clone)]
pub(crate) enum Pre {
    V0_1(bindings::v0_1::HandlerPre<StoreState>),
    V0_2(bindings::v0_2::HandlerPre<StoreState>),
}

impl Pre {
    fn component(&self) -> &Component {
        match self {
            Pre::V0_1(p) => p.instance_pre().component(),
            Pre::V0_2(p) => p.instance_pre().component(),
        }
    }

    /// Instantiates the component in `store` and calls its handler (0.1 through `compat`).
    async fn call(&self, store: &mut Store<StoreState>, req: Request) -> wasmtime::Result<Result<Response, HandlerError>> {
        use compat::Conv;
        match self {
            Pre::V0_2(pre) => {
                let handler = pre.instantiate_async(&mut *store).await?;
                handler.gateway_plugin_http_handler().call_handle(&mut *store, &req).await
            }
            Pre::V0_1(pre) => {
                let handler = pre.instantiate_async(&mut *store).await?;
                let old: bindings::v0_1::gateway::plugin::types::Request = req.conv();
                Ok(handler.gateway_plugin_http_handler().call_handle(&mut *store, &old).await?.conv())
            }
        }
    }
}

impl LoadedPlugin {
    /// The WIT package version the component was built against (`gateway:plugin@0.2.0`).
    pub fn wit_version(&self) -> &'static str {
        match self.pre {
            Pre::V0_1(_) => WIT_VERSIONS[0],
            Pre::V0_2(_) => WIT_VERSIONS[1],
        }
    }
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    /// Compiled components by sha256: an upload compiles once, its activation (or a second
    /// plugin name with the same bytes) reuses it.
    compiled: std::sync::Mutex<std::collections::HashMap<String, Component>>,
    /// On-disk cache of compiled code, keyed by sha256 and the engine's compatibility hash,
    /// so a restart or an activation does not recompile what was compiled before.
    disk_cache: Option<std::path::PathBuf>,
    engine_hash: String,
    /// TLS for outbound HTTP: web PKI roots, plus `GATEWAY_EXTRA_CA_FILE` when set.
    pub tls: Arc<rustls::ClientConfig>,
    /// Plugin-pool connections per org (`GATEWAY_PLUGIN_DB_CONNECTIONS_PER_ORG`).
    pub db_slots: Arc<host::tenant_db::OrgSlots>,
    /// Destination addresses outbound HTTP may connect to: built once at start-up, with the
    /// host's interface addresses of that moment.
    pub addresses: Arc<host::addr::AddressPolicy>,
    /// Plugin log lines per second per org (`host::log`), shared by every invocation.
    pub log_rate: Arc<host::log::OrgLogRate>,
    /// Pacing of calls with a provider credential per (org, provider), shared likewise.
    pub pacer: Arc<host::credentials::Pacer>,
    /// This replica's recent failures per plugin (`GET /v1/admin/plugins/{name}/failures`).
    pub failures: Arc<failures::Failures>,
}

/// Builds the outbound TLS client configuration (ring provider, safe defaults).
pub fn tls_config(extra_ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Config(format!("GATEWAY_EXTRA_CA_FILE {}: {e}", path.display())))?;
        for c in certs {
            let c = c.map_err(|e| Error::Config(format!("GATEWAY_EXTRA_CA_FILE {}: {e}", path.display())))?;
            roots.add(c).map_err(|e| Error::Config(format!("GATEWAY_EXTRA_CA_FILE {}: {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

const COMPILED_CACHE_MAX: usize = 64;

/// The hex SHA-256 of a component: its identity in the registry and in the compiled caches.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Runtime {
    /// Builds the engine (pooling allocator, copy-on-write images, epoch interruption) and
    /// starts the epoch ticker.
    pub fn new(
        disk_cache: Option<std::path::PathBuf>,
        tls: Arc<rustls::ClientConfig>,
        addresses: host::addr::AddressPolicy,
    ) -> Result<Arc<Runtime>> {
        let mut pool = PoolingAllocationConfig::new();
        let per = budget::BUDGET;
        // The per-component limits repeat the budget `load` checks first (with a clearer
        // message): they are the backstop for what the budget cannot see statically.
        pool.total_component_instances(MAX_LIVE_INSTANCES)
            .total_core_instances(MAX_LIVE_INSTANCES * per.core_instances)
            .total_memories(MAX_LIVE_INSTANCES * per.memories)
            .total_tables(MAX_LIVE_INSTANCES * per.tables)
            .max_memory_size(grants::MAX_PLUGIN_MEMORY)
            .max_core_instances_per_component(per.core_instances)
            .max_memories_per_component(per.memories)
            .max_tables_per_component(per.tables)
            .max_memories_per_module(per.module_memories)
            .max_tables_per_module(per.module_tables)
            .table_elements(100_000)
            // Reset slots by rewriting only the pages an instance dirtied (PAGEMAP_SCAN, Linux
            // 6.7+) instead of madvise + a page fault per page on the next request: on the
            // hot path this is the difference between ~15 and ~75 µs per invocation.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(16 * 1024 * 1024)
            .table_keep_resident(1024 * 1024)
            .async_stack_keep_resident(2 * 1024 * 1024)
            // What still has to be returned to the kernel is returned in batches: every
            // madvise is a TLB shootdown across cores, which in a VM is an expensive exit.
            .decommit_batch_size(64);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .epoch_interruption(true)
            .wasm_component_model(true)
            // No plugin uses the component model's async ABI (the WIT worlds are synchronous,
            // host functions run on fibers), and a store without its task bookkeeping saves
            // every invocation a guest task's set-up and clean-up.
            .concurrency_support(false)
            // Plenty for the pool's slots without reserving 4 GiB of address space each.
            .memory_reservation(grants::MAX_PLUGIN_MEMORY as u64)
            .memory_guard_size(64 * 1024 * 1024)
            .max_wasm_stack(1024 * 1024);
        let engine = Engine::new(&config).map_err(|e| plugin_err("engine", e))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| plugin_err("linker", e))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::io("epoch thread", e))?;
        let engine_hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        if let Some(dir) = &disk_cache {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Arc::new(Runtime {
            engine,
            linker,
            compiled: Default::default(),
            disk_cache,
            engine_hash,
            tls,
            db_slots: Arc::new(host::tenant_db::OrgSlots::new(4)),
            addresses: Arc::new(addresses),
            log_rate: Default::default(),
            pacer: Default::default(),
            failures: Default::default(),
        }))
    }

    /// Compiles and links a component. Refuses anything that is not a component of the
    /// `handler` world, that is over the resource budget, or that imports what plugins may
    /// not use. Caches nothing: once the caller has accepted the plugin, [`Runtime::keep`].
    pub fn load(&self, name: &str, version: &str, bytes: &[u8]) -> Result<LoadedPlugin> {
        self.load_digested(name, version, bytes, digest(bytes))
    }

    /// [`Runtime::load`] for bytes whose [`digest`] the caller already has.
    pub fn load_digested(&self, name: &str, version: &str, bytes: &[u8], sha256: String) -> Result<LoadedPlugin> {
        let refuse = |reason: String| Error::Plugin { plugin: name.to_string(), reason };
        let fail = |what: &str, e: wasmtime::Error| refuse(format!("{what}: {e:#}"));
        // Before compiling: what is over budget is refused without spending a compilation.
        // A core module, or bytes that do not parse: the compiler says what is wrong.
        if let Ok(Some(usage)) = budget::Usage::of(bytes) {
            if let Some(over) = usage.exceeds(&budget::BUDGET) {
                return Err(refuse(over));
            }
        }
        let cached = self.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(&sha256).cloned();
        let component = match cached.or_else(|| self.load_cached(&sha256)) {
            Some(c) => c,
            None => Component::new(&self.engine, bytes).map_err(|e| fail("not a valid component", e))?,
        };
        let ty = component.component_type();
        let refused: Vec<&str> = ty.imports(&self.engine).map(|(n, _)| n).filter(|n| !host::may_import(n)).collect();
        if !refused.is_empty() {
            return Err(refuse(format!(
                "imports {}, which plugins may not use (a plugin may import gateway:plugin interfaces and, of WASI, \
                 only wasi:io, wasi:cli, wasi:clocks and wasi:random)",
                refused.join(", ")
            )));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail("imports something this gateway does not provide", e))?;
        // The version is the one the handler export names; the imports were linked above
        // whichever versions they name.
        let exports = |v: &str| ty.exports(&self.engine).any(|(n, _)| n == format!("gateway:plugin/http-handler@{v}"));
        let pre = if exports("0.2.0") {
            Pre::V0_2(bindings::v0_2::HandlerPre::new(pre).map_err(|e| fail("does not export the handler world's http-handler", e))?)
        } else if exports("0.1.0") {
            Pre::V0_1(bindings::v0_1::HandlerPre::new(pre).map_err(|e| fail("does not export the handler world's http-handler", e))?)
        } else {
            return Err(refuse(format!(
                "does not export the handler world's http-handler of a served version ({})",
                WIT_VERSIONS.join(", ")
            )));
        };
        Ok(LoadedPlugin { name: name.to_string(), version: version.to_string(), sha256, pre })
    }

    /// Keeps an accepted plugin's compiled code (in memory and, with a cache directory, on
    /// disk), so that its activation, another name with the same bytes, or a restart does not
    /// compile it again. Only accepted code is kept: a refused upload leaves nothing behind.
    pub fn keep(&self, plugin: &LoadedPlugin) {
        let component = plugin.pre.component();
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if cache.contains_key(&plugin.sha256) {
            return;
        }
        if cache.len() >= COMPILED_CACHE_MAX {
            cache.clear();
        }
        cache.insert(plugin.sha256.clone(), component.clone());
        drop(cache);
        if self.cache_path(&plugin.sha256).is_some_and(|p| !p.exists()) {
            self.store_cached(&plugin.sha256, component);
        }
    }
}

impl Runtime {
    fn cache_path(&self, sha256: &str) -> Option<std::path::PathBuf> {
        self.disk_cache.as_ref().map(|d| d.join(format!("{sha256}-{}.cwasm", self.engine_hash)))
    }

    fn load_cached(&self, sha256: &str) -> Option<Component> {
        let path = self.cache_path(sha256)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: files in the cache directory are written only by `store_cached` below, from our
        // own compilation with this engine (the file name carries the engine's compatibility
        // hash), in a directory only this user can write.
        match unsafe { Component::deserialize_file(&self.engine, &path) } {
            Ok(c) => {
                tracing::debug!(sha256, "compiled component loaded from disk cache");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(sha256, error = %e, "discarding unusable compiled cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn store_cached(&self, sha256: &str, c: &Component) {
        let Some(path) = self.cache_path(sha256) else { return };
        let tmp = path.with_extension("tmp");
        let written = c.serialize().map_err(|e| e.to_string()).and_then(|bytes| {
            std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)).map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            tracing::warn!(sha256, error = %e, "could not write compiled cache entry");
        }
    }

    /// Whether compiled code for these bytes is already cached (memory or disk).
    pub fn is_cached(&self, sha256: &str) -> bool {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).contains_key(sha256)
            || self.cache_path(sha256).is_some_and(|p| p.exists())
    }
}

fn plugin_err(what: &str, e: wasmtime::Error) -> Error {
    Error::Plugin { plugin: "-".into(), reason: format!("{what}: {e:#}") }
}

/// Runs inside the invocation's transaction just before it commits (only when the plugin
/// opened one and answered, with that answer): `Ok(true)` commits, `Ok(false)` rolls
/// everything back. Lets a caller make its own bookkeeping part of the plugin's all-or-nothing
/// transaction, and decide by the answer (a job runner recording a 429 differently).
pub type BeforeCommit<'a> = Box<
    dyn for<'c> FnOnce(&'c mut TenantTx, &'c Response) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'c>>
        + Send
        + 'a,
>;

/// Everything one invocation needs: who it runs for, what it may reach, the request.
pub struct Invocation<'a> {
    /// Names the invocation in the guest's call context and in logs (a route id).
    pub label: &'a str,
    pub grants: Arc<Grants>,
    pub sandbox: Sandbox,
    pub pool: &'a PgPool,
    pub schema: Arc<Schema>,
    pub org: Uuid,
    pub user: Option<Uuid>,
    pub role: Role,
    pub request_id: &'a str,
    pub request: Request,
    pub before_commit: Option<BeforeCommit<'static>>,
    /// Where the org's provider credentials come from, for the grants' `credentials`
    /// (`host::credentials`); `None`: no credential is ever added.
    pub credentials: Option<Arc<dyn host::credentials::CredentialSource>>,
}

/// An [`Invocation`] with everything owned, so it can run on the guest runtime.
struct Owned {
    label: String,
    grants: Arc<Grants>,
    sandbox: Sandbox,
    pool: PgPool,
    schema: Arc<Schema>,
    org: Uuid,
    user: Option<Uuid>,
    role: Role,
    request_id: String,
    request: Request,
    before_commit: Option<BeforeCommit<'static>>,
    credentials: Option<Arc<dyn host::credentials::CredentialSource>>,
}

/// How an invocation ended. Only [`Outcome::Response`] committed anything; every other
/// outcome rolled the invocation's transaction back.
#[derive(Debug)]
pub enum Outcome {
    /// The handler answered (and its transaction, if it opened one, committed).
    Response(Response),
    /// The handler returned one of its error variants.
    HandlerError(HandlerError),
    /// The guest trapped (a bug, a panic, an invalid operation).
    Trap(String),
    /// Guest time passed the sandbox's CPU budget.
    CpuDeadline,
    /// The guest tried to grow memory past the sandbox's cap.
    MemoryExhausted,
    /// Wall time passed the sandbox's timeout.
    WallTimeout,
    /// The shared instance pool had no room for another instance (every org's share is
    /// below the pool, so this is the whole gateway being busy, not the plugin failing).
    Busy,
    /// The handler answered after one of its statements failed: nothing may commit.
    AnsweredAfterFailedStatement,
    /// The caller's [`BeforeCommit`] hook refused to commit.
    CommitRefused,
    /// The database failed while committing (or in the caller's hook).
    Database(Error),
}

impl Outcome {
    /// A short, stable name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Response(_) => "response",
            Outcome::HandlerError(_) => "handler_error",
            Outcome::Trap(_) => "trap",
            Outcome::CpuDeadline => "cpu_deadline",
            Outcome::MemoryExhausted => "memory",
            Outcome::WallTimeout => "wall_timeout",
            Outcome::Busy => "busy",
            Outcome::AnsweredAfterFailedStatement => "answered_after_failed_statement",
            Outcome::CommitRefused => "commit_refused",
            Outcome::Database(_) => "database",
        }
    }
}

/// How the guest's call itself ended, before the transaction is settled.
enum Ended {
    Response(Response),
    HandlerError(HandlerError),
    Trap(wasmtime::Error),
    WallTimeout,
}

impl Runtime {
    /// Runs one invocation (on the guest runtime once it has used more than a sliver of CPU,
    /// see [`guest::place`]) and says how it ended.
    pub async fn invoke(&self, plugin: &LoadedPlugin, inv: Invocation<'_>) -> Outcome {
        self.invoke_metered(plugin, inv).await.0
    }

    /// [`Runtime::invoke`], also returning the CPU time the invocation used.
    pub async fn invoke_metered(&self, plugin: &LoadedPlugin, inv: Invocation<'_>) -> (Outcome, Duration) {
        let inv = Owned {
            label: inv.label.to_string(),
            grants: inv.grants,
            sandbox: inv.sandbox,
            pool: inv.pool.clone(),
            schema: inv.schema,
            org: inv.org,
            user: inv.user,
            role: inv.role,
            request_id: inv.request_id.to_string(),
            request: inv.request,
            before_commit: inv.before_commit,
            credentials: inv.credentials,
        };
        let (engine, tls, plugin) = (self.engine.clone(), self.tls.clone(), plugin.clone());
        let shared = Shared {
            slots: self.db_slots.clone(),
            addresses: self.addresses.clone(),
            log_rate: self.log_rate.clone(),
            pacer: self.pacer.clone(),
            failures: self.failures.clone(),
        };
        let meter = Arc::new(cpu::CpuMeter::default());
        let task = guest::place(run(engine, tls, shared, plugin, inv, meter.clone()), meter.clone());
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Trap(format!("invocation task failed: {e}")),
        };
        (outcome, meter.total())
    }
}

/// The pieces of `Runtime` every invocation shares.
struct Shared {
    slots: Arc<host::tenant_db::OrgSlots>,
    addresses: Arc<host::addr::AddressPolicy>,
    log_rate: Arc<host::log::OrgLogRate>,
    pacer: Arc<host::credentials::Pacer>,
    failures: Arc<failures::Failures>,
}

/// One invocation, start to end: a fresh store and instance, the guest's call under its CPU
/// and wall-clock limits, then its transaction settled.
async fn run(
    engine: Engine,
    tls: Arc<rustls::ClientConfig>,
    shared: Shared,
    plugin: LoadedPlugin,
    inv: Owned,
    meter: Arc<cpu::CpuMeter>,
) -> Outcome {
    {
        let sandbox = inv.sandbox;
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        // No preopens, no environment, no network, no inherited stdio: what the guest prints
        // is captured (bounded) and goes to the log, tagged like `log.emit` lines.
        let stdout = MemoryOutputPipe::new(STDIO_CAPTURE);
        let stderr = MemoryOutputPipe::new(STDIO_CAPTURE);
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        let state = StoreState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(sandbox.memory),
            context: CallContext {
                org_id: inv.org.to_string(),
                user_id: inv.user.map(|u| u.to_string()),
                role: match inv.role {
                    Role::Member => wit_ctx::Role::Member,
                    Role::Admin => wit_ctx::Role::Admin,
                    Role::SuperAdmin => wit_ctx::Role::SuperAdmin,
                },
                request_id: inv.request_id.clone(),
                route_id: inv.label.clone(),
                plugin_name: plugin.name.clone(),
                plugin_version: plugin.version.clone(),
            },
            db: DbState {
                pool: inv.pool.clone(),
                schema: inv.schema.clone(),
                grants: inv.grants.clone(),
                tenant: inv.org,
                actor: Actor::Caller(inv.role),
                tx: None,
                slots: shared.slots,
                slot: None,
                aborted: false,
                statements: 0,
                refused: None,
            },
            http: HttpState {
                grants: inv.grants.clone(),
                tls,
                addresses: shared.addresses,
                requests: 0,
                request_id: inv.request_id.clone(),
                org: inv.org,
                plugin: plugin.name.clone(),
                credentials: inv.credentials.clone(),
                pacer: shared.pacer,
            },
            log: LogState::new(inv.request_id.clone(), inv.org, plugin.name.clone(), shared.log_rate),
            cpu: meter.clone(),
        };
        let mut store = Store::new(&engine, state);
        store.limiter(|s| &mut s.limiter);
        // The epoch fires every EPOCH_TICK. A guest that runs for a time slice yields to the
        // scheduler (so it never holds a worker thread for long), and at each slice its CPU
        // time is compared with the budget.
        let cpu = sandbox.cpu;
        let ticks = |left: Duration| (left.as_micros() / EPOCH_TICK.as_micros()).clamp(1, SLICE_TICKS as u128) as u64;
        store.set_epoch_deadline(ticks(cpu));
        store.epoch_deadline_callback(move |ctx| {
            let used = ctx.data().cpu.used();
            if used >= cpu {
                return Err(wasmtime::Error::new(CpuDeadline));
            }
            Ok(wasmtime::UpdateDeadline::Yield(ticks(cpu - used)))
        });

        let call = plugin.pre.call(&mut store, inv.request);
        let started = tokio::time::Instant::now();
        let ended = match tokio::time::timeout(sandbox.timeout, cpu::Metered::new(call, meter)).await {
            Ok(Ok(Ok(resp))) => Ended::Response(resp),
            Ok(Ok(Err(e))) => Ended::HandlerError(e),
            Ok(Err(trap)) => Ended::Trap(trap),
            Err(_) => Ended::WallTimeout,
        };
        // Stdio lines share the invocation's log budget and the org's log rate with
        // `log.emit`, and like its lines carry the plugin's text as a value after the tags.
        // A Rust guest's panic message (`panicked at src/lib.rs:1:2:` and the message on the
        // next line), which says more than the trap it causes.
        let panic = {
            let bytes = stderr.contents();
            let text = String::from_utf8_lossy(&bytes);
            let mut lines = text.lines().skip_while(|l| !l.contains("panicked at"));
            lines.next().map(|at| {
                let at = at.trim_start_matches(|c| c != 'p').trim_end_matches(':');
                match lines.next() {
                    Some(msg) => format!("{at}: {msg}"),
                    None => at.to_string(),
                }
            })
        };
        let log = &mut store.data_mut().log;
        for (stream, pipe) in [("stdout", &stdout), ("stderr", &stderr)] {
            let bytes = pipe.contents();
            for (i, line) in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.trim().is_empty()).enumerate() {
                if i >= STDIO_LINES {
                    log.drop_unread();
                } else if log.admit(line.len()) {
                    tracing::info!(target: "gateway::plugin", request_id = %inv.request_id, org_id = %inv.org,
                        plugin = %plugin.name, stream, text = line, "plugin_stdio");
                }
            }
        }
        if log.dropped() > 0 {
            // Not a plugin line: it goes to the lossless writer, once per invocation.
            tracing::warn!(target: "gateway::plugin_log", request_id = %inv.request_id, org_id = %inv.org,
                plugin = %plugin.name, dropped = log.dropped(), over_budget = log.over_budget, over_rate = log.over_rate,
                "plugin_log_lines_dropped");
        }
        let memory_hit = store.data().limiter.hit;
        let db = &mut store.data_mut().db;
        let (tx, aborted) = (db.tx.take(), db.aborted);
        // Settling waits on the database: it gets what is left of the wall clock, and at least
        // SETTLE_GRACE, so a database that stops answering cannot hold the invocation.
        let settle_by = (started + sandbox.timeout).max(tokio::time::Instant::now() + SETTLE_GRACE);
        let outcome = match tokio::time::timeout_at(settle_by, settle(ended, tx, aborted, memory_hit, inv.before_commit)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // The transaction (dropped with the future) is rolled back by the pool if the
                // database comes back; a COMMIT already sent may still have been applied.
                tracing::warn!(request_id = %inv.request_id, org_id = %inv.org, plugin = %plugin.name,
                    "plugin_settle_timed_out");
                Outcome::Database(Error::Deadline("settling the plugin's transaction"))
            }
        };
        // Why an invocation failed, for the log and this replica's failure ring. A plugin's
        // `failed` answer is a 502 like a trap; busy is the gateway's, not the plugin's.
        let detail: Option<(&str, String)> = match &outcome {
            Outcome::Response(_) | Outcome::Busy => None,
            Outcome::HandlerError(HandlerError::Failed(m)) => Some(("handler_failed", m.clone())),
            Outcome::HandlerError(_) => None,
            Outcome::Trap(detail) => Some((outcome.kind(), match &panic {
                Some(p) => format!("{detail}; {p}"),
                None => detail.clone(),
            })),
            Outcome::Database(e) => Some((outcome.kind(), if matches!(e, Error::Db(_)) { "database error" } else { "bookkeeping error" }.into())),
            _ => Some((outcome.kind(), String::new())),
        };
        if let Some((kind, detail)) = detail {
            let not_granted = store.data().db.refused.clone();
            let failure = failures::Failure {
                at: chrono::Utc::now(),
                request_id: inv.request_id.clone(),
                org_id: inv.org,
                route: inv.label.clone(),
                version: plugin.version.clone(),
                outcome: kind.to_string(),
                detail: failures::bound(&detail),
                not_granted,
            };
            tracing::warn!(request_id = %inv.request_id, org_id = %inv.org, plugin = %plugin.name,
                version = %plugin.version, route = %inv.label, outcome = kind, detail = %failure.detail,
                not_granted = failure.not_granted.as_deref(), "plugin_failed");
            shared.failures.record(&plugin.name, failure);
        }
        outcome
    }
}

/// The least time an invocation's transaction gets to commit or roll back, even when the
/// guest used its whole wall clock.
const SETTLE_GRACE: Duration = Duration::from_secs(2);

/// Commits the invocation's transaction when the handler answered (after the caller's hook),
/// rolls it back otherwise, and says how the invocation ended.
async fn settle(
    ended: Ended,
    tx: Option<TenantTx>,
    aborted: bool,
    memory_hit: bool,
    before_commit: Option<BeforeCommit<'_>>,
) -> Outcome {
    let resp = match ended {
        Ended::Response(resp) => resp,
        other => {
            if let Some(tx) = tx {
                let _ = tx.rollback().await;
            }
            return match other {
                Ended::HandlerError(e) => Outcome::HandlerError(e),
                Ended::Trap(_) if memory_hit => Outcome::MemoryExhausted,
                Ended::Trap(e) if e.downcast_ref::<CpuDeadline>().is_some() || e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                    Outcome::CpuDeadline
                }
                Ended::Trap(e) if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => Outcome::Busy,
                // The root cause (`wasm trap: …`, a host error), not the wasm backtrace.
                Ended::Trap(e) => Outcome::Trap(e.root_cause().to_string()),
                Ended::WallTimeout => Outcome::WallTimeout,
                Ended::Response(_) => unreachable!("handled above"),
            };
        }
    };
    let Some(mut tx) = tx else { return Outcome::Response(resp) };
    if aborted {
        let _ = tx.rollback().await;
        return Outcome::AnsweredAfterFailedStatement;
    }
    if let Some(hook) = before_commit {
        match hook(&mut tx, &resp).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = tx.rollback().await;
                return Outcome::CommitRefused;
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Outcome::Database(e);
            }
        }
    }
    match tx.commit().await {
        Ok(()) => Outcome::Response(resp),
        Err(e) => Outcome::Database(e),
    }
}

impl Runtime {
    /// Times the phases of one bare invocation (store, instantiate, call, drop) for the
    /// dispatch benchmark; no database, default sandbox.
    #[doc(hidden)]
    pub async fn phase_times(&self, plugin: &LoadedPlugin, state: StoreState, req: &Request) -> [Duration; 4] {
        let t0 = std::time::Instant::now();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1000);
        let t1 = std::time::Instant::now();
        let Pre::V0_2(pre) = &plugin.pre else { panic!("the dispatch benchmark times a 0.2 component") };
        let h = pre.instantiate_async(&mut store).await.unwrap();
        let t2 = std::time::Instant::now();
        let r = h.gateway_plugin_http_handler().call_handle(&mut store, req).await.unwrap();
        let t3 = std::time::Instant::now();
        drop(store);
        std::hint::black_box(r.ok());
        let t4 = std::time::Instant::now();
        [t1 - t0, t2 - t1, t3 - t2, t4 - t3]
    }
}

/// The trap raised when a plugin's guest time passes its CPU deadline.
#[derive(Debug)]
struct CpuDeadline;

impl std::fmt::Display for CpuDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CPU deadline exceeded")
    }
}

impl std::error::Error for CpuDeadline {}
