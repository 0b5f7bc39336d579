//! The WIT contract suite: every import of `gateway:plugin@0.1.0`, exercised from inside the
//! sandbox by the `contract-probe` plugin, through the real gateway. For each import: the happy
//! path, another tenant's rows, ungranted tables and columns, identifiers carrying SQL, and the
//! outbound restrictions; then containment: loops, memory bombs and traps mid-transaction.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::harness::{assert_error, plugin_dir, policies_with, tempdir, Gateway, GatewayOptions, TestDb};

const PROBE_POLICY: &str = r#"
[plugins.contract-probe]
file = "contract_probe.wasm"
version = "probe-1"

[[route]]
id = "probe"
method = "POST"
path = "/v1/probe"
target = "plugin:contract-probe"
roles = ["member", "admin"]

[route.sandbox]
memory = "32MiB"
cpu_ms = 300
timeout_ms = 5000

[route.grants]
tables = { probe_items = "write", businesses = "read" }
hosts = [{ url = "http://127.0.0.1:*", allow_private = true }, "http://*:*"]
http_timeout_ms = 2000
http_max_response = "64KiB"
db_max_rows = 5
locks = true
"#;

/// The probe's tables: one granted, one tenant table that is not granted.
const PROBE_SCHEMA: &str = r#"
CREATE TABLE probe_items (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    qty integer,
    props jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT probe_items_name_key UNIQUE (tenant_id, name),
    CONSTRAINT probe_items_qty_positive CHECK (qty IS NULL OR qty >= 0)
);
CREATE TABLE probe_private (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    secret text
);
SELECT app_tenant_table('probe_items');
SELECT app_tenant_table('probe_private');
"#;

pub struct Probe {
    pub pool: PgPool,
    pub gw: Gateway,
    pub org_a: String,
    pub org_b: String,
    pub a: String,
    pub b: String,
}

fn probe_policies(extra: &str) -> PathBuf {
    policies_with("probe.toml", &format!("{PROBE_POLICY}\n{extra}"))
}

/// Which build of the probe a test runs: the current one (built from source against
/// `wit/plugin.wit`), or the one built against `gateway:plugin@0.1.0` as shipped, kept as a
/// binary in `tests/fixtures/wit-0.1.0/` and never rebuilt.
#[derive(Clone, Copy, Debug)]
pub enum Wit {
    Current,
    V0_1,
}

/// The 0.1 build of a shipped plugin (see `tests/fixtures/wit-0.1.0/README.md`).
pub fn wit_0_1(file: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wit-0.1.0").join(file)
}

pub async fn probe_db() -> (TestDb, PgPool) {
    let db = TestDb::new().await;
    let pool = db.owner_pool().await;
    gateway::db::migrate(&pool).await.unwrap();
    sqlx::raw_sql(PROBE_SCHEMA).execute(&pool).await.unwrap();
    (db, pool)
}

impl Probe {
    pub async fn start() -> Probe {
        Probe::start_on(Wit::Current).await
    }

    pub async fn start_on(wit: Wit) -> Probe {
        let (db, pool) = probe_db().await;
        let mut opts = GatewayOptions::new(&db);
        opts.policies = match wit {
            Wit::Current => probe_policies(""),
            Wit::V0_1 => policies_with(
                "probe.toml",
                &PROBE_POLICY.replace("\"contract_probe.wasm\"", &format!("{:?}", wit_0_1("contract_probe.wasm").display().to_string())),
            ),
        };
        let gw = Gateway::start_with(opts).await;
        let org_a = gw.create_org("A", Some("unmetered")).await;
        let org_b = gw.create_org("B", Some("unmetered")).await;
        let (a, _, _) = gw.create_token(&org_a, "admin", "a@a.test").await;
        let (b, _, _) = gw.create_token(&org_b, "admin", "b@b.test").await;
        Probe { pool, gw, org_a, org_b, a, b }
    }

    /// Runs a probe program as `token`; returns the response.
    pub async fn run(&self, token: &str, steps: Value, then: &str) -> crate::harness::Resp {
        self.gw.req("POST", "/v1/probe").token(token).json(&json!({ "steps": steps, "then": then })).send().await
    }

