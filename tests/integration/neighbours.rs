//! Containment: one org's hostile plugin fails its own requests and cannot slow down, starve or
//! reach past another org. The attacker is the `hostile` test plugin on routes declared here;
//! the neighbour is another org using the shipped routes. What is measured (latency) is in
//! `bench/neighbour.sh`; these tests prove the mechanisms.

use serde_json::{json, Value};

use crate::harness::{assert_error, policies_with, Gateway, GatewayOptions, Resp, TestDb};

const HOSTILE: &str = r#"
# Like `standard`, with a CPU budget one core can overdraw.
[plans.tight]
plugin_concurrency = 4
plugin_cpu_ms_per_s = 100

[plugins.hostile]
file = "hostile.wasm"

[[route]]
id = "hostile"
method = "POST"
path = "/v1/hostile"
target = "plugin:hostile"
roles = ["member", "admin"]
response_headers = ["location"]
pass_headers = ["x-api-key"]

[route.sandbox]
cpu_ms = 300
timeout_ms = 5000

[route.grants]
tables = { crm_contacts = "read" }
locks = true

[[route]]
id = "hostile.nolocks"
method = "POST"
path = "/v1/hostile-nolocks"
target = "plugin:hostile"
roles = ["member", "admin"]

[[route]]
id = "hostile.idle"
method = "POST"
path = "/v1/hostile-idle"
target = "plugin:hostile"
roles = ["member", "admin"]

[route.sandbox]
timeout_ms = 5000

[route.grants]
tables = { crm_contacts = "read" }
http_timeout_ms = 100
db_statement_timeout_ms = 100
"#;

struct Scene {
    gw: Gateway,
    attacker: String,
    neighbour: String,
    _db: TestDb,
}

async fn scene(attacker_plan: &str, env: &[(&str, &str)]) -> Scene {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("zz-hostile.toml", HOSTILE);
    opts.extra_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let gw = Gateway::start_with(opts).await;
    let a = gw.create_org("Attacker", Some(attacker_plan)).await;
    let n = gw.create_org("Neighbour", Some("unmetered")).await;
    let (attacker, _, _) = gw.create_token(&a, "member", "mallory@attacker.test").await;
    let (neighbour, _, _) = gw.create_token(&n, "member", "nina@neighbour.test").await;
    Scene { gw, attacker, neighbour, _db: db }
}

impl Scene {
    async fn hostile(&self, path: &str, body: Value) -> Resp {
        self.gw.req("POST", path).token(&self.attacker).json(&body).send().await
    }
    async fn echo(&self) -> Resp {
        self.gw.req("POST", "/v1/echo").token(&self.neighbour).json(&json!({"n": 1})).send().await
    }
}

#[tokio::test]
async fn an_orgs_plugins_are_admitted_by_its_plan_and_its_neighbour_is_served_meanwhile() {
    let s = scene("tight", &[]).await;
    let s = &s;
    // Six invocations that hold their slot for 3 s without CPU: four run, two wait the 2 s
    // queue and are refused.
    let sleepers = futures::future::join_all((0..6).map(|_| s.hostile("/v1/hostile", json!({"mode": "sleep", "ms": 3000}))));
    let neighbour = async {
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(s.echo().await.status);
        }
        seen
    };
    let (sleepers, neighbour) = tokio::join!(sleepers, neighbour);
    assert!(neighbour.iter().all(|st| *st == 200), "neighbour: {neighbour:?}");
    let ok = sleepers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = sleepers.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok, refused.len()), (4, 2), "{:?}", sleepers.iter().map(|r| &r.text).collect::<Vec<_>>());
    assert_error(refused[0], 429, "RATE_LIMITED");
    assert!(refused[0].header("retry-after").is_some());

    // Spinning to the CPU deadline (300 ms each) spends the org's CPU faster than its plan
    // refills it (100 ms/s): it is then refused before its plugin runs, with the wait in
    // Retry-After.
    let mut refused = None;
    for _ in 0..10 {
        let spins = futures::future::join_all((0..4).map(|_| s.hostile("/v1/hostile", json!({"mode": "spin"})))).await;
        for r in &spins {
            assert!(r.status == 504 || r.status == 429, "{}", r.text);
        }
        let r = s.hostile("/v1/hostile", json!({"mode": "ok"})).await;
        if r.status == 429 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the CPU budget never ran out");
    assert_error(&r, 429, "RATE_LIMITED");
    assert!(r.text.contains("CPU budget"), "{}", r.text);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "retry-after {wait}");
    // The neighbour is not charged for any of it.
    assert_eq!(s.echo().await.status, 200);
}

