//! Containment: what one tenant's plugin can learn about another. Driven by the `hostile`
//! plugin on a test route: another org's primary key must look like any fresh value (no
//! existence oracle).

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