    /// Runs steps that must complete; returns one result per step.
    pub async fn results(&self, token: &str, steps: Value) -> Vec<Value> {
        let r = self.run(token, steps, "ok").await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["results"].as_array().unwrap().clone()
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

fn insert(name: &str) -> Value {
    json!({"insert": {"table": "probe_items", "columns": ["name", "qty", "props"],
        "rows": [[{"text": name}, {"int": 1}, {"json": "{\"idemKey\": \"k-1\"}"}]], "returning": ["id", "name"]}})
}

#[track_caller]
fn err(v: &Value, variant: &str) {
    assert_eq!(v["err"], variant, "{v}");
}

async fn context_reports_the_callers_facts(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let r = p.gw.req("POST", "/v1/probe").token(&p.a).header("x-request-id", "ctx-1")
        .json(&json!({"steps": [{"context": true}]})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-plugin-version"), Some("probe-1"));
    let c = &r.json["results"][0]["ok"];
    assert_eq!(c["org_id"], p.org_a.as_str());
    assert_eq!(c["request_id"], "ctx-1");
    assert_eq!(c["route_id"], "probe");
    assert_eq!(c["plugin_name"], "contract-probe");
    assert_eq!(c["plugin_version"], "probe-1");
    assert!(c["role"].as_str().unwrap().ends_with("Admin"), "{c}");
    assert!(c["user_id"].as_str().is_some());
}

async fn tenant_db_happy_path_select_insert_update_delete_lock(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let r = p.results(&p.a, json!([
        insert("alpha"),
        insert("beta"),
        {"lock": "contact:alpha"},
        {"try_lock": "contact:alpha"},
        {"select": {"table": "probe_items", "columns": ["name", "qty", "props", "created_at"],
            "filters": [{"column": "props", "path": ["idemKey"], "op": "eq", "value": {"text": "k-1"}}],
            "order_by": [{"column": "name", "desc": true}], "limit": 10}},
        {"update": {"table": "probe_items", "set": {"qty": {"int": 7}},
            "filters": [{"column": "name", "op": "eq", "value": {"text": "alpha"}}], "returning": ["name", "qty"]}},
        {"delete": {"table": "probe_items", "filters": [{"column": "name", "op": "eq", "value": {"text": "beta"}}], "returning": ["name"]}},
        {"select": {"table": "probe_items", "columns": ["name", "qty"], "for_update": true}},
    ])).await;
    assert_eq!(r[0]["ok"]["rows"][0][1], "alpha");
    assert_eq!(r[2]["ok"], Value::Null);
    // Already ours in this transaction: advisory locks are re-entrant.
    assert_eq!(r[3]["ok"], true);
    let sel = &r[4]["ok"];
    assert_eq!(sel["columns"], json!(["name", "qty", "props", "created_at"]));
    assert_eq!(sel["rows"][0][0], "beta");
    assert_eq!(sel["rows"][1][0], "alpha");
    assert_eq!(sel["rows"][0][2], json!({"idemKey": "k-1"}));
    assert!(sel["rows"][0][3].as_str().unwrap().ends_with('Z'));
    assert_eq!(r[5]["ok"]["rows"], json!([["alpha", 7]]));
    assert_eq!(r[6]["ok"]["affected"], 1);
    assert_eq!(r[7]["ok"]["rows"], json!([["alpha", 7]]));
    // Committed, with the caller's tenant set by the host.
    let n = p.count(&format!("SELECT count(*) FROM probe_items WHERE tenant_id = '{}' AND name = 'alpha' AND qty = 7", p.org_a)).await;
    assert_eq!(n, 1);
}

async fn tenant_db_on_conflict_do_nothing_and_do_update(wit: Wit) {
    let p = Probe::start_on(wit).await;
    p.results(&p.a, json!([insert("same")])).await;
    let r = p.results(&p.a, json!([
        {"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": [[{"text": "same"}, {"int": 5}]],
            "on_conflict": {"target": ["name"]}, "returning": ["name"]}},
        {"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": [[{"text": "same"}, {"int": 9}]],
            "on_conflict": {"target": ["name"], "update": ["qty"]}, "returning": ["name", "qty"]}},
    ])).await;
    assert_eq!(r[0]["ok"]["affected"], 0);
    assert_eq!(r[1]["ok"]["rows"], json!([["same", 9]]));
    // The same name in another tenant is another row: uniqueness is per tenant.
    let r = p.results(&p.b, json!([insert("same")])).await;
    assert_eq!(r[0]["ok"]["affected"], 1);
}

async fn tenant_db_another_tenants_rows_are_invisible_and_untouchable(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let r = p.results(&p.b, json!([insert("b-secret")])).await;
    let b_id = r[0]["ok"]["rows"][0][0].as_str().unwrap().to_string();
    let by_id = json!([{"column": "id", "op": "eq", "value": {"uuid": b_id}}]);
    let r = p.results(&p.a, json!([
        {"select": {"table": "probe_items", "columns": ["id", "name"]}},
        {"select": {"table": "probe_items", "columns": ["id"], "filters": by_id}},
        {"update": {"table": "probe_items", "set": {"name": {"text": "stolen"}}, "filters": by_id}},
        {"delete": {"table": "probe_items", "filters": by_id}},
    ])).await;
    assert_eq!(r[0]["ok"]["rows"], json!([]));
    assert_eq!(r[1]["ok"]["rows"], json!([]));
    assert_eq!(r[2]["ok"]["affected"], 0);
    assert_eq!(r[3]["ok"]["affected"], 0);
    // Naming tenant_id at all is refused, in columns, filters and values alike.
    let r = p.results(&p.a, json!([
        {"insert": {"table": "probe_items", "columns": ["tenant_id", "name"], "rows": [[{"uuid": p.org_b}, {"text": "x"}]]}},
        {"select": {"table": "probe_items", "columns": ["name"], "filters": [{"column": "tenant_id", "op": "eq", "value": {"uuid": p.org_b}}]}},
        {"select": {"table": "probe_items", "columns": ["tenant_id"]}},
        {"update": {"table": "probe_items", "set": {"tenant_id": {"uuid": p.org_b}}}},
    ])).await;
    for v in &r {
        err(v, "tenant-column-reserved");
    }
    let n = p.count(&format!("SELECT count(*) FROM probe_items WHERE tenant_id = '{}' AND name = 'b-secret'", p.org_b)).await;
    assert_eq!(n, 1, "B's row changed");
    // And RLS says the same, independently of the host's filter.
    let mut tx = gateway::db::begin_tenant(&p.pool, p.org_a.parse().unwrap(), gateway::role::Role::Admin.into()).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM probe_items").fetch_one(tx.raw_connection()).await.unwrap();
    assert_eq!(seen, 0);
}

async fn tenant_db_ungranted_tables_and_unknown_columns_are_refused(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let r = p.results(&p.a, json!([
        {"select": {"table": "probe_private", "columns": ["secret"]}},
        {"select": {"table": "orgs", "columns": ["name"]}},
        {"select": {"table": "api_tokens", "columns": ["token_sha256"]}},
        {"insert": {"table": "businesses", "columns": ["name"], "rows": [[{"text": "x"}]]}},
        {"select": {"table": "businesses", "columns": ["name"], "for_update": true}},
        {"select": {"table": "businesses", "columns": ["name"]}},
        {"select": {"table": "probe_items", "columns": ["nope"]}},
        {"select": {"table": "probe_items", "columns": []}},
        {"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": [[{"text": "x"}]]}},
        {"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": [[{"text": "x"}, {"text": "seven"}]]}},
    ])).await;
    for v in &r[..5] {
        err(v, "not-granted");
    }
    assert_eq!(r[5]["ok"]["rows"], json!([]));
    err(&r[6], "unknown-column");
    err(&r[7], "invalid");
    err(&r[8], "invalid");
    err(&r[9], "invalid");
}

