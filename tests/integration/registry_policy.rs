//! Registry and policy agree (issue #18): only declared names are pushed or activated; a
//! non-wasm upload says so; versions carry the author's semver label beside the registry
//! number (list and `x-plugin-version`); rollback walks the activation history back;
//! deactivate returns to the policy's file.

use serde_json::json;

use crate::harness::{assert_error, plugin_dir, Gateway, Resp, TestDb};

/// A component with a manifest whose `[plugin] version` is `label`.
fn labelled(file: &str, label: &str) -> Vec<u8> {
    let bytes = std::fs::read(plugin_dir().join(file)).unwrap();
    let manifest = format!("[plugin]\nversion = \"{label}\"\n");
    fixture_section::embed_named(&bytes, gateway::registry::manifest::SECTION, manifest.as_bytes()).unwrap()
}

async fn put(gw: &Gateway, name: &str, bytes: Vec<u8>) -> Resp {
    gw.req("PUT", &format!("/v1/admin/plugins/{name}")).token(&gw.super_token).header("content-type", "application/wasm").body(bytes).send().await
}

async fn post(gw: &Gateway, path: &str, body: serde_json::Value) -> Resp {
    gw.req("POST", path).token(&gw.super_token).json(&body).send().await
}

async fn served(gw: &Gateway, token: &str) -> String {
    let r = gw.req("POST", "/v1/echo").token(token).json(&json!({})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.header("x-plugin-version").unwrap().to_string()
}

#[tokio::test]
async fn names_labels_rollback_history_and_deactivate() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let org = gw.create_org("Reg", Some("unmetered")).await;
    let (member, _, _) = gw.create_token(&org, "member", "m@reg.test").await;
    assert_eq!(served(&gw, &member).await, "0.1.0", "the policy's file and its version");

    // Names no policy declares: refused, nothing stored.
    let r = put(&gw, "no-such-plugin", labelled("echo.wasm", "1.0.0")).await;
    assert_error(&r, 422, "PLUGIN_UNKNOWN");
    assert!(r.json["error"].as_str().unwrap().contains("[plugins.no-such-plugin]"), "{}", r.text);
    assert_error(&post(&gw, "/v1/admin/plugins/no-such-plugin/activate", json!({"version": 1})).await, 422, "PLUGIN_UNKNOWN");
    assert_error(&post(&gw, "/v1/admin/plugins/no-such-plugin/deactivate", json!({})).await, 422, "PLUGIN_UNKNOWN");
    // Not wasm at all: said plainly, not a parser's "expected `(`".
    let r = put(&gw, "echo", b"plugin = \"echo\"\n".to_vec()).await;
    assert_error(&r, 422, "PLUGIN_REJECTED");
    assert!(r.text.contains("not a WebAssembly component") && !r.text.contains("expected `(`"), "{}", r.text);
    let list = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    assert_eq!(list.json["plugins"], json!([]), "nothing stored");

    // Three labelled versions, activated in turn.
    for (i, (file, label)) in [("echo.wasm", "1.0.0"), ("contract_probe.wasm", "2.0.0"), ("echo.wasm", "3.0.0")].into_iter().enumerate() {
        let r = put(&gw, "echo", labelled(file, label)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let v = i as i64 + 1;
        assert_eq!((r.json["version"].as_i64(), r.json["label"].as_str()), (Some(v), Some(label)));
        assert_eq!(r.json["served_as"], format!("{label}+r{v}"));
        assert_eq!(post(&gw, "/v1/admin/plugins/echo/activate", json!({"version": v})).await.status, 200);
        assert_eq!(served(&gw, &member).await, format!("{label}+r{v}"));
    }
    let list = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    let rows: Vec<(i64, String, String, bool)> = list.json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["version"].as_i64().unwrap(), p["label"].as_str().unwrap().into(), p["served_as"].as_str().unwrap().into(), p["active"] == true))
        .collect();
    assert_eq!(rows, vec![
        (1, "1.0.0".into(), "1.0.0+r1".into(), false),
        (2, "2.0.0".into(), "2.0.0+r2".into(), false),
        (3, "3.0.0".into(), "3.0.0+r3".into(), true),
    ]);

    // Rollback walks back: 3 → 2 → 1, then there is nothing earlier.
    let r = post(&gw, "/v1/admin/plugins/echo/rollback", json!({})).await;
    assert_eq!((r.json["from"].as_i64(), r.json["to"].as_i64()), (Some(3), Some(2)), "{}", r.text);
    assert_eq!(served(&gw, &member).await, "2.0.0+r2");
    let r = post(&gw, "/v1/admin/plugins/echo/rollback", json!({})).await;
    assert_eq!((r.json["from"].as_i64(), r.json["to"].as_i64()), (Some(2), Some(1)), "{}", r.text);
    assert_eq!(served(&gw, &member).await, "1.0.0+r1");
    assert_error(&post(&gw, "/v1/admin/plugins/echo/rollback", json!({})).await, 409, "CONFLICT");

    // Deactivate: the policy's file again; a rollback undoes the deactivation.
    let r = post(&gw, "/v1/admin/plugins/echo/deactivate", json!({})).await;
    assert_eq!((r.status, r.json["from"].as_i64(), r.json["to"].is_null()), (200, Some(1), true), "{}", r.text);
    assert_eq!(served(&gw, &member).await, "0.1.0");
    let r = post(&gw, "/v1/admin/plugins/echo/deactivate", json!({})).await;
    assert_eq!((r.status, r.json["from"].is_null()), (200, true), "already deactivated: {}", r.text);
    let r = post(&gw, "/v1/admin/plugins/echo/rollback", json!({})).await;
    assert_eq!((r.json["from"].is_null(), r.json["to"].as_i64()), (true, Some(1)), "{}", r.text);
    assert_eq!(served(&gw, &member).await, "1.0.0+r1");

    let pool = db.owner_pool().await;
    let audit: Vec<(String, Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT action, from_version, to_version FROM plugin_audit WHERE action <> 'upload' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(audit, vec![
        ("activate".into(), None, Some(1)),
        ("activate".into(), Some(1), Some(2)),
        ("activate".into(), Some(2), Some(3)),
        ("rollback".into(), Some(3), Some(2)),
        ("rollback".into(), Some(2), Some(1)),
        ("deactivate".into(), Some(1), None),
        ("rollback".into(), None, Some(1)),
    ]);
}

