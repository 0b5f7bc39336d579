//! Plugins built against `gateway:plugin@0.1.0`, as shipped (`tests/fixtures/wit-0.1.0/`),
//! served beside their current (0.2.0) builds by one gateway: same requests, same answers,
//! same rows. Also through the registry, and the refusal of a component of no served version.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::contract_wit::wit_0_1;
use crate::harness::{assert_error, gateway_command, policies_with, tempdir, wait_for, Gateway, GatewayOptions, Resp, TestDb};

const WIT_0_1: &str = "gateway:plugin@0.1.0";
const WIT_0_2: &str = "gateway:plugin@0.2.0";

/// The 0.1 builds of echo and crm-track under their own names, on routes under `/v1/v01/`,
/// with the grants and sandboxes their current builds get in `policies/`.
fn policy() -> String {
    let file = |f: &str| format!("{:?}", wit_0_1(f).display().to_string());
    format!(
        r#"
[plugins.echo-v01]
file = {echo}
version = "0.1.0"

[[route]]
id = "echo_v01"
method = "POST"
path = "/v1/v01/echo"
target = "plugin:echo-v01"
roles = ["member", "admin"]
body_limit = "64KiB"

[route.sandbox]
memory = "16MiB"
cpu_ms = 50
timeout_ms = 2000

[plugins.crm-track-v01]
file = {crm}
version = "0.1.0"

[[route]]
id = "crm_track_v01"
method = "POST"
path = "/v1/v01/crm/track"
target = "plugin:crm-track-v01"
roles = ["member", "admin"]
body_limit = "64KiB"
idempotency = "optional"

[route.sandbox]
memory = "32MiB"
cpu_ms = 200
timeout_ms = 10000

[route.grants]
tables = {{ crm_contacts = "write", contact_identities = "write", crm_events = "write", crm_outbox = "write" }}
locks = true

[[route]]
id = "crm_contact_v01"
method = "GET"
path = "/v1/v01/crm/contacts/{{contact_id}}"
target = "plugin:crm-track-v01"
roles = ["member", "admin"]

[route.grants]
tables = {{ crm_contacts = "read", contact_identities = "read", crm_events = "read" }}
"#,
        echo = file("echo.wasm"),
        crm = file("crm_track.wasm"),
    )
}

struct Side {
    _db: TestDb,
    pool: PgPool,
    gw: Gateway,
}

impl Side {
    async fn start() -> Side {
        let db = TestDb::new().await;
        let mut opts = GatewayOptions::new(&db);
        opts.policies = policies_with("zz-wit-0-1.toml", &policy());
        let gw = Gateway::start_with(opts).await;
        let pool = db.owner_pool().await;
        Side { _db: db, pool, gw }
    }

    async fn n(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

/// The route prefix of each build: the 0.1 one, then the current one.
const BUILDS: [(&str, &str); 2] = [("0.1", "/v1/v01"), ("0.2", "/v1")];

/// A contact's answer without what differs between two contacts (ids and times).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let volatile = k == "id" || k.ends_with("_id") || k.ends_with("_at") || k == "next_before";
                    (k.clone(), if volatile && !v.is_null() { json!("*") } else { shape(v) })
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        v => v.clone(),
    }
}