async fn tenant_db_identifiers_carrying_sql_are_rejected_and_values_are_bound(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let nasty = "'); DROP TABLE probe_items; --";
    let r = p.results(&p.a, json!([
        {"select": {"table": "probe_items; DROP TABLE orgs", "columns": ["name"]}},
        {"select": {"table": "probe_items", "columns": ["name\"; DROP TABLE orgs; --"]}},
        {"select": {"table": "probe_items", "columns": ["n\u{0430}me"]}},
        {"select": {"table": "\"probe_items\"", "columns": ["name"]}},
        {"select": {"table": "probe_items", "columns": ["name"], "order_by": [{"column": "name DESC; DROP TABLE orgs"}]}},
        {"select": {"table": "probe_items", "columns": ["name"],
            "filters": [{"column": "props", "path": ["a'; DROP TABLE orgs; --"], "op": "eq", "value": {"text": "x"}}]}},
        {"insert": {"table": "probe_items", "columns": ["name"], "rows": [[{"text": nasty}]], "returning": ["name"]}},
        {"select": {"table": "probe_items", "columns": ["name"], "filters": [{"column": "name", "op": "eq", "value": {"text": nasty}}]}},
    ])).await;
    err(&r[0], "not-granted");
    err(&r[1], "unknown-column");
    err(&r[2], "unknown-column");
    err(&r[3], "not-granted");
    err(&r[4], "unknown-column");
    err(&r[5], "invalid");
    assert_eq!(r[6]["ok"]["rows"], json!([[nasty]]));
    assert_eq!(r[7]["ok"]["rows"], json!([[nasty]]));
    assert_eq!(p.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('orgs', 'probe_items')").await, 2);
}

async fn tenant_db_row_cap_per_call(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let rows: Vec<Value> = (0..5).map(|i| json!([{"text": format!("r{i}")}])).collect();
    let r = p.results(&p.a, json!([{"insert": {"table": "probe_items", "columns": ["name"], "rows": rows}}])).await;
    assert_eq!(r[0]["ok"]["affected"], 5);
    let r = p.results(&p.a, json!([
        {"select": {"table": "probe_items", "columns": ["name"], "limit": 3}},
        {"select": {"table": "probe_items", "columns": ["name"]}},
    ])).await;
    assert_eq!(r[0]["ok"]["rows"].as_array().unwrap().len(), 3);
    assert_eq!(r[1]["ok"]["rows"].as_array().unwrap().len(), 5);
    let r = p.results(&p.a, json!([insert("sixth"), {"select": {"table": "probe_items", "columns": ["name"]}}])).await;
    err(&r[1], "too-many-rows");
}

async fn tenant_db_a_failed_statement_aborts_the_invocation(wit: Wit) {
    let p = Probe::start_on(wit).await;
    p.results(&p.a, json!([insert("dup")])).await;
    // The violation is reported, later calls see `aborted`, and the invocation fails as a
    // whole: the first insert of this program is not committed.
    let r = p.run(&p.a, json!([insert("fresh"), insert("dup"), insert("later")]), "ok").await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    assert_eq!(p.count("SELECT count(*) FROM probe_items").await, 1);
    let r = p.run(&p.a, json!([
        {"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": [[{"text": "neg"}, {"int": -1}]]}}
    ]), "ok").await;
    assert_error(&r, 502, "PLUGIN_FAILED");
}

