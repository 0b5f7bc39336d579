//! Start-up, shutdown and reload: the order things come up and go down in.
//!
//! Start: signals → policies → open-file limit and connection caps → database (and the embedded cluster) → bootstrap token →
//! schema and grants → plugins → listen (and the metrics listener) → registry versions → background tasks (limit sweeps,
//! plugin re-checks, `--watch`, invalidations, job workers). Stop: drain connections → stop
//! workers → close the pool → stop the cluster.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use sqlx::PgPool;
use tokio::net::TcpListener;


use crate::config::Config;
use crate::db::structured::Schema;
use crate::error::{Error, Result};
use crate::{db, embedded, jobs, ops, plugin, registry, server, webhooks};
use crate::policy::PolicySet;
use crate::state::AppState;

/// A migrated database: either the one `DATABASE_URL` names, or the embedded cluster.
pub struct Database {
    pub pool: PgPool,
    cluster: Option<embedded::Cluster>,
}

impl Database {
    pub async fn open(config: &Config) -> Result<Database> {
        let (opts, cluster) = match &config.database_url {
            Some(url) => (url.parse().map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?, None),
            None => {
                let c = embedded::Cluster::start(&config.data_dir, Default::default()).await?;
                (c.connect_options(), Some(c))
            }
        };
        let pool = db::connect(opts, config.db_max_connections).await?;
        db::migrate(&pool).await?;
        Ok(Database { pool, cluster })
    }

    /// Closes the pool, then stops the embedded cluster if this process started it.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(c) = self.cluster {
            c.stop().await;
        }
    }
}

