//! Plugin manifests (docs/plugin-manifest.md): needs checked against the serving routes'
//! grants at activation, and plugin-owned storage: tables created at activation as tenant
//! tables, reached by their owner under a short name and by another plugin only through a
//! `<plugin>.<table>` grant, migrated forward only.
//!
//! The plugins are the contract probe (driven by its request body) with a manifest embedded
//! here, so each version differs only in what it declares.

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{assert_error, plugin_dir, policies_with, Gateway, GatewayOptions, TestDb};

const POLICY: &str = r#"
[plugins.notes]
file = "contract_probe.wasm"

[plugins.reader]
file = "contract_probe.wasm"

[plugins.granted]
file = "contract_probe.wasm"

[[route]]
id = "notes_api"
method = "POST"
path = "/v1/storage-test/notes"
target = "plugin:notes"
roles = ["member", "admin"]

[route.grants]
tables = { crm_contacts = "read" }

[[route]]
id = "reader_api"
method = "POST"
path = "/v1/storage-test/reader"
target = "plugin:reader"
roles = ["member", "admin"]

[[route]]
id = "granted_api"
method = "POST"
path = "/v1/storage-test/granted"
target = "plugin:granted"
roles = ["member", "admin"]

[route.grants]
tables = { "notes.notes" = "read" }
"#;

const NOTES_V1: &str = r#"
[[storage]]
name = "notes"
columns = [
  { name = "title", type = "text" },
  { name = "body", type = "text", nullable = true },
]
unique = [["title"]]
"#;

fn probe_with(manifest: &str) -> Vec<u8> {
    let bytes = std::fs::read(plugin_dir().join("contract_probe.wasm")).unwrap();
    fixture_section::embed_named(&bytes, "gateway:manifest", manifest.as_bytes()).unwrap()
}

async fn upload(gw: &Gateway, name: &str, manifest: &str, activate: bool) -> crate::harness::Resp {
    let q = if activate { "?activate=true" } else { "" };
    gw.req("PUT", &format!("/v1/admin/plugins/{name}{q}"))
        .token(&gw.super_token)
        .header("content-type", "application/wasm")
        .body(probe_with(manifest))
        .send()
        .await
}

/// Runs one probe step as `token` on `plugin`'s route; returns the step's result.
async fn step(gw: &Gateway, plugin: &str, token: &str, step: Value) -> Value {
    let r = gw.req("POST", &format!("/v1/storage-test/{plugin}")).token(token).json(&json!({ "steps": [step] })).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["results"][0].clone()
}

fn insert(table: &str, title: &str) -> Value {
    json!({ "insert": { "table": table, "columns": ["title"], "rows": [[{ "text": title }]], "returning": ["title"] } })
}

fn select(table: &str, columns: &[&str]) -> Value {
    json!({ "select": { "table": table, "columns": columns, "order_by": [{ "column": "title" }] } })
}

fn rows(result: &Value) -> Vec<Value> {
    result["ok"]["rows"].as_array().unwrap_or_else(|| panic!("not rows: {result}")).clone()
}

