//! Rate limits shared by replicas on one database (docs/scaling.md, "Shared limits"): three
//! gateways, one standard-plan user (20/s, burst 20) calling all of them; the store made
//! unreachable (each replica falls back to its share) and back; the same on Redis.

use std::time::{Duration, Instant};

use crate::harness::{wait_for, Gateway, GatewayOptions, RedisServer, Resp, TestDb};

/// What one limit allows over `secs`: burst + rate × t.
fn allowed(burst: f64, rate: f64, secs: f64) -> f64 {
    burst + rate * secs
}

/// A gauge's value in a Prometheus scrape.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Starts `n` gateways on `db` (with `env`) and waits until each counts all `n` as live.
async fn replicas(db: &TestDb, n: usize, env: &[(&str, &str)]) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for _ in 0..n {
        let mut opts = GatewayOptions::new(db);
        opts.extra_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        gws.push(Gateway::start_with(opts).await);
    }
    for gw in &gws {
        wait_for("every replica's heartbeat", gw, || async { (gauge(&gw.scrape().await, "gateway_replicas_live") == Some(n as f64)).then_some(()) }).await;
    }
    gws
}

/// Calls `/v1/whoami` as `token` for `dur`, two callers per gateway, round after round:
/// (admitted, seconds it took, one refusal).
async fn hammer(gws: &[&Gateway], token: &str, dur: Duration) -> (u32, f64, Option<Resp>) {
    let started = Instant::now();
    let callers = gws.iter().flat_map(|gw| [*gw, *gw]).map(|gw| async move {
        let (mut admitted, mut refusal) = (0u32, None);
        while started.elapsed() < dur {
            let r = gw.req("GET", "/v1/whoami").token(token).send().await;
            match r.status {
                200 => admitted += 1,
                429 => refusal = Some(r),
                s => panic!("unexpected {s}: {}", r.text),
            }
        }
        (admitted, refusal)
    });
    let results = futures::future::join_all(callers).await;
    let secs = started.elapsed().as_secs_f64();
    let admitted = results.iter().map(|r| r.0).sum();
    (admitted, secs, results.into_iter().find_map(|r| r.1))
}

fn assert_within(what: &str, admitted: u32, limit: f64) {
    let a = f64::from(admitted);
    eprintln!("{what}: admitted {admitted}, the limit allows {limit:.1} ({:.2}×)", a / limit);
    assert!(a <= 1.2 * limit && a >= 0.6 * limit, "{what}: admitted {admitted}, the limit allows {limit:.1} (bound 0.6× to 1.2×)");
}

