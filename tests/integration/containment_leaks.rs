//! Containment: what one tenant's plugin can learn about, or say in the name of, another.
//! Driven by the `hostile` plugin on a test route: another org's primary key must look like
//! any fresh value (no existence oracle), a plugin's log text must stay on its own line,
//! tagged with its own org, and a log flood must cost at most the invocation's budget.

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::contract_wit::Probe;
use crate::harness::{assert_error, policies_with, Gateway, GatewayOptions, TestDb};

const HOSTILE_POLICY: &str = r#"
[plugins.hostile]
file = "hostile.wasm"
version = "hostile-1"

[[route]]
id = "hostile"
method = "POST"
path = "/v1/hostile"
target = "plugin:hostile"
roles = ["member", "admin"]

[route.sandbox]
cpu_ms = 2000
timeout_ms = 10000

[route.grants]
tables = { crm_contacts = "write" }
"#;

/// The per-invocation log budget (`plugin::host::log::BUDGET`).
const LOG_BUDGET: usize = 64 * 1024;

struct Hostile {
    _db: TestDb,
    pool: PgPool,
    gw: Gateway,
    org_a: String,
    org_b: String,
    a: String,
}

impl Hostile {
    async fn start(extra_env: &[(&str, &str)]) -> Hostile {
        let db = TestDb::new().await;
        let mut opts = GatewayOptions::new(&db);
        opts.policies = policies_with("hostile.toml", HOSTILE_POLICY);
        opts.extra_env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let gw = Gateway::start_with(opts).await;
        let pool = db.owner_pool().await;
        let org_a = gw.create_org("A", Some("unmetered")).await;
        let org_b = gw.create_org("B", Some("unmetered")).await;
        let (a, _, _) = gw.create_token(&org_a, "admin", "a@a.test").await;
        Hostile { _db: db, pool, gw, org_a, org_b, a }
    }

    async fn call(&self, rid: &str, body: &Value) -> crate::harness::Resp {
        self.gw.req("POST", "/v1/hostile").token(&self.a).header("x-request-id", rid).json(body).send().await
    }

