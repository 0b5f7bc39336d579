//! What the replicas of one deployment share for their limits: a store that holds each
//! bucket's GCRA state for all of them (PostgreSQL's `ratelimit_gcra`, migration 0011, or Redis
//! with a Lua script when `GATEWAY_RATELIMIT_URL` is set), and a heartbeat in the database that
//! says how many replicas are live.
//!
//! Requests never wait on the store in the common case: a replica leases a few tokens of a
//! bucket at a time (see `Bucket::check_shared`) and spends them locally. When the store
//! cannot be reached (an error or no answer within [`STORE_TIMEOUT`]) every replica falls
//! back to its share of each limit, the limit divided by the live replicas, says so once in
//! the log (warn) and in `gateway_ratelimit_store_up`, and probes the store every
//! [`HEARTBEAT`] until it answers again.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::db::ratelimit::{self as store, Lease};
use crate::metrics::Metrics;

/// How often a replica beats (and, with the store down, probes it).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica with no heartbeat for this long is no longer counted.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(5);
/// The longest a lease may take before the store counts as unreachable. The database also
/// cancels the statement after [`STORE_STATEMENT_TIMEOUT_MS`], so a blocked store holds no
/// connections.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(1);
const STORE_STATEMENT_TIMEOUT_MS: u32 = 500;
/// How often a replica drops full buckets from the store, in heartbeats.
const SWEEP_EVERY: u32 = 60;

/// `GATEWAY_RATELIMIT_STORE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreSetting {
    /// Each replica counts alone (as before shared limits): N replicas admit N × the limit.
    Local,
    /// The default: the shared store while more than one replica is live, else exactly the
    /// local limiter.
    Auto,
    /// Always the database's store, even alone.
    Postgres,
    /// Always Redis (`GATEWAY_RATELIMIT_URL`), even alone.
    Redis,
}

impl StoreSetting {
    /// `GATEWAY_RATELIMIT_STORE`, knowing whether `GATEWAY_RATELIMIT_URL` is set.
    pub fn parse(v: Option<&str>, has_url: bool) -> Result<StoreSetting, String> {
        match v {
            None | Some("auto") => Ok(StoreSetting::Auto),
            Some("local") => Ok(StoreSetting::Local),
            Some("postgres") => Ok(StoreSetting::Postgres),
            Some("redis") if has_url => Ok(StoreSetting::Redis),
            Some("redis") => Err("GATEWAY_RATELIMIT_STORE=redis needs GATEWAY_RATELIMIT_URL=redis://host:port/db".into()),
            Some(v) => Err(format!("GATEWAY_RATELIMIT_STORE {v:?}: use local, auto, postgres or redis")),
        }
    }
}

/// Where shared buckets live.
enum Store {
    /// The store's own small pool (its statements time out on the server too).
    Postgres(PgPool),
    /// A multiplexed connection that reconnects by itself.
    Redis(redis::aio::ConnectionManager),
}

/// GCRA lease in Redis, with the server's `TIME` as the only clock (see
/// `db::ratelimit::lease` for the same in SQL). Floats go back as strings: Lua numbers would be
/// truncated to integers.
const LEASE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, tolerance, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local g = math.floor((now + tolerance - tat) / interval + 1e-6)
if g > want then g = want end
if g < 0 then g = 0 end
tat = tat + g * interval
if g > 0 then
  redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
return {g, string.format('%.6f', tat), string.format('%.6f', now)}
"#;

fn redis_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(LEASE_LUA))
}

impl Store {
    async fn lease(&self, key: &str, interval: f64, tolerance: f64, want: u32) -> Result<Lease, String> {
        match self {
            Store::Postgres(pool) => store::lease(pool, key, interval, tolerance, want).await.map_err(|e| crate::error::loggable(&e)),
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                let (granted, tat, now): (u32, String, String) = redis_script()
                    .key(format!("gw:rl:{key}"))
                    .arg(interval)
                    .arg(tolerance)
                    .arg(want)
                    .invoke_async(&mut conn)
                    .await
                    // The kind only: a Redis error's text may quote the URL.
                    .map_err(|e| format!("redis: {:?}", e.kind()))?;
                let num = |s: &str| s.parse::<f64>().map_err(|_| "redis: the lease script answered something else".to_string());
                Ok(Lease { granted, tat: num(&tat)?, now: num(&now)? })
            }
        }
    }
}

fn postgres_store(pool: &PgPool) -> PgPool {
    let options = PgConnectOptions::clone(&pool.connect_options()).options([("statement_timeout", STORE_STATEMENT_TIMEOUT_MS.to_string())]);
    PgPoolOptions::new()
        .max_connections(8)
        .min_connections(0)
        .acquire_timeout(STORE_TIMEOUT)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options)
}