#[tokio::test]
async fn three_replicas_hold_one_users_limit_with_correct_headers() {
    let db = TestDb::new().await;
    let gws = replicas(&db, 3, &[]).await;
    let org = gws[0].create_org("Fleet", Some("standard")).await;
    let (token, _, _) = gws[0].create_token(&org, "member", "f@fleet.test").await;
    let all: Vec<&Gateway> = gws.iter().collect();
    let (admitted, secs, refusal) = hammer(&all, &token, Duration::from_secs(4)).await;
    // Per process, three replicas would admit three times this.
    assert_within("three replicas, one user", admitted, allowed(20.0, 20.0, secs));
    let r = refusal.expect("the user was never refused");
    assert_eq!(r.code(), "RATE_LIMITED", "{}", r.text);
    assert_eq!(r.header("ratelimit-policy"), Some("\"user\";q=20;w=1"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(retry, 1, "a 20/s bucket has its next token within a second");
    assert_eq!(r.header("ratelimit"), Some("\"user\";r=0;t=1"));
    for gw in &gws {
        assert_eq!(gauge(&gw.scrape().await, "gateway_ratelimit_store_up"), Some(1.0));
    }
}

#[tokio::test]
async fn an_unreachable_store_leaves_each_replica_its_share_and_sharing_comes_back() {
    let db = TestDb::new().await;
    let gws = replicas(&db, 3, &[]).await;
    let org = gws[0].create_org("Outage", Some("standard")).await;
    let owner = db.owner_pool().await;

    // The store stops answering: its table is locked, every lease times out.
    let mut lock = owner.begin().await.unwrap();
    sqlx::query("LOCK TABLE ratelimit_gcra IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let (probe, _, _) = gws[0].create_token(&org, "member", "probe@outage.test").await;
    for gw in &gws {
        wait_for("the store counted as down", gw, || async {
            gw.req("GET", "/v1/whoami").token(&probe).send().await;
            (gauge(&gw.scrape().await, "gateway_ratelimit_store_up") == Some(0.0)).then_some(())
        })
        .await;
    }
    // One replica alone now admits its share: a third of the limit.
    let (token, _, _) = gws[0].create_token(&org, "member", "a@outage.test").await;
    let (admitted, secs, _) = hammer(&[&gws[1]], &token, Duration::from_secs(3)).await;
    assert_within("one replica's share", admitted, allowed(7.0, 20.0 / 3.0, secs));
    for gw in &gws {
        let said = gw.stderr().matches("shared rate-limit store unreachable").count();
        assert_eq!(said, 1, "the outage is logged once per replica\n{}", gw.stderr());
        assert!(gauge(&gw.scrape().await, "gateway_ratelimit_store_errors_total").is_some_and(|n| n >= 1.0));
    }

    // The store answers again: every replica goes back to it by itself.
    lock.rollback().await.unwrap();
    for gw in &gws {
        wait_for("the store counted as up again", gw, || async {
            (gauge(&gw.scrape().await, "gateway_ratelimit_store_up") == Some(1.0)).then_some(())
        })
        .await;
        assert!(gw.stderr().contains("shared rate-limit store reachable again"), "{}", gw.stderr());
    }
    // Shared again: one replica may admit the whole limit (its share would fail the bound).
    let (token, _, _) = gws[0].create_token(&org, "member", "b@outage.test").await;
    let (admitted, secs, _) = hammer(&[&gws[2]], &token, Duration::from_secs(3)).await;
    assert_within("one replica with the store back", admitted, allowed(20.0, 20.0, secs));
}

#[tokio::test]
async fn on_redis_three_replicas_hold_one_limit_and_a_dead_redis_leaves_each_its_share() {
    let mut redis = RedisServer::start().await;
    let db = TestDb::new().await;
    let url = redis.url();
    let gws = replicas(&db, 3, &[("GATEWAY_RATELIMIT_URL", &url)]).await;
    let org = gws[0].create_org("Redis", Some("standard")).await;
    let (token, _, _) = gws[0].create_token(&org, "member", "a@redis.test").await;
    let all: Vec<&Gateway> = gws.iter().collect();
    let (admitted, secs, refusal) = hammer(&all, &token, Duration::from_secs(4)).await;
    assert_within("three replicas on Redis, one user", admitted, allowed(20.0, 20.0, secs));
    let r = refusal.expect("the user was never refused");
    assert_eq!(r.header("ratelimit-policy"), Some("\"user\";q=20;w=1"));
    assert_eq!(r.header("retry-after"), Some("1"));
    // Nothing went through the database's store.
    let owner = db.owner_pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ratelimit_gcra").fetch_one(&owner).await.unwrap();
    assert_eq!(rows, 0);

    redis.kill().await;
    let (probe, _, _) = gws[0].create_token(&org, "member", "probe@redis.test").await;
    for gw in &gws {
        wait_for("Redis counted as down", gw, || async {
            gw.req("GET", "/v1/whoami").token(&probe).send().await;
            (gauge(&gw.scrape().await, "gateway_ratelimit_store_up") == Some(0.0)).then_some(())
        })
        .await;
    }
    let (token, _, _) = gws[0].create_token(&org, "member", "b@redis.test").await;
    let (admitted, secs, _) = hammer(&[&gws[0]], &token, Duration::from_secs(3)).await;
    assert_within("one replica's share without Redis", admitted, allowed(7.0, 20.0 / 3.0, secs));

    redis.restart().await;
    for gw in &gws {
        wait_for("Redis counted as up again", gw, || async {
            (gauge(&gw.scrape().await, "gateway_ratelimit_store_up") == Some(1.0)).then_some(())
        })
        .await;
    }
    let (token, _, _) = gws[0].create_token(&org, "member", "c@redis.test").await;
    let (admitted, secs, _) = hammer(&[&gws[1]], &token, Duration::from_secs(3)).await;
    assert_within("one replica with Redis back", admitted, allowed(20.0, 20.0, secs));
}
