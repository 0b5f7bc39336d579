//! What `/healthz` and `/readyz` say, decided off the request path.
//!
//! A prober pings the database every [`PROBE_EVERY`] on a connection of its own, bounded by
//! [`PROBE_TIMEOUT`]; the embedded cluster's supervisor (`startup`) says when the cluster is
//! down. The endpoints only read what these recorded: they never wait for a pool connection,
//! so readiness answers at once however busy tenant work keeps the pools, and a frozen
//! database turns readiness off within [`READY_STALE`] instead of hanging the probe.
//!
//! - `/healthz` is the gateway's own health: false only while its embedded cluster is down.
//! - `/readyz` is whether it can serve now: the last database ping succeeded, and within
//!   [`READY_STALE`]; the embedded cluster (if any) is up; and it is not shutting down.
//!
//! Knows nothing of HTTP; `phases::dispatch` turns these answers into responses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// How often the prober pings the database.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long one ping (or a reconnection) may take before it counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Not ready once the last successful ping is older than this.
pub const READY_STALE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Health {
    last_ok: Mutex<Instant>,
    /// The last ping failed: not ready at once, without waiting for staleness (which covers a
    /// ping that hangs instead).
    last_failed: AtomicBool,
    cluster_down: AtomicBool,
    draining: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        // Start-up has just migrated the database: it was reachable a moment ago.
        Health {
            last_ok: Mutex::new(Instant::now()),
            last_failed: AtomicBool::new(false),
            cluster_down: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }
}

/// Why the gateway is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    ClusterDown,
    DatabaseUnreachable,
    ShuttingDown,
}

impl NotReady {
    pub fn message(self) -> &'static str {
        match self {
            NotReady::ClusterDown => "the embedded PostgreSQL is down; the gateway is restarting it",
            NotReady::DatabaseUnreachable => "the database is not answering",
            NotReady::ShuttingDown => "the gateway is shutting down",
        }
    }
}

impl Health {
    /// `/healthz`: the gateway itself.
    pub fn live(&self) -> Result<(), NotReady> {
        if self.cluster_down.load(Ordering::Relaxed) {
            return Err(NotReady::ClusterDown);
        }
        Ok(())
    }

    /// `/readyz`: whether new work can be served now.
    pub fn ready(&self) -> Result<(), NotReady> {
        self.live()?;
        if self.draining.load(Ordering::Relaxed) {
            return Err(NotReady::ShuttingDown);
        }
        if self.last_failed.load(Ordering::Relaxed)
            || self.last_ok.lock().unwrap_or_else(|p| p.into_inner()).elapsed() > READY_STALE
        {
            return Err(NotReady::DatabaseUnreachable);
        }
        Ok(())
    }

    pub fn set_cluster_down(&self, down: bool) {
        self.cluster_down.store(down, Ordering::Relaxed);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn ping_succeeded(&self) {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.last_failed.store(false, Ordering::Relaxed);
    }

    fn ping_failed(&self) {
        self.last_failed.store(true, Ordering::Relaxed);
    }

    /// Pings the database forever (until aborted) on a connection of its own.
    pub async fn probe(&self, opts: PgConnectOptions) {
        let opts = opts.disable_statement_logging();
        let mut conn: Option<PgConnection> = None;
        let mut was_ok = true;
        loop {
            let ok = tokio::time::timeout(PROBE_TIMEOUT, async {
                if conn.is_none() {
                    conn = Some(opts.connect().await?);
                }
                conn.as_mut().expect("connected above").ping().await
            })
            .await
            .is_ok_and(|r| r.is_ok());
            if ok {
                self.ping_succeeded();
            } else {
                self.ping_failed();
                // A connection that failed or hung is not trusted again.
                conn = None;
            }
            if ok != was_ok {
                if ok {
                    tracing::info!("database_reachable");
                } else {
                    tracing::error!(timeout_ms = PROBE_TIMEOUT.as_millis() as u64, "database_unreachable");
                }
                was_ok = ok;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_probe_the_cluster_and_the_drain() {
        let h = Health::default();
        assert_eq!(h.ready(), Ok(()));
        *h.last_ok.lock().unwrap() = Instant::now() - READY_STALE - Duration::from_millis(1);
        assert_eq!(h.ready(), Err(NotReady::DatabaseUnreachable));
        assert_eq!(h.live(), Ok(()), "an unreachable external database is not the gateway's own fault");
        h.ping_succeeded();
        assert_eq!(h.ready(), Ok(()));
        h.ping_failed();
        assert_eq!(h.ready(), Err(NotReady::DatabaseUnreachable), "a failed ping counts at once");
        h.ping_succeeded();
        h.set_cluster_down(true);
        assert_eq!(h.live(), Err(NotReady::ClusterDown));
        assert_eq!(h.ready(), Err(NotReady::ClusterDown));
        h.set_cluster_down(false);
        h.set_draining();
        assert_eq!((h.live(), h.ready()), (Ok(()), Err(NotReady::ShuttingDown)));
    }
}
