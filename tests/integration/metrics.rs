//! Metrics: the Prometheus text on the metrics listener moves with the traffic a gateway
//! serves (requests by route id and status, rate limits, plugin outcomes, webhooks, jobs,
//! pools); it is never on the tenant port; `off` turns it off; per-org counts only on demand.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{assert_error, gateway_command, policies_with, Gateway, GatewayOptions, TestDb};
use gateway::webhooks::verify::sign_standard;

const POLICIES: &str = r#"
[plans.small]
per_org = { rate = "1/h", burst = 1 }

[plugins.hostile]
file = "hostile.wasm"

[[route]]
id = "hostile"
method = "POST"
path = "/v1/hostile"
target = "plugin:hostile"
roles = ["member", "admin"]

[route.sandbox]
cpu_ms = 50
timeout_ms = 2000
"#;

/// The value of the series `name` whose labels include every pair in `labels` (summed when
/// several do), or `None` when there is no such series.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = line.rsplit_once(' ').unwrap();
        let (n, l) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
        if n != name || !labels.iter().all(|(k, v)| l.split(',').any(|kv| kv == format!("{k}=\"{v}\""))) {
            continue;
        }
        *found.get_or_insert(0.0) += v.parse::<f64>().unwrap();
    }
    found
}

/// Scrapes until `ready` holds for the text (for what background tasks record), or fails.
pub async fn scrape_until(gw: &Gateway, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = gw.scrape().await;
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_limits_and_plugin_outcomes_move_their_series() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("zz-metrics.toml", POLICIES);
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Busy", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "member", "m@busy.test").await;
    let small = gw.create_org("Small", Some("small")).await;
    let (ts, _, _) = gw.create_token(&small, "member", "m@small.test").await;

    let r = gw.req("POST", "/v1/echo").token(&t).json(&json!({"hi": 1})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_error(&gw.req("POST", "/v1/echo").json(&json!({})).send().await, 401, "UNAUTHENTICATED");
    assert_eq!(gw.req("GET", "/v1/whoami").token(&ts).send().await.status, 200);
    assert_error(&gw.req("GET", "/v1/whoami").token(&ts).send().await, 429, "RATE_LIMITED");
    let r = gw.req("POST", "/v1/hostile").token(&t).json(&json!({"mode": "spin"})).send().await;
    assert_error(&r, 504, "PLUGIN_TIMEOUT");
    let r = gw.req("POST", "/v1/hostile").token(&t).json(&json!({"mode": "trap", "how": "unreachable"})).send().await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    // The tenant port has no /metrics: it is an unknown path there like any other.
    assert_error(&gw.req("GET", "/metrics").send().await, 404, "NOT_FOUND");

    let addr = gw.metrics_addr().await.expect("metrics listener");
    let r = gw.get_on(&addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(gw.get_on(&addr, "/").await.status, 404);
    assert_eq!(gw.get_on(&addr, "/v1/echo").await.status, 404);
    let text = r.text;

    let duration = "http_server_request_duration_seconds_count";
    let req = |method, route, status| value(&text, duration, &[("http_request_method", method), ("http_route", route), ("http_response_status_code", status)]);
    assert_eq!(req("POST", "echo", "200"), Some(1.0), "{text}");
    assert_eq!(req("POST", "echo", "401"), Some(1.0), "{text}");
    assert_eq!(req("GET", "whoami", "200"), Some(1.0), "{text}");
    assert_eq!(req("GET", "whoami", "429"), Some(1.0), "{text}");
    assert_eq!(req("POST", "hostile", "504"), Some(1.0), "{text}");
    assert_eq!(req("POST", "hostile", "502"), Some(1.0), "{text}");
    // Unmatched paths share one route label: the raw path never becomes a series.
    assert_eq!(req("GET", "-", "404"), Some(1.0), "{text}");
    assert!(!text.contains("/metrics\""), "{text}");
    // The buckets are the semantic conventions' (0.005 … 10, then +Inf).
    let echo_buckets = text.lines().filter(|l| l.starts_with("http_server_request_duration_seconds_bucket{") && l.contains(r#"http_route="echo",http_response_status_code="200""#)).count();
    assert_eq!(echo_buckets, 15, "{text}");
    assert_eq!(value(&text, "http_server_active_requests", &[]), Some(0.0), "{text}");

    assert_eq!(value(&text, "gateway_ratelimited_total", &[("scope", "org")]), Some(1.0), "{text}");
    let plugin = |name, outcome| value(&text, "gateway_plugin_invocations_total", &[("plugin", name), ("outcome", outcome)]);
    assert_eq!(plugin("echo", "response"), Some(1.0), "{text}");
    assert_eq!(plugin("hostile", "cpu_deadline"), Some(1.0), "{text}");
    assert_eq!(plugin("hostile", "trap"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "gateway_plugin_duration_seconds_count", &[("plugin", "echo"), ("version", "0.1.0"), ("outcome", "response")]),
        Some(1.0),
        "{text}"
    );
    for pool in ["main", "plugin", "jobs"] {
        for state in ["in_use", "idle"] {
            assert!(value(&text, "gateway_db_pool_connections", &[("pool", pool), ("state", state)]).is_some(), "{pool} {state}: {text}");
        }
    }
    assert!(value(&text, "gateway_db_pool_connections", &[("pool", "main")]).unwrap() >= 1.0, "{text}");
    assert!(!text.contains("gateway_org_requests_total"), "per-org counting is off by default: {text}");
    // The job workers read the queue's depth when they start.
    scrape_until(&gw, "gateway_jobs", |t| value(t, "gateway_jobs", &[("status", "pending")]).is_some()).await;
}

#[tokio::test]
async fn per_org_request_counts_only_with_the_setting() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.extra_env.push(("GATEWAY_METRICS_PER_ORG".into(), "1".into()));
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Counted", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "member", "m@counted.test").await;
    assert_eq!(gw.req("POST", "/v1/echo").token(&t).json(&json!({})).send().await.status, 200);
    assert_eq!(gw.req("POST", "/v1/echo").token(&t).json(&json!({})).send().await.status, 200);
    assert_eq!(gw.req("POST", "/v1/echo").token(&t).header("content-type", "text/plain").body("x").send().await.status / 100, 4);
    let text = gw.scrape().await;
    let org_count = |class| value(&text, "gateway_org_requests_total", &[("org", org.as_str()), ("status_class", class)]);
    assert_eq!(org_count("2xx"), Some(2.0), "{text}");
    assert_eq!(org_count("4xx"), Some(1.0), "{text}");
    // Never on the histogram.
    assert!(!text.lines().any(|l| l.starts_with("http_server_request_duration") && l.contains("org=")), "{text}");
}

#[tokio::test]
async fn webhook_deliveries_and_job_attempts_are_counted() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let org = gw.create_org("Hooks", Some("unmetered")).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "a@hooks.test").await;
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&admin).json(&json!({"provider": "generic", "scheme": "standard-webhooks"})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ep = r.json["endpoint_id"].as_str().unwrap().to_string();
    let key = {
        use base64::Engine;
        let secret = r.json["secret"].as_str().unwrap();
        base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap()
    };
    let deliver = |id: &'static str, key: Vec<u8>| {
        let (gw, ep) = (&gw, ep.clone());
        async move {
            let (ts, body) = (chrono::Utc::now().timestamp(), br#"{"type":"lead.created"}"#.to_vec());
            gw.req("POST", &format!("/v1/webhooks/{ep}"))
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", &ts.to_string())
                .header("webhook-signature", &sign_standard(&key, id, ts, &body))
                .body(body)
                .send()
                .await
        }
    };
    assert_eq!(deliver("evt_1", key.clone()).await.status, 200);
    assert_eq!(deliver("evt_1", key.clone()).await.status, 200);
    assert_error(&deliver("evt_2", b"not the secret".to_vec()).await, 401, "INVALID_SIGNATURE");

    let text = scrape_until(&gw, "the job's attempt", |t| {
        value(t, "gateway_job_attempts_total", &[("kind", "webhook"), ("outcome", "done")]).is_some()
    })
    .await;
    let delivery = |outcome| value(&text, "gateway_webhook_deliveries_total", &[("provider", "generic"), ("outcome", outcome)]);
    assert_eq!(delivery("accepted"), Some(1.0), "{text}");
    assert_eq!(delivery("duplicate"), Some(1.0), "{text}");
    assert_eq!(delivery("invalid_signature"), Some(1.0), "{text}");
    assert_eq!(value(&text, "gateway_job_attempts_total", &[("kind", "webhook"), ("outcome", "done")]), Some(1.0), "{text}");
    // The adapter is a plugin invocation like any other.
    assert_eq!(value(&text, "gateway_plugin_invocations_total", &[("plugin", "echo"), ("outcome", "response")]), Some(1.0), "{text}");
}

#[tokio::test]
async fn off_turns_the_listener_off_and_a_taken_address_stops_start_up() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.extra_env.push(("GATEWAY_METRICS_LISTEN".into(), "off".into()));
    let gw = Gateway::start_with(opts).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.stderr().contains("metrics listener off") {
        assert!(Instant::now() < deadline, "no word of the metrics listener: {}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!gw.data_dir.join("metrics.addr").exists());
    assert_error(&gw.req("GET", "/metrics").send().await, 404, "NOT_FOUND");
    drop(gw);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let mut opts = GatewayOptions::new(&db);
    opts.extra_env.push(("GATEWAY_METRICS_LISTEN".into(), at.clone()));
    let data_dir = opts.data_dir.clone();
    let out = tokio::task::spawn_blocking(move || gateway_command(&opts).arg("serve").stdin(std::process::Stdio::null()).output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("GATEWAY_METRICS_LISTEN={at}")), "{err}");
    // No address left behind for a CLI or a harness to find.
    assert!(!data_dir.join("gateway.addr").exists());
}