async fn trap_mid_transaction_writes_nothing(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let r = p.run(&p.a, json!([insert("t1"), insert("t2")]), "trap").await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    let r = p.run(&p.a, json!([insert("e1")]), "error").await;
    assert_error(&r, 409, "PROBE_CONFLICT");
    assert_eq!(p.count("SELECT count(*) FROM probe_items").await, 0);
    // The gateway goes on serving.
    let r = p.results(&p.a, json!([insert("after")])).await;
    assert_eq!(r[0]["ok"]["affected"], 1);
}

async fn infinite_loop_is_stopped_at_its_deadline_and_the_next_request_is_served(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let started = Instant::now();
    let r = p.run(&p.a, json!([insert("looped")]), "loop").await;
    assert_error(&r, 504, "PLUGIN_TIMEOUT");
    // cpu_ms = 300; the wall-clock timeout (5 s) is not what stopped it.
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(p.count("SELECT count(*) FROM probe_items").await, 0);
    let r = p.results(&p.a, json!([{"context": true}])).await;
    assert_eq!(r[0]["ok"]["org_id"], p.org_a.as_str());
}

async fn memory_bomb_is_resource_exhausted(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let r = p.run(&p.a, json!([insert("bomb")]), "alloc").await;
    assert_error(&r, 502, "PLUGIN_RESOURCE_EXHAUSTED");
    assert_eq!(p.count("SELECT count(*) FROM probe_items").await, 0);
    assert_eq!(p.run(&p.a, json!([]), "ok").await.status, 200);
}

