//! Partitions and retention of the history tables (migration 0008; docs/scaling.md, "History:
//! partitions and retention").
//!
//! Each step is its own short transaction in the platform scope, serialised across replicas
//! by one advisory lock, with a lock timeout: creating or dropping a partition locks its parent
//! for a moment, and must never queue behind a long reader with ingress waiting behind it.

use sqlx::PgPool;

use crate::error::Result;

/// The tables partitioned by day, with the column each is partitioned on.
pub const TABLES: [(&str, &str); 4] =
    [("webhook_events", "received_at"), ("jobs", "finished_at"), ("agent_runs", "finished_at"), ("crm_outbox", "created_at")];

/// Days created ahead of today (UTC).
pub const AHEAD_DAYS: i32 = 7;

/// Taken (per transaction) by every maintenance step, so one replica at a time does them.
const LOCK_KEY: i64 = 0x6761_7465_6869_7374; // "gatehist"

/// How long history and idempotency records are kept, in days.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub history_days: u32,
    pub idempotency_days: u32,
}

/// What one maintenance pass did.
#[derive(Debug, Default)]
pub struct Report {
    pub created: i64,
    pub dropped: Vec<String>,
    pub keys_deleted: u64,
    pub schedule_runs_deleted: u64,
}

async fn step(pool: &PgPool) -> Result<super::PlatformTx> {
    let mut tx = super::begin_platform(pool).await?;
    sqlx::query("SELECT set_config('lock_timeout', '2s', true)").execute(tx.conn()).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK_KEY).execute(tx.conn()).await?;
    Ok(tx)
}

/// Creates the day partitions from today to [`AHEAD_DAYS`] ahead; returns how many were new.
pub async fn create_ahead(pool: &PgPool) -> Result<i64> {
    let mut created = 0;
    for (table, _) in TABLES {
        let mut tx = step(pool).await?;
        let n: i32 = sqlx::query_scalar(
            "SELECT app_history_cover($1::regclass, (now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + $2)",
        )
        .bind(table)
        .bind(AHEAD_DAYS)
        .fetch_one(tx.conn())
        .await?;
        tx.commit().await?;
        created += i64::from(n);
    }
    Ok(created)
}

/// One pass: days ahead, then partitions whose whole day is older than the history retention
/// dropped (for `jobs` that is by `finished_at`, so live jobs are never touched), then event
/// keys older than the idempotency window and `schedule_runs` older than the history retention
/// deleted.
pub async fn maintain(pool: &PgPool, keep: Retention) -> Result<Report> {
    let mut report = Report { created: create_ahead(pool).await?, ..Report::default() };
    let history = i32::try_from(keep.history_days).unwrap_or(i32::MAX);
    for (table, _) in TABLES {
        let mut tx = step(pool).await?;
        let dropped: Vec<String> = sqlx::query_scalar(
            "SELECT app_history_drop_before($1::regclass, (now() AT TIME ZONE 'UTC')::date - $2)",
        )
        .bind(table)
        .bind(history)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        report.dropped.extend(dropped);
    }
    let mut tx = step(pool).await?;
    report.keys_deleted = sqlx::query("DELETE FROM webhook_event_keys WHERE received_at < now() - make_interval(days => $1)")
        .bind(i32::try_from(keep.idempotency_days).unwrap_or(i32::MAX))
        .execute(tx.conn())
        .await?
        .rows_affected();
    report.schedule_runs_deleted = sqlx::query("DELETE FROM schedule_runs WHERE created_at < now() - make_interval(days => $1)")
        .bind(history)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(report)
}
