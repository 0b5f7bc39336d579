//! Shared rate-limit state (migration 0011): GCRA leases in `ratelimit_gcra` and the replicas'
//! heartbeats in `gateway_replicas`. Platform tables, reached through the owner pool only.

use sqlx::PgPool;

use crate::error::Result;

/// What one lease got from a shared bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lease {
    /// Tokens granted (0: the bucket is empty).
    pub granted: u32,
    /// The bucket's theoretical arrival time after the lease, seconds since the epoch.
    pub tat: f64,
    /// The database's clock when it leased, seconds since the epoch.
    pub now: f64,
}

/// Leases up to `want` tokens from the GCRA bucket `key` (one token per `interval` seconds,
/// `tolerance` = burst × interval), in one statement: the upsert's row lock makes concurrent
/// leases of one key from any replica take turns, and nothing is granted beyond what the
/// bucket holds, so the tokens all replicas hold never exceed burst + rate × t.
pub async fn lease(pool: &PgPool, key: &str, interval: f64, tolerance: f64, want: u32) -> Result<Lease> {
    // The 1e-6 keeps float rounding from losing the last token of a bucket; the count is cast
    // to an integer only once it is at most `want`.
    let row: (i32, f64, f64) = sqlx::query_as(
        "INSERT INTO ratelimit_gcra AS r (key, tat, granted, seen) \
         SELECT $1, c.n + x.g * $2, x.g, c.n \
         FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS n) c, \
              LATERAL (SELECT GREATEST(0, LEAST($4::float8, floor($3 / $2 + 1e-6)))::int AS g) x \
         ON CONFLICT (key) DO UPDATE SET \
             granted = GREATEST(0, LEAST($4::float8, floor((EXCLUDED.seen + $3 - GREATEST(r.tat, EXCLUDED.seen)) / $2 + 1e-6)))::int, \
             tat = GREATEST(r.tat, EXCLUDED.seen) + $2 * GREATEST(0, LEAST($4::float8, \
                       floor((EXCLUDED.seen + $3 - GREATEST(r.tat, EXCLUDED.seen)) / $2 + 1e-6))), \
             seen = EXCLUDED.seen \
         RETURNING granted, tat, seen",
    )
    .bind(key)
    .bind(interval)
    .bind(tolerance)
    .bind(i32::try_from(want).unwrap_or(i32::MAX))
    .fetch_one(pool)
    .await?;
    Ok(Lease { granted: row.0.max(0) as u32, tat: row.1, now: row.2 })
}

/// Says `replica` is alive and returns how many replicas are (itself included): those with a
/// heartbeat newer than `stale_secs`. Rows silent for an hour are forgotten.
pub async fn heartbeat(pool: &PgPool, replica: &str, stale_secs: f64) -> Result<u32> {
    let others: i64 = sqlx::query_scalar(
        "WITH beat AS ( \
             INSERT INTO gateway_replicas (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()), \
         forgotten AS ( \
             DELETE FROM gateway_replicas WHERE id <> $1 AND heartbeat_at < now() - interval '1 hour') \
         SELECT count(*) FROM gateway_replicas WHERE id <> $1 AND heartbeat_at > now() - make_interval(secs => $2)",
    )
    .bind(replica)
    .bind(stale_secs)
    .fetch_one(pool)
    .await?;
    Ok(u32::try_from(others).unwrap_or(u32::MAX - 1).saturating_add(1))
}

/// Removes `replica`'s heartbeat at a clean stop, so the others' shares grow at once.
pub async fn forget_replica(pool: &PgPool, replica: &str) -> Result<()> {
    sqlx::query("DELETE FROM gateway_replicas WHERE id = $1").bind(replica).execute(pool).await?;
    Ok(())
}

/// Drops buckets that are full again (their state is the same as no row), returning how many.
pub async fn sweep(pool: &PgPool) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM ratelimit_gcra WHERE tat < extract(epoch FROM clock_timestamp()) - 1")
        .execute(pool)
        .await?
        .rows_affected())
}