async fn wasi_exposes_no_environment_and_no_filesystem(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let mut p = p;
    let r = p.results(&p.a, json!([{"env": true}, {"log": "hello from the sandbox"}])).await;
    assert_eq!(r[0]["ok"], json!({"env": [], "args": []}));
    // No filesystem, no sockets: a component that imports them is refused before it runs,
    // naming what it imports.
    let put = |name: &'static str, bytes: Vec<u8>| {
        p.gw.req("PUT", &format!("/v1/admin/plugins/{name}")).token(&p.gw.super_token).body(bytes).send()
    };
    let r = put("contract-probe", std::fs::read(plugin_dir().join("hostile_sockets.wasm")).unwrap()).await;
    assert_error(&r, 422, "PLUGIN_REJECTED");
    for import in ["wasi:sockets/tcp@0.2.6", "wasi:sockets/instance-network@0.2.6", "wasi:filesystem/types@0.2.6", "wasi:filesystem/preopens@0.2.6"] {
        assert!(r.text.contains(import), "{import} not named: {}", r.text);
    }
    let fs_only = wat::parse_str(r#"(component (import "wasi:filesystem/preopens@0.2.6" (instance)))"#).unwrap();
    let r = put("contract-probe", fs_only).await;
    assert_error(&r, 422, "PLUGIN_REJECTED");
    assert!(r.text.contains("imports wasi:filesystem/preopens@0.2.6, which plugins may not use"), "{}", r.text);
    let r = p.gw.req("GET", "/v1/admin/plugins").token(&p.gw.super_token).send().await;
    assert_eq!(r.json["plugins"], json!([]), "{}", r.text);
    // log.emit and the guest's stdout both reach the gateway's log, tagged with the org.
    p.gw.terminate().await;
    let log = p.gw.stderr();
    let lines: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for needle in ["hello from the sandbox", "stdout says hello from the sandbox"] {
        let line = lines.iter().find(|v| v["text"] == needle).unwrap_or_else(|| panic!("{needle} not logged"));
        assert_eq!(line["org_id"], p.org_a.as_str());
        assert_eq!(line["plugin"], "contract-probe");
    }
}

/// A loopback HTTP server that records the paths it is asked for.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        log.lock().unwrap().push(path.clone());
                        let resp = match path.as_str() {
                            "/redirect" => http::Response::builder().status(302).header("location", "/secret").body(String::new()),
                            "/big" => http::Response::builder().body("x".repeat(200 * 1024)),
                            _ => http::Response::builder().header("x-upstream", "yes").body(format!("hello {path}")),
                        };
                        Ok::<_, std::convert::Infallible>(resp.unwrap().map(|s| http_body_util::Full::new(bytes::Bytes::from(s))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, seen }
}

fn get(url: String) -> Value {
    json!({"http": {"method": "GET", "url": url}})
}

async fn outbound_http_reaches_an_allowed_host(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let up = upstream().await;
    let r = p.results(&p.a, json!([{"http": {"method": "POST", "url": format!("http://{}/hello?x=1", up.addr),
        "headers": {"x-test": "1"}, "body": "ping"}}])).await;
    assert_eq!(r[0]["ok"]["status"], 200, "{}", r[0]);
    assert_eq!(r[0]["ok"]["body"], "hello /hello");
    assert_eq!(up.seen.lock().unwrap().as_slice(), ["/hello"]);
}

async fn outbound_http_refuses_private_loopback_and_metadata_addresses(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let up = upstream().await;
    let port = up.addr.port();
    let r = p.results(&p.a, json!([
        get(format!("http://10.0.0.1:{port}/")),
        get("http://169.254.169.254/latest/meta-data/".into()),
        get(format!("http://[::1]:{port}/")),
        get(format!("http://localhost:{port}/")),
        get(format!("http://0.0.0.0:{port}/")),
        get(format!("http://192.168.1.1:{port}/")),
        get(format!("https://127.0.0.1:{port}/")),
        get(format!("ftp://127.0.0.1:{port}/")),
        get(format!("http://user:pw@127.0.0.1:{port}/")),
    ])).await;
    for v in &r[..6] {
        err(v, "forbidden-address");
    }
    err(&r[6], "not-allowed");
    err(&r[7], "not-allowed");
    err(&r[8], "invalid-request");
    assert!(up.seen.lock().unwrap().is_empty(), "a refused request reached the upstream");
}

async fn outbound_http_returns_redirects_without_following_them_and_caps_responses(wit: Wit) {
    let p = Probe::start_on(wit).await;
    let up = upstream().await;
    let r = p.results(&p.a, json!([get(format!("http://{}/redirect", up.addr)), get(format!("http://{}/big", up.addr))])).await;
    assert_eq!(r[0]["ok"]["status"], 302);
    err(&r[1], "response-too-large");
    assert_eq!(up.seen.lock().unwrap().as_slice(), ["/redirect", "/big"]);
}

