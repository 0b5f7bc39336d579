//! Faults under the gateway: a replica killed with jobs in hand, a database that stops
//! answering in the middle of a statement, the embedded PostgreSQL killed, and readiness
//! while tenant work holds every connection.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::harness::{assert_error, pg_socket, policies_with, repo_policies, Gateway, GatewayOptions, TestDb};
use crate::webhooks::{start_without_workers, whsec_key};
use gateway::webhooks::verify::sign_standard;

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// An org with an admin token and a `generic` webhook endpoint; `n` acknowledged events.
async fn queued_events(gw: &Gateway, n: usize) -> (String, Vec<String>) {
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (token, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
    let r = gw
        .req("POST", "/v1/webhook-endpoints")
        .token(&token)
        .json(&json!({"provider": "generic", "scheme": "standard-webhooks"}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ep = r.json["endpoint_id"].as_str().unwrap().to_string();
    let key = whsec_key(r.json["secret"].as_str().unwrap());
    let mut events = Vec::new();
    for i in 0..n {
        let (id, ts) = (format!("orphan_{i}"), chrono::Utc::now().timestamp());
        let body = format!(r#"{{"id":"{id}","type":"t"}}"#);
        let r = gw
            .req("POST", &format!("/v1/webhooks/{ep}"))
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", &ts.to_string())
            .header("webhook-signature", &sign_standard(&key, &id, ts, body.as_bytes()))
            .body(body.into_bytes())
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        events.push(r.json["event_id"].as_str().unwrap().to_string());
    }
    (token, events)
}

/// Marks the jobs of `events` as a worker `worker` left them when it died: processing, first
/// attempt, a lease with a minute to run.
async fn orphan(pool: &sqlx::PgPool, events: &[String], worker: &str) {
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.parse().unwrap()).collect();
    let n = sqlx::query(
        "UPDATE jobs SET status = 'processing', attempts = 1, locked_by = $2, run_at = now() + interval '60 seconds' \
         WHERE ref_id = ANY($1)",
    )
    .bind(&ids)
    .bind(worker)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n as usize, events.len());
}

async fn event_status(gw: &Gateway, token: &str, event: &str) -> Value {
    let r = gw.req("GET", &format!("/v1/webhook-events/{event}")).token(token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// Waits until every event is processed; returns how long that took.
async fn wait_processed(gw: &Gateway, token: &str, events: &[String], limit: Duration) -> Duration {
    let started = Instant::now();
    for e in events {
        loop {
            let ev = event_status(gw, token, e).await;
            if ev["status"] == "processed" {
                break;
            }
            assert!(started.elapsed() < limit, "event {e} not processed after {limit:?}: {ev}\n{}", gw.stderr());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    started.elapsed()
}

#[tokio::test]
async fn a_restarted_replica_runs_the_jobs_it_was_killed_holding_at_once() {
    let db = TestDb::new().await;
    let (mut gw, restart) = start_without_workers(&db).await;
    // The name this data directory was given: it survives the restart.
    let replica = std::fs::read_to_string(gw.data_dir.join("replica-id")).unwrap().trim().to_string();
    let (token, events) = queued_events(&gw, 10).await;
    // A worker of this replica held 8 of them (the org's whole concurrency) when it was killed,
    // and still beats in the table as it did then.
    let pool = db.owner_pool().await;
    let dead_worker = format!("{replica}/0123456789ab");
    orphan(&pool, &events[..8], &dead_worker).await;
    sqlx::query("INSERT INTO job_workers (id) VALUES ($1)").bind(&dead_worker).execute(&pool).await.unwrap();
    gw.kill9().await;

    let gw = Gateway::start_with(restart).await;
    // Leases run for 60 s: only releasing them at start-up gets these done in seconds.
    let took = wait_processed(&gw, &token, &events, Duration::from_secs(15)).await;
    assert!(took < Duration::from_secs(15), "{took:?}");
    let e = event_status(&gw, &token, &events[0]).await;
    assert_eq!(e["attempts"], 2, "the orphaned attempt counts: {e}");
    assert!(gw.stderr().contains("job_leases_released"), "{}", gw.stderr());
    assert_eq!(count(&pool, &format!("SELECT count(*) FROM job_workers WHERE id = '{dead_worker}'")).await, 0);
}

#[tokio::test]
async fn a_dead_replicas_jobs_are_released_and_a_live_ones_are_not() {
    let db = TestDb::new().await;
    let (mut gw, restart) = start_without_workers(&db).await;
    let (token, events) = queued_events(&gw, 2).await;
    gw.kill9().await;
    let pool = db.owner_pool().await;
    // Another replica: one of its workers stopped beating 30 s ago, one beats now.
    sqlx::query("INSERT INTO job_workers (id, heartbeat_at) VALUES ('other/dead', now() - interval '30 seconds'), ('other/live', now())")
        .execute(&pool)
        .await
        .unwrap();
    orphan(&pool, &events[..1], "other/dead").await;
    orphan(&pool, &events[1..], "other/live").await;

    let gw = Gateway::start_with(restart).await;
    let took = wait_processed(&gw, &token, &events[..1], Duration::from_secs(8)).await;
    assert!(took < Duration::from_secs(8), "{took:?}");
    // The live worker's job is its own until its heartbeat goes stale (10 s without one).
    let live = event_status(&gw, &token, &events[1]).await;
    assert_eq!(live["status"], "processing", "a live worker's job was taken: {live}");
    let took = wait_processed(&gw, &token, &events[1..], Duration::from_secs(30)).await;
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// A TCP proxy in front of the test cluster that can freeze: once frozen, no byte moves in
/// either direction (on any connection, old or new) until it thaws, as when every PostgreSQL
/// process is stopped. It can freeze itself when a client sends a given statement, so a
/// request is caught inside that statement.
struct FreezingProxy {
    addr: std::net::SocketAddr,
    frozen: watch::Sender<bool>,
    trigger: Arc<Mutex<Option<Vec<u8>>>>,
}

impl FreezingProxy {
    async fn start(socket: PathBuf) -> FreezingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = watch::channel(false);
        let trigger = Arc::new(Mutex::new(None::<Vec<u8>>));
        let (f, t) = (frozen.clone(), trigger.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::UnixStream::connect(&socket).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(relay(cr, sw, f.clone(), Some(t.clone())));
                tokio::spawn(relay(sr, cw, f.clone(), None));
            }
        });
        FreezingProxy { addr, frozen, trigger }
    }

    /// Freezes when the next chunk a client sends contains `statement`.
    fn freeze_on(&self, statement: &str) {
        *self.trigger.lock().unwrap() = Some(statement.as_bytes().to_vec());
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    fn url(&self, db: &TestDb) -> String {
        format!("postgres://postgres@{}/{}", self.addr, db.name)
    }
}

async fn relay(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    frozen: watch::Sender<bool>,
    trigger: Option<Arc<Mutex<Option<Vec<u8>>>>>,
) {
    let mut rx = frozen.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(t) = &trigger {
            let mut armed = t.lock().unwrap();
            if armed.as_ref().is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p.as_slice())) {
                *armed = None;
                frozen.send_replace(true);
            }
        }
        // Held, not dropped: a thawed database carries on where it stopped.
        if rx.wait_for(|f| !*f).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Sends a request, failing the test (rather than hanging it) if no answer comes in `limit`.
async fn answered_within(limit: Duration, req: crate::harness::Req<'_>) -> (crate::harness::Resp, Duration) {
    let started = Instant::now();
    let r = tokio::time::timeout(limit, req.send()).await.unwrap_or_else(|_| panic!("no answer within {limit:?}"));
    (r, started.elapsed())
}

#[tokio::test]
async fn requests_inside_a_statement_when_the_database_freezes_answer_by_their_deadline() {
    let db = TestDb::new().await;
    let proxy = FreezingProxy::start(pg_socket()).await;
    let mut opts = GatewayOptions::new(&db);
    opts.database_url = Some(proxy.url(&db));
    opts.extra_env.push(("GATEWAY_REQUEST_TIMEOUT_MS".into(), "2000".into()));
    // crm-track with a 2 s wall clock (10 s in the shipped policy) keeps the test short.
    let crm = std::fs::read_to_string(repo_policies().join("crm.toml")).unwrap().replace("timeout_ms = 10000", "timeout_ms = 2000");
    opts.policies = policies_with("crm.toml", &crm);
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (token, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;

    // A native route, caught inside its INSERT.
    proxy.freeze_on("INSERT INTO businesses");
    let (r, took) = answered_within(Duration::from_secs(8), gw.req("POST", "/v1/businesses").token(&token).json(&json!({"name": "Frozen"}))).await;
    assert_error(&r, 503, "UNAVAILABLE");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Readiness says so within its staleness bound, and answers at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (r, took) = answered_within(Duration::from_secs(2), gw.req("GET", "/readyz")).await;
        assert!(took < Duration::from_millis(500), "{took:?}");
        if r.status == 503 {
            assert_error(&r, 503, "UNAVAILABLE");
            break;
        }
        assert!(Instant::now() < deadline, "still ready while the database is frozen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.thaw();

    // A plugin route, caught inside one of its statements (the first time it runs, so the
    // statement's text is on the wire rather than a prepared statement's name).
    proxy.freeze_on("crm_contacts");
    let (r, took) = answered_within(
        Duration::from_secs(12),
        gw.req("POST", "/v1/crm/track").token(&token).json(&json!({"type": "frozen", "contact": {"email": "c@d.co"}})),
    )
    .await;
    assert!(r.status == 503 || r.status == 504, "{} {}", r.status, r.text);
    assert!(took < Duration::from_secs(6), "2 s wall clock, 2 s to settle: {took:?}");
    proxy.thaw();

    // Thawed: served again, and nothing of the abandoned requests was committed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = gw.req("POST", "/v1/businesses").token(&token).json(&json!({"name": "After"})).send().await;
        if r.status == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "not served after the thaw: {} {}", r.status, r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = db.owner_pool().await;
    assert_eq!(count(&pool, "SELECT count(*) FROM businesses WHERE name = 'Frozen'").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM crm_events WHERE type = 'frozen'").await, 0);
    assert!(gw.stderr().contains("request_deadline_exceeded") || gw.stderr().contains("plugin_settle_timed_out") || gw.stderr().contains("wall_timeout"), "{}", gw.stderr());
}

#[tokio::test]
async fn readiness_does_not_queue_behind_tenant_work() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.extra_env.push(("GATEWAY_DB_MAX_CONNECTIONS".into(), "2".into()));
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (token, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
    // Warm the credential cache, so the requests below need one connection each.
    assert_eq!(gw.req("GET", "/v1/whoami").token(&token).send().await.status, 200);
    let pool = db.owner_pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE businesses IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let gw = Arc::new(gw);
    let mut blocked = Vec::new();
    for i in 0..4 {
        let (gw, token) = (gw.clone(), token.clone());
        blocked.push(tokio::spawn(async move {
            gw.req("POST", "/v1/businesses").token(&token).json(&json!({"name": format!("b{i}")})).send().await.status
        }));
    }
    // The pool is spent: one connection waits on the lock (the listener holds the other) and
    // the other requests wait for a connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(&pool, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gateway' AND wait_event_type = 'Lock'").await < 1 {
        if Instant::now() > deadline {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT concat_ws(' | ', application_name, state, wait_event_type, left(query, 80)) \
                 FROM pg_stat_activity WHERE datname = current_database()",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            panic!("the pool never filled: {rows:?}\n{}", gw.stderr());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let (r, took) = answered_within(Duration::from_secs(5), gw.req("GET", "/readyz")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(took < Duration::from_millis(300), "readiness waited for the pool: {took:?}");
    }
    lock.rollback().await.unwrap();
    for b in blocked {
        // Served, or refused as unavailable (no connection in time, or the lock timeout).
        let status = b.await.unwrap();
        assert!(status == 201 || status == 503, "{status}");
    }
}

#[tokio::test]
async fn the_embedded_postgresql_killed_under_the_gateway_is_noticed_and_restarted() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    // Its own cluster in its data directory, as `cargo xtask run` does.
    opts.database_url = None;
    let gw = Gateway::start_with(opts).await;
    assert_eq!(gw.create_org("Before", None).await.len(), 36);
    let pid_file = std::fs::read_to_string(gw.data_dir.join("pg/postmaster.pid")).unwrap();
    let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    unsafe { libc::kill(postmaster, libc::SIGKILL) };

    let deadline = Instant::now() + Duration::from_secs(60);
    while !gw.stderr().contains("embedded PostgreSQL exited unexpectedly") {
        assert!(Instant::now() < deadline, "the gateway did not notice: {}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Served again once it is back, and healthy by its own account.
    loop {
        let r = gw.req("POST", "/v1/admin/orgs").token(&gw.super_token).json(&json!({"name": "After"})).send().await;
        if r.status == 201 {
            break;
        }
        assert!(r.status == 503, "{} {}", r.status, r.text);
        assert!(Instant::now() < deadline, "not served again: {}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pool can reach the new postmaster a moment before the supervisor's own probe
    // returns and logs, so the log line is waited for, not assumed.
    while !gw.stderr().contains("embedded PostgreSQL restarted") {
        assert!(Instant::now() < deadline, "the restart was not logged: {}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.req("GET", "/healthz").send().await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.req("GET", "/readyz").send().await.status != 200 {
        assert!(Instant::now() < deadline, "not ready after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
