//! Webhook ingress and the job queue: signatures (both schemes), rotation, staleness,
//! idempotency under concurrency, processing with retries and dead letters, replay, crash
//! safety (SIGKILL after the acknowledgement) and fairness between orgs.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{assert_error, policies_with, Gateway, GatewayOptions, Resp, TestDb};
use gateway::webhooks::verify::{sign_hex, sign_standard};

/// A provider whose adapter is the contract probe under the plugin name `flaky`, with fast
/// retries, so tests can make attempts fail on demand.
const PROBE_PROVIDER: &str = r#"
[plugins.flaky]
file = "contract_probe.wasm"

[providers.probe]
route = "webhook_probe"
max_attempts = 3
retry_base_ms = 20

[[route]]
id = "webhook_probe"
internal = true
target = "plugin:flaky"
"#;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn whsec_key(secret: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap()
}

async fn admin(gw: &Gateway, name: &str) -> (String, String) {
    let org = gw.create_org(name, Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "admin", &format!("admin@{}.test", name.to_lowercase())).await;
    (org, t)
}

async fn endpoint(gw: &Gateway, token: &str, provider: &str, scheme: &str) -> (String, String) {
    let r = gw.req("POST", "/v1/webhook-endpoints").token(token).json(&json!({"provider": provider, "scheme": scheme})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    (r.json["endpoint_id"].as_str().unwrap().to_string(), r.json["secret"].as_str().unwrap().to_string())
}

/// Sends a Standard Webhooks delivery signed with `key`.
async fn deliver(gw: &Gateway, endpoint: &str, key: &[u8], id: &str, ts: i64, body: &[u8]) -> Resp {
    gw.req("POST", &format!("/v1/webhooks/{endpoint}"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", &ts.to_string())
        .header("webhook-signature", &sign_standard(key, id, ts, body))
        .body(body.to_vec())
        .send()
        .await
}

/// Polls the event until it reaches `status` (or fails after `limit`).
async fn wait_status(gw: &Gateway, token: &str, event: &str, status: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let r = gw.req("GET", &format!("/v1/webhook-events/{event}")).token(token).send().await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.json["status"] == status {
            return r.json;
        }
        assert!(Instant::now() < deadline, "event {event} never became {status}: {}\n{}", r.text, gw.stdout());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway that acknowledges deliveries but runs no jobs, and the options that restart it
/// (same data directory and super-admin token) with its workers on.
pub(crate) async fn start_without_workers(db: &TestDb) -> (Gateway, GatewayOptions) {
    let mut opts = GatewayOptions::new(db);
    let mut restart = GatewayOptions::new(db);
    restart.data_dir = opts.data_dir.clone();
    restart.bootstrap_token = opts.bootstrap_token.clone();
    opts.extra_env.push(("GATEWAY_JOB_WORKERS".into(), "0".into()));
    (Gateway::start_with(opts).await, restart)
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn standard_webhooks_signatures_rotation_and_staleness() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let (org, admin_token) = admin(&gw, "Acme").await;
    let (member, _, _) = gw.create_token(&org, "member", "m@acme.test").await;

    // Managing endpoints is for org admins; inputs are checked.
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&member).json(&json!({"provider": "generic", "scheme": "standard-webhooks"})).send().await;
    assert_error(&r, 403, "FORBIDDEN");
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&admin_token).json(&json!({"provider": "nope", "scheme": "standard-webhooks"})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&admin_token).json(&json!({"provider": "generic", "scheme": "md5"})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");

    let (ep, secret) = endpoint(&gw, &admin_token, "generic", "standard-webhooks").await;
    assert!(secret.starts_with("whsec_"));
    let key = whsec_key(&secret);
    let body = br#"{"id":"evt_1","type":"lead.replied"}"#;

    let r = deliver(&gw, &ep, &key, "msg_1", now(), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["ok"], true);
    let event = r.json["event_id"].as_str().unwrap().to_string();
    // The same webhook-id again: acknowledged, nothing changes.
    let r = deliver(&gw, &ep, &key, "msg_1", now(), body).await;
    assert_eq!((r.status, &r.json), (200, &json!({"ok": true, "duplicate": true})), "{}", r.text);

    // Every way of being wrong is the same 401.
    let tampered = gw
        .req("POST", &format!("/v1/webhooks/{ep}"))
        .header("webhook-id", "msg_2")
        .header("webhook-timestamp", &now().to_string())
        .header("webhook-signature", &sign_standard(&key, "msg_2", now(), body))
        .body(br#"{"id":"evt_1","type":"lead.replied","x":1}"#.to_vec())
        .send()
        .await;
    assert_error(&tampered, 401, "INVALID_SIGNATURE");
    let missing = gw.req("POST", &format!("/v1/webhooks/{ep}")).header("webhook-id", "msg_3").body(body.to_vec()).send().await;
    assert_error(&missing, 401, "INVALID_SIGNATURE");
    assert_error(&deliver(&gw, &ep, b"some other secret", "msg_4", now(), body).await, 401, "INVALID_SIGNATURE");
    // Authentic but outside the 300 s window, either way.
    assert_error(&deliver(&gw, &ep, &key, "msg_5", now() - 301, body).await, 401, "STALE_WEBHOOK");
    assert_error(&deliver(&gw, &ep, &key, "msg_6", now() + 301, body).await, 401, "STALE_WEBHOOK");
    // Unknown endpoints (or not an id at all) are not found; no bearer token is involved.
    assert_error(&deliver(&gw, &uuid::Uuid::new_v4().to_string(), &key, "m", now(), body).await, 404, "NOT_FOUND");
    assert_error(&deliver(&gw, "not-an-id", &key, "m", now(), body).await, 404, "NOT_FOUND");

    // The generic provider's adapter (echo) processes the event.
    let e = wait_status(&gw, &admin_token, &event, "processed", Duration::from_secs(20)).await;
    assert_eq!(e["attempts"], 1, "{e}");
    assert_eq!(e["event_type"], "lead.replied");

    // Rotation: old and new both valid during the grace period (24 h by default).
    let r = gw.req("POST", &format!("/v1/webhook-endpoints/{ep}/rotate")).token(&admin_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let until = chrono::DateTime::parse_from_rfc3339(r.json["previous_valid_until"].as_str().unwrap()).unwrap();
    assert!((until.timestamp() - now() - 86_400).abs() < 60, "{}", r.text);
    let key2 = whsec_key(r.json["secret"].as_str().unwrap());
    assert_eq!(deliver(&gw, &ep, &key, "msg_7", now(), body).await.status, 200);
    assert_eq!(deliver(&gw, &ep, &key2, "msg_8", now(), body).await.status, 200);
    // A rotation without grace ends every previous secret at once.
    let r = gw.req("POST", &format!("/v1/webhook-endpoints/{ep}/rotate")).token(&admin_token).json(&json!({"grace_seconds": 0})).send().await;
    let key3 = whsec_key(r.json["secret"].as_str().unwrap());
    assert_error(&deliver(&gw, &ep, &key, "msg_9", now(), body).await, 401, "INVALID_SIGNATURE");
    assert_error(&deliver(&gw, &ep, &key2, "msg_10", now(), body).await, 401, "INVALID_SIGNATURE");
    assert_eq!(deliver(&gw, &ep, &key3, "msg_11", now(), body).await.status, 200);

    // Another org's admin cannot see or touch the endpoint.
    let (_, other) = admin(&gw, "Other").await;
    let r = gw.req("POST", &format!("/v1/webhook-endpoints/{ep}/rotate")).token(&other).send().await;
    assert_error(&r, 404, "NOT_FOUND");
    let r = gw.req("DELETE", &format!("/v1/webhook-endpoints/{ep}")).token(&other).send().await;
    assert_error(&r, 404, "NOT_FOUND");
    let r = gw.req("GET", &format!("/v1/webhook-events/{event}")).token(&other).send().await;
    assert_error(&r, 404, "NOT_FOUND");
    let r = gw.req("GET", "/v1/webhook-endpoints").token(&other).send().await;
    assert_eq!(r.json["endpoints"], json!([]));

    // Disabled: deliveries are refused as unknown.
    let r = gw.req("DELETE", &format!("/v1/webhook-endpoints/{ep}")).token(&admin_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_error(&deliver(&gw, &ep, &key3, "msg_12", now(), body).await, 404, "NOT_FOUND");

    // Exactly the accepted deliveries were stored, and no secret reached the log.
    let pool = db.owner_pool().await;
    assert_eq!(count(&pool, "SELECT count(*) FROM webhook_events").await, 4);
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, 4);
    let logs = gw.stdout();
    for s in [&secret[6..], secret.as_str()] {
        assert!(!logs.contains(s), "a secret was logged");
    }
}

#[tokio::test]
async fn hmac_provider_signatures_and_event_keys_from_the_body() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let (_, admin_token) = admin(&gw, "Acme").await;
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&admin_token).json(&json!({"provider": "generic", "scheme": "hmac-sha256"})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["signature_header"], "x-webhook-signature");
    let ep = r.json["endpoint_id"].as_str().unwrap().to_string();
    let key = r.json["secret"].as_str().unwrap().as_bytes().to_vec();
    let send = |body: &'static [u8], sig: String| {
        let gw = &gw;
        let path = format!("/v1/webhooks/{ep}");
        async move { gw.req("POST", &path).header("x-webhook-signature", &sig).body(body.to_vec()).send().await }
    };
    let body: &[u8] = br#"{"id":"m1","type":"email.sent","lead":{"n":1}}"#;
    let r = send(body, sign_hex(&key, body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["event_id"].is_string());
    // Same message id and type (key `m1:email.sent`), even with another body: a duplicate.
    let again: &[u8] = br#"{"type":"email.sent","id":"m1"}"#;
    assert_eq!(send(again, sign_hex(&key, again)).await.json["duplicate"], true);
    // Another type for the same message is another event.
    let opened: &[u8] = br#"{"id":"m1","type":"email.opened"}"#;
    assert!(send(opened, sign_hex(&key, opened)).await.json["event_id"].is_string());
    assert_error(&send(body, sign_hex(&key, b"something else")).await, 401, "INVALID_SIGNATURE");
    assert_error(&send(body, sign_hex(b"wrong secret", body)).await, 401, "INVALID_SIGNATURE");
    let r = gw.req("POST", &format!("/v1/webhooks/{ep}")).body(body.to_vec()).send().await;
    assert_error(&r, 401, "INVALID_SIGNATURE");
    // Verified, but the body cannot be keyed: refused, nothing stored.
    let no_id: &[u8] = br#"{"type":"email.sent"}"#;
    assert_error(&send(no_id, sign_hex(&key, no_id)).await, 400, "VALIDATION_FAILED");
    let not_json: &[u8] = b"id=m1";
    assert_error(&send(not_json, sign_hex(&key, not_json)).await, 400, "INVALID_JSON");
    let pool = db.owner_pool().await;
    assert_eq!(count(&pool, "SELECT count(*) FROM webhook_events").await, 2);
}

#[tokio::test]
async fn fifty_concurrent_copies_store_one_event_and_one_job() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let (_, admin_token) = admin(&gw, "Acme").await;
    let (ep, secret) = endpoint(&gw, &admin_token, "generic", "standard-webhooks").await;
    let key = whsec_key(&secret);
    let body = br#"{"id":"same","type":"t"}"#;
    let ts = now();
    let all = futures::future::join_all((0..50).map(|_| deliver(&gw, &ep, &key, "msg_same", ts, body))).await;
    let fresh: Vec<_> = all.iter().filter(|r| r.json["event_id"].is_string()).collect();
    assert!(all.iter().all(|r| r.status == 200), "{:?}", all.iter().map(|r| &r.text).collect::<Vec<_>>());
    assert_eq!(fresh.len(), 1);
    assert_eq!(all.iter().filter(|r| r.json["duplicate"] == true).count(), 49);
    let pool = db.owner_pool().await;
    assert_eq!(count(&pool, "SELECT count(*) FROM webhook_events").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, 1);
}

#[tokio::test]
async fn failing_adapters_are_retried_dead_lettered_and_replayed_once_fixed() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("probe.toml", PROBE_PROVIDER);
    let gw = Gateway::start_with(opts).await;
    let (_, admin_token) = admin(&gw, "Acme").await;
    let (ep, secret) = endpoint(&gw, &admin_token, "probe", "standard-webhooks").await;
    let key = whsec_key(&secret);

    // Fails attempts 1 and 2, succeeds on 3: processed once, three attempts, three runs.
    let r = deliver(&gw, &ep, &key, "flaky_1", now(), br#"{"succeed_on_attempt":3}"#).await;
    let recovering = r.json["event_id"].as_str().unwrap().to_string();
    // Always fails: dead after max_attempts (3).
    let r = deliver(&gw, &ep, &key, "broken_1", now(), br#"{"then":"error"}"#).await;
    let broken = r.json["event_id"].as_str().unwrap().to_string();

    let e = wait_status(&gw, &admin_token, &recovering, "processed", Duration::from_secs(30)).await;
    assert_eq!(e["attempts"], 3, "{e}");
    let e = wait_status(&gw, &admin_token, &broken, "dead", Duration::from_secs(30)).await;
    assert_eq!(e["attempts"], 3, "{e}");
    assert!(e["last_error"].as_str().unwrap().contains("PROBE_CONFLICT"), "{e}");

    let pool = db.owner_pool().await;
    let runs: Vec<(String, i32)> = sqlx::query_as(
        "SELECT r.status, r.attempt FROM agent_runs r JOIN jobs j ON j.id = r.job_id WHERE j.ref_id = $1::uuid ORDER BY r.attempt",
    )
    .bind(&recovering)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(runs, vec![("failed".into(), 1), ("failed".into(), 2), ("succeeded".into(), 3)]);

    let r = gw.req("GET", "/v1/webhook-events?status=dead").token(&admin_token).send().await;
    let dead: Vec<_> = r.json["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(dead, vec![broken.clone()]);
    assert_error(&gw.req("GET", "/v1/webhook-events?status=odd").token(&admin_token).send().await, 400, "VALIDATION_FAILED");
    // Only dead events are replayed.
    let r = gw.req("POST", &format!("/v1/webhook-events/{recovering}/replay")).token(&admin_token).send().await;
    assert_error(&r, 409, "CONFLICT");

    // Fix the adapter (a new version through the registry), then replay: processed once.
    let fixed = std::fs::read(crate::harness::plugin_dir().join("echo.wasm")).unwrap();
    let r = gw
        .req("PUT", "/v1/admin/plugins/flaky?activate=true")
        .token(&gw.super_token)
        .header("content-type", "application/wasm")
        .body(fixed)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = gw.req("POST", &format!("/v1/webhook-events/{broken}/replay")).token(&admin_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = wait_status(&gw, &admin_token, &broken, "processed", Duration::from_secs(30)).await;
    assert_eq!(e["attempts"], 1, "{e}");
    assert_eq!(count(&pool, "SELECT count(*) FROM agent_runs WHERE status = 'succeeded'").await, 2);
}

#[tokio::test]
async fn acknowledged_events_survive_a_sigkill_before_processing() {
    let db = TestDb::new().await;
    // No workers: acknowledged events wait in the queue.
    let (mut gw, restart) = start_without_workers(&db).await;
    let (_, admin_token) = admin(&gw, "Acme").await;
    let (ep, secret) = endpoint(&gw, &admin_token, "generic", "standard-webhooks").await;
    let key = whsec_key(&secret);
    let mut events = Vec::new();
    for i in 0..5 {
        let body = format!(r#"{{"id":"e{i}","type":"t"}}"#);
        let r = deliver(&gw, &ep, &key, &format!("crash_{i}"), now(), body.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        events.push(r.json["event_id"].as_str().unwrap().to_string());
    }
    // One job was claimed by a worker that then died: its lease has run out.
    let pool = db.owner_pool().await;
    sqlx::query("UPDATE jobs SET status = 'processing', attempts = 1, locked_by = 'dead-worker', run_at = now() - interval '1 second' WHERE ref_id = $1::uuid")
        .bind(&events[0])
        .execute(&pool)
        .await
        .unwrap();
    gw.kill9().await;

    let gw = Gateway::start_with(restart).await;
    for e in &events {
        wait_status(&gw, &admin_token, e, "processed", Duration::from_secs(30)).await;
    }
    let e = wait_status(&gw, &admin_token, &events[0], "processed", Duration::from_secs(1)).await;
    assert_eq!(e["attempts"], 2, "the expired lease was re-claimed: {e}");
}

#[tokio::test]
async fn one_org_with_ten_thousand_queued_jobs_does_not_delay_another() {
    let db = TestDb::new().await;
    // Workers start only after the backlog is in place.
    let (mut gw, restart) = start_without_workers(&db).await;
    let (busy_org, busy_admin) = admin(&gw, "Busy").await;
    let (busy_ep, _) = endpoint(&gw, &busy_admin, "generic", "standard-webhooks").await;
    let (_, quiet_admin) = admin(&gw, "Quiet").await;
    let (quiet_ep, quiet_secret) = endpoint(&gw, &quiet_admin, "generic", "standard-webhooks").await;
    gw.terminate().await;

    let pool = db.owner_pool().await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(&busy_org).execute(&mut *tx).await.unwrap();
    sqlx::query(
        "WITH e AS (INSERT INTO webhook_events (tenant_id, endpoint_id, provider, event_key, body) \
                    SELECT $1::uuid, $2::uuid, 'generic', 'bulk_' || g, convert_to('{\"id\":\"' || g || '\"}', 'UTF8') \
                    FROM generate_series(1, 10000) g RETURNING id) \
         INSERT INTO jobs (tenant_id, kind, ref_id, max_attempts) SELECT $1::uuid, 'webhook', id, 5 FROM e",
    )
    .bind(&busy_org)
    .bind(&busy_ep)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let gw = Gateway::start_with(restart).await;
    let sent = Instant::now();
    let r = deliver(&gw, &quiet_ep, &whsec_key(&quiet_secret), "quiet_1", now(), br#"{"id":"q","type":"t"}"#).await;
    let event = r.json["event_id"].as_str().unwrap().to_string();
    wait_status(&gw, &quiet_admin, &event, "processed", Duration::from_secs(10)).await;
    let waited = sent.elapsed();
    let busy_left = count(&pool, "SELECT count(*) FROM jobs WHERE status <> 'done'").await;
    eprintln!("quiet org's job processed after {waited:?}; busy org still has {busy_left} jobs queued");
    assert!(busy_left > 1000, "the busy org's backlog must still be there for this to mean anything ({busy_left})");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn ingress_counts_against_the_orgs_quota_and_not_against_anothers() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("zz-small.toml", "[plans.small]\nper_org = { rate = \"5/m\", burst = 5 }\n");
    let gw = Gateway::start_with(opts).await;
    let mut endpoints = Vec::new();
    for name in ["Noisy", "Quiet"] {
        let org = gw.create_org(name, Some("small")).await;
        let (t, _, _) = gw.create_token(&org, "admin", &format!("a@{name}.test")).await;
        // Managing endpoints counts too: one request of the quota.
        endpoints.push(endpoint(&gw, &t, "generic", "standard-webhooks").await);
    }
    let (noisy_ep, noisy_secret) = &endpoints[0];
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = deliver(&gw, noisy_ep, &whsec_key(noisy_secret), &format!("n{i}"), now(), b"{}").await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.code(), "RATE_LIMITED");
            assert!(r.header("retry-after").is_some());
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 4, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 4, "{statuses:?}");
    let (quiet_ep, quiet_secret) = &endpoints[1];
    assert_eq!(deliver(&gw, quiet_ep, &whsec_key(quiet_secret), "q1", now(), b"{}").await.status, 200);
    let pool = db.owner_pool().await;
    assert_eq!(count(&pool, "SELECT count(*) FROM webhook_events").await, 5);
}

/// Production should not connect as a superuser (superusers bypass row-level security, even
/// forced). With an ordinary owner role, RLS applies to the owner too, and the two cross-tenant
/// operations (resolving an endpoint, claiming jobs) must go through the owner's
/// `platform_access` policies: the whole webhook path is run here that way.
#[tokio::test]
async fn the_whole_path_works_when_the_owner_role_is_not_a_superuser() {
    let db = TestDb::new().await;
    let owner = format!("gw_owner_{}", &db.name[2..14]);
    let admin = db.owner_pool().await;
    sqlx::query(&format!("CREATE ROLE {owner} LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE")).execute(&admin).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {} OWNER TO {owner}", db.name)).execute(&admin).await.unwrap();
    let url = db.url().replacen("postgres://postgres@", &format!("postgres://{owner}@"), 1);
    let mut opts = GatewayOptions::new(&db);
    opts.database_url = Some(url.clone());
    let gw = Gateway::start_with(opts).await;
    let (_, admin_token) = admin_org(&gw).await;
    let (ep, secret) = endpoint(&gw, &admin_token, "generic", "standard-webhooks").await;
    let r = deliver(&gw, &ep, &whsec_key(&secret), "m1", now(), br#"{"id":"1","type":"t"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let event = r.json["event_id"].as_str().unwrap().to_string();
    wait_status(&gw, &admin_token, &event, "processed", Duration::from_secs(20)).await;

    // The owner itself, outside a tenant and without the platform scope, sees no tenant rows.
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let (superuser,): (bool,) = sqlx::query_as("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetch_one(&pool).await.unwrap();
    assert!(!superuser);
    for t in ["webhook_endpoints", "webhook_events", "jobs", "agent_runs"] {
        assert_eq!(count(&pool, &format!("SELECT count(*) FROM {t}")).await, 0, "{t} visible to the owner");
    }
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.scope', 'platform', true)").execute(&mut *tx).await.unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(jobs, 1, "the platform scope is how the owner claims jobs");
    // The attempt log has no platform policy: even in that scope the owner sees none of it.
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_runs").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(runs, 0);
    tx.rollback().await.unwrap();
}

async fn admin_org(gw: &Gateway) -> (String, String) {
    admin(gw, "Acme").await
}

#[tokio::test]
async fn an_adapters_writes_and_its_jobs_completion_commit_in_one_transaction() {
    let (db, pool) = crate::contract_wit::probe_db().await;
    let mut opts = GatewayOptions::new(&db);
    // The probe adapter may write `probe_items`.
    opts.policies = policies_with("probe.toml", &format!("{PROBE_PROVIDER}\n[route.grants]\ntables = {{ probe_items = \"write\" }}\n"));
    let gw = Gateway::start_with(opts).await;
    let (_, admin_token) = admin(&gw, "Acme").await;
    let (ep, secret) = endpoint(&gw, &admin_token, "probe", "standard-webhooks").await;
    let body = br#"{"steps": [{"insert": {"table": "probe_items", "columns": ["name"], "rows": [[{"text": "from-webhook"}]]}}]}"#;
    let r = deliver(&gw, &ep, &whsec_key(&secret), "w1", now(), body).await;
    let event = r.json["event_id"].as_str().unwrap().to_string();
    wait_status(&gw, &admin_token, &event, "processed", Duration::from_secs(20)).await;
    // Same transaction id on the adapter's row, the attempt record and the job's completion.
    let xids: (String, String, String) = sqlx::query_as(
        "SELECT (SELECT xmin::text FROM probe_items WHERE name = 'from-webhook'), \
                (SELECT xmin::text FROM agent_runs WHERE status = 'succeeded'), \
                (SELECT xmin::text FROM jobs WHERE ref_id = $1::uuid AND status = 'done')",
    )
    .bind(&event)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(xids.0, xids.1, "{xids:?}");
    assert_eq!(xids.0, xids.2, "{xids:?}");
}
