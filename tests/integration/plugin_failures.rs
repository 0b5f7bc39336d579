//! A plugin's failures say why (issue #18): the `plugin_failed` log line carries the request
//! id, the outcome, the bounded trap message and the grant the host refused; this replica's
//! recent failures are served to super-admins and printed by `gateway plugin logs`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{assert_error, gateway_command, policies_with, Gateway, GatewayOptions, TestDb};

const POLICY: &str = r#"
[plugins.failing]
file = "contract_probe.wasm"
version = "probe-1"

[[route]]
id = "failing"
method = "POST"
path = "/v1/failing"
target = "plugin:failing"
roles = ["member", "admin"]

[route.sandbox]
cpu_ms = 200
timeout_ms = 5000

[route.grants]
tables = { businesses = "read" }
"#;

async fn failed_line(gw: &Gateway, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hit = gw
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "plugin_failed" && l["request_id"] == request_id);
        if let Some(l) = hit {
            return l;
        }
        assert!(Instant::now() < deadline, "no plugin_failed line for {request_id}\n{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_plugin_502_logs_why_with_the_request_id_and_plugin_logs_lists_recent_failures() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("failing.toml", POLICY);
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Fails", Some("unmetered")).await;
    let (member, _, _) = gw.create_token(&org, "member", "m@fails.test").await;

    // A read of a table the route does not grant, then a panic: 502, and the log says both.
    let r = gw
        .req("POST", "/v1/failing")
        .token(&member)
        .json(&json!({"steps": [{"select": {"table": "crm_contacts", "columns": ["id"]}}], "then": "trap"}))
        .send()
        .await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    let trap_id = r.header("x-request-id").unwrap().to_string();
    let line = failed_line(&gw, &trap_id).await;
    assert_eq!((line["plugin"].as_str(), line["outcome"].as_str(), line["route"].as_str()), (Some("failing"), Some("trap"), Some("failing")), "{line}");
    assert_eq!(line["not_granted"], "table crm_contacts (read)", "{line}");
    assert_eq!(line["org_id"], org.as_str());
    let detail = line["detail"].as_str().unwrap();
    assert!(detail.contains("probe asked to trap") && detail.chars().count() <= 513, "{detail}");

    // Past the CPU deadline.
    let r = gw.req("POST", "/v1/failing").token(&member).json(&json!({"then": "loop"})).send().await;
    assert_eq!(r.status, 504, "{}", r.text);
    let loop_id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(failed_line(&gw, &loop_id).await["outcome"], "cpu_deadline");

    // A plugin's `failed` answer is a 502 with its reason too.
    let r = gw.req("POST", "/v1/failing").token(&member).json(&json!({"succeed_on_attempt": 2})).send().await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    let failed_id = r.header("x-request-id").unwrap().to_string();
    let line = failed_line(&gw, &failed_id).await;
    assert_eq!((line["outcome"].as_str(), line["detail"].as_str()), (Some("handler_failed"), Some("probe fails attempt 0 of 2")), "{line}");
    assert!(line.get("not_granted").is_none_or(Value::is_null), "{line}");

    // Success is not a failure.
    assert_eq!(gw.req("POST", "/v1/failing").token(&member).json(&json!({})).send().await.status, 200);

    // This replica's recent failures, newest first: super-admins only.
    let r = gw.req("GET", "/v1/admin/plugins/failing/failures").token(&member).send().await;
    assert_error(&r, 403, "FORBIDDEN");
    let r = gw.req("GET", "/v1/admin/plugins/failing/failures").token(&gw.super_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["scope"], "replica");
    let ids: Vec<&str> = r.json["failures"].as_array().unwrap().iter().map(|f| f["request_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![failed_id.as_str(), loop_id.as_str(), trap_id.as_str()]);
    let trap = &r.json["failures"][2];
    assert_eq!((trap["outcome"].as_str(), trap["not_granted"].as_str(), trap["version"].as_str()), (Some("trap"), Some("table crm_contacts (read)"), Some("probe-1")), "{trap}");
    let r = gw.req("GET", "/v1/admin/plugins/nothing-here/failures").token(&gw.super_token).send().await;
    assert_eq!((r.status, r.json["failures"].clone()), (200, json!([])), "{}", r.text);

    // `gateway plugin logs`: the same, one line per failure.
    let cli = GatewayOptions::new(&db);
    let out = gateway_command(&cli)
        .args(["plugin", "logs", "failing", "--url", &format!("http://{}", gw.addr), "--token", &gw.super_token])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains(&failed_id) && lines[0].contains("handler_failed"), "{text}");
    assert!(lines[2].contains(&trap_id) && lines[2].contains("not_granted=\"table crm_contacts (read)\"") && lines[2].contains("probe asked to trap"), "{text}");
}
