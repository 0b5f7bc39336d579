//! The native ceiling for the CRM benchmark: the transaction `crm-track` runs, as a plain sqlx
//! client writes it, one statement per round trip (nine: `BEGIN`, settings, lock, lookup, four
//! inserts, `COMMIT`; the same RLS settings), with 32 concurrent tasks against the same database.
//!
//! Usage: crm_native DATABASE_URL ORG_ID SECONDS [CONCURRENCY] [POOL]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

async fn one(pool: &sqlx::PgPool, org: Uuid, email: &str) -> anyhow::Result<()> {
    // The same settings the plugin's transaction gets, the naive way: `BEGIN`, then one
    // statement setting them (the gateway sends both in one round trip).
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('role', 'gateway_app', true), set_config('app.tenant_id', $1, true), \
         set_config('app.role', 'admin', true), set_config('statement_timeout', '2000', true), \
         set_config('idle_in_transaction_session_timeout', '6000', true)",
    )
    .bind(org.to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2::text, 0))")
        .bind(org.to_string()).bind(format!("identity:email:{email}")).execute(&mut *tx).await?;
    let found: Option<String> = sqlx::query_scalar("SELECT \"contact_id\"::text FROM \"contact_identities\" WHERE \"tenant_id\" = $1 AND \"type\" = $2::\"text\" AND \"value\" = $3::\"text\" LIMIT 1")
        .bind(org).bind("email").bind(email).fetch_optional(&mut *tx).await?;
    let contact = match found {
        Some(c) => c,
        None => sqlx::query_scalar("INSERT INTO \"crm_contacts\" (\"tenant_id\", \"name\", \"business_id\") VALUES ($1, $2::\"text\", $3::\"uuid\") RETURNING \"id\"::text")
            .bind(org).bind("Bench").bind(None::<String>).fetch_one(&mut *tx).await?,
    };
    sqlx::query("INSERT INTO \"contact_identities\" (\"tenant_id\", \"type\", \"value\", \"contact_id\") VALUES ($1, $2::\"text\", $3::\"text\", $4::\"uuid\") ON CONFLICT (\"tenant_id\", \"type\", \"value\") DO NOTHING")
        .bind(org).bind("email").bind(email).bind(&contact).execute(&mut *tx).await?;
    let (event_id, created_at): (String, String) = sqlx::query_as("INSERT INTO \"crm_events\" (\"tenant_id\", \"contact_id\", \"business_id\", \"type\", \"props\", \"request_hash\", \"conflicts\") VALUES ($1, $2::\"uuid\", $3::\"uuid\", $4::\"text\", $5::\"jsonb\", $6::\"text\", $7::\"jsonb\") RETURNING \"id\"::text, to_char(\"created_at\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        .bind(org).bind(&contact).bind(None::<String>).bind("signup").bind(r#"{"plan":"pro","source":"bench"}"#).bind("0".repeat(64)).bind(None::<String>)
        .fetch_one(&mut *tx).await?;
    sqlx::query("INSERT INTO \"crm_outbox\" (\"tenant_id\", \"topic\", \"payload\") VALUES ($1, $2::\"text\", $3::\"jsonb\"), ($1, $4::\"text\", $5::\"jsonb\")")
        .bind(org).bind("event.tracked.v1").bind(format!(r#"{{"event_id":"{event_id}","contact_id":"{contact}","created_at":"{created_at}"}}"#))
        .bind("contact.updated.v1").bind(format!(r#"{{"contact_id":"{contact}","created":true}}"#))
        .execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let org: Uuid = a[2].parse()?;
    let secs: u64 = a[3].parse()?;
    let conc: usize = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let pool_size: u32 = a.get(5).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(pool_size).connect(&a[1]).await?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let run = Uuid::new_v4().simple().to_string();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (pool, done, run) = (pool.clone(), done.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let t0 = Instant::now();
                one(&pool, org, &format!("n{run}-{t}-{i}@bench.test")).await.expect("transaction");
                lat.push(t0.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let p = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize];
    println!("{:.1} {:.2} {:.2}", all.len() as f64 / elapsed, p(0.5).as_secs_f64() * 1000.0, p(0.99).as_secs_f64() * 1000.0);
    Ok(())
}