#[tokio::test]
async fn start_up_refuses_grants_on_missing_tables_and_non_components() {
    let (db, _pool) = probe_db().await;
    let extra = r#"
[[route]]
id = "probe.bad"
method = "POST"
path = "/v1/probe-bad"
target = "plugin:contract-probe"
roles = ["member"]
[route.grants]
tables = { no_such_table = "read" }
"#;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = probe_policies(extra);
    let out = crate::harness::gateway_command(&opts).arg("serve").output().unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("probe.toml:") && e.contains("no_such_table"), "{e}");

    // A file that is not a component of the handler world.
    let dir = tempdir("gwx");
    std::fs::write(dir.join("contract_probe.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let mut opts = GatewayOptions::new(&db);
    opts.policies = probe_policies("");
    opts.extra_env.push(("GATEWAY_PLUGIN_DIR".into(), dir.display().to_string()));
    let out = crate::harness::gateway_command(&opts).arg("serve").output().unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("probe.toml") && e.contains("contract-probe"), "{e}");
    let _ = plugin_dir();
}

#[tokio::test]
async fn echo_answers_through_the_gateway_with_its_context_and_body() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let org = gw.create_org("Acme", None).await;
    let (t, user, _) = gw.create_token(&org, "member", "m@acme.test").await;
    let r = gw.req("POST", "/v1/echo").token(&t).header("x-request-id", "echo-1").json(&json!({"hi": [1, 2]})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-plugin-version"), Some("0.1.0"));
    assert_eq!(
        r.json,
        json!({"org_id": org, "user_id": user, "role": "member", "request_id": "echo-1", "body": {"hi": [1, 2]}})
    );
    // The native guards run before the plugin does.
    assert_error(&gw.req("POST", "/v1/echo").json(&json!({})).send().await, 401, "UNAUTHENTICATED");
    let r = gw.req("POST", "/v1/echo").token(&t).json(&json!({"org_id": uuid::Uuid::new_v4()})).send().await;
    assert_error(&r, 403, "TENANT_MISMATCH");
    assert_error(&gw.req("POST", "/v1/echo").token(&t).body("{nope").send().await, 400, "INVALID_JSON");
}

#[tokio::test]
async fn outbound_https_verifies_the_server_against_trusted_roots() {
    // A loopback TLS server with a certificate for 127.0.0.1 from a throwaway CA.
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempdir("gwt");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let svc = hyper::service::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("secure hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
            });
        }
    });

    let extra = r#"
[[route]]
id = "probe.tls"
method = "POST"
path = "/v1/probe-tls"
target = "plugin:contract-probe"
roles = ["admin"]
[route.grants]
hosts = [{ url = "https://127.0.0.1:*", allow_private = true }]
"#;
    let (db, _pool) = probe_db().await;
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let program = json!({"steps": [{"http": {"method": "GET", "url": url}}]});

    // Not trusted: the handshake fails and nothing is returned.
    let mut opts = GatewayOptions::new(&db);
    opts.policies = probe_policies(extra);
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("A", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "admin", "a@a.test").await;
    let r = gw.req("POST", "/v1/probe-tls").token(&t).json(&program).send().await;
    err(&r.json["results"][0], "connect-failed");
    drop(gw);

    // Trusted through GATEWAY_EXTRA_CA_FILE.
    let mut opts = GatewayOptions::new(&db);
    opts.policies = probe_policies(extra);
    opts.extra_env.push(("GATEWAY_EXTRA_CA_FILE".into(), ca.display().to_string()));
    let gw = Gateway::start_with(opts).await;
    let r = gw.req("POST", "/v1/probe-tls").token(&t).json(&program).send().await;
    assert_eq!(r.json["results"][0]["ok"]["status"], 200, "{}", r.text);
    assert_eq!(r.json["results"][0]["ok"]["body"], "secure hello");
}

// ---------------------------------------------------------------------------------------------
// `tenant-db.batch` (0.2 only): several statements in one round trip.

fn earlier(statement: u32, row: u32, column: &str) -> Value {
    json!({"earlier": {"statement": statement, "row": row, "column": column}})
}

