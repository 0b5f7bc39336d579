//! Shared server state: the pool, the loaded policies with their rate limiters, and caches.

use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use std::collections::HashMap;

use crate::auth::Directory;
use crate::db::structured::Schema;
use crate::plugin::grants::{Access, Grants};
use crate::plugin::{LoadedPlugin, Runtime};
use crate::policy::PolicySet;
use crate::ratelimit::RateLimits;
use crate::webhooks::seal::SecretKey;
use crate::webhooks::Endpoints;

/// Policies and the limiters built from them; replaced as one piece on reload.
pub struct Routing {
    pub policies: PolicySet,
    pub limits: RateLimits,
    /// The OpenAPI document of these policies, rendered on first request.
    openapi: std::sync::OnceLock<bytes::Bytes>,
}

impl Routing {
    pub fn new(policies: PolicySet, fleet: Arc<crate::ratelimit::Fleet>) -> Routing {
        let limits = RateLimits::with_fleet(&policies, fleet);
        Routing { policies, limits, openapi: std::sync::OnceLock::new() }
    }

    /// `GET /v1/openapi.json`'s body: built once per policy set, which is immutable.
    pub fn openapi(&self) -> bytes::Bytes {
        self.openapi.get_or_init(|| bytes::Bytes::from(serde_json::to_vec(&crate::openapi::document(&self.policies)).unwrap_or_default())).clone()
    }
}

/// A schema and the plugin routes' grants resolved against it, built on first use and kept
/// while both the schema and the route's policy grants are the same.
pub struct SchemaView {
    pub schema: Arc<Schema>,
    resolved: std::sync::Mutex<HashMap<(Arc<str>, String), Resolved>>,
}

/// A route's policy grants (to tell they are still the same) and what they resolved to.
type Resolved = (Arc<Grants>, Arc<Grants>);

impl SchemaView {
    fn new(schema: Arc<Schema>) -> SchemaView {
        SchemaView { schema, resolved: Default::default() }
    }

    fn grants(&self, route: &crate::policy::Route, plugin: &str) -> Arc<Grants> {
        let policy = &route.grants;
        let owned = self.schema.owned.get(plugin);
        if owned.is_none() && !policy.tables.keys().any(|t| t.contains('.')) {
            return policy.clone();
        }
        let key = (route.id.clone(), plugin.to_string());
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((from, to)) = resolved.get(&key) {
            if Arc::ptr_eq(from, policy) {
                return to.clone();
            }
        }
        let mut g = Grants::clone(policy);
        for name in policy.tables.keys().filter(|t| t.contains('.')) {
            if let Some(physical) = self.schema.owned_table(plugin, name) {
                g.physical.insert(name.clone(), physical.to_string());
            }
        }
        // The plugin's own tables, by short name, whatever the route lists.
        for (short, physical) in owned.into_iter().flatten() {
            g.tables.insert(short.clone(), Access::Write);
            g.physical.insert(short.clone(), physical.clone());
        }
        let g = Arc::new(g);
        if resolved.len() > 4096 {
            resolved.clear();
        }
        resolved.insert(key, (policy.clone(), g.clone()));
        g
    }
}

