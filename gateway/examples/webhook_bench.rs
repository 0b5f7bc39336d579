//! Load generator and native ceiling for the webhook benchmark (`bench/webhooks.sh`).
//!
//! - `ingress ADDR ENDPOINT_ID SECRET SECONDS CONCURRENCY`: signed Standard Webhooks
//!   deliveries (a fresh `webhook-id` each, signed per request) on CONCURRENCY keep-alive
//!   connections. Prints `events/s p50_ms p99_ms non_2xx`.
//! - `native DATABASE_URL ORG_ID ENDPOINT_ID SECONDS CONCURRENCY POOL`: the transaction
//!   ingress commits (tenant context, then event + job + notify in one statement), from plain
//!   sqlx tasks on the same database. Prints `events/s p50_ms p99_ms 0`.
//! - `enqueue DATABASE_URL ORG_ID ENDPOINT_ID COUNT`: COUNT events and jobs in one
//!   transaction (for the queue benchmark), then a notification.
//! - `drain DATABASE_URL TIMEOUT_SECS [SINCE]`: waits until no job is pending or processing, then
//!   prints `jobs jobs/s dead` measured between the first and last finished job (of the jobs
//!   created at or after SINCE, an RFC 3339 time, when given).
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use uuid::Uuid;

fn percentiles(mut lat: Vec<Duration>) -> (f64, f64) {
    lat.sort();
    let at = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    (at(0.5), at(0.99))
}

async fn ingress(a: &[String]) -> anyhow::Result<()> {
    use base64::Engine;
    let (addr, endpoint, secret) = (a[2].clone(), a[3].clone(), a[4].clone());
    let secs: u64 = a[5].parse()?;
    let conc: usize = a[6].parse()?;
    let key = Arc::new(base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(&secret))?);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let run = Uuid::new_v4().simple().to_string();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (addr, endpoint, key, run) = (addr.clone(), endpoint.clone(), key.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(conn);
            let (mut lat, mut bad) = (Vec::new(), 0u64);
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let id = format!("msg_{run}_{t}_{i}");
                let ts = chrono::Utc::now().timestamp();
                let body = format!(r#"{{"id":"{id}","type":"lead.replied","data":{{"campaign_id":42,"lead":"l-{i}"}}}}"#);
                let sig = gateway::webhooks::verify::sign_standard(&key, &id, ts, body.as_bytes());
                let req = http::Request::post(format!("/v1/webhooks/{endpoint}"))
                    .header("host", &addr)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let t0 = Instant::now();
                let resp = send.send_request(req).await.expect("request");
                let ok = resp.status().is_success();
                resp.into_body().collect().await.expect("body");
                lat.push(t0.elapsed());
                bad += u64::from(!ok);
            }
            (lat, bad)
        }));
    }
    let (mut all, mut bad) = (Vec::new(), 0);
    for t in tasks {
        let (l, b) = t.await?;
        all.extend(l);
        bad += b;
    }
    let n = all.len();
    let (p50, p99) = percentiles(all);
    println!("{:.0} {p50:.2} {p99:.2} {bad}", n as f64 / secs as f64);
    Ok(())
}

async fn native(a: &[String]) -> anyhow::Result<()> {
    let org: Uuid = a[3].parse()?;
    let endpoint: Uuid = a[4].parse()?;
    let secs: u64 = a[5].parse()?;
    let conc: usize = a[6].parse()?;
    let pool_size: u32 = a[7].parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(pool_size).connect(&a[2]).await?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let run = Uuid::new_v4().simple().to_string();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (pool, run) = (pool.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let id = format!("native_{run}_{t}_{i}");
                let body = format!(r#"{{"id":"{id}","type":"lead.replied","data":{{"campaign_id":42,"lead":"l-{i}"}}}}"#);
                let t0 = Instant::now();
                let mut tx = gateway::db::begin_tenant(&pool, org, gateway::role::Actor::System).await.expect("begin");
                gateway::db::webhooks::store_event(
                    &mut tx, endpoint, "generic", &id, Some("lead.replied"), body.as_bytes(), Some("application/json"), 5, 1000,
                )
                .await
                .expect("store");
                tx.commit().await.expect("commit");
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let n = all.len();
    let (p50, p99) = percentiles(all);
    println!("{:.0} {p50:.2} {p99:.2} 0", n as f64 / secs as f64);
    Ok(())
}

async fn enqueue(a: &[String]) -> anyhow::Result<()> {
    let org: Uuid = a[3].parse()?;
    let endpoint: Uuid = a[4].parse()?;
    let count: i64 = a[5].parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&a[2]).await?;
    let mut tx = gateway::db::begin_tenant(&pool, org, gateway::role::Actor::System).await?;
    let run = Uuid::new_v4().simple().to_string();
    sqlx::query(
        "WITH e AS (INSERT INTO webhook_events (tenant_id, endpoint_id, provider, event_key, body, content_type) \
                    SELECT $1, $2, 'generic', $3 || g, convert_to('{\"id\":\"' || g || '\",\"type\":\"t\"}', 'UTF8'), 'application/json' \
                    FROM generate_series(1, $4) g RETURNING id) \
         INSERT INTO jobs (tenant_id, kind, ref_id, max_attempts) SELECT $1, 'webhook', id, 5 FROM e",
    )
    .bind(org)
    .bind(endpoint)
    .bind(format!("bulk_{run}_"))
    .bind(count)
    .execute(tx.raw_connection())
    .await?;
    sqlx::query("SELECT pg_notify('gateway_jobs', '')").execute(tx.raw_connection()).await?;
    tx.commit().await?;
    Ok(())
}

async fn drain(a: &[String]) -> anyhow::Result<()> {
    let timeout: u64 = a[3].parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&a[2]).await?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('pending', 'processing')").fetch_one(&pool).await?;
        if left == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{left} jobs still queued after {timeout}s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Jobs created since SINCE only (bench/history.sh: not the history it filled in).
    let since = a.get(4).map(String::as_str).unwrap_or("-infinity");
    let (n, secs): (i64, f64) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM max(finished_at) - min(finished_at))::float8 FROM jobs \
         WHERE status = 'done' AND created_at >= $1::timestamptz",
    )
    .bind(since)
    .fetch_one(&pool)
    .await?;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'dead' AND created_at >= $1::timestamptz")
        .bind(since)
        .fetch_one(&pool)
        .await?;
    println!("{n} {:.0} {dead}", n as f64 / secs.max(0.001));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("ingress") => ingress(&a).await,
        Some("native") => native(&a).await,
        Some("enqueue") => enqueue(&a).await,
        Some("drain") => drain(&a).await,
        _ => anyhow::bail!("usage: webhook_bench ingress|native|enqueue|drain ..."),
    }
}