#[tokio::test]
async fn batch_runs_in_order_and_later_statements_use_earlier_cells() {
    let p = Probe::start().await;
    let r = p.results(&p.a, json!([{"batch": [
        insert("alpha"),
        // The id the first insert returned, as a value and inside a JSON document.
        {"insert": {"table": "probe_items", "columns": ["name", "qty", "props"],
            "rows": [[{"text": "beta"}, {"int": 2}, {"json_filled": {"document": "{\"kind\": \"child\"}",
                "fill": [[["parent"], {"statement": 0, "row": 0, "column": "id"}]]}}]],
            "returning": ["id", "props"]}},
        // Each statement sees the writes before it.
        {"select": {"table": "probe_items", "columns": ["name", "qty"], "order_by": [{"column": "name"}]}},
        {"update": {"table": "probe_items", "set": {"qty": earlier(2, 1, "qty")},
            "filters": [{"column": "id", "op": "eq", "value": earlier(0, 0, "id")}], "returning": ["name", "qty"]}},
        {"select": {"table": "probe_items", "columns": ["name"],
            "filters": [{"column": "props", "path": ["parent"], "op": "eq", "value": earlier(0, 0, "id")}]}},
        {"try_lock": "batch-key"},
        {"lock": "batch-key"},
        {"delete": {"table": "probe_items", "filters": [{"column": "name", "op": "eq", "value": {"text": "nobody"}}]}},
    ]}])).await;
    let b = r[0]["ok"].as_array().unwrap_or_else(|| panic!("{}", r[0]));
    assert_eq!(b.len(), 8);
    let alpha_id = b[0]["rows"][0][0].as_str().unwrap().to_string();
    assert_eq!(b[0]["columns"], json!(["id", "name"]));
    assert_eq!(b[1]["rows"][0][1], json!({"kind": "child", "parent": alpha_id}));
    assert_eq!(b[2]["rows"], json!([["alpha", 1], ["beta", 2]]));
    assert_eq!(b[2]["affected"], 2);
    assert_eq!(b[3]["rows"], json!([["alpha", 2]]));
    assert_eq!(b[4]["rows"], json!([["beta"]]));
    assert_eq!(b[5]["columns"], json!(["locked"]));
    assert_eq!(b[5]["rows"], json!([[true]]));
    assert_eq!(b[6]["rows"], json!([]));
    assert_eq!(b[7]["affected"], 0);
    // Committed with the invocation, in the caller's org only.
    let n = p.count(&format!("SELECT count(*) FROM probe_items WHERE tenant_id = '{}'", p.org_a)).await;
    assert_eq!(n, 2);
    let r = p.results(&p.b, json!([{"batch": [
        {"select": {"table": "probe_items", "columns": ["name"]}},
        {"update": {"table": "probe_items", "set": {"qty": {"int": 9}}, "filters": [], "returning": ["name"]}},
        {"delete": {"table": "probe_items", "filters": [{"column": "id", "op": "eq", "value": {"uuid": alpha_id}}]}},
    ]}])).await;
    assert_eq!(r[0]["ok"], json!([
        {"columns": ["name"], "rows": [], "affected": 0},
        {"columns": ["name"], "rows": [], "affected": 0},
        {"columns": [], "rows": [], "affected": 0},
    ]));
    assert_eq!(p.count("SELECT count(*) FROM probe_items WHERE qty = 9").await, 0);
}

#[tokio::test]
async fn batch_statements_are_all_checked_before_any_runs() {
    let p = Probe::start().await;
    let cases = [
        (json!({"select": {"table": "probe_private", "columns": ["secret"]}}), "not-granted"),
        (json!({"select": {"table": "probe_items", "columns": ["tenant_id"]}}), "tenant-column-reserved"),
        (json!({"select": {"table": "probe_items", "columns": ["nope"]}}), "unknown-column"),
        // A reference forward, to a column not returned, or a document into a text column.
        (json!({"insert": {"table": "probe_items", "columns": ["name"], "rows": [[earlier(1, 0, "id")]]}}), "invalid"),
        (json!({"insert": {"table": "probe_items", "columns": ["name"], "rows": [[earlier(0, 0, "qty")]]}}), "invalid"),
        (json!({"insert": {"table": "probe_items", "columns": ["name"], "rows": [[{"json_filled": {"document": "{}", "fill": []}}]]}}), "invalid"),
        (json!({"insert": {"table": "probe_items", "columns": ["name", "props"], "rows": [[{"text": "x"},
            {"json_filled": {"document": "[1]", "fill": []}}]]}}), "invalid"),
        (json!({"insert": {"table": "probe_items", "columns": ["name", "props"], "rows": [[{"text": "x"},
            {"json_filled": {"document": "{}", "fill": [[["a'b"], {"statement": 0, "row": 0, "column": "id"}]]}}]]}}), "invalid"),
        (json!({"lock": ""}), "invalid"),
    ];
    for (bad, variant) in cases {
        let r = p.results(&p.a, json!([
            {"batch": [insert("first"), bad]},
            // Nothing ran and the transaction is not aborted: a later call works and commits.
            insert("after"),
        ])).await;
        err(&r[0], variant);
        assert_eq!(r[0]["index"], 1, "{}", r[0]);
        assert_eq!(r[1]["ok"]["affected"], 1, "{}", r[1]);
        assert_eq!(p.count("SELECT count(*) FROM probe_items WHERE name = 'first'").await, 0);
        sqlx::query("DELETE FROM probe_items").execute(&p.pool).await.unwrap();
    }
    // `earlier` outside a batch, and more than 64 statements.
    let r = p.results(&p.a, json!([
        {"insert": {"table": "probe_items", "columns": ["name"], "rows": [[earlier(0, 0, "id")]]}},
        {"batch": vec![json!({"lock": "k"}); 65]},
    ])).await;
    err(&r[0], "invalid");
    err(&r[1], "invalid");
    assert_eq!(r[1]["index"], 64);
}

