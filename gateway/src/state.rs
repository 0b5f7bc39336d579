//! Shared server state: the pool, the loaded policies with their rate limiters, and caches.

use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use std::collections::HashMap;

use crate::auth::Directory;
use crate::db::structured::Schema;
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
    pub fn new(policies: PolicySet) -> Routing {
        let limits = RateLimits::new(&policies);
        Routing { policies, limits, openapi: std::sync::OnceLock::new() }
    }

    /// `GET /v1/openapi.json`'s body: built once per policy set, which is immutable.
    pub fn openapi(&self) -> bytes::Bytes {
        self.openapi.get_or_init(|| bytes::Bytes::from(serde_json::to_vec(&crate::openapi::document(&self.policies)).unwrap_or_default())).clone()
    }
}

pub struct AppState {
    pub pool: PgPool,
    /// Plugin invocations' own connections: plugins can never take the ones authentication
    /// and native routes need.
    pub plugin_pool: PgPool,
    /// Per-org plugin concurrency and CPU budgets.
    pub admission: crate::admission::Admission,
    /// Client addresses that keep presenting unknown credentials.
    pub strangers: crate::auth::Strangers,
    pub directory: Directory,
    pub runtime: Arc<Runtime>,
    /// Tenant tables and their columns, as plugins may address them.
    pub schema: Arc<Schema>,
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
        AppState {
            plugin_pool,
            metrics,
            admission: crate::admission::Admission::new(config.plugin_instances_per_org),
            strangers: Default::default(),
            pool,
            directory: Directory::default(),
            runtime,
            schema,
            routing: RwLock::new(Arc::new(Routing::new(policies))),
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
        let routing = Arc::new(Routing::new(policies));
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

    /// The active version of a plugin; a request keeps the version it started with.
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
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