/// A plan with no plugin limits (here `unmetered`) still holds an org to its share of the
/// shared instance pool (`GATEWAY_PLUGIN_INSTANCES_PER_ORG`), so that one org's sleepers can
/// never take every instance from the others.
#[tokio::test]
async fn an_org_without_plan_limits_holds_at_most_its_share_of_the_instance_pool() {
    let s = scene("unmetered", &[("GATEWAY_PLUGIN_INSTANCES_PER_ORG", "3")]).await;
    let s = &s;
    let sleepers = futures::future::join_all((0..6).map(|_| s.hostile("/v1/hostile", json!({"mode": "sleep", "ms": 3000}))));
    let neighbour = async {
        // The neighbour (unmetered too) runs more at once than the attacker's share.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let round = futures::future::join_all((0..4).map(|_| s.echo())).await;
            seen.extend(round.iter().map(|r| r.status));
        }
        seen
    };
    let (sleepers, neighbour) = tokio::join!(sleepers, neighbour);
    assert!(neighbour.iter().all(|st| *st == 200), "neighbour: {neighbour:?}");
    let ok = sleepers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = sleepers.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok, refused.len()), (3, 3), "{:?}", sleepers.iter().map(|r| &r.text).collect::<Vec<_>>());
    assert_error(refused[0], 429, "RATE_LIMITED");
}

#[tokio::test]
async fn advisory_locks_need_a_grant() {
    let s = scene("unmetered", &[]).await;
    let r = s.hostile("/v1/hostile-nolocks", json!({"mode": "lock-sleep", "ms": 0})).await;
    assert_error(&r, 409, "HOSTILE_DB_ERROR");
    assert_eq!(r.json["details"]["error"], "not-granted", "{}", r.text);
    let r = s.hostile("/v1/hostile-nolocks", json!({"mode": "lock-sleep", "wait": true, "ms": 0})).await;
    assert_eq!(r.json["details"]["error"], "not-granted", "{}", r.text);
    let r = s.hostile("/v1/hostile", json!({"mode": "lock-sleep", "ms": 0})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["acquired"], true);
}

