//! The history tables' upkeep (docs/scaling.md, "History: partitions and retention"): on
//! every replica, at start and then every [`TICK`], days are created ahead and history older
//! than `GATEWAY_RETENTION_DAYS` dropped, event keys older than `GATEWAY_IDEMPOTENCY_DAYS`
//! deleted. `db::history` serialises the steps across replicas; a pass that finds the work
//! done does nothing, so every replica may run it.

use std::time::Duration;

use tokio::sync::watch;

use crate::db::history::{self, Retention};

/// How often a pass runs. Days are created a week ahead, so many missed passes cost nothing.
pub const TICK: Duration = Duration::from_secs(3600);

/// The running upkeep task of this replica.
pub struct Upkeep {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Upkeep {
    pub fn start(pool: sqlx::PgPool, keep: Retention) -> Upkeep {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(pool, keep, stopped));
        Upkeep { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
}

async fn run(pool: sqlx::PgPool, keep: Retention, mut stopped: watch::Receiver<bool>) {
    loop {
        let pass = tokio::select! {
            r = history::maintain(&pool, keep) => r,
            _ = stopped.changed() => return,
        };
        match pass {
            Ok(r) => tracing::info!(
                partitions_created = r.created,
                partitions_dropped = r.dropped.len(),
                dropped = %r.dropped.join(","),
                event_keys_deleted = r.keys_deleted,
                schedule_runs_deleted = r.schedule_runs_deleted,
                retention_days = keep.history_days,
                idempotency_days = keep.idempotency_days,
                "history_maintained"
            ),
            // A lock timeout (a long reader on a history table) or a database outage: the
            // next pass tries again, a week before anything depends on it.
            Err(e) => tracing::warn!(error = %crate::error::loggable(&e), "history maintenance failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped.changed() => return,
        }
    }
}