/// A route may name a plugin that exists only in the registry (`[plugins.x]` without `file`):
/// the gateway starts, the route answers 503 saying so until a version is activated, serves
/// that version after, and a deactivation leaves nothing to serve (503 again).
#[tokio::test]
async fn a_registry_only_plugin_is_served_once_activated() {
    let db = TestDb::new().await;
    let mut opts = crate::harness::GatewayOptions::new(&db);
    opts.policies = crate::harness::policies_with(
        "zz-registry-only.toml",
        "[plugins.reg-echo]\n\n[[route]]\nid = \"reg_echo\"\nmethod = \"POST\"\npath = \"/v1/reg-echo\"\n\
         target = \"plugin:reg-echo\"\nroles = [\"member\"]\n",
    );
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("RegOnly", Some("unmetered")).await;
    let (member, _, _) = gw.create_token(&org, "member", "m@regonly.test").await;
    let call = || gw.req("POST", "/v1/reg-echo").token(&member).json(&json!({"a": 1})).send();

    let r = call().await;
    assert_error(&r, 503, "UNAVAILABLE");
    assert!(r.text.contains("registry-only"), "{}", r.text);

    let r = put(&gw, "reg-echo", labelled("echo.wasm", "1.0.0")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(post(&gw, "/v1/admin/plugins/reg-echo/activate", json!({"version": 1})).await.status, 200);
    let r = call().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-plugin-version"), Some("1.0.0+r1"));

    assert_eq!(post(&gw, "/v1/admin/plugins/reg-echo/deactivate", json!({})).await.status, 200);
    assert_error(&call().await, 503, "UNAVAILABLE");
}