#[tokio::test]
async fn batch_a_failing_statement_stops_the_batch_names_its_index_and_aborts() {
    let p = Probe::start().await;
    p.results(&p.a, json!([insert("dup")])).await;
    let r = p.run(&p.a, json!([
        {"batch": [insert("fresh"), insert("dup"), insert("later")]},
        {"select": {"table": "probe_items", "columns": ["name"]}},
    ]), "error").await;
    assert_error(&r, 409, "PROBE_CONFLICT");
    let results = &r.json["details"]["results"];
    err(&results[0], "unique-violation");
    assert_eq!(results[0]["detail"], "probe_items_name_key");
    assert_eq!(results[0]["index"], 1);
    err(&results[1], "aborted");
    // Answering after a failed batch commits nothing.
    let r = p.run(&p.a, json!([{"batch": [insert("fresh"), insert("dup")]}]), "ok").await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    assert_eq!(p.count("SELECT count(*) FROM probe_items").await, 1);
    // A check constraint and the row cap (db_max_rows = 5) the same way.
    let r = p.run(&p.a, json!([{"batch": [
        insert("ok"),
        {"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": [[{"text": "neg"}, {"int": -1}]]}},
    ]}]), "error").await;
    assert_eq!(r.json["details"]["results"][0]["detail"], "probe_items_qty_positive", "{}", r.text);
    assert_eq!(r.json["details"]["results"][0]["index"], 1);
    let six: Vec<Value> = (0..6).map(|i| insert(&format!("n{i}"))).collect();
    let r = p.run(&p.a, json!([{"batch": six}, {"batch": [{"select": {"table": "probe_items", "columns": ["name"]}}, {"lock": "x"}]}]), "error").await;
    let results = &r.json["details"]["results"];
    assert_eq!(results[0]["ok"].as_array().map(Vec::len), Some(6), "{results}");
    err(&results[1], "too-many-rows");
    assert_eq!(results[1]["index"], 0);
    assert_eq!(p.count("SELECT count(*) FROM probe_items").await, 1);
}

/// Every test taking a [`Wit`] above, once per served WIT version: the current probe and the
/// 0.1 probe as it was shipped.
macro_rules! on_every_version {
    ($($name:ident),* $(,)?) => {
        mod on_0_2 {
            $( #[tokio::test] async fn $name() { super::$name(super::Wit::Current).await } )*
        }
        mod on_0_1 {
            $( #[tokio::test] async fn $name() { super::$name(super::Wit::V0_1).await } )*
        }
    };
}

on_every_version!(
    context_reports_the_callers_facts,
    tenant_db_happy_path_select_insert_update_delete_lock,
    tenant_db_on_conflict_do_nothing_and_do_update,
    tenant_db_another_tenants_rows_are_invisible_and_untouchable,
    tenant_db_ungranted_tables_and_unknown_columns_are_refused,
    tenant_db_identifiers_carrying_sql_are_rejected_and_values_are_bound,
    tenant_db_row_cap_per_call,
    tenant_db_a_failed_statement_aborts_the_invocation,
    trap_mid_transaction_writes_nothing,
    infinite_loop_is_stopped_at_its_deadline_and_the_next_request_is_served,
    memory_bomb_is_resource_exhausted,
    wasi_exposes_no_environment_and_no_filesystem,
    outbound_http_reaches_an_allowed_host,
    outbound_http_refuses_private_loopback_and_metadata_addresses,
    outbound_http_returns_redirects_without_following_them_and_caps_responses,
);