/// Connects lazily: a Redis that is down at start-up is an outage like any other.
fn redis_store(url: &str) -> Option<Store> {
    let client = redis::Client::open(url).ok()?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(STORE_TIMEOUT))
        .set_response_timeout(Some(STORE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    redis::aio::ConnectionManager::new_lazy_with_config(client, config).ok().map(Store::Redis)
}

/// Whether `url` is a URL the Redis store can use (checked at start-up).
pub fn valid_redis_url(url: &str) -> bool {
    redis::Client::open(url).is_ok()
}

pub struct Fleet {
    setting: StoreSetting,
    store: Option<Store>,
    up: AtomicBool,
    replicas: AtomicU32,
    metrics: Option<Arc<Metrics>>,
}

impl Fleet {
    /// Per-process limits only (unit tests, and `GATEWAY_RATELIMIT_STORE=local`).
    pub fn local() -> Fleet {
        Fleet { setting: StoreSetting::Local, store: None, up: AtomicBool::new(false), replicas: AtomicU32::new(1), metrics: None }
    }

    /// A fleet on the database of `pool` (or on Redis at `redis_url`), as `setting` says.
    pub fn new(setting: StoreSetting, redis_url: Option<&str>, pool: &PgPool, metrics: Arc<Metrics>) -> Fleet {
        let store = match (setting, redis_url) {
            (StoreSetting::Local, _) => None,
            (StoreSetting::Auto | StoreSetting::Redis, Some(url)) => redis_store(url),
            _ => Some(Store::Postgres(postgres_store(pool))),
        };
        metrics.ratelimit_store_up(store.is_some());
        Fleet { setting, store, up: AtomicBool::new(true), replicas: AtomicU32::new(1), metrics: Some(metrics) }
    }

    pub fn setting(&self) -> StoreSetting {
        self.setting
    }

    /// Whether limits are counted in the shared store now.
    pub fn shared(&self) -> bool {
        match self.setting {
            StoreSetting::Local => false,
            StoreSetting::Auto => self.replicas.load(Ordering::Relaxed) > 1 && self.up.load(Ordering::Relaxed),
            StoreSetting::Postgres | StoreSetting::Redis => self.up.load(Ordering::Relaxed),
        }
    }

    /// What a replica counting alone divides each limit by: 1 when limits are per process
    /// by setting, else the live replicas (1 for a replica alone: exactly the old limiter).
    pub fn share(&self) -> u32 {
        match self.setting {
            StoreSetting::Local => 1,
            _ => self.replicas.load(Ordering::Relaxed).max(1),
        }
    }

    /// Live replicas, as the last heartbeat saw them.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    /// Leases up to `want` tokens of the shared bucket `key`; `None` when the store did not
    /// answer (the caller counts locally instead).
    pub async fn lease(&self, key: &str, interval: f64, tolerance: f64, want: u32) -> Option<Lease> {
        let store = self.store.as_ref()?;
        match tokio::time::timeout(STORE_TIMEOUT, store.lease(key, interval, tolerance, want)).await {
            Ok(Ok(l)) => Some(l),
            Ok(Err(e)) => {
                self.failed(&e);
                None
            }
            Err(_) => {
                self.failed("no answer in time");
                None
            }
        }
    }

    fn failed(&self, why: &str) {
        if let Some(m) = &self.metrics {
            m.ratelimit_store_error();
        }
        if self.up.swap(false, Ordering::Relaxed) {
            let replicas = self.replicas();
            tracing::warn!(
                error = why,
                replicas,
                "shared rate-limit store unreachable: this replica now admits its share of each limit (limit / {replicas} live replicas) until it answers again"
            );
            if let Some(m) = &self.metrics {
                m.ratelimit_store_up(false);
            }
        }
    }

    /// Beats every [`HEARTBEAT`] (keeping the live-replica count and the plugin caps' share
    /// current) and, while the store is down, probes it; runs until aborted.
    pub async fn run(self: Arc<Self>, state: Arc<crate::state::AppState>, replica: String) {
        let (main, admission) = (&state.pool, &state.admission);
        if self.setting == StoreSetting::Local {
            return;
        }
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = 0u32;
        loop {
            tick.tick().await;
            beats = beats.wrapping_add(1);
            match tokio::time::timeout(STORE_TIMEOUT * 2, store::heartbeat(main, &replica, HEARTBEAT_STALE.as_secs_f64())).await {
                Ok(Ok(n)) => {
                    if self.replicas.swap(n, Ordering::Relaxed) != n {
                        tracing::info!(replicas = n, "live replicas changed");
                    }
                    admission.set_share(n);
                    if let Some(m) = &self.metrics {
                        m.live_replicas(n);
                    }
                }
                // The last count stands: with the database away, so is every other replica's
                // heartbeat, and nothing says they stopped.
                Ok(Err(e)) => tracing::debug!(error = %crate::error::loggable(&e), "replica heartbeat failed"),
                Err(_) => tracing::debug!("replica heartbeat timed out"),
            }
            let Some(store) = &self.store else { continue };
            if !self.up.load(Ordering::Relaxed) {
                // A lease of nothing takes the same row lock and path as a real one.
                let probe = format!("probe/{replica}");
                if let Ok(Ok(_)) = tokio::time::timeout(STORE_TIMEOUT, store.lease(&probe, 1.0, 1.0, 0)).await {
                    self.up.store(true, Ordering::Relaxed);
                    tracing::info!("shared rate-limit store reachable again: limits are shared across replicas");
                    if let Some(m) = &self.metrics {
                        m.ratelimit_store_up(true);
                    }
                }
            } else if let (true, Store::Postgres(pool)) = (beats.is_multiple_of(SWEEP_EVERY), store) {
                // Redis keys expire by themselves.
                if let Err(e) = store::sweep(pool).await {
                    tracing::debug!(error = %crate::error::loggable(&e), "sweeping the rate-limit store failed");
                }
            }
        }
    }

    /// Removes this replica's heartbeat at a clean stop.
    pub async fn forget(&self, main: &PgPool, replica: &str) {
        if self.setting == StoreSetting::Local {
            return;
        }
        if let Err(e) = store::forget_replica(main, replica).await {
            tracing::debug!(error = %crate::error::loggable(&e), "removing the replica heartbeat failed");
        }
    }
}