#[tokio::test]
async fn one_orgs_held_connections_leave_others_theirs() {
    let s = scene(
        "unmetered",
        &[("GATEWAY_PLUGIN_DB_CONNECTIONS", "4"), ("GATEWAY_PLUGIN_DB_CONNECTIONS_PER_ORG", "2")],
    )
    .await;
    let s = &s;
    // Six invocations each take a lock (a transaction, a connection) and sleep 3 s on it.
    let holders = futures::future::join_all(
        (0..6).map(|i| s.hostile("/v1/hostile", json!({"mode": "lock-sleep", "key": format!("k{i}"), "ms": 3000}))),
    );
    let neighbour = async {
        // Let the holders take their connections first.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // A plugin route that reads the database, and a token no replica has cached yet.
        let events = s.gw.req("GET", "/v1/crm/events?limit=1").token(&s.neighbour).send().await;
        let org = s.gw.create_org("Late", Some("unmetered")).await;
        let (fresh, _, _) = s.gw.create_token(&org, "member", "late@late.test").await;
        let whoami = s.gw.req("GET", "/v1/whoami").token(&fresh).send().await;
        (events, whoami)
    };
    let (holders, (events, whoami)) = tokio::join!(holders, neighbour);
    assert_eq!(events.status, 200, "{}", events.text);
    assert_eq!(whoami.status, 200, "{}", whoami.text);
    // Two at a time hold the org's two slots; the others wait for them within their own 5 s
    // wall clock, and the last ones run out of it.
    let held = holders.iter().filter(|r| r.status == 200).count();
    let timed_out = holders.iter().filter(|r| r.code() == "PLUGIN_TIMEOUT").count();
    assert_eq!((held, timed_out), (2, 4), "{:?}", holders.iter().map(|r| &r.text).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_transaction_left_idle_is_ended_by_the_database() {
    let s = scene("unmetered", &[]).await;
    // Idle bound on this route: max(100 ms, 100 ms) + 1 s. The plugin reads, then sleeps 2.5 s.
    let r = s.hostile("/v1/hostile-idle", json!({"mode": "db-sleep", "ms": 2500})).await;
    assert_ne!(r.status, 200, "an idle transaction committed: {}", r.text);
    assert_error(&r, 503, "UNAVAILABLE");
    // Quick work on the same route is unaffected.
    let r = s.hostile("/v1/hostile-idle", json!({"mode": "db-sleep", "ms": 0})).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn answers_are_capped_and_guarded_headers_need_the_routes_consent() {
    let s = scene("unmetered", &[]).await;
    let r = s.hostile("/v1/hostile", json!({"mode": "big-response", "bytes": 2 * 1024 * 1024})).await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    assert!(r.text.contains("response_limit"), "{}", r.text);
    let r = s.hostile("/v1/hostile", json!({"mode": "big-response", "bytes": 1000})).await;
    assert_eq!(r.status, 200);
    let headers = json!([
        ["set-cookie", "session=stolen"],
        ["strict-transport-security", "max-age=0"],
        ["access-control-allow-origin", "*"],
        ["location", "/elsewhere"],
        ["x-custom", "kept"]
    ]);
    let r = s.hostile("/v1/hostile", json!({"mode": "big-response", "bytes": 100, "headers": headers})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("location"), Some("/elsewhere"), "allowed by response_headers");
    assert_eq!(r.header("x-custom"), Some("kept"));
    for h in ["set-cookie", "strict-transport-security", "access-control-allow-origin"] {
        assert!(r.header(h).is_none(), "{h} passed: {:?}", r.headers);
    }
    let many: Vec<Value> = (0..65).map(|i| json!([format!("x-h{i}"), "v"])).collect();
    let r = s.hostile("/v1/hostile", json!({"mode": "big-response", "bytes": 10, "headers": many})).await;
    assert_error(&r, 502, "PLUGIN_FAILED");
}

#[tokio::test]
async fn plugins_see_callers_credentials_only_where_the_route_passes_them() {
    let s = scene("unmetered", &[]).await;
    let r = s
        .gw
        .req("POST", "/v1/hostile")
        .token(&s.attacker)
        .header("cookie", "session=secret")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-api-key", "passed-on-purpose")
        .header("x-auth-token", "secret")
        .json(&json!({"mode": "headers"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen: Vec<&str> = r.json["headers"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
    assert!(seen.contains(&"x-api-key"), "{seen:?}");
    for h in ["authorization", "cookie", "proxy-authorization", "x-auth-token"] {
        assert!(!seen.contains(&h), "{h} reached the plugin: {seen:?}");
    }
}

#[tokio::test]
async fn an_address_that_keeps_presenting_unknown_credentials_is_refused_before_the_database() {
    let s = scene("unmetered", &[]).await;
    // Known to the cache before the flood.
    assert_eq!(s.echo().await.status, 200);
    // The bucket refills at 10/s, so on a slow (loaded) machine the flood goes on until the
    // refusal comes rather than for a fixed count.
    let mut statuses = Vec::new();
    for i in 0..500 {
        let r = s.gw.req("GET", "/v1/whoami").token(&format!("gw_unknown_{i}")).send().await;
        statuses.push(r.status);
        if r.status == 429 {
            break;
        }
    }
    let first_429 = statuses.iter().position(|st| *st == 429).expect("never refused");
    assert!(statuses[..first_429].iter().all(|st| *st == 401), "{statuses:?}");
    assert!(first_429 >= 40, "refused after only {first_429}: {statuses:?}");
    // A credential the gateway already knows is still served from that address.
    assert_eq!(s.echo().await.status, 200);
    // Unknown webhook endpoints count the same way: refused within the few tokens refilled
    // meanwhile, never as many as the 50 of a full bucket.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let r = s.gw.req("POST", &format!("/v1/webhooks/{}", uuid::Uuid::new_v4())).body("{}").send().await;
        seen.push(r.status);
        if r.status == 429 {
            break;
        }
    }
    assert_eq!(seen.last(), Some(&429), "{seen:?}");
}