pub struct AppState {
    pub pool: PgPool,
    /// Plugin invocations' own connections: plugins can never take the ones authentication
    /// and native routes need.
    pub plugin_pool: PgPool,
    /// Per-org plugin concurrency and CPU budgets.
    pub admission: crate::admission::Admission,
    /// The rate-limit store the replicas share, and how many replicas are live.
    pub fleet: Arc<crate::ratelimit::Fleet>,
    /// Client addresses that keep presenting unknown credentials.
    pub strangers: crate::auth::Strangers,
    pub directory: Directory,
    pub runtime: Arc<Runtime>,
    /// Tenant tables and their columns, as plugins may address them; replaced when plugin
    /// activations create tables (`registry::sync`).
    schema: RwLock<Arc<SchemaView>>,
    routing: RwLock<Arc<Routing>>,
    plugins: RwLock<Arc<HashMap<String, Arc<LoadedPlugin>>>>,
    /// Serialises registry syncs (see `registry::sync`).
    pub plugin_sync: tokio::sync::Mutex<()>,
    /// Webhook endpoints as ingress resolves them (and the key that opens their secrets).
    pub endpoints: Endpoints,
    /// Orgs' provider credentials, as plugins' outbound HTTP uses them (`providers`).
    pub providers: Arc<crate::providers::Providers>,
    /// Wakes this replica's job workers (on `NOTIFY gateway_jobs`).
    pub jobs_wake: Arc<tokio::sync::Notify>,
    /// What `/healthz` and `/readyz` answer.
    pub health: Arc<crate::health::Health>,
    /// How long a native route's request may take once its body is read.
    pub request_timeout: std::time::Duration,
    /// This process's metrics (served on `GATEWAY_METRICS_LISTEN`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `GATEWAY_PUBLIC_URL`, or `http://<bound address>` once listening: where providers send
    /// webhooks.
    public_url: std::sync::OnceLock<String>,
    /// The operator console's sessions and per-org hourly counts.
    pub console: crate::console::Console,
    /// `GATEWAY_PLUGIN_DIR`: where policies' plugin files are (a deactivation loads them again).
    pub plugin_dir: std::path::PathBuf,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        policies: PolicySet,
        runtime: Arc<Runtime>,
        schema: Arc<Schema>,
        plugins: HashMap<String, Arc<LoadedPlugin>>,
        secret_key: SecretKey,
        config: &crate::config::Config,
    ) -> AppState {
        let plugin_pool = crate::db::sibling_pool(&pool, config.plugin_db_connections);
        let metrics = Arc::new(crate::metrics::Metrics::new(config.metrics_per_org));
        metrics.watch_pool("main", pool.clone());
        metrics.watch_pool("plugin", plugin_pool.clone());
        let providers = Arc::new(crate::providers::Providers::new(
            pool.clone(),
            secret_key.clone(),
            &runtime.addresses,
            config.allow_private_provider_urls,
        ));
        let fleet = Arc::new(crate::ratelimit::Fleet::new(config.ratelimit_store, config.ratelimit_url.as_deref(), &pool, metrics.clone()));
        AppState {
            plugin_pool,
            metrics,
            admission: crate::admission::Admission::new(config.plugin_instances_per_org),
            strangers: Default::default(),
            pool,
            directory: Directory::default(),
            runtime,
            schema: RwLock::new(Arc::new(SchemaView::new(schema))),
            routing: RwLock::new(Arc::new(Routing::new(policies, fleet.clone()))),
            fleet,
            plugins: RwLock::new(Arc::new(plugins)),
            plugin_sync: tokio::sync::Mutex::new(()),
            providers,
            endpoints: Endpoints::new(secret_key),
            jobs_wake: Arc::new(tokio::sync::Notify::new()),
            health: Arc::default(),
            request_timeout: std::time::Duration::from_millis(config.request_timeout_ms),
            public_url: config.public_url.clone().map(std::sync::OnceLock::from).unwrap_or_default(),
            console: Default::default(),
            plugin_dir: config.plugin_dir.clone(),
        }
    }

    /// Replaces policies (and their rate limiters) and the plugin set together; requests in
    /// flight keep what they started with.
    pub fn replace(&self, policies: PolicySet, plugins: HashMap<String, Arc<LoadedPlugin>>) {
        let routing = Arc::new(Routing::new(policies, self.fleet.clone()));
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = routing;
        *self.plugins.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(plugins);
    }

    /// Swaps in a (compiled, linked) plugin: one pointer store; in-flight requests keep the
    /// version they hold.
    pub fn set_plugin(&self, name: &str, plugin: Arc<LoadedPlugin>) {
        let mut guard = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::clone(&guard);
        next.insert(name.to_string(), plugin);
        *guard = Arc::new(next);
    }

    /// Stops serving a plugin (a registry-only plugin with no active version left).
    pub fn unset_plugin(&self, name: &str) {
        let mut guard = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        if guard.contains_key(name) {
            let mut next = HashMap::clone(&guard);
            next.remove(name);
            *guard = Arc::new(next);
        }
    }

    /// The active version of a plugin; a request keeps the version it started with.
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The live schema; an invocation keeps the one it started with.
    pub fn schema(&self) -> Arc<Schema> {
        self.schema.read().unwrap_or_else(|p| p.into_inner()).schema.clone()
    }

    /// Replaces the live schema (after plugin-owned tables were created).
    pub fn set_schema(&self, schema: Schema) {
        *self.schema.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(SchemaView::new(Arc::new(schema)));
    }

    /// The schema and grants an invocation of `plugin` through `route` runs with: the route's
    /// grants plus the plugin's own tables (write, by short name) and the physical tables of
    /// the `<plugin>.<table>` names it grants (docs/plugin-manifest.md).
    pub fn plugin_grants(&self, route: &crate::policy::Route, plugin: &str) -> (Arc<Schema>, Arc<Grants>) {
        let view = self.schema.read().unwrap_or_else(|p| p.into_inner()).clone();
        (view.schema.clone(), view.grants(route, plugin))
    }

    /// Sets the public URL from the bound address unless `GATEWAY_PUBLIC_URL` set it.
    pub fn listening_on(&self, addr: std::net::SocketAddr) {
        let _ = self.public_url.set(format!("http://{addr}"));
    }

    /// The gateway's public base URL, without a trailing `/`.
    pub fn public_url(&self) -> &str {
        self.public_url.get().map(String::as_str).unwrap_or("http://127.0.0.1:8080")
    }

    /// The current policies and their limiters; a request keeps the set it started with.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