    async fn contacts(&self, org: &str) -> Vec<(Uuid, Option<String>)> {
        sqlx::query_as("SELECT id, name FROM crm_contacts WHERE tenant_id = $1::uuid ORDER BY name")
            .bind(org)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

/// What a refusal tells the plugin's caller, without what differs per request.
fn answer(r: &crate::harness::Resp) -> (u16, Value, Value) {
    (r.status, r.json["error_code"].clone(), r.json["details"].clone())
}

#[tokio::test]
async fn another_orgs_primary_key_looks_like_any_fresh_value() {
    let h = Hostile::start(&[]).await;
    let theirs = Uuid::new_v4();
    sqlx::query("INSERT INTO crm_contacts (id, tenant_id, name) VALUES ($1, $2::uuid, 'b-contact')")
        .bind(theirs)
        .bind(&h.org_b)
        .execute(&h.pool)
        .await
        .unwrap();
    let fresh = Uuid::new_v4();
    let insert = |id: Uuid| json!({"mode": "insert-pk", "row": {"id": {"uuid": id.to_string()}, "name": "probe"}});

    let on_theirs = h.call("pk-theirs", &insert(theirs)).await;
    let on_fresh = h.call("pk-fresh", &insert(fresh)).await;
    assert_error(&on_theirs, 409, "HOSTILE_DB_ERROR");
    assert_eq!(on_theirs.json["details"], json!({"error": "invalid", "detail": "column id is assigned by the database"}));
    assert_eq!(answer(&on_theirs), answer(&on_fresh));
    assert_eq!(on_theirs.json["error"], on_fresh.json["error"]);

    // The plugin's own view (it goes on after the refusal and answers 200 with what it got).
    let mut body = insert(theirs);
    body["on_error"] = "ok".into();
    let seen_theirs = h.call("pk-theirs-ok", &body).await;
    body["row"]["id"]["uuid"] = fresh.to_string().into();
    let seen_fresh = h.call("pk-fresh-ok", &body).await;
    assert_eq!(seen_theirs.status, 200, "{}", seen_theirs.text);
    assert_eq!(seen_theirs.json, seen_fresh.json);
    assert_eq!(seen_theirs.json["error"], "invalid");

    // An upsert that would overwrite the key, keyed on it or not: the same refusal.
    for (target, rid) in [(json!(["id"]), "pk-upsert-id"), (json!(["name"]), "pk-upsert-name")] {
        let r = h.call(rid, &json!({"mode": "insert-pk", "row": {"name": "probe"}, "on_conflict": target, "update": ["id"]})).await;
        assert_eq!(answer(&r), answer(&on_fresh), "{}", r.text);
    }

    // Nothing was written, and B's contact is as it was.
    assert_eq!(h.contacts(&h.org_a).await, vec![]);
    assert_eq!(h.contacts(&h.org_b).await, vec![(theirs, Some("b-contact".into()))]);

    // Control: the route can write, and the database picks the key.
    let r = h.call("pk-none", &json!({"mode": "insert-pk", "row": {"name": "mine"}, "returning": ["id", "name"]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id: Uuid = r.json["rows"][0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(h.contacts(&h.org_a).await, vec![(id, Some("mine".into()))]);
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn update_and_delete_past_db_max_rows_abort_even_without_returning() {
    // contract-probe's route: db_max_rows = 5 on probe_items.
    let mut p = Probe::start().await;
    let rows: Vec<Value> = (0..5).map(|i| json!([{"text": format!("r{i}")}, {"int": 1}])).collect();
    let insert = json!({"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": rows}});
    assert_eq!(p.results(&p.a, json!([insert])).await[0]["ok"]["affected"], 5);
    let sixth = json!({"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": [[{"text": "r5"}, {"int": 1}]]}});
    p.results(&p.a, json!([sixth])).await;

    // Within the cap: committed.
    let five = json!([{"column": "name", "op": "ne", "value": {"text": "r5"}}]);
    let r = p.results(&p.a, json!([{"update": {"table": "probe_items", "set": {"qty": {"int": 2}}, "filters": five}}])).await;
    assert_eq!(r[0]["ok"]["affected"], 5);
    assert_eq!(count(&p.pool, "SELECT count(*) FROM probe_items WHERE qty = 2").await, 5);

    // Six rows and nothing returned: the call fails, the invocation cannot commit (its
    // answer becomes 502), nothing changes.
    let r = p.run(&p.a, json!([{"update": {"table": "probe_items", "set": {"qty": {"int": 3}}}}]), "ok").await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    assert_eq!(count(&p.pool, "SELECT count(*) FROM probe_items WHERE qty = 3").await, 0);
    let r = p.run(&p.a, json!([{"delete": {"table": "probe_items"}}]), "ok").await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    assert_eq!(count(&p.pool, "SELECT count(*) FROM probe_items").await, 6);
    p.gw.terminate().await;
    let failed = p.gw.stderr().lines().filter(|l| l.contains(r#""outcome":"answered_after_failed_statement""#)).count();
    assert_eq!(failed, 2, "both answers came after a failed statement, not a trap");
}

/// True when `line` looks like the start of an access line, in either log format.
fn starts_like_an_access_line(line: &str) -> bool {
    let text = line.split_whitespace().take(3).collect::<Vec<_>>();
    line.starts_with("2026-11-23T00:00:00Z")
        || text.get(2).is_some_and(|t| t.starts_with("gateway::access") || *t == "access")
        || text.get(1) == Some(&"access")
}

#[tokio::test]
async fn plugin_log_text_cannot_forge_a_line_for_another_org() {
    // Text format: the one where a newline would start a line of the plugin's choosing.
    let mut h = Hostile::start(&[("GATEWAY_LOG_FORMAT", "text")]).await;
    let victim = h.org_b.clone();
    let r = h.call("forge-text", &json!({"mode": "log-forge", "victim_org": victim})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["channels"], json!(["log", "stdout", "stderr"]));
    h.gw.terminate().await;
    let log = h.gw.stderr();
    assert!(!log.contains('\x1b') && !log.contains('\r') && !log.contains('\u{2028}'), "raw control characters in the log");

    let (mut plugin_lines, mut naming_victim) = (0, 0);
    for line in log.lines() {
        assert!(!starts_like_an_access_line(line) || !line.contains(&victim), "forged: {line}");
        assert!(!line.starts_with('{') && !line.starts_with('"'), "forged: {line}");
        if line.contains(" gateway::plugin: ") {
            // The host's tags come first: the first org and request id a reader finds are the
            // real ones, whatever the plugin wrote after them.
            let after = |key: &str| line.split(key).nth(1).unwrap_or("").to_string();
            assert!(after(" org_id=").starts_with(&h.org_a), "{line}");
            assert!(after(" request_id=").starts_with("forge-text "), "{line}");
            plugin_lines += 1;
            naming_victim += usize::from(line.contains(&victim));
        } else {
            assert!(!line.contains(&victim) || line.contains(" org_created "), "{line}");
        }
    }
    // log.emit, then stdout and stderr: "innocent", the forged line, the JSON one.
    assert_eq!((plugin_lines, naming_victim), (7, 5), "{log}");

    // The forged text is there, escaped, on the emit line; fields are nested and prefixed.
    let emit = log.lines().find(|l| l.contains("innocent\\n")).expect("the emit line");
    assert!(emit.contains(&format!(" ERROR gateway::plugin: plugin_log request_id=forge-text org_id={} plugin=hostile text=\"innocent\\n", h.org_a)), "{emit}");
    assert!(emit.contains(&format!(r"innocent\n2026-11-23T00:00:00Z INFO access org_id={victim} request_id=forged")), "{emit}");
    assert!(emit.contains(r"status=200\r\n2026-11-23T00:00:00Z INFO access"), "{emit}");
    assert!(emit.contains(r"\u{2028}"), "{emit}");
    assert!(emit.contains(&format!("field_org_id={victim}")), "{emit}");
    assert!(emit.contains("field_request_id=forged") && emit.contains("field_plugin=echo"), "{emit}");
    assert!(emit.contains(r"k_2026-11-23T00_00_00Z_INFO_access_org_id_"), "{emit}");
    assert!(emit.contains(r"\\x1b[2K\\r\\x1b[1A"), "{emit}");
    // The host's own tags: once each, and this org's.
    assert_eq!(emit.matches(" request_id=forge-text").count(), 1, "{emit}");
    assert_eq!(emit.matches(&format!(" org_id={}", h.org_a)).count(), 1, "{emit}");
    assert_eq!(emit.matches(" plugin=hostile").count(), 1, "{emit}");
}

#[tokio::test]
async fn plugin_log_json_lines_stay_one_object_each_with_the_real_org() {
    let mut h = Hostile::start(&[]).await;
    let victim = h.org_b.clone();
    let r = h.call("forge-json", &json!({"mode": "log-forge", "victim_org": victim})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    h.gw.terminate().await;
    let log = h.gw.stderr();
    let mut plugin_lines = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        if v["message"] == "org_created" {
            continue;
        }
        assert_ne!(v["org_id"], victim.as_str(), "{line}");
        if line.contains(&victim) {
            assert_eq!(v["target"], "gateway::plugin", "{line}");
            assert_eq!(v["org_id"], h.org_a.as_str(), "{line}");
            assert_eq!(v["request_id"], "forge-json", "{line}");
            plugin_lines += 1;
        }
    }
    assert_eq!(plugin_lines, 5, "{log}");
}

#[tokio::test]
async fn a_log_flood_costs_at_most_the_budget_and_one_summary_line() {
    let mut h = Hostile::start(&[]).await;
    let body = json!({"mode": "log-flood", "lines": 100, "fields": 32, "field_bytes": 4096});
    assert!(serde_json::to_vec(&body).unwrap().len() <= 64);
    let r = h.call("flood-1", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["bytes_sent"], 100 * (64 + 32 * 2 * 4096));
    // The gateway answers others meanwhile, and after.
    let r = h.call("after-flood", &json!({"mode": "ok"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The periodic report (every 10 s while a count grows) gives the totals since start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let total = loop {
        let found = h.gw.stderr().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["message"] == "plugin_log_lines_dropped_total");
        if let Some(v) = found {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "no periodic drop report");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    h.gw.terminate().await;

    let log = h.gw.stderr();
    let mine: Vec<(&str, Value)> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok().map(|v| (l, v)))
        .filter(|(_, v)| v["request_id"] == "flood-1")
        .collect();
    let lines: Vec<&(&str, Value)> = mine.iter().filter(|(_, v)| v["target"] == "gateway::plugin").collect();
    let summaries: Vec<&(&str, Value)> = mine.iter().filter(|(_, v)| v["message"] == "plugin_log_lines_dropped").collect();
    let bytes: usize = lines.iter().map(|(l, _)| l.len() + 1).sum();
    assert!(!lines.is_empty(), "the first lines fit the budget");
    // Each line carries at most the budget's share plus the host's tags (~300 bytes).
    assert!(bytes <= LOG_BUDGET + lines.len() * 400, "{} plugin lines, {bytes} bytes", lines.len());
    assert_eq!(summaries.len(), 1, "{log}");
    let s = &summaries[0].1;
    assert_eq!(s["dropped"], 100 - lines.len() as u64, "{s}");
    assert_eq!(s["over_budget"], s["dropped"], "{s}");
    assert_eq!(s["org_id"], h.org_a.as_str());
    assert_eq!((&total["over_budget"], &total["over_rate"]), (&s["dropped"], &json!(0)), "{total}");
    // The cut lines still hold whole fields, within the line cap.
    for (_, v) in &lines {
        assert_eq!(v["message"], "plugin_log");
        assert_eq!(v["text"], "m".repeat(64));
        assert!(v["fields"].as_str().unwrap().starts_with("f0_kkk"), "{v}");
    }
    assert_eq!(mine.len(), lines.len() + summaries.len() + 1, "plugin lines, the summary and the access line");
}