async fn columns_of(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position")
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn needs_are_checked_and_owned_tables_are_tenant_tables_reached_only_by_grant() {
    let db = TestDb::new().await;
    let pool = db.owner_pool().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("storage_test.toml", POLICY);
    let gw = Gateway::start_with(opts).await;
    let (org_a, org_b) = (gw.create_org("A", Some("unmetered")).await, gw.create_org("B", Some("unmetered")).await);
    let (ta, _, _) = gw.create_token(&org_a, "admin", "a@a.test").await;
    let (tb, _, _) = gw.create_token(&org_b, "admin", "b@b.test").await;

    // A version needing what its route does not grant is stored, not activated; every missing
    // grant is named, and nothing is created.
    let needy = format!(
        "[plugin]\nversion = \"1.0.0\"\n[needs]\ntables = {{ crm_contacts = \"write\", crm_events = \"read\" }}\nlocks = true\n\
         [needs.routes.notes_elsewhere]\nhosts = [\"https://api.example.com\"]\n{NOTES_V1}"
    );
    let r = upload(&gw, "notes", &needy, true).await;
    assert_error(&r, 422, "PLUGIN_GRANTS_MISSING");
    let missing = r.json["missing"].as_array().unwrap();
    for want in [
        json!({"route": "notes_elsewhere", "kind": "route", "name": "notes_elsewhere"}),
        json!({"route": "notes_api", "kind": "table", "name": "crm_contacts", "access": "write"}),
        json!({"route": "notes_api", "kind": "table", "name": "crm_events", "access": "read"}),
        json!({"route": "notes_api", "kind": "locks", "name": "locks"}),
    ] {
        assert!(missing.contains(&want), "{want} not in {missing:?}");
    }
    assert_eq!(missing.len(), 4, "{missing:?}");
    assert!(columns_of(&pool, "plg_notes__notes").await.is_empty());
    let r = gw.req("POST", "/v1/admin/plugins/notes/activate").token(&gw.super_token).json(&json!({"version": 1})).send().await;
    assert_error(&r, 422, "PLUGIN_GRANTS_MISSING");

    // Covered needs: activated, and the table exists as a tenant table.
    let v2 = format!("[plugin]\nname = \"notes\"\nversion = \"1.0.1\"\n[needs]\ntables = {{ crm_contacts = \"read\" }}\n{NOTES_V1}");
    let r = upload(&gw, "notes", &v2, true).await;
    assert_eq!((r.status, r.json["version"].as_i64(), r.json["active"].as_bool()), (201, Some(2), Some(true)), "{}", r.text);
    assert_eq!(columns_of(&pool, "plg_notes__notes").await, ["tenant_id", "id", "created_at", "title", "body"]);
    let (rls, forced): (bool, bool) =
        sqlx::query_as("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'plg_notes__notes'::regclass").fetch_one(&pool).await.unwrap();
    assert!(rls && forced);
    let policies: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT policyname::text, qual, with_check FROM pg_policies WHERE tablename = 'plg_notes__notes'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert!(policies[0].1.contains("app_current_tenant()") && policies[0].2.contains("app_current_tenant()"), "{policies:?}");

    // The owner stores and reads by the short name; each org sees its own rows only.
    assert_eq!(rows(&step(&gw, "notes", &ta, insert("notes", "a1")).await), [json!(["a1"])]);
    assert_eq!(rows(&step(&gw, "notes", &tb, insert("notes", "b1")).await), [json!(["b1"])]);
    // Unique within an org (tenant_id first), not across orgs.
    assert_eq!(rows(&step(&gw, "notes", &tb, insert("notes", "a1")).await), [json!(["a1"])]);
    // (A failed statement rolls the invocation back: the probe ends with a handler error,
    // which carries its results.)
    let r = gw.req("POST", "/v1/storage-test/notes").token(&ta).json(&json!({ "steps": [insert("notes", "a1")], "then": "error" })).send().await;
    assert_error(&r, 409, "PROBE_CONFLICT");
    assert!(r.text.contains("unique-violation"), "{}", r.text);
    assert_eq!(rows(&step(&gw, "notes", &ta, select("notes", &["title"])).await), [json!(["a1"])]);
    assert_eq!(rows(&step(&gw, "notes", &tb, select("notes", &["title"])).await), [json!(["a1"]), json!(["b1"])]);
    // The id is the database's; errors use the plugin's own name for the table.
    let r = step(&gw, "notes", &ta, json!({ "insert": { "table": "notes", "columns": ["id", "title"], "rows": [[{ "uuid": Uuid::new_v4().to_string() }, { "text": "x" }]] } })).await;
    assert_eq!(r["err"], "invalid", "{r}");
    let r = step(&gw, "notes", &ta, select("notes", &["nope"])).await;
    assert_eq!(r, json!({"err": "unknown-column", "detail": "notes.nope"}));

    // Raw SQL as the restricted role: another org's rows are invisible, and cannot be written.
    let (a, b): (Uuid, Uuid) = (org_a.parse().unwrap(), org_b.parse().unwrap());
    let mut tx = gateway::db::begin_tenant(&pool, a, gateway::role::Role::Admin.into()).await.unwrap();
    let (mine, theirs): (i64, i64) =
        sqlx::query_as("SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id = $2) FROM plg_notes__notes")
            .bind(a)
            .bind(b)
            .fetch_one(tx.raw_connection())
            .await
            .unwrap();
    assert_eq!((mine, theirs), (1, 0));
    let e = sqlx::query("INSERT INTO plg_notes__notes (tenant_id, title) VALUES ($1, 'sneaky')").bind(b).execute(tx.raw_connection()).await.unwrap_err();
    assert!(e.to_string().contains("row-level security"), "{e}");
    drop(tx);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE gateway_app").execute(&mut *tx).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM plg_notes__notes").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(n, 0, "no tenant set: nothing visible");
    drop(tx);

    // Another plugin without the grant: not by short name, nor grant name, nor physical name.
    for table in ["notes", "notes.notes", "plg_notes__notes"] {
        let r = step(&gw, "reader", &ta, select(table, &["title"])).await;
        assert_eq!(r["err"], "not-granted", "{table}: {r}");
    }
    // With `"notes.notes" = "read"`: reads (its own org's rows only), never writes.
    assert_eq!(rows(&step(&gw, "granted", &ta, select("notes.notes", &["title"])).await), [json!(["a1"])]);
    assert_eq!(rows(&step(&gw, "granted", &tb, select("notes.notes", &["title"])).await).len(), 2);
    assert_eq!(step(&gw, "granted", &ta, insert("notes.notes", "g")).await["err"], "not-granted");

    // v3 adds a defaulted column and a table: migrated forward at activation.
    let v3 = r#"
[plugin]
version = "1.1.0"
[[storage]]
name = "notes"
columns = [
  { name = "title", type = "text" },
  { name = "body", type = "text", nullable = true },
  { name = "pinned", type = "boolean", default = false },
]
unique = [["title"]]
indexes = [["pinned"]]
[[storage]]
name = "tags"
columns = [{ name = "label", type = "text" }]
"#;
    let r = upload(&gw, "notes", v3, false).await;
    assert_eq!((r.status, r.json["version"].as_i64()), (201, Some(3)), "{}", r.text);
    assert!(columns_of(&pool, "plg_notes__tags").await.is_empty(), "created at activation, not upload");
    let r = gw.req("POST", "/v1/admin/plugins/notes/activate").token(&gw.super_token).json(&json!({"version": 3})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(columns_of(&pool, "plg_notes__notes").await, ["tenant_id", "id", "created_at", "title", "body", "pinned"]);
    assert_eq!(rows(&step(&gw, "notes", &ta, select("notes", &["title", "pinned"])).await), [json!(["a1", false])]);
    assert_eq!(rows(&step(&gw, "notes", &ta, json!({ "insert": { "table": "tags", "columns": ["label"], "rows": [[{ "text": "t" }]], "returning": ["label"] } })).await), [json!(["t"])]);

    // v4 drops a column: refused at upload, naming table and column; nothing stored.
    let v4 = "[plugin]\nversion = \"2.0.0\"\n[[storage]]\nname = \"notes\"\ncolumns = [{ name = \"title\", type = \"text\" }, { name = \"pinned\", type = \"boolean\", default = false }]\nunique = [[\"title\"]]\n[[storage]]\nname = \"tags\"\ncolumns = [{ name = \"label\", type = \"text\" }]\n";
    let r = upload(&gw, "notes", v4, false).await;
    assert_error(&r, 422, "PLUGIN_REJECTED");
    assert!(r.json["error"].as_str().unwrap().contains("notes.body"), "{}", r.text);
    // A manifest naming another plugin is refused too.
    assert_error(&upload(&gw, "notes", "[plugin]\nname = \"other\"\nversion = \"1.0.0\"\n", false).await, 422, "PLUGIN_REJECTED");

    // Rollback keeps tables and columns; the older code still reads its own columns.
    let r = gw.req("POST", "/v1/admin/plugins/notes/rollback").token(&gw.super_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(columns_of(&pool, "plg_notes__notes").await.len(), 6);
    assert_eq!(rows(&step(&gw, "notes", &ta, select("notes", &["title"])).await), [json!(["a1"])]);

    // The list shows each version's needs and storage.
    let r = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    let list = r.json["plugins"].as_array().unwrap();
    let notes: Vec<&Value> = list.iter().filter(|p| p["name"] == "notes").collect();
    assert_eq!(notes.len(), 3, "{list:?}");
    assert_eq!(notes[1]["needs"]["tables"], json!({"crm_contacts": "read"}));
    assert_eq!(notes[2]["storage"], json!(["notes", "tags"]));
}

#[tokio::test]
async fn a_second_replica_serves_owned_tables_created_by_another() {
    let db = TestDb::new().await;
    let policies = policies_with("storage_test.toml", POLICY);
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies.clone();
    let gw1 = Gateway::start_with(opts).await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies;
    opts.bootstrap_token = Some(gw1.super_token.clone());
    let gw2 = Gateway::start_with(opts).await;
    let org = gw1.create_org("A", Some("unmetered")).await;
    let (t, _, _) = gw1.create_token(&org, "admin", "a@a.test").await;

    let r = upload(&gw1, "notes", &format!("[plugin]\nversion = \"1.0.0\"\n{NOTES_V1}"), true).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The other replica hears of the activation, and with it reads the new table.
    let got = crate::harness::wait_for("the second replica serving notes' table", &gw2, || async {
        let r = gw2.req("POST", "/v1/storage-test/notes").token(&t).json(&json!({ "steps": [insert("notes", "n1")] })).send().await;
        (r.status == 200 && r.json["results"][0].get("ok").is_some()).then_some(r.json)
    })
    .await;
    assert_eq!(got["results"][0]["ok"]["rows"], json!([["n1"]]));
}

const NOTES_POLICY: &str = r#"
[plugins.notes]
file = "notes.wasm"

[[route]]
id = "notes_add"
method = "POST"
path = "/v1/storage-test/notes"
target = "plugin:notes"
roles = ["member", "admin"]

[[route]]
id = "notes_list"
method = "GET"
path = "/v1/storage-test/notes"
target = "plugin:notes"
roles = ["member", "admin"]
"#;

/// The `notes` plugin (plugins/notes), built with its `plugin.toml` embedded by
/// `cargo xtask plugins`: pushed and activated, it stores and reads notes in two orgs.
#[tokio::test]
async fn the_notes_plugin_keeps_each_orgs_notes_apart() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("storage_test.toml", NOTES_POLICY);
    let gw = Gateway::start_with(opts).await;
    let (org_a, org_b) = (gw.create_org("A", Some("unmetered")).await, gw.create_org("B", Some("unmetered")).await);
    let (ta, _, _) = gw.create_token(&org_a, "member", "a@a.test").await;
    let (tb, _, _) = gw.create_token(&org_b, "member", "b@b.test").await;

    let bytes = std::fs::read(plugin_dir().join("notes.wasm")).unwrap();
    let r = gw
        .req("PUT", "/v1/admin/plugins/notes?activate=true")
        .token(&gw.super_token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    assert_eq!(r.json["plugins"][0]["storage"], json!(["notes"]), "{}", r.text);

    for (token, title) in [(&ta, "groceries"), (&ta, "ideas"), (&tb, "groceries")] {
        let r = gw.req("POST", "/v1/storage-test/notes").token(token).json(&json!({ "title": title, "body": "x" })).send().await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["title"], title);
    }
    let r = gw.req("POST", "/v1/storage-test/notes").token(&ta).json(&json!({ "title": "ideas" })).send().await;
    assert_error(&r, 409, "NOTE_EXISTS");
    let titles = |r: &crate::harness::Resp| r.json["notes"].as_array().unwrap().iter().map(|n| n["title"].clone()).collect::<Vec<_>>();
    let r = gw.req("GET", "/v1/storage-test/notes").token(&ta).send().await;
    assert_eq!(titles(&r), [json!("groceries"), json!("ideas")], "{}", r.text);
    let r = gw.req("GET", "/v1/storage-test/notes").token(&tb).send().await;
    assert_eq!(titles(&r), [json!("groceries")], "{}", r.text);
}