/// `gateway serve`: runs until SIGTERM/SIGINT, then drains and stops.
pub async fn serve(config: Config) -> Result<()> {
    // Signals first, so that nothing after this point can be killed without draining.
    let shutdown = server::shutdown_signal()?;
    // Policies next: a bad policy should fail before anything starts.
    let policies = PolicySet::load(&config.policies)?;
    let connections = connection_settings(&config)?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::io(format!("creating {}", config.data_dir.display()), e))?;
    // Before anything can claim a job: the name this replica claims them under.
    let replica = replica_id(&config)?;
    let mut database = Database::open(&config).await?;
    match ops::bootstrap(&database.pool, config.bootstrap_token.as_deref()).await {
        Ok(Some(token)) => announce_bootstrap_token(&config.data_dir, &token)?,
        Ok(None) => {}
        Err(e) => {
            database.close().await;
            return Err(Error::Config(format!("bootstrap token: {}", e.message)));
        }
    }
    let (schema, plugins, runtime) = match load_plugins(&config, &database.pool, &policies).await {
        Ok(v) => v,
        Err(e) => {
            database.close().await;
            return Err(e);
        }
    };
    let secret_key = webhooks::seal::SecretKey::load(config.secret_key.as_deref(), &config.data_dir)?;
    if let Err(e) = check_key_rings(&database.pool, &replica, &secret_key).await {
        tracing::error!(error = %e, "recording this replica's secret key ring failed; rings were not compared");
    }
    let ring_refresh = tokio::spawn(refresh_key_ring(database.pool.clone(), replica.clone(), secret_key.clone()));
    let state = Arc::new(AppState::new(database.pool.clone(), policies, runtime, schema, plugins, secret_key, &config));
    // Watched from here on: the embedded cluster (restarted if it dies) and the database.
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
    let (supervisor_stop, supervisor_stopped) = tokio::sync::oneshot::channel::<()>();
    let supervisor = database
        .cluster
        .take()
        .map(|c| tokio::spawn(supervise(c, state.health.clone(), fatal_tx, supervisor_stopped)));
    let prober = tokio::spawn({
        let state = state.clone();
        async move { state.health.probe(state.pool.connect_options().as_ref().clone()).await }
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("binding {}", config.listen), e))?;
    let addr = listener.local_addr().map_err(|e| Error::io("local addr", e))?;
    state.listening_on(addr);
    // Both listeners are bound before either address is written: a start-up that fails on
    // the second leaves no address behind for the CLI or a test to find.
    let metrics_task = match config.metrics_listen {
        Some(at) => {
            let listener = TcpListener::bind(at)
                .await
                .map_err(|e| Error::io(format!("binding the metrics listener GATEWAY_METRICS_LISTEN={at}"), e))?;
            let addr = listener.local_addr().map_err(|e| Error::io("metrics local addr", e))?;
            write_atomic(&config.data_dir.join("metrics.addr"), addr.to_string().as_bytes())?;
            tracing::info!(%addr, per_org = config.metrics_per_org, "metrics listening");
            Some(tokio::spawn(crate::metrics::serve(listener, state.metrics.clone())))
        }
        None => {
            let _ = std::fs::remove_file(config.data_dir.join("metrics.addr"));
            tracing::info!("metrics listener off (GATEWAY_METRICS_LISTEN=off)");
            None
        }
    };
    write_atomic(&config.data_dir.join("gateway.addr"), addr.to_string().as_bytes())?;
    tracing::info!(%addr, routes = state.routing().policies.routes.len(), "gateway listening");

    // Active registry versions override the files named in policies.
    if let Err(e) = registry::sync(&state, None).await {
        tracing::error!(error = %e, "loading active plugin versions failed");
    }
    let sweeper = tokio::spawn(sweep_limits(state.clone()));
    let fleet = tokio::spawn(state.fleet.clone().run(state.clone(), replica.clone()));
    let resync = tokio::spawn(resync_plugins(state.clone()));
    let watcher = config.watch.then(|| tokio::spawn(watch(config.clone(), state.clone())));
    let listener_task = tokio::spawn(listen_invalidations(state.clone()));
    let ring_replica = replica.clone();
    let scheduler = crate::scheduler::Scheduler::start(state.clone(), replica.clone(), config.scheduler);
    let upkeep = crate::history::Upkeep::start(
        state.pool.clone(),
        crate::db::history::Retention { history_days: config.retention_days, idempotency_days: config.idempotency_days },
    );
    let workers = jobs::Workers::start(
        state.clone(),
        jobs::Settings {
            replica: replica.clone(),
            workers: config.job_workers,
            org_concurrency: config.job_org_concurrency,
            lease: Duration::from_secs(config.job_lease_secs.into()),
            db_connections: config.job_db_connections,
        },
    );
    let fatal = std::sync::Mutex::new(None::<String>);
    let shutdown = async {
        tokio::select! {
            _ = shutdown => {}
            Ok(why) = fatal_rx => *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(why),
        }
        state.health.set_draining();
    };
    server::serve(listener, state.clone(), connections, shutdown).await;
    if let Some(s) = scheduler {
        s.stop().await;
    }
    if let Some(w) = workers {
        w.stop(Duration::from_secs(10)).await;
    }
    upkeep.stop().await;
    sweeper.abort();
    fleet.abort();
    state.fleet.forget(&state.pool, &replica).await;
    resync.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    listener_task.abort();
    prober.abort();
    ring_refresh.abort();
    if let Err(e) = db::secrets::forget_ring(&state.pool, &ring_replica).await {
        tracing::warn!(error = %e, "forgetting this replica's key ring record failed (it expires by itself)");
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    drop(state);
    if let Some(task) = supervisor {
        let _ = supervisor_stop.send(());
        database.cluster = task.await.ok();
    }
    database.close().await;
    let _ = std::fs::remove_file(config.data_dir.join("gateway.addr"));
    let _ = std::fs::remove_file(config.data_dir.join("metrics.addr"));
    if let Some(why) = fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(Error::Embedded(why));
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Restarts after this many failed attempts in a row are given up (the gateway then exits
/// non-zero, for its own supervisor to act), waiting 1, 2, 4, … s between them.
const CLUSTER_RESTARTS: u32 = 6;

/// Watches the embedded cluster: if its server exits while the gateway runs, says so, marks
/// the gateway unhealthy and starts it again; gives up (asking the gateway to exit) after
/// [`CLUSTER_RESTARTS`] failures in a row. Hands the cluster back when told to stop.
async fn supervise(
    mut cluster: embedded::Cluster,
    health: Arc<crate::health::Health>,
    fatal: tokio::sync::oneshot::Sender<String>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> embedded::Cluster {
    loop {
        let status = tokio::select! {
            status = cluster.exited() => status,
            _ = &mut stop => return cluster,
        };
        tracing::error!(status = %status, "embedded PostgreSQL exited unexpectedly; restarting it");
        health.set_cluster_down(true);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match cluster.restart().await {
                Ok(()) => {
                    tracing::warn!(attempt, "embedded PostgreSQL restarted");
                    health.set_cluster_down(false);
                    break;
                }
                Err(e) if attempt < CLUSTER_RESTARTS => {
                    let wait = Duration::from_secs(1 << (attempt - 1));
                    tracing::error!(attempt, error = %e, retry_in_s = wait.as_secs(), "restarting the embedded PostgreSQL failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut stop => return cluster,
                    }
                }
                Err(e) => {
                    let why = format!("the embedded PostgreSQL could not be restarted after {attempt} attempts: {e}");
                    tracing::error!("{why}; stopping the gateway");
                    let _ = fatal.send(why);
                    let _ = stop.await;
                    return cluster;
                }
            }
        }
    }
}

/// Raises the open-file limit, and sizes the connection caps below it.
fn connection_settings(config: &Config) -> Result<server::Settings> {
    let nofile = server::raise_fd_limit().map_err(|e| Error::io("reading the open-file limit", e))?;
    let settings = server::Settings {
        max_connections: server::connection_cap(nofile, config.max_connections),
        max_connections_per_address: config.max_connections_per_address,
        body_idle_timeout: config.body_idle_timeout,
        body_timeout: config.body_timeout,
    };
    tracing::info!(
        nofile,
        max_connections = settings.max_connections,
        max_connections_per_address = settings.max_connections_per_address,
        body_idle_timeout_s = settings.body_idle_timeout.as_secs(),
        body_timeout_s = settings.body_timeout.as_secs(),
        "connection_limits"
    );
    Ok(settings)
}

type Loaded = (Arc<Schema>, HashMap<String, Arc<plugin::LoadedPlugin>>, Arc<plugin::Runtime>);

/// Checks every route's table grants against the live schema and compiles every declared
/// plugin. Any failure names the policy file.
async fn load_plugins(config: &Config, pool: &PgPool, policies: &PolicySet) -> Result<Loaded> {
    let schema = Arc::new(Schema::load(pool).await?);
    check_grants(policies, &schema)?;
    let tls = plugin::tls_config(config.extra_ca_file.as_deref())?;
    let runtime = plugin::Runtime::new(Some(config.data_dir.join("compiled")), tls, outbound_addresses(config)?)?;
    runtime.db_slots.set_cap(config.plugin_db_connections_per_org);
    let plugins = load_plugin_files(config, &runtime, policies, &HashMap::new()).await?;
    Ok((schema, plugins, runtime))
}

/// The destination-address rule for plugins' outbound HTTP, with the host's interface
/// addresses as they are now (one added later is not known until a restart).
fn outbound_addresses(config: &Config) -> Result<plugin::host::addr::AddressPolicy> {
    let local = plugin::host::addr::local_addresses().map_err(|e| Error::io("reading the interface addresses", e))?;
    tracing::info!(addresses = local.len(), allow_loopback = config.outbound_allow_loopback, "outbound_address_policy");
    let policy = plugin::host::addr::AddressPolicy::new(local);
    if config.outbound_allow_loopback {
        tracing::warn!("GATEWAY_OUTBOUND_ALLOW_LOOPBACK is set: plugins may reach this host's loopback through allow_private patterns (tests and development only)");
        return Ok(policy.with_loopback_allowed());
    }
    Ok(policy)
}

/// Every table a route grants must exist and be a tenant table (another plugin's table,
/// `<plugin>.<table>`, may come later).
fn check_grants(policies: &PolicySet, schema: &Schema) -> Result<()> {
    for r in &policies.routes {
        let mut tables: Vec<_> = r.grants.tables.keys().collect();
        tables.sort();
        for t in tables {
            // `<plugin>.<table>`: another plugin's table, created when that plugin's version
            // declaring it is activated (until then a call to it is `not-granted`).
            if t.contains('.') {
                continue;
            }
            if !schema.has_table(t) {
                return Err(Error::Policy {
                    file: r.source.clone(),
                    reason: format!("route {:?}: grant names table {t:?}, which does not exist or has no tenant_id", r.id),
                });
            }
        }
    }
    Ok(())
}

/// Compiles the plugin files policies declare; `keep` holds plugins to leave as they are
/// (registry versions, which take precedence over files).
async fn load_plugin_files(
    config: &Config,
    runtime: &Arc<plugin::Runtime>,
    policies: &PolicySet,
    keep: &HashMap<String, Arc<plugin::LoadedPlugin>>,
) -> Result<HashMap<String, Arc<plugin::LoadedPlugin>>> {
    let mut plugins = HashMap::new();
    let mut decls: Vec<_> = policies.plugins.values().collect();
    decls.sort_by(|a, b| a.name.cmp(&b.name));
    for d in decls {
        if let Some(k) = keep.get(&d.name) {
            plugins.insert(d.name.clone(), k.clone());
            continue;
        }
        let Some(file) = &d.file else {
            // Registry-only: the registry's active version (loaded after listening) serves it;
            // until one is activated its routes answer 503.
            tracing::info!(plugin = %d.name, "plugin_registry_only");
            continue;
        };
        let path = config.plugin_dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| Error::Policy {
            file: d.source.clone(),
            reason: format!(
                "plugin {:?}: cannot read {}: {e} (`file` is relative to GATEWAY_PLUGIN_DIR, or absolute: point it at the built component)",
                d.name,
                path.display()
            ),
        })?;
        let started = std::time::Instant::now();
        let sha = plugin::digest(&bytes);
        let from_cache = runtime.is_cached(&sha);
        let version = d.version.clone().unwrap_or_else(|| format!("sha256:{}", &sha[..12]));
        let rt = runtime.clone();
        let name = d.name.clone();
        // A plugin file is accepted once it loads (budget, imports, handler world): only then
        // is its compiled code kept.
        let loaded = tokio::task::spawn_blocking(move || rt.load_digested(&name, &version, &bytes, sha).inspect(|p| rt.keep(p)))
            .await
            .map_err(|e| Error::Plugin { plugin: d.name.clone(), reason: e.to_string() })?
            .map_err(|e| Error::Policy { file: d.source.clone(), reason: e.to_string() })?;
        tracing::info!(plugin = %d.name, version = %loaded.version, sha256 = %loaded.sha256, wit = loaded.wit_version(),
            from_cache, load_ms = started.elapsed().as_millis() as u64, "plugin_loaded");
        plugins.insert(d.name.clone(), Arc::new(loaded));
    }
    Ok(plugins)
}

/// What the watcher compares: every policy file and every plugin file they name, with
/// modification time and size.
fn watched_fingerprint(config: &Config, policies: &PolicySet) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>, u64)> {
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(&config.policies)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.extend(policies.plugins.values().filter_map(|d| d.file.as_ref()).map(|f| config.plugin_dir.join(f)));
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let (t, n) = (m.as_ref().and_then(|m| m.modified().ok()), m.map(|m| m.len()).unwrap_or(0));
            (p, t, n)
        })
        .collect()
}