/// The JSON lines of the gateway's log.
fn log_lines(gw: &Gateway) -> Vec<Value> {
    format!("{}\n{}", gw.stdout(), gw.stderr()).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The `wit` of every `message` line of `plugin`, in order.
fn logged_wit(gw: &Gateway, message: &str, plugin: &str) -> Vec<Value> {
    log_lines(gw).into_iter().filter(|l| l["message"] == message && l["plugin"] == plugin).map(|l| l["wit"].clone()).collect()
}

/// Waits (the log is written by a thread of its own) until `plugin`'s `message` lines carry
/// exactly `wits`, in order.
async fn assert_logged(gw: &Gateway, message: &str, plugin: &str, wits: &[&str]) {
    let want: Vec<Value> = wits.iter().map(|w| json!(w)).collect();
    let what = format!("{message} lines of {plugin} with wit {wits:?}");
    wait_for(&what, gw, || {
        let done = logged_wit(gw, message, plugin) == want;
        async move { done.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn echo_answers_the_same_from_its_0_1_and_0_2_builds() {
    let s = Side::start().await;
    let org = s.gw.create_org("Acme", Some("unmetered")).await;
    let (t, user, _) = s.gw.create_token(&org, "member", "m@acme.test").await;
    let body = json!({"n": 1, "nested": {"list": [true, null, "é"]}});
    let mut answers = Vec::new();
    for (build, prefix) in BUILDS {
        let r = s.gw.req("POST", &format!("{prefix}/echo")).token(&t).header("x-request-id", "same-1").json(&body).send().await;
        assert_eq!(r.status, 200, "{build}: {}", r.text);
        assert_eq!(r.header("x-plugin-version"), Some("0.1.0"), "{build}");
        answers.push(r.json);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], json!({"org_id": org, "user_id": user, "role": "member", "request_id": "same-1", "body": body}));
    // Bad input is refused by both the same way.
    for (build, prefix) in BUILDS {
        let r = s.gw.req("POST", &format!("{prefix}/echo")).token(&t).header("content-type", "application/json").body("[1,").send().await;
        assert_eq!(r.status, 400, "{build}: {}", r.text);
        assert_error(&r, 400, "INVALID_JSON");
    }
    // Each is logged with the contract it was built against.
    for (plugin, wit) in [("echo-v01", WIT_0_1), ("crm-track-v01", WIT_0_1), ("echo", WIT_0_2), ("crm-track", WIT_0_2)] {
        assert_logged(&s.gw, "plugin_loaded", plugin, &[wit]).await;
    }
}

async fn track(gw: &Gateway, prefix: &str, token: &str, body: &Value, key: Option<&str>) -> Resp {
    let mut r = gw.req("POST", &format!("{prefix}/crm/track")).token(token).json(body);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    r.send().await
}

#[tokio::test]
async fn crm_track_records_and_reads_the_same_from_its_0_1_and_0_2_builds_for_two_orgs_kept_apart() {
    let s = Side::start().await;
    let a = s.gw.create_org("A", Some("unmetered")).await;
    let b = s.gw.create_org("B", Some("unmetered")).await;
    let (ta, _, _) = s.gw.create_token(&a, "admin", "a@a.test").await;
    let (tb, _, _) = s.gw.create_token(&b, "admin", "b@b.test").await;
    let signup = |email: &str| json!({"type": "signup", "props": {"plan": "pro"}, "contact": {"email": email, "name": "Ada"}});

    // Each build records a fresh contact for each org; the contact reads back the same.
    let mut contacts = Vec::new();
    for (build, prefix) in BUILDS {
        let mut shapes = Vec::new();
        for (org, t) in [(&a, &ta), (&b, &tb)] {
            let r = track(&s.gw, prefix, t, &signup(&format!("ada-{build}@example.com")), None).await;
            assert_eq!(r.status, 200, "{build}: {}", r.text);
            assert_eq!(r.json["ok"], true, "{build}: {}", r.text);
            let contact = r.json["contact_id"].as_str().unwrap().to_string();
            let got = s.gw.req("GET", &format!("{prefix}/crm/contacts/{contact}")).token(t).send().await;
            assert_eq!(got.status, 200, "{build}: {}", got.text);
            assert_eq!(got.json["identities"][0]["value"], format!("ada-{build}@example.com"));
            let tenant: String = sqlx::query_scalar("SELECT tenant_id::text FROM crm_contacts WHERE id = $1::uuid")
                .bind(&contact)
                .fetch_one(&s.pool)
                .await
                .unwrap();
            assert_eq!(&tenant, org, "{build}");
            shapes.push(shape(&json!({"track": r.json, "contact": got.json})));
            contacts.push((org.clone(), contact));
        }
        assert_eq!(shapes[0], shapes[1], "{build}: the two orgs' answers differ");
    }
    // The builds share the tables: the same person through the other build is the same contact.
    for (build, prefix) in BUILDS {
        let other = if build == "0.1" { "0.2" } else { "0.1" };
        let r = track(&s.gw, prefix, &ta, &signup(&format!("ada-{other}@example.com")), None).await;
        assert_eq!(r.status, 200, "{build}: {}", r.text);
        let first = &contacts.iter().find(|(o, c)| *o == a && r.json["contact_id"] == *c);
        assert!(first.is_some(), "{build}: a new contact for a known person: {}", r.text);
    }
    // Neither build shows an org the other org's contact.
    for (build, prefix) in BUILDS {
        for (org, contact) in &contacts {
            let t = if *org == a { &tb } else { &ta };
            let r = s.gw.req("GET", &format!("{prefix}/crm/contacts/{contact}")).token(t).send().await;
            assert_eq!(r.status, 404, "{build}: {}", r.text);
            assert_error(&r, 404, "NOT_FOUND");
        }
    }
    assert_eq!(s.n(&format!("SELECT count(*) FROM crm_contacts WHERE tenant_id = '{a}'")).await, 2);
    assert_eq!(s.n(&format!("SELECT count(*) FROM crm_contacts WHERE tenant_id = '{b}'")).await, 2);
    assert_eq!(s.n(&format!("SELECT count(*) FROM crm_events WHERE tenant_id = '{a}'")).await, 4);
    assert_eq!(s.n(&format!("SELECT count(*) FROM crm_outbox WHERE tenant_id = '{b}' AND topic = 'event.tracked.v1'")).await, 2);

    // An idempotency key used through one build replays through the other, and a different
    // body under it is refused by both.
    let first = track(&s.gw, "/v1/v01", &tb, &signup("key@example.com"), Some("k-1")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let replay = track(&s.gw, "/v1", &tb, &signup("key@example.com"), Some("k-1")).await;
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(replay.json["idempotent"], true, "{}", replay.text);
    assert_eq!(replay.json["event_id"], first.json["event_id"]);
    for (_, prefix) in BUILDS {
        let r = track(&s.gw, prefix, &tb, &signup("other@example.com"), Some("k-1")).await;
        assert_error(&r, 422, "IDEMPOTENCY_KEY_REUSED");
    }
    // Invalid events are refused alike, and write nothing.
    let before = s.n("SELECT count(*) FROM crm_events").await;
    let mut refusals = Vec::new();
    for (_, prefix) in BUILDS {
        let r = track(&s.gw, prefix, &ta, &json!({"type": "", "contact": {}}), None).await;
        assert!(r.status >= 400 && r.status < 500, "{}", r.text);
        refusals.push((r.status, r.json["error_code"].clone(), r.json["message"].clone()));
    }
    assert_eq!(refusals[0], refusals[1]);
    assert_eq!(s.n("SELECT count(*) FROM crm_events").await, before);
}

async fn upload(gw: &Gateway, name: &str, bytes: Vec<u8>, activate: bool) -> Resp {
    let q = if activate { "?activate=true" } else { "" };
    gw.req("PUT", &format!("/v1/admin/plugins/{name}{q}"))
        .token(&gw.super_token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
}

#[tokio::test]
async fn a_0_1_component_uploaded_through_the_registry_activates_serves_and_is_listed_as_0_1() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (t, user, _) = gw.create_token(&org, "admin", "a@acme.test").await;

    let r = upload(&gw, "echo", std::fs::read(wit_0_1("echo.wasm")).unwrap(), true).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!((r.json["version"].as_i64(), r.json["active"].as_bool()), (Some(1), Some(true)), "{}", r.text);
    assert_eq!(r.json["wit"], WIT_0_1, "{}", r.text);
    let r = gw.req("POST", "/v1/echo").token(&t).header("x-request-id", "reg-1").json(&json!({"a": 1})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("x-plugin-version").is_some_and(|v| v.ends_with("+r1") || v == "1"), "{:?}", r.header("x-plugin-version"));
    assert_eq!(r.json, json!({"org_id": org, "user_id": user, "role": "admin", "request_id": "reg-1", "body": {"a": 1}}));

    // The current build after it, under the same name: each version lists its own contract.
    let current = std::fs::read(crate::harness::plugin_dir().join("echo.wasm")).unwrap();
    let r = upload(&gw, "echo", current, true).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["wit"], WIT_0_2, "{}", r.text);
    let r = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let listed: Vec<(i64, &str, &str, bool)> = r.json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["version"].as_i64().unwrap(), p["wit"].as_str().unwrap(), p["wit_world"].as_str().unwrap(), p["active"] == true))
        .collect();
    assert_eq!(listed, [(1, WIT_0_1, WIT_0_1, false), (2, WIT_0_2, WIT_0_2, true)]);

    // Back to the 0.1 version: activation logs the contract, and it serves again.
    let r = gw.req("POST", "/v1/admin/plugins/echo/rollback").token(&gw.super_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.req("POST", "/v1/echo").token(&t).header("x-request-id", "reg-2").json(&json!([])).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["body"], json!([]));
    assert!(r.header("x-plugin-version").is_some_and(|v| v.ends_with("+r1") || v == "1"), "{:?}", r.header("x-plugin-version"));
    assert_logged(&gw, "plugin_uploaded", "echo", &[WIT_0_1, WIT_0_2]).await;
    assert_logged(&gw, "plugin_activated", "echo", &[WIT_0_1, WIT_0_2]).await;
    assert_logged(&gw, "plugin_swapped", "echo", &[WIT_0_1, WIT_0_2, WIT_0_1]).await;

    // `gateway plugin list` shows it too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["plugin", "list", "--url", &format!("http://{}", gw.addr), "--token", &gw.super_token])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("echo ")).collect();
    assert!(rows.len() == 2 && rows[0].contains(WIT_0_1) && rows[1].contains(WIT_0_2), "{text}");
}

/// A component whose handler export names a version this gateway does not serve.
fn unserved_component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (core module $m (func (export "handle")))
            (core instance $i (instantiate $m))
            (func $h (canon lift (core func $i "handle")))
            (instance $api (export "handle" (func $h)))
            (export "gateway:plugin/http-handler@0.3.0" (instance $api)))"#,
    )
    .unwrap()
}

#[tokio::test]
async fn a_component_of_no_served_version_is_refused_naming_the_served_ones() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let served = format!("{WIT_0_1}, {WIT_0_2}");
    for bytes in [unserved_component(), wat::parse_str("(component)").unwrap()] {
        let r = upload(&gw, "echo", bytes, true).await;
        assert_error(&r, 422, "PLUGIN_REJECTED");
        assert!(r.text.contains(&served), "{}", r.text);
    }
    let r = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    assert_eq!(r.json["plugins"], json!([]), "{}", r.text);

    // Start-up refuses it the same way, for a plugin file a policy declares.
    let file = tempdir("wit-unserved").join("unserved.wasm");
    std::fs::write(&file, unserved_component()).unwrap();
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("zz-unserved.toml", &format!("[plugins.unserved]\nfile = {:?}\n", file.display().to_string()));
    let out = gateway_command(&opts).arg("serve").output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("zz-unserved.toml") && e.contains(&served), "{e}");
}
