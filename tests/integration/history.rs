//! History partitions and retention (migration 0008, docs/scaling.md "History: partitions and
//! retention"): days created ahead, old days dropped while live jobs and idempotency records
//! within their window stay, a provider's retry after its event left the history still a
//! duplicate, and existing rows carried over by the migration.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{wait_for, Gateway, TestDb};
use crate::webhooks::whsec_key;
use gateway::db::history::{self, Retention};
use gateway::webhooks::verify::sign_standard;

const TABLES: [&str; 4] = ["webhook_events", "jobs", "agent_runs", "crm_outbox"];

async fn n(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The UTC day `offset` days from today, as a partition suffix.
async fn day(pool: &PgPool, offset: i32) -> String {
    sqlx::query_scalar("SELECT to_char((now() AT TIME ZONE 'UTC')::date + $1, 'YYYYMMDD')")
        .bind(offset)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass($1)::text").bind(table).fetch_one(pool).await.unwrap().is_some()
}

/// An org and a webhook endpoint, written as the owner.
async fn org_and_endpoint(pool: &PgPool) -> (Uuid, Uuid) {
    let (org, ep) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::raw_sql(&format!(
        "INSERT INTO orgs (id, name, plan) VALUES ('{org}', 'H', 'unmetered');
         INSERT INTO webhook_endpoints (id, tenant_id, provider, scheme) VALUES ('{ep}', '{org}', 'generic', 'standard-webhooks');"
    ))
    .execute(pool)
    .await
    .unwrap();
    (org, ep)
}

#[tokio::test]
async fn days_are_created_ahead_and_closed_to_the_restricted_role() {
    let db = TestDb::new().await;
    let pool = db.owner_pool().await;
    gateway::db::migrate(&pool).await.unwrap();
    // The migration made today and a week ahead; a pass finds nothing to do.
    assert_eq!(history::create_ahead(&pool).await.unwrap(), 0);
    for t in TABLES {
        assert!(exists(&pool, &format!("{t}_default")).await, "{t}: no default partition");
        for offset in 0..=history::AHEAD_DAYS {
            let p = format!("{t}_p{}", day(&pool, offset).await);
            assert!(exists(&pool, &p).await, "{p} missing");
        }
    }
    // Every partition: RLS enabled and forced, the tenant policy, and no privilege at all for
    // gateway_app (rows are reached through the parent only).
    let parts: Vec<(String, bool, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, \
                has_table_privilege('gateway_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE') \
         FROM pg_class c WHERE c.relispartition AND c.relkind = 'r' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(parts.len(), TABLES.len() * (history::AHEAD_DAYS as usize + 2), "{parts:?}");
    for (p, rls, forced, granted) in &parts {
        assert!(*rls && *forced && !*granted, "{p}: rls {rls} forced {forced} granted {granted}");
        let policies: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_policies WHERE tablename = $1 AND policyname = 'tenant_isolation'")
            .bind(p)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(policies, 1, "{p}");
    }
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE gateway_app").execute(&mut *tx).await.unwrap();
    let e = sqlx::query("SELECT count(*) FROM jobs_default").execute(&mut *tx).await.unwrap_err();
    assert_eq!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some("42501"), "{e}");
    tx.rollback().await.unwrap();
    // Plugins' structured queries see the tables, not their partitions.
    let schema = gateway::db::structured::Schema::load(&pool).await.unwrap();
    assert!(schema.has_table("crm_outbox") && schema.has_table("webhook_event_keys"));
    assert!(!schema.tables.keys().any(|t| t.ends_with("_default") || t.contains("_p2")), "{:?}", schema.tables.keys());

    // A day that was late: its rows wait in the default partition and move when it is made.
    let (org, ep) = org_and_endpoint(&pool).await;
    let late = history::AHEAD_DAYS + 3;
    sqlx::query(
        "INSERT INTO webhook_events (tenant_id, endpoint_id, provider, event_key, body, received_at) \
         VALUES ($1, $2, 'generic', 'late', '\\x7b7d', now() + make_interval(days => $3))",
    )
    .bind(org)
    .bind(ep)
    .bind(late)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(n(&pool, "SELECT count(*) FROM webhook_events_default").await, 1);
    let d: i32 = sqlx::query_scalar(
        "SELECT app_history_cover('webhook_events', (now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + $1)",
    )
    .bind(late)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(d, late - history::AHEAD_DAYS);
    assert_eq!(n(&pool, "SELECT count(*) FROM webhook_events_default").await, 0);
    let p = format!("webhook_events_p{}", day(&pool, late).await);
    assert_eq!(n(&pool, &format!("SELECT count(*) FROM {p}")).await, 1);
}

#[tokio::test]
async fn retention_drops_old_days_but_not_live_jobs_or_keys_within_their_window() {
    let db = TestDb::new().await;
    let pool = db.owner_pool().await;
    gateway::db::migrate(&pool).await.unwrap();
    let (org, ep) = org_and_endpoint(&pool).await;
    for t in TABLES {
        sqlx::query("SELECT app_history_cover($1::regclass, (now() AT TIME ZONE 'UTC')::date - 10, (now() AT TIME ZONE 'UTC')::date)")
            .bind(t)
            .execute(&pool)
            .await
            .unwrap();
    }
    // Five days old: an event (its key too), a job done then, one dead then, one still pending
    // since then, an attempt, an outbox message, a schedule slot. Nine days old: a key alone.
    // Today: one of each.
    sqlx::raw_sql(&format!(
        "INSERT INTO webhook_events (tenant_id, endpoint_id, provider, event_key, body, received_at) VALUES
             ('{org}', '{ep}', 'generic', 'old', '\\x7b7d', now() - interval '5 days'),
             ('{org}', '{ep}', 'generic', 'new', '\\x7b7d', now());
         INSERT INTO webhook_event_keys (tenant_id, endpoint_id, event_key, event_id, received_at) VALUES
             ('{org}', '{ep}', 'old', gen_random_uuid(), now() - interval '5 days'),
             ('{org}', '{ep}', 'older', gen_random_uuid(), now() - interval '9 days'),
             ('{org}', '{ep}', 'new', gen_random_uuid(), now());
         INSERT INTO jobs (tenant_id, kind, max_attempts, status, created_at, finished_at) VALUES
             ('{org}', 'old_done', 3, 'done', now() - interval '6 days', now() - interval '5 days'),
             ('{org}', 'old_dead', 3, 'dead', now() - interval '6 days', now() - interval '5 days'),
             ('{org}', 'old_live', 3, 'pending', now() - interval '6 days', NULL),
             ('{org}', 'new_done', 3, 'done', now(), now());
         INSERT INTO agent_runs (tenant_id, kind, attempt, status, started_at, finished_at) VALUES
             ('{org}', 'old', 1, 'succeeded', now() - interval '5 days', now() - interval '5 days'),
             ('{org}', 'new', 1, 'succeeded', now(), now());
         INSERT INTO crm_outbox (tenant_id, topic, payload, created_at) VALUES
             ('{org}', 'event.tracked.v1', '{{}}', now() - interval '5 days'),
             ('{org}', 'event.tracked.v1', '{{}}', now());
         INSERT INTO schedules (tenant_id, kind, cron, timezone) VALUES ('{org}', 'optimizer', '0 9 * * 1', 'UTC');
         INSERT INTO schedule_runs (tenant_id, kind, slot, outcome, created_at) VALUES
             ('{org}', 'optimizer', now() - interval '5 days', 'skipped', now() - interval '5 days'),
             ('{org}', 'optimizer', now(), 'skipped', now());"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let old = day(&pool, -5).await;

    // Within the retention nothing goes.
    let r = history::maintain(&pool, Retention { history_days: 30, idempotency_days: 45 }).await.unwrap();
    assert!(r.dropped.is_empty() && r.keys_deleted == 0 && r.schedule_runs_deleted == 0, "{r:?}");

    let r = history::maintain(&pool, Retention { history_days: 3, idempotency_days: 7 }).await.unwrap();
    for t in TABLES {
        assert!(r.dropped.contains(&format!("{t}_p{old}")), "{t}: {r:?}");
        assert!(!exists(&pool, &format!("{t}_p{old}")).await);
        assert!(exists(&pool, &format!("{t}_p{}", day(&pool, -2).await)).await, "{t}: a day inside the retention was dropped");
    }
    assert_eq!((r.keys_deleted, r.schedule_runs_deleted), (1, 1), "{r:?}");
    assert_eq!(n(&pool, "SELECT count(*) FROM webhook_events WHERE event_key = 'old'").await, 0);
    assert_eq!(n(&pool, "SELECT count(*) FROM webhook_events WHERE event_key = 'new'").await, 1);
    // The job that never finished survives however old; finished ones of that day do not.
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM jobs ORDER BY kind").fetch_all(&pool).await.unwrap();
    assert_eq!(kinds, ["new_done", "old_live"]);
    assert_eq!(n(&pool, "SELECT count(*) FROM jobs_default WHERE kind = 'old_live'").await, 1);
    // Keys: five days old is inside the 7-day idempotency window, nine is not.
    let keys: Vec<String> = sqlx::query_scalar("SELECT event_key FROM webhook_event_keys ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(keys, ["new", "old"]);
    assert_eq!(n(&pool, "SELECT count(*) FROM agent_runs").await, 1);
    assert_eq!(n(&pool, "SELECT count(*) FROM crm_outbox").await, 1);
    assert_eq!(n(&pool, "SELECT count(*) FROM schedule_runs").await, 1);
    // Days ahead are still there, and a second pass has nothing left to do.
    assert!(exists(&pool, &format!("jobs_p{}", day(&pool, history::AHEAD_DAYS).await)).await);
    let r = history::maintain(&pool, Retention { history_days: 3, idempotency_days: 7 }).await.unwrap();
    assert!(r.created == 0 && r.dropped.is_empty() && r.keys_deleted == 0, "{r:?}");
}

/// Sends a Standard Webhooks delivery with message id `id`.
async fn deliver(gw: &Gateway, endpoint: &str, key: &[u8], id: &str) -> crate::harness::Resp {
    let ts = chrono::Utc::now().timestamp();
    let body = format!(r#"{{"id":"{id}","type":"lead.replied"}}"#);
    gw.req("POST", &format!("/v1/webhooks/{endpoint}"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", &ts.to_string())
        .header("webhook-signature", &sign_standard(key, id, ts, body.as_bytes()))
        .body(body.into_bytes())
        .send()
        .await
}

#[tokio::test]
async fn a_retry_after_its_event_left_the_history_is_still_a_duplicate() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let pool = db.owner_pool().await;
    // Every replica runs the upkeep at start.
    wait_for("the first history pass", &gw, || async { gw.stderr().contains("history_maintained").then_some(()) }).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (token, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&token).json(&json!({"provider": "generic", "scheme": "standard-webhooks"})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (ep, key) = (r.json["endpoint_id"].as_str().unwrap().to_string(), whsec_key(r.json["secret"].as_str().unwrap()));

    let r = deliver(&gw, &ep, &key, "msg_1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let event = r.json["event_id"].as_str().unwrap().to_string();
    wait_for("the event's job to finish", &gw, || async {
        (n(&pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await == 1).then_some(())
    })
    .await;

    // Five days pass (the event, its job, its attempt and its key move back; the days exist).
    for t in TABLES {
        sqlx::query("SELECT app_history_cover($1::regclass, (now() AT TIME ZONE 'UTC')::date - 6, (now() AT TIME ZONE 'UTC')::date)")
            .bind(t)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::raw_sql(
        "UPDATE webhook_events SET received_at = received_at - interval '5 days';
         UPDATE jobs SET created_at = created_at - interval '5 days', finished_at = finished_at - interval '5 days';
         UPDATE agent_runs SET finished_at = finished_at - interval '5 days';
         UPDATE webhook_event_keys SET received_at = received_at - interval '5 days';",
    )
    .execute(&pool)
    .await
    .unwrap();
    let r = history::maintain(&pool, Retention { history_days: 3, idempotency_days: 10 }).await.unwrap();
    assert!(!r.dropped.is_empty(), "{r:?}");
    assert_eq!(n(&pool, "SELECT count(*) FROM webhook_events").await + n(&pool, "SELECT count(*) FROM jobs").await, 0);
    let r = gw.req("GET", &format!("/v1/webhook-events/{event}")).token(&token).send().await;
    assert_eq!(r.status, 404, "{}", r.text);

    // The provider retries: the key is remembered, nothing is stored, nothing runs.
    let r = deliver(&gw, &ep, &key, "msg_1").await;
    assert_eq!((r.status, &r.json), (200, &json!({"ok": true, "duplicate": true})), "{}", r.text);
    assert_eq!(n(&pool, "SELECT count(*) FROM webhook_events").await + n(&pool, "SELECT count(*) FROM jobs").await, 0);

    // Past the idempotency window the key is forgotten: the same id is a new event.
    sqlx::query("UPDATE webhook_event_keys SET received_at = received_at - interval '6 days'").execute(&pool).await.unwrap();
    let r = history::maintain(&pool, Retention { history_days: 3, idempotency_days: 10 }).await.unwrap();
    assert_eq!(r.keys_deleted, 1, "{r:?}");
    let r = deliver(&gw, &ep, &key, "msg_1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["event_id"].is_string(), "{}", r.text);
    wait_for("the new event's job to finish", &gw, || async {
        (n(&pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_migration_carries_existing_rows_over() {
    let db = TestDb::new().await;
    let pool = db.owner_pool().await;
    // The schema as it was before partitions: migrations 0001 to 0007 only.
    let dir = crate::harness::tempdir("mig");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for entry in std::fs::read_dir(&repo).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < "0008" {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap().run(&pool).await.unwrap();
    let (org, ep) = org_and_endpoint(&pool).await;
    sqlx::raw_sql(&format!(
        "WITH e AS (INSERT INTO webhook_events (tenant_id, endpoint_id, provider, event_key, body, received_at)
                    SELECT '{org}', '{ep}', 'generic', 'k' || g, '\\x7b7d', now() - g * interval '1 day'
                    FROM generate_series(0, 3) g RETURNING id, received_at)
         INSERT INTO jobs (tenant_id, kind, ref_id, max_attempts, status, created_at, finished_at)
             SELECT '{org}', 'webhook', id, 3, CASE WHEN received_at < now() - interval '1 hour' THEN 'done' ELSE 'pending' END,
                    received_at, CASE WHEN received_at < now() - interval '1 hour' THEN received_at END FROM e;
         INSERT INTO agent_runs (tenant_id, kind, attempt, status, started_at, finished_at)
             SELECT '{org}', 'webhook', 1, 'succeeded', now() - g * interval '1 day', now() - g * interval '1 day'
             FROM generate_series(1, 3) g;
         INSERT INTO crm_outbox (tenant_id, topic, payload, created_at) VALUES ('{org}', 'event.tracked.v1', '{{}}', now() - interval '2 days');"
    ))
    .execute(&pool)
    .await
    .unwrap();

    gateway::db::migrate(&pool).await.unwrap();
    assert_eq!(n(&pool, "SELECT count(*) FROM webhook_events").await, 4);
    assert_eq!(n(&pool, "SELECT count(*) FROM webhook_event_keys").await, 4);
    assert_eq!(n(&pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await, 3);
    assert_eq!(n(&pool, "SELECT count(*) FROM jobs_default WHERE status = 'pending'").await, 1);
    assert_eq!(n(&pool, "SELECT count(*) FROM agent_runs").await, 3);
    assert_eq!(n(&pool, "SELECT count(*) FROM crm_outbox").await, 1);
    // Every old row is in its day, none in a default partition but the live job.
    for t in ["webhook_events", "agent_runs", "crm_outbox"] {
        assert_eq!(n(&pool, &format!("SELECT count(*) FROM {t}_default")).await, 0, "{t}");
    }
    assert!(exists(&pool, &format!("webhook_events_p{}", day(&pool, -3).await)).await);
    // The keys carried over still make a redelivery a duplicate.
    let mut tx = gateway::db::begin_tenant(&pool, org, gateway::role::Actor::System).await.unwrap();
    let stored = gateway::db::webhooks::store_event(&mut tx, ep, "generic", "k2", None, b"{}", None, 3, 1000).await.unwrap();
    assert_eq!(stored, None);
    let stored = gateway::db::webhooks::store_event(&mut tx, ep, "generic", "k9", None, b"{}", None, 3, 1000).await.unwrap();
    assert!(stored.is_some());
    tx.rollback().await.unwrap();
    // The old tables are gone.
    for t in ["webhook_events_old", "jobs_old", "agent_runs_old", "crm_outbox_old"] {
        assert!(!exists(&pool, t).await, "{t}");
    }
    tokio::time::timeout(Duration::from_secs(1), pool.close()).await.unwrap();
}