/// `serve --watch`: reloads changed policy and plugin files. A change that does not load
/// (bad policy, grant on a missing table, not a component) is refused with a logged reason
/// and the running set stays.
async fn watch(config: Config, state: Arc<AppState>) {
    let mut seen = watched_fingerprint(&config, &state.routing().policies);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let now = watched_fingerprint(&config, &state.routing().policies);
        if now == seen {
            continue;
        }
        seen = now;
        match reload(&config, &state).await {
            Ok(routes) => tracing::info!(routes, "policies and plugins reloaded"),
            Err(e) => tracing::warn!(error = %e, "reload refused; keeping the running policies and plugins"),
        }
    }
}

async fn reload(config: &Config, state: &AppState) -> Result<usize> {
    let policies = PolicySet::load(&config.policies)?;
    check_grants(&policies, &state.schema())?;
    // Registry versions stay; files are recompiled only when their bytes changed.
    let active: std::collections::HashSet<String> =
        db::plugins::all_active(&state.pool).await?.into_iter().map(|(n, _, _)| n).collect();
    let mut keep = HashMap::new();
    for name in policies.plugins.keys() {
        if let Some(p) = state.plugin(name).filter(|_| active.contains(name)) {
            keep.insert(name.clone(), p);
        }
    }
    let plugins = load_plugin_files(config, &state.runtime, &policies, &keep).await?;
    let routes = policies.routes.len();
    state.replace(policies, plugins);
    Ok(routes)
}

/// Shows a freshly generated super-admin token once, and keeps it in a 0600 file.
/// `GATEWAY_REPLICA_ID`, or the name this data directory was given on its first start.
/// A replica's ring record counts as live this long after its last refresh.
const KEY_RING_LIVE: Duration = Duration::from_secs(300);
const KEY_RING_REFRESH: Duration = Duration::from_secs(60);

/// Compares this replica's key ring with the live replicas' (key ids only) and records it.
/// A difference is logged, not fatal: an error when one side cannot open what the other
/// seals (the other's newest key is missing here, or ours there), a warning for any other
/// difference (a rotation in progress).
async fn check_key_rings(pool: &PgPool, replica: &str, ring: &webhooks::seal::SecretKey) -> Result<()> {
    let ours: Vec<String> = ring.ids().iter().map(ToString::to_string).collect();
    for (other, theirs) in db::secrets::other_rings(pool, replica, KEY_RING_LIVE).await? {
        let missing_here: Vec<&str> = theirs.iter().filter(|i| !ours.contains(i)).map(String::as_str).collect();
        let missing_there: Vec<&str> = ours.iter().filter(|i| !theirs.contains(i)).map(String::as_str).collect();
        let (this_ring, other_ring) = (ours.join(","), theirs.join(","));
        let breaking = theirs.first().is_some_and(|n| !ours.contains(n)) || !theirs.contains(&ours[0]);
        if breaking {
            tracing::error!(
                other_replica = %other, missing_here = %missing_here.join(","), missing_there = %missing_there.join(","),
                this_ring = %this_ring, other_ring = %other_ring,
                "secret key rings differ between replicas: secrets one seals will not open on the other; give every replica the same GATEWAY_SECRET_KEY ring (missing_here: key ids this replica lacks)"
            );
        } else if !missing_here.is_empty() || !missing_there.is_empty() || theirs.first() != ours.first() {
            tracing::warn!(
                other_replica = %other, missing_here = %missing_here.join(","), missing_there = %missing_there.join(","),
                this_ring = %this_ring, other_ring = %other_ring,
                "secret key rings differ between replicas (each still opens what the other seals: a rotation in progress?)"
            );
        }
    }
    db::secrets::record_ring(pool, replica, &ours).await?;
    tracing::info!(key_ids = %ours.join(","), "secret key ring");
    Ok(())
}

async fn refresh_key_ring(pool: PgPool, replica: String, ring: webhooks::seal::SecretKey) {
    let ids: Vec<String> = ring.ids().iter().map(ToString::to_string).collect();
    loop {
        tokio::time::sleep(KEY_RING_REFRESH).await;
        if let Err(e) = db::secrets::record_ring(&pool, &replica, &ids).await {
            tracing::debug!(error = %e, "refreshing this replica's key ring record failed");
        }
    }
}

fn replica_id(config: &Config) -> Result<String> {
    if let Some(id) = &config.replica_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join("replica-id");
    match std::fs::read_to_string(&path) {
        Ok(text) if crate::config::valid_replica_id(text.trim()) => Ok(text.trim().to_string()),
        Ok(_) => Err(Error::Config(format!("{}: not a replica id (1 to 64 letters, digits, '-', '_' or '.')", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            write_atomic(&path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn announce_bootstrap_token(data_dir: &Path, token: &str) -> Result<()> {
    let path = data_dir.join("bootstrap-token");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    writeln!(f, "{token}").map_err(|e| Error::io("writing bootstrap token", e))?;
    // Printed to the console once, on purpose; it never goes through the log pipeline.
    println!("bootstrap super-admin token (shown once, also in {}): {token}", path.display());
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {}", path.display()), e))
}

async fn sweep_limits(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        state.routing().limits.sweep();
        state.admission.sweep();
        state.strangers.sweep();
    }
}

/// The backstop for missed notifications: re-check active plugin versions periodically.
async fn resync_plugins(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = registry::sync(&state, None).await {
            tracing::debug!(error = %e, "plugin re-check failed");
        }
    }
}

/// Follows changes made by any replica (or the CLI): clears cached credentials and plans,
/// and swaps in newly activated plugin versions.
async fn listen_invalidations(state: Arc<AppState>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&state.pool).await {
            Ok(mut l) => {
                if l.listen_all([db::INVALIDATE_CHANNEL, db::plugins::PLUGINS_CHANNEL, db::webhooks::JOBS_CHANNEL]).await.is_ok() {
                    // Anything may have changed while we were not listening.
                    state.directory.invalidate_all();
                    state.endpoints.invalidate_all();
                    state.providers.invalidate_all();
                    state.jobs_wake.notify_waiters();
                    let _ = registry::sync(&state, None).await;
                    while let Ok(n) = l.recv().await {
                        if n.channel() == db::plugins::PLUGINS_CHANNEL {
                            let (state, name) = (state.clone(), n.payload().to_string());
                            tokio::spawn(async move {
                                if let Err(e) = registry::sync(&state, Some(&name)).await {
                                    tracing::warn!(plugin = %name, error = %e, "plugin sync failed");
                                }
                            });
                        } else if n.channel() == db::webhooks::JOBS_CHANNEL {
                            state.jobs_wake.notify_waiters();
                        } else {
                            state.directory.invalidate_all();
                            state.endpoints.invalidate_all();
                            state.providers.invalidate_all();
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "invalidation listener cannot connect"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
